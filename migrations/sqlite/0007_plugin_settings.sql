-- Plugin settings per tenant: what a tenant admin set for a setting the plugin's manifest
-- declares (the default lives in the manifest). Kept when a plugin is uninstalled, like its
-- documents, and removed with them on purge. Never edit this file after it lands.
CREATE TABLE plugin_settings (
    tenant_id   TEXT NOT NULL,
    plugin_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,     -- as handed to the plugin: "42", "true", text
    updated_at  INTEGER NOT NULL,
    updated_by  TEXT NOT NULL,     -- token id of the admin who set it
    PRIMARY KEY (tenant_id, plugin_id, name)
);

-- Plugin-wide configuration had no API and was never written: settings replace it.
DROP TABLE plugin_config;

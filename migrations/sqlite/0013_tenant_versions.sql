-- Versions per tenant. Never edit this file after it lands; add a new numbered migration instead.

-- The version of the plugin the tenant runs (and keeps while the plugin is off for it). Rows
-- from before run the version that was active for everyone.
ALTER TABLE tenant_plugins ADD COLUMN version TEXT;
UPDATE tenant_plugins SET version = (SELECT active_version FROM plugins WHERE plugins.id = tenant_plugins.plugin_id);

-- Index definitions are now per tenant: each tenant's entries follow the version it runs.
-- (A new table under a new name: the old one goes.)
-- Every tenant with the plugin's data or a switch for it inherits the plugin's signature.
CREATE TABLE scope_index_signatures (
    tenant_id   TEXT NOT NULL,
    plugin_id   TEXT NOT NULL,
    collection  TEXT NOT NULL,
    signature   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, plugin_id, collection)
) WITHOUT ROWID;
INSERT INTO scope_index_signatures (tenant_id, plugin_id, collection, signature)
SELECT s.tenant_id, i.plugin_id, i.collection, i.signature
FROM index_signatures i
JOIN (SELECT tenant_id, plugin_id FROM tenant_plugins
      UNION SELECT DISTINCT tenant_id, plugin_id FROM documents) s ON s.plugin_id = i.plugin_id;
DROP TABLE index_signatures;

-- A platform admin may pin the active version (what tenants switching the plugin on get);
-- then installing a newer one does not move it.
ALTER TABLE plugins ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;

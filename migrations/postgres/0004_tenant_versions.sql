-- Versions per tenant (sqlite 0013). Never edit this file after it lands.

-- The version of the plugin the tenant runs (and keeps while the plugin is off for it).
ALTER TABLE tenant_plugins ADD COLUMN version TEXT COLLATE "C";
UPDATE tenant_plugins t SET version = p.active_version FROM plugins p WHERE p.id = t.plugin_id;

-- Index definitions are now per tenant: each tenant's entries follow the version it runs.
-- (A new table under a new name: the old one goes.)
CREATE TABLE scope_index_signatures (
    tenant_id   TEXT COLLATE "C" NOT NULL,
    plugin_id   TEXT COLLATE "C" NOT NULL,
    collection  TEXT COLLATE "C" NOT NULL,
    signature   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant_id, plugin_id, collection)
);
INSERT INTO scope_index_signatures (tenant_id, plugin_id, collection, signature)
SELECT s.tenant_id, i.plugin_id, i.collection, i.signature
FROM index_signatures i
JOIN (SELECT tenant_id, plugin_id FROM tenant_plugins
      UNION SELECT DISTINCT tenant_id, plugin_id FROM documents) s ON s.plugin_id = i.plugin_id;
DROP TABLE index_signatures;

-- A platform admin may pin the active version (what tenants switching the plugin on get);
-- then installing a newer one does not move it.
ALTER TABLE plugins ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT FALSE;

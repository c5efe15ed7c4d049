-- Tenancy: which installed plugins each tenant has switched on, and which plugin
-- permissions each tenant grants to a role. Plugins installed before this migration stay
-- enabled for the default tenant, which is where they were being used.

CREATE TABLE tenant_plugins (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    plugin_id   TEXT NOT NULL,
    enabled     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, plugin_id)
);

CREATE TABLE role_grants (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    role        TEXT NOT NULL,
    permission  TEXT NOT NULL,
    granted_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, role, permission)
);

INSERT INTO tenant_plugins (tenant_id, plugin_id, enabled, updated_at)
SELECT 'default', id, 1, updated_at FROM plugins WHERE EXISTS (SELECT 1 FROM tenants WHERE id = 'default');

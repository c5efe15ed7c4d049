-- Foundation schema: tenants, installed plugins (artifacts kept in the database so every
-- replica can load them), the document store with its secondary index, and API tokens.
-- Times are milliseconds since the Unix epoch. Never edit this file after it lands; add a
-- new numbered migration instead.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at  INTEGER NOT NULL
);

CREATE TABLE plugin_artifacts (
    digest       TEXT PRIMARY KEY,          -- sha-256 of the uploaded bytes, hex
    bytes        BLOB NOT NULL,
    size         INTEGER NOT NULL,
    uploaded_at  INTEGER NOT NULL
);

CREATE TABLE plugin_versions (
    plugin_id     TEXT NOT NULL,
    version       TEXT NOT NULL,            -- semver
    digest        TEXT NOT NULL REFERENCES plugin_artifacts (digest),
    manifest      TEXT NOT NULL,            -- the manifest as uploaded (TOML)
    installed_at  INTEGER NOT NULL,
    PRIMARY KEY (plugin_id, version)
);

CREATE TABLE plugins (
    id              TEXT PRIMARY KEY,
    active_version  TEXT NOT NULL,
    enabled         INTEGER NOT NULL DEFAULT 1,
    installed_at    INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    FOREIGN KEY (id, active_version) REFERENCES plugin_versions (plugin_id, version)
);

CREATE TABLE documents (
    tenant_id   TEXT NOT NULL,
    plugin_id   TEXT NOT NULL,
    collection  TEXT NOT NULL,
    key         TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    body        TEXT NOT NULL,              -- JSON
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, plugin_id, collection, key)
) WITHOUT ROWID;

-- One row per (document, declared indexed field) whose value is a string, number or bool.
CREATE TABLE document_index (
    tenant_id   TEXT NOT NULL,
    plugin_id   TEXT NOT NULL,
    collection  TEXT NOT NULL,
    field       TEXT NOT NULL,
    value       TEXT NOT NULL,
    key         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, plugin_id, collection, field, value, key)
) WITHOUT ROWID;

CREATE INDEX document_index_by_key ON document_index (tenant_id, plugin_id, collection, key);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    prefix        TEXT NOT NULL UNIQUE,     -- shown in lists, used for lookup
    secret_hash   TEXT NOT NULL,            -- sha-256 of the whole token, hex
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    tenant_id     TEXT REFERENCES tenants (id),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);

CREATE TABLE plugin_config (
    plugin_id  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (plugin_id, key)
);

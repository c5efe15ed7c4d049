-- The audit log: admin actions and every committed plugin storage write. Append-only: the
-- triggers refuse any change, whatever path the change comes from.

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    tenant_id   TEXT,                       -- NULL for platform-wide actions
    actor       TEXT NOT NULL,              -- token id
    actor_name  TEXT NOT NULL,
    action      TEXT NOT NULL,              -- e.g. plugin.install, document.put
    plugin_id   TEXT,
    collection  TEXT,
    key         TEXT,
    request_id  TEXT,
    detail      TEXT                        -- JSON
);

CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

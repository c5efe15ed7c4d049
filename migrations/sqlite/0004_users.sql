-- People who sign in with a password, and the throttle on failed sign-ins. Login attempts are
-- tracked by (tenant, username) whether or not the user exists, so the lockout does not tell
-- an attacker which usernames are real.

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    username       TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    password_hash  TEXT NOT NULL,            -- argon2id PHC string
    role           TEXT NOT NULL,            -- tenant-admin, member, or a tenant-defined role
    created_at     INTEGER NOT NULL,
    UNIQUE (tenant_id, username)
);

CREATE TABLE login_attempts (
    tenant_id     TEXT NOT NULL,
    username      TEXT NOT NULL,
    failures      INTEGER NOT NULL,
    locked_until  INTEGER,
    PRIMARY KEY (tenant_id, username)
);

ALTER TABLE api_tokens ADD COLUMN user_id TEXT REFERENCES users (id);

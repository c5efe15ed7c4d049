-- Publisher signatures. Never edit this file after it lands; add a new numbered migration instead.

-- Publisher keys platform admins trust over the API (the config file can trust more).
CREATE TABLE trusted_keys (
    name        TEXT PRIMARY KEY,
    public_key  TEXT NOT NULL UNIQUE,     -- `ed25519:<base64url>`
    added_at    INTEGER NOT NULL,
    added_by    TEXT NOT NULL
) WITHOUT ROWID;

-- The trusted key (by name) whose signature an installed version carried; NULL: unsigned.
ALTER TABLE plugin_versions ADD COLUMN signer TEXT;

-- Publisher signatures (sqlite 0012). Never edit this file after it lands.

-- Publisher keys platform admins trust over the API (the config file can trust more).
CREATE TABLE trusted_keys (
    name        TEXT COLLATE "C" PRIMARY KEY,
    public_key  TEXT COLLATE "C" NOT NULL UNIQUE,   -- `ed25519:<base64url>`
    added_at    BIGINT NOT NULL,
    added_by    TEXT NOT NULL
);

-- The trusted key (by name) whose signature an installed version carried; NULL: unsigned.
ALTER TABLE plugin_versions ADD COLUMN signer TEXT COLLATE "C";

-- Disabling users (sqlite 0014). Never edit this file after it lands.

-- When a tenant admin disabled the user (NULL: the user may sign in).
ALTER TABLE users ADD COLUMN disabled_at BIGINT;

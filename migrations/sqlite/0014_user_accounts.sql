-- Disabling users. Never edit this file after it lands; add a new numbered migration instead.

-- When a tenant admin disabled the user (NULL: the user may sign in). A disabled user keeps
-- its row, its id in audit entries and documents, and its username.
ALTER TABLE users ADD COLUMN disabled_at INTEGER;

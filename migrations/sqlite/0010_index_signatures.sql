-- The index definitions each plugin's stored index entries follow, per collection. An
-- upgrade that changes them rewrites the entries and this row in its install transaction; a
-- call that computed its entries from other definitions (it began before the upgrade) fails
-- its commit check and runs again on the new version, so no entry is left in an old format.
CREATE TABLE index_signatures (
    plugin_id   TEXT NOT NULL,
    collection  TEXT NOT NULL,
    signature   TEXT NOT NULL,
    PRIMARY KEY (plugin_id, collection)
) WITHOUT ROWID;

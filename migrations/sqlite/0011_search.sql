-- Full-text search. Never edit this file after it lands; add a new numbered migration instead.

-- Documents get a stable id: the full-text index refers to documents by it. A rowid table
-- without an INTEGER PRIMARY KEY may renumber its rows on VACUUM; an AUTOINCREMENT key is
-- kept and never reused, so an index row can never come to name another document. Ids are
-- the old rowids, so the copy keeps their order.
CREATE TABLE documents_by_id (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL,
    plugin_id   TEXT NOT NULL,
    collection  TEXT NOT NULL,
    key         TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    body        TEXT NOT NULL,              -- JSON
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    UNIQUE (tenant_id, plugin_id, collection, key)
);
INSERT INTO documents_by_id (id, tenant_id, plugin_id, collection, key, version, body, created_at, updated_at, size)
SELECT rowid, tenant_id, plugin_id, collection, key, version, body, created_at, updated_at, size FROM documents;
DROP TABLE documents;
ALTER TABLE documents_by_id RENAME TO documents;

-- The full-text index is one FTS5 table per (tenant, plugin, collection), created with its
-- first row. BM25 ranks with statistics of its whole table (how many rows hold a word, their
-- lengths), so a table shared between tenants would let one tenant learn, from the order of
-- its own results, which words another tenant's documents contain; and a search of one
-- collection never walks another's rows. Each row is one document of a collection that
-- declares `search` (rowid = documents.id); c0..c3 are its searchable fields in manifest
-- order. Not contentless: deleting a row of a regular FTS5 table also takes its words out of
-- the statistics. This table says which tables exist.
CREATE TABLE search_tables (
    tenant_id   TEXT NOT NULL,
    plugin_id   TEXT NOT NULL,
    collection  TEXT NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    PRIMARY KEY (tenant_id, plugin_id, collection)
) WITHOUT ROWID;

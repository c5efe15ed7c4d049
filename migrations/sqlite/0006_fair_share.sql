-- Fair share: what each tenant and plugin stores (kept up to date by every commit, in its
-- transaction), the quotas a platform admin sets per tenant, and what the fair job claim
-- needs. Never edit this file after it lands; add a new numbered migration instead.

-- Documents move to a rowid table, with `size`: the bytes of key and body (UTF-8), so usage
-- can be kept without reading bodies. WITHOUT ROWID kept whole rows in the primary-key
-- B-tree, where one tenant's large documents slowed every later insert of every tenant: a
-- thousand 8 KiB inserts took 55 ms on their own and 1.3 s once eight 1 MiB documents were
-- stored. A rowid table keeps bodies in its own B-tree (large ones in overflow chains) and
-- the key in a small unique index.
CREATE TABLE documents_by_row (
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
INSERT INTO documents_by_row (tenant_id, plugin_id, collection, key, version, body, created_at, updated_at, size)
SELECT tenant_id, plugin_id, collection, key, version, body, created_at, updated_at,
       length(CAST(key AS BLOB)) + length(CAST(body AS BLOB))
FROM documents;
DROP TABLE documents;
ALTER TABLE documents_by_row RENAME TO documents;

-- One row per (tenant, plugin), and one per tenant with plugin_id '' holding its totals, so
-- a commit updates and reads both in one statement.
CREATE TABLE storage_usage (
    tenant_id   TEXT NOT NULL,
    plugin_id   TEXT NOT NULL,
    documents   INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, plugin_id)
) WITHOUT ROWID;

INSERT INTO storage_usage (tenant_id, plugin_id, documents, bytes)
SELECT tenant_id, plugin_id, COUNT(*), SUM(size) FROM documents GROUP BY tenant_id, plugin_id;
INSERT INTO storage_usage (tenant_id, plugin_id, documents, bytes)
SELECT tenant_id, '', COUNT(*), SUM(size) FROM documents GROUP BY tenant_id;

-- A tenant's own quotas; tenants without a row get the configured defaults.
CREATE TABLE tenant_quotas (
    tenant_id         TEXT PRIMARY KEY REFERENCES tenants (id),
    tenant_documents  INTEGER NOT NULL,
    tenant_bytes      INTEGER NOT NULL,
    plugin_documents  INTEGER NOT NULL,
    plugin_bytes      INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

-- How many job runs led to a job (a job enqueued by a job is one further down its chain).
ALTER TABLE jobs ADD COLUMN chain INTEGER NOT NULL DEFAULT 0;

-- The fair claim walks queued work owner by owner (tenant, plugin), and the queue cap counts
-- one owner's queued jobs: both by seeks on this index.
CREATE INDEX jobs_queued_by_owner ON jobs (status, tenant_id, plugin_id, run_at);

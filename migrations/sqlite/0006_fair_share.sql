-- Fair share: what each tenant and plugin stores (kept up to date by every commit, in its
-- transaction), the quotas a platform admin sets per tenant, and what the fair job claim
-- needs. Never edit this file after it lands; add a new numbered migration instead.

-- Bytes of a document (key and body, UTF-8), so usage can be kept without reading bodies.
ALTER TABLE documents ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
UPDATE documents SET size = length(CAST(key AS BLOB)) + length(CAST(body AS BLOB));

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

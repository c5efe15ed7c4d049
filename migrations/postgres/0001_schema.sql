-- Keel's PostgreSQL schema: the final shape of migrations/sqlite/0001 … 0011 in one file.
-- PostgreSQL deployments start empty, so nothing here copies data. Never edit this file after
-- it lands; add a new numbered migration instead. The host creates `keel_migrations` and runs
-- each file in one transaction.
--
-- Conventions (see README.md in this folder for why):
--   * Times are BIGINT milliseconds since the Unix epoch; counters, sizes and versions BIGINT
--     (the host reads them all as i64). Flags are BOOLEAN (SQLite's INTEGER 0/1).
--   * Every identifier or key column (anything in a primary key, unique constraint, index or
--     foreign key, or compared or ordered by the host: document keys, index entry values, ids,
--     names) is TEXT COLLATE "C", so comparisons and ORDER BY are byte order (code point
--     order in UTF-8), as with SQLite's BINARY collation and Rust's `str` ordering, whatever
--     the database's default collation. Range scans, cursors (`(value, key) > ($1, $2)`) and
--     prefix ends computed by the host depend on it. Free text (bodies, payloads, messages,
--     display names) keeps the database default.
--   * JSON stays TEXT: the host hashes, measures and hands it on as text, and the audit log
--     must keep exactly what was written (JSONB would reorder keys and drop duplicates).
--   * Table and column names are SQLite's, so statements differ only in dialect. SQLite's
--     `search_tables` registry and its FTS5 table per scope are replaced by `search_rows`.
-- The database must use the UTF8 encoding. Its LC_CTYPE should be a UTF-8 locale (C.UTF-8 is
-- enough): the text search folds the case of non-ASCII letters with it.

-- btree_gin: plain equality on text in a GIN index, so one index holds the search scope and
-- the words. unaccent: the accent-folding dictionary. Both ship with PostgreSQL (contrib) and
-- are trusted: the database owner may create them without being superuser.
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE EXTENSION IF NOT EXISTS unaccent;

-- ---------------------------------------------------------------------------------------
-- Tenants, plugins, tokens (sqlite 0001, 0002, 0004, 0007)

CREATE TABLE tenants (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    status      TEXT COLLATE "C" NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at  BIGINT NOT NULL
);

CREATE TABLE plugin_artifacts (
    digest       TEXT COLLATE "C" PRIMARY KEY,   -- sha-256 of the uploaded bytes, hex
    bytes        BYTEA NOT NULL,
    size         BIGINT NOT NULL,
    uploaded_at  BIGINT NOT NULL
);

CREATE TABLE plugin_versions (
    plugin_id     TEXT COLLATE "C" NOT NULL,
    version       TEXT COLLATE "C" NOT NULL,     -- semver
    digest        TEXT COLLATE "C" NOT NULL REFERENCES plugin_artifacts (digest),
    manifest      TEXT NOT NULL,                 -- the manifest as uploaded (TOML)
    installed_at  BIGINT NOT NULL,
    PRIMARY KEY (plugin_id, version)
);

CREATE TABLE plugins (
    id              TEXT COLLATE "C" PRIMARY KEY,
    active_version  TEXT COLLATE "C" NOT NULL,
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    installed_at    BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    FOREIGN KEY (id, active_version) REFERENCES plugin_versions (plugin_id, version)
);

-- Which installed plugins each tenant has switched on.
CREATE TABLE tenant_plugins (
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    plugin_id   TEXT COLLATE "C" NOT NULL,
    enabled     BOOLEAN NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, plugin_id)
);

-- Which plugin permissions each tenant grants to a role.
CREATE TABLE role_grants (
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    role        TEXT COLLATE "C" NOT NULL,
    permission  TEXT COLLATE "C" NOT NULL,
    granted_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, role, permission)
);

-- People who sign in with a password. Created before api_tokens, which refers to them.
CREATE TABLE users (
    id             TEXT COLLATE "C" PRIMARY KEY,
    tenant_id      TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    username       TEXT COLLATE "C" NOT NULL,
    display_name   TEXT NOT NULL,
    password_hash  TEXT NOT NULL,                -- argon2id PHC string
    role           TEXT COLLATE "C" NOT NULL,    -- tenant-admin, member, or a tenant-defined role
    created_at     BIGINT NOT NULL,
    UNIQUE (tenant_id, username)
);

-- Failed sign-ins by (tenant, username), whether or not the user exists.
CREATE TABLE login_attempts (
    tenant_id     TEXT COLLATE "C" NOT NULL,
    username      TEXT COLLATE "C" NOT NULL,
    failures      BIGINT NOT NULL,
    locked_until  BIGINT,
    PRIMARY KEY (tenant_id, username)
);

CREATE TABLE api_tokens (
    id            TEXT COLLATE "C" PRIMARY KEY,
    prefix        TEXT COLLATE "C" NOT NULL UNIQUE,   -- shown in lists, used for lookup
    secret_hash   TEXT COLLATE "C" NOT NULL,          -- sha-256 of the whole token, hex
    name          TEXT NOT NULL,
    role          TEXT COLLATE "C" NOT NULL,
    tenant_id     TEXT COLLATE "C" REFERENCES tenants (id),
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT,
    revoked_at    BIGINT,
    user_id       TEXT COLLATE "C" REFERENCES users (id)
);

-- Plugin settings per tenant (the default lives in the manifest). SQLite's plugin_config was
-- dropped by its 0007 and has no counterpart here.
CREATE TABLE plugin_settings (
    tenant_id   TEXT COLLATE "C" NOT NULL,
    plugin_id   TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    value       TEXT NOT NULL,                   -- as handed to the plugin: "42", "true", text
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT COLLATE "C" NOT NULL,       -- token id of the admin who set it
    PRIMARY KEY (tenant_id, plugin_id, name)
);

-- ---------------------------------------------------------------------------------------
-- Documents and their index entries (sqlite 0001, 0006, 0010, 0011)

-- `id` is the stable id full-text rows refer to: never reused (an upsert that updates also
-- draws a value, so ids have gaps). Bodies are TOASTed (compressed, out of line when large),
-- so large documents never slow the key index, which is what SQLite's 0006 rebuilt its
-- table for. `size` = bytes of key and body (UTF-8), kept so usage needs no body reads.
CREATE TABLE documents (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   TEXT COLLATE "C" NOT NULL,
    plugin_id   TEXT COLLATE "C" NOT NULL,
    collection  TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL CHECK (version > 0),
    body        TEXT NOT NULL,                   -- JSON
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    size        BIGINT NOT NULL,
    -- Point reads, the key-ordered scan of a collection, `key > $n` cursors, upserts.
    UNIQUE (tenant_id, plugin_id, collection, key)
);

-- One row per (document, declared index) whose value is a string, number or bool, in the
-- host's order-preserving text encoding. The primary key drives range scans in (value, key)
-- order: `field = $f AND value >= $lo AND (value, key) > ($v, $k) ORDER BY value, key`.
CREATE TABLE document_index (
    tenant_id   TEXT COLLATE "C" NOT NULL,
    plugin_id   TEXT COLLATE "C" NOT NULL,
    collection  TEXT COLLATE "C" NOT NULL,
    field       TEXT COLLATE "C" NOT NULL,
    value       TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant_id, plugin_id, collection, field, value, key)
);

-- A document's own entries: the residual conditions of a scan (`EXISTS (... r.key = d.key
-- AND r.field = $f AND r.value < $v)`) and the removal of a rewritten key's entries. SQLite's
-- index on the first four columns carried field and value implicitly (its table is WITHOUT
-- ROWID); here they are spelled out so those lookups are index-only.
CREATE INDEX document_index_by_key ON document_index (tenant_id, plugin_id, collection, key, field, value);

-- Each field has values of its own (a status field's entry is never a date), and a tenant's
-- plugins and collections go together. Without these statistics the planner multiplies the
-- selectivities of `field = 'status' AND value = 'leave'` as if independent, thinks a
-- residual condition matches a handful of entries, and may check it by rescanning all of
-- them for every candidate instead of one lookup by key. Measured over 100,000 documents (a
-- range of 100,000 entries, an EXISTS and a NOT EXISTS residual, LIMIT 50): with a prepared
-- statement's generic plan, 53 s without them and 0.33 s with; custom plans 130 ms and
-- 60-120 ms. With them a custom plan drives the range in index order and looks each
-- document's entries up by key, as SQLite's forced plan does (a generic plan, not knowing
-- the range, still reads all of it and sorts: scans should be planned per execution).
CREATE STATISTICS document_index_dependencies (dependencies)
    ON tenant_id, plugin_id, collection, field, value FROM document_index;

-- The index definitions each plugin's stored entries follow, per collection.
CREATE TABLE index_signatures (
    plugin_id   TEXT COLLATE "C" NOT NULL,
    collection  TEXT COLLATE "C" NOT NULL,
    signature   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (plugin_id, collection)
);

-- ---------------------------------------------------------------------------------------
-- Usage, quotas, sequences (sqlite 0006, 0008)

-- One row per (tenant, plugin), and one per tenant with plugin_id '' holding its totals.
CREATE TABLE storage_usage (
    tenant_id   TEXT COLLATE "C" NOT NULL,
    plugin_id   TEXT COLLATE "C" NOT NULL,
    documents   BIGINT NOT NULL,
    bytes       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, plugin_id)
);

-- A tenant's own quotas; tenants without a row get the configured defaults.
CREATE TABLE tenant_quotas (
    tenant_id         TEXT COLLATE "C" PRIMARY KEY REFERENCES tenants (id),
    tenant_documents  BIGINT NOT NULL,
    tenant_bytes      BIGINT NOT NULL,
    plugin_documents  BIGINT NOT NULL,
    plugin_bytes      BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

-- Named counters per tenant and plugin.
CREATE TABLE sequences (
    tenant_id  TEXT COLLATE "C" NOT NULL,
    plugin_id  TEXT COLLATE "C" NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    value      BIGINT NOT NULL CHECK (value > 0),   -- the last value handed out
    PRIMARY KEY (tenant_id, plugin_id, name)
);

-- ---------------------------------------------------------------------------------------
-- The audit log (sqlite 0003): append-only, enforced by the database.

CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    tenant_id   TEXT COLLATE "C",               -- NULL for platform-wide actions
    actor       TEXT COLLATE "C" NOT NULL,      -- token id
    actor_name  TEXT NOT NULL,
    action      TEXT COLLATE "C" NOT NULL,      -- e.g. plugin.install, document.put
    plugin_id   TEXT COLLATE "C",
    collection  TEXT COLLATE "C",
    key         TEXT COLLATE "C",
    request_id  TEXT COLLATE "C",
    detail      TEXT,                           -- JSON, kept as written
    -- The writing transaction. Ids are drawn at insert, so transactions can commit them out of
    -- order; a reader paging by `id > $after` shows only rows of transactions older than every
    -- one still running (`xid < pg_snapshot_xmin(pg_current_snapshot())`), so a row that
    -- commits later under a smaller id is never skipped, only shown a moment later.
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id);

-- Refuses the change it fires for, with the message given as its argument (SQLite's
-- RAISE(ABORT, ...)). Row triggers do not see TRUNCATE, so the audit log refuses that too.
CREATE FUNCTION keel_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'raise_exception';
END;
$$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION keel_refuse_change('the audit log is append-only');
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION keel_refuse_change('the audit log is append-only');
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION keel_refuse_change('the audit log is append-only');

-- ---------------------------------------------------------------------------------------
-- Background work (sqlite 0005, 0006, 0009)

-- Every unit of background work: a job a plugin enqueued, a schedule's firing, an event's
-- delivery to one subscriber.
CREATE TABLE jobs (
    id              TEXT COLLATE "C" PRIMARY KEY,   -- job_<hex>; derived from the idempotency key when given
    tenant_id       TEXT COLLATE "C" NOT NULL,
    plugin_id       TEXT COLLATE "C" NOT NULL,      -- the plugin that runs it
    kind            TEXT COLLATE "C" NOT NULL CHECK (kind IN ('job', 'schedule', 'event')),
    name            TEXT COLLATE "C" NOT NULL,      -- job name, schedule name, or event topic
    payload         TEXT NOT NULL,                  -- JSON
    idempotency_key TEXT COLLATE "C",
    event_id        TEXT COLLATE "C",               -- kind = 'event': the event delivered
    status          TEXT COLLATE "C" NOT NULL
                    CHECK (status IN ('queued', 'running', 'done', 'dead', 'cancelled')),
    attempts        BIGINT NOT NULL DEFAULT 0,      -- attempts started
    max_attempts    BIGINT NOT NULL,
    run_at          BIGINT NOT NULL,                -- not before (ms since the epoch, host clock)
    lease_owner     TEXT COLLATE "C",               -- worker holding it while running
    lease_until     BIGINT,                         -- after this another worker may take it
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    chain           BIGINT NOT NULL DEFAULT 0,      -- job runs that led to it
    task_id         TEXT COLLATE "C"                -- the task it is a chunk of
);

-- Counts by status, and the expired-lease sweep (`status = 'running' AND lease_until <= $1`).
CREATE INDEX jobs_due ON jobs (status, run_at);
-- A tenant's jobs newest first, paged by (created_at, id).
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, created_at, id);
-- The fair claim and the queue cap, over queued jobs only (done ones pile up and never come
-- back here): the loose index scan of owners (`(tenant_id, plugin_id) > ($t, $p) ORDER BY
-- tenant_id, plugin_id LIMIT 1`), one owner's queued count, and the claim itself
-- (`tenant_id = $t AND plugin_id = $p AND run_at <= $now ORDER BY run_at, id LIMIT $n FOR
-- UPDATE SKIP LOCKED`), which reads the index in order and stops at $n. SQLite's index is
-- (status, tenant_id, plugin_id, run_at) on every row; its queries name status = 'queued'
-- literally, which this partial index needs; `id` makes the claim's tie-break index order too.
CREATE INDEX jobs_queued_by_owner ON jobs (tenant_id, plugin_id, run_at, id) WHERE status = 'queued';
CREATE INDEX jobs_by_task ON jobs (task_id) WHERE task_id IS NOT NULL;

-- Every attempt, for the admin's "what happened" view.
CREATE TABLE job_runs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      TEXT COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,                -- restarts at 1 when an admin retries a dead job
    worker      TEXT COLLATE "C" NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    outcome     TEXT COLLATE "C",               -- done | failed | lost | deferred (no CHECK, as in SQLite)
    error       TEXT
);

CREATE INDEX job_runs_by_job ON job_runs (job_id, id);

-- Per tenant and plugin: when each declared schedule fires next.
CREATE TABLE schedules (
    tenant_id   TEXT COLLATE "C" NOT NULL,
    plugin_id   TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    spec        TEXT NOT NULL,                  -- "<cron> <time zone>" next_run_at was computed from
    next_run_at BIGINT NOT NULL,
    last_run_at BIGINT,
    last_job_id TEXT COLLATE "C",
    PRIMARY KEY (tenant_id, plugin_id, name)
);

CREATE INDEX schedules_due ON schedules (next_run_at);

-- Events, written in the same transaction as the publishing call's storage writes. Like
-- SQLite's, the log refuses updates (deletes are not refused there either).
CREATE TABLE events (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            TEXT COLLATE "C" NOT NULL UNIQUE,   -- evt_<hex>
    tenant_id     TEXT COLLATE "C" NOT NULL,
    topic         TEXT COLLATE "C" NOT NULL,
    source_plugin TEXT COLLATE "C" NOT NULL,
    published_at  BIGINT NOT NULL,
    payload       TEXT NOT NULL,                      -- JSON
    request_id    TEXT COLLATE "C",
    xid           xid8 NOT NULL DEFAULT pg_current_xact_id()   -- see audit_log.xid
);

CREATE INDEX events_by_tenant ON events (tenant_id, seq);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION keel_refuse_change('the event log is append-only');

-- Long work a plugin does in chunks, each chunk a job.
CREATE TABLE tasks (
    id           TEXT COLLATE "C" PRIMARY KEY,      -- task_<hex>
    tenant_id    TEXT COLLATE "C" NOT NULL,
    plugin_id    TEXT COLLATE "C" NOT NULL,
    name         TEXT COLLATE "C" NOT NULL,         -- the job name of its chunks
    title        TEXT NOT NULL,
    status       TEXT COLLATE "C" NOT NULL CHECK (status IN ('running', 'done', 'cancelled')),
    total        BIGINT,                            -- units in all, when the plugin knows
    done         BIGINT NOT NULL DEFAULT 0,         -- units the committed chunks did
    chunks       BIGINT NOT NULL DEFAULT 0,         -- committed chunks
    current_job  TEXT COLLATE "C" NOT NULL,         -- the chunk queued, running or last run
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    finished_at  BIGINT
);

CREATE INDEX tasks_by_tenant ON tasks (tenant_id, created_at, id);

-- ---------------------------------------------------------------------------------------
-- Full-text search (sqlite 0011)
--
-- SQLite keeps one FTS5 table per (tenant, plugin, collection), listed in `search_tables`,
-- because BM25's statistics span a table and would leak between tenants. ts_rank_cd reads
-- only the row it ranks, so here one table holds every scope's rows.

-- Case and accents folded, no stemming (FTS5's `unicode61 remove_diacritics 2`): the simple
-- configuration with unaccent in front of every token type that holds letters. Other token
-- types keep `simple`. The host turns every character that is not a letter or digit into a
-- space before the text gets here, so in practice only word, asciiword, numword and the
-- integer types occur.
CREATE TEXT SEARCH CONFIGURATION keel_simple (COPY = simple);
ALTER TEXT SEARCH CONFIGURATION keel_simple
    ALTER MAPPING FOR word, asciiword, numword, hword, asciihword, numhword,
                      hword_part, hword_asciipart, hword_numpart
    WITH unaccent, simple;

-- One row per document of a collection that declares `search`, with text in at least one
-- field. c0..c3 are the searchable fields in manifest order (empty when the collection has
-- fewer, or the document none), as the host prepared them; like SQLite's FTS5 tables (which
-- are not contentless) the text is kept, so a commit can compare a rewrite's text with the
-- stored one and keep the row when it is unchanged. `doc` is derived from them by the
-- database, so it can never disagree with them: field i gets weight class A, B, C, D, and
-- the search passes the manifest's weights to ts_rank_cd as {D, C, B, A}. `||` numbers the
-- right side's words on from the left side's last, so a phrase could match the end of one
-- field and the start of the next, which FTS5 (a column each) never does: a placeholder
-- word `~` between fields leaves a gap of one position, and ts_delete then takes it out
-- (the gap stays; `~` never reaches the index, and no query can contain it).
-- tenant_id, plugin_id and collection repeat the document's (it never changes scope): the
-- index needs them, and every search still checks them again when it joins documents.
-- Deleting a document (a delete, a purge) deletes its row.
CREATE TABLE search_rows (
    document_id  BIGINT PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
    tenant_id    TEXT COLLATE "C" NOT NULL,
    plugin_id    TEXT COLLATE "C" NOT NULL,
    collection   TEXT COLLATE "C" NOT NULL,
    c0           TEXT NOT NULL DEFAULT '',
    c1           TEXT NOT NULL DEFAULT '',
    c2           TEXT NOT NULL DEFAULT '',
    c3           TEXT NOT NULL DEFAULT '',
    doc          tsvector GENERATED ALWAYS AS (ts_delete(
                     setweight(to_tsvector('keel_simple', c0), 'A') || '~:1'::tsvector
                     || setweight(to_tsvector('keel_simple', c1), 'B') || '~:1'::tsvector
                     || setweight(to_tsvector('keel_simple', c2), 'C') || '~:1'::tsvector
                     || setweight(to_tsvector('keel_simple', c3), 'D'),
                     '~')) STORED
);

-- A search is
--   WHERE tenant_id = $t AND plugin_id = $p AND collection = $c AND doc @@ $q
--   ORDER BY ts_rank_cd($weights, doc, $q, 32) DESC, document_id LIMIT $n OFFSET $o
-- Each of the four conditions is a key of this one GIN index (the scope columns through
-- btree_gin's equality operators, `doc` through its lexemes), and GIN answers their AND by
-- intersecting the keys' posting lists, skipping ahead in the longer ones. The heap rows it
-- fetches and ranks are therefore only the scope's matches: rows of another tenant, plugin
-- or collection are never fetched or ranked (they share only the word's index pages). GIN
-- has no leading column as a B-tree has; the column order is only for the reader. The same
-- index serves an upgrade's or purge's
-- `DELETE FROM search_rows WHERE plugin_id = $p AND collection = $c`.
-- New entries wait in GIN's pending list (fastupdate; at most gin_pending_list_limit, 4 MB
-- by default) until vacuum or the limit merges them, and every search reads that list too.
-- If write-heavy collections make searches slow, `ALTER INDEX ... SET (fastupdate = off)`
-- moves that cost to the commits.
CREATE INDEX search_rows_scope_doc ON search_rows USING gin (tenant_id, plugin_id, collection, doc);

-- Durable background work: queued jobs, cron schedules, and the transactional event log.
--
-- One table holds every unit of background work (a job a plugin enqueued, a schedule's
-- firing, an event's delivery to one subscriber), so one claim query, one retry policy and
-- one admin view serve all three.

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,           -- job_<hex>; derived from the idempotency key when given
    tenant_id       TEXT NOT NULL,
    plugin_id       TEXT NOT NULL,              -- the plugin that runs it
    kind            TEXT NOT NULL CHECK (kind IN ('job', 'schedule', 'event')),
    name            TEXT NOT NULL,              -- job name, schedule name, or event topic
    payload         TEXT NOT NULL,              -- JSON
    idempotency_key TEXT,
    event_id        TEXT,                       -- kind = 'event': the event delivered
    status          TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'dead', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0, -- attempts started
    max_attempts    INTEGER NOT NULL,
    run_at          INTEGER NOT NULL,           -- not before (ms since the epoch, host clock)
    lease_owner     TEXT,                       -- worker holding it while running
    lease_until     INTEGER,                    -- after this another worker may take it
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER
);

-- The claim query: due queued jobs, and running ones whose lease expired.
CREATE INDEX jobs_due ON jobs (status, run_at);
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, created_at, id);

-- Every attempt, for the admin's "what happened" view.
CREATE TABLE job_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,               -- restarts at 1 when an admin retries a dead job
    worker      TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT,                           -- done | failed | lost (lease expired)
    error       TEXT
);

CREATE INDEX job_runs_by_job ON job_runs (job_id, id);

-- Per tenant and plugin: when each declared schedule fires next.
CREATE TABLE schedules (
    tenant_id   TEXT NOT NULL,
    plugin_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,                  -- "<cron> <time zone>" next_run_at was computed from
    next_run_at INTEGER NOT NULL,
    last_run_at INTEGER,
    last_job_id TEXT,
    PRIMARY KEY (tenant_id, plugin_id, name)
);

-- Events, written in the same transaction as the publishing call's storage writes.
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,         -- evt_<hex>
    tenant_id     TEXT NOT NULL,
    topic         TEXT NOT NULL,
    source_plugin TEXT NOT NULL,
    published_at  INTEGER NOT NULL,
    payload       TEXT NOT NULL,                -- JSON
    request_id    TEXT
);

CREATE INDEX events_by_tenant ON events (tenant_id, seq);
CREATE INDEX schedules_due ON schedules (next_run_at);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only');
END;

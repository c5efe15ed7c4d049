-- Tasks: long work a plugin does in chunks, each chunk a job that records progress and
-- queues the next one in the same transaction as its writes. A task's failure is not
-- stored: it is its current chunk being dead (an admin retrying that job resumes the task),
-- and a task whose current chunk an admin cancelled shows as cancelled.

CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,              -- task_<hex>
    tenant_id    TEXT NOT NULL,
    plugin_id    TEXT NOT NULL,
    name         TEXT NOT NULL,                 -- the job name of its chunks
    title        TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'done', 'cancelled')),
    total        INTEGER,                       -- units in all, when the plugin knows
    done         INTEGER NOT NULL DEFAULT 0,    -- units the committed chunks did
    chunks       INTEGER NOT NULL DEFAULT 0,    -- committed chunks
    current_job  TEXT NOT NULL,                 -- the chunk queued, running or last run
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER
);

CREATE INDEX tasks_by_tenant ON tasks (tenant_id, created_at, id);

ALTER TABLE jobs ADD COLUMN task_id TEXT;
CREATE INDEX jobs_by_task ON jobs (task_id) WHERE task_id IS NOT NULL;

//! The job queue on SQLite.
//!
//! The claim is one `UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING` inside a write
//! transaction: the write lock serialises claimers.

use super::documents::insert_job;
use crate::jobs::store::*;
use crate::jobs::{JobKind, JobStatus, Lease, NewJob, RunOutcome, TaskStatus};
use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

/// Closes the run record of the attempt `lease` names.
async fn finish_run(
    conn: &mut sqlx::SqliteConnection,
    lease: &Lease,
    now: i64,
    outcome: RunOutcome,
    error: &str,
) -> Result<(), JobStoreError> {
    sqlx::query(
        "UPDATE job_runs SET finished_at = ?, outcome = ?, error = ? \
         WHERE job_id = ? AND attempt = ? AND finished_at IS NULL",
    )
    .bind(now)
    .bind(outcome.as_str())
    .bind(error)
    .bind(&lease.job_id)
    .bind(i64::from(lease.attempt))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Owners with queued work, found with one index seek each (a loose index scan over
/// `jobs_queued_by_owner`), so a tenant with a hundred thousand queued jobs costs a claim no
/// more than one with one; then only those with something due.
async fn due_owners(conn: &mut sqlx::SqliteConnection, now: i64) -> Result<Vec<(String, String)>, JobStoreError> {
    let rows = sqlx::query(
        "WITH RECURSIVE owners(tenant_id, plugin_id) AS ( \
             SELECT '', '' \
             UNION ALL \
             SELECT (SELECT j.tenant_id FROM jobs j WHERE j.status = 'queued' \
                         AND (j.tenant_id, j.plugin_id) > (o.tenant_id, o.plugin_id) ORDER BY j.tenant_id, j.plugin_id LIMIT 1), \
                    (SELECT j.plugin_id FROM jobs j WHERE j.status = 'queued' \
                         AND (j.tenant_id, j.plugin_id) > (o.tenant_id, o.plugin_id) ORDER BY j.tenant_id, j.plugin_id LIMIT 1) \
             FROM owners o WHERE o.tenant_id IS NOT NULL LIMIT 100000) \
         SELECT o.tenant_id, o.plugin_id FROM owners o \
         WHERE o.tenant_id IS NOT NULL AND o.tenant_id <> '' AND EXISTS ( \
             SELECT 1 FROM jobs j WHERE j.status = 'queued' AND j.tenant_id = o.tenant_id AND j.plugin_id = o.plugin_id \
             AND j.run_at <= ?1)",
    )
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

const JOB_COLUMNS: &str = "id, tenant_id, plugin_id, kind, name, payload, idempotency_key, event_id, status, attempts, \
     max_attempts, run_at, lease_until, last_error, created_at, updated_at, finished_at, task_id";

fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn job_record(r: &SqliteRow) -> JobRecord {
    JobRecord {
        id: r.get(0),
        tenant: r.get(1),
        plugin: r.get(2),
        kind: JobKind::parse(r.get::<&str, _>(3)).unwrap_or(JobKind::Job),
        name: r.get(4),
        payload: r.get(5),
        idempotency_key: r.get(6),
        event_id: r.get(7),
        // The column's CHECK constraint admits only these names.
        status: JobStatus::parse(r.get::<&str, _>(8)).unwrap_or(JobStatus::Dead),
        attempts: u32_of(r.get(9)),
        max_attempts: u32_of(r.get(10)),
        run_at: r.get(11),
        lease_until: r.get(12),
        last_error: r.get(13),
        created_at: r.get(14),
        updated_at: r.get(15),
        finished_at: r.get(16),
        task: r.get(17),
    }
}

const TASK_COLUMNS: &str = "t.id, t.tenant_id, t.plugin_id, t.name, t.title, \
     CASE WHEN t.status = 'running' AND j.status = 'dead' THEN 'failed' \
     WHEN t.status = 'running' AND j.status = 'cancelled' THEN 'cancelled' ELSE t.status END, \
     t.done, t.total, t.chunks, t.current_job, j.last_error, t.created_at, t.updated_at, t.finished_at";

fn task_record(r: &SqliteRow) -> TaskRecord {
    let u64_of = |v: i64| u64::try_from(v).unwrap_or(0);
    TaskRecord {
        id: r.get(0),
        tenant: r.get(1),
        plugin: r.get(2),
        name: r.get(3),
        title: r.get(4),
        status: TaskStatus::parse(r.get::<&str, _>(5)).unwrap_or(TaskStatus::Failed),
        done: u64_of(r.get(6)),
        total: r.get::<Option<i64>, _>(7).map(u64_of),
        chunks: u64_of(r.get(8)),
        current_job: r.get(9),
        last_error: r.get(10),
        created_at: r.get(11),
        updated_at: r.get(12),
        finished_at: r.get(13),
    }
}

fn event_record(r: &SqliteRow) -> EventRecord {
    EventRecord {
        seq: r.get(0),
        id: r.get(1),
        tenant: r.get(2),
        topic: r.get(3),
        source: r.get(4),
        published_at: r.get(5),
        payload: r.get(6),
        request_id: r.get(7),
    }
}

const EVENT_COLUMNS: &str = "seq, id, tenant_id, topic, source_plugin, published_at, payload, request_id";

/// The queue in the `jobs`, `job_runs`, `tasks`, `schedules` and `events` tables.
#[derive(Clone)]
pub struct SqliteJobQueue {
    pool: SqlitePool,
    /// Shared with the document store: see [`super::write_gate`].
    writes: std::sync::Arc<super::WriteGate>,
}

impl SqliteJobQueue {
    pub fn new(pool: SqlitePool) -> Self {
        let writes = super::write_gate(&pool);
        SqliteJobQueue { pool, writes }
    }

    /// Runs an admin's state change (`update` binds now, tenant, id) and returns the job, or
    /// says why its current state refuses the change.
    async fn change_state(
        &self,
        tenant: &str,
        id: &str,
        now: i64,
        update: &'static str,
        refusal: &'static str,
    ) -> Result<JobRecord, JobStoreError> {
        let changed = sqlx::query(update).bind(now).bind(tenant).bind(id).execute(&self.pool).await?.rows_affected();
        let (job, _) = self.get(tenant, id).await?;
        if changed == 0 {
            return Err(JobStoreError::WrongState { id: id.to_owned(), status: job.status.as_str(), action: refusal });
        }
        Ok(job)
    }
}

#[async_trait]
impl JobQueue for SqliteJobQueue {
    /// Claims up to `limit` due jobs for `worker`, fairly: due work is grouped by owner
    /// (tenant, plugin), tenants take turns (starting after `policy.start_after`, so
    /// successive claims rotate), each tenant's plugins take turns, and a tenant gets no more
    /// than its room in `policy`. Running jobs whose lease expired (their worker died) go
    /// back to the queue first, or are dead-lettered if that was their last attempt.
    async fn claim(
        &self,
        worker: &str,
        now: i64,
        lease_ms: i64,
        policy: &ClaimPolicy,
    ) -> Result<Vec<ClaimedJob>, JobStoreError> {
        if policy.limit == 0 {
            return Ok(Vec::new());
        }
        // A read first: an idle worker polling must not take the write lock from requests.
        let expired: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM jobs WHERE status = 'running' AND lease_until <= ?1 LIMIT 1")
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
        let mut owners = self.due_owners(now).await?;
        if expired.is_none() && owners.is_empty() {
            return Ok(Vec::new());
        }
        let _turn = self.writes.turn("").await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if expired.is_some() {
            let expired_runs = "UPDATE job_runs SET finished_at = ?1, outcome = 'lost', \
                 error = 'the worker stopped before finishing (lease expired)' \
                 WHERE finished_at IS NULL AND job_id IN \
                 (SELECT id FROM jobs WHERE status = 'running' AND lease_until <= ?1)";
            sqlx::query(expired_runs).bind(now).execute(&mut *tx).await?;
            sqlx::query(
                "UPDATE jobs SET status = 'dead', lease_owner = NULL, lease_until = NULL, finished_at = ?1, updated_at = ?1, \
                 last_error = 'attempt ' || attempts || ' of ' || max_attempts || ' was lost: its worker stopped (lease expired)' \
                 WHERE status = 'running' AND lease_until <= ?1 AND attempts >= max_attempts",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // Back in the queue at their old time: first in line among their owner's work.
            sqlx::query(
                "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_until = NULL, updated_at = ?1 \
                 WHERE status = 'running' AND lease_until <= ?1",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?;
            owners = due_owners(&mut tx, now).await?;
        }
        let mut claimed = Vec::new();
        for (tenant, plugin, count) in allocate(&owners, policy) {
            let rows = sqlx::query(
                "UPDATE jobs SET status = 'running', lease_owner = ?1, lease_until = ?2 + ?3, attempts = attempts + 1, \
                 updated_at = ?2 \
                 WHERE id IN (SELECT id FROM jobs \
                     WHERE status = 'queued' AND tenant_id = ?4 AND plugin_id = ?5 AND run_at <= ?2 \
                     ORDER BY run_at, id LIMIT ?6) \
                 RETURNING id, tenant_id, plugin_id, kind, name, payload, event_id, attempts, max_attempts, run_at, chain, \
                 task_id",
            )
            .bind(worker)
            .bind(now)
            .bind(lease_ms)
            .bind(&tenant)
            .bind(&plugin)
            .bind(i64::from(count))
            .fetch_all(&mut *tx)
            .await?;
            for r in rows {
                let job = ClaimedJob {
                    tenant: r.get(1),
                    plugin: r.get(2),
                    kind: JobKind::parse(r.get::<&str, _>(3)).unwrap_or(JobKind::Job),
                    name: r.get(4),
                    payload: r.get(5),
                    event_id: r.get(6),
                    max_attempts: u32_of(r.get(8)),
                    run_at: r.get(9),
                    chain: u32_of(r.get(10)),
                    task: r.get(11),
                    lease: Lease { job_id: r.get(0), owner: worker.to_owned(), attempt: u32_of(r.get(7)) },
                    lease_until: now.saturating_add(lease_ms),
                };
                sqlx::query("INSERT INTO job_runs (job_id, attempt, worker, started_at) VALUES (?, ?, ?, ?)")
                    .bind(&job.lease.job_id)
                    .bind(i64::from(job.lease.attempt))
                    .bind(worker)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                claimed.push(job);
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Every (tenant, plugin) with queued work due at `now`.
    async fn due_owners(&self, now: i64) -> Result<Vec<(String, String)>, JobStoreError> {
        let mut conn = self.pool.acquire().await?;
        due_owners(&mut conn, now).await
    }

    /// Records a failed attempt: back to `queued` at `retry_at`, or `dead` when the attempts
    /// are used up or `terminal`. Returns the job's new status, or `None` if the lease was
    /// lost (another worker owns the job now; its outcome stands).
    async fn fail(
        &self,
        lease: &Lease,
        now: i64,
        error: &str,
        retry_at: i64,
        terminal: bool,
    ) -> Result<Option<JobStatus>, JobStoreError> {
        let _turn = self.writes.turn("").await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let status: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET \
                 status = CASE WHEN ?5 OR attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
                 finished_at = CASE WHEN ?5 OR attempts >= max_attempts THEN ?1 ELSE NULL END, \
                 run_at = CASE WHEN ?5 OR attempts >= max_attempts THEN run_at ELSE ?2 END, \
                 last_error = ?3, lease_owner = NULL, lease_until = NULL, updated_at = ?1 \
             WHERE id = ?4 AND status = 'running' AND lease_owner = ?6 AND attempts = ?7 \
             RETURNING status",
        )
        .bind(now)
        .bind(retry_at)
        .bind(error)
        .bind(&lease.job_id)
        .bind(terminal)
        .bind(&lease.owner)
        .bind(i64::from(lease.attempt))
        .fetch_optional(&mut *tx)
        .await?;
        if status.is_some() {
            finish_run(&mut tx, lease, now, RunOutcome::Failed, error).await?;
        }
        tx.commit().await?;
        Ok(status.as_deref().and_then(JobStatus::parse))
    }

    /// Puts back a claimed job that never started (admission control refused it) without
    /// using an attempt; it is due again at `retry_at`. Returns whether the lease was still
    /// held.
    async fn defer(&self, lease: &Lease, now: i64, reason: &str, retry_at: i64) -> Result<bool, JobStoreError> {
        let _turn = self.writes.turn("").await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let moved = sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_at = ?1, last_error = ?2, \
             lease_owner = NULL, lease_until = NULL, updated_at = ?3 \
             WHERE id = ?4 AND status = 'running' AND lease_owner = ?5 AND attempts = ?6",
        )
        .bind(retry_at)
        .bind(reason)
        .bind(now)
        .bind(&lease.job_id)
        .bind(&lease.owner)
        .bind(i64::from(lease.attempt))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 1 {
            finish_run(&mut tx, lease, now, RunOutcome::Deferred, reason).await?;
        }
        tx.commit().await?;
        Ok(moved == 1)
    }

    /// The event a delivery job carries.
    async fn event(&self, id: &str) -> Result<Option<EventRecord>, JobStoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(event_record))
    }

    async fn list(&self, tenant: &str, filter: &JobFilter) -> Result<Vec<JobRecord>, JobStoreError> {
        let mut q = sqlx::QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = "));
        q.push_bind(tenant);
        if let Some(plugin) = &filter.plugin {
            q.push(" AND plugin_id = ").push_bind(plugin);
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(kind) = filter.kind {
            q.push(" AND kind = ").push_bind(kind.as_str());
        }
        if let Some((at, id)) = &filter.before {
            q.push(" AND (created_at, id) < (").push_bind(*at).push(", ").push_bind(id).push(")");
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(i64::from(filter.limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(job_record).collect())
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<(JobRecord, Vec<JobRun>), JobStoreError> {
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ? AND id = ?")))
                .bind(tenant)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| JobStoreError::NotFound(id.to_owned()))?;
        let runs = sqlx::query(
            "SELECT attempt, worker, started_at, finished_at, outcome, error FROM job_runs WHERE job_id = ? ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| JobRun {
            attempt: u32_of(r.get(0)),
            worker: r.get(1),
            started_at: r.get(2),
            finished_at: r.get(3),
            outcome: r.get::<Option<&str>, _>(4).and_then(RunOutcome::parse),
            error: r.get(5),
        })
        .collect();
        Ok((job_record(&row), runs))
    }

    /// Puts a dead or cancelled job back in the queue with a fresh set of attempts.
    async fn retry(&self, tenant: &str, id: &str, now: i64) -> Result<JobRecord, JobStoreError> {
        let update = "UPDATE jobs SET status = 'queued', attempts = 0, run_at = ?1, finished_at = NULL, updated_at = ?1 \
             WHERE tenant_id = ?2 AND id = ?3 AND status IN ('dead', 'cancelled')";
        self.change_state(tenant, id, now, update, "only dead or cancelled jobs can be retried").await
    }

    /// Cancels a job that has not started (or is waiting for a retry).
    async fn cancel(&self, tenant: &str, id: &str, now: i64) -> Result<JobRecord, JobStoreError> {
        let update = "UPDATE jobs SET status = 'cancelled', finished_at = ?1, updated_at = ?1 \
             WHERE tenant_id = ?2 AND id = ?3 AND status = 'queued'";
        self.change_state(tenant, id, now, update, "only queued jobs can be cancelled").await
    }

    async fn cancel_queued_of(&self, tenant: &str, plugin: &str, now: i64) -> Result<u64, JobStoreError> {
        let cancelled = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?1, updated_at = ?1 \
             WHERE tenant_id = ?2 AND plugin_id = ?3 AND status = 'queued'",
        )
        .bind(now)
        .bind(tenant)
        .bind(plugin)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(cancelled)
    }

    /// A tenant's tasks, newest first: up to `limit` older than `before` (the previous page's
    /// last (created_at, id)), of `plugin` and in `status` if given.
    async fn tasks(
        &self,
        tenant: &str,
        plugin: Option<&str>,
        status: Option<TaskStatus>,
        before: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>, JobStoreError> {
        let mut q = sqlx::QueryBuilder::new(format!(
            "SELECT {TASK_COLUMNS} FROM tasks t LEFT JOIN jobs j ON j.id = t.current_job WHERE t.tenant_id = "
        ));
        q.push_bind(tenant);
        if let Some(plugin) = plugin {
            q.push(" AND t.plugin_id = ").push_bind(plugin);
        }
        if let Some(status) = status {
            q.push(
                " AND CASE WHEN t.status = 'running' AND j.status = 'dead' THEN 'failed' \
     WHEN t.status = 'running' AND j.status = 'cancelled' THEN 'cancelled' ELSE t.status END = ",
            )
            .push_bind(status.as_str());
        }
        if let Some((at, id)) = before {
            q.push(" AND (t.created_at, t.id) < (").push_bind(at).push(", ").push_bind(id).push(")");
        }
        q.push(" ORDER BY t.created_at DESC, t.id DESC LIMIT ").push_bind(i64::from(limit));
        Ok(q.build().fetch_all(&self.pool).await?.iter().map(task_record).collect())
    }

    /// One of a tenant's tasks.
    async fn task(&self, tenant: &str, id: &str) -> Result<TaskRecord, JobStoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks t LEFT JOIN jobs j ON j.id = t.current_job WHERE t.tenant_id = ? AND t.id = ?"
        )))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(task_record).ok_or_else(|| JobStoreError::TaskNotFound(id.to_owned()))
    }

    /// Cancels a running (or failed) task: no further chunk runs; a chunk running now still
    /// commits its writes, and its `advance` queues nothing.
    async fn cancel_task(&self, tenant: &str, id: &str, now: i64) -> Result<TaskRecord, JobStoreError> {
        let _turn = self.writes.turn("").await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let changed = sqlx::query(
            "UPDATE tasks SET status = 'cancelled', finished_at = ?1, updated_at = ?1 \
             WHERE tenant_id = ?2 AND id = ?3 AND status = 'running'",
        )
        .bind(now)
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            sqlx::query(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?1, updated_at = ?1 \
                 WHERE tenant_id = ?2 AND task_id = ?3 AND status IN ('queued', 'dead')",
            )
            .bind(now)
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let task = self.task(tenant, id).await?;
        if changed == 0 {
            return Err(JobStoreError::WrongState {
                id: id.to_owned(),
                status: task.status.as_str(),
                action: "only running or failed tasks can be cancelled",
            });
        }
        Ok(task)
    }

    /// Inserts one job (an admin's "run now", a scheduled firing) in its own transaction.
    async fn enqueue(&self, tenant: &str, job: &NewJob, now: i64) -> Result<bool, JobStoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(insert_job(&mut conn, tenant, job, now).await?)
    }

    /// Queue depth by status, for metrics and the bench.
    async fn count(&self, status: JobStatus) -> Result<i64, JobStoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = ?")
            .bind(status.as_str())
            .fetch_one(&self.pool)
            .await?)
    }

    // ---- schedules ----

    /// Every schedule row: (tenant, plugin, name) → spec.
    async fn schedule_specs(&self) -> Result<Vec<((String, String, String), String)>, JobStoreError> {
        let rows = sqlx::query("SELECT tenant_id, plugin_id, name, spec FROM schedules").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3))).collect())
    }

    /// Creates a schedule row, or resets its next time when its expression changed.
    async fn upsert_schedule(
        &self,
        tenant: &str,
        plugin: &str,
        name: &str,
        spec: &str,
        next_run_at: i64,
    ) -> Result<(), JobStoreError> {
        sqlx::query(
            "INSERT INTO schedules (tenant_id, plugin_id, name, spec, next_run_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (tenant_id, plugin_id, name) DO UPDATE SET spec = excluded.spec, next_run_at = excluded.next_run_at \
             WHERE schedules.spec <> excluded.spec",
        )
        .bind(tenant)
        .bind(plugin)
        .bind(name)
        .bind(spec)
        .bind(next_run_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Schedules due at `now`.
    async fn due_schedules(&self, now: i64) -> Result<Vec<ScheduleRecord>, JobStoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, plugin_id, name, spec, next_run_at, last_run_at, last_job_id FROM schedules \
             WHERE next_run_at <= ? ORDER BY next_run_at LIMIT 500",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(schedule_record).collect())
    }

    /// Moves a due schedule to `next_run_at` and, if `job` is given, enqueues its firing, in one
    /// transaction. The move is a compare-and-set on the due time, so of several workers racing
    /// for the same tick exactly one fires it. Returns whether this call won.
    async fn fire_schedule(
        &self,
        due: &ScheduleRecord,
        next_run_at: i64,
        job: Option<&NewJob>,
        now: i64,
    ) -> Result<bool, JobStoreError> {
        let _turn = self.writes.turn(&due.tenant).await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let moved = sqlx::query(
            "UPDATE schedules SET next_run_at = ?, last_run_at = CASE WHEN ? IS NULL THEN last_run_at ELSE ? END, \
             last_job_id = COALESCE(?, last_job_id) \
             WHERE tenant_id = ? AND plugin_id = ? AND name = ? AND next_run_at = ?",
        )
        .bind(next_run_at)
        .bind(job.map(|j| j.id.as_str()))
        .bind(now)
        .bind(job.map(|j| j.id.as_str()))
        .bind(&due.tenant)
        .bind(&due.plugin)
        .bind(&due.name)
        .bind(due.next_run_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 1
            && let Some(job) = job
        {
            insert_job(&mut tx, &due.tenant, job, now).await?;
        }
        tx.commit().await?;
        Ok(moved == 1)
    }

    async fn list_schedules(&self, tenant: &str) -> Result<Vec<ScheduleRecord>, JobStoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, plugin_id, name, spec, next_run_at, last_run_at, last_job_id FROM schedules \
             WHERE tenant_id = ? ORDER BY plugin_id, name",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(schedule_record).collect())
    }

    // ---- events ----

    /// A tenant's events after `after_seq`, oldest first.
    async fn list_events(
        &self,
        tenant: &str,
        topic: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, JobStoreError> {
        let mut q = sqlx::QueryBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = "));
        q.push_bind(tenant).push(" AND seq > ").push_bind(after_seq);
        if let Some(topic) = topic {
            q.push(" AND topic = ").push_bind(topic);
        }
        q.push(" ORDER BY seq LIMIT ").push_bind(i64::from(limit));
        Ok(q.build().fetch_all(&self.pool).await?.iter().map(event_record).collect())
    }

    /// Queues a fresh delivery to `subscriber` of each of the tenant's events with `from <=
    /// seq <= to` on one of `topics`. Returns the events queued.
    async fn replay(
        &self,
        tenant: &str,
        subscriber: &str,
        topics: &[String],
        range: (i64, i64),
        max_attempts: u32,
        now: i64,
    ) -> Result<u64, JobStoreError> {
        let _turn = self.writes.turn(tenant).await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut queued = 0;
        for topic in topics {
            let rows = sqlx::query(
                "SELECT id, payload FROM events WHERE tenant_id = ? AND topic = ? AND seq BETWEEN ? AND ? ORDER BY seq",
            )
            .bind(tenant)
            .bind(topic)
            .bind(range.0)
            .bind(range.1)
            .fetch_all(&mut *tx)
            .await?;
            for r in rows {
                let job = NewJob {
                    id: crate::jobs::random_id("job"),
                    plugin: subscriber.to_owned(),
                    kind: JobKind::Event,
                    name: topic.clone(),
                    payload: String::new(),
                    idempotency_key: None,
                    event_id: Some(r.get(0)),
                    run_at: now,
                    max_attempts,
                    chain: 0,
                    task: None,
                };
                insert_job(&mut tx, tenant, &job, now).await?;
                queued += 1;
            }
        }
        tx.commit().await?;
        Ok(queued)
    }
}

fn schedule_record(r: &SqliteRow) -> ScheduleRecord {
    ScheduleRecord {
        tenant: r.get(0),
        plugin: r.get(1),
        name: r.get(2),
        spec: r.get(3),
        next_run_at: r.get(4),
        last_run_at: r.get(5),
        last_job_id: r.get(6),
    }
}

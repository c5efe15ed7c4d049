//! Background work: jobs plugins enqueue, cron schedules from manifests, and events delivered
//! to subscribers, all as rows of one durable queue.
//!
//! - A plugin call's enqueued jobs and published events are a [`PendingOutbox`] on its
//!   `HostState`; when the call succeeds they are turned into a [`Background`] (events fanned
//!   out to every subscriber enabled in the tenant) and committed in the same transaction as
//!   the call's storage writes. A failed call commits none of it.
//! - The [`runner::JobRunner`] claims due rows with a lease, calls the plugin's exported
//!   `worker`, and either commits the run's writes together with marking the job done, or
//!   records the failure and schedules a retry with exponential backoff and jitter, until
//!   the job is dead-lettered. A worker that dies mid-run loses its lease; another takes
//!   the job over when the lease expires (at-least-once).
//! - Schedules fire through a compare-and-set on their next time, so each tick fires once
//!   however many workers race for it.

pub mod cron;
pub mod runner;
pub mod store;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// What a queue row runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Enqueued by a plugin (or an admin).
    Job,
    /// A firing of a manifest schedule.
    Schedule,
    /// The delivery of one event to one subscriber.
    Event,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Job => "job",
            JobKind::Schedule => "schedule",
            JobKind::Event => "event",
        }
    }

    pub fn parse(s: &str) -> Option<JobKind> {
        [JobKind::Job, JobKind::Schedule, JobKind::Event].into_iter().find(|k| k.as_str() == s)
    }
}

text_states! {
    /// Where a job is: `queued` (waiting for `run_at`), `running` (leased to a worker),
    /// `done`, `dead` (attempts used up or failed for good; an admin may retry it) or
    /// `cancelled`.
    pub enum JobStatus {
        Queued = "queued",
        Running = "running",
        Done = "done",
        Dead = "dead",
        Cancelled = "cancelled",
    }
}

text_states! {
    /// Where a task is: `running`, `done`, `cancelled`, or `failed` (its current chunk is
    /// dead: retrying that job resumes the task; stored as `running`).
    pub enum TaskStatus {
        Running = "running",
        Done = "done",
        Cancelled = "cancelled",
        Failed = "failed",
    }
}

text_states! {
    /// How one attempt of a job ended: `done`, `failed`, `lost` (the worker stopped before
    /// finishing) or `deferred` (admission control refused it: no attempt used).
    pub enum RunOutcome {
        Done = "done",
        Failed = "failed",
        Lost = "lost",
        Deferred = "deferred",
    }
}

/// A row to insert into the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub id: String,
    /// The plugin that runs it.
    pub plugin: String,
    pub kind: JobKind,
    /// Job name, schedule name or event topic.
    pub name: String,
    pub payload: String,
    pub idempotency_key: Option<String>,
    pub event_id: Option<String>,
    pub run_at: i64,
    pub max_attempts: u32,
    /// How many job runs led to this one: 0 for work a request or a schedule started, the
    /// running job's chain plus one for work a job (or event delivery) started. A task's
    /// next chunk keeps its chunk's chain: a task ends by its own progress, not by depth.
    pub chain: u32,
    /// The task this job is a chunk of.
    pub task: Option<String>,
}

/// A task to create, committed with the call that started it (its first chunk is one of
/// the call's jobs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub id: String,
    pub plugin: String,
    pub name: String,
    pub title: String,
    pub total: Option<u64>,
    /// The first chunk's job id.
    pub first_job: String,
}

/// How a chunk moves its task on, committed with the chunk's writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskAdvance {
    pub task: String,
    /// Units this chunk did.
    pub done: u64,
    /// The next chunk; `None` finishes the task.
    pub next: Option<NewJob>,
}

/// An event to append to the log, with its deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub id: String,
    pub topic: String,
    pub payload: String,
    pub request_id: String,
    /// One row per subscriber enabled in the tenant at publish time.
    pub deliveries: Vec<NewJob>,
}

/// Proof that a worker holds a job: committing with it marks the job done, and fails (nothing
/// is applied) if the lease was lost to another worker in the meantime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub owner: String,
    pub attempt: u32,
}

/// Background work committed in the same transaction as a call's storage writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Background {
    pub events: Vec<NewEvent>,
    pub jobs: Vec<NewJob>,
    /// Tasks the call started (their first chunks are in `jobs`).
    pub tasks: Vec<NewTask>,
    /// The job this call ran, marked done by the commit.
    pub finishes: Option<Lease>,
    /// When the job this call ran is a chunk of a task: how the task moves on.
    pub advances: Option<TaskAdvance>,
    /// When the writes are a migration's: the tenant's move to the version it migrated to.
    pub moves: Option<TenantMove>,
}

/// A tenant's move to another version of the plugin whose writes it commits with (a
/// migration's): after the writes, the tenant's index entries are rewritten as `reindex`
/// says and its `tenant_plugins` row moves from `from` to `to`, only if it still runs
/// `from` ([`crate::storage::StoreError::MoveSuperseded`] otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantMove {
    pub from: String,
    pub to: String,
    pub reindex: Vec<crate::plugins::Reindex>,
}

impl Background {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.jobs.is_empty()
            && self.tasks.is_empty()
            && self.finishes.is_none()
            && self.advances.is_none()
            && self.moves.is_none()
    }

    /// Whether committing this adds work a runner should pick up.
    pub fn adds_work(&self) -> bool {
        !self.jobs.is_empty()
            || self.events.iter().any(|e| !e.deliveries.is_empty())
            || self.advances.as_ref().is_some_and(|a| a.next.is_some())
    }
}

/// What a plugin call asked for through the `jobs` and `events` imports, before routing.
#[derive(Debug, Clone, Default)]
pub struct PendingOutbox {
    pub events: Vec<PendingEvent>,
    pub jobs: Vec<PendingJob>,
    /// Tasks started: each with its first chunk, which is also in `jobs`.
    pub tasks: Vec<PendingTask>,
    /// The running chunk's `tasks.advance`: units done and the next chunk's payload.
    pub advance: Option<(u64, Option<String>)>,
}

#[derive(Debug, Clone)]
pub struct PendingTask {
    pub id: String,
    pub name: String,
    pub title: String,
    pub total: Option<u64>,
    pub first_job: String,
}

#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub id: String,
    pub topic: String,
    pub payload: String,
}

#[derive(Debug, Clone)]
pub struct PendingJob {
    pub id: String,
    pub name: String,
    pub payload: String,
    pub run_at: i64,
    pub idempotency_key: Option<String>,
    /// The task it starts, when it is a task's first chunk.
    pub task: Option<String>,
}

impl PendingOutbox {
    /// Whether the call asked for new work (events, jobs, tasks); a chunk's `advance` does
    /// not count: it only continues work already started.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.jobs.is_empty()
    }
}

/// A fresh random id with a type prefix, e.g. `job_3f9c...`.
pub fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The id of a job enqueued with an idempotency key: the same for every enqueue of that key
/// by that plugin in that tenant, so the second insert is a no-op, even between replicas.
pub fn keyed_job_id(tenant: &str, plugin: &str, key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(tenant)
        .chain_update([0])
        .chain_update(plugin)
        .chain_update([0])
        .chain_update(key)
        .finalize();
    format!("job_{}", hex::encode(&digest[..12]))
}

/// The id of a schedule's firing for one due time: replicas that race to fire it agree on it.
pub fn schedule_job_id(tenant: &str, plugin: &str, schedule: &str, due_at: i64) -> String {
    keyed_job_id(tenant, plugin, &format!("\u{1}schedule\u{1}{schedule}\u{1}{due_at}"))
}

/// Delay before retrying after `attempt` failed attempts: `base * 2^(attempt-1)`, capped at an
/// hour, then "equal jitter" (half fixed, half random) so retries of a failed batch spread out.
pub fn backoff_ms(base_ms: u32, attempt: u32) -> i64 {
    let exp = u64::from(base_ms).saturating_mul(1u64 << attempt.saturating_sub(1).min(32)).min(3_600_000);
    let half = exp / 2;
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).expect("the operating system's random source failed");
    let jitter = if half == 0 { 0 } else { u64::from_le_bytes(r) % (half + 1) };
    i64::try_from(half + jitter).unwrap_or(3_600_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_ids_are_stable_and_scoped() {
        assert_eq!(keyed_job_id("t", "p", "k"), keyed_job_id("t", "p", "k"));
        assert_ne!(keyed_job_id("t", "p", "k"), keyed_job_id("t2", "p", "k"));
        assert_ne!(keyed_job_id("t", "p", "k"), keyed_job_id("t", "p2", "k"));
        assert_ne!(keyed_job_id("tp", "", "k"), keyed_job_id("t", "p", "k"));
        assert_ne!(schedule_job_id("t", "p", "s", 1), schedule_job_id("t", "p", "s", 2));
    }

    #[test]
    fn backoff_grows_exponentially_within_its_jitter_band_and_is_capped() {
        for attempt in 1..=6u32 {
            let full = 1000i64 << (attempt - 1);
            for _ in 0..50 {
                let d = backoff_ms(1000, attempt);
                assert!((full / 2..=full).contains(&d), "attempt {attempt}: {d}");
            }
        }
        assert!(backoff_ms(1000, 60) <= 3_600_000);
        assert!(backoff_ms(1000, 60) >= 1_800_000);
    }
}

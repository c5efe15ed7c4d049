//! Background work's records: the queue, schedules, events and tasks, and [`JobQueue`], the
//! backend seam that claims, finishes and inspects them.
//!
//! A claim takes due jobs fairly (see [`allocate`]) under a lease. Every state change after
//! the claim names the lease (owner and attempt), so a worker whose lease expired cannot
//! overwrite the outcome of the worker that took the job over.

use super::{JobKind, JobStatus, Lease, NewJob, RunOutcome, TaskStatus};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    #[error("no job `{0}` in this tenant")]
    NotFound(String),
    #[error("no task `{0}` in this tenant")]
    TaskNotFound(String),
    #[error("`{id}` is {status}; {action}")]
    WrongState { id: String, status: &'static str, action: &'static str },
    #[error(transparent)]
    Database(#[from] crate::backend::BackendError),
    #[error(transparent)]
    Store(#[from] crate::storage::StoreError),
}

/// A job a worker has claimed and must run.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub tenant: String,
    pub plugin: String,
    pub kind: JobKind,
    pub name: String,
    pub payload: String,
    pub event_id: Option<String>,
    pub max_attempts: u32,
    pub run_at: i64,
    /// See [`NewJob::chain`].
    pub chain: u32,
    /// The task it is a chunk of.
    pub task: Option<String>,
    pub lease: Lease,
    /// When the lease ends (host clock, ms): another worker may take the job over then.
    pub lease_until: i64,
}

/// How many jobs one claim may take, and from whom.
#[derive(Debug, Clone, Default)]
pub struct ClaimPolicy {
    /// Jobs in all.
    pub limit: u32,
    /// Jobs one tenant may get, unless `room` says otherwise.
    pub tenant_room: u32,
    /// Tenants that already have work with this worker: how many more each may get.
    pub room: std::collections::HashMap<String, u32>,
    /// Tenants take turns in id order starting after this one.
    pub start_after: Option<String>,
    /// Which of a tenant's plugins goes first: rotates with each claim.
    pub turn: usize,
}

/// How many jobs to take from each owner: tenants in turn (from `start_after`), each
/// tenant's plugins in turn, one job per turn, until the limit or every tenant's room is used.
pub fn allocate(owners: &[(String, String)], policy: &ClaimPolicy) -> Vec<(String, String, u32)> {
    use std::collections::BTreeMap;
    let mut tenants: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (tenant, plugin) in owners {
        tenants.entry(tenant).or_default().push(plugin);
    }
    let mut order: Vec<&str> = tenants.keys().copied().collect();
    if let Some(after) = &policy.start_after {
        let at = order.iter().position(|t| *t > after.as_str()).unwrap_or(0);
        order.rotate_left(at);
    }
    let mut room: Vec<u32> = order.iter().map(|t| policy.room.get(*t).copied().unwrap_or(policy.tenant_room)).collect();
    let mut counts: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    let mut taken = 0;
    let mut turn = policy.turn;
    while taken < policy.limit && room.iter().any(|r| *r > 0) {
        for (i, tenant) in order.iter().enumerate() {
            if taken == policy.limit {
                break;
            }
            if room[i] == 0 {
                continue;
            }
            let plugins = &tenants[tenant];
            *counts.entry((tenant, plugins[turn % plugins.len()])).or_default() += 1;
            room[i] -= 1;
            taken += 1;
        }
        turn += 1;
    }
    // In the order of the turns, so the first tenant served is first.
    let mut out: Vec<(String, String, u32)> = Vec::new();
    for tenant in &order {
        for plugin in &tenants[tenant] {
            if let Some(n) = counts.get(&(*tenant, *plugin)) {
                out.push((tenant.to_string(), plugin.to_string(), *n));
            }
        }
    }
    out
}

/// What an admin sees of a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobRecord {
    pub id: String,
    pub tenant: String,
    pub plugin: String,
    pub kind: JobKind,
    pub name: String,
    /// JSON text.
    pub payload: String,
    pub idempotency_key: Option<String>,
    pub event_id: Option<String>,
    pub status: JobStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at: i64,
    pub lease_until: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    /// The task it is a chunk of.
    pub task: Option<String>,
}

/// What an admin sees of a task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskRecord {
    pub id: String,
    pub tenant: String,
    pub plugin: String,
    /// The job name its chunks run under.
    pub name: String,
    pub title: String,
    pub status: TaskStatus,
    /// Units the committed chunks did.
    pub done: u64,
    /// Units in all, when the plugin said.
    pub total: Option<u64>,
    /// Chunks committed.
    pub chunks: u64,
    /// The chunk queued, running or last run.
    pub current_job: String,
    /// Why the current chunk failed last (while it is retried, or after it died).
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

/// One attempt of a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobRun {
    pub attempt: u32,
    pub worker: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// Absent while running.
    pub outcome: Option<RunOutcome>,
    pub error: Option<String>,
}

/// A schedule's state in one tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleRecord {
    pub tenant: String,
    pub plugin: String,
    pub name: String,
    /// `<cron expression> <time zone>`.
    pub spec: String,
    pub next_run_at: i64,
    pub last_run_at: Option<i64>,
    pub last_job_id: Option<String>,
}

/// An event in the log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventRecord {
    /// Position in the tenant's log (increasing; use it for ranges and paging).
    pub seq: i64,
    pub id: String,
    pub tenant: String,
    pub topic: String,
    pub source: String,
    pub published_at: i64,
    /// JSON text.
    pub payload: String,
    pub request_id: Option<String>,
}

/// Filters for listing jobs, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub plugin: Option<String>,
    pub status: Option<JobStatus>,
    pub kind: Option<JobKind>,
    /// Only jobs older than this (created_at, id) position: the previous page's last.
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

/// The queue's backend. Implementations must pass the jobs part of
/// [`crate::backend::conformance`].
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
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
    ) -> Result<Vec<ClaimedJob>, JobStoreError>;

    /// Every (tenant, plugin) with queued work due at `now`.
    async fn due_owners(&self, now: i64) -> Result<Vec<(String, String)>, JobStoreError>;

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
    ) -> Result<Option<JobStatus>, JobStoreError>;

    /// Puts back a claimed job that never started (admission control refused it) without
    /// using an attempt; it is due again at `retry_at`. Returns whether the lease was still
    /// held.
    async fn defer(&self, lease: &Lease, now: i64, reason: &str, retry_at: i64) -> Result<bool, JobStoreError>;

    /// The event a delivery job carries.
    async fn event(&self, id: &str) -> Result<Option<EventRecord>, JobStoreError>;

    async fn list(&self, tenant: &str, filter: &JobFilter) -> Result<Vec<JobRecord>, JobStoreError>;

    async fn get(&self, tenant: &str, id: &str) -> Result<(JobRecord, Vec<JobRun>), JobStoreError>;

    /// Puts a dead or cancelled job back in the queue with a fresh set of attempts.
    async fn retry(&self, tenant: &str, id: &str, now: i64) -> Result<JobRecord, JobStoreError>;

    /// Cancels a job that has not started (or is waiting for a retry).
    async fn cancel(&self, tenant: &str, id: &str, now: i64) -> Result<JobRecord, JobStoreError>;

    /// Cancels every job of `plugin` in `tenant` that has not started (a purge of its data);
    /// returns how many.
    async fn cancel_queued_of(&self, tenant: &str, plugin: &str, now: i64) -> Result<u64, JobStoreError>;

    /// A tenant's tasks, newest first: up to `limit` older than `before` (the previous page's
    /// last (created_at, id)), of `plugin` and in `status` if given.
    async fn tasks(
        &self,
        tenant: &str,
        plugin: Option<&str>,
        status: Option<TaskStatus>,
        before: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>, JobStoreError>;

    /// One of a tenant's tasks.
    async fn task(&self, tenant: &str, id: &str) -> Result<TaskRecord, JobStoreError>;

    /// Cancels a running (or failed) task: no further chunk runs; a chunk running now still
    /// commits its writes, and its `advance` queues nothing.
    async fn cancel_task(&self, tenant: &str, id: &str, now: i64) -> Result<TaskRecord, JobStoreError>;

    /// Inserts one job (an admin's "run now", a scheduled firing) in its own transaction.
    async fn enqueue(&self, tenant: &str, job: &NewJob, now: i64) -> Result<bool, JobStoreError>;

    /// Queue depth by status, for metrics and the bench.
    async fn count(&self, status: JobStatus) -> Result<i64, JobStoreError>;

    /// Every schedule row: (tenant, plugin, name) → spec.
    async fn schedule_specs(&self) -> Result<Vec<((String, String, String), String)>, JobStoreError>;

    /// Creates a schedule row, or resets its next time when its expression changed.
    async fn upsert_schedule(
        &self,
        tenant: &str,
        plugin: &str,
        name: &str,
        spec: &str,
        next_run_at: i64,
    ) -> Result<(), JobStoreError>;

    /// Schedules due at `now`.
    async fn due_schedules(&self, now: i64) -> Result<Vec<ScheduleRecord>, JobStoreError>;

    /// Moves a due schedule to `next_run_at` and, if `job` is given, enqueues its firing, in one
    /// transaction. The move is a compare-and-set on the due time, so of several workers racing
    /// for the same tick exactly one fires it. Returns whether this call won.
    async fn fire_schedule(
        &self,
        due: &ScheduleRecord,
        next_run_at: i64,
        job: Option<&NewJob>,
        now: i64,
    ) -> Result<bool, JobStoreError>;

    async fn list_schedules(&self, tenant: &str) -> Result<Vec<ScheduleRecord>, JobStoreError>;

    /// A tenant's events after `after_seq`, oldest first.
    async fn list_events(
        &self,
        tenant: &str,
        topic: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, JobStoreError>;

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
    ) -> Result<u64, JobStoreError>;
}

/// The queue every part of the host shares.
pub type JobStore = std::sync::Arc<dyn JobQueue>;

#[cfg(test)]
mod fairness_tests {
    use super::*;

    fn owners(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(t, p)| (t.to_string(), p.to_string())).collect()
    }

    #[test]
    fn tenants_take_turns_whatever_their_number_of_plugins() {
        let o = owners(&[("a", "p1"), ("a", "p2"), ("a", "p3"), ("b", "q")]);
        let policy = ClaimPolicy { limit: 4, tenant_room: 8, ..ClaimPolicy::default() };
        let got = allocate(&o, &policy);
        let for_tenant = |t: &str| got.iter().filter(|(x, _, _)| x == t).map(|(_, _, n)| n).sum::<u32>();
        assert_eq!((for_tenant("a"), for_tenant("b")), (2, 2));
        // a's two turns went to two different plugins.
        assert_eq!(got.iter().filter(|(t, _, _)| t == "a").count(), 2);
    }

    #[test]
    fn a_tenant_without_room_is_skipped_and_the_rest_is_shared() {
        let o = owners(&[("a", "p"), ("b", "p"), ("c", "p")]);
        let policy = ClaimPolicy {
            limit: 6,
            tenant_room: 2,
            room: [("a".to_string(), 0)].into_iter().collect(),
            start_after: None,
            turn: 0,
        };
        let got = allocate(&o, &policy);
        assert_eq!(got, vec![("b".into(), "p".into(), 2), ("c".into(), "p".into(), 2)]);
    }

    #[test]
    fn a_tenants_plugins_take_turns_across_claims() {
        let o = owners(&[("a", "p1"), ("a", "p2"), ("a", "p3")]);
        let served: Vec<String> = (0..3)
            .map(|turn| {
                let policy = ClaimPolicy { limit: 1, tenant_room: 1, turn, ..ClaimPolicy::default() };
                allocate(&o, &policy)[0].1.clone()
            })
            .collect();
        assert_eq!(served, ["p1", "p2", "p3"]);
    }

    #[test]
    fn turns_start_after_the_tenant_served_first_last_time() {
        let o = owners(&[("a", "p"), ("b", "p"), ("c", "p")]);
        let policy = ClaimPolicy { limit: 1, tenant_room: 4, start_after: Some("a".into()), ..ClaimPolicy::default() };
        assert_eq!(allocate(&o, &policy), vec![("b".into(), "p".into(), 1)]);
        let policy = ClaimPolicy { start_after: Some("c".into()), ..policy };
        assert_eq!(allocate(&o, &policy), vec![("a".into(), "p".into(), 1)]);
    }
}

//! The background worker: fires due schedules, claims due jobs with a lease, runs each in a
//! fresh plugin instance through the `worker` export, and records the outcome.

use super::cron::CronSchedule;
use super::store::{ClaimPolicy, ClaimedJob, JobStore};
use super::{JobKind, JobStatus, NewJob, TaskAdvance};
use crate::calls::{CallPlan, Calls, Repeat, Save};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::plugins::{LoadedPlugin, PluginRegistry};
use crate::runtime::bindings::exports::keel::platform::worker::{Event as WitEvent, Job as WitJob};
use crate::runtime::bindings::keel::platform::types::{Caller, Error as WitError};
use crate::runtime::{Lane, WorkItem};
use crate::storage::{StoreError, UnitOfWorkError, WriteAudit};
use crate::tenancy::TenantStore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

const SCHEDULE_CHECK_MS: i64 = 1_000;
/// How often a busy worker looks for tenants with nothing in flight that have work due.
const NEWCOMER_CHECK: Duration = Duration::from_millis(50);

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// How often to look for due work when nothing wakes the worker earlier.
    pub poll_interval: Duration,
    /// How long a claimed job stays ours; after that another worker may take it over.
    pub lease: Duration,
    /// Background calls that may run at once.
    pub concurrency: usize,
    /// Background calls of one tenant that may run at once (below `concurrency`, so another
    /// tenant's work always finds a slot).
    pub tenant_concurrency: usize,
    /// Work a job enqueues or publishes is refused past this chain length.
    pub max_chain: u32,
    /// A task whose chunk asks for a next one past this many chunks fails instead.
    pub max_task_chunks: u64,
}

/// (tenant, plugin, schedule name) → the spec its stored next time was computed from.
type ScheduleSpecs = HashMap<(String, String, String), String>;

/// Everything the worker needs; shared by its tasks.
pub struct JobRunner {
    pub jobs: JobStore,
    pub registry: Arc<PluginRegistry>,
    pub tenancy: Arc<TenantStore>,
    pub clock: Arc<Clock>,
    pub metrics: Arc<Metrics>,
    /// How each run is set up, saved, and repeated after a lost race.
    pub calls: Arc<Calls>,
    pub settings: RunnerSettings,
    pub departments: Arc<crate::departments::Departments>,
    /// Notified when work may be due: a commit that added some, a finished job, a moved clock.
    pub wake: Arc<Notify>,
    worker_id: String,
    /// Jobs claimed and not yet finished (running or waiting for a slot).
    inflight: AtomicUsize,
    /// Per tenant: jobs claimed and not yet finished, and the slots its jobs run in.
    tenants: Mutex<HashMap<String, TenantWork>>,
    /// The tenant served first by the last claim; the next claim starts after it.
    rotation: Mutex<Option<String>>,
    /// Claims made, so each tenant's plugins take turns across claims too.
    claims: AtomicUsize,
    /// When a busy worker last looked for newcomers.
    newcomers_checked: Mutex<Option<Instant>>,
    /// Schedule rows known to exist, with the spec their next time was computed from.
    known_schedules: Mutex<Option<ScheduleSpecs>>,
}

struct TenantWork {
    inflight: usize,
    slots: Arc<Semaphore>,
}

/// Why one attempt did not complete.
struct Failure {
    message: String,
    /// Retrying cannot help (the plugin is gone): dead-letter now.
    terminal: bool,
    /// It never started (admission refused it): back in the queue without using an attempt.
    deferred: bool,
    /// Its commit lost a race: the run may be repeated at once.
    lost_race: bool,
}

fn retryable(message: impl Into<String>) -> Failure {
    Failure { message: message.into(), terminal: false, deferred: false, lost_race: false }
}

/// How long a job refused by admission control waits before it is claimed again.
const DEFER_MS: i64 = 1_000;

fn describe(error: &WitError) -> String {
    match error {
        WitError::NotFound(m) => format!("not-found: {m}"),
        WitError::Conflict(m) => format!("conflict: {m}"),
        WitError::Invalid(m) => format!("invalid: {m}"),
        WitError::Forbidden(m) => format!("forbidden: {m}"),
        WitError::Unavailable(m) => format!("unavailable: {m}"),
        WitError::Internal(m) => format!("internal: {m}"),
    }
}

impl JobRunner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        jobs: JobStore,
        calls: Arc<Calls>,
        settings: RunnerSettings,
        departments: Arc<crate::departments::Departments>,
    ) -> JobRunner {
        JobRunner {
            jobs,
            registry: calls.registry.clone(),
            tenancy: calls.tenancy.clone(),
            clock: calls.clock.clone(),
            metrics: calls.metrics.clone(),
            wake: calls.jobs_wake.clone(),
            calls,
            settings,
            departments,
            worker_id: super::random_id("wrk"),
            inflight: AtomicUsize::new(0),
            tenants: Mutex::new(HashMap::new()),
            rotation: Mutex::new(None),
            claims: AtomicUsize::new(0),
            newcomers_checked: Mutex::new(None),
            known_schedules: Mutex::new(None),
        }
    }

    /// Runs until `stop` turns true, then waits for the attempts in flight.
    pub fn spawn(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
            tracing::info!(worker = %self.worker_id, "background worker started");
            // Schedules have minute resolution: look at them once a second (of host-clock time,
            // so moving the clock is seen at once), or when plugins or enablement changed, not
            // on every wake-up.
            let mut schedules_checked_at = i64::MIN;
            let mut seen = (u64::MAX, u64::MAX);
            while !*stop.borrow() {
                let now = self.clock.now_ms();
                let generation = (self.registry.generation(), self.tenancy.generation());
                if now.saturating_sub(schedules_checked_at) >= SCHEDULE_CHECK_MS || generation != seen {
                    schedules_checked_at = now;
                    seen = generation;
                    if let Err(e) = self.fire_schedules().await {
                        tracing::warn!(error = %e, "firing schedules failed; retrying on the next tick");
                    }
                }
                self.claim_and_run(&permits).await;
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.settings.poll_interval) => {}
                    _ = stop.changed() => {}
                }
            }
            // Every claimed job runs to its end, also those still waiting for their tenant's
            // slot: a claim that never ran would come back only when its lease expired.
            while self.inflight.load(Ordering::Acquire) > 0 {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            tracing::info!(worker = %self.worker_id, "background worker stopped");
        })
    }

    /// Keeps up to twice `concurrency` jobs claimed: one batch running, one waiting for a slot.
    /// Claiming a batch when half the slots free up (not one job per finished job) keeps
    /// claim transactions from competing with every commit for the database's write lock;
    /// but a tenant with nothing in flight here is claimed for at once, so one tenant's slow
    /// batch never holds another tenant's work back. A tenant's jobs run in at most
    /// `tenant_concurrency` slots.
    async fn claim_and_run(self: &Arc<Self>, permits: &Arc<Semaphore>) {
        let concurrency = self.settings.concurrency.max(1);
        let capacity = 2 * concurrency;
        loop {
            let inflight = self.inflight.load(Ordering::Acquire);
            if inflight >= capacity {
                return;
            }
            let want = (capacity - inflight).min(64);
            let mut policy = self.claim_policy(want as u32);
            let now = self.clock.now_ms();
            if inflight >= concurrency {
                // Past half the window, claim only for tenants with nothing here yet.
                if !self.newcomer_due(&policy, now).await {
                    return;
                }
                policy.room.values_mut().for_each(|room| *room = 0);
            }
            let lease_ms = i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX);
            let claimed = match self.jobs.claim(&self.worker_id, now, lease_ms, &policy).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming jobs failed; retrying on the next tick");
                    return;
                }
            };
            let got = claimed.len();
            if let Some(first) = claimed.first() {
                *self.rotation.lock().expect("rotation lock") = Some(first.tenant.clone());
            }
            for job in claimed {
                self.inflight.fetch_add(1, Ordering::AcqRel);
                let slots = self.tenant_started(&job.tenant);
                let (runner, permits) = (self.clone(), permits.clone());
                tokio::spawn(async move {
                    let tenant = job.tenant.clone();
                    if let Ok(slot) = slots.acquire_owned().await
                        && let Ok(permit) = permits.acquire_owned().await
                    {
                        runner.run_one(job).await;
                        drop((permit, slot));
                    }
                    runner.tenant_finished(&tenant);
                    runner.inflight.fetch_sub(1, Ordering::AcqRel);
                    runner.wake.notify_one();
                });
            }
            if got < want {
                return;
            }
        }
    }

    /// What the next claim may take: `limit` in all, each tenant up to twice its slots minus
    /// what it has in flight here.
    fn claim_policy(&self, limit: u32) -> ClaimPolicy {
        let per_tenant = 2 * self.settings.tenant_concurrency.max(1);
        let tenants = self.tenants.lock().expect("tenants lock");
        ClaimPolicy {
            limit,
            tenant_room: per_tenant as u32,
            room: tenants.iter().map(|(t, w)| (t.clone(), per_tenant.saturating_sub(w.inflight) as u32)).collect(),
            start_after: self.rotation.lock().expect("rotation lock").clone(),
            turn: self.claims.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Whether a tenant that has nothing in flight here has work due (a read, no lock; at
    /// most every `NEWCOMER_CHECK`, not on every finished job).
    async fn newcomer_due(&self, policy: &ClaimPolicy, now: i64) -> bool {
        {
            let mut checked = self.newcomers_checked.lock().expect("newcomer check lock");
            if checked.is_some_and(|at| at.elapsed() < NEWCOMER_CHECK) {
                return false;
            }
            *checked = Some(Instant::now());
        }
        match self.jobs.due_owners(now).await {
            Ok(owners) => owners.iter().any(|(tenant, _)| !policy.room.contains_key(tenant)),
            Err(_) => false,
        }
    }

    fn tenant_started(&self, tenant: &str) -> Arc<Semaphore> {
        let mut tenants = self.tenants.lock().expect("tenants lock");
        let work = tenants.entry(tenant.to_owned()).or_insert_with(|| TenantWork {
            inflight: 0,
            slots: Arc::new(Semaphore::new(self.settings.tenant_concurrency.max(1))),
        });
        work.inflight += 1;
        work.slots.clone()
    }

    fn tenant_finished(&self, tenant: &str) {
        let mut tenants = self.tenants.lock().expect("tenants lock");
        if let Some(work) = tenants.get_mut(tenant) {
            work.inflight -= 1;
            if work.inflight == 0 {
                tenants.remove(tenant);
            }
        }
    }

    /// Fires due schedules, then runs every due job once, one at a time, to completion; returns
    /// how many attempts ran. A deterministic worker for tests (the test kit), used instead of
    /// [`spawn`](Self::spawn).
    pub async fn run_due_once(&self) -> Result<usize, super::store::JobStoreError> {
        self.fire_schedules().await?;
        let lease_ms = i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX);
        let policy = ClaimPolicy { limit: 64, tenant_room: 64, ..ClaimPolicy::default() };
        let claimed = self.jobs.claim(&self.worker_id, self.clock.now_ms(), lease_ms, &policy).await?;
        let ran = claimed.len();
        for job in claimed {
            self.run_one(job).await;
        }
        Ok(ran)
    }

    /// Runs one claimed attempt and records its outcome.
    pub async fn run_one(&self, job: ClaimedJob) {
        let started = Instant::now();
        let outcome = match self.execute(&job).await {
            Ok(true) => "done",
            Ok(false) => "lease_lost",
            Err(failure) if failure.deferred => {
                let now = self.clock.now_ms();
                match self.jobs.defer(&job.lease, now, &failure.message, now + DEFER_MS).await {
                    Ok(true) => "deferred",
                    Ok(false) => "lease_lost",
                    Err(e) => {
                        tracing::error!(job = %job.lease.job_id, error = %e, "deferring a refused attempt failed");
                        "retry"
                    }
                }
            }
            Err(failure) => {
                let plugin_base = self
                    .registry
                    .for_tenant(&self.tenancy, &job.tenant, &job.plugin)
                    .map_or(1_000, |p| p.record.manifest.retry.backoff_ms);
                let now = self.clock.now_ms();
                let retry_at = now + super::backoff_ms(plugin_base, job.lease.attempt);
                tracing::warn!(job = %job.lease.job_id, plugin = %job.plugin, tenant = %job.tenant,
                    attempt = job.lease.attempt, error = %failure.message, "background attempt failed");
                match self.jobs.fail(&job.lease, now, &failure.message, retry_at, failure.terminal).await {
                    Ok(Some(JobStatus::Dead)) => "dead",
                    Ok(Some(_)) => "retry",
                    Ok(None) => "lease_lost",
                    Err(e) => {
                        // The lease will expire and the job will be retried: nothing is lost.
                        tracing::error!(job = %job.lease.job_id, error = %e, "recording a failed attempt failed");
                        "retry"
                    }
                }
            }
        };
        if outcome == "dead" {
            tracing::error!(job = %job.lease.job_id, plugin = %job.plugin, tenant = %job.tenant, "job dead-lettered");
        }
        self.metrics.record_background(&job.plugin, job.kind.as_str(), outcome, started.elapsed());
    }

    /// Calls the plugin; on success commits its writes, its own background work and the job's
    /// completion together. `Ok(false)`: the lease was lost and the run discarded.
    async fn execute(&self, job: &ClaimedJob) -> Result<bool, Failure> {
        // Jobs follow the tenant's version: one enqueued before the tenant moved runs on the
        // version it runs now.
        let plugin = self.registry.for_tenant(&self.tenancy, &job.tenant, &job.plugin).ok_or_else(|| {
            // Installed, but the tenant's version is not loaded here yet (another host moved
            // the tenant a moment ago): a later attempt finds it.
            let installed = self.registry.get(&job.plugin).is_some();
            Failure {
                message: match installed {
                    true => format!("the version of `{}` this tenant runs is not loaded on this host yet", job.plugin),
                    false => format!("plugin `{}` is not installed", job.plugin),
                },
                terminal: !installed,
                deferred: false,
                lost_race: false,
            }
        })?;
        if !plugin.record.enabled || !self.tenancy.is_enabled(&job.tenant, &job.plugin) {
            return Err(retryable(format!("plugin `{}` is not enabled for tenant `{}`", job.plugin, job.tenant)));
        }
        if !plugin.pre.has_worker() {
            return Err(Failure {
                message: format!(
                    "plugin `{}` {} no longer does background work (no worker export)",
                    job.plugin, plugin.record.version
                ),
                terminal: true,
                deferred: false,
                lost_race: false,
            });
        }
        let item = match job.kind {
            JobKind::Job | JobKind::Schedule => WorkItem::Job(WitJob {
                id: job.lease.job_id.clone(),
                name: job.name.clone(),
                payload: job.payload.clone(),
                attempt: job.lease.attempt,
                scheduled: job.kind == JobKind::Schedule,
                due_at: u64::try_from(job.run_at).unwrap_or(0),
            }),
            JobKind::Event => {
                let event_id = job.event_id.as_deref().unwrap_or_default();
                let event = self
                    .jobs
                    .event(event_id)
                    .await
                    .map_err(|e| retryable(format!("cannot read event `{event_id}`: {e}")))?
                    .ok_or_else(|| Failure {
                        message: format!("event `{event_id}` is missing"),
                        terminal: true,
                        deferred: false,
                        lost_race: false,
                    })?;
                WorkItem::Event(WitEvent {
                    id: event.id,
                    topic: event.topic,
                    tenant: event.tenant,
                    source: event.source,
                    published_at: u64::try_from(event.published_at).unwrap_or(0),
                    payload: event.payload,
                    attempt: job.lease.attempt,
                })
            }
        };
        let caller = Caller {
            tenant: job.tenant.clone(),
            user_id: format!("system:{}", job.kind.as_str()),
            display_name: "Keel background worker".into(),
            // Background work is the plugin's own: it holds every permission it declares.
            permissions: plugin.record.manifest.permissions.keys().cloned().collect(),
        };
        // A run whose commit lost a race runs again at once, on the winner's writes, inside
        // the same lease (not as a failed attempt with backoff), as long as another whole run
        // fits before the lease ends; after that the loss is a failed attempt.
        let lease_left = job.lease_until.saturating_sub(self.clock.now_ms()).max(0) as u64;
        let spare = std::time::Duration::from_millis(lease_left).saturating_sub(plugin.timeout);
        let repeat =
            Repeat { repeatable: !plugin.record.manifest.calls_departments(), until: Some(Instant::now() + spare) };
        let attempt = |_: u32| {
            let (plugin, caller, item) = (plugin.clone(), caller.clone(), item.clone());
            async move { self.attempt(job, &plugin, caller, item).await }
        };
        self.calls.repeating(&job.tenant, &job.plugin, repeat, attempt, |f: &Failure| f.lost_race).await
    }

    /// One run of the plugin for `job`, committed with its completion.
    async fn attempt(
        &self,
        job: &ClaimedJob,
        plugin: &Arc<LoadedPlugin>,
        caller: Caller,
        item: WorkItem,
    ) -> Result<bool, Failure> {
        let plan = CallPlan {
            plugin,
            tenant: &job.tenant,
            request_id: &job.lease.job_id,
            lane: Lane::Background,
            chain: job.chain + 1,
            depth: 0,
            task: job.task.clone(),
            permissions: Vec::new(),
            interop: (plugin.record.manifest.calls_departments()).then(|| self.departments.for_caller(None)),
            limits: None,
        };
        let context = self
            .calls
            .context(plan)
            .await
            .map_err(|e| retryable(format!("reading the plugin's settings failed: {e}")))?;
        let outcome = self.calls.runtime.run_work(&plugin.pre, caller, item, context).await.map_err(|e| {
            if let crate::runtime::CallError::Refused(refusal) = &e {
                self.metrics.record_refusal(&job.plugin, refusal.reason());
                return Failure { message: e.to_string(), terminal: false, deferred: true, lost_race: false };
            }
            retryable(e.to_string())
        })?;
        outcome.result.map_err(|e| retryable(describe(&e)))?;
        let chain = job.chain + 1;
        if chain > self.settings.max_chain && !outcome.outbox.is_empty() {
            // A job that keeps starting jobs (itself, or a loop of events) ends here.
            return Err(Failure {
                message: format!(
                    "too-many-jobs: this run would start the {chain}th job of one chain; jobs.max-chain is {}",
                    self.settings.max_chain
                ),
                terminal: true,
                deferred: false,
                lost_race: false,
            });
        }
        let now = self.clock.now_ms();
        let mut outbox = outcome.outbox;
        let advance = outbox.advance.take();
        if let (Some(task), Some((_, Some(_)))) = (&job.task, &advance) {
            // A task that never stops asking for another chunk ends here, failed: its chunk
            // is dead-lettered (nothing of this run saved) and an admin may retry it.
            let chunks = self
                .jobs
                .task(&job.tenant, task)
                .await
                .map_err(|e| retryable(format!("cannot read task `{task}`: {e}")))?
                .chunks;
            if chunks + 1 >= self.settings.max_task_chunks {
                return Err(Failure {
                    message: format!(
                        "too-many-chunks: task `{task}` has run {} chunks and asks for another; jobs.max-task-chunks is {}",
                        chunks + 1,
                        self.settings.max_task_chunks
                    ),
                    terminal: true,
                    deferred: false,
                    lost_race: false,
                });
            }
        }
        // A chunk of a task moves it on (a chunk that did not say how finishes it); the next
        // chunk keeps this one's chain: a task is bounded by its own progress.
        let advances = job.task.as_ref().map(|task| {
            let (done, next) = advance.unwrap_or((0, None));
            TaskAdvance {
                task: task.clone(),
                done,
                next: next.map(|payload| NewJob {
                    id: super::random_id("job"),
                    plugin: job.plugin.clone(),
                    kind: JobKind::Job,
                    name: job.name.clone(),
                    payload,
                    idempotency_key: None,
                    event_id: None,
                    run_at: now,
                    max_attempts: plugin.record.manifest.retry.max_attempts,
                    chain: job.chain,
                    task: Some(task.clone()),
                }),
            }
        });
        let save = Save {
            request_id: job.lease.job_id.clone(),
            chain,
            audit: WriteAudit {
                actor: format!("system:{}", job.kind.as_str()),
                actor_name: format!("{} {}", job.kind.as_str(), job.name),
                request_id: job.lease.job_id.clone(),
            },
            finishes: Some(job.lease.clone()),
            advances,
            moves: None,
        };
        match self.calls.commit(plugin, outcome.uow, outbox, save).await {
            Ok(()) => Ok(true),
            Err(UnitOfWorkError::Store(StoreError::LeaseLost(id))) => {
                tracing::warn!(job = %id, "lease lost before commit; the run was discarded");
                Ok(false)
            }
            Err(e) => {
                if let UnitOfWorkError::Store(StoreError::QuotaExceeded(_)) = &e {
                    self.metrics.record_quota_refusal(&job.tenant, &job.plugin);
                }
                let mut failure = retryable(format!("committing the run failed: {e}"));
                failure.lost_race = e.is_lost_race();
                // The tenant's or the host's database capacity was in use: like a call not
                // admitted, the run is put off without using an attempt.
                failure.deferred =
                    matches!(e, UnitOfWorkError::Store(StoreError::Busy { .. } | StoreError::Saturated { .. }));
                // The same code does the same again: retrying a search followed by work only
                // burns the attempts.
                failure.terminal = matches!(e, UnitOfWorkError::SearchAndWrite);
                Err(failure)
            }
        }
    }

    /// Makes sure every (tenant, plugin, schedule) has a row, then fires the due ones.
    async fn fire_schedules(&self) -> Result<(), super::store::JobStoreError> {
        let now = self.clock.now_ms();
        let known_snapshot = {
            let guard = self.known_schedules.lock().expect("schedule cache lock");
            guard.clone()
        };
        let mut known = match known_snapshot {
            Some(k) => k,
            None => self.jobs.schedule_specs().await?.into_iter().collect(),
        };
        // Each tenant's schedules are those of the version it runs.
        for active in self.registry.loaded() {
            for tenant in self.tenancy.tenants_enabling(&active.record.id) {
                let Some(plugin) = self.registry.for_tenant(&self.tenancy, &tenant, &active.record.id) else {
                    continue;
                };
                if !plugin.record.enabled {
                    continue;
                }
                for schedule in &plugin.record.manifest.schedules {
                    let spec = format!("{} {}", schedule.cron, schedule.timezone);
                    let key = (tenant.clone(), plugin.record.id.clone(), schedule.name.clone());
                    if known.get(&key) == Some(&spec) {
                        continue;
                    }
                    let next = next_time(&spec, now);
                    self.jobs.upsert_schedule(&tenant, &plugin.record.id, &schedule.name, &spec, next).await?;
                    known.insert(key, spec);
                }
            }
        }
        *self.known_schedules.lock().expect("schedule cache lock") = Some(known);

        for due in self.jobs.due_schedules(now).await? {
            let plugin = self.registry.for_tenant(&self.tenancy, &due.tenant, &due.plugin);
            let declared = plugin.as_ref().and_then(|p| {
                p.record
                    .manifest
                    .schedules
                    .iter()
                    .find(|s| s.name == due.name && format!("{} {}", s.cron, s.timezone) == due.spec)
            });
            let active = plugin.as_ref().is_some_and(|p| p.record.enabled && p.pre.has_worker())
                && declared.is_some()
                && self.tenancy.is_enabled(&due.tenant, &due.plugin);
            // Missed firings (the host was down) collapse into this one; the next is after now.
            let next = next_time(&due.spec, now);
            let job = match (&plugin, active) {
                (Some(p), true) => Some(NewJob {
                    id: super::schedule_job_id(&due.tenant, &due.plugin, &due.name, due.next_run_at),
                    plugin: due.plugin.clone(),
                    kind: JobKind::Schedule,
                    name: due.name.clone(),
                    payload: "{}".into(),
                    idempotency_key: None,
                    event_id: None,
                    run_at: due.next_run_at,
                    max_attempts: p.record.manifest.retry.max_attempts,
                    chain: 0,
                    task: None,
                }),
                _ => None,
            };
            if self.jobs.fire_schedule(&due, next, job.as_ref(), now).await? && job.is_some() {
                tracing::info!(plugin = %due.plugin, tenant = %due.tenant, schedule = %due.name, "schedule fired");
            }
        }
        Ok(())
    }

    /// Queues a run of a declared schedule now (the admin's "run now").
    pub async fn run_schedule_now(
        &self,
        tenant: &str,
        plugin: &LoadedPlugin,
        schedule: &str,
    ) -> Result<String, super::store::JobStoreError> {
        let now = self.clock.now_ms();
        let job = NewJob {
            id: super::random_id("job"),
            plugin: plugin.record.id.clone(),
            kind: JobKind::Schedule,
            name: schedule.to_owned(),
            payload: "{}".into(),
            idempotency_key: None,
            event_id: None,
            run_at: now,
            max_attempts: plugin.record.manifest.retry.max_attempts,
            chain: 0,
            task: None,
        };
        self.jobs.enqueue(tenant, &job, now).await?;
        self.wake.notify_one();
        Ok(job.id)
    }
}

/// The next firing of a stored `"<cron> <zone>"` spec after `now`; far future if it never fires.
fn next_time(spec: &str, now: i64) -> i64 {
    let (cron, zone) = spec.rsplit_once(' ').unwrap_or((spec, "UTC"));
    CronSchedule::parse(cron, zone).ok().and_then(|s| s.next_after(now)).unwrap_or(i64::MAX)
}

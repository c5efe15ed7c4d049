//! One plugin call, whoever starts it (an HTTP request, a job run, a bulk import batch,
//! another plugin through a department interface): the context it runs in, the commit that
//! saves what it did, and the repeat of a call that lost a race. Each starter keeps only what
//! is its own: HTTP dispatch turns requests and answers into HTTP, the runner leases and
//! retries jobs, imports batch rows, departments find the provider.
//!
//! Invariants, kept here once:
//! - a call runs in a fresh unit of work over its own (tenant, plugin) storage, with that
//!   tenant's settings for the plugin, labelled with its plugin, version, tenant and request;
//! - a call's writes, the events it published (one delivery per subscriber enabled in its
//!   tenant), the jobs and tasks it started and, for a job run, the job's completion and its
//!   task's progress, commit in one transaction or not at all;
//! - a call whose commit lost a race runs again from the start, at most
//!   [`MAX_CALL_ATTEMPTS`] times in all, repeats of one (tenant, plugin) one at a time.

use crate::clock::Clock;
use crate::jobs::{Background, JobKind, Lease, NewEvent, NewJob, NewTask, PendingOutbox, TaskAdvance};
use crate::metrics::Metrics;
use crate::plugins::{LoadedPlugin, PluginRegistry};
use crate::runtime::{CallContext, CallLabels, Interop, Lane, Runtime};
use crate::settings::{SettingsError, SettingsStore};
use crate::storage::{DocumentStore, Scope, StorageLimits, UnitOfWork, UnitOfWorkError, WriteAudit};
use crate::tenancy::TenantStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, OwnedMutexGuard};

/// Attempts a call gets before a race lost at commit is its answer (HTTP: 409
/// `write-conflict`; a job: a failed attempt, retried with backoff).
pub const MAX_CALL_ATTEMPTS: u32 = 5;

/// What every call needs from the server; one per server.
pub struct Calls {
    pub registry: Arc<PluginRegistry>,
    pub tenancy: Arc<TenantStore>,
    pub runtime: Arc<Runtime>,
    pub store: Arc<dyn DocumentStore>,
    pub storage_limits: StorageLimits,
    pub settings: SettingsStore,
    pub clock: Arc<Clock>,
    pub metrics: Arc<Metrics>,
    /// Notified when a commit added work for the background worker.
    pub jobs_wake: Arc<Notify>,
    /// Where calls repeated after a lost race wait their turn.
    pub retry_lanes: Lanes,
}

/// Who and what one call is for: everything but the plugin's input.
pub struct CallPlan<'a> {
    pub plugin: &'a LoadedPlugin,
    pub tenant: &'a str,
    /// What the call is logged and audited under: the request id, or the job id.
    pub request_id: &'a str,
    pub lane: Lane,
    /// The chain the jobs and events the call starts belong to (see `NewJob::chain`).
    pub chain: u32,
    /// How many department calls deep the call is (0 for a request, a job or an import).
    pub depth: u32,
    /// The task the job being run is a chunk of.
    pub task: Option<String>,
    /// For a provided department function: the caller's permissions among the plugin's.
    pub permissions: Vec<String>,
    /// How the call reaches other departments (none: it cannot).
    pub interop: Option<Arc<dyn Interop>>,
    /// Storage limits other than the server's (a bulk import's larger write budget).
    pub limits: Option<StorageLimits>,
}

/// How to save a finished call, besides its writes and what it asked for.
pub struct Save {
    pub request_id: String,
    /// The chain the work it started belongs to.
    pub chain: u32,
    pub audit: WriteAudit,
    /// A job run: the lease it completes (a lost lease saves nothing).
    pub finishes: Option<Lease>,
    /// A chunk of a task: how the task moves on.
    pub advances: Option<TaskAdvance>,
}

impl Save {
    /// A save with no job to finish.
    pub fn new(request_id: &str, chain: u32, audit: WriteAudit) -> Save {
        Save { request_id: request_id.to_owned(), chain, audit, finishes: None, advances: None }
    }
}

impl Calls {
    /// The context of one call of `plan.plugin`: a fresh unit of work over its storage in the
    /// tenant, the tenant's settings for it, and its labels.
    pub async fn context(&self, plan: CallPlan<'_>) -> Result<CallContext, SettingsError> {
        let plugin = plan.plugin;
        let config = self.settings.effective(plan.tenant, &plugin.record.manifest).await?;
        let scope = Scope { tenant: plan.tenant.to_owned(), plugin: plugin.record.id.clone() };
        Ok(CallContext {
            uow: UnitOfWork::new(
                self.store.clone(),
                scope,
                plugin.collections.clone(),
                plan.limits.unwrap_or_else(|| self.storage_limits.clone()),
            ),
            labels: Arc::new(CallLabels {
                plugin: plugin.record.id.clone(),
                version: plugin.record.version.clone(),
                tenant: plan.tenant.to_owned(),
                request_id: plan.request_id.to_owned(),
                permissions: plan.permissions,
                lane: plan.lane,
                chain: plan.chain,
            }),
            config,
            memory_cap: plugin.memory_cap,
            timeout: plugin.timeout,
            interop: plan.interop,
            depth: plan.depth,
            task: plan.task,
        })
    }

    /// Saves what a successful call of `plugin` did, all or nothing: its writes, its events
    /// with their deliveries, its jobs and tasks, and what `save` adds; then wakes the worker
    /// if work was added.
    pub async fn commit(
        &self,
        plugin: &LoadedPlugin,
        uow: UnitOfWork,
        outbox: PendingOutbox,
        save: Save,
    ) -> Result<(), UnitOfWorkError> {
        let now = self.clock.now_ms();
        let mut background = self.background(plugin, uow.scope(), outbox, &save.request_id, now, save.chain);
        background.finishes = save.finishes;
        background.advances = save.advances;
        uow.commit_with(&background, now, &save.audit).await?;
        if background.adds_work() {
            self.jobs_wake.notify_one();
        }
        Ok(())
    }

    /// Runs `attempt` (given its number, from 1) and, while it fails by losing a race at
    /// commit (`lost_race`), runs it again from the start, up to [`MAX_CALL_ATTEMPTS`]: a
    /// repeat reads the winner's writes, so it answers as if the calls had run one after the
    /// other. Not `repeatable`: the first answer stands (a plugin that called other
    /// departments: their writes are committed already).
    ///
    /// Contention makes a (tenant, plugin) run one call at a time until it passes: repeats
    /// queue in its lane (first come, first served), and so do new calls while anyone is in
    /// it. A repeat then races only calls already running when the contention began, instead
    /// of every newcomer, so it does not lose again and again (optimistic while calls do not
    /// collide, serial while they do).
    pub async fn repeating<T, E, F: Future<Output = Result<T, E>>>(
        &self,
        tenant: &str,
        plugin: &str,
        repeatable: bool,
        mut attempt: impl FnMut(u32) -> F,
        lost_race: impl Fn(&E) -> bool,
    ) -> Result<T, E> {
        let mut n = 1;
        loop {
            let _lane = if n > 1 || self.retry_lanes.is_busy(tenant, plugin) {
                Some(self.retry_lanes.enter(tenant, plugin).await)
            } else {
                None
            };
            match attempt(n).await {
                Err(e) if repeatable && n < MAX_CALL_ATTEMPTS && lost_race(&e) => {
                    tracing::debug!(%plugin, %tenant, attempt = n, "commit lost a race; running the call again");
                    self.metrics.record_repeat(plugin);
                    n += 1;
                }
                other => return other,
            }
        }
    }

    /// Turns what a call asked for into rows to commit with its writes: each event gets one
    /// delivery per subscriber enabled in the same tenant.
    fn background(
        &self,
        publisher: &LoadedPlugin,
        scope: &Scope,
        outbox: PendingOutbox,
        request_id: &str,
        now: i64,
        chain: u32,
    ) -> Background {
        let events = outbox
            .events
            .into_iter()
            .map(|e| {
                let deliveries = self
                    .registry
                    .subscribers(&e.topic)
                    .into_iter()
                    .filter(|s| self.tenancy.is_enabled(&scope.tenant, &s.record.id))
                    .map(|s| NewJob {
                        id: crate::jobs::random_id("job"),
                        plugin: s.record.id.clone(),
                        kind: JobKind::Event,
                        name: e.topic.clone(),
                        payload: String::new(),
                        idempotency_key: None,
                        event_id: Some(e.id.clone()),
                        run_at: now,
                        max_attempts: s.record.manifest.retry.max_attempts,
                        chain,
                        task: None,
                    })
                    .collect();
                NewEvent { id: e.id, topic: e.topic, payload: e.payload, request_id: request_id.to_owned(), deliveries }
            })
            .collect();
        let jobs = outbox
            .jobs
            .into_iter()
            .map(|j| NewJob {
                id: j.id,
                plugin: scope.plugin.clone(),
                kind: JobKind::Job,
                name: j.name,
                payload: j.payload,
                idempotency_key: j.idempotency_key,
                event_id: None,
                run_at: j.run_at,
                max_attempts: publisher.record.manifest.retry.max_attempts,
                chain,
                task: j.task,
            })
            .collect();
        let tasks = outbox
            .tasks
            .into_iter()
            .map(|t| NewTask {
                id: t.id,
                plugin: scope.plugin.clone(),
                name: t.name,
                title: t.title,
                total: t.total,
                first_job: t.first_job,
            })
            .collect();
        Background { events, jobs, tasks, finishes: None, advances: None }
    }
}

/// Named lanes per tenant, each held by one holder at a time: calls repeated after a lost
/// race queue in theirs, and a tenant's bulk import holds its own.
#[derive(Debug, Default)]
pub struct Lanes {
    lanes: Mutex<HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>>,
}

impl Lanes {
    /// Waits for the lane (`tenant`, `what`).
    pub async fn enter(&self, tenant: &str, what: &str) -> OwnedMutexGuard<()> {
        self.lane(tenant, what).lock_owned().await
    }

    /// Whether someone holds or waits for the lane (`tenant`, `what`).
    pub fn is_busy(&self, tenant: &str, what: &str) -> bool {
        let lanes = self.lanes.lock().expect("lanes lock");
        // The map holds one reference; each holder and waiter holds another.
        lanes.get(&(tenant.to_owned(), what.to_owned())).is_some_and(|lane| Arc::strong_count(lane) > 1)
    }

    /// The lane (`tenant`, `what`) if nobody holds it now.
    pub fn try_enter(&self, tenant: &str, what: &str) -> Option<OwnedMutexGuard<()>> {
        self.lane(tenant, what).try_lock_owned().ok()
    }

    fn lane(&self, tenant: &str, what: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        // Lanes nobody holds or waits for are dropped, so the map stays as small as the contention.
        lanes.retain(|_, lane| Arc::strong_count(lane) > 1);
        lanes.entry((tenant.to_owned(), what.to_owned())).or_default().clone()
    }
}

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
//!   [`MAX_CALL_ATTEMPTS`] times in all and never past its request's or lease's end; repeats
//!   of one (tenant, plugin) one at a time.

use crate::clock::Clock;
use crate::jobs::{Background, JobKind, Lease, NewEvent, NewJob, NewTask, PendingOutbox, TaskAdvance};
use crate::metrics::Metrics;
use crate::plugins::{LoadedPlugin, PluginRegistry};
use crate::runtime::{CallContext, CallLabels, Interop, Lane, Runtime};
use crate::settings::{SettingsError, SettingsStore};
use crate::storage::{DocumentStore, Scope, StorageLimits, UnitOfWork, UnitOfWorkError, WriteAudit};
use crate::tenancy::TenantStore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
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
    /// A migration: the tenant's move its writes commit with.
    pub moves: Option<crate::jobs::TenantMove>,
}

impl Save {
    /// A save with no job to finish.
    pub fn new(request_id: &str, chain: u32, audit: WriteAudit) -> Save {
        Save { request_id: request_id.to_owned(), chain, audit, finishes: None, advances: None, moves: None }
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
        background.moves = save.moves;
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
    /// departments: their writes are committed already). No repeat starts at or after
    /// `until` (an HTTP request's or a job lease's end, less one run): the last loss is the
    /// answer then.
    ///
    /// Repeats of one (tenant, plugin) queue in its lane, first come first served, and while
    /// any repeat is queued or running new calls of that (tenant, plugin) queue behind them
    /// too: a repeat then races only the calls already running when it lost, not every
    /// newcomer, so it does not lose again and again. When no repeat is left, calls run side
    /// by side again (optimistic while calls do not collide, serial while they do).
    pub async fn repeating<T, E, F: Future<Output = Result<T, E>>>(
        &self,
        tenant: &str,
        plugin: &str,
        repeat: Repeat,
        mut attempt: impl FnMut(u32) -> F,
        lost_race: impl Fn(&E) -> bool,
    ) -> Result<T, E> {
        let mut n = 1;
        // A newcomer waits behind repeats under way, but not past `until`: then it just runs.
        let mut lane = match self.retry_lanes.has_repeats(tenant, plugin) {
            true => self.retry_lanes.enter_within(tenant, plugin, false, repeat.until).await,
            false => None,
        };
        loop {
            let result = attempt(n).await;
            drop(lane.take());
            match result {
                Err(e)
                    if repeat.repeatable
                        && n < MAX_CALL_ATTEMPTS
                        && lost_race(&e)
                        && repeat.until.is_none_or(|until| Instant::now() < until) =>
                {
                    match self.retry_lanes.enter_within(tenant, plugin, true, repeat.until).await {
                        Some(guard) => lane = Some(guard),
                        // Its turn would come too late: the loss stands.
                        None => return Err(e),
                    }
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
                    .subscribers(&self.tenancy, &scope.tenant, &e.topic)
                    .into_iter()
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
        Background { events, jobs, tasks, finishes: None, advances: None, moves: None }
    }
}

/// Whether and until when [`Calls::repeating`] may run a call again.
#[derive(Debug, Clone, Copy)]
pub struct Repeat {
    pub repeatable: bool,
    /// No repeat starts from then on, nor waits for its turn past it.
    pub until: Option<Instant>,
}

/// Named lanes per tenant, each held by one holder at a time: calls repeated after a lost
/// race queue in theirs, and a tenant's bulk import holds its own.
#[derive(Debug, Default)]
pub struct Lanes {
    lanes: Mutex<HashMap<(String, String), Arc<LaneState>>>,
    /// Repeats queued or running in any lane: while none is, a call skips the map.
    repeats: AtomicUsize,
}

#[derive(Debug, Default)]
struct LaneState {
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Repeats queued for or holding the lane.
    repeats: AtomicUsize,
}

/// A turn in a lane, given back when dropped.
#[derive(Debug)]
pub struct LaneTurn<'a> {
    _turn: OwnedMutexGuard<()>,
    lane: Arc<LaneState>,
    /// The lanes' count of repeats, for a repeat's turn.
    repeats: Option<&'a AtomicUsize>,
}

impl Drop for LaneTurn<'_> {
    fn drop(&mut self) {
        if let Some(all) = self.repeats {
            self.lane.repeats.fetch_sub(1, Ordering::AcqRel);
            all.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Counts a repeat while it waits; its turn takes the count over, or giving up returns it.
struct Queued<'a> {
    lane: Arc<LaneState>,
    all: &'a AtomicUsize,
    waiting: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.waiting {
            self.lane.repeats.fetch_sub(1, Ordering::AcqRel);
            self.all.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Lanes {
    /// Waits for the lane (`tenant`, `what`) until `until` (for ever if `None`); `None` if
    /// the turn did not come in time. A `repeat` makes newcomers queue behind it meanwhile.
    pub async fn enter_within(
        &self,
        tenant: &str,
        what: &str,
        repeat: bool,
        until: Option<Instant>,
    ) -> Option<LaneTurn<'_>> {
        let lane = self.lane(tenant, what);
        let queued = repeat.then(|| {
            self.repeats.fetch_add(1, Ordering::AcqRel);
            lane.repeats.fetch_add(1, Ordering::AcqRel);
            Queued { lane: lane.clone(), all: &self.repeats, waiting: true }
        });
        let wait = lane.turn.clone().lock_owned();
        let turn = match until {
            None => wait.await,
            Some(until) => tokio::time::timeout_at(until.into(), wait).await.ok()?,
        };
        // The turn now carries the count the queued marker held.
        if let Some(mut queued) = queued {
            queued.waiting = false;
        }
        Some(LaneTurn { _turn: turn, lane, repeats: repeat.then_some(&self.repeats) })
    }

    /// Whether repeats are queued for or holding the lane (`tenant`, `what`).
    pub fn has_repeats(&self, tenant: &str, what: &str) -> bool {
        if self.repeats.load(Ordering::Acquire) == 0 {
            return false;
        }
        let lanes = self.lanes.lock().expect("lanes lock");
        lanes.get(&(tenant.to_owned(), what.to_owned())).is_some_and(|lane| lane.repeats.load(Ordering::Acquire) > 0)
    }

    /// The lane (`tenant`, `what`) if nobody holds it now.
    pub fn try_enter(&self, tenant: &str, what: &str) -> Option<LaneTurn<'_>> {
        let lane = self.lane(tenant, what);
        let turn = lane.turn.clone().try_lock_owned().ok()?;
        Some(LaneTurn { _turn: turn, lane, repeats: None })
    }

    fn lane(&self, tenant: &str, what: &str) -> Arc<LaneState> {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        // Lanes nobody holds or waits for are dropped, so the map stays as small as the contention.
        lanes.retain(|_, lane| Arc::strong_count(lane) > 1);
        lanes.entry((tenant.to_owned(), what.to_owned())).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn newcomers_queue_only_while_a_repeat_is_under_way() {
        let lanes = Lanes::default();
        assert!(!lanes.has_repeats("t", "p"));
        // A newcomer holding the lane does not make others queue.
        let newcomer = lanes.enter_within("t", "p", false, None).await.unwrap();
        assert!(!lanes.has_repeats("t", "p"));
        // A repeat waiting for it does, until its own turn ends.
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(lanes.enter_within("t", "p", true, Some(soon)).await.is_none(), "the turn did not come in time");
        assert!(!lanes.has_repeats("t", "p"), "a repeat that gave up waiting no longer counts");
        drop(newcomer);
        let repeat = lanes.enter_within("t", "p", true, None).await.unwrap();
        assert!(lanes.has_repeats("t", "p"));
        assert!(!lanes.has_repeats("t", "other"), "lanes are per (tenant, plugin)");
        drop(repeat);
        assert!(!lanes.has_repeats("t", "p"));
        // Lanes nobody holds are forgotten.
        let _ = lanes.lane("t", "q");
        assert_eq!(lanes.lanes.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_lane_held_by_an_import_refuses_a_second_one() {
        let lanes = Lanes::default();
        let first = lanes.try_enter("t", "import").unwrap();
        assert!(lanes.try_enter("t", "import").is_none());
        assert!(lanes.try_enter("u", "import").is_some(), "another tenant's lane is its own");
        drop(first);
        assert!(lanes.try_enter("t", "import").is_some());
    }
}

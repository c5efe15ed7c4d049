//! Admission control: who may start a plugin instance now.
//!
//! The instance pool, the memory plugins may grow into and the executor's threads are shared
//! by every tenant. Each call asks for an instance here before it is instantiated (requests,
//! background work and calls between plugins alike, so no path can bypass it) and holds a
//! [`Permit`] until its `Store` is gone.
//!
//! Architecture invariants:
//! - one tenant, and one plugin across all tenants, can never hold the whole pool: each has a
//!   cap below it, so another tenant always finds room;
//! - background work has instances of its own that requests cannot take, so a storm of
//!   requests cannot stop schedules, and the worker's own slots bound how much it uses;
//! - the memory every admitted call may use (its plugin's cap plus what the host may buffer
//!   for it) is reserved up front, so the host's memory has a ceiling that does not depend on
//!   what plugins do;
//! - when the pool is contended, a freed instance goes to the waiting call whose tenant holds
//!   the fewest (max-min fairness), not to whoever asked first;
//! - a call that keeps running past its first scheduling slice (5 ms) runs only while it
//!   holds one of its tenant's CPU lanes, so one tenant's long calls take turns among
//!   themselves instead of crowding every executor thread; likewise its storage queries,
//!   which run on blocking threads, take turns on its scan lanes.
//!
//! A call that cannot be admitted waits a short, bounded time and is then refused with a
//! [`Refusal`] that says whose share was full.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, oneshot};

/// Which share of the pool a call draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// An HTTP request (and the calls between plugins it makes).
    Request,
    /// A job, a schedule's firing or an event delivery (and the calls it makes).
    Background,
}

/// The shares, all enforced together.
#[derive(Debug, Clone)]
pub struct AdmissionLimits {
    /// Instances that may exist at once (the pool's size).
    pub instances: u32,
    /// Of those, how many only background work may use.
    pub background_instances: u32,
    /// Instances one tenant may hold at once.
    pub tenant_instances: u32,
    /// Instances one plugin may hold at once, over all tenants.
    pub plugin_instances: u32,
    /// Memory all admitted calls may reserve together (bytes).
    pub memory_bytes: u64,
    /// Memory one tenant's calls may reserve together (bytes).
    pub tenant_memory_bytes: u64,
    /// How long a request waits for room before it is refused.
    pub wait: Duration,
    /// How long background work waits (it has no client waiting on it).
    pub background_wait: Duration,
    /// Long-running calls of one tenant that may execute at once.
    pub tenant_cpu_lanes: u32,
}

impl AdmissionLimits {
    /// Shares derived from the pool size: a tenant may hold half of what requests may use, a
    /// plugin three quarters; memory likewise.
    pub fn for_pool(instances: u32, background_instances: u32, memory_bytes: u64) -> Self {
        let instances = instances.max(1);
        let background_instances = background_instances.min(instances.saturating_sub(1));
        let foreground = instances - background_instances;
        AdmissionLimits {
            instances,
            background_instances,
            tenant_instances: foreground.div_ceil(2).max(1),
            plugin_instances: (foreground * 3).div_ceil(4).max(1),
            memory_bytes,
            tenant_memory_bytes: memory_bytes / 2,
            wait: Duration::from_millis(250),
            background_wait: Duration::from_secs(5),
            tenant_cpu_lanes: 1,
        }
    }
}

/// Why a call was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("tenant `{tenant}` already runs {limit} plugin instances at once, its share of the platform")]
    TenantInstances { tenant: String, limit: u32 },
    #[error("plugin `{plugin}` already runs {limit} instances at once, its share of the platform")]
    PluginInstances { plugin: String, limit: u32 },
    #[error("tenant `{tenant}`'s running calls already reserve {limit_mb} MiB of memory, its share")]
    TenantMemory { tenant: String, limit_mb: u64 },
    #[error("a call of `{plugin}` reserves {asked_mb} MiB, more than a tenant's share of {limit_mb} MiB")]
    TooLarge { plugin: String, asked_mb: u64, limit_mb: u64 },
    #[error("every plugin instance the platform has is in use")]
    Pool,
    #[error("the memory the platform reserves for plugin calls is in use")]
    PoolMemory,
}

impl Refusal {
    /// The caller's own share is full (429), as opposed to the platform's capacity (503).
    pub fn is_own_share(&self) -> bool {
        !matches!(self, Refusal::Pool | Refusal::PoolMemory)
    }

    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::TenantInstances { .. } => "tenant_instances",
            Refusal::PluginInstances { .. } => "plugin_instances",
            Refusal::TenantMemory { .. } => "tenant_memory",
            Refusal::TooLarge { .. } => "too_large",
            Refusal::Pool => "pool",
            Refusal::PoolMemory => "pool_memory",
        }
    }
}

#[derive(Debug, Clone)]
struct Claim {
    tenant: Arc<str>,
    plugin: Arc<str>,
    lane: Lane,
    memory: u64,
}

#[derive(Default, Debug, Clone, Copy)]
struct Usage {
    instances: u32,
    memory: u64,
}

struct Waiter {
    id: u64,
    claim: Claim,
    grant: oneshot::Sender<Permit>,
}

#[derive(Default)]
struct State {
    total: u32,
    requests: u32,
    memory: u64,
    tenants: HashMap<Arc<str>, Usage>,
    plugins: HashMap<Arc<str>, u32>,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
}

/// The admission controller; one per runtime.
pub struct Admission {
    limits: AdmissionLimits,
    state: Mutex<State>,
    lanes: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
    scan_lanes: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
}

/// A call's admission: returned to the pool when dropped.
pub struct Permit {
    admission: Arc<Admission>,
    claim: Claim,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("claim", &self.claim).finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.release(&self.claim);
    }
}

/// What the admission controller holds now, for metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSnapshot {
    pub instances: u32,
    pub memory_bytes: u64,
    pub waiting: usize,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            state: Mutex::new(State::default()),
            lanes: Mutex::new(HashMap::new()),
            scan_lanes: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> &AdmissionLimits {
        &self.limits
    }

    pub fn snapshot(&self) -> AdmissionSnapshot {
        let s = self.state.lock().expect("admission lock");
        AdmissionSnapshot { instances: s.total, memory_bytes: s.memory, waiting: s.waiters.len() }
    }

    /// What `tenant` holds now: instances and reserved bytes.
    pub fn tenant_usage(&self, tenant: &str) -> (u32, u64) {
        let s = self.state.lock().expect("admission lock");
        s.tenants.get(tenant).map_or((0, 0), |u| (u.instances, u.memory))
    }

    /// Admits a call of `plugin` for `tenant` reserving `memory` bytes, waiting up to the
    /// lane's bound for room.
    pub async fn admit(
        self: &Arc<Self>,
        tenant: &str,
        plugin: &str,
        lane: Lane,
        memory: u64,
    ) -> Result<Permit, Refusal> {
        let claim = Claim { tenant: Arc::from(tenant), plugin: Arc::from(plugin), lane, memory };
        if memory > self.limits.tenant_memory_bytes {
            return Err(Refusal::TooLarge {
                plugin: plugin.to_owned(),
                asked_mb: memory >> 20,
                limit_mb: self.limits.tenant_memory_bytes >> 20,
            });
        }
        let (id, mut granted, queued_by) = {
            let mut s = self.state.lock().expect("admission lock");
            // Waiting calls go first: a newcomer may not overtake them.
            let blocker = self.blocker(&s, &claim);
            if s.waiters.is_empty() && blocker.is_none() {
                take(&mut s, &claim);
                return Ok(Permit { admission: self.clone(), claim });
            }
            let (tx, rx) = oneshot::channel();
            let id = s.next_waiter;
            s.next_waiter += 1;
            s.waiters.push_back(Waiter { id, claim: claim.clone(), grant: tx });
            (id, rx, blocker)
        };
        // This waiter may fit already, only queued behind others that do not.
        self.grant_waiting();
        let wait = match lane {
            Lane::Request => self.limits.wait,
            Lane::Background => self.limits.background_wait,
        };
        let cancel = CancelWaiter { admission: self, id };
        if let Ok(Ok(permit)) = tokio::time::timeout(wait, &mut granted).await {
            return Ok(permit);
        }
        drop(cancel);
        // Out of the queue now; a grant may have landed just before.
        match granted.try_recv() {
            Ok(permit) => Ok(permit),
            Err(_) => {
                // What blocks it now; else what blocked it when it queued (a slot of its own
                // share may have freed just as the wait ended); else it only queued behind
                // other waiters: the platform is busy.
                let s = self.state.lock().expect("admission lock");
                Err(self.blocker(&s, &claim).or(queued_by).unwrap_or(Refusal::Pool))
            }
        }
    }

    /// The CPU lanes of `tenant`: a call past its first slice runs while holding one.
    pub fn cpu_lane(&self, tenant: &str) -> Arc<Semaphore> {
        self.lane_of(&self.lanes, tenant)
    }

    /// The scan lanes of `tenant`: a query runs on a blocking thread while holding one, so
    /// one tenant's queries cannot fill the machine's cores either.
    pub fn scan_lane(&self, tenant: &str) -> Arc<Semaphore> {
        self.lane_of(&self.scan_lanes, tenant)
    }

    fn lane_of(&self, lanes: &Mutex<HashMap<Arc<str>, Arc<Semaphore>>>, tenant: &str) -> Arc<Semaphore> {
        let mut lanes = lanes.lock().expect("lanes lock");
        if let Some(lane) = lanes.get(tenant) {
            return lane.clone();
        }
        let lane = Arc::new(Semaphore::new(self.limits.tenant_cpu_lanes.max(1) as usize));
        lanes.insert(Arc::from(tenant), lane.clone());
        lane
    }

    /// Why `claim` cannot be admitted now, if it cannot.
    fn blocker(&self, s: &State, claim: &Claim) -> Option<Refusal> {
        let l = &self.limits;
        let tenant = s.tenants.get(&claim.tenant).copied().unwrap_or_default();
        if tenant.instances >= l.tenant_instances {
            return Some(Refusal::TenantInstances { tenant: claim.tenant.to_string(), limit: l.tenant_instances });
        }
        if s.plugins.get(&claim.plugin).copied().unwrap_or(0) >= l.plugin_instances {
            return Some(Refusal::PluginInstances { plugin: claim.plugin.to_string(), limit: l.plugin_instances });
        }
        if tenant.memory + claim.memory > l.tenant_memory_bytes {
            return Some(Refusal::TenantMemory {
                tenant: claim.tenant.to_string(),
                limit_mb: l.tenant_memory_bytes >> 20,
            });
        }
        let lane_full = match claim.lane {
            Lane::Request => s.requests >= l.instances - l.background_instances,
            Lane::Background => false,
        };
        if lane_full || s.total >= l.instances {
            return Some(Refusal::Pool);
        }
        if s.memory + claim.memory > l.memory_bytes {
            return Some(Refusal::PoolMemory);
        }
        None
    }

    fn release(self: &Arc<Self>, claim: &Claim) {
        {
            let mut s = self.state.lock().expect("admission lock");
            s.total -= 1;
            s.memory -= claim.memory;
            if claim.lane == Lane::Request {
                s.requests -= 1;
            }
            if let Some(t) = s.tenants.get_mut(&claim.tenant) {
                t.instances -= 1;
                t.memory -= claim.memory;
                if t.instances == 0 {
                    s.tenants.remove(&claim.tenant);
                }
            }
            if let Some(p) = s.plugins.get_mut(&claim.plugin) {
                *p -= 1;
                if *p == 0 {
                    s.plugins.remove(&claim.plugin);
                }
            }
        }
        self.grant_waiting();
    }

    /// Hands room to waiting calls: each time to the one whose tenant holds the fewest
    /// instances (the earliest among equals), until nobody waiting fits.
    fn grant_waiting(self: &Arc<Self>) {
        let mut grants = Vec::new();
        {
            let mut s = self.state.lock().expect("admission lock");
            loop {
                // Drop waiters that gave up (their request went away) as we pass.
                s.waiters.retain(|w| !w.grant.is_closed());
                let best = s
                    .waiters
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| self.blocker(&s, &w.claim).is_none())
                    .min_by_key(|(at, w)| (s.tenants.get(&w.claim.tenant).map_or(0, |u| u.instances), *at))
                    .map(|(at, _)| at);
                let Some(waiter) = best.and_then(|at| s.waiters.remove(at)) else { break };
                take(&mut s, &waiter.claim);
                grants.push(waiter);
            }
        }
        // Outside the lock: a send that fails hands back a permit whose drop releases again.
        for waiter in grants {
            let permit = Permit { admission: self.clone(), claim: waiter.claim };
            let _ = waiter.grant.send(permit);
        }
    }
}

fn take(s: &mut State, claim: &Claim) {
    s.total += 1;
    s.memory += claim.memory;
    if claim.lane == Lane::Request {
        s.requests += 1;
    }
    let t = s.tenants.entry(claim.tenant.clone()).or_default();
    t.instances += 1;
    t.memory += claim.memory;
    *s.plugins.entry(claim.plugin.clone()).or_default() += 1;
}

/// Removes a waiter whose future was dropped (its request went away) from the queue.
struct CancelWaiter<'a> {
    admission: &'a Arc<Admission>,
    id: u64,
}

impl Drop for CancelWaiter<'_> {
    fn drop(&mut self) {
        let mut s = self.admission.state.lock().expect("admission lock");
        s.waiters.retain(|w| w.id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            instances: 8,
            background_instances: 2,
            tenant_instances: 3,
            plugin_instances: 4,
            memory_bytes: 512 * MB,
            tenant_memory_bytes: 256 * MB,
            wait: Duration::from_millis(50),
            background_wait: Duration::from_millis(50),
            tenant_cpu_lanes: 1,
        }
    }

    async fn admit(a: &Arc<Admission>, tenant: &str, plugin: &str) -> Result<Permit, Refusal> {
        a.admit(tenant, plugin, Lane::Request, 16 * MB).await
    }

    #[tokio::test]
    async fn a_tenant_is_held_to_its_share_and_another_tenant_still_gets_in() {
        let a = Admission::new(limits());
        let held: Vec<_> = [admit(&a, "a", "p").await, admit(&a, "a", "q").await, admit(&a, "a", "r").await]
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let refused = admit(&a, "a", "p").await.unwrap_err();
        assert_eq!(refused, Refusal::TenantInstances { tenant: "a".into(), limit: 3 });
        assert!(refused.is_own_share());
        let b = admit(&a, "b", "p").await.expect("another tenant is admitted");
        drop(held);
        drop(b);
        assert_eq!(a.snapshot(), AdmissionSnapshot { instances: 0, memory_bytes: 0, waiting: 0 });
    }

    #[tokio::test]
    async fn a_plugin_is_held_to_its_share_over_all_tenants() {
        let a = Admission::new(limits());
        let _held: Vec<_> = futures_join(&a, &[("a", "p"), ("b", "p"), ("c", "p"), ("d", "p")]).await;
        assert_eq!(admit(&a, "e", "p").await.unwrap_err(), Refusal::PluginInstances { plugin: "p".into(), limit: 4 });
        admit(&a, "e", "other").await.expect("another plugin is admitted");
    }

    #[tokio::test]
    async fn requests_cannot_take_the_background_reserve() {
        let a = Admission::new(limits());
        let mut held =
            futures_join(&a, &[("a", "p"), ("a", "q"), ("b", "p"), ("b", "q"), ("c", "r"), ("c", "s")]).await;
        assert_eq!(admit(&a, "d", "t").await.unwrap_err(), Refusal::Pool);
        assert!(!Refusal::Pool.is_own_share());
        let job = a.admit("d", "t", Lane::Background, 16 * MB).await.expect("background has its own instances");
        held.push(job);
        assert_eq!(a.snapshot().instances, 7);
    }

    #[tokio::test]
    async fn memory_is_reserved_per_tenant_and_in_total() {
        let a = Admission::new(limits());
        let big = a.admit("a", "p", Lane::Request, 200 * MB).await.unwrap();
        assert!(matches!(a.admit("a", "p", Lane::Request, 100 * MB).await.unwrap_err(), Refusal::TenantMemory { .. }));
        let _b = a.admit("b", "p", Lane::Request, 250 * MB).await.unwrap();
        assert_eq!(a.admit("c", "p", Lane::Request, 100 * MB).await.unwrap_err(), Refusal::PoolMemory);
        assert!(matches!(a.admit("c", "p", Lane::Request, 300 * MB).await.unwrap_err(), Refusal::TooLarge { .. }));
        drop(big);
        a.admit("c", "p", Lane::Request, 100 * MB).await.expect("room after a release");
    }

    #[tokio::test]
    async fn a_waiting_call_gets_the_first_freed_instance() {
        let a = Admission::new(AdmissionLimits { wait: Duration::from_secs(5), ..limits() });
        let held = futures_join(&a, &[("a", "p"), ("a", "q"), ("a", "r")]).await;
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move { admit(&a, "a", "p").await.map(|_| ()) })
        };
        while a.snapshot().waiting == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        waiting.await.unwrap().expect("admitted once an instance was freed");
        assert_eq!(a.snapshot().instances, 0);
    }

    #[tokio::test]
    async fn freed_instances_go_to_the_tenant_holding_fewest() {
        // A pool of 4 for requests; tenant a holds 3, b holds 1. Both wait for more; when one
        // of a's calls ends, b (holding fewer) gets the instance although a asked first.
        let l = AdmissionLimits {
            instances: 4,
            background_instances: 0,
            tenant_instances: 3,
            plugin_instances: 4,
            wait: Duration::from_millis(300),
            ..limits()
        };
        let a = Admission::new(l);
        let mut a_held = futures_join(&a, &[("a", "p"), ("a", "q"), ("a", "r")]).await;
        let _b_held = admit(&a, "b", "s").await.unwrap();
        let a_waits = {
            let a = a.clone();
            tokio::spawn(async move { admit(&a, "a", "x").await.map(|_| "a") })
        };
        while a.snapshot().waiting < 1 {
            tokio::task::yield_now().await;
        }
        let b_waits = {
            let a = a.clone();
            tokio::spawn(async move { admit(&a, "b", "y").await.map(|p| ("b", p)) })
        };
        while a.snapshot().waiting < 2 {
            tokio::task::yield_now().await;
        }
        a_held.pop();
        let (who, _permit) = b_waits.await.unwrap().expect("b admitted");
        assert_eq!(who, "b");
        assert_eq!(a.tenant_usage("b").0, 2);
        // a's waiter still does not fit (the pool is full) and is refused when its wait ends.
        assert_eq!(a_waits.await.unwrap().unwrap_err(), Refusal::Pool);
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_frees_its_place() {
        let a = Admission::new(AdmissionLimits { wait: Duration::from_secs(5), ..limits() });
        let held = futures_join(&a, &[("a", "p"), ("a", "q"), ("a", "r")]).await;
        let gone = {
            let a = a.clone();
            tokio::spawn(async move {
                let _ = admit(&a, "a", "p").await;
            })
        };
        while a.snapshot().waiting == 0 {
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        assert_eq!(a.snapshot().waiting, 0);
        drop(held);
        assert_eq!(a.snapshot().instances, 0, "no instance stays taken by a caller that left");
    }

    async fn futures_join(a: &Arc<Admission>, who: &[(&str, &str)]) -> Vec<Permit> {
        let mut out = Vec::new();
        for (tenant, plugin) in who {
            out.push(admit(a, tenant, plugin).await.expect("admitted"));
        }
        out
    }
}

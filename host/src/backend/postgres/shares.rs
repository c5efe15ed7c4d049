//! Tenants' shares of this host's database connections.
//!
//! The pool is shared by every tenant, and a connection is held for as long as its
//! statement or transaction runs, including while a commit waits for its scope's advisory
//! lock behind the scope's other commits. Without shares, one tenant's flood (calls that
//! all write one plugin's data, or run point reads at full speed) could hold every
//! connection, and every other tenant would wait for one until the acquire timeout.
//!
//! Invariants, per host:
//! - one tenant holds at most [`ConnectionShares::per_tenant`] connections for its storage
//!   work (half of what tenants may use; a few connections stay for the platform's own
//!   work: the queue, the catalog, the change feed), so another tenant always finds one;
//! - when connections are contended, a freed one goes to the waiting tenant that holds the
//!   fewest (max-min fairness), not to whoever asked first;
//! - commits (and sequence takers) of one (tenant, plugin) scope take turns here before they
//!   ask for a connection: they would take turns at the scope's advisory lock anyway, and a
//!   commit waiting here holds nothing. [`TURN_SLOTS`] commits of a scope pass at once: one
//!   in the advisory lock and one with its connection and transaction ready behind it, so
//!   the scope's commits follow each other without a round trip between them. Across hosts,
//!   a scope holds at most one waiting connection per host.
//!
//! A tenant whose own share stays full for the acquire timeout is refused with
//! [`StoreError::Busy`] (its own load, answered 429); one that waited while other tenants,
//! each within its share, held every connection with [`StoreError::Saturated`] (503 with
//! `Retry-After`). Neither is the "database unavailable" a pool that cannot connect gets,
//! which marks the rest of the call as failing.

use crate::storage::{Scope, StoreError};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Connections kept for the platform's own work when the pool has room for them.
const PLATFORM_RESERVE: u32 = 2;
/// Commits of one scope that may wait for its turn in one host; more are refused at once
/// (each waiting one keeps its unit of work in memory).
pub const MAX_WAITING_TURNS: usize = 64;
/// Commits of one scope that pass the turn at once: the one holding the scope's advisory
/// lock and the next, which has its connection and waits at the lock. One slot alone
/// measured a fifth fewer commits per second on one scope (benchmark l, jobs of one scope):
/// each commit then paid for acquire and `BEGIN` after the previous one's `COMMIT`.
pub const TURN_SLOTS: usize = 2;

#[derive(Default)]
struct State {
    /// Connections handed to tenants, in all.
    in_use: u32,
    held: HashMap<Arc<str>, u32>,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
}

/// A scope and the advisory lock class it takes turns at.
type TurnKey = (Arc<str>, Arc<str>, i64);

struct Waiter {
    id: u64,
    tenant: Arc<str>,
    grant: oneshot::Sender<Share>,
}

/// The shares of one pool.
pub struct ConnectionShares {
    total: u32,
    per_tenant: u32,
    wait: Duration,
    state: Mutex<State>,
    turns: Mutex<HashMap<TurnKey, Arc<tokio::sync::Semaphore>>>,
}

/// One connection's worth of a tenant's share, given back when dropped.
pub struct Share {
    shares: Arc<ConnectionShares>,
    tenant: Arc<str>,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.shares.release(&self.tenant);
    }
}

/// A scope's turn to commit, given back when dropped.
pub struct Turn {
    shares: Arc<ConnectionShares>,
    key: TurnKey,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.shares.forget_turn(&self.key);
    }
}

impl ConnectionShares {
    /// Shares of a pool of `pool_size` connections; a tenant waits up to `wait` for one.
    pub fn new(pool_size: u32, wait: Duration) -> Arc<Self> {
        let pool_size = pool_size.max(1);
        let reserve = PLATFORM_RESERVE.min(pool_size / 4);
        let total = pool_size - reserve;
        Arc::new(ConnectionShares {
            total,
            per_tenant: total.div_ceil(2).max(1),
            wait,
            state: Mutex::new(State::default()),
            turns: Mutex::new(HashMap::new()),
        })
    }

    /// Connections one tenant may hold at once.
    pub fn per_tenant(&self) -> u32 {
        self.per_tenant
    }

    /// What `tenant` holds now.
    pub fn held(&self, tenant: &str) -> u32 {
        self.state.lock().expect("shares lock").held.get(tenant).copied().unwrap_or(0)
    }

    /// Waits for a connection's worth of `tenant`'s share.
    pub async fn enter(self: &Arc<Self>, tenant: &str) -> Result<Share, StoreError> {
        let tenant: Arc<str> = Arc::from(tenant);
        let (id, mut granted, own) = {
            let mut s = self.state.lock().expect("shares lock");
            // Waiting tenants go first: a newcomer may not overtake them.
            if s.waiters.is_empty() && self.fits(&s, &tenant) {
                take(&mut s, &tenant);
                return Ok(Share { shares: self.clone(), tenant });
            }
            // Whose capacity it waits for, decided now: its own share, or the host's.
            let own = s.held.get(&tenant).copied().unwrap_or(0) >= self.per_tenant;
            let (tx, rx) = oneshot::channel();
            let id = s.next_waiter;
            s.next_waiter += 1;
            s.waiters.push_back(Waiter { id, tenant: tenant.clone(), grant: tx });
            (id, rx, own)
        };
        // It may fit already, only queued behind waiters that do not.
        self.grant_waiting();
        let cancel = CancelWaiter { shares: self, id };
        if let Ok(Ok(share)) = tokio::time::timeout(self.wait, &mut granted).await {
            return Ok(share);
        }
        std::mem::forget(cancel);
        // Still queued: leave. Already taken out of the queue: it was granted, and the share
        // is on its way (sent just after the queue's lock was let go).
        let queued = {
            let mut s = self.state.lock().expect("shares lock");
            let before = s.waiters.len();
            s.waiters.retain(|w| w.id != id);
            s.waiters.len() != before
        };
        if !queued && let Ok(share) = granted.await {
            return Ok(share);
        }
        let waited_ms = self.wait.as_millis() as u64;
        if own {
            Err(StoreError::Busy { limit: self.per_tenant })
        } else {
            // Other tenants hold every connection tenants may use, each within its share: the
            // host is saturated, the database is not away.
            Err(StoreError::Saturated { waited_ms })
        }
    }

    /// Waits for `scope`'s turn at the advisory lock of `class`, as long as a connection
    /// is waited for; refused at once when [`MAX_WAITING_TURNS`] already wait for it.
    pub async fn turn(self: &Arc<Self>, scope: &Scope, class: i64) -> Result<Turn, StoreError> {
        let key: TurnKey = (Arc::from(scope.tenant.as_str()), Arc::from(scope.plugin.as_str()), class);
        let slots = self
            .turns
            .lock()
            .expect("turns lock")
            .entry(key.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(TURN_SLOTS)))
            .clone();
        // Every holder of the Arc but the map's is one commit holding or awaiting a turn
        // (this one included): past the slots' holders and the waiting allowed, refuse.
        let busy = || StoreError::Busy { limit: self.per_tenant };
        if Arc::strong_count(&slots) > 1 + TURN_SLOTS + MAX_WAITING_TURNS {
            drop(slots);
            self.forget_turn(&key);
            return Err(busy());
        }
        // The wait holds the only reference this commit has (so each waiting commit counts once).
        match tokio::time::timeout(self.wait, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Turn { shares: self.clone(), key, permit: Some(permit) }),
            // The semaphore is never closed; treat it as a wait that ran out.
            Ok(Err(_)) => {
                self.forget_turn(&key);
                Err(busy())
            }
            Err(_) => {
                self.forget_turn(&key);
                Err(busy())
            }
        }
    }

    /// Forgets `key`'s lock once nobody holds or awaits it (the map's is the only reference
    /// left): the map stays as small as the scopes committing now.
    fn forget_turn(&self, key: &TurnKey) {
        let mut turns = self.turns.lock().expect("turns lock");
        if turns.get(key).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            turns.remove(key);
        }
    }

    fn fits(&self, s: &State, tenant: &str) -> bool {
        s.in_use < self.total && s.held.get(tenant).copied().unwrap_or(0) < self.per_tenant
    }

    fn release(self: &Arc<Self>, tenant: &Arc<str>) {
        {
            let mut s = self.state.lock().expect("shares lock");
            s.in_use -= 1;
            if let Some(n) = s.held.get_mut(tenant) {
                *n -= 1;
                if *n == 0 {
                    s.held.remove(tenant);
                }
            }
        }
        self.grant_waiting();
    }

    /// Hands freed room to waiters: each time to the one whose tenant holds the fewest (the
    /// earliest among equals), until nobody waiting fits.
    fn grant_waiting(self: &Arc<Self>) {
        let mut grants = Vec::new();
        let mut s = self.state.lock().expect("shares lock");
        // Drop waiters whose callers went away.
        s.waiters.retain(|w| !w.grant.is_closed());
        loop {
            let best = s
                .waiters
                .iter()
                .enumerate()
                .filter(|(_, w)| self.fits(&s, &w.tenant))
                .min_by_key(|(at, w)| (s.held.get(&w.tenant).copied().unwrap_or(0), *at))
                .map(|(at, _)| at);
            let Some(waiter) = best.and_then(|at| s.waiters.remove(at)) else { break };
            take(&mut s, &waiter.tenant);
            grants.push(waiter);
        }
        drop(s);
        // Outside the lock: a send that fails (its caller went away) hands back a share
        // whose drop frees the room again.
        for waiter in grants {
            let share = Share { shares: self.clone(), tenant: waiter.tenant };
            let _ = waiter.grant.send(share);
        }
    }
}

fn take(s: &mut State, tenant: &Arc<str>) {
    s.in_use += 1;
    *s.held.entry(tenant.clone()).or_default() += 1;
}

/// Takes a waiter whose future was dropped (its call went away, or its wait ended) out of
/// the queue; a share it was sent meanwhile is freed when its receiver drops.
struct CancelWaiter<'a> {
    shares: &'a Arc<ConnectionShares>,
    id: u64,
}

impl Drop for CancelWaiter<'_> {
    fn drop(&mut self) {
        let mut s = self.shares.state.lock().expect("shares lock");
        s.waiters.retain(|w| w.id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn a_tenant_is_held_to_its_share_and_another_tenant_still_gets_in() {
        // 16 connections: 2 kept for the platform, 7 for each tenant at most.
        let shares = ConnectionShares::new(16, WAIT);
        assert_eq!(shares.per_tenant(), 7);
        let mut held = Vec::new();
        for _ in 0..7 {
            held.push(shares.enter("noisy").await.unwrap());
        }
        assert_eq!(shares.held("noisy"), 7);
        assert_eq!(shares.enter("noisy").await.err(), Some(StoreError::Busy { limit: 7 }), "its own share is full");
        let calm = shares.enter("calm").await.expect("another tenant still gets a connection");
        drop(calm);
        drop(held.pop());
        assert!(shares.enter("noisy").await.is_ok(), "a freed connection of its share is its own again");
    }

    #[tokio::test]
    async fn tenants_within_their_shares_fill_the_pool_and_a_newcomer_waits_for_the_next_free_one() {
        let shares = ConnectionShares::new(8, WAIT); // 6 for tenants, 3 each
        let a: Vec<_> = futures_util::future::join_all((0..3).map(|_| shares.enter("a"))).await;
        let b: Vec<_> = futures_util::future::join_all((0..3).map(|_| shares.enter("b"))).await;
        assert!(a.iter().chain(&b).all(Result::is_ok));
        // Nobody is over their share: this is the platform's capacity, not c's fault.
        assert!(matches!(shares.enter("c").await, Err(StoreError::Saturated { .. })));
        let waiting = tokio::spawn({
            let shares = shares.clone();
            async move { shares.enter("c").await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(a);
        assert!(waiting.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_freed_connection_goes_to_the_waiting_tenant_that_holds_the_fewest() {
        let shares = ConnectionShares::new(8, Duration::from_secs(5)); // 6 for tenants, 3 each
        let mut a: Vec<_> = Vec::new();
        for _ in 0..3 {
            a.push(shares.enter("a").await.unwrap());
        }
        let mut b: Vec<_> = Vec::new();
        for _ in 0..3 {
            b.push(shares.enter("b").await.unwrap());
        }
        // b asks first for another (over its share: it waits), then c (none held: waits for
        // room). When one of a's is freed, c gets it though it asked later.
        let order = Arc::new(Mutex::new(Vec::new()));
        let ask = |tenant: &'static str| {
            let (shares, order) = (shares.clone(), order.clone());
            tokio::spawn(async move {
                let share = shares.enter(tenant).await.unwrap();
                order.lock().unwrap().push(tenant);
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(share);
            })
        };
        let b_more = ask("b");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let c = ask("c");
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(a.pop());
        c.await.unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["c"], "b is at its share; c holds none");
        drop(b.pop());
        b_more.await.unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["c", "b"]);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_while_waiting_leaves_nothing_taken() {
        let shares = ConnectionShares::new(4, Duration::from_secs(5)); // 3 for tenants, 2 each
        let first = shares.enter("a").await.unwrap();
        let second = shares.enter("a").await.unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(20), shares.enter("a")).await;
        assert!(gave_up.is_err(), "it was waiting");
        drop(first);
        drop(second);
        assert_eq!(shares.held("a"), 0);
        let again: Vec<_> = futures_util::future::join_all((0..2).map(|_| shares.enter("a"))).await;
        assert!(again.iter().all(Result::is_ok), "all of its share is free again");
    }

    #[tokio::test]
    async fn commits_of_one_scope_take_turns_and_other_scopes_do_not_wait() {
        let shares = ConnectionShares::new(16, WAIT);
        let scope = |tenant: &str, plugin: &str| Scope { tenant: tenant.into(), plugin: plugin.into() };
        let turn = shares.turn(&scope("t", "crm"), 12).await.unwrap();
        let ready = tokio::time::timeout(Duration::from_millis(20), shares.turn(&scope("t", "crm"), 12)).await;
        let ready = ready.expect("the next commit gets ready behind the lock").unwrap();
        let same = tokio::time::timeout(Duration::from_millis(20), shares.turn(&scope("t", "crm"), 12)).await;
        assert!(same.is_err(), "the scope's third commit waits for a turn");
        let other = tokio::time::timeout(Duration::from_millis(20), shares.turn(&scope("t", "hr"), 12)).await;
        assert!(matches!(other, Ok(Ok(_))), "another plugin's commits do not");
        let class = tokio::time::timeout(Duration::from_millis(20), shares.turn(&scope("t", "crm"), 13)).await;
        assert!(matches!(class, Ok(Ok(_))), "nor the scope's sequence takers");
        drop((other, class));
        // Waited for as long as a connection would be, then refused as the tenant's load.
        let started = std::time::Instant::now();
        assert_eq!(shares.turn(&scope("t", "crm"), 12).await.err(), Some(StoreError::Busy { limit: 7 }));
        assert!(started.elapsed() >= WAIT);
        drop((turn, ready));
        assert!(shares.turns.lock().unwrap().is_empty(), "turns nobody waits for are forgotten");
        let _next = shares.turn(&scope("t", "crm"), 12).await.unwrap();
    }

    #[tokio::test]
    async fn past_so_many_commits_waiting_for_a_scope_the_next_is_refused_at_once() {
        let shares = ConnectionShares::new(16, Duration::from_secs(5));
        let scope = Scope { tenant: "t".into(), plugin: "crm".into() };
        let holders = (shares.turn(&scope, 12).await.unwrap(), shares.turn(&scope, 12).await.unwrap());
        let waiting: Vec<_> = (0..MAX_WAITING_TURNS)
            .map(|_| {
                let (shares, scope) = (shares.clone(), scope.clone());
                tokio::spawn(async move { shares.turn(&scope, 12).await.map(drop) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        assert_eq!(shares.turn(&scope, 12).await.err(), Some(StoreError::Busy { limit: 7 }));
        assert!(started.elapsed() < Duration::from_secs(1), "refused without waiting");
        drop(holders);
        for w in waiting {
            assert!(w.await.unwrap().is_ok(), "those waiting get their turns");
        }
        assert!(shares.turns.lock().unwrap().is_empty());
    }
}

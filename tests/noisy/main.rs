//! The noisy-neighbour suite: while tenant `noisy` attacks shared capacity with a plugin used
//! within its manifest (slow calls, self-enqueueing jobs, large writes and reads, heavy
//! queries, huge headers, contended writes), tenant `calm`'s helpdesk keeps answering, fast, and its scheduled
//! work starts on time; the host's memory stays under its ceiling.
//!
//! The bounds, stated once:
//! - every `calm` request answers 200, and its p99 during an attack is at most
//!   `max(10 × its idle p99, floor)`, in one of at most three runs (a shared machine's odd
//!   pause lands in one run's p99; starvation shows in all). The floor is 50 ms (idle p99
//!   here is a few milliseconds, and one 5 ms scheduling slice of the attacker's on each
//!   core is the designed worst case), except under the slow-call attack: there the
//!   attacker's admitted calls spin on the same two cores as `calm`'s requests, and calm's
//!   p99 measured 42-82 ms on two shared cores (SQLite and PostgreSQL alike, ten runs), so
//!   its floor is 100 ms. Starvation, which is what the suite is for, shows as seconds
//!   (calm's requests waiting for the attacker's deadlines), far past either floor;
//! - `calm`'s every-minute SLA check starts within 5 s of its due time during the job flood;
//! - the attacker is refused with its own typed errors (429 `concurrency-limit`, 422, 502,
//!   504), never a 500 from the platform;
//! - the process's peak memory during an attack grows by less than the 1 GiB the
//!   configuration reserves for plugin calls (`limits.instance-memory-mb`).
//!
//! The tests run one at a time (a lock), on a two-thread runtime like the server's, so they
//! measure one attack each.

use keel_tests::neighbours::{Attack, Neighbours, peak_rss, quantile, reset_peak_rss, rss};
use std::time::Duration;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PROBES: usize = 200;
const FLOOR: Duration = Duration::from_millis(50);
/// See the module's bounds: the attack whose calls compete with `calm` for the cores.
const SLOW_CALLS_FLOOR: Duration = Duration::from_millis(100);
const MEMORY_CEILING: u64 = 1 << 30;

/// Runs `attack` and checks every bound but the schedule's; returns the attacker's outcomes.
///
/// The latency bound is measured up to three times, on a fresh host each time: a machine
/// shared with other work has the odd pause that lands in one run's p99, while an attack
/// that starves `calm` does so every time (every run must then exceed the bound to fail).
async fn survives(attack: Attack) -> (Neighbours, keel_tests::neighbours::Outcomes) {
    const RUNS: u32 = 3;
    for attempt in 1..=RUNS {
        let n = Neighbours::start().await;
        n.prepare(attack).await;
        n.probe(50).await; // warm-up
        let mut idle = n.probe(PROBES).await;
        let idle_p99 = quantile(&mut idle, 0.99);
        let before = rss();
        reset_peak_rss();
        let (mut during, outcomes) = n.under(attack, n.probe(PROBES)).await;
        let peak = peak_rss();
        let during_p99 = quantile(&mut during, 0.99);
        let floor = if attack == Attack::SlowCalls { SLOW_CALLS_FLOOR } else { FLOOR };
        let bound = floor.max(idle_p99 * 10);
        eprintln!(
            "{} (run {attempt}): calm p99 idle {idle_p99:?}, during {during_p99:?} (bound {bound:?}); peak memory +{} MiB; attacker got {:?} {:?}",
            attack.name(),
            peak.saturating_sub(before) >> 20,
            outcomes.statuses,
            outcomes.codes
        );
        // Memory and typed refusals are not timing: they must hold on every run.
        assert!(
            peak.saturating_sub(before) < MEMORY_CEILING,
            "{}: memory grew by {} MiB",
            attack.name(),
            peak.saturating_sub(before) >> 20
        );
        assert!(
            !outcomes.statuses.contains_key(&500),
            "{}: the platform failed the attacker with 500s: {outcomes:?}",
            attack.name()
        );
        if during_p99 <= bound {
            return (n, outcomes);
        }
        assert!(attempt < RUNS, "{}: calm p99 {during_p99:?} exceeds {bound:?} in {RUNS} runs", attack.name());
        n.stop().await;
    }
    unreachable!("the second run returns or fails")
}

/// The p99 of 50 tickets `calm` creates one after another during `attack`; each must be 201.
async fn calm_writes_during(n: &Neighbours, attack: Attack) -> Duration {
    let (mut took, _) = n
        .under(attack, async {
            let mut took = Vec::new();
            for i in 0..50 {
                let started = std::time::Instant::now();
                n.server
                    .as_token(
                        Some(&n.calm),
                        reqwest::Method::POST,
                        "/v1/plugins/helpdesk/tickets",
                        Some(serde_json::json!({ "title": format!("during {i}") })),
                    )
                    .await
                    .expect(201);
                took.push(started.elapsed());
            }
            took
        })
        .await;
    quantile(&mut took, 0.99)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_calls_get_their_share_of_instances_and_429_past_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (n, outcomes) = survives(Attack::SlowCalls).await;
    assert!(outcomes.codes.get("concurrency-limit").is_some_and(|n| *n > 0), "{outcomes:?}");
    assert!(outcomes.codes.get("plugin-timeout").is_some_and(|n| *n > 0), "{outcomes:?}");
    // Refusals are counted by reason: here the tenant's share (14 of the 28 instances
    // requests may use), never the platform's.
    let metrics = n.server.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(r#"keel_admission_refused_total{plugin="noisy",reason="tenant_instances"}"#)),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"reason="pool""#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_flood_does_not_delay_another_tenants_schedule() {
    let _one = ONE_AT_A_TIME.lock().await;
    let n = Neighbours::start().await;
    let s = &n.server;
    n.probe(50).await;
    let mut idle = n.probe(PROBES).await;
    let bound = FLOOR.max(quantile(&mut idle, 0.99) * 10);
    let late = n.schedule_lateness_during_flood().await;
    let queued = s.get("/v1/tenants/noisy/jobs?status=queued&limit=1").await.expect(200).body;
    eprintln!("job flood: calm's sla-check started {late} ms after its due time");
    assert!(late <= 5_000, "calm's schedule started {late} ms late");
    assert!(!queued["items"].as_array().unwrap().is_empty(), "the flood was still going while calm's check ran");
    // And calm's requests are served meanwhile.
    let (mut during, _) = n.under(Attack::JobFlood, n.probe(PROBES)).await;
    let p99 = quantile(&mut during, 0.99);
    eprintln!("job flood: calm p99 {p99:?} (bound {bound:?})");
    assert!(p99 <= bound, "calm p99 during the flood {p99:?} exceeds {bound:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_writes_and_reads_are_bounded_per_call_and_memory_stays_under_the_ceiling() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_n, outcomes) = survives(Attack::LargeWrites).await;
    // Writes of a thousand 1 MB documents are refused at the commit budget (the plugin gets
    // `invalid` and answers 422); reads answer a short page.
    assert!(outcomes.statuses.get(&422).is_some_and(|n| *n > 0), "{outcomes:?}");
    assert!(outcomes.statuses.get(&200).is_some_and(|n| *n > 0), "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_queries_do_not_take_the_database_from_another_tenant() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (n, _) = survives(Attack::HeavyQueries).await;
    // Writes need the database's writer and connections: calm can still create tickets.
    let p99 = calm_writes_during(&n, Attack::HeavyQueries).await;
    eprintln!("heavy queries: calm ticket creation p99 {p99:?}");
    assert!(p99 <= Duration::from_millis(250), "calm's writes waited {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_headers_are_refused_and_cost_only_the_attacker() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_n, outcomes) = survives(Attack::HugeHeaders).await;
    assert!(outcomes.codes.get("plugin-bad-response").is_some_and(|n| *n > 0), "{outcomes:?}");
    assert_eq!(outcomes.statuses.keys().copied().collect::<Vec<_>>(), [502], "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_writes_do_not_take_the_database_connections_from_another_tenant() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (n, outcomes) = survives(Attack::ContendedWrites).await;
    // The attacker's writes land (its commits take turns; none is lost or fails).
    assert!(outcomes.statuses.get(&200).is_some_and(|n| *n > 0), "{outcomes:?}");
    // calm's own writes get a connection too, while noisy's commits queue for theirs.
    let p99 = calm_writes_during(&n, Attack::ContendedWrites).await;
    eprintln!("contended writes: calm ticket creation p99 {p99:?}");
    assert!(p99 <= Duration::from_millis(250), "calm's writes waited {p99:?}");
}

//! Background work on several hosts sharing one database: a worker that lost its lease
//! cannot overwrite the new owner's outcome, a schedule tick fires once however many
//! workers race for it, and firings missed while the host was down collapse into one.
//!
//! Each host has its own frozen clock, moved by the test: which host sees a lease as
//! expired is decided by the test, not by timing.

use keel_tests::TestServer;
use serde_json::{Value, json};

/// On a five-minute mark, so the relay's `*/5` schedule has known firings.
const T0: i64 = 1_800_000_000_000;
const FIVE_MINUTES: i64 = 300_000;
const LEASE_MS: u64 = 60_000;

async fn metric_reaches(s: &TestServer, line: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !s.metrics().await.lines().any(|l| l == line) {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for metric `{line}`");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lease_cannot_overwrite_the_new_owners_outcome() {
    let a = TestServer::start_with(|c| {
        c.frozen_clock_at = Some(T0);
        c.jobs.lease_ms = LEASE_MS;
    })
    .await;
    a.install("fixtures/relay").await.expect(201);
    // Host A claims a job that runs for a few seconds of real time: host B must start and
    // take it over before A finishes.
    let job = a.post("/v1/plugins/relay/jobs", json!({ "name": "slow", "payload": { "ms": 6000 } })).await.expect(202);
    let id = job.body["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/tenants/default/jobs/{id}");
    let running = a.eventually(&path, "host A to claim the job", |b| b["job"]["status"] == "running").await;
    assert_eq!(running["job"]["attempts"], 1);

    // Host B's clock is past A's lease (A's is not): B takes the job over as attempt 2
    // while A is still running attempt 1.
    let b = a
        .start_replica(|c| {
            c.frozen_clock_at = Some(T0 + LEASE_MS as i64 + 1);
            c.jobs.lease_ms = LEASE_MS;
        })
        .await;
    a.eventually(&path, "host B to take over the job", |b| b["job"]["attempts"] == 2).await;

    // A finishes first and is refused; B's run is the one that counts.
    metric_reaches(&a, r#"keel_background_runs_total{plugin="relay",kind="job",outcome="lease_lost"} 1"#).await;
    let done = a.job_reaches(&id, "done").await;
    let runs: Vec<(u64, &str)> = done["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["attempt"].as_u64().unwrap(), r["outcome"].as_str().unwrap_or("running")))
        .collect();
    assert_eq!(runs, [(1, "lost"), (2, "done")], "{done}");
    let applied = a.get("/v1/plugins/relay/applied").await.expect(200).body;
    let mine: Vec<&Value> = applied["items"].as_array().unwrap().iter().filter(|i| i["id"] == id.as_str()).collect();
    assert_eq!(mine.len(), 1, "{applied}");
    assert_eq!(mine[0]["attempt"], 2, "the new owner's writes stand, not the stale worker's: {applied}");
    assert!(!a.metrics().await.contains(r#"outcome="done""#), "host A completed nothing");
    b.shutdown().await;
}

/// The relay's tick jobs, as (run_at, status), oldest first.
async fn ticks(s: &TestServer) -> Vec<(i64, String)> {
    let jobs = s.get("/v1/tenants/default/jobs?kind=schedule").await.expect(200).body;
    let mut ticks: Vec<(i64, String)> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["run_at"].as_i64().unwrap(), j["status"].as_str().unwrap().to_owned()))
        .collect();
    ticks.sort();
    ticks
}

async fn tick_registered(s: &TestServer) -> Value {
    let schedules = s
        .eventually("/v1/tenants/default/schedules", "the relay's tick to be registered", |b| {
            b["items"].as_array().is_some_and(|i| i.iter().any(|s| s["name"] == "tick"))
        })
        .await;
    schedules["items"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_fires_once_however_many_workers_race_for_it() {
    let a = TestServer::start_with(|c| c.frozen_clock_at = Some(T0 + 1_000)).await;
    a.install("fixtures/relay").await.expect(201);
    let replicas = [
        a.start_replica(|c| c.frozen_clock_at = Some(T0 + 1_000)).await,
        a.start_replica(|c| c.frozen_clock_at = Some(T0 + 1_000)).await,
    ];
    assert_eq!(tick_registered(&a).await["next_run_at"].as_i64(), Some(T0 + FIVE_MINUTES));
    let clocks: Vec<_> = std::iter::once(a.server())
        .chain(replicas.iter())
        .map(|s| (s.state.clock.clone(), s.state.jobs_wake.clone()))
        .collect();
    for round in 1..=4i64 {
        // All three hosts see the tick fall due at the same moment and are woken together.
        for (clock, wake) in &clocks {
            clock.advance(FIVE_MINUTES as u64);
            wake.notify_one();
        }
        a.eventually("/v1/tenants/default/schedules", "the tick to fire", |b| {
            b["items"][0]["next_run_at"].as_i64() == Some(T0 + (round + 1) * FIVE_MINUTES)
        })
        .await;
        let fired = a
            .eventually("/v1/tenants/default/jobs?kind=schedule&status=done", "the tick to run", |b| {
                b["items"].as_array().is_some_and(|i| i.len() as i64 >= round)
            })
            .await;
        assert_eq!(fired["items"].as_array().unwrap().len() as i64, round, "one job per tick: {fired}");
    }
    let expected: Vec<(i64, String)> = (1..=4).map(|k| (T0 + k * FIVE_MINUTES, "done".to_owned())).collect();
    assert_eq!(ticks(&a).await, expected);
    let applied = a.get("/v1/plugins/relay/applied").await.expect(200).body;
    assert_eq!(applied["counts"]["job"], 4, "each tick applied once: {applied}");
    for replica in replicas {
        replica.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firings_missed_while_the_host_was_down_collapse_into_one() {
    let s = TestServer::start_with(|c| c.frozen_clock_at = Some(T0 + 1_000)).await;
    s.install("fixtures/relay").await.expect(201);
    assert_eq!(tick_registered(&s).await["next_run_at"].as_i64(), Some(T0 + FIVE_MINUTES));
    // Down for an hour and a bit: twelve firings were missed.
    let back = T0 + 12 * FIVE_MINUTES + 61_000;
    let s = s.restart_with(|c| c.frozen_clock_at = Some(back)).await;
    let after = s
        .eventually("/v1/tenants/default/schedules", "the missed tick to fire", |b| {
            b["items"][0]["last_run_at"].as_i64() == Some(back)
        })
        .await;
    // One job, for the first missed firing; the next firing is the first after now.
    assert_eq!(after["items"][0]["next_run_at"].as_i64(), Some(T0 + 13 * FIVE_MINUTES));
    let job = after["items"][0]["last_job_id"].as_str().unwrap().to_owned();
    s.job_reaches(&job, "done").await;
    assert_eq!(ticks(&s).await, [(T0 + FIVE_MINUTES, "done".to_owned())]);
    assert_eq!(s.get("/v1/plugins/relay/applied").await.expect(200).body["counts"]["job"], 1);
}

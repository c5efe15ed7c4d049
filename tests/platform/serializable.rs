//! A call's reads are part of its commit check, and a call that loses a race is run again by
//! the host: concurrent calls behave as if run one at a time. Each invariant below depends on
//! what the call only read (a query's results, or other documents than it writes), which the
//! write conditions alone would not protect: 16 concurrent callers, 50 times over, and exactly
//! the allowed number succeed every time.

use futures::future::join_all;
use keel_tests::{Reply, TestServer};
use serde_json::json;

const L: &str = "/v1/plugins/ledger";
const CALLERS: usize = 16;
const ROUNDS: usize = 50;

/// How many calls of `replies` succeeded with `ok`, checking every other one failed as an
/// invariant refusal (`refused`) or, after the host's attempts ran out, a write conflict.
fn successes(replies: &[Reply], ok: u16, refused: &[&str]) -> usize {
    for r in replies {
        let status = r.status;
        assert!(
            status == ok || (status == 409 && (refused.contains(&r.code()) || r.code() == "write-conflict")),
            "unexpected answer {status}: {}",
            r.body
        );
    }
    replies.iter().filter(|r| r.status == ok).count()
}

async fn repeats(s: &TestServer) -> u64 {
    let metrics = s.metrics().await;
    metrics
        .lines()
        .filter(|l| l.starts_with("keel_plugin_call_repeats_total{") && l.contains("ledger"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_requests_that_each_fit_alone_never_overdraw_the_balance() {
    let s = TestServer::with_plugins(&["fixtures/ledger"]).await;
    for round in 0..ROUNDS {
        let employee = format!("e{round}");
        s.put(&format!("{L}/balances/{employee}"), json!({ "days": 5 })).await.expect(200);
        let path = format!("{L}/leave");
        let calls = (0..CALLERS).map(|_| s.post(&path, json!({ "employee": employee, "days": 1 })));
        let replies = join_all(calls).await;
        assert_eq!(successes(&replies, 201, &["insufficient-balance"]), 5, "round {round}: exactly the 5 days granted");
        let most = replies.iter().filter_map(|r| r.body["taken"].as_u64()).max();
        assert_eq!(most, Some(5), "round {round}");
    }
    assert!(repeats(&s).await > 0, "the test never raced: it proves nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_of_the_last_units_never_take_stock_below_zero() {
    let s = TestServer::with_plugins(&["fixtures/ledger"]).await;
    for round in 0..ROUNDS {
        let item = format!("bolt-{round}");
        s.post(&format!("{L}/stock/{item}/receive"), json!({ "qty": 5 })).await.expect(201);
        let path = format!("{L}/stock/{item}/issue");
        let calls = (0..CALLERS).map(|_| s.post(&path, json!({ "qty": 1 })));
        let replies = join_all(calls).await;
        assert_eq!(successes(&replies, 201, &["insufficient-stock"]), 5, "round {round}: exactly the 5 on hand");
        let left = s.post(&format!("{L}/stock/{item}/receive"), json!({ "qty": 0 })).await.expect(201).body;
        assert_eq!(left["on_hand"], 0, "round {round}");
    }
    assert!(repeats(&s).await > 0, "the test never raced: it proves nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_doctors_leaving_the_rota_at_once_one_always_stays() {
    let s = TestServer::with_plugins(&["fixtures/ledger"]).await;
    for round in 0..ROUNDS {
        let doctors: Vec<String> = (0..4).map(|d| format!("r{round}d{d}")).collect();
        for d in &doctors {
            s.put(&format!("{L}/doctors/{d}"), json!({ "on_call": true })).await.expect(200);
        }
        // Each of 16 calls asks for one of the four to leave if another of them stays.
        let paths: Vec<String> = doctors.iter().map(|d| format!("{L}/doctors/{d}/leave")).collect();
        let calls = (0..CALLERS).map(|i| {
            let me = &doctors[i % doctors.len()];
            let others: Vec<&String> = doctors.iter().filter(|d| *d != me).collect();
            s.post(&paths[i % doctors.len()], json!({ "others": others }))
        });
        let replies = join_all(calls).await;
        // Three leave (a second request for one who left is refused); the fourth stays.
        let left = successes(&replies, 200, &["last-on-call", "not-on-call"]);
        assert!(left <= 3, "round {round}: {left} left, nobody stayed");
        assert_eq!(left, 3, "round {round}: one of four stays, the other three may all go");
    }
}

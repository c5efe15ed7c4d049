//! Whole `keel` processes on one PostgreSQL server started for the test: three hosts share
//! plugins, grants, background work and schedules, and one killed mid-work loses nothing.
//!
//! Processes, not servers in the test's process: each has its own runtime, caches, worker
//! and compile cache, and SIGKILL leaves what a crash leaves (open transactions cut by the
//! database, leases left to expire).

use futures::StreamExt;
use keel_tests::cluster::{KeelProcess, Postgres};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const POLL_MS: u64 = 500;
const LEASE_MS: u64 = 12_000;

/// One test at a time: each runs several hosts and a database on the machine's cores, and
/// their bounds assume they have them.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn host_config(database: &str) -> String {
    format!(
        r#"allow-clock-control = true

[database]
url = "{database}"
change-poll-ms = {POLL_MS}

[jobs]
poll-interval-ms = 100
lease-ms = {LEASE_MS}

[limits]
max-timeout-ms = 10000
rate-limit-per-second = 100000
rate-limit-burst = 100000
"#
    )
}

#[derive(Clone)]
struct Caller {
    http: reqwest::Client,
    token: String,
}

impl Caller {
    async fn call(&self, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, url: String) -> (u16, Value) {
        self.call(reqwest::Method::GET, url, None).await
    }

    async fn post(&self, url: String, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, url, Some(body)).await
    }

    /// Asks until `done` holds; how long that took.
    async fn until(&self, url: String, what: &str, done: impl Fn(u16, &Value) -> bool) -> Duration {
        let started = Instant::now();
        loop {
            let (status, body) = self.get(url.clone()).await;
            if done(status, &body) {
                return started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(90), "timed out waiting for {what}; last {status} {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Every job of the relay plugin in `status`, through `host`.
async fn relay_jobs(admin: &Caller, host: &str, status: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = format!("{host}/v1/tenants/default/jobs?plugin=relay&status={status}&limit=1000{cursor}");
        let (code, page) = admin.get(url).await;
        assert_eq!(code, 200, "{page}");
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_plugins_grants_jobs_and_ticks_and_a_killed_one_loses_nothing() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let postgres = Postgres::start();
    let config = host_config(&postgres.database("keel"));
    let one = KeelProcess::start(&config);
    let two = KeelProcess::start(&config);
    let mut three = KeelProcess::start(&config);
    let token = one.bootstrap_token.clone().expect("the first host prints the admin token");
    assert!(two.bootstrap_token.is_none() && three.bootstrap_token.is_none(), "one bootstrap token per database");
    let admin = Caller { http: reqwest::Client::new(), token };
    let hosts = [one.base.clone(), two.base.clone(), three.base.clone()];

    // Installed through one: served by two and three, from the artifact in the database.
    let installed = admin
        .http
        .post(format!("{}/v1/admin/plugins", hosts[0]))
        .bearer_auth(&admin.token)
        .header("content-type", "application/wasm")
        .body(keel_tests::artifact("fixtures/relay"))
        .send()
        .await
        .unwrap();
    assert_eq!(installed.status(), 201, "{}", installed.text().await.unwrap());
    // An install is in force once the other hosts have compiled it (about a second each).
    for host in &hosts[1..] {
        let took = admin.until(format!("{host}/v1/plugins/relay/tally"), "the install", |s, _| s == 200).await;
        eprintln!("cluster: the install served by {host} after {took:?}");
        assert!(took < Duration::from_secs(20), "the install reached {host} after {took:?}");
    }
    let mut waits = Vec::new();

    // A grant revoked through two stops working on three.
    let (status, made) = admin
        .post(format!("{}/v1/tenants/default/tokens", hosts[0]), json!({ "name": "member", "role": "member" }))
        .await;
    assert_eq!(status, 201, "{made}");
    let member = Caller { http: admin.http.clone(), token: made["token"].as_str().unwrap().to_owned() };
    let grants = format!("{}/v1/tenants/default/roles/member/permissions", hosts[1]);
    let (status, _) =
        admin.call(reqwest::Method::PUT, grants.clone(), Some(json!({ "permissions": ["relay.use"] }))).await;
    assert_eq!(status, 200);
    waits.push(member.until(format!("{}/v1/plugins/relay/tally", hosts[2]), "the grant", |s, _| s == 200).await);
    let (status, _) = admin.call(reqwest::Method::PUT, grants, Some(json!({ "permissions": [] }))).await;
    assert_eq!(status, 200);
    waits.push(member.until(format!("{}/v1/plugins/relay/tally", hosts[2]), "the revocation", |s, _| s == 403).await);
    eprintln!("cluster: changes in force on the other hosts after {waits:?}");
    assert!(waits.iter().all(|w| *w < Duration::from_millis(POLL_MS * 6)), "past the bound: {waits:?}");

    // The relay's `*/5` schedule, with every host's clock moved five minutes at a time: one
    // firing per tick, whichever host takes it. (Real time moves too and may cross a mark
    // of its own: what must hold is one job per mark, never two.)
    let ticks = format!("{}/v1/tenants/default/jobs?kind=schedule&status=done", hosts[0]);
    for tick in 1..=3 {
        for host in &hosts {
            let (status, body) = admin.post(format!("{host}/v1/admin/clock/advance"), json!({ "ms": 300_000 })).await;
            assert_eq!(status, 200, "{body}");
        }
        admin
            .until(ticks.clone(), &format!("tick {tick}"), |_, b| {
                b["items"].as_array().is_some_and(|i| i.len() >= tick)
            })
            .await;
    }
    // Time for a second firing of the last tick, had any host made one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fired = admin.get(ticks.clone()).await.1;
    let mut marks: Vec<i64> =
        fired["items"].as_array().unwrap().iter().map(|j| j["run_at"].as_i64().unwrap()).collect();
    marks.sort();
    let firings = marks.len();
    marks.dedup();
    assert_eq!(marks.len(), firings, "a tick fired twice: {fired}");
    assert!(firings >= 3 && marks.iter().all(|m| m % 300_000 == 0), "{fired}");
    let (_, applied) = admin.get(format!("{}/v1/plugins/relay/applied", hosts[0])).await;
    assert_eq!(applied["counts"]["job"].as_u64(), Some(firings as u64), "each firing applied: {applied}");

    // 2,000 jobs enqueued across the three hosts for an hour from now, then every host's
    // clock moved past it: all three drain them, and three is killed a tenth of the way in,
    // while it holds leases. Each job counts the runs of it that committed.
    const JOBS: usize = 2_000;
    let mut clocks = Vec::new();
    for host in &hosts {
        let (status, body) = admin.post(format!("{host}/v1/admin/clock/advance"), json!({ "ms": 0 })).await;
        assert_eq!(status, 200, "{body}");
        clocks.push(body["now_ms"].as_u64().unwrap());
    }
    let due = clocks.iter().max().unwrap() + 3_600_000;
    let enqueued: Vec<(u16, Value)> =
        futures::stream::iter((0..JOBS).map(|i| {
            let (admin, host) = (admin.clone(), hosts[i % 3].clone());
            async move {
                admin.post(format!("{host}/v1/plugins/relay/jobs"), json!({ "name": "count", "run_at": due })).await
            }
        }))
        .buffer_unordered(12)
        .collect()
        .await;
    assert!(enqueued.iter().all(|(s, _)| *s == 202), "{:?}", enqueued.iter().find(|(s, _)| *s != 202));
    let started = Instant::now();
    for (host, now) in hosts.iter().zip(&clocks) {
        let (status, body) = admin.post(format!("{host}/v1/admin/clock/advance"), json!({ "ms": due - now })).await;
        assert_eq!(status, 200, "{body}");
    }
    let counts_url = format!("{}/v1/plugins/relay/counts", hosts[0]);
    admin.until(counts_url.clone(), "the jobs to start", |_, b| b["jobs"].as_u64().unwrap_or(0) >= 200).await;
    three.kill();
    let before_kill = admin.get(counts_url).await.1["jobs"].as_u64().unwrap();
    assert!(before_kill < JOBS as u64, "the jobs were all done before the kill: nothing was mid-work");

    // The two left finish everything, taking over three's jobs once their leases end.
    let counted = admin
        .until(format!("{}/v1/plugins/relay/counts", hosts[1]), "every job to be counted", |_, b| {
            b["jobs"].as_u64() == Some(JOBS as u64)
        })
        .await;
    let done = relay_jobs(&admin, &hosts[0], "done").await;
    let counts = admin.get(format!("{}/v1/plugins/relay/counts", hosts[0])).await.1;
    eprintln!(
        "cluster: {JOBS} jobs done {:?} after the kill ({:?} in all); {} counted before it; counts {counts}",
        counted,
        started.elapsed(),
        before_kill
    );
    assert_eq!((counts["runs"].as_u64(), counts["most"].as_u64()), (Some(JOBS as u64), Some(1)), "{counts}");
    assert_eq!(done.iter().filter(|j| j["name"] == "count").count(), JOBS, "every job done");
    for status in ["queued", "running", "dead"] {
        assert!(relay_jobs(&admin, &hosts[1], status).await.is_empty(), "a job left {status}");
    }
    // Three held work when it died: jobs taken over after their lease show a second attempt.
    let taken_over = done.iter().filter(|j| j["attempts"].as_u64().is_some_and(|a| a >= 2)).count();
    assert!(taken_over > 0, "no job was taken over from the killed host");
    eprintln!("cluster: {taken_over} jobs taken over from the killed host");
    drop(three);
}

/// One answer of the load during the outage.
struct Answer {
    status: u16,
    code: String,
    retry_after: bool,
    title: String,
    /// Sent after readiness was green again.
    after_recovery: bool,
}

/// Files tickets as fast as it can until `stop`, each with a title of its own.
async fn file_tickets(
    admin: Caller,
    host: String,
    client: usize,
    stop: tokio::sync::watch::Receiver<bool>,
    recovered: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Answer> {
    let mut answers = Vec::new();
    for i in 0.. {
        if *stop.borrow() {
            break;
        }
        let title = format!("load {client}-{i}");
        let after_recovery = recovered.load(std::sync::atomic::Ordering::SeqCst);
        let reply = admin
            .http
            .post(format!("{host}/v1/plugins/helpdesk/tickets"))
            .bearer_auth(&admin.token)
            .json(&json!({ "title": title }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the host stopped answering: {e}"));
        let status = reply.status().as_u16();
        let retry_after = reply.headers().contains_key("retry-after");
        let body: Value = reply.json().await.unwrap_or(Value::Null);
        let code = body["code"].as_str().unwrap_or_default().to_owned();
        answers.push(Answer { status, code, retry_after, title, after_recovery });
        if status != 201 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_fails_requests_cleanly_and_loses_no_acknowledged_write() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let postgres = Postgres::start();
    let host = KeelProcess::start(&host_config(&postgres.database("keel")));
    let admin = Caller { http: reqwest::Client::new(), token: host.bootstrap_token.clone().expect("admin token") };
    let base = host.base.clone();
    let installed = admin
        .http
        .post(format!("{base}/v1/admin/plugins"))
        .bearer_auth(&admin.token)
        .header("content-type", "application/wasm")
        .body(keel_tests::artifact("bundled/helpdesk"))
        .send()
        .await
        .unwrap();
    assert_eq!(installed.status(), 201);
    let ready = || async { admin.http.get(format!("{base}/readyz")).send().await.unwrap().status().as_u16() };
    assert_eq!(ready().await, 200);

    // Six clients file tickets; the database stops at once (connections cut) under them,
    // stays away for three seconds, and comes back.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let recovered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|c| tokio::spawn(file_tickets(admin.clone(), base.clone(), c, stopped.clone(), recovered.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    postgres.halt();
    let halted = Instant::now();
    let red = admin.until(format!("{base}/readyz"), "readiness to go red", |s, _| s == 503).await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(halted.elapsed())).await;
    postgres.resume();
    let green = admin.until(format!("{base}/readyz"), "readiness to go green", |s, _| s == 200).await;
    recovered.store(true, std::sync::atomic::Ordering::SeqCst);
    // Load goes on until the host has served tickets again for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.send(true).unwrap();
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.unwrap());
    }

    let ok: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status != 201).collect();
    let mut codes: Vec<(u16, &str)> = failed.iter().map(|a| (a.status, a.code.as_str())).collect();
    codes.sort();
    codes.dedup();
    eprintln!(
        "restart: {} requests, {} answered 201, {} failed cleanly {codes:?}; readiness red after {red:?}, green {green:?} after the restart",
        answers.len(),
        ok.len(),
        failed.len()
    );
    assert!(!failed.is_empty(), "no request met the outage");
    for a in &failed {
        assert_eq!(a.status, 503, "{} answered {} {}", a.title, a.status, a.code);
        assert!(!a.code.is_empty() && a.retry_after, "{} answered 503 without a problem code and Retry-After", a.title);
    }
    assert!(ok.iter().any(|a| a.after_recovery), "the host served nothing after the database came back");

    // Every acknowledged ticket is there once; a ticket whose answer was a failure may be
    // there only if its commit landed as the connection broke, never half of one.
    let mut stored: Vec<String> = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = admin.get(format!("{base}/v1/plugins/helpdesk/tickets?limit=100{cursor}")).await;
        assert_eq!(status, 200, "{page}");
        for t in page["items"].as_array().unwrap() {
            stored.push(t["title"].as_str().unwrap().to_owned());
            let number = t["number"].as_u64().unwrap();
            let (status, whole) = admin.get(format!("{base}/v1/plugins/helpdesk/tickets/{number}")).await;
            assert_eq!((status, &whole["title"]), (200, &t["title"]), "ticket {number} is listed but cannot be read");
        }
        match page["next"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let unique: std::collections::BTreeSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a ticket was stored twice");
    for a in &ok {
        assert!(unique.contains(&a.title), "{} was acknowledged but is not stored", a.title);
    }
    let extra = stored.len() - ok.len();
    eprintln!(
        "restart: {} stored, {} of them answered with a failure (committed as the connection broke)",
        stored.len(),
        extra
    );
    assert!(extra <= failed.len(), "{extra} tickets stored without being asked for");
    drop(host);
}

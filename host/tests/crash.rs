//! Durability of background work across a crash: the real `keel` binary is killed with
//! SIGKILL while jobs hold leases and events wait for delivery; a new process on the same
//! data directory completes every one of them, and the SDK's idempotency helper keeps the
//! redelivered ones from being applied twice.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Keel {
    child: Child,
    base: String,
    /// Only on the first start.
    token: Option<String>,
}

fn start(data_dir: &Path, config: &Path) -> Keel {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--config")
        .arg(config)
        .env("KEEL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("keel starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut base = None;
    let mut token = None;
    while let Some(Ok(line)) = lines.next() {
        if let Some(addr) = line.strip_prefix("Keel is listening on ") {
            base = Some(addr.trim().to_owned());
        } else if line.trim_start().starts_with("keel_") {
            token = Some(line.trim().to_owned());
        }
        if line.starts_with("Try:") || line.starts_with("Use the admin token") {
            break;
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Keel { child, base: base.expect("keel printed its address"), token }
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Value, expect: u16) -> Value {
        let (status, reply) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, expect, "{path}: {reply}");
        reply
    }

    async fn jobs(&self, status: &str) -> Vec<Value> {
        self.get(&format!("/v1/tenants/default/jobs?status={status}&limit=1000")).await["items"]
            .as_array()
            .expect("items")
            .clone()
    }

    async fn install(&self, artifact: Vec<u8>) {
        let response = self
            .http
            .post(format!("{}/v1/admin/plugins", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/wasm")
            .body(artifact)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }

    async fn wait_for(&self, what: &str, mut done: impl AsyncFnMut(&Api) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(self).await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_events_survive_sigkill_and_complete_once_after_restart() {
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/keel-plugins/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(
        &config,
        "allow-clock-control = true\n[jobs]\npoll-interval-ms = 50\nlease-ms = 31000\nconcurrency = 4\n",
    )
    .unwrap();
    let data = dir.path().join("data");

    let mut first = start(&data, &config);
    let api =
        Api { http: reqwest::Client::new(), base: first.base.clone(), token: first.token.clone().expect("token") };
    for plugin in ["relay", "listener"] {
        let bytes = std::fs::read(artifacts.join(format!("{plugin}.wasm")))
            .unwrap_or_else(|e| panic!("missing fixture {plugin} ({e}); run `cargo xtask build-plugins`"));
        api.install(bytes).await;
    }

    // Four slow jobs take every worker slot; then jobs and events queue up behind them.
    for n in 0..4 {
        api.post("/v1/plugins/relay/jobs", json!({ "name": "slow", "payload": { "ms": 3000, "n": n } }), 202).await;
    }
    api.wait_for("four leased jobs", async |api| {
        api.jobs("running").await.iter().filter(|j| j["name"] == "slow").count() == 4
    })
    .await;
    for n in 0..6 {
        api.post("/v1/plugins/relay/jobs", json!({ "name": "record", "payload": { "n": n } }), 202).await;
    }
    for n in 0..3 {
        api.post("/v1/plugins/relay/publish", json!({ "payload": { "n": n } }), 202).await;
    }
    let running = api.jobs("running").await.iter().filter(|j| j["kind"] != "schedule").count();
    let queued = api.jobs("queued").await.iter().filter(|j| j["kind"] != "schedule").count();
    first.child.kill().expect("SIGKILL");
    first.child.wait().unwrap();
    assert!(
        running == 4 && queued == 6 + 3 * 2,
        "the crash must catch work in flight: {running} running, {queued} queued"
    );

    let mut second = start(&data, &config);
    assert!(second.token.is_none(), "a restart must not mint a new bootstrap token");
    let api = Api { base: second.base.clone(), ..api };
    // The dead process's leases expire 31 s after it claimed them.
    api.post("/v1/admin/clock/advance", json!({ "ms": 40_000 }), 200).await;
    api.wait_for("every job and delivery to finish", async |api| {
        api.jobs("queued").await.iter().chain(&api.jobs("running").await).all(|j| j["kind"] == "schedule")
    })
    .await;

    // (Leaving out the relay's */5 schedule, which the real clock may fire meanwhile.)
    let done: Vec<Value> = api.jobs("done").await.into_iter().filter(|j| j["kind"] != "schedule").collect();
    assert_eq!(done.len(), 4 + 6 + 3 * 2, "every job and every delivery completes: {done:?}");
    assert!(api.jobs("dead").await.is_empty());
    let relay = api.get("/v1/plugins/relay/applied").await;
    let applied = |what: &str| {
        relay["items"].as_array().unwrap().iter().filter(|i| i["what"] == what && i["name"] != "tick").count()
    };
    assert_eq!((applied("job"), applied("event")), (10, 3), "{relay}");
    let listener = api.get("/v1/plugins/listener/applied").await;
    assert_eq!(listener["counts"]["event"].as_u64(), Some(3), "{listener}");

    // The attempts cut short by the crash are on record as lost, then done on the new process.
    let mut lost = 0;
    for job in done.iter().filter(|j| j["name"] == "slow") {
        let detail = api.get(&format!("/v1/tenants/default/jobs/{}", job["id"].as_str().unwrap())).await;
        let outcomes: Vec<&str> =
            detail["runs"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes.last(), Some(&"done"), "{detail}");
        lost += outcomes.iter().filter(|o| **o == "lost").count();
    }
    assert_eq!(lost, 4, "each attempt the crash interrupted is recorded as lost");
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}

/// Reads the batch fixture's summary page by page: (items, touched once, untouched, other).
async fn batch_summary(api: &Api) -> (u64, u64, u64, u64) {
    let (mut items, mut once, mut untouched, mut more) = (0, 0, 0, 0);
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/plugins/batch/summary".to_owned(),
            Some(c) => format!("/v1/plugins/batch/summary?cursor={c}"),
        };
        let page = api.get(&path).await;
        items += page["items"].as_u64().unwrap();
        once += page["once"].as_u64().unwrap();
        untouched += page["untouched"].as_u64().unwrap();
        more += page["more"].as_u64().unwrap();
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (items, once, untouched, more),
        }
    }
}

async fn task(api: &Api, id: &str) -> Value {
    api.get(&format!("/v1/tenants/default/tasks/{id}")).await
}

/// A task over 100,000 documents, a thousand a chunk, is killed with SIGKILL part way; the
/// new process finishes it and every document was processed exactly once: the chunk that
/// was running ran again, and no committed chunk ran twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_100000_documents_survives_sigkill_and_touches_each_exactly_once() {
    const ITEMS: u64 = 100_000;
    let artifact = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/keel-plugins/fixtures/batch.wasm");
    let bytes = std::fs::read(&artifact)
        .unwrap_or_else(|e| panic!("missing {} ({e}); run `cargo xtask build-plugins`", artifact.display()));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(&config, "allow-clock-control = true\n[jobs]\npoll-interval-ms = 20\nconcurrency = 4\n").unwrap();
    let data = dir.path().join("data");

    let mut first = start(&data, &config);
    let api =
        Api { http: reqwest::Client::new(), base: first.base.clone(), token: first.token.clone().expect("token") };
    api.install(bytes).await;

    let seed = api.post("/v1/plugins/batch/seed", json!({ "count": ITEMS, "chunk": 1000 }), 202).await;
    let seed = seed["task"].as_str().unwrap().to_owned();
    api.wait_for("the seeding task", async |api| task(api, &seed).await["status"] == "done").await;
    let seeded = task(&api, &seed).await;
    assert_eq!((seeded["done"].as_u64(), seeded["chunks"].as_u64()), (Some(ITEMS), Some(100)), "{seeded}");

    let touch = api.post("/v1/plugins/batch/touch", json!({ "count": ITEMS, "chunk": 1000 }), 202).await;
    let touch = touch["task"].as_str().unwrap().to_owned();
    api.wait_for("the task to be part way", async |api| task(api, &touch).await["done"].as_u64() >= Some(20_000)).await;
    first.child.kill().expect("SIGKILL");
    first.child.wait().unwrap();
    let (_, once_at_crash, _, more_at_crash) = batch_summary_offline(&data);
    assert!(once_at_crash >= 20_000 && once_at_crash < ITEMS, "the crash must come part way: {once_at_crash}");
    assert_eq!(more_at_crash, 0);

    let mut second = start(&data, &config);
    let api = Api { base: second.base.clone(), ..api };
    // The killed process's lease on the chunk it was running expires; the chunk runs again.
    api.post("/v1/admin/clock/advance", json!({ "ms": 70_000 }), 200).await;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let t = task(&api, &touch).await;
        if t["status"] == "done" {
            assert_eq!(t["done"].as_u64(), Some(ITEMS), "{t}");
            break;
        }
        assert_eq!(t["status"], "running", "{t}");
        assert!(Instant::now() < deadline, "the task did not finish: {t}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(batch_summary(&api).await, (ITEMS, ITEMS, 0, 0), "every item touched exactly once");
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}

/// The batch fixture's items as stored, read from the database file of a stopped server:
/// (items, touched once, untouched, touched more than once).
fn batch_summary_offline(data: &Path) -> (u64, u64, u64, u64) {
    let db = rusqlite::Connection::open(data.join("keel.db")).expect("the database");
    let count = |touched: &str| -> u64 {
        db.query_row(
            &format!(
                "SELECT COUNT(*) FROM documents WHERE plugin_id = 'batch' AND collection = 'items' \
                 AND json_extract(body, '$.touched') {touched}"
            ),
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as u64
    };
    (count(">= 0"), count("= 1"), count("= 0"), count("> 1"))
}

/// A pay run for 1,000 employees (HR and payroll, the bundled plugins) is killed with SIGKILL
/// part way; after a restart the run finishes and every employee was calculated exactly
/// once: one payslip each in the calculation, and the run's totals count each of them once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pay_run_killed_part_way_finishes_after_restart_with_each_employee_calculated_once() {
    const PEOPLE: u64 = 1_000;
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/keel-plugins/bundled");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    // No per-token rate limit: the set-up records a thousand salaries as fast as it can.
    std::fs::write(
        &config,
        "allow-clock-control = true\n[limits]\nrate-limit-per-second = 0\n[jobs]\npoll-interval-ms = 20\nconcurrency = 4\n",
    )
    .unwrap();
    let data = dir.path().join("data");

    let mut first = start(&data, &config);
    let api =
        Api { http: reqwest::Client::new(), base: first.base.clone(), token: first.token.clone().expect("token") };
    for plugin in ["hr", "payroll"] {
        let bytes = std::fs::read(bundled.join(format!("{plugin}.wasm")))
            .unwrap_or_else(|e| panic!("missing {plugin} ({e}); run `cargo xtask build-plugins`"));
        api.install(bytes).await;
    }
    let mut csv = String::from("legal_name,email,title,hire_date\n");
    for i in 1..=PEOPLE {
        csv += &format!("Person {i},person{i}@example.com,Engineer,2020-01-01\n");
    }
    let imported = api
        .http
        .post(format!("{}/v1/imports/hr/employees", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status().as_u16(), 200);
    let put = |path: String, body: Value| {
        let api = &api;
        async move {
            let (status, reply) = api.send(reqwest::Method::PUT, &path, Some(body)).await;
            assert_eq!(status, 200, "{path}: {reply}");
        }
    };
    put(
        "/v1/plugins/payroll/components/pension".into(),
        json!({ "name": "Pension", "kind": "deduction", "pre_tax": true, "formula": "base * 0.05" }),
    )
    .await;
    for n in 1..=PEOPLE {
        put(
            format!("/v1/plugins/payroll/employees/{n}/compensation"),
            json!({ "effective": "2020-01-01", "pay": { "salary": format!("{}", 24_000 + n) }, "currency": "EUR",
                    "components": [{ "code": "pension" }] }),
        )
        .await;
    }

    // Twenty chunks of 50, so the kill lands between two of them.
    let (status, reply) = api
        .send(
            reqwest::Method::PATCH,
            "/v1/tenants/default/plugins/payroll/settings",
            Some(json!({ "values": { "run-chunk": 50 } })),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let run = api.post("/v1/plugins/payroll/runs", json!({ "period": "2021-01" }), 202).await;
    let (id, task_id) = (run["id"].as_u64().unwrap(), run["task"].as_str().unwrap().to_owned());
    api.wait_for("the run to be part way", async |api| task(api, &task_id).await["done"].as_u64() >= Some(200)).await;
    first.child.kill().expect("SIGKILL");
    first.child.wait().unwrap();
    let at_crash = task_done_offline(&data, &task_id);
    assert!((200..PEOPLE).contains(&at_crash), "the crash must come part way: {at_crash}");

    let mut second = start(&data, &config);
    let api = Api { base: second.base.clone(), ..api };
    // The killed process's lease on the chunk it was running expires; the chunk runs again.
    api.post("/v1/admin/clock/advance", json!({ "ms": 70_000 }), 200).await;
    let deadline = Instant::now() + Duration::from_secs(240);
    let finished = loop {
        let r = api.get(&format!("/v1/plugins/payroll/runs/{id}")).await;
        if r["state"] == "calculated" {
            break r;
        }
        assert_eq!(r["state"], "calculating", "{r}");
        assert!(Instant::now() < deadline, "the run did not finish: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((finished["calculated"].as_u64(), finished["failed"].as_u64()), (Some(PEOPLE), Some(0)), "{finished}");
    assert_eq!(finished["totals"]["EUR"]["employees"].as_u64(), Some(PEOPLE), "each counted once: {finished}");
    // Gross is the sum of 1,000 distinct monthly salaries: (24,000 + n) / 12 each, to the cent.
    let gross: i64 = (1..=PEOPLE as i64).map(|n| ((24_000 + n) * 100 * 2 + 12) / 24).sum();
    let shown = finished["totals"]["EUR"]["gross"].as_str().unwrap().replace('.', "").parse::<i64>().unwrap();
    assert_eq!(shown, gross, "{finished}");
    second.child.kill().unwrap();
    second.child.wait().unwrap();
    assert_eq!(payslips_offline(&data, &format!("{id:010}/0001")), PEOPLE, "one payslip per employee");
}

/// How far a task had got, read from the database file of a stopped server.
fn task_done_offline(data: &Path, task: &str) -> u64 {
    let db = rusqlite::Connection::open(data.join("keel.db")).expect("the database");
    db.query_row("SELECT done FROM tasks WHERE id = ?1", [task], |r| r.get::<_, i64>(0)).expect("the task") as u64
}

/// The payslips stored for one calculation of a run, from the database file.
fn payslips_offline(data: &Path, slot: &str) -> u64 {
    let db = rusqlite::Connection::open(data.join("keel.db")).expect("the database");
    db.query_row(
        "SELECT COUNT(*) FROM documents WHERE plugin_id = 'payroll' AND collection = 'payslips' \
         AND json_extract(body, '$.slot') = ?1",
        [slot],
        |r| r.get::<_, i64>(0),
    )
    .expect("count") as u64
}

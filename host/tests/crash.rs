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
        let response = api
            .http
            .post(format!("{}/v1/admin/plugins", api.base))
            .bearer_auth(&api.token)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
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

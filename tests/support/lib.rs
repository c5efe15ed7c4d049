//! Test support: start the real Keel server on an ephemeral port with a temporary data
//! directory, load the real compiled plugin artifacts, and talk to it over HTTP.

pub mod cluster;
pub mod console;
pub mod neighbours;
pub mod webdriver;

use keel_host::client::Client;
use keel_host::{Config, Server};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// Where `cargo xtask build-plugins` writes artifacts.
pub fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/keel-plugins")
}

/// A packaged plugin artifact, e.g. `artifact("bundled/helpdesk")`. Fails loudly when the
/// plugins were not built, rather than skipping.
pub fn artifact(name: &str) -> Vec<u8> {
    let path = artifacts_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("missing plugin artifact {} ({e}); build the plugins first with `cargo xtask build-plugins` (`cargo xtask test` does it)", path.display())
    })
}

/// The raw component (no manifest) the wasm build produced for a plugin crate.
pub fn raw_component(crate_name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/keel-plugins/raw/{}.wasm", crate_name.replace('-', "_")));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("missing component {} ({e}); run `cargo xtask build-plugins`", path.display()))
}

/// The manifest source of a plugin.
pub fn manifest_source(dir: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins").join(dir).join("plugin.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `manifest` (a `plugin.toml`) with its own `version` replaced by `version`.
pub fn with_version(manifest: &str, version: &str) -> String {
    let line = manifest.lines().find(|l| l.starts_with("version = ")).expect("the manifest has a version line");
    manifest.replacen(line, &format!("version = \"{version}\""), 1)
}

/// `manifest` without its `[[migrations]]` tables (and the comment lines just above them),
/// for a test that packages a plugin under an older version than its migrations name.
pub fn without_migrations(manifest: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut skipping = false;
    for line in manifest.lines() {
        if line.trim() == "[[migrations]]" {
            skipping = true;
            while out.last().is_some_and(|l| l.starts_with('#')) {
                out.pop();
            }
            continue;
        }
        if skipping && (line.starts_with('[') || line.trim().is_empty()) {
            skipping = false;
        }
        if !skipping {
            out.push(line);
        }
    }
    out.join("\n") + "\n"
}

/// The version a plugin's `plugin.toml` declares.
pub fn manifest_version(dir: &str) -> String {
    let source = manifest_source(dir);
    let line = source.lines().find(|l| l.starts_with("version = ")).expect("the manifest has a version line");
    line.trim_start_matches("version = ").trim_matches('"').to_owned()
}

/// An answer, as the library client returns it (with `expect` and `expect_problem`).
pub use keel_host::client::Reply;

pub struct TestServer {
    server: Option<Server>,
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    /// The library's client, as the platform admin: every request of this server goes
    /// through it.
    pub client: Client,
    pub dir: TempDir,
}

impl TestServer {
    /// A server on a fresh temporary data directory.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A server with configuration adjusted by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = config(dir.path());
        configure(&mut config);
        let server = Server::start(config).await.expect("server starts");
        let token = server.bootstrap_token.clone().expect("first start prints a bootstrap token");
        let base = format!("http://{}", server.addr);
        let client = Client::new(&base, Some(token.clone()));
        TestServer { server: Some(server), base, token, http: reqwest::Client::new(), client, dir }
    }

    /// A server with `plugins` (artifact names) installed over HTTP.
    pub async fn with_plugins(plugins: &[&str]) -> TestServer {
        let server = TestServer::start().await;
        for name in plugins {
            server.install(name).await.expect(201);
        }
        server
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server is running")
    }

    /// Stops the server (in-flight requests and background attempts finish first).
    pub async fn stop(mut self) {
        self.server.take().expect("server is running").shutdown().await;
    }

    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(mut self) -> TestServer {
        self.server.take().expect("server is running").shutdown().await;
        let server = Server::start(config(self.dir.path())).await.expect("server restarts");
        self.base = format!("http://{}", server.addr);
        self.client = Client::new(&self.base, Some(self.token.clone()));
        self.server = Some(server);
        self
    }

    /// Stops the server and starts a new one on the same data directory, configured anew
    /// (e.g. its clock frozen later than before: the host was down meanwhile).
    pub async fn restart_with(mut self, configure: impl FnOnce(&mut Config)) -> TestServer {
        self.server.take().expect("server is running").shutdown().await;
        let mut config = config(self.dir.path());
        configure(&mut config);
        let server = Server::start(config).await.expect("server restarts");
        self.base = format!("http://{}", server.addr);
        self.client = Client::new(&self.base, Some(self.token.clone()));
        self.server = Some(server);
        self
    }

    /// Another host on the same database and data directory (a replica), with its own
    /// background worker; the caller shuts it down.
    pub async fn start_replica(&self, configure: impl FnOnce(&mut Config)) -> Server {
        let mut config = config(self.dir.path());
        configure(&mut config);
        Server::start(config).await.expect("replica starts")
    }

    pub async fn install(&self, name: &str) -> Reply {
        self.upload(artifact(name)).await
    }

    pub async fn upload(&self, bytes: Vec<u8>) -> Reply {
        let request = self
            .http
            .post(format!("{}/v1/admin/plugins", self.base))
            .header("content-type", "application/wasm")
            .body(bytes);
        self.send(request.bearer_auth(&self.token)).await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        self.client.send(request).await.expect("request reaches the server")
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, path)
    }

    /// POSTs `body` as it is, with `content_type` (none: no header), as the admin token.
    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
        let mut request = self.request(reqwest::Method::POST, path);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        self.send(request.body(body)).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::POST, path)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PATCH, path).json(&body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PUT, path).json(&body)).await
    }

    /// A request with a raw body, for malformed-input tests.
    pub async fn raw(&self, method: reqwest::Method, path: &str, body: &'static str) -> Reply {
        self.raw_with(method, path, body, "application/json").await
    }

    /// A body sent as it is, with its own content type.
    pub async fn raw_with(&self, method: reqwest::Method, path: &str, body: &'static str, content_type: &str) -> Reply {
        self.send(self.request(method, path).header("content-type", content_type).body(body)).await
    }

    /// A request with another token (`None`: no Authorization header).
    pub async fn as_token(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.client.as_caller(token).request(method, path);
        if let Some(b) = body {
            request = request.json(&b);
        }
        self.send(request).await
    }

    /// Creates a tenant (as the platform admin) and returns a token for it with `role`.
    pub async fn tenant_with_token(&self, tenant: &str, role: &str) -> String {
        let created = self.post("/v1/admin/tenants", serde_json::json!({ "id": tenant, "name": tenant })).await;
        assert!(created.status == 201 || created.code() == "tenant-exists", "{}", created.body);
        self.token_for(tenant, role).await
    }

    /// A new token in `tenant` with `role`, made by the platform admin.
    pub async fn token_for(&self, tenant: &str, role: &str) -> String {
        let reply = self
            .post(
                &format!("/v1/tenants/{tenant}/tokens"),
                serde_json::json!({ "name": format!("{role} of {tenant}"), "role": role }),
            )
            .await
            .expect(201);
        reply.body["token"].as_str().expect("token").to_owned()
    }

    /// Without the admin token.
    pub async fn anonymous(&self, path: &str, authorization: Option<&str>) -> Reply {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        self.send(request).await
    }

    /// Opens a connection and sends `head` (request line and headers, as the admin) but no
    /// body: the request is then in flight until the caller writes its body, or times out.
    pub async fn send_head(&self, method: &str, path: &str, content_length: usize) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(self.server().addr).await.expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: keel\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n\
             content-length: {content_length}\r\nconnection: close\r\n\r\n",
            self.token
        );
        stream.write_all(head.as_bytes()).await.expect("send head");
        stream
    }

    /// Moves the host clock forward by `ms`.
    pub async fn advance_clock(&self, ms: u64) -> i64 {
        let reply = self.post("/v1/admin/clock/advance", serde_json::json!({ "ms": ms })).await.expect(200);
        reply.body["now_ms"].as_i64().expect("now_ms")
    }

    /// Polls `path` (as the admin) until `done` holds for its body, failing after 20 s.
    pub async fn eventually(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let reply = self.get(path).await;
            if reply.status == 200 && done(&reply.body) {
                return reply.body;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}; last {path}: {}", reply.body);
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Moves the clock to `at` (ms; forward only), then waits until `plugin`'s schedule
    /// `name` has fired on a clock at or past `at` in the default tenant and its job is done.
    pub async fn move_clock_to_and_run(&self, at: i64, plugin: &str, name: &str) {
        let now = self.advance_clock(0).await;
        assert!(at >= now, "the clock only moves forward");
        self.advance_clock((at - now) as u64).await;
        let fired = self
            .eventually("/v1/tenants/default/schedules", &format!("{plugin}'s {name} to run after the move"), |b| {
                b["items"].as_array().is_some_and(|i| {
                    i.iter().any(|s| {
                        s["plugin"] == plugin && s["name"] == name && s["last_run_at"].as_i64().is_some_and(|t| t >= at)
                    })
                })
            })
            .await;
        let items = fired["items"].as_array().expect("schedules");
        let schedule = items.iter().find(|s| s["plugin"] == plugin && s["name"] == name).expect("the schedule");
        self.job_reaches(schedule["last_job_id"].as_str().expect("its job"), "done").await;
    }

    /// The payloads of the default tenant's events of `topic`.
    pub async fn published(&self, topic: &str) -> Vec<Value> {
        let log = self.get(&format!("/v1/tenants/default/events?topic={topic}")).await.expect(200).body;
        let items = log["items"].as_array().expect("events");
        items.iter().map(|e| serde_json::from_str(e["payload"].as_str().expect("payload")).expect("JSON")).collect()
    }

    /// Waits for a job of the default tenant to reach `status`; returns `{job, runs}`.
    pub async fn job_reaches(&self, id: &str, status: &str) -> Value {
        self.eventually(&format!("/v1/tenants/default/jobs/{id}"), &format!("job {id} to be {status}"), |b| {
            b["job"]["status"] == status
        })
        .await
    }

    pub async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.base)).send().await.expect("metrics").text().await.expect("text")
    }
}

/// The configuration every test server starts from, on data directory `dir`.
pub fn config(dir: &Path) -> Config {
    let mut config =
        Config { data_dir: dir.to_path_buf(), listen: "127.0.0.1:0".parse().expect("addr"), ..Config::default() };
    // Small pool: tests run many servers side by side.
    config.limits.max_concurrent_instances = 16;
    // Time-based behaviour is tested by moving the clock, never by sleeping.
    config.allow_clock_control = true;
    // No per-token rate limit (its own test sets one): on a frozen clock a bucket never
    // refills, and polling for an outcome would run out of requests.
    config.limits.rate_limit_per_second = 0;
    config.jobs.poll_interval_ms = 50;
    // Many servers share two cores here: let calls wait for a free instance of their
    // share rather than be refused (the noisy-neighbour suite tests refusals).
    config.limits.admission_wait_ms = 5_000;
    config.database.url = test_database_url(dir);
    config
}

/// With `KEEL_TEST_DATABASE=postgres`, every data directory gets a database of its own on the
/// server at `KEEL_TEST_PG_URL` (which `cargo xtask test` starts): hosts started on one
/// directory (a restart, a second replica) share it, as they share the SQLite file otherwise.
pub fn test_database_url(dir: &Path) -> Option<String> {
    match std::env::var("KEEL_TEST_DATABASE").as_deref() {
        Ok("postgres") => {
            let server = std::env::var("KEEL_TEST_PG_URL")
                .expect("KEEL_TEST_DATABASE=postgres needs KEEL_TEST_PG_URL (cargo xtask test sets both)");
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            dir.hash(&mut hasher);
            let name = format!("keel_test_{:016x}", hasher.finish());
            // Its own thread and runtime: this is called from sync and async code alike.
            let url = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(keel_host::backend::postgres::create_database(&server, &name))
            })
            .join()
            .expect("database thread")
            .expect("create a test database");
            Some(url)
        }
        Ok("sqlite") | Err(_) => None,
        Ok(other) => panic!("KEEL_TEST_DATABASE is `{other}`: use sqlite or postgres"),
    }
}

/// A new database on the PostgreSQL server at `KEEL_TEST_PG_URL`, whichever backend the
/// suite runs on: for tests of what only a shared database does (several hosts following
/// each other). Without the server it fails, never skips.
pub fn postgres_database(purpose: &str) -> String {
    let server = std::env::var("KEEL_TEST_PG_URL")
        .expect("this test needs PostgreSQL: run it with cargo xtask test, or set KEEL_TEST_PG_URL");
    let name = format!("keel_{purpose}_{}", std::process::id()) + &format!("_{:08x}", rand_suffix());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(keel_host::backend::postgres::create_database(&server, &name))
    })
    .join()
    .expect("database thread")
    .expect("create a test database")
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish() as u32
}

/// Reads a whole `connection: close` response: its status and JSON body.
pub async fn read_response(mut stream: tokio::net::TcpStream) -> (u16, Value) {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    let text = String::from_utf8_lossy(&raw);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    // A chunked body: take the JSON between the first chunk size and the terminator.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body.split_once("\r\n").map(|(_, rest)| rest).unwrap_or("").rsplitn(2, "\r\n0\r\n").last().unwrap_or("")
    } else {
        body
    };
    (status, serde_json::from_str(body.trim()).unwrap_or(Value::Null))
}

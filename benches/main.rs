//! The benchmark table. Run with `cargo xtask bench` (release build, plugins built first).
//!
//! (a) instantiate + call of an empty handler, straight through the runtime;
//! (b) requests/s and p99 of a helpdesk "get ticket" over HTTP against a native axum + sqlx
//!     handler doing the same read on the same database, measured in the same run; (b2) the
//!     same with server and clients on separate cores, the ratio that counts;
//! (c) time from process start to ready with the bundled plugins, cold and warm;
//! (d) background work and cross-plugin calls (see `background.rs`);
//! (e) noisy neighbours and the cost of admission control (see `neighbours.rs`);
//! (f) the request path piece by piece (see `path.rs`);
//! (g) queries over a million documents, (h) bulk imports, (i) HR and payroll at 10,000
//!     employees, (j) inventory at a million movements, (k) full-text search at 100,000
//!     cases of five emails each (see their files).
//!
//! Machines are shared and noisy: compare ratios measured in one run, not absolute numbers
//! across runs. `--check` exits non-zero when a row whose target is a ratio (measured against
//! a baseline in the same run) misses it; absolute targets are shown, not enforced.

mod background;
mod departments;
mod imports;
mod inventory;
mod migrations;
mod neighbours;
mod path;
mod pinned;
mod queries;
mod scaleout;
mod search;

use anyhow::{Context, Result, bail};
use keel_host::backend::sqlite::SqliteDocumentStore;
use keel_host::runtime::bindings::exports::keel::platform::handler::Request;
use keel_host::runtime::bindings::keel::platform::types::Caller;
use keel_host::runtime::{CallContext, CallLabels, Invocation, Runtime, RuntimeSettings};
use keel_host::storage::{DocumentStore, Scope, StorageLimits, UnitOfWork};
use keel_host::{Config, Server};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Row {
    name: String,
    value: String,
    target: &'static str,
    /// For rows whose target is a ratio against a baseline of the same run: whether it held.
    /// `None` for information, and for absolute targets a shared machine cannot be held to.
    pass: Option<bool>,
}

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?.to_path_buf();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--native-server") {
        // A child process of section (b2), not a benchmark run.
        let db = PathBuf::from(args.get(i + 1).context("--native-server <keel.db>")?);
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return runtime.block_on(pinned::native_server(&db));
    }
    if let Some(i) = args.iter().position(|a| a == "--native-pg-server") {
        // A child process of section (l).
        let url = args.get(i + 1).context("--native-pg-server <url>")?.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return runtime.block_on(scaleout::native_pg_server(&url));
    }
    let quick = args.iter().any(|a| a == "--quick");
    let check = args.iter().any(|a| a == "--check");
    // `--only a|b|c|d|e|f|g|h|i|j|k|l|m` runs one section (for tuning); the default runs them all.
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let wants = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut rows = Vec::new();
    runtime.block_on(async {
        if wants("a") {
            rows.extend(call_cost(&root, quick).await?);
        }
        if wants("b") {
            rows.extend(http_throughput(&root, quick).await?);
            rows.extend(pinned::http_throughput_pinned(&root, quick).await?);
        }
        if wants("d") {
            rows.extend(background::background(&root, quick).await?);
        }
        if wants("e") {
            rows.extend(neighbours::neighbours(quick).await?);
        }
        if wants("f") {
            rows.extend(path::request_path(&root, quick).await?);
        }
        if wants("g") {
            rows.extend(queries::queries(quick).await?);
        }
        if wants("h") {
            rows.extend(imports::imports(&root, quick).await?);
        }
        if wants("i") {
            rows.extend(departments::departments(&root, quick).await?);
        }
        if wants("j") {
            rows.extend(inventory::inventory(&root, quick).await?);
        }
        if wants("k") {
            rows.extend(search::search(&root, quick).await?);
        }
        if wants("l") {
            rows.extend(scaleout::scale_out(&root, quick).await?);
        }
        if wants("m") {
            rows.extend(migrations::migrations(&root, quick).await?);
        }
        anyhow::Ok(())
    })?;
    drop(runtime);
    if wants("c") {
        rows.extend(startup(&root, quick)?);
    }

    println!("\n| measurement | result | target |\n|---|---|---|");
    for r in &rows {
        let verdict = match r.pass {
            Some(true) => " (met)",
            Some(false) => " (**missed**)",
            None => "",
        };
        println!("| {} | {} | {}{verdict} |", r.name, r.value, r.target);
    }
    if check {
        let checked = rows.iter().filter(|r| r.pass.is_some()).count();
        let missed: Vec<&Row> = rows.iter().filter(|r| r.pass == Some(false)).collect();
        eprintln!("bench --check: {} of {checked} ratio targets met", checked - missed.len());
        if !missed.is_empty() {
            for r in &missed {
                eprintln!("missed: {}: {} (target {})", r.name, r.value, r.target);
            }
            std::process::exit(1);
        }
    }
    Ok(())
}

fn artifact(root: &Path, name: &str) -> Result<Vec<u8>> {
    let path = root.join("target/keel-plugins").join(format!("{name}.wasm"));
    std::fs::read(&path).with_context(|| format!("{} missing: run `cargo xtask bench`", path.display()))
}

/// A plugin's background runs (jobs, task chunks, deliveries) so far, from the host's
/// metrics: how many, and the seconds spent in them from claim to commit.
pub(crate) async fn background_runs(http: &reqwest::Client, base: &str, plugin: &str) -> Result<(f64, f64)> {
    let metrics = http.get(format!("{base}/metrics")).send().await?.text().await?;
    let label = format!(r#"plugin="{plugin}""#);
    let read = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&label))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    Ok((read("keel_background_run_duration_seconds_count"), read("keel_background_run_duration_seconds_sum")))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// A plugin loaded straight into a runtime, without the HTTP server.
struct Bench {
    runtime: Runtime,
    store: Arc<dyn DocumentStore>,
    _dir: tempfile::TempDir,
}

struct BenchPlugin {
    id: &'static str,
    pre: keel_host::runtime::PluginPre<keel_host::runtime::HostState>,
    collections: Arc<BTreeMap<String, keel_host::storage::index::CollectionIndexes>>,
    memory_cap: usize,
}

const POLICY: keel_host::manifest::LimitPolicy = keel_host::manifest::LimitPolicy {
    max_memory_mb: 256,
    max_timeout_ms: 30_000,
    default_memory_mb: 64,
    default_timeout_ms: 5_000,
};

impl Bench {
    async fn new() -> Result<Bench> {
        let dir = tempfile::tempdir()?;
        let pool = keel_host::backend::sqlite::open_pool(&dir.path().join("bench.db")).await?;
        let runtime =
            Runtime::new(&RuntimeSettings::new(16, 256 << 20, None, 0), Arc::new(keel_host::clock::Clock::default()))?;
        Ok(Bench { runtime, store: Arc::new(SqliteDocumentStore::new(pool)), _dir: dir })
    }

    fn load(&self, root: &Path, artifact_name: &str, id: &'static str) -> Result<BenchPlugin> {
        let bytes = artifact(root, artifact_name)?;
        let manifest = keel_host::manifest::Manifest::parse(&keel_host::artifact::manifest_text(&bytes)?, &POLICY)?;
        let prepared = self.runtime.prepare(id, &bytes, &manifest)?;
        Ok(BenchPlugin {
            id,
            pre: prepared.pre,
            collections: Arc::new(manifest.collection_indexes()),
            memory_cap: manifest.memory_bytes(&POLICY),
        })
    }

    /// One call; commits its writes like the server does. Returns the latency of the call.
    async fn call(
        &self,
        plugin: &BenchPlugin,
        method: &str,
        route: &str,
        path: &str,
        params: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Duration)> {
        let invocation = Invocation {
            caller: Caller { tenant: "t".into(), user_id: "u".into(), display_name: "U".into(), permissions: vec![] },
            request: Request {
                request_id: "r".into(),
                method: method.into(),
                path: path.into(),
                route: route.into(),
                params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                query: vec![],
                headers: vec![],
                body: body.to_vec(),
            },
            context: CallContext {
                uow: UnitOfWork::new(
                    self.store.clone(),
                    Scope { tenant: "t".into(), plugin: plugin.id.into() },
                    plugin.collections.clone(),
                    StorageLimits::default(),
                ),
                labels: Arc::new(CallLabels {
                    plugin: plugin.id.into(),
                    version: "0".into(),
                    tenant: "t".into(),
                    request_id: "r".into(),
                    permissions: vec![],
                    lane: keel_host::runtime::Lane::Request,
                    chain: 0,
                }),
                config: Arc::new(BTreeMap::new()),
                memory_cap: plugin.memory_cap,
                timeout: Duration::from_secs(1),
                interop: None,
                depth: 0,
                task: None,
            },
        };
        let started = Instant::now();
        let outcome = self.runtime.call(&plugin.pre, invocation).await?;
        let elapsed = started.elapsed();
        let audit = keel_host::storage::WriteAudit {
            actor: "tok_bench".into(),
            actor_name: "bench".into(),
            request_id: "r".into(),
        };
        outcome.uow.commit(0, &audit).await?;
        Ok((outcome.response.status, elapsed))
    }
}

async fn sample<F, Fut>(warmup: usize, n: usize, mut once: F) -> Result<(Duration, Duration)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Duration>>,
{
    let mut samples = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let elapsed = once().await?;
        if i >= warmup {
            samples.push(elapsed);
        }
    }
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

/// (a) The cost of one fresh instance per request, with nothing else in the way; and, for
/// scale, a helpdesk "get ticket" through the runtime (instance + storage read + JSON).
async fn call_cost(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let bench = Bench::new().await?;
    let hostile = bench.load(root, "fixtures/hostile", "hostile")?;
    let helpdesk = bench.load(root, "bundled/helpdesk", "helpdesk")?;
    let (warmup, n) = if quick { (200, 2_000) } else { (2_000, 30_000) };

    let (median, p99) = sample(warmup, n, || async {
        let (status, elapsed) = bench.call(&hostile, "GET", "/noop", "/noop", &[], b"").await?;
        if status != 204 {
            bail!("the empty handler answered {status}");
        }
        Ok(elapsed)
    })
    .await?;
    eprintln!("(a) {n} calls: median {}, p99 {}", us(median), us(p99));

    let (status, _) = bench
        .call(&helpdesk, "POST", "/tickets", "/tickets", &[], br#"{"title":"Benchmark ticket","priority":"P2"}"#)
        .await?;
    if status != 201 {
        bail!("creating the benchmark ticket answered {status}");
    }
    let (get_median, get_p99) = sample(warmup / 4, n / 4, || async {
        let (status, elapsed) =
            bench.call(&helpdesk, "GET", "/tickets/{number}", "/tickets/1", &[("number", "1")], b"").await?;
        if status != 200 {
            bail!("get ticket answered {status}");
        }
        Ok(elapsed)
    })
    .await?;
    let python = python_cost(root, quick).await?;
    Ok(vec![
        Row {
            name: "(a) instantiate + call, empty handler, median".into(),
            value: us(median),
            target: "≤ 15 µs",
            pass: None,
        },
        Row {
            name: "(a) instantiate + call, empty handler, p99".into(),
            value: us(p99),
            target: "≤ 30 µs",
            pass: None,
        },
        Row {
            name: "(a') helpdesk get ticket through the runtime (no HTTP), median / p99".into(),
            value: format!("{} / {}", us(get_median), us(get_p99)),
            target: "",
            pass: None,
        },
    ]
    .into_iter()
    .chain(python)
    .collect())
}

/// (a'') The Python example (componentize-py, CPython in the component): compile, load from
/// the compile cache, and a "get note" through the runtime, beside the Rust rows above.
async fn python_cost(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let bytes = artifact(root, "examples/python-notes")?;
    let manifest = keel_host::manifest::Manifest::parse(&keel_host::artifact::manifest_text(&bytes)?, &POLICY)?;
    let cache = tempfile::tempdir()?;
    let settings = RuntimeSettings::new(16, 256 << 20, Some(cache.path().to_path_buf()), 0);
    let digest = keel_host::artifact::digest(&bytes);
    let cold = Runtime::new(&settings, Arc::new(keel_host::clock::Clock::default()))?;
    let started = Instant::now();
    cold.prepare(&digest, &bytes, &manifest)?;
    let compile = started.elapsed();
    drop(cold);
    let warm = Runtime::new(&settings, Arc::new(keel_host::clock::Clock::default()))?;
    let started = Instant::now();
    let prepared = warm.prepare(&digest, &bytes, &manifest)?;
    let load = started.elapsed();
    if !prepared.from_cache {
        bail!("the Python component was not loaded from the compile cache");
    }

    let bench = Bench::new().await?;
    let plugin = bench.load(root, "examples/python-notes", "python-notes")?;
    let (status, _) =
        bench.call(&plugin, "PUT", "/notes/{key}", "/notes/k", &[("key", "k")], br#"{"text":"bench"}"#).await?;
    if status != 200 {
        bail!("putting the benchmark note answered {status}");
    }
    let (warmup, n) = if quick { (20, 200) } else { (100, 2_000) };
    let (median, p99) = sample(warmup, n, || async {
        let (status, elapsed) = bench.call(&plugin, "GET", "/notes/{key}", "/notes/k", &[("key", "k")], b"").await?;
        if status != 200 {
            bail!("get note answered {status}");
        }
        Ok(elapsed)
    })
    .await?;
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    Ok(vec![
        Row {
            name: "(a'') python-notes get note through the runtime (fresh CPython instance), median / p99".into(),
            value: format!("{} / {}", ms(median), ms(p99)),
            target: "",
            pass: None,
        },
        Row {
            name: format!(
                "(a'') python-notes compile / load compiled from cache ({} MiB component)",
                bytes.len() >> 20
            ),
            value: format!("{:.1} s / {}", compile.as_secs_f64(), ms(load)),
            target: "",
            pass: None,
        },
    ])
}

pub(crate) struct Load {
    pub(crate) rps: f64,
    pub(crate) p99: Duration,
}

/// Closed-loop load: `clients` tasks each send one request at a time for `duration`.
pub(crate) async fn load(url: &str, token: Option<&str>, clients: usize, duration: Duration) -> Result<Load> {
    load_expecting(url, token, clients, duration, 200).await
}

/// [`load`] where every answer must have `status`.
pub(crate) async fn load_expecting(
    url: &str,
    token: Option<&str>,
    clients: usize,
    duration: Duration,
    status: u16,
) -> Result<Load> {
    load_across(&[url.to_owned()], token, clients, duration, status).await
}

/// [`load_expecting`] over several hosts: client `i` asks `urls[i % urls.len()]`.
pub(crate) async fn load_across(
    urls: &[String],
    token: Option<&str>,
    clients: usize,
    duration: Duration,
    status: u16,
) -> Result<Load> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (http, url, token) = (http.clone(), urls[i % urls.len()].clone(), token.map(str::to_owned));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let mut req = http.get(&url);
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let started = Instant::now();
                let response = req.send().await?;
                let ok = response.status().as_u16() == status;
                let _ = response.bytes().await?;
                if !ok {
                    bail!("{url} failed");
                }
                latencies.push(started.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    Ok(Load { rps: all.len() as f64 / duration.as_secs_f64(), p99: percentile(&all, 0.99) })
}

/// Installs the helpdesk on the server at `base` and files ticket 1, the one (b) reads.
pub(crate) async fn seed_helpdesk(root: &Path, base: &str, token: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let installed = http
        .post(format!("{base}/v1/admin/plugins"))
        .bearer_auth(token)
        .body(artifact(root, "bundled/helpdesk")?)
        .send()
        .await?;
    if !installed.status().is_success() {
        bail!("install failed: {}", installed.text().await?);
    }
    let created = http
        .post(format!("{base}/v1/plugins/helpdesk/tickets"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "title": "Benchmark ticket", "description": "read me", "priority": "P2" }))
        .send()
        .await?;
    if !created.status().is_success() {
        bail!("create failed: {}", created.text().await?);
    }
    Ok(())
}

/// The native baseline of (b) and (b2): `GET /tickets/{number}` reading the same document
/// row with sqlx and answering the same JSON.
pub(crate) fn native_router(pool: sqlx::SqlitePool) -> axum::Router {
    axum::Router::new()
        .route(
            "/tickets/{number}",
            axum::routing::get(
                |axum::extract::State(pool): axum::extract::State<sqlx::SqlitePool>,
                 axum::extract::Path(number): axum::extract::Path<u64>| async move {
                    let key = format!("{number:012}");
                    let row: Option<(i64, String)> = sqlx::query_as(
                        "SELECT version, body FROM documents WHERE tenant_id = 'default' AND plugin_id = 'helpdesk' \
                         AND collection = 'tickets' AND key = ?",
                    )
                    .bind(key)
                    .fetch_optional(&pool)
                    .await
                    .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?;
                    let (version, body) = row.ok_or(axum::http::StatusCode::NOT_FOUND)?;
                    let mut value: serde_json::Value =
                        serde_json::from_str(&body).map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?;
                    value["version"] = version.into();
                    Ok::<_, axum::http::StatusCode>(axum::Json(value))
                },
            ),
        )
        .with_state(pool)
}

/// (b) The helpdesk over HTTP against a native handler reading the same row.
async fn http_throughput(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let mut config = Config { data_dir: dir.path().into(), listen: "127.0.0.1:0".parse()?, ..Config::default() };
    // One token drives the whole load: measure the request path, not the rate limiter.
    config.limits.rate_limit_per_second = 0;
    let server = Server::start(config).await?;
    let token = server.bootstrap_token.clone().context("token")?;
    let base = format!("http://{}", server.addr);
    seed_helpdesk(root, &base, &token).await?;

    // The native baseline: the same read of the same document in the same database file.
    let pool = keel_host::backend::sqlite::open_pool(&dir.path().join("keel.db")).await?;
    let native = native_router(pool);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let native_url = format!("http://{}/tickets/1", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, native).await });
    let keel_url = format!("{base}/v1/plugins/helpdesk/tickets/1");

    let (clients, duration, rounds) =
        if quick { (4, Duration::from_millis(500), 1) } else { (8, Duration::from_secs(3), 3) };
    let _ = load(&keel_url, Some(&token), clients, Duration::from_millis(300)).await?;
    let _ = load(&native_url, None, clients, Duration::from_millis(300)).await?;
    // Interleave rounds so drift in machine load hits both sides alike; keep each side's best.
    let (mut keel, mut base_line): (Option<Load>, Option<Load>) = (None, None);
    for _ in 0..rounds {
        let n = load(&native_url, None, clients, duration).await?;
        let k = load(&keel_url, Some(&token), clients, duration).await?;
        eprintln!("(b) round: native {:.0} req/s p99 {:?}; keel {:.0} req/s p99 {:?}", n.rps, n.p99, k.rps, k.p99);
        if base_line.as_ref().is_none_or(|b| n.rps > b.rps) {
            base_line = Some(n);
        }
        if keel.as_ref().is_none_or(|b| k.rps > b.rps) {
            keel = Some(k);
        }
    }
    let (keel, native) = (keel.context("no rounds")?, base_line.context("no rounds")?);
    server.shutdown().await;
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    Ok(vec![
        Row {
            name: format!("(b) helpdesk get ticket over HTTP, {clients} clients"),
            value: format!("{:.0} req/s, p99 {}", keel.rps, ms(keel.p99)),
            target: "",
            pass: None,
        },
        Row {
            name: "(b) native axum + sqlx, same read, same database".into(),
            value: format!("{:.0} req/s, p99 {}", native.rps, ms(native.p99)),
            target: "",
            pass: None,
        },
        Row {
            // For information: the clients share the server's two cores, which hides server
            // cost. (b2) is the figure that counts.
            name: "(b) ratio keel / native (req/s)".into(),
            value: format!("{:.2}", keel.rps / native.rps),
            target: "",
            pass: None,
        },
    ])
}

/// (c) Process start to ready: the `keel` binary prints its address once it serves.
fn startup(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let bin = std::env::var_os("KEEL_BIN").map(PathBuf::from).unwrap_or_else(|| root.join("target/release/keel"));
    if !bin.exists() {
        bail!("{} missing: run `cargo xtask bench`", bin.display());
    }
    let bundled = root.join("target/keel-plugins/bundled");
    let time_to_ready = |data: &Path| -> Result<Duration> {
        let started = Instant::now();
        let mut child = std::process::Command::new(&bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .arg("--plugins-dir")
            .arg(&bundled)
            .env("KEEL_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let elapsed = started.elapsed();
        child.kill()?;
        child.wait()?;
        if !line.contains("listening") {
            bail!("unexpected first line from keel: {line:?}");
        }
        Ok(elapsed)
    };
    let runs = if quick { 1 } else { 3 };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir()?;
        cold.push(time_to_ready(dir.path())?);
        for _ in 0..2 {
            warm.push(time_to_ready(dir.path())?);
        }
    }
    cold.sort();
    warm.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    eprintln!("(c) cold {cold:?}, warm {warm:?}");
    Ok(vec![
        Row {
            name: "(c) start to ready, bundled plugins, cold (empty compile cache)".into(),
            value: ms(percentile(&cold, 0.5)),
            target: "",
            pass: None,
        },
        Row {
            name: "(c) start to ready, bundled plugins, warm".into(),
            value: ms(percentile(&warm, 0.5)),
            target: "≤ 500 ms",
            pass: None,
        },
    ])
}

//! (l) Keel on PostgreSQL, one host and two, next to SQLite and to native baselines on the
//! same PostgreSQL in the same run:
//! - a plugin route (the helpdesk's get ticket) in req/s: `keel` processes on SQLite, on
//!   PostgreSQL, and two on one PostgreSQL database sharing the clients, against a native
//!   axum + sqlx process answering the same read from the same PostgreSQL row;
//! - jobs/s: 2,000 relay jobs (each a plugin call that reads and writes a document of its
//!   own and commits with the job's completion) drained by one host or two, against the
//!   queue alone on the same PostgreSQL (claim, the same write, complete; no plugin).
//!
//! Every host and the native server is a process of its own (release build), and they all
//! share this machine's cores with the load generator: read the ratios, not the rates.

use super::{Load, Row};
use anyhow::{Context, Result, bail};
use keel_host::jobs::store::{ClaimPolicy, JobStore};
use keel_host::jobs::{Background, JobKind, JobStatus, NewJob};
use keel_host::storage::{Condition, DocumentStore, Scope, Write, WriteAudit, WriteOp};
use keel_tests::cluster::{KeelProcess, Postgres};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;
const WORKERS: usize = 4;

fn host_config(database: Option<&str>) -> String {
    let url = database.map(|u| format!("url = \"{u}\"\n")).unwrap_or_default();
    format!(
        "allow-clock-control = true\n\n[database]\n{url}\n[limits]\nrate-limit-per-second = 0\n\n\
         [jobs]\nconcurrency = {WORKERS}\ntenant-concurrency = {WORKERS}\n"
    )
}

/// The native baseline as a process: `keel-bench --native-pg-server <url>`, answering
/// `GET /tickets/{number}` from the helpdesk's document row, as section (b)'s does on SQLite.
pub async fn native_pg_server(url: &str) -> Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(url).await?;
    let app = axum::Router::new()
        .route(
            "/tickets/{number}",
            axum::routing::get(
                |axum::extract::State(pool): axum::extract::State<sqlx::PgPool>,
                 axum::extract::Path(number): axum::extract::Path<u64>| async move {
                    let key = format!("{number:012}");
                    let row: Option<(i64, String)> = sqlx::query_as(
                        "SELECT version, body FROM documents WHERE tenant_id = 'default' AND plugin_id = 'helpdesk' \
                         AND collection = 'tickets' AND key = $1",
                    )
                    .bind(key)
                    .fetch_optional(&pool)
                    .await
                    .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?;
                    let (version, body) = row.ok_or(axum::http::StatusCode::NOT_FOUND)?;
                    let mut value: Value =
                        serde_json::from_str(&body).map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?;
                    value["version"] = version.into();
                    Ok::<_, axum::http::StatusCode>(axum::Json(value))
                },
            ),
        )
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("native listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

struct Native(Child);

impl Drop for Native {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_native(url: &str) -> Result<(Native, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--native-pg-server", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().context("stdout")?));
    let line = lines.next().context("the native server printed nothing")??;
    let address = line.strip_prefix("native listening on ").context("native address")?.trim().to_owned();
    std::thread::spawn(move || for _ in lines {});
    Ok((Native(child), format!("http://{address}")))
}

/// Closed-loop load over several hosts: client `i` asks `urls[i % urls.len()]`.
async fn load(urls: &[String], token: Option<&str>, duration: Duration) -> Result<Load> {
    super::load_across(urls, token, CLIENTS, duration, 200).await
}

struct Admin {
    http: reqwest::Client,
    token: String,
}

impl Admin {
    async fn send(&self, method: reqwest::Method, url: String, body: Option<Value>) -> Result<Value> {
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{url}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn install(&self, root: &Path, base: &str, name: &str) -> Result<()> {
        let response = self
            .http
            .post(format!("{base}/v1/admin/plugins"))
            .bearer_auth(&self.token)
            .header("content-type", "application/wasm")
            .body(super::artifact(root, name)?)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("installing {name}: {}", response.text().await?);
        }
        Ok(())
    }

    /// Relay job runs finished so far on `hosts`, from their metrics.
    async fn runs(&self, hosts: &[String]) -> Result<f64> {
        let mut total = 0.0;
        for host in hosts {
            total += super::background_runs(&self.http, host, "relay").await?.0;
        }
        Ok(total)
    }
}

/// One host's (or a pair's) measurements.
struct Measured {
    reads: Load,
    jobs_per_second: f64,
}

/// Reads ticket 1 through `hosts`, then drains `n` relay jobs enqueued across them.
async fn measure(admin: &Admin, hosts: &[String], n: usize, read_for: Duration) -> Result<Measured> {
    let urls: Vec<String> = hosts.iter().map(|h| format!("{h}/v1/plugins/helpdesk/tickets/1")).collect();
    let _ = load(&urls, Some(&admin.token), Duration::from_millis(300)).await?;
    let reads = load(&urls, Some(&admin.token), read_for).await?;

    // Jobs: enqueue them an hour past the latest host clock, then move every host's clock
    // to that moment (each host's clock has moved by its own earlier runs) and time the
    // drain, so enqueueing is not measured.
    let mut clocks = Vec::new();
    for host in hosts {
        let url = format!("{host}/v1/admin/clock/advance");
        let now = admin.send(reqwest::Method::POST, url, Some(json!({ "ms": 0 }))).await?;
        clocks.push(now["now_ms"].as_u64().context("clock")?);
    }
    let due = clocks.iter().max().context("hosts")? + 3_600_000;
    let mut before = Vec::new();
    for host in hosts {
        before.push(admin.runs(std::slice::from_ref(host)).await?);
    }
    for i in 0..n {
        let body = json!({ "name": "count", "run_at": due });
        let url = format!("{}/v1/plugins/relay/jobs", hosts[i % hosts.len()]);
        admin.send(reqwest::Method::POST, url, Some(body)).await?;
    }
    for (host, now) in hosts.iter().zip(&clocks) {
        let url = format!("{host}/v1/admin/clock/advance");
        admin.send(reqwest::Method::POST, url, Some(json!({ "ms": due - now }))).await?;
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    // Polled every 50 ms: scraping metrics costs the hosts some of the cores they drain with.
    while admin.runs(hosts).await? < before.iter().sum::<f64>() + n as f64 {
        if Instant::now() > deadline {
            bail!("the jobs did not finish in time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let mut shares = Vec::new();
    for (host, before) in hosts.iter().zip(&before) {
        shares.push(admin.runs(std::slice::from_ref(host)).await? - before);
    }
    if shares.iter().any(|s| *s == 0.0) {
        bail!("a host ran none of the jobs: {shares:?}");
    }
    eprintln!("(l) {n} jobs over {} host(s), runs per host {shares:?}", hosts.len());
    Ok(Measured { reads, jobs_per_second: n as f64 / elapsed.as_secs_f64() })
}

/// The queue alone on PostgreSQL: claim, write the job's document, complete; no plugin.
async fn native_jobs_per_second(url: &str, n: usize) -> Result<f64> {
    let pool = keel_host::backend::postgres::open_pool(url, &Default::default()).await?;
    let jobs: JobStore = Arc::new(keel_host::backend::postgres::PgJobQueue::new(pool.clone()));
    let store: Arc<dyn DocumentStore> =
        Arc::new(keel_host::backend::postgres::PgDocumentStore::new(pool, Default::default()));
    let base = jobs.count(JobStatus::Done).await?;
    for i in 0..n {
        let job = NewJob {
            id: format!("job_native{i:08}_{base}"),
            plugin: "relay".into(),
            kind: JobKind::Job,
            name: "count".into(),
            payload: "{}".into(),
            idempotency_key: None,
            event_id: None,
            run_at: 0,
            max_attempts: 3,
            chain: 0,
            task: None,
        };
        jobs.enqueue("default", &job, 0).await?;
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (jobs, store) = (jobs.clone(), store.clone());
        workers.push(tokio::spawn(async move {
            let owner = format!("native-{w}");
            loop {
                let policy = ClaimPolicy { limit: 8, tenant_room: 8, ..ClaimPolicy::default() };
                let claimed = jobs.claim(&owner, 1, 60_000, &policy).await?;
                if claimed.is_empty() {
                    return anyhow::Ok(());
                }
                for c in claimed {
                    let scope = Scope { tenant: c.tenant.clone(), plugin: c.plugin.clone() };
                    let write = Write {
                        collection: "counts".into(),
                        key: c.lease.job_id.clone(),
                        condition: Condition::Any,
                        version: 1,
                        op: WriteOp::Put { body: r#"{"runs":1}"#.into(), index: vec![], search: None },
                    };
                    let background = Background { finishes: Some(c.lease.clone()), ..Background::default() };
                    let audit = WriteAudit {
                        actor: "bench".into(),
                        actor_name: "bench".into(),
                        request_id: c.lease.job_id.clone(),
                    };
                    store.commit_with(&scope, &[write], &[], &background, 1, &audit).await?;
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    if jobs.count(JobStatus::Done).await? != base + n as i64 {
        bail!("the native worker did not finish every job");
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

pub async fn scale_out(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let (n, read_for, rounds) =
        if quick { (200, Duration::from_millis(500), 1) } else { (2_000, Duration::from_secs(3), 2) };
    let postgres = Postgres::start();
    let pg_keel = postgres.database("keel_bench");
    let pg_native_jobs = postgres.database("keel_bench_native");

    let sqlite = KeelProcess::start_quiet(&host_config(None));
    let sqlite_admin = Admin { http: reqwest::Client::new(), token: sqlite.bootstrap_token.clone().context("token")? };
    let first = KeelProcess::start_quiet(&host_config(Some(&pg_keel)));
    let admin = Admin { http: reqwest::Client::new(), token: first.bootstrap_token.clone().context("token")? };
    for (who, base) in [(&sqlite_admin, &sqlite.base), (&admin, &first.base)] {
        who.install(root, base, "bundled/helpdesk").await?;
        who.install(root, base, "fixtures/relay").await?;
        who.send(
            reqwest::Method::POST,
            format!("{base}/v1/plugins/helpdesk/tickets"),
            Some(json!({ "title": "Benchmark ticket" })),
        )
        .await?;
    }
    let second = KeelProcess::start_quiet(&host_config(Some(&pg_keel)));
    let (_native, native_base) = start_native(&pg_keel)?;
    let native_urls = [format!("{native_base}/tickets/1")];
    let pair = [first.base.clone(), second.base.clone()];

    let mut best: [Option<(f64, Duration, f64)>; 3] = [None, None, None];
    let mut native_reads: Option<Load> = None;
    let mut native_jobs = 0f64;
    for round in 0..rounds {
        let runs = [
            measure(&sqlite_admin, std::slice::from_ref(&sqlite.base), n, read_for).await?,
            measure(&admin, std::slice::from_ref(&first.base), n, read_for).await?,
            measure(&admin, &pair, n, read_for).await?,
        ];
        let native = load(&native_urls, None, read_for).await?;
        let native_rate = native_jobs_per_second(&pg_native_jobs, n).await?;
        eprintln!(
            "(l) round {round}: reads sqlite {:.0}, pg {:.0}, pg×2 {:.0}, native pg {:.0} req/s; jobs sqlite {:.0}, pg {:.0}, pg×2 {:.0}, queue alone {native_rate:.0}/s",
            runs[0].reads.rps,
            runs[1].reads.rps,
            runs[2].reads.rps,
            native.rps,
            runs[0].jobs_per_second,
            runs[1].jobs_per_second,
            runs[2].jobs_per_second
        );
        for (slot, m) in best.iter_mut().zip(&runs) {
            let (rps, p99, jobs) = slot.get_or_insert((0.0, Duration::ZERO, 0.0));
            if m.reads.rps > *rps {
                (*rps, *p99) = (m.reads.rps, m.reads.p99);
            }
            *jobs = jobs.max(m.jobs_per_second);
        }
        if native_reads.as_ref().is_none_or(|b| native.rps > b.rps) {
            native_reads = Some(native);
        }
        native_jobs = native_jobs.max(native_rate);
    }
    let [Some(sqlite_best), Some(pg), Some(pg2)] = best else { bail!("no rounds") };
    let native = native_reads.context("no rounds")?;
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    let row = |name: String, value: String| Row { name, value, target: "", pass: None };
    Ok(vec![
        row(
            format!("(l) helpdesk get ticket, keel on SQLite, {CLIENTS} clients"),
            format!("{:.0} req/s, p99 {}", sqlite_best.0, ms(sqlite_best.1)),
        ),
        row("(l) the same, keel on PostgreSQL, one host".into(), format!("{:.0} req/s, p99 {}", pg.0, ms(pg.1))),
        row(
            "(l) the same, two keel hosts on one PostgreSQL database".into(),
            format!("{:.0} req/s, p99 {}", pg2.0, ms(pg2.1)),
        ),
        row(
            "(l) native axum + sqlx process, same row on the same PostgreSQL".into(),
            format!("{:.0} req/s, p99 {}", native.rps, ms(native.p99)),
        ),
        row(
            "(l) ratio keel on PostgreSQL / native (req/s): one host, two hosts".into(),
            format!("{:.2}, {:.2}", pg.0 / native.rps, pg2.0 / native.rps),
        ),
        row(
            format!("(l) {n} relay jobs: keel on SQLite / PostgreSQL one host / two hosts"),
            format!("{:.0} / {:.0} / {:.0} jobs/s", sqlite_best.2, pg.2, pg2.2),
        ),
        row(
            "(l) the queue alone on the same PostgreSQL (claim, write, complete; no plugin)".into(),
            format!("{native_jobs:.0} jobs/s"),
        ),
        row(
            "(l) ratio keel on PostgreSQL / queue alone (jobs/s): one host, two hosts".into(),
            format!("{:.2}, {:.2}", pg.2 / native_jobs, pg2.2 / native_jobs),
        ),
    ])
}

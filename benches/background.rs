//! (d) Background work and calls between plugins:
//! - jobs/s through the durable queue on SQLite, each job a plugin call that writes two
//!   documents and commits them with the job's completion, against a native worker doing the
//!   same claim, writes and completion with no plugin;
//! - event fan-out: from the publishing call's commit to the last subscriber's completed
//!   delivery (two subscribers);
//! - a department-interface call from one plugin to another against the same read done by
//!   the provider directly, both over HTTP.

use super::{Row, artifact, percentile};
use anyhow::{Context, Result, bail};
use keel_host::backend::sqlite::SqliteDocumentStore;
use keel_host::jobs::JobStatus;
use keel_host::jobs::store::{ClaimPolicy, JobStore};
use keel_host::jobs::{Background, JobKind, NewJob};
use keel_host::storage::{Condition, DocumentStore, Scope, Write, WriteAudit, WriteOp};
use keel_host::{Config, Server};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 4;

fn job(i: usize, now: i64) -> NewJob {
    NewJob {
        id: format!("job_bench{i:08}"),
        plugin: "relay".into(),
        kind: JobKind::Job,
        name: "record".into(),
        payload: format!("{{\"n\":{i}}}"),
        idempotency_key: None,
        event_id: None,
        run_at: now,
        max_attempts: 3,
        chain: 0,
        task: None,
    }
}

async fn wait_done(jobs: &JobStore, n: i64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while jobs.count(JobStatus::Done).await? < n {
        if jobs.count(JobStatus::Dead).await? > 0 {
            bail!("a benchmark job was dead-lettered");
        }
        if Instant::now() > deadline {
            bail!("jobs did not finish in time");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// The queue alone: claim, write the same two documents, complete; no plugin.
async fn native_jobs_per_second(n: usize) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let pool = keel_host::backend::sqlite::open_pool(&dir.path().join("native.db")).await?;
    let jobs: JobStore = Arc::new(keel_host::backend::sqlite::SqliteJobQueue::new(pool.clone()));
    let store: Arc<dyn DocumentStore> = Arc::new(SqliteDocumentStore::new(pool));
    for i in 0..n {
        jobs.enqueue("default", &job(i, 0), 0).await?;
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
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
                    let put = |collection: &str, body: String| Write {
                        collection: collection.into(),
                        key: c.lease.job_id.clone(),
                        condition: Condition::Absent,
                        version: 1,
                        op: WriteOp::Put { body, index: vec![], search: None },
                    };
                    let writes = [put("processed", "{}".into()), put("applied", c.payload.clone())];
                    let background = Background { finishes: Some(c.lease.clone()), ..Background::default() };
                    let audit = WriteAudit {
                        actor: "bench".into(),
                        actor_name: "bench".into(),
                        request_id: c.lease.job_id.clone(),
                    };
                    store.commit_with(&scope, &writes, &[], &background, 1, &audit).await?;
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    if jobs.count(JobStatus::Done).await? != n as i64 {
        bail!("the native worker did not finish every job");
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

struct Keel {
    server: Server,
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Keel {
    async fn install(&self, root: &Path, name: &str) -> Result<()> {
        let response = self
            .http
            .post(format!("{}/v1/admin/plugins", self.base))
            .bearer_auth(&self.token)
            .body(artifact(root, name)?)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("installing {name}: {}", response.text().await?);
        }
        Ok(())
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{path}: {status} {body}");
        }
        Ok(body)
    }
}

pub async fn background(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let mut config = Config { data_dir: dir.path().into(), listen: "127.0.0.1:0".parse()?, ..Config::default() };
    config.limits.rate_limit_per_second = 0;
    config.jobs.concurrency = CONCURRENCY;
    // One tenant against a native worker with as many tasks: the queue's mechanics, not the
    // slot kept for other tenants by default.
    config.jobs.tenant_concurrency = Some(CONCURRENCY);
    let server = Server::start(config).await?;
    // The bench reads outcomes from the database file itself, beside the server.
    let db = keel_host::backend::sqlite::open_pool(&dir.path().join("keel.db")).await?;
    let keel = Keel {
        base: format!("http://{}", server.addr),
        token: server.bootstrap_token.clone().context("token")?,
        http: reqwest::Client::new(),
        server,
    };
    for plugin in ["fixtures/relay", "fixtures/listener", "fixtures/directory", "fixtures/roster"] {
        keel.install(root, plugin).await?;
    }

    // Jobs/s: fill the queue, then let the worker drain it. Rounds alternate with the native
    // worker so drift in machine load hits both alike; each side keeps its best.
    let n = if quick { 300 } else { 2_000 };
    let rounds = if quick { 1 } else { 3 };
    let jobs = keel.server.state.jobs.clone();
    let (mut keel_rate, mut native_rate) = (0f64, 0f64);
    for round in 0..rounds {
        let now = keel.server.state.clock.now_ms();
        for i in 0..n {
            jobs.enqueue("default", &job(round * n + i, now + 3_600_000), now).await?;
        }
        keel.server.state.clock.advance(3_600_000);
        let started = Instant::now();
        keel.server.state.jobs_wake.notify_one();
        wait_done(&jobs, ((round + 1) * n) as i64).await?;
        let rate = n as f64 / started.elapsed().as_secs_f64();
        let native = native_jobs_per_second(n).await?;
        eprintln!("(d) round {round}: {n} jobs, keel {rate:.0}/s, native {native:.0}/s");
        keel_rate = keel_rate.max(rate);
        native_rate = native_rate.max(native);
    }

    // Event fan-out: one event at a time, to relay and listener.
    let events = if quick { 30 } else { 200 };
    let mut latencies = Vec::with_capacity(events);
    for i in 0..events {
        let published = keel
            .send(reqwest::Method::POST, "/v1/plugins/relay/publish", Some(json!({ "payload": { "n": i } })))
            .await?;
        let event_id = published["id"].as_str().context("event id")?.to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Timestamps from the database (host clock, ms): polling often enough for a finer
        // clock would itself slow the worker down on two cores.
        loop {
            let (done, finished, published_at): (i64, Option<i64>, i64) = sqlx::query_as(
                "SELECT COUNT(*), MAX(j.finished_at), e.published_at FROM jobs j JOIN events e ON e.id = j.event_id \
                 WHERE j.event_id = ? AND j.status = 'done'",
            )
            .bind(&event_id)
            .fetch_one(&db)
            .await?;
            if done == 2 {
                let ms = finished.unwrap_or(published_at).saturating_sub(published_at);
                latencies.push(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
                break;
            }
            if Instant::now() > deadline {
                bail!("event {event_id} was not delivered");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    latencies.sort();
    let (fan_median, fan_p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));

    // A call through keel:hr/directory against the provider's own direct read.
    keel.send(
        reqwest::Method::PUT,
        "/v1/plugins/directory/employees/e7",
        Some(json!({ "name": "Ada", "email": "ada@example.com", "department": "eng", "title": "Analyst", "start_date": "2026-01-05" })),
    )
    .await?;
    // In process, through the whole router (auth, routing, dispatch, commit) but without TCP,
    // whose cost on two shared cores would drown the difference.
    let calls = if quick { 500 } else { 5_000 };
    let router = keel_host::api::router(keel.server.state.clone());
    let time = async |path: &str| -> Result<Duration> {
        let mut samples = Vec::with_capacity(calls);
        for i in 0..calls + calls / 10 {
            let request = axum::http::Request::get(path)
                .header("authorization", format!("Bearer {}", keel.token))
                .body(axum::body::Body::empty())?;
            let started = Instant::now();
            let response = tower::ServiceExt::oneshot(router.clone(), request).await?;
            let status = response.status();
            let _ = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
            if !status.is_success() {
                bail!("{path}: {status}");
            }
            if i >= calls / 10 {
                samples.push(started.elapsed());
            }
        }
        samples.sort();
        Ok(percentile(&samples, 0.5))
    };
    // Interleaved, best of three each: drift in machine load hits both alike.
    let (mut direct, mut linked) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        direct = direct.min(time("/v1/plugins/directory/employees/e7").await?);
        linked = linked.min(time("/v1/plugins/roster/employees/e7").await?);
    }
    keel.server.shutdown().await;

    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
    Ok(vec![
        Row {
            name: format!("(d) jobs through the SQLite queue, {CONCURRENCY} workers, 2 writes each"),
            value: format!("{keel_rate:.0} jobs/s"),
            target: "",
            pass: None,
        },
        Row {
            name: "(d) native worker, same claim + writes + completion".into(),
            value: format!("{native_rate:.0} jobs/s"),
            target: "",
            pass: None,
        },
        Row {
            name: "(d) ratio keel / native (jobs/s)".into(),
            value: format!("{:.2}", keel_rate / native_rate),
            target: "≥ 0.6",
            pass: Some(keel_rate / native_rate >= 0.6),
        },
        Row {
            name: "(d) event fan-out, commit → both subscribers done (1 ms clock), median / p99".into(),
            value: format!("{} / {}", ms(fan_median), ms(fan_p99)),
            target: "",
            pass: None,
        },
        Row {
            name: "(d) GET employee, provider's own route (one instance, host storage call), in process, median".into(),
            value: us(direct),
            target: "",
            pass: None,
        },
        Row {
            name: "(d) GET employee via another plugin over keel:hr/directory, in process, median".into(),
            value: format!(
                "{} (+{} per cross-plugin call, ratio {:.2})",
                us(linked),
                us(linked.saturating_sub(direct)),
                linked.as_secs_f64() / direct.as_secs_f64()
            ),
            target: "ratio ≤ 2.5",
            pass: Some(linked.as_secs_f64() / direct.as_secs_f64() <= 2.5),
        },
    ])
}

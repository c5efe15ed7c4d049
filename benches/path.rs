//! (f) The request path piece by piece, so each figure quoted about where a request's time
//! goes comes from this code: the empty handler through `Runtime::call` one call at a time
//! and from 8 concurrent tasks; the whole router in process (no TCP) with the plugin call
//! made (`GET /v1/plugins/hostile/noop`) and skipped (an unknown route of the same plugin:
//! the same authentication, plugin lookup and routing, then a 404); and the same two routes
//! over loopback TCP with 8 closed-loop clients.

use super::{Bench, Row, artifact, load_expecting};
use anyhow::{Context, Result, bail};
use axum::body::Body;
use keel_host::{Config, Server};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const TASKS: usize = 8;

pub async fn request_path(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let mut rows = runtime_calls(root, quick).await?;
    rows.extend(router(root, quick).await?);
    Ok(rows)
}

/// Empty-handler calls per second through the runtime, sequentially and from 8 tasks.
async fn runtime_calls(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let bench = Arc::new(Bench::new().await?);
    let hostile = Arc::new(bench.load(root, "fixtures/hostile", "hostile")?);
    let n = if quick { 2_000 } else { 40_000 };
    let call = |bench: Arc<Bench>, hostile: Arc<super::BenchPlugin>, calls: usize| async move {
        for _ in 0..calls {
            let (status, _) = bench.call(&hostile, "GET", "/noop", "/noop", &[], b"").await?;
            if status != 204 {
                bail!("the empty handler answered {status}");
            }
        }
        anyhow::Ok(())
    };
    call(bench.clone(), hostile.clone(), n / 10).await?;
    let started = Instant::now();
    call(bench.clone(), hostile.clone(), n).await?;
    let sequential = n as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS).map(|_| tokio::spawn(call(bench.clone(), hostile.clone(), n / TASKS))).collect();
    for t in tasks {
        t.await??;
    }
    let concurrent = (n / TASKS * TASKS) as f64 / started.elapsed().as_secs_f64();
    eprintln!("(f) runtime: {sequential:.0} calls/s sequential, {concurrent:.0} calls/s from {TASKS} tasks");
    Ok(vec![
        Row {
            name: "(f) empty handler through Runtime::call, one at a time".into(),
            value: format!("{sequential:.0} calls/s"),
            target: "",
            pass: None,
        },
        Row {
            name: format!("(f) the same from {TASKS} concurrent tasks (2 cores)"),
            value: format!("{concurrent:.0} calls/s: {:.1} µs of a core per call", 2e6 / concurrent),
            target: "",
            pass: None,
        },
    ])
}

/// The router in process and over TCP, with the plugin call made and skipped.
async fn router(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let mut config = Config { data_dir: dir.path().into(), listen: "127.0.0.1:0".parse()?, ..Config::default() };
    config.limits.rate_limit_per_second = 0;
    let server = Server::start(config).await?;
    let token = server.bootstrap_token.clone().context("token")?;
    let state = server.state.clone();
    let (record, _) = state.registry.install(artifact(root, "fixtures/hostile")?, None).await?;
    state.tenancy.set_enabled("default", &record.id, true).await?;
    let app = keel_host::api::router(state);
    let duration = if quick { Duration::from_millis(500) } else { Duration::from_secs(3) };

    let in_process = |path: &'static str, expect: u16| {
        let (app, token) = (app.clone(), token.clone());
        async move {
            let deadline = Instant::now() + duration;
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let (app, token) = (app.clone(), token.clone());
                    tokio::spawn(async move {
                        let mut done = 0u64;
                        while Instant::now() < deadline {
                            let request = axum::http::Request::get(path)
                                .header("authorization", format!("Bearer {token}"))
                                .body(Body::empty())?;
                            let response = app.clone().oneshot(request).await?;
                            if response.status().as_u16() != expect {
                                bail!("{path} answered {}", response.status());
                            }
                            let _ = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
                            done += 1;
                        }
                        anyhow::Ok(done)
                    })
                })
                .collect();
            let mut done = 0;
            for t in tasks {
                done += t.await??;
            }
            anyhow::Ok(done as f64 / duration.as_secs_f64())
        }
    };
    let (noop, nope) = ("/v1/plugins/hostile/noop", "/v1/plugins/hostile/no-such-route");
    in_process(noop, 204).await?;
    let called = in_process(noop, 204).await?;
    let skipped = in_process(nope, 404).await?;
    let base = format!("http://{}", server.addr);
    let tcp_called = load_expecting(&format!("{base}{noop}"), Some(&token), TASKS, duration, 204).await?.rps;
    let tcp_skipped = load_expecting(&format!("{base}{nope}"), Some(&token), TASKS, duration, 404).await?.rps;
    server.shutdown().await;
    eprintln!(
        "(f) router in process: {called:.0} req/s called, {skipped:.0} skipped; TCP {tcp_called:.0} / {tcp_skipped:.0}"
    );
    // On two saturated cores each request costs 2 / rate seconds of CPU.
    let call_cost = |with: f64, without: f64| 2e6 / with - 2e6 / without;
    Ok(vec![
        Row {
            name: format!("(f) whole router in process, {TASKS} tasks: plugin call made / skipped (404)"),
            value: format!(
                "{called:.0} / {skipped:.0} req/s: the call adds {:.1} µs of CPU per request",
                call_cost(called, skipped)
            ),
            target: "",
            pass: None,
        },
        Row {
            name: format!("(f) the same over loopback TCP, {TASKS} clients in process: call made / skipped"),
            value: format!(
                "{tcp_called:.0} / {tcp_skipped:.0} req/s: the call adds {:.1} µs per request",
                call_cost(tcp_called, tcp_skipped)
            ),
            target: "",
            pass: None,
        },
    ])
}

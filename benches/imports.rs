//! (h) Bulk import: 50,000 JSON Lines rows through `POST /v1/imports/batch/items` over
//! loopback (read, handed to the plugin 500 rows a call, every row checked and written, one
//! commit), against the same 50,000 documents committed natively through the document store
//! in one transaction: what the upload, the parsing and the plugin add.

use super::{Row, artifact};
use anyhow::{Context, Result, bail};
use keel_host::backend::sqlite::SqliteDocumentStore;
use keel_host::storage::{Condition, DocumentStore, Scope, Write, WriteAudit, WriteOp};
use keel_host::{Config, Server};
use std::path::Path;
use std::time::{Duration, Instant};

const ROWS: usize = 50_000;

fn file(run: usize) -> Vec<u8> {
    let mut out = String::with_capacity(ROWS * 32);
    for i in 0..ROWS {
        out.push_str(&format!("{{\"key\":\"r{run}-{i:07}\"}}\n"));
    }
    out.into_bytes()
}

pub async fn imports(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let runs = if quick { 1 } else { 3 };
    let dir = tempfile::tempdir()?;
    let mut config = Config { data_dir: dir.path().join("keel"), listen: "127.0.0.1:0".parse()?, ..Config::default() };
    config.limits.rate_limit_per_second = 0;
    let server = Server::start(config).await?;
    let token = server.bootstrap_token.clone().context("token")?;
    let (record, _) = server.state.registry.install(artifact(root, "fixtures/batch")?, None).await?;
    server.state.tenancy.set_enabled("default", &record.id, true).await?;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/imports/batch/items", server.addr);

    let pool = keel_host::backend::sqlite::open_pool(&dir.path().join("native.db")).await?;
    let store = SqliteDocumentStore::new(pool);
    let audit = WriteAudit { actor: "bench".into(), actor_name: "bench".into(), request_id: "bench".into() };
    let scope = Scope { tenant: "default".into(), plugin: "batch".into() };

    let (mut keel, mut native) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let body = file(run);
        let started = Instant::now();
        let reply = http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?;
        let took = started.elapsed();
        let status = reply.status();
        let report: serde_json::Value = reply.json().await?;
        if !status.is_success() || report["documents"] != ROWS {
            bail!("the import answered {status}: {report}");
        }
        keel.push(took);

        let writes: Vec<Write> = (0..ROWS)
            .map(|i| Write {
                collection: "items".into(),
                key: format!("r{run}-{i:07}"),
                condition: Condition::Absent,
                version: 1,
                op: WriteOp::Put { body: "{\"touched\":0}".into(), index: Vec::new(), search: None },
            })
            .collect();
        let started = Instant::now();
        store.commit(&scope, &writes, 1, &audit).await?;
        native.push(started.elapsed());
    }
    keel.sort();
    native.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    let rate = |d: Duration| ROWS as f64 / d.as_secs_f64();
    let (k, n) = (median(&keel), median(&native));
    eprintln!(
        "(h) import {ROWS} rows: keel {:.0} rows/s ({k:?}), native commit {:.0} rows/s ({n:?})",
        rate(k),
        rate(n)
    );
    Ok(vec![
        Row {
            name: format!("(h) bulk import of {ROWS} JSON Lines rows over HTTP, all checked, one commit"),
            value: format!("{:.0} rows/s ({:.2} s, median of {runs})", rate(k), k.as_secs_f64()),
            target: "",
            pass: None,
        },
        Row {
            name: format!("(h) native: the same {ROWS} documents committed through the store in one transaction"),
            value: format!(
                "{:.0} rows/s ({:.2} s): the import takes {:.1}× as long",
                rate(n),
                n.as_secs_f64(),
                k.as_secs_f64() / n.as_secs_f64()
            ),
            target: "",
            pass: None,
        },
    ])
}

//! (m) A tenant's upgrade with a data migration: the real helpdesk from its previous release
//! (0.8.0, kept as built) to the current one, whose migration gives each of 10,000 tickets
//! its `HD-` reference, in chunks of 500 sharing one unit of work, committed with the move
//! and the new `reference` index in one transaction; timed as the tenant admin's
//! `POST .../upgrade` over loopback. Against the same 10,000 rewritten tickets committed
//! natively through the document store in one transaction: what the hook, its reads and
//! the reindex add.

use super::{Row, artifact};
use anyhow::{Context, Result, bail};
use keel_host::backend::sqlite::SqliteDocumentStore;
use keel_host::storage::{Condition, DocumentStore, Scope, Write, WriteAudit, WriteOp};
use keel_host::{Config, Server};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const TICKETS: u64 = 10_000;

pub async fn migrations(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let runs = if quick { 1 } else { 3 };
    let dir = tempfile::tempdir()?;
    let mut config = Config { data_dir: dir.path().join("keel"), listen: "127.0.0.1:0".parse()?, ..Config::default() };
    config.limits.rate_limit_per_second = 0;
    let server = Server::start(config).await?;
    let token = server.bootstrap_token.clone().context("token")?;
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = http.request(method, format!("{base}{path}")).bearer_auth(&token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let reply = request.send().await?;
            let status = reply.status();
            let text = reply.text().await?;
            if !status.is_success() {
                bail!("{status}: {text}");
            }
            anyhow::Ok(text)
        }
    };
    let previous = std::fs::read(root.join("tests/fixtures/helpdesk-0.8.0.wasm"))?;
    server.state.registry.install(previous, None).await?;
    keel_host::lifecycle::switch_on(&server.state.registry, &server.state.tenancy, "default", "helpdesk").await?;
    // One ticket as 0.8.0 stores it: the shape of all the others.
    call(reqwest::Method::POST, "/v1/plugins/helpdesk/tickets", Some(json!({ "title": "Printer jammed" }))).await?;
    let export = call(reqwest::Method::GET, "/v1/tenants/default/plugins/helpdesk/export", None).await?;
    let lines: Vec<Value> = export.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let template = lines.iter().find(|l| l["kind"] == "document" && l["collection"] == "tickets").context("ticket")?;
    let sequence = lines.iter().find(|l| l["kind"] == "sequence").context("sequence")?["name"].clone();
    let mut header = lines[0].clone();
    header["plugin-enabled"] = false.into();
    header["collections"] = json!(["tickets"]);
    let ticket = |n: u64| {
        let mut body = template["body"].clone();
        body["number"] = n.into();
        body["title"] = format!("Ticket {n}").into();
        body
    };
    let mut file =
        vec![header.to_string(), json!({ "kind": "sequence", "name": sequence, "value": TICKETS }).to_string()];
    for n in 1..=TICKETS {
        file.push(json!({ "kind": "document", "collection": "tickets", "key": format!("{n:012}"), "version": 1, "body": ticket(n) }).to_string());
    }
    file.push(json!({ "kind": "end", "documents": TICKETS, "settings": 0, "sequences": 1 }).to_string());
    let file = file.join("\n");

    // The current release installed beside it; 0.8.0 pinned, so new tenants start there.
    let current = server.state.registry.install(artifact(root, "bundled/helpdesk")?, None).await?.0.version;
    server.state.registry.pin("helpdesk", Some("0.8.0")).await?;

    let pool = keel_host::backend::sqlite::open_pool(&dir.path().join("native.db")).await?;
    let store = SqliteDocumentStore::new(pool);
    let audit = WriteAudit { actor: "bench".into(), actor_name: "bench".into(), request_id: "bench".into() };
    let (mut keel, mut native) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let tenant = format!("bench-{run}");
        call(reqwest::Method::POST, "/v1/admin/tenants", Some(json!({ "id": tenant, "name": tenant }))).await?;
        let switch = |on: &str| format!("/v1/tenants/{tenant}/plugins/helpdesk/{on}");
        call(reqwest::Method::POST, &switch("enable"), None).await?;
        call(reqwest::Method::POST, &switch("disable"), None).await?;
        let imported = http
            .post(format!("{base}/v1/tenants/{tenant}/plugins/helpdesk/import"))
            .bearer_auth(&token)
            .header("content-type", "application/x-ndjson")
            .body(file.clone())
            .send()
            .await?;
        if !imported.status().is_success() {
            bail!("import: {}", imported.text().await?);
        }
        call(reqwest::Method::POST, &switch("enable"), None).await?;
        let started = Instant::now();
        let moved = call(reqwest::Method::POST, &switch("upgrade"), Some(json!({ "version": current }))).await?;
        keel.push(started.elapsed());
        let moved: Value = serde_json::from_str(&moved)?;
        if moved["migration"]["documents"] != TICKETS {
            bail!("the migration answered {moved}");
        }

        let scope = Scope { tenant: tenant.clone(), plugin: "helpdesk".into() };
        let writes = |reference: bool, condition: fn(u64) -> Condition| -> Vec<Write> {
            (1..=TICKETS)
                .map(|n| {
                    let mut body = ticket(n);
                    if reference {
                        body["reference"] = format!("HD-{n:06}").into();
                    }
                    Write {
                        collection: "tickets".into(),
                        key: format!("{n:012}"),
                        condition: condition(n),
                        version: if reference { 2 } else { 1 },
                        op: WriteOp::Put { body: body.to_string(), index: Vec::new(), search: None },
                    }
                })
                .collect()
        };
        store.commit(&scope, &writes(false, |_| Condition::Absent), 1, &audit).await?;
        let rewrites = writes(true, |_| Condition::Version(1));
        let started = Instant::now();
        store.commit(&scope, &rewrites, 2, &audit).await?;
        native.push(started.elapsed());
    }
    server.shutdown().await;
    keel.sort();
    native.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    let (k, n) = (median(&keel), median(&native));
    eprintln!("(m) helpdesk 0.8.0 -> {current} over {TICKETS} tickets: keel {k:?}, native commit {n:?}");
    Ok(vec![
        Row {
            name: format!(
                "(m) helpdesk 0.8.0 → {current} upgrade of a tenant with {TICKETS} tickets: migration in chunks of 500, one commit with the move and the new index"
            ),
            value: format!(
                "{:.2} s ({:.0} tickets/s, median of {runs})",
                k.as_secs_f64(),
                TICKETS as f64 / k.as_secs_f64()
            ),
            target: "",
            pass: None,
        },
        Row {
            name: format!(
                "(m) native: the same {TICKETS} rewritten tickets committed through the store in one transaction"
            ),
            value: format!(
                "{:.2} s: the upgrade takes {:.1}× as long",
                n.as_secs_f64(),
                k.as_secs_f64() / n.as_secs_f64()
            ),
            target: "",
            pass: None,
        },
    ])
}

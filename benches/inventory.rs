//! (j) Inventory at scale: 10,000 items imported, then 1,000,000 movements over them through
//! the bulk path (twenty `movements` imports of 50,000 lines, a day's receipts and issues of
//! half the items each, the halves in turn),
//! then single-line movements posted over HTTP by 8 clients on top of that ledger; on-hand
//! lookups after it; and a receipt back-dated before 100,000 later movements of one item,
//! timed from the request to its revaluation finished, against the same revaluation done
//! natively (the plugin's own journal code, in memory) in the same run.

use super::{Row, artifact, percentile};
use anyhow::{Context, Result, bail};
use keel_host::{Config, Server};
use keel_plugin_inventory::journal::{Chunk, Entry, Head, Journal, Kind, Method};
use keel_plugin_inventory::num::{Money, Qty};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ITEMS: usize = 10_000;
const BINS: usize = 10;
const FILES: usize = 20;
const ROWS: usize = 50_000;
const HOT: usize = 100_000;
const INV: &str = "/v1/plugins/inventory";

fn items_csv() -> Vec<u8> {
    let mut out = String::from("sku,name,base_uom,units,valuation\n");
    for i in 0..ITEMS {
        let valuation = if i % 2 == 0 { "average" } else { "fifo" };
        writeln!(out, "I{i:05},Item {i},pcs,box=12,{valuation}").unwrap();
    }
    out.push_str("HOT,The busiest item,pcs,,fifo\n");
    out.into_bytes()
}

/// Day `day` of 2025-01, for the even or odd items by turn: 30,000 receipt lines (6 of each
/// item, 10 pieces at a cost that varies) in the morning, then 20,000 issue lines (4 of each,
/// 5 pieces) in the afternoon.
fn day_csv(day: usize) -> Vec<u8> {
    let mut out = String::from("kind,at,reference,item,qty,location,unit_cost\n");
    let half = || (day % 2..ITEMS).step_by(2);
    for round in 0..6 {
        for i in half() {
            let cost = 1 + (i + round + day) % 50;
            writeln!(out, "receipt,2025-01-{:02}T08:00:00Z,PO-{day},I{i:05},10,B{},{cost}.25", day + 1, i % BINS)
                .unwrap();
        }
    }
    for _ in 0..4 {
        for i in half() {
            writeln!(out, "issue,2025-01-{:02}T17:00:00Z,SO-{day},I{i:05},5,B{},", day + 1, i % BINS).unwrap();
        }
    }
    out.into_bytes()
}

/// 50,000 receipts of 2 pieces of HOT on 2025-02-01, then 50,000 issues of 1 on 2025-02-02.
fn hot_csv() -> Vec<u8> {
    let mut out = String::from("kind,at,item,qty,location,unit_cost\n");
    for n in 0..HOT / 2 {
        writeln!(out, "receipt,2025-02-01T08:00:00Z,HOT,2,B0,{}.50", 10 + n % 7).unwrap();
    }
    for _ in 0..HOT / 2 {
        out.push_str("issue,2025-02-02T08:00:00Z,HOT,1,B0,\n");
    }
    out.into_bytes()
}

pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<serde_json::Value> {
    let reply = request.send().await?;
    let status = reply.status();
    let body: serde_json::Value = reply.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("answered {status}: {body}");
    }
    Ok(body)
}

/// The revaluation of `HOT` done natively: the same journal (chunks of 400, FIFO), the same
/// back-dated receipt, revalued from an in-memory map of chunks.
fn native_revaluation() -> Result<Duration> {
    let mut store: HashMap<u32, Chunk> = HashMap::new();
    let mut journal = Journal::new(Head::new(Method::Fifo));
    let mut load = |_: u32| -> Result<Chunk, keel_sdk::Error> { Err(keel_sdk::Error::internal("missing", "chunk")) };
    let day = 86_400_000i64;
    for n in 0..HOT {
        let s = journal.next_seq();
        let (t, q, u) = if n < HOT / 2 {
            (20_000 * day, Qty::units(2), Some(Money::parse(&format!("{}.50", 10 + n % 7)).unwrap().of(Qty::units(2))))
        } else {
            (20_001 * day, Qty::units(-1), None)
        };
        let kind = if q.0 > 0 { Kind::Receipt } else { Kind::Issue };
        let entry = Entry { s, t, m: s, k: kind, l: "B0".into(), o: None, q, u, c: Money::ZERO };
        journal.add(entry, &mut load).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let (_, chunks) = journal.changes();
    for (id, chunk) in chunks {
        store.insert(id, chunk.clone());
    }
    let head = journal.head.clone();
    let store = Arc::new(store);
    // Timed: open the journal, insert the receipt before everything, revalue to the end.
    let started = Instant::now();
    let mut journal = Journal::new(head);
    let from = store.clone();
    let mut load = move |id: u32| -> Result<Chunk, keel_sdk::Error> { Ok(from[&id].clone()) };
    let s = journal.next_seq();
    let entry = Entry {
        s,
        t: 19_999 * day,
        m: s,
        k: Kind::Receipt,
        l: "B0".into(),
        o: None,
        q: Qty::units(10),
        u: Some(Money::parse("9").unwrap().of(Qty::units(10))),
        c: Money::ZERO,
    };
    journal.add(entry, &mut load).map_err(|e| anyhow::anyhow!("{e}"))?;
    journal.revalue(usize::MAX, &mut load).map_err(|e| anyhow::anyhow!("{e}"))?;
    let took = started.elapsed();
    if journal.head.dirty_from.is_some() {
        bail!("the native revaluation did not finish");
    }
    Ok(took)
}

pub async fn inventory(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let mut config = Config { data_dir: dir.path().join("keel"), listen: "127.0.0.1:0".parse()?, ..Config::default() };
    config.limits.rate_limit_per_second = 0;
    config.jobs.poll_interval_ms = 50;
    let server = Server::start(config).await?;
    let token = server.bootstrap_token.clone().context("token")?;
    let (record, _) = server.state.registry.install(artifact(root, "bundled/inventory")?, None).await?;
    server.state.tenancy.set_enabled("default", &record.id, true).await?;
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    send(
        http.put(format!("{base}{INV}/locations/WH1")).bearer_auth(&token).json(&serde_json::json!({ "name": "Main" })),
    )
    .await?;
    for bin in 0..BINS {
        let body = serde_json::json!({ "name": format!("Bin {bin}"), "parent": "WH1" });
        send(http.put(format!("{base}{INV}/locations/B{bin}")).bearer_auth(&token).json(&body)).await?;
    }
    let import = |name: &'static str, body: Vec<u8>| {
        let request = http
            .post(format!("{base}/v1/imports/inventory/{name}"))
            .bearer_auth(&token)
            .header("content-type", "text/csv")
            .body(body);
        send(request)
    };
    import("items", items_csv()).await?;

    // The bulk path: a day's movements a file.
    let files = if quick { 2 } else { FILES };
    let started = Instant::now();
    let mut per_file = Vec::new();
    for day in 0..files {
        let file = Instant::now();
        let report = import("movements", day_csv(day)).await?;
        if report["rows"] != ROWS {
            bail!("the import took {} rows", report["rows"]);
        }
        per_file.push(file.elapsed());
    }
    let bulk = started.elapsed();
    let bulk_rate = (files * ROWS) as f64 / bulk.as_secs_f64();
    import("movements", hot_csv()).await?;

    // Single calls: 8 clients posting one-line receipts and issues, each call on another item.
    let singles = if quick { 2_000 } else { 20_000 };
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (next, http, base, token) = (next.clone(), http.clone(), base.clone(), token.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= singles {
                    return anyhow::Ok(());
                }
                // Each call on another item (the ledger has stock of every one to issue).
                let i = (n * 7919) % ITEMS;
                let line = if n % 2 == 0 {
                    serde_json::json!({ "item": format!("I{i:05}"), "qty": "1", "location": format!("B{}", i % BINS), "unit_cost": "3.10" })
                } else {
                    serde_json::json!({ "item": format!("I{i:05}"), "qty": "1", "location": format!("B{}", i % BINS) })
                };
                let kind = if n % 2 == 0 { "receipt" } else { "issue" };
                let body = serde_json::json!({ "kind": kind, "reference": "WEB", "lines": [line] });
                send(http.post(format!("{base}{INV}/movements")).bearer_auth(&token).json(&body)).await?;
            }
        }));
    }
    for c in clients {
        c.await??;
    }
    let single = started.elapsed();
    let single_rate = singles as f64 / single.as_secs_f64();

    // On-hand lookups of a place, one at a time.
    let lookups = if quick { 300 } else { 2_000 };
    let mut times = Vec::with_capacity(lookups);
    for n in 0..lookups {
        let i = (n * 104_729) % ITEMS;
        let url = format!("{base}{INV}/stock?item=I{i:05}&location=B{}", i % BINS);
        let started = Instant::now();
        let body = send(http.get(url).bearer_auth(&token)).await?;
        times.push(started.elapsed());
        if body["items"].as_array().is_none_or(|a| a.is_empty()) {
            bail!("no stock for I{i:05}: {body}");
        }
    }
    times.sort();
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));

    // A receipt back-dated before all of HOT's 100,000 movements, until its costs are redone.
    let before = super::background_runs(&http, &base, "inventory").await?;
    let started = Instant::now();
    let body = serde_json::json!({ "kind": "receipt", "at": "2025-01-31T00:00:00Z", "lines": [{ "item": "HOT", "qty": "10", "location": "B0", "unit_cost": "9" }] });
    let posted = send(http.post(format!("{base}{INV}/movements")).bearer_auth(&token).json(&body)).await?;
    let answered = started.elapsed();
    if posted["revaluation_pending"] != serde_json::json!(["HOT"]) {
        bail!("the back-dated receipt was not queued for revaluation: {posted}");
    }
    loop {
        let now = send(http.get(format!("{base}{INV}/items/HOT/valuation")).bearer_auth(&token)).await?;
        if now["revaluation_pending"] == false {
            if now["qty"] != "50010" {
                bail!("HOT holds {} after the revaluation", now["qty"]);
            }
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the revaluation did not finish in 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let revalued = started.elapsed();
    let after = super::background_runs(&http, &base, "inventory").await?;
    let (chunks, busy) = (after.0 - before.0, after.1 - before.1);
    let native = native_revaluation()?;
    eprintln!(
        "(j) bulk files {:?}; single {single:?}; lookups p50 {p50:?} p99 {p99:?}; revaluation {revalued:?} (answered {answered:?}, {chunks} chunks, {:.0} ms in them); native {native:?}",
        per_file,
        busy * 1000.0
    );
    server.shutdown().await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(vec![
        Row {
            name: format!(
                "(j) inventory: {} movements over {ITEMS} items through the bulk path ({} imports of {ROWS} lines)",
                files * ROWS,
                files
            ),
            value: format!(
                "{bulk_rate:.0} movements/s ({:.1} s; {:.1}–{:.1} s a file)",
                bulk.as_secs_f64(),
                per_file.iter().min().unwrap().as_secs_f64(),
                per_file.iter().max().unwrap().as_secs_f64()
            ),
            target: "",
            pass: None,
        },
        Row {
            name: format!("(j) inventory: {singles} single-line movements over HTTP, 8 clients, on that ledger"),
            value: format!("{single_rate:.0} movements/s"),
            target: "",
            pass: None,
        },
        Row {
            name: format!("(j) inventory: on-hand of an item at a location after it, {lookups} lookups"),
            value: format!("p50 {:.2} ms, p99 {:.2} ms", ms(p50), ms(p99)),
            target: "p99 ≤ 5 ms",
            pass: None,
        },
        Row {
            name: format!(
                "(j) inventory: a receipt back-dated before {HOT} later movements of one item (FIFO), request to revalued"
            ),
            value: format!(
                "{:.0} ms ({} task chunks, {:.0} ms in them); native replay of the same journal in memory {:.0} ms ({:.1}×)",
                ms(revalued),
                chunks as u64,
                busy * 1000.0,
                ms(native),
                revalued.as_secs_f64() / native.as_secs_f64()
            ),
            target: "≤ 1 s",
            pass: None,
        },
    ])
}

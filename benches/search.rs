//! (k) Full-text search at a support desk's scale.
//!
//! - Ingest: cases of five emails each (an opening message and four replies threaded onto it
//!   by `In-Reply-To`), posted to the CRM's inbound endpoint over HTTP by 8 clients, through
//!   mail parsing, threading, the plugin and the commit that indexes the text; the same mail
//!   into a CRM whose manifest declares no `search` is the baseline, in the same run.
//! - Search over what was ingested, over HTTP: the search box, a case list by words, and the
//!   timeline search.
//! - Search over 100,000 cases and their 500,000 timeline entries through the host's storage
//!   path (`UnitOfWork::search`, what a plugin's `search` call runs), written straight into
//!   the database (the commit path would take long at this size), against the same FTS5
//!   statement run natively on the same database; then again with a second tenant of the
//!   same size beside it, which must not slow the first tenant's searches.
//!
//! Texts are drawn from 27,000 made-up words with a Zipf distribution (s = 1.07), so there
//! are rare, middling and very common words as in real mail.

use super::inventory::send;
use super::{Row, artifact, percentile};
use anyhow::{Context, Result, bail};
use keel_host::backend::sqlite::SqliteDocumentStore;
use keel_host::storage::index::CollectionIndexes;
use keel_host::storage::search::{
    QueryLimits, SearchField, SearchFields, create_table_sql, parse_query, render_fts5, table_name,
};
use keel_host::storage::{DocumentStore, Scope, Search, StorageLimits, UnitOfWork};
use keel_host::{Config, Server};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CRM: &str = "/v1/plugins/crm";
const SYLLABLES: [&str; 30] = [
    "ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "ve", "zu", "ba", "de", "fi", "go", "hu", "ja", "ke", "li", "mo",
    "ne", "pi", "ro", "sa", "te", "vi", "wo", "xa", "ye", "zo", "qu",
];
const VOCABULARY: usize = 27_000;

/// Made-up words by frequency rank (0 is the most common), Zipf-distributed.
struct Words {
    cumulative: Vec<f64>,
    seed: u64,
}

fn word(rank: usize) -> String {
    format!("{}{}{}", SYLLABLES[rank % 30], SYLLABLES[(rank / 30) % 30], SYLLABLES[(rank / 900) % 30])
}

impl Words {
    fn new(seed: u64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=VOCABULARY)
            .map(|r| {
                total += 1.0 / (r as f64).powf(1.07);
                total
            })
            .collect::<Vec<_>>();
        let cumulative = cumulative.iter().map(|c| c / total).collect();
        Words { cumulative, seed }
    }

    fn next_unit(&mut self) -> f64 {
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_unit() * n as f64) as usize % n.max(1)
    }

    fn text(&mut self, min: usize, max: usize) -> String {
        let n = min + self.below(max - min + 1);
        let mut out = String::new();
        for i in 0..n {
            let u = self.next_unit();
            let rank = self.cumulative.partition_point(|c| *c < u).min(VOCABULARY - 1);
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&word(rank));
        }
        out
    }
}

/// The searches measured: (name, query text, the `open` condition or not).
fn shapes() -> Vec<(&'static str, String, bool)> {
    vec![
        ("a rare word", word(3_000), false),
        ("a middling word", word(300), false),
        ("a very common word", word(1), false),
        ("two middling words", format!("{} {}", word(300), word(400)), false),
        ("a phrase", format!("\"{} {}\"", word(2), word(3)), false),
        ("a 3-letter prefix", format!("{}*", &word(200)[..3]), false),
        ("a rare word, open cases only", word(3_000), true),
    ]
}

/// Mail `m` (0-4) of case `c`.
fn mail(words: &mut Words, c: usize, m: usize) -> String {
    let from = format!("person{}@customer{}.test", c % 5_000, c % 700);
    let subject = words.text(4, 8);
    let body = words.text(40, 120);
    if m == 0 {
        format!("From: {from}\r\nSubject: {subject}\r\nMessage-ID: <c{c}m0@bench.test>\r\n\r\n{body}\r\n")
    } else {
        format!(
            "From: {from}\r\nSubject: Re: {subject}\r\nMessage-ID: <c{c}m{m}@bench.test>\r\n\
             In-Reply-To: <c{c}m0@bench.test>\r\n\r\n{body}\r\n"
        )
    }
}

/// A server with the CRM (its manifest as given), and its address and token.
async fn crm_server(dir: &Path, crm: Vec<u8>) -> Result<(Server, String, String)> {
    let mut config = Config { data_dir: dir.join("keel"), listen: "127.0.0.1:0".parse()?, ..Config::default() };
    config.limits.rate_limit_per_second = 0;
    let server = Server::start(config).await?;
    let token = server.bootstrap_token.clone().context("token")?;
    let (record, _) = server.state.registry.install(crm, None).await?;
    server.state.tenancy.set_enabled("default", &record.id, true).await?;
    let base = format!("http://{}", server.addr);
    Ok((server, base, token))
}

/// Posts `cases` cases of five mails by 8 clients; mails per second.
async fn ingest(base: &str, token: &str, cases: usize) -> Result<f64> {
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (next, http, base, token) = (next.clone(), http.clone(), base.to_owned(), token.to_owned());
        clients.push(tokio::spawn(async move {
            loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= cases {
                    return anyhow::Ok(());
                }
                let mut words = Words::new(c as u64 * 7919 + 1);
                for m in 0..5 {
                    let raw = mail(&mut words, c, m);
                    let request = http
                        .post(format!("{base}{CRM}/inbound/email"))
                        .bearer_auth(&token)
                        .header("content-type", "message/rfc822")
                        .body(raw);
                    let answer = send(request).await?;
                    if m > 0 && answer["threaded"] != true {
                        bail!("mail {m} of case {c} did not thread: {answer}");
                    }
                }
            }
        }));
    }
    for c in clients {
        c.await??;
    }
    Ok((cases * 5) as f64 / started.elapsed().as_secs_f64())
}

/// The CRM's manifest without `search`: the baseline of the ingest.
fn crm_without_search() -> Result<Vec<u8>> {
    let source = keel_tests::manifest_source("crm");
    let plain: String = source.lines().filter(|l| !l.starts_with("search = ")).map(|l| format!("{l}\n")).collect();
    if plain == source {
        bail!("the CRM's manifest declares no search");
    }
    Ok(keel_host::artifact::embed_manifest(&keel_tests::raw_component("keel-plugin-crm"), &plain)?)
}

/// p50 and p99 of `runs` GETs of `path`.
async fn http_times(base: &str, token: &str, path: &str, runs: usize) -> Result<(Duration, Duration)> {
    let http = reqwest::Client::new();
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs + runs / 10 {
        let started = Instant::now();
        send(http.get(format!("{base}{CRM}{path}")).bearer_auth(token)).await?;
        if i >= runs / 10 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

fn fields(collection: &str) -> SearchFields {
    let f = |path: &str, weight: u8| SearchField { path: path.into(), weight };
    match collection {
        "cases" => SearchFields(vec![f("subject", 4), f("description", 1), f("tags", 1)]),
        _ => SearchFields(vec![f("body", 1), f("email.subject", 1)]),
    }
}

/// Writes `cases` cases and five timeline entries each for `scope` straight into the
/// database, with their index entries and full-text rows as a commit would write them.
fn fill(path: &Path, scope: &Scope, cases: usize, seed: u64) -> Result<()> {
    let mut db = rusqlite::Connection::open(path)?;
    let tx = db.transaction()?;
    let tables = ["cases", "timeline"].map(|c| table_name(&scope.tenant, &scope.plugin, c));
    for (collection, table) in ["cases", "timeline"].iter().zip(&tables) {
        tx.execute_batch(&create_table_sql(table))?;
        tx.execute(
            "INSERT INTO search_tables (tenant_id, plugin_id, collection, name) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![scope.tenant, scope.plugin, collection, table],
        )?;
    }
    {
        let mut doc = tx.prepare(
            "INSERT INTO documents (tenant_id, plugin_id, collection, key, version, body, created_at, updated_at, size) \
             VALUES (?1, ?2, ?3, ?4, 1, ?5, 0, 0, ?6) RETURNING id",
        )?;
        let mut entry = tx.prepare(
            "INSERT INTO document_index (tenant_id, plugin_id, collection, field, value, key) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let text_row = |table: &str| {
            tx.prepare(&format!("INSERT INTO {table} (rowid, c0, c1, c2, c3) VALUES (?1, ?2, ?3, ?4, ?5)"))
        };
        let mut text_rows = [text_row(&tables[0])?, text_row(&tables[1])?];
        let indexes = |collection: &str| {
            let mut i = CollectionIndexes { search: Some(fields(collection)), ..Default::default() };
            if collection == "cases" {
                i.fields.insert("open".into(), keel_host::storage::index::IndexType::Boolean);
            } else {
                i.fields.insert("case".into(), keel_host::storage::index::IndexType::Integer);
            }
            i
        };
        let (case_indexes, entry_indexes) = (indexes("cases"), indexes("timeline"));
        let mut words = Words::new(seed);
        let mut write = |collection: &str, key: String, body: serde_json::Value| -> Result<()> {
            let (ix, slot) = if collection == "cases" { (&case_indexes, 0) } else { (&entry_indexes, 1) };
            let text = body.to_string();
            let size = (key.len() + text.len()) as i64;
            let id: i64 = doc
                .query_row(rusqlite::params![scope.tenant, scope.plugin, collection, key, text, size], |r| r.get(0))?;
            for (name, value) in ix.entries(&body).map_err(|(f, r)| anyhow::anyhow!("{f} {r}"))? {
                entry.execute(rusqlite::params![scope.tenant, scope.plugin, collection, name, value, key])?;
            }
            let t = ix.search.as_ref().expect("searchable").extract(&body);
            text_rows[slot].execute(rusqlite::params![id, t[0], t[1], t[2], t[3]])?;
            Ok(())
        };
        for c in 0..cases {
            let subject = words.text(4, 8);
            let description = words.text(30, 80);
            let case = serde_json::json!({ "number": c + 1, "subject": subject, "description": description,
                "tags": [], "open": c % 3 != 0 });
            write("cases", format!("{:010}", c + 1), case)?;
            for m in 0..5 {
                let body = words.text(40, 200);
                let entry = serde_json::json!({ "case": c + 1, "seq": m + 1, "kind": "message_in", "body": body,
                    "email": { "subject": format!("Re: {subject}") } });
                write("timeline", format!("{:010}/{:06}", c + 1, m + 1), entry)?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// p50 and p99 of each search shape through the host's storage path, and natively (the same
/// FTS5 statement on a connection of its own).
async fn storage_times(
    store: &Arc<dyn DocumentStore>,
    db: &Path,
    scope: &Scope,
    runs: usize,
) -> Result<Vec<((Duration, Duration), (Duration, Duration))>> {
    let collections = Arc::new(BTreeMap::from([(
        "cases".to_string(),
        CollectionIndexes {
            fields: BTreeMap::from([("open".to_string(), keel_host::storage::index::IndexType::Boolean)]),
            compound: vec![],
            search: Some(fields("cases")),
        },
    )]));
    let native = rusqlite::Connection::open(db)?;
    let mut out = Vec::new();
    for (name, query, open) in shapes() {
        // A very common word, and a phrase of two, rank most of the collection each time:
        // fewer runs.
        let runs = if name.contains("common") || name.contains("phrase") { (runs / 10).max(20) } else { runs };
        let mut host = Vec::with_capacity(runs);
        let mut raw = Vec::with_capacity(runs);
        let terms = parse_query(&query, QueryLimits::default()).map_err(|e| anyhow::anyhow!(e))?;
        let expression = render_fts5(&terms);
        // What the engine itself costs: the match, the ranking and the page's bodies (with the
        // `open` check, for that shape), without the host's scope checks, limits and paging.
        let table = table_name(&scope.tenant, &scope.plugin, "cases");
        let (join, check) = if open {
            (
                format!(" CROSS JOIN documents d1 ON d1.id = {table}.rowid"),
                " AND EXISTS (SELECT 1 FROM document_index r WHERE r.tenant_id = ?2 AND r.plugin_id = ?3 \
                  AND r.collection = 'cases' AND r.key = d1.key AND r.field = 'open' AND r.value = 'true')",
            )
        } else {
            (String::new(), " AND ?2 IS NOT NULL AND ?3 IS NOT NULL")
        };
        let sql = format!(
            "SELECT d.key, d.version, d.body FROM (SELECT {table}.rowid AS id, {} AS score \
             FROM {table}{join} WHERE {table} MATCH ?1{check} ORDER BY score, id LIMIT 21) p \
             CROSS JOIN documents d ON d.id = p.id ORDER BY p.score, p.id",
            fields("cases").rank_sql(&table)
        );
        for i in 0..runs + runs / 10 {
            let call = UnitOfWork::new(store.clone(), scope.clone(), collections.clone(), StorageLimits::default());
            let conditions = if open {
                vec![keel_host::storage::index::Condition {
                    field: "open".into(),
                    op: keel_host::storage::Comparison::Eq,
                    value: "true".into(),
                }]
            } else {
                vec![]
            };
            let spec = Search { collection: "cases".into(), query: query.clone(), conditions, cursor: None, limit: 20 };
            let started = Instant::now();
            let (found, _) = call.search(&spec).await?;
            let took = started.elapsed();
            if found.is_empty() {
                bail!("(k) {name}: `{query}` found nothing; the data or the search is wrong");
            }
            let started = Instant::now();
            let rows: usize = native
                .prepare_cached(&sql)?
                .query_map(rusqlite::params![expression, scope.tenant, scope.plugin], |r| r.get::<_, String>(2))?
                .map(|r| r.map(|b| b.len()))
                .sum::<rusqlite::Result<usize>>()?;
            let native_took = started.elapsed();
            std::hint::black_box(rows);
            if i >= runs / 10 {
                host.push(took);
                raw.push(native_took);
            }
        }
        host.sort();
        raw.sort();
        out.push(((percentile(&host, 0.5), percentile(&host, 0.99)), (percentile(&raw, 0.5), percentile(&raw, 0.99))));
    }
    Ok(out)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub async fn search(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let (http_cases, big_cases, runs) = if quick { (300, 10_000, 100) } else { (4_000, 100_000, 500) };
    let mut rows = Vec::new();

    // Ingest over HTTP, with and without the full-text index, each on a fresh database.
    let plain_dir = tempfile::tempdir()?;
    let (plain, base, token) = crm_server(plain_dir.path(), crm_without_search()?).await?;
    let plain_rate = ingest(&base, &token, http_cases).await?;
    plain.shutdown().await;
    let dir = tempfile::tempdir()?;
    let (server, base, token) = crm_server(dir.path(), artifact(root, "bundled/crm")?).await?;
    let rate = ingest(&base, &token, http_cases).await?;
    eprintln!("(k) ingest: {rate:.0} mails/s with search, {plain_rate:.0} without");
    rows.push(Row {
        name: format!("(k) email in over HTTP: {http_cases} cases × 5 mails, 8 clients, with the full-text index"),
        value: format!("{rate:.0} mails/s; without search {plain_rate:.0} mails/s ({:.2}x)", rate / plain_rate),
        target: "≥ 0.67x of the rate without search",
        pass: Some(rate / plain_rate >= 0.67),
    });
    let http_runs = runs / 2;
    for (what, path) in [
        ("search box `/search?q=` (cases, their timelines, contacts, customers)", format!("/search?q={}", word(300))),
        ("cases by words `/cases?q=`", format!("/cases?q={}", word(300))),
        ("timeline entries `/search/messages?q=`, a common word", format!("/search/messages?q={}", word(1))),
    ] {
        let (p50, p99) = http_times(&base, &token, &path, http_runs).await?;
        rows.push(Row {
            name: format!("(k) {what} over {} mails, HTTP", http_cases * 5),
            value: format!("p50 {}, p99 {}", ms(p50), ms(p99)),
            target: "",
            pass: None,
        });
    }
    server.shutdown().await;

    // 100,000 cases and 500,000 entries written directly; searches through the storage path.
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("search.db");
    let pool = keel_host::backend::sqlite::open_pool(&db).await?;
    let ours = Scope { tenant: "acme".into(), plugin: "crm".into() };
    let started = Instant::now();
    let (path, scope) = (db.clone(), ours.clone());
    tokio::task::spawn_blocking(move || fill(&path, &scope, big_cases, 1)).await??;
    let fill_took = started.elapsed();
    eprintln!("(k) {big_cases} cases and {} entries written in {:.1} s", big_cases * 5, fill_took.as_secs_f64());
    let store: Arc<dyn DocumentStore> = Arc::new(SqliteDocumentStore::new(pool.clone()));
    // A first pass warms the readers' page caches, as a server's would be.
    storage_times(&store, &db, &ours, 20).await?;
    let alone = storage_times(&store, &db, &ours, runs).await?;
    let theirs = Scope { tenant: "globex".into(), plugin: "crm".into() };
    let path = db.clone();
    tokio::task::spawn_blocking(move || fill(&path, &theirs, big_cases, 2)).await??;
    let beside = storage_times(&store, &db, &ours, runs).await?;
    for ((name, _, _), (((p50, p99), (native_p50, native_p99)), ((beside_p50, beside_p99), _))) in
        shapes().iter().zip(alone.iter().zip(&beside))
    {
        // Medians: a few hundred runs on a shared machine make p99 ratios noise.
        let ratio = p50.as_secs_f64() / native_p50.as_secs_f64();
        let extra = p50.saturating_sub(*native_p50);
        let neighbour = beside_p50.as_secs_f64() / p50.as_secs_f64();
        eprintln!(
            "(k) {name}: p50 {} p99 {}; native p50 {} p99 {}; beside p50 {} p99 {}",
            ms(*p50),
            ms(*p99),
            ms(*native_p50),
            ms(*native_p99),
            ms(*beside_p50),
            ms(*beside_p99)
        );
        rows.push(Row {
            name: format!("(k) search {name} over {big_cases} cases + {} entries, 20 a page", big_cases * 5),
            value: format!(
                "p50 {}, p99 {}; native FTS5 p50 {}, p99 {} ({ratio:.2}x, +{}); beside a tenant of the same size p50 {}, p99 {} ({neighbour:.2}x)",
                ms(*p50),
                ms(*p99),
                ms(*native_p50),
                ms(*native_p99),
                ms(extra),
                ms(*beside_p50),
                ms(*beside_p99)
            ),
            target: "p50 ≤ 1.5x native (or ≤ 0.3 ms more); ≤ 1.5x beside a same-size tenant",
            pass: Some((ratio <= 1.5 || extra <= Duration::from_micros(300)) && neighbour <= 1.5),
        });
    }
    let bytes: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'search_%'), \
         (SELECT sum(pgsize) FROM dbstat WHERE name = 'documents')",
    )
    .fetch_one(&pool)
    .await
    .unwrap_or((0, 0));
    rows.push(Row {
        name: format!(
            "(k) direct write of {} cases + {} entries with their full-text rows (2 tenants)",
            big_cases * 2,
            big_cases * 10
        ),
        value: format!(
            "{:.1} s for one tenant; full-text index {} MiB beside documents {} MiB",
            fill_took.as_secs_f64(),
            bytes.0 >> 20,
            bytes.1 >> 20
        ),
        target: "",
        pass: None,
    });
    Ok(rows)
}

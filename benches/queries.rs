//! (g) Queries on typed indexes over a large collection: a range ordered by its field, an
//! equality plus range on a compound index, and a range with two conditions checked per
//! document, each through `UnitOfWork::find` (the host's storage path, without the plugin
//! call), on 10,000 and on 1,000,000 documents of one collection. The small collection is the
//! baseline: the time of a page should not grow with the collection.

use super::{Row, percentile, us};
use anyhow::{Result, bail};
use keel_host::backend::sqlite::SqliteDocumentStore;
use keel_host::storage::index::{CollectionIndexes, Condition, IndexType};
use keel_host::storage::{Comparison, DocumentStore, Find, Scope, StorageLimits, UnitOfWork};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAGE: u32 = 50;
const ITEMS: u64 = 1_000;
/// Movement times start here (2026-01-01T00:00:00Z) and are 31 s apart.
const START_S: i64 = 1_767_225_600;

fn movements() -> CollectionIndexes {
    CollectionIndexes {
        fields: BTreeMap::from([
            ("item".to_string(), IndexType::String),
            ("at".to_string(), IndexType::Datetime),
            ("qty".to_string(), IndexType::Decimal),
            ("status".to_string(), IndexType::Text),
        ]),
        compound: vec![vec!["item".to_string(), "at".to_string()]],
        search: None,
    }
}

fn at(i: u64) -> String {
    let t = jiff::Timestamp::from_second(START_S + i as i64 * 31).expect("in range");
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A tiny deterministic generator, so both sizes see the same kind of queries.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Writes `n` movements straight into the database (the host's own encodings, through one
/// prepared statement per table): the bench measures reads, and a million documents through
/// the commit path would take minutes.
fn fill(path: &std::path::Path, scope: &Scope, n: u64) -> Result<()> {
    let indexes = movements();
    let mut db = rusqlite::Connection::open(path)?;
    let tx = db.transaction()?;
    {
        let mut doc = tx.prepare(
            "INSERT INTO documents (tenant_id, plugin_id, collection, key, version, body, created_at, updated_at, size) \
             VALUES (?1, ?2, 'movements', ?3, 1, ?4, 0, 0, ?5)",
        )?;
        let mut entry = tx.prepare(
            "INSERT INTO document_index (tenant_id, plugin_id, collection, field, value, key) \
             VALUES (?1, ?2, 'movements', ?3, ?4, ?5)",
        )?;
        for i in 0..n {
            let body = serde_json::json!({
                "item": format!("item-{:04}", (i * 7) % ITEMS),
                "at": at(i),
                "qty": format!("{}.{:02}", (i * 7919) % 1000, i % 100),
                "status": if i % 10 == 0 { "void" } else { "ok" },
            });
            let key = format!("m{i:08}");
            let text = body.to_string();
            doc.execute(rusqlite::params![scope.tenant, scope.plugin, key, text, (key.len() + text.len()) as i64])?;
            for (name, value) in indexes.entries(&body).map_err(|(f, r)| anyhow::anyhow!("{f} {r}"))? {
                entry.execute(rusqlite::params![scope.tenant, scope.plugin, name, value, key])?;
            }
        }
    }
    tx.commit()?;
    // No ANALYZE: the host never runs it, so the plans measured are the ones it gets.
    Ok(())
}

type Shape = fn(&mut Lcg, u64) -> Vec<Condition>;

fn cond(field: &str, op: Comparison, value: String) -> Condition {
    Condition { field: field.into(), op, value }
}

/// (name, order field, conditions, whether the 5 ms target applies: the third shape shows
/// what per-document checks cost, a seek each, and has no target).
const SHAPES: [(&str, &str, Shape, bool); 3] = [
    ("range `at >= T` ordered by `at`", "at", |r, n| vec![cond("at", Comparison::Ge, at(r.below(n)))], true),
    (
        "`item = X`, `at >= T`, ordered by `at` (compound index)",
        "at",
        |r, n| {
            vec![
                cond("item", Comparison::Eq, format!("item-{:04}", r.below(ITEMS))),
                cond("at", Comparison::Ge, at(r.below(n / 2))),
            ]
        },
        true,
    ),
    (
        "range `qty >= Q` ordered by `qty`, two more conditions per document",
        "qty",
        |r, _| {
            vec![
                cond("qty", Comparison::Ge, format!("{}", r.below(900))),
                cond("status", Comparison::Ne, "void".into()),
                cond("item", Comparison::Ne, format!("item-{:04}", r.below(ITEMS))),
            ]
        },
        false,
    ),
];

/// p50 and p99 of each query shape over a collection of `n` documents.
async fn measure(n: u64, queries: usize) -> Result<Vec<(Duration, Duration)>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("queries.db");
    let pool = keel_host::backend::sqlite::open_pool(&path).await?;
    let scope = Scope { tenant: "bench".into(), plugin: "inventory".into() };
    let started = Instant::now();
    let (filled, scope) = (path.clone(), scope.clone());
    tokio::task::spawn_blocking(move || fill(&filled, &scope, n)).await??;
    let scope = Scope { tenant: "bench".into(), plugin: "inventory".into() };
    let store = SqliteDocumentStore::new(pool);
    eprintln!("(g) {n} documents written in {:.1} s", started.elapsed().as_secs_f64());
    let store: Arc<dyn DocumentStore> = Arc::new(store);
    let collections = Arc::new(BTreeMap::from([("movements".to_string(), movements())]));
    let mut out = Vec::new();
    for (name, order, shape, _) in SHAPES {
        let mut rng = Lcg(42);
        let mut times = Vec::with_capacity(queries);
        for q in 0..queries + queries / 10 {
            let call = UnitOfWork::new(store.clone(), scope.clone(), collections.clone(), StorageLimits::default());
            let spec = Find {
                collection: "movements".into(),
                conditions: shape(&mut rng, n),
                order_by: Some(order.into()),
                cursor: None,
                limit: PAGE,
                descending: false,
            };
            let started = Instant::now();
            let (docs, _) = call.find(&spec).await?;
            let took = started.elapsed();
            if docs.is_empty() && n >= 10_000 && !name.contains("compound") {
                bail!("{name}: a query found nothing; the data or the query is wrong");
            }
            // The first tenth warms the page cache and statement cache.
            if q >= queries / 10 {
                times.push(took);
            }
        }
        times.sort();
        out.push((percentile(&times, 0.5), percentile(&times, 0.99)));
    }
    Ok(out)
}

pub async fn queries(quick: bool) -> Result<Vec<Row>> {
    let (small, large, queries) = if quick { (10_000, 100_000, 300) } else { (10_000, 1_000_000, 2_000) };
    let base = measure(small, queries).await?;
    let big = measure(large, queries).await?;
    let target = Duration::from_millis(5);
    let mut rows = Vec::new();
    for (((name, _, _, targeted), (_, small_p99)), (p50, p99)) in SHAPES.iter().zip(&base).zip(&big) {
        eprintln!("(g) {name}: {large} docs p50 {} p99 {}; {small} docs p99 {}", us(*p50), us(*p99), us(*small_p99));
        rows.push(Row {
            name: format!("(g) {name}, {PAGE} a page"),
            value: format!(
                "{large} docs: p50 {}, p99 {}; {small} docs: p99 {} ({:.2}x)",
                us(*p50),
                us(*p99),
                us(*small_p99),
                p99.as_secs_f64() / small_p99.as_secs_f64()
            ),
            target: if *targeted { "p99 ≤ 5 ms over 1,000,000 documents" } else { "" },
            pass: targeted.then_some(*p99 <= target),
        });
    }
    Ok(rows)
}

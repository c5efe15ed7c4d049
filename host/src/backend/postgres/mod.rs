//! The PostgreSQL backend: several stateless hosts share one database.
//!
//! Opening applies the migrations in `migrations/postgres/` under an advisory lock, so
//! replicas starting together migrate once. Every connection runs with a statement timeout.
//! Every concern is implemented and passes [`crate::backend::conformance`] as SQLite does.

mod audit;
mod catalog;
mod changes;
mod directory;
mod documents;
mod jobs;
mod settings;
mod shares;

pub use audit::PgAudit;
pub use catalog::PgCatalog;
pub use changes::PgChangeFeed;
pub use directory::PgDirectory;
pub use documents::PgDocumentStore;
pub use jobs::PgJobQueue;
pub use settings::PgSettings;
pub use shares::ConnectionShares;

use super::{Backend, BackendError, Database, OpenError};
use crate::storage::StoreSettings;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Migrations, in order. Each is applied once, in a transaction, and recorded.
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "schema", include_str!("../../../../migrations/postgres/0001_schema.sql")),
    (2, "change feed", include_str!("../../../../migrations/postgres/0002_change_feed.sql")),
    (3, "signatures", include_str!("../../../../migrations/postgres/0003_signatures.sql")),
    (4, "tenant versions", include_str!("../../../../migrations/postgres/0004_tenant_versions.sql")),
    (5, "user accounts", include_str!("../../../../migrations/postgres/0005_user_accounts.sql")),
];

/// The horizon for reading an append-only log (events, the audit log) in id order: rows of
/// transactions below it are all committed or gone, so a page never passes an id that a
/// later commit could still fill. Only this database's transactions can write its rows, so
/// only they hold the horizon back (not a long transaction in another database on the same
/// server). Those running when the read began are waited for, up to `SETTLE_WAIT`, so a
/// reader sees what committed before it asked, its own writes included; past that wait the
/// horizon is the oldest one still running, and what it holds appears on a later read.
pub(super) async fn settled_horizon(pool: &PgPool) -> Result<i64, sqlx::Error> {
    const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
    // The oldest transaction id still running in this database, else the next to be given:
    // one not yet given an id gets one at or past `xmax` when it first writes.
    const HORIZON: &str = "SELECT COALESCE(( \
            SELECT min(x::text::bigint) FROM pg_snapshot_xip(s) AS x \
            WHERE xid(x) IN (SELECT backend_xid FROM pg_stat_activity \
                             WHERE datname = current_database() AND backend_xid IS NOT NULL) \
        ), pg_snapshot_xmax(s)::text::bigint), pg_snapshot_xmax(s)::text::bigint \
        FROM pg_current_snapshot() AS s";
    let (mut horizon, asked): (i64, i64) = sqlx::query_as(HORIZON).fetch_one(pool).await?;
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    while horizon < asked && started.elapsed() < SETTLE_WAIT {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
        horizon = sqlx::query_as::<_, (i64, i64)>(HORIZON).fetch_one(pool).await?.0;
    }
    Ok(horizon.min(asked))
}

/// Taken (per transaction) while migrating: replicas starting at once migrate one at a time.
const MIGRATION_LOCK: i64 = 0x6b65_656c_6d69_67; // "keelmig"

/// How the pool is sized and how long a statement may run.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
    /// How many times to try reaching a database that does not answer at start (`None`:
    /// until it does).
    pub connect_tries: Option<u32>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 16,
            // Below the default plugin timeout (5 s), so a call that waits for a database
            // that is away ends with 503, not the plugin's timeout.
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(30),
            connect_tries: None,
        }
    }
}

/// Every concern on the PostgreSQL database at `url` (migrated if needed).
pub async fn open(url: &str, settings: StoreSettings, pool: &PoolSettings) -> Result<Backend, OpenError> {
    let pool = open_pool(url, pool).await?;
    Ok(from_pool(pool, settings))
}

/// Every concern on an open, migrated pool.
pub fn from_pool(pool: PgPool, settings: StoreSettings) -> Backend {
    Backend {
        database: Arc::new(PgDatabase::new(&pool)),
        documents: Arc::new(PgDocumentStore::new(pool.clone(), settings)),
        jobs: Arc::new(PgJobQueue::new(pool.clone())),
        catalog: Arc::new(PgCatalog(pool.clone())),
        tenancy: Arc::new(PgDirectory(pool.clone())),
        tokens: Arc::new(PgDirectory(pool.clone())),
        users: Arc::new(PgDirectory(pool.clone())),
        audit: Arc::new(PgAudit(pool.clone())),
        settings: Arc::new(PgSettings(pool.clone())),
        changes: Some(Arc::new(PgChangeFeed::new(pool))),
    }
}

/// The database as a whole. Pings go over connections of their own: a ping asks whether the
/// server answers, and must not wait behind the calls that hold the pool (a pool saturated by
/// slow calls is not a database that is away).
///
/// One ping runs at a time and its answer serves every caller for [`PING_REUSE`]: a burst
/// of timed-out calls asking at once does not queue pings until they look slow.
struct PgDatabase {
    pool: PgPool,
    probe: PgPool,
    last: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
}

/// How long a ping's answer is reused.
const PING_REUSE: Duration = Duration::from_millis(250);

impl PgDatabase {
    fn new(pool: &PgPool) -> Self {
        let probe = PgPoolOptions::new()
            .max_connections(1)
            // Kept open, so a ping after a quiet hour does not have to connect first.
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(1))
            // (sqlx's default, relied on:) a connection the server dropped (a restart) is
            // found before use, so the first ping after the database is back answers yes.
            .test_before_acquire(true)
            .connect_lazy_with(pool.connect_options().as_ref().clone());
        PgDatabase { pool: pool.clone(), probe, last: tokio::sync::Mutex::new(None) }
    }
}

#[async_trait]
impl Database for PgDatabase {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), BackendError> {
        // Callers arriving while a ping runs wait for its answer instead of sending their own.
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < PING_REUSE
        {
            return answer.clone().map_err(BackendError::Unavailable);
        }
        let answer = match sqlx::query("SELECT 1").execute(&self.probe).await {
            Ok(_) => Ok(()),
            Err(e) => Err(match BackendError::from(e) {
                BackendError::Unavailable(reason) => reason,
                other => other.to_string(),
            }),
        };
        *last = Some((std::time::Instant::now(), answer.clone()));
        answer.map_err(BackendError::Unavailable)
    }

    async fn close(&self) {
        self.probe.close().await;
        self.pool.close().await;
    }
}

/// Connects to `url` and migrates the database.
pub async fn open_pool(url: &str, settings: &PoolSettings) -> Result<PgPool, OpenError> {
    let shown = redacted(url);
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| OpenError::Open { url: shown.clone(), reason: e.to_string() })?
        .application_name("keel")
        .options([("statement_timeout", format!("{}ms", settings.statement_timeout.as_millis()))]);
    let pool = PgPoolOptions::new()
        // No ping before every use: it doubles a point read's round trips. A connection the
        // server dropped fails its next statement (answered 503) and leaves the pool.
        .test_before_acquire(false)
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options);
    // A database that is not up yet (starting, restarting, not reachable) is waited for, with
    // the reason logged at every try; one that refuses us for good (a wrong password, no such
    // database) ends the start with its reason.
    let mut pause = Duration::from_millis(250);
    let mut tries = 0u32;
    loop {
        match migrate(&pool).await {
            Ok(()) => return Ok(pool),
            Err(OpenError::Backend(BackendError::Unavailable(reason)))
                if settings.connect_tries.is_none_or(|max| tries + 1 < max) =>
            {
                tries += 1;
                tracing::warn!(url = %shown, %reason, retry_in_ms = pause.as_millis() as u64,
                    "the database is not answering; waiting for it");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(OpenError::Backend(e)) => return Err(OpenError::Open { url: shown, reason: e.to_string() }),
            Err(other) => return Err(other),
        }
    }
}

/// Creates the database `name` (letters, digits and `_`) on the server at `server_url`
/// (whose user may create databases) unless it exists, and returns its URL: for tests and
/// local demos, never for production, whose database an operator makes. UTF-8 with a UTF-8
/// ctype, as the text search needs.
pub async fn create_database(server_url: &str, name: &str) -> Result<String, OpenError> {
    let failed = |e: sqlx::Error| OpenError::Open { url: redacted(server_url), reason: e.to_string() };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(OpenError::Open { url: redacted(server_url), reason: format!("`{name}` is not a database name") });
    }
    let admin = PgPool::connect(server_url).await.map_err(failed)?;
    let create =
        format!("CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C.UTF-8'");
    match sqlx::query(sqlx::AssertSqlSafe(create)).execute(&admin).await {
        Ok(_) => {}
        // duplicate_database: made before (a restarted test host, a second replica).
        Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("42P04") => {}
        Err(e) => return Err(failed(e)),
    }
    admin.close().await;
    let database = name;
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server_url, String::new()),
    };
    let (server, _) = base.rsplit_once('/').ok_or_else(|| OpenError::UnsupportedUrl(redacted(server_url)))?;
    Ok(format!("{server}/{database}{query}"))
}

/// The URL without its password or parameters, for messages.
fn redacted(url: &str) -> String {
    let url = url.split('?').next().unwrap_or_default();
    match url.split_once("://").and_then(|(scheme, rest)| Some((scheme, rest.split_once('@')?))) {
        Some((scheme, (credentials, host))) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

async fn migrate(pool: &PgPool) -> Result<(), OpenError> {
    let mut tx = pool.begin().await.map_err(BackendError::from)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(BackendError::from)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS keel_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(BackendError::from)?;
    let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM keel_migrations")
        .fetch_one(&mut *tx)
        .await
        .map_err(BackendError::from)?;
    let applied = applied.unwrap_or(0);
    let newest = POSTGRES_MIGRATIONS.last().map_or(0, |m| m.0);
    if applied > newest {
        return Err(OpenError::TooNew(applied));
    }
    // One transaction for all of them: PostgreSQL's DDL is transactional, and the lock is
    // held until the last is recorded.
    for &(version, name, sql) in POSTGRES_MIGRATIONS.iter().filter(|m| m.0 > applied) {
        let wrap = |e: sqlx::Error| OpenError::Migration { version, name, reason: e.to_string() };
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await.map_err(wrap)?;
        sqlx::query("INSERT INTO keel_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(version)
            .bind(name)
            .bind(crate::clock::system_now_ms())
            .execute(&mut *tx)
            .await
            .map_err(wrap)?;
    }
    tx.commit().await.map_err(BackendError::from)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fresh database per test on the throwaway PostgreSQL (`scripts/throwaway-postgres`),
    //! whose URL `cargo xtask test` puts in `KEEL_TEST_PG_URL`.

    use sqlx::postgres::PgPool;

    /// The server's URL; a run without it fails (a PostgreSQL test never passes by skipping).
    pub fn server_url() -> String {
        std::env::var("KEEL_TEST_PG_URL").unwrap_or_else(|_| {
            panic!(
                "KEEL_TEST_PG_URL is not set: run the tests with `cargo xtask test`, which starts a throwaway \
                 PostgreSQL, or under `scripts/throwaway-postgres run -- cargo test`"
            )
        })
    }

    /// A new, empty, migrated database; dropped by nobody (the throwaway server goes away).
    pub async fn fresh_pool(name: &str) -> PgPool {
        let database = format!("keel_{name}_{}", crate::jobs::random_id("db").trim_start_matches("db_"));
        let url = super::create_database(&server_url(), &database).await.expect("create a test database");
        super::open_pool(&url, &Default::default()).await.expect("open and migrate the test database")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::fresh_pool;
    use std::sync::Arc;

    /// A server that refuses connections is waited for (tries counted), then named with the
    /// reason; nothing panics.
    #[tokio::test]
    async fn a_database_that_refuses_connections_is_waited_for_and_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("postgres://keel:secret@127.0.0.1:{port}/keel");
        let settings = super::PoolSettings { connect_tries: Some(3), ..Default::default() };
        let started = std::time::Instant::now();
        let err = super::open_pool(&url, &settings).await.unwrap_err();
        let message = err.to_string();
        assert!(message.contains("127.0.0.1") && !message.contains("secret"), "{message}");
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(700),
            "waited between tries: {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(super::redacted("postgres://keel:hunter2@db:5432/keel"), "postgres://keel:***@db:5432/keel");
        assert_eq!(super::redacted("postgres://db/keel"), "postgres://db/keel");
        assert_eq!(super::redacted("postgres://db/keel?password=hunter2"), "postgres://db/keel");
    }

    #[tokio::test]
    async fn migrating_twice_changes_nothing() {
        let pool = fresh_pool("migrate").await;
        super::migrate(&pool).await.unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM keel_migrations ORDER BY version").fetch_all(&pool).await.unwrap();
        assert_eq!(versions, [1, 2, 3, 4, 5]);
    }

    /// Calls holding every connection of the pool do not make the database look away: the
    /// ping has connections of its own.
    #[tokio::test]
    async fn a_ping_answers_while_calls_hold_the_whole_pool() {
        let pool = fresh_pool("probe").await;
        let backend = super::from_pool(pool.clone(), Default::default());
        let held: Vec<_> =
            futures_util::future::join_all((0..pool.options().get_max_connections()).map(|_| pool.acquire()))
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .unwrap();
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(100), pool.acquire()).await.is_err(),
            "the pool is exhausted"
        );
        let ping = tokio::time::timeout(std::time::Duration::from_millis(500), backend.database.ping()).await;
        assert!(matches!(ping, Ok(Ok(()))), "{ping:?}");
        drop(held);
    }

    #[tokio::test]
    async fn postgres_passes_the_backend_conformance_suite() {
        let backend = super::from_pool(fresh_pool("conformance").await, Default::default());
        assert_eq!(backend.database.kind(), "postgres");
        crate::backend::conformance::run_all(&backend).await;
    }

    /// Writes to keys a call never read take their versions from pages read ahead: right for
    /// keys that exist, keys that do not, and keys past a page; a condition still holds.
    #[tokio::test]
    async fn a_call_writing_keys_it_never_read_learns_their_versions_a_page_at_a_time() {
        use crate::storage::{Condition, DocumentStore, Scope, StorageLimits, WriteAudit};
        use crate::storage::{UnitOfWork, UnitOfWorkError};
        let store: Arc<dyn DocumentStore> =
            Arc::new(super::PgDocumentStore::new(fresh_pool("ahead").await, Default::default()));
        let call = || {
            let collections = std::collections::BTreeMap::from([("items".to_owned(), Default::default())]);
            let limits = StorageLimits { max_writes_per_call: 1000, ..StorageLimits::default() };
            UnitOfWork::new(
                store.clone(),
                Scope { tenant: "t".into(), plugin: "p".into() },
                Arc::new(collections),
                limits,
            )
        };
        let audit = WriteAudit { actor: "tok_test".into(), actor_name: "test".into(), request_id: "req".into() };
        // Every third key of 300 exists; k003 twice written.
        let mut seed = call();
        for i in (0..300).step_by(3) {
            seed.put("items", &format!("k{i:03}"), "{}", Condition::Absent).await.unwrap();
        }
        seed.put("items", "k003", "{}", Condition::Version(1)).await.unwrap();
        seed.commit(1, &audit).await.unwrap();

        let mut write = call();
        for i in 0..300 {
            let key = format!("k{i:03}");
            let existing = match i {
                3 => 2,
                _ if i % 3 == 0 => 1,
                _ => 0,
            };
            assert_eq!(write.put("items", &key, "{}", Condition::Any).await.unwrap(), existing + 1, "{key}");
        }
        assert!(matches!(write.put("items", "k999", "{}", Condition::Absent).await, Ok(1)));
        let mut refused = call();
        refused.put("items", "k001", "{}", Condition::Absent).await.unwrap();
        assert!(matches!(
            refused.put("items", "k000", "{}", Condition::Absent).await,
            Err(UnitOfWorkError::Conflict(_))
        ));
        write.commit(2, &audit).await.unwrap();
        let k003 = store.get(&Scope { tenant: "t".into(), plugin: "p".into() }, "items", "k003").await.unwrap();
        assert_eq!(k003.unwrap().version, 3);
    }

    /// A tenant's move to a version whose index its data does not fit records nothing; one
    /// it fits writes that tenant's entries and full-text rows with its new version, and
    /// leaves other tenants' alone.
    #[tokio::test]
    async fn moving_a_tenant_reindexes_its_data_in_the_transaction_or_not_at_all() {
        use crate::plugins::{PluginCatalog, Reindex, TenantSwitch};
        use crate::storage::index::{CollectionIndexes, IndexType};
        use crate::storage::search::{SearchField, SearchFields};
        let pool = fresh_pool("reindex").await;
        for tenant in ["a", "b"] {
            sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $1, 0)")
                .bind(tenant)
                .execute(&pool)
                .await
                .unwrap();
        }
        for (tenant, key, body) in [("a", "k1", r#"{"n":"seven","note":"Café e-mail"}"#), ("b", "k2", r#"{"n":7}"#)] {
            sqlx::query(
                "INSERT INTO documents (tenant_id, plugin_id, collection, key, version, body, created_at, updated_at, size) \
                 VALUES ($1, 'p', 'notes', $2, 1, $3, 0, 0, 10)",
            )
            .bind(tenant)
            .bind(key)
            .bind(body)
            .execute(&pool)
            .await
            .unwrap();
        }
        let catalog = super::PgCatalog(pool.clone());
        let switch = TenantSwitch { tenant: "a", plugin: "p", from: None, to: "2.0.0", enabled: Some(true), now: 1 };
        let typed = |t| CollectionIndexes { fields: [("n".to_owned(), t)].into(), ..Default::default() };
        let step = |indexes: CollectionIndexes, rebuild: &[&str]| Reindex {
            collection: "notes".into(),
            indexes,
            drop: vec![],
            rebuild: rebuild.iter().map(|s| s.to_string()).collect(),
            clear: true,
        };
        let refused = catalog.switch_tenant(&switch, &[step(typed(IndexType::Integer), &["n"])]).await;
        assert!(
            matches!(refused, Err(crate::storage::ReindexError::Mismatch { ref key, .. }) if key == "k1"),
            "{refused:?}"
        );
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_plugins").fetch_one(&pool).await.unwrap();
        assert_eq!(rows, 0, "nothing recorded");
        let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM document_index").fetch_one(&pool).await.unwrap();
        assert_eq!(entries, 0);

        let mut fits = typed(IndexType::Text);
        fits.search = Some(SearchFields(vec![SearchField { path: "note".into(), weight: 1 }]));
        let written =
            catalog.switch_tenant(&switch, &[step(fits, &["n", crate::storage::index::SEARCH_INDEX])]).await.unwrap();
        assert_eq!(written, [2], "one entry and one full-text row, tenant a's only");
        let version: String = sqlx::query_scalar("SELECT version FROM tenant_plugins WHERE tenant_id = 'a'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(version, "2.0.0");
        let values: Vec<String> =
            sqlx::query_scalar("SELECT value FROM document_index ORDER BY value").fetch_all(&pool).await.unwrap();
        assert_eq!(values, ["seven"]);
        // Decided against a version the tenant no longer runs: superseded, nothing changes.
        let stale = TenantSwitch { from: Some("1.0.0"), to: "3.0.0", ..switch };
        let lost = catalog.switch_tenant(&stale, &[]).await;
        assert!(
            matches!(&lost, Err(crate::storage::ReindexError::Superseded { found: Some(f), .. }) if f == "2.0.0"),
            "{lost:?}"
        );
        // Stored as the query parser cuts words, and folded by the database.
        let (text, found): (String, bool) = sqlx::query_as(
            "SELECT c0, doc @@ to_tsquery('keel_simple', 'cafe & mail') FROM search_rows WHERE tenant_id = 'a'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((text.as_str(), found), ("Café e mail", true));
    }

    #[tokio::test]
    async fn the_audit_log_refuses_changes() {
        let pool = fresh_pool("audit").await;
        let log = crate::audit::AuditLog::new(Arc::new(super::PgAudit(pool.clone())), Arc::default());
        let action = crate::audit::AdminAction {
            tenant: None,
            action: "tenant.create",
            plugin: None,
            detail: serde_json::json!({}),
        };
        log.append("tok_x", "x", "req_1", action).await;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log").fetch_one(&pool).await.unwrap();
        assert_eq!(count, 1);
        for change in ["UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log", "TRUNCATE audit_log"] {
            assert!(sqlx::query(change).execute(&pool).await.is_err(), "{change}");
        }
        let actor: String = sqlx::query_scalar("SELECT actor FROM audit_log").fetch_one(&pool).await.unwrap();
        assert_eq!(actor, "tok_x");
    }

    #[tokio::test]
    async fn a_page_of_the_audit_log_waits_for_an_entry_committing_under_a_smaller_id() {
        let pool = fresh_pool("audit_order").await;
        let rows = super::PgAudit(pool.clone());
        // A transaction takes id 1 and stays open; another commits id 2.
        let mut slow = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO audit_log (at, actor, actor_name, action) VALUES (1, 'a', 'a', 'slow')")
            .execute(&mut *slow)
            .await
            .unwrap();
        let action =
            crate::audit::AdminAction { tenant: None, action: "fast", plugin: None, detail: serde_json::json!({}) };
        let entry =
            crate::audit::NewAuditEntry { at: 2, actor: "b", actor_name: "b", request_id: "r", action: &action };
        crate::audit::AuditRows::append(&rows, &entry).await.unwrap();
        // A reader must not see 2 yet: paging past it would skip 1 for good.
        let page = crate::audit::AuditRows::entries(&rows, None, None, 0, 10).await.unwrap();
        assert!(page.is_empty(), "{page:?}");
        slow.commit().await.unwrap();
        // Other tests' transactions on the same server may hold the page back a moment longer.
        let settled = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let page = loop {
            let page = crate::audit::AuditRows::entries(&rows, None, None, 0, 10).await.unwrap();
            if page.len() == 2 || std::time::Instant::now() > settled {
                break page;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(page.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["slow", "fast"]);
    }
}

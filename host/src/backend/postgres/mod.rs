//! The PostgreSQL backend: several stateless hosts share one database.
//!
//! Opening applies the migrations in `migrations/postgres/` under an advisory lock, so
//! replicas starting together migrate once. Every connection runs with a statement timeout.
//! Implemented so far: the directory (tenants, enablement, grants, tokens, users), the audit
//! log, plugin settings, the plugin catalog and the job queue; each passes its part of
//! [`crate::backend::conformance`]. The document store follows.

mod audit;
mod catalog;
mod directory;
mod documents;
mod jobs;
mod settings;

pub use audit::PgAudit;
pub use catalog::PgCatalog;
pub use directory::PgDirectory;
pub use jobs::PgJobQueue;
pub use settings::PgSettings;

use super::{BackendError, OpenError};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// Migrations, in order. Each is applied once, in a transaction, and recorded.
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "schema", include_str!("../../../../migrations/postgres/0001_schema.sql"))];

/// Taken (per transaction) while migrating: replicas starting at once migrate one at a time.
const MIGRATION_LOCK: i64 = 0x6b65_656c_6d69_67; // "keelmig"

/// How the pool is sized and how long a statement may run.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
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
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|e| OpenError::Open { url: shown, reason: e.to_string() })?;
    migrate(&pool).await?;
    Ok(pool)
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
        let server = server_url();
        let admin = PgPool::connect(&server).await.expect("connect to the test PostgreSQL");
        let database = format!("keel_{name}_{}", crate::jobs::random_id("db").trim_start_matches("db_"));
        // A UTF-8 ctype, as production needs for the text search's case folding.
        let create = format!(
            "CREATE DATABASE \"{database}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C.UTF-8'"
        );
        sqlx::query(sqlx::AssertSqlSafe(create)).execute(&admin).await.expect("create a test database");
        admin.close().await;
        let (base, _) = server.rsplit_once('/').expect("a database URL ends in /<database>");
        let url = format!("{base}/{database}");
        super::open_pool(&url, &Default::default()).await.expect("open and migrate the test database")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::fresh_pool;
    use std::sync::Arc;

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
        assert_eq!(versions, [1]);
    }

    #[tokio::test]
    async fn postgres_passes_the_directory_audit_settings_and_catalog_conformance() {
        let pool = fresh_pool("conformance").await;
        let directory = super::PgDirectory(pool.clone());
        crate::backend::conformance::directory(&directory, &directory, &directory).await;
        crate::backend::conformance::the_audit_log_filters_and_pages(&super::PgAudit(pool.clone())).await;
        let settings = super::PgSettings(pool.clone());
        crate::backend::conformance::settings_change_all_or_nothing(&settings).await;
        crate::backend::conformance::plugin_versions_activate_and_remove(&super::PgCatalog(pool.clone()), &settings)
            .await;
    }

    /// An upgrade whose index the stored data does not fit records nothing; one it fits
    /// writes the entries and full-text rows with the version.
    #[tokio::test]
    async fn activating_a_version_reindexes_in_its_transaction_or_not_at_all() {
        use crate::plugins::{NewVersion, PluginCatalog, Reindex};
        use crate::storage::index::{CollectionIndexes, IndexType};
        use crate::storage::search::{SearchField, SearchFields};
        let pool = fresh_pool("reindex").await;
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
        let version = NewVersion { id: "p", version: "2.0.0", digest: "d2", manifest: "", bytes: b"x", now: 1 };
        let typed = |t| CollectionIndexes { fields: [("n".to_owned(), t)].into(), ..Default::default() };
        let step = |indexes: CollectionIndexes, rebuild: &[&str]| Reindex {
            collection: "notes".into(),
            indexes,
            drop: vec![],
            rebuild: rebuild.iter().map(|s| s.to_string()).collect(),
        };
        let refused = catalog.activate(&version, &[step(typed(IndexType::Integer), &["n"])]).await;
        assert!(
            matches!(refused, Err(crate::storage::ReindexError::Mismatch { ref key, .. }) if key == "k1"),
            "{refused:?}"
        );
        assert_eq!(catalog.digest_of("p", "2.0.0").await.unwrap(), None, "nothing recorded");
        let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM document_index").fetch_one(&pool).await.unwrap();
        assert_eq!(entries, 0);

        let mut fits = typed(IndexType::Text);
        fits.search = Some(SearchFields(vec![SearchField { path: "note".into(), weight: 1 }]));
        let written =
            catalog.activate(&version, &[step(fits, &["n", crate::storage::index::SEARCH_INDEX])]).await.unwrap();
        assert_eq!(written, [3], "two entries and one full-text row");
        assert_eq!(catalog.digest_of("p", "2.0.0").await.unwrap().as_deref(), Some("d2"));
        let values: Vec<String> =
            sqlx::query_scalar("SELECT value FROM document_index ORDER BY value").fetch_all(&pool).await.unwrap();
        assert_eq!(values, ["7", "seven"]);
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
    async fn postgres_passes_the_queue_conformance() {
        let pool = fresh_pool("queue").await;
        crate::backend::conformance::queue(&super::PgJobQueue::new(pool)).await;
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

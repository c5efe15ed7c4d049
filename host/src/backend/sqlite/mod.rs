//! The embedded SQLite backend (WAL mode): one database file holds everything.
//!
//! Opening applies the schema migrations in `migrations/sqlite/`. Writers of this process
//! queue on a [`WriteGate`] before taking SQLite's one write lock.

mod audit;
mod catalog;
mod directory;
pub mod documents;
mod jobs;
mod settings;

pub use documents::SqliteDocumentStore;
pub use jobs::SqliteJobQueue;

use super::{Backend, BackendError, Database, OpenError};
use crate::storage::StoreSettings;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Migrations, in order. Each is applied once, in a transaction, and recorded.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "foundation", include_str!("../../../../migrations/sqlite/0001_foundation.sql")),
    (2, "tenancy", include_str!("../../../../migrations/sqlite/0002_tenancy.sql")),
    (3, "audit", include_str!("../../../../migrations/sqlite/0003_audit.sql")),
    (4, "users", include_str!("../../../../migrations/sqlite/0004_users.sql")),
    (5, "jobs", include_str!("../../../../migrations/sqlite/0005_jobs.sql")),
    (6, "fair share", include_str!("../../../../migrations/sqlite/0006_fair_share.sql")),
    (7, "plugin settings", include_str!("../../../../migrations/sqlite/0007_plugin_settings.sql")),
    (8, "sequences", include_str!("../../../../migrations/sqlite/0008_sequences.sql")),
    (9, "tasks", include_str!("../../../../migrations/sqlite/0009_tasks.sql")),
    (10, "index signatures", include_str!("../../../../migrations/sqlite/0010_index_signatures.sql")),
    (11, "full-text search", include_str!("../../../../migrations/sqlite/0011_search.sql")),
    (12, "signatures", include_str!("../../../../migrations/sqlite/0012_signatures.sql")),
    (13, "tenant versions", include_str!("../../../../migrations/sqlite/0013_tenant_versions.sql")),
    (14, "user accounts", include_str!("../../../../migrations/sqlite/0014_user_accounts.sql")),
];

/// The in-process gate for write transactions on one SQLite database file.
///
/// SQLite admits one writer at a time; a second `BEGIN IMMEDIATE` gets `SQLITE_BUSY` and the
/// busy handler sleeps (1 ms, 2 ms, 5 ms, ...) before retrying. Queuing this process's own
/// hot writers (document commits, job claims and outcomes) on the gate first hands the lock
/// over without those sleeps. Other processes still meet the busy timeout.
pub fn write_gate(pool: &SqlitePool) -> std::sync::Arc<WriteGate> {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex, OnceLock, Weak};
    static GATES: OnceLock<Mutex<HashMap<PathBuf, Weak<WriteGate>>>> = OnceLock::new();
    let file = pool.connect_options().get_filename().to_path_buf();
    let mut gates = GATES.get_or_init(Default::default).lock().expect("write gate registry");
    gates.retain(|_, gate| gate.strong_count() > 0);
    if let Some(gate) = gates.get(&file).and_then(Weak::upgrade) {
        return gate;
    }
    let gate = Arc::new(WriteGate::default());
    gates.insert(file, Arc::downgrade(&gate));
    gate
}

/// One writer at a time, handed out in turns between tenants: when several wait, the next
/// turn goes to the next tenant (in id order after the last one served) that has a writer
/// waiting, so a tenant with many commits queued delays another tenant's commit by at most
/// one of its own, never by the whole queue. Within a tenant, first come first served.
#[derive(Default)]
pub struct WriteGate {
    state: std::sync::Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    held: bool,
    waiting: std::collections::BTreeMap<String, std::collections::VecDeque<tokio::sync::oneshot::Sender<WriteTurn>>>,
    last: Option<String>,
}

/// The writer's turn; the next writer's starts when it is dropped.
pub struct WriteTurn {
    gate: std::sync::Arc<WriteGate>,
}

impl Drop for WriteTurn {
    fn drop(&mut self) {
        self.gate.pass_on();
    }
}

impl WriteGate {
    /// Waits for a turn to write on behalf of `tenant` (`""` for the platform's own work).
    pub async fn turn(self: &std::sync::Arc<Self>, tenant: &str) -> WriteTurn {
        let rx = {
            let mut s = self.state.lock().expect("write gate lock");
            if !s.held {
                s.held = true;
                s.last = Some(tenant.to_owned());
                return WriteTurn { gate: self.clone() };
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            s.waiting.entry(tenant.to_owned()).or_default().push_back(tx);
            rx
        };
        // A turn handed to a waiter that went away is dropped in the channel, which passes it on.
        match rx.await {
            Ok(turn) => turn,
            // The gate was dropped with us waiting: nobody else can write through it either.
            Err(_) => WriteTurn { gate: self.clone() },
        }
    }

    fn pass_on(self: &std::sync::Arc<Self>) {
        loop {
            let next = {
                let mut s = self.state.lock().expect("write gate lock");
                let after = s.last.clone().unwrap_or_default();
                let tenant = s
                    .waiting
                    .range::<String, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                    .map(|(t, _)| t.clone())
                    .next()
                    .or_else(|| s.waiting.keys().next().cloned());
                let Some(tenant) = tenant else {
                    s.held = false;
                    return;
                };
                let queue = s.waiting.get_mut(&tenant).expect("tenant has a queue");
                let next = queue.pop_front();
                if queue.is_empty() {
                    s.waiting.remove(&tenant);
                }
                s.last = Some(tenant);
                next
            };
            if let Some(tx) = next
                && !tx.is_closed()
            {
                // On failure the turn comes back and its drop passes it on again.
                let _ = tx.send(WriteTurn { gate: self.clone() });
                return;
            }
        }
    }
}

#[cfg(test)]
mod conformance_tests {
    #[tokio::test]
    async fn sqlite_passes_the_backend_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let backend = super::open(&dir.path().join("conformance.db"), Default::default()).await.unwrap();
        crate::backend::conformance::run_all(&backend).await;
    }

    #[tokio::test]
    async fn urls_choose_the_backend_and_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("by-url.db").display());
        let backend = crate::backend::Backend::open(&url, Default::default(), &Default::default()).await.unwrap();
        assert_eq!(backend.database.kind(), "sqlite");
        for url in ["mysql://x", "sqlite://", "keel.db"] {
            let refused = crate::backend::Backend::open(url, Default::default(), &Default::default()).await;
            assert!(matches!(refused, Err(crate::backend::OpenError::UnsupportedUrl(_))), "{url}");
        }
    }
}

#[cfg(test)]
mod migration_tests {
    use super::SQLITE_MIGRATIONS;

    /// A migration file that is not in the list is never applied: the schema silently lacks it.
    #[test]
    fn every_migration_file_is_applied_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
            .collect();
        files.sort();
        assert_eq!(files.len(), SQLITE_MIGRATIONS.len(), "files: {:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
        for (i, ((name, text), (version, _, sql))) in files.iter().zip(SQLITE_MIGRATIONS).enumerate() {
            assert_eq!(*version, i as i64 + 1, "versions count up from 1");
            assert!(name.starts_with(&format!("{:04}_", version)), "{name} is not migration {version}");
            assert_eq!(text, sql, "{name} is not the text registered as migration {version}");
        }
    }

    /// Tenants switched on before versions per tenant run the version that was active, and
    /// keep the index signature their entries were written with; a tenant holding data
    /// without a switch keeps its signature too.
    #[tokio::test]
    async fn tenants_from_before_versions_per_tenant_run_the_active_version() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        for (_, _, sql) in SQLITE_MIGRATIONS.iter().filter(|m| m.0 < 13) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&pool).await.unwrap();
        }
        sqlx::raw_sql(
            "INSERT INTO tenants (id, name, created_at) VALUES ('acme', 'Acme', 0), ('globex', 'Globex', 0); \
             INSERT INTO plugin_artifacts (digest, bytes, size, uploaded_at) VALUES ('d', x'00', 1, 0); \
             INSERT INTO plugin_versions (plugin_id, version, digest, manifest, installed_at) VALUES ('crm', '1.2.0', 'd', '', 0); \
             INSERT INTO plugins (id, active_version, enabled, installed_at, updated_at) VALUES ('crm', '1.2.0', 1, 0, 0); \
             INSERT INTO tenant_plugins (tenant_id, plugin_id, enabled, updated_at) VALUES ('acme', 'crm', 1, 0); \
             INSERT INTO documents (tenant_id, plugin_id, collection, key, version, body, created_at, updated_at, size) \
                VALUES ('globex', 'crm', 'cases', 'c1', 1, '{}', 0, 0, 2); \
             INSERT INTO index_signatures (plugin_id, collection, signature) VALUES ('crm', 'cases', 'sig');",
        )
        .execute(&pool)
        .await
        .unwrap();
        let (_, _, sql) = SQLITE_MIGRATIONS.iter().find(|m| m.0 == 13).unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&pool).await.unwrap();
        let version: Option<String> = sqlx::query_scalar("SELECT version FROM tenant_plugins WHERE tenant_id = 'acme'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(version.as_deref(), Some("1.2.0"));
        let signatures: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT tenant_id, plugin_id, collection, signature FROM scope_index_signatures ORDER BY tenant_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let expected = |t: &str| (t.to_owned(), "crm".to_owned(), "cases".to_owned(), "sig".to_owned());
        assert_eq!(signatures, [expected("acme"), expected("globex")]);
    }
}

#[cfg(test)]
mod write_gate_tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn turns_alternate_between_tenants_however_many_one_has_queued() {
        let gate = Arc::new(WriteGate::default());
        let first = gate.turn("a").await;
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, tenant) in ["a", "a", "a", "b"].into_iter().enumerate() {
            let (waiter, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = waiter.turn(tenant).await;
                order.lock().unwrap().push(format!("{tenant}{i}"));
            }));
            // Queue them in this order.
            while gate.state.lock().unwrap().waiting.values().map(|q| q.len()).sum::<usize>() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        // b's one writer went second, not behind all of a's.
        assert_eq!(*order.lock().unwrap(), ["b3", "a0", "a1", "a2"]);
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_does_not_keep_the_gate() {
        let gate = Arc::new(WriteGate::default());
        let first = gate.turn("a").await;
        let gone = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _ = gate.turn("b").await;
            })
        };
        while gate.state.lock().unwrap().waiting.is_empty() {
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        drop(first);
        // Free again at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), gate.turn("c")).await.expect("gate is free");
    }
}

/// Every concern on the SQLite file at `path` (created and migrated if needed).
pub async fn open(path: &Path, settings: StoreSettings) -> Result<Backend, OpenError> {
    let pool = open_pool(path).await?;
    Ok(Backend {
        database: Arc::new(SqliteDatabase(pool.clone())),
        documents: Arc::new(SqliteDocumentStore::with_settings(pool.clone(), settings)),
        jobs: Arc::new(SqliteJobQueue::new(pool.clone())),
        catalog: Arc::new(catalog::SqliteCatalog(pool.clone())),
        tenancy: Arc::new(directory::SqliteDirectory(pool.clone())),
        tokens: Arc::new(directory::SqliteDirectory(pool.clone())),
        users: Arc::new(directory::SqliteDirectory(pool.clone())),
        audit: Arc::new(audit::SqliteAudit(pool.clone())),
        settings: Arc::new(settings::SqliteSettings(pool)),
        // One host per database file: nobody else changes what this one holds.
        changes: None,
    })
}

struct SqliteDatabase(SqlitePool);

#[async_trait]
impl Database for SqliteDatabase {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), BackendError> {
        sqlx::query("SELECT 1").execute(&self.0).await?;
        Ok(())
    }

    async fn close(&self) {
        self.0.close().await;
    }
}

/// Opens (creating if needed) a SQLite database file in WAL mode and migrates it: the pool
/// itself, for the backend's stores and for benchmarks' native baselines.
pub async fn open_pool(path: &Path) -> Result<SqlitePool, OpenError> {
    let url = format!("sqlite://{}", path.display());
    let options = SqliteConnectOptions::from_str(&url)
        .map_err(|e| OpenError::Open { url: url.clone(), reason: e.to_string() })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| OpenError::Open { url, reason: e.to_string() })?;
    migrate(&pool).await?;
    Ok(pool)
}

async fn migrate(pool: &SqlitePool) -> Result<(), OpenError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS keel_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(BackendError::from)?;
    let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM keel_migrations")
        .fetch_one(pool)
        .await
        .map_err(BackendError::from)?;
    let applied = applied.unwrap_or(0);
    let newest = SQLITE_MIGRATIONS.last().map_or(0, |m| m.0);
    if applied > newest {
        return Err(OpenError::TooNew(applied));
    }
    for &(version, name, sql) in SQLITE_MIGRATIONS.iter().filter(|m| m.0 > applied) {
        let wrap = |e: sqlx::Error| OpenError::Migration { version, name, reason: e.to_string() };
        let mut tx = pool.begin().await.map_err(wrap)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await.map_err(wrap)?;
        sqlx::query("INSERT INTO keel_migrations (version, name, applied_at) VALUES (?, ?, ?)")
            .bind(version)
            .bind(name)
            .bind(crate::clock::system_now_ms())
            .execute(&mut *tx)
            .await
            .map_err(wrap)?;
        tx.commit().await.map_err(wrap)?;
    }
    Ok(())
}

//! Opening the database and applying the schema migrations in `migrations/`.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Migrations, in order. Each is applied once, in a transaction, and recorded.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "foundation", include_str!("../../migrations/sqlite/0001_foundation.sql")),
    (2, "tenancy", include_str!("../../migrations/sqlite/0002_tenancy.sql")),
    (3, "audit", include_str!("../../migrations/sqlite/0003_audit.sql")),
    (4, "users", include_str!("../../migrations/sqlite/0004_users.sql")),
    (5, "jobs", include_str!("../../migrations/sqlite/0005_jobs.sql")),
];

/// The in-process gate for write transactions on one SQLite database file.
///
/// SQLite admits one writer at a time; a second `BEGIN IMMEDIATE` gets `SQLITE_BUSY` and the
/// busy handler sleeps (1 ms, 2 ms, 5 ms, ...) before retrying. Queuing this process's own
/// hot writers (document commits, job claims and outcomes) on an async mutex first hands the
/// lock over without those sleeps. Other processes still meet the busy timeout.
pub fn write_gate(pool: &SqlitePool) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex, OnceLock, Weak};
    static GATES: OnceLock<Mutex<HashMap<PathBuf, Weak<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let file = pool.connect_options().get_filename().to_path_buf();
    let mut gates = GATES.get_or_init(Default::default).lock().expect("write gate registry");
    gates.retain(|_, gate| gate.strong_count() > 0);
    if let Some(gate) = gates.get(&file).and_then(Weak::upgrade) {
        return gate;
    }
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    gates.insert(file, Arc::downgrade(&gate));
    gate
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database `{url}`: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("migration {version} ({name}) failed: {source}")]
    Migration { version: i64, name: &'static str, source: sqlx::Error },
    #[error("the database has migration {0}, newer than this build knows; upgrade keel")]
    TooNew(i64),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Opens (creating if needed) a SQLite database file in WAL mode and migrates it.
pub async fn open_sqlite(path: &Path) -> Result<SqlitePool, DbError> {
    let url = format!("sqlite://{}", path.display());
    let options = SqliteConnectOptions::from_str(&url)
        .map_err(|source| DbError::Open { url: url.clone(), source })?
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
        .map_err(|source| DbError::Open { url, source })?;
    migrate(&pool).await?;
    Ok(pool)
}

async fn migrate(pool: &SqlitePool) -> Result<(), DbError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS keel_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM keel_migrations").fetch_one(pool).await?;
    let applied = applied.unwrap_or(0);
    let newest = SQLITE_MIGRATIONS.last().map_or(0, |m| m.0);
    if applied > newest {
        return Err(DbError::TooNew(applied));
    }
    for &(version, name, sql) in SQLITE_MIGRATIONS.iter().filter(|m| m.0 > applied) {
        let wrap = |source| DbError::Migration { version, name, source };
        let mut tx = pool.begin().await?;
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

//! The embedded SQLite document store (WAL mode).

use super::{
    Background, Condition, DocumentStore, KeyRange, Scope, StoreError, StoredDocument, Write, WriteAudit, WriteOp,
};
use crate::jobs::NewJob;
use async_trait::async_trait;
use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Row, Sqlite};

/// Documents in the `documents` and `document_index` tables of a SQLite database.
#[derive(Clone)]
pub struct SqliteDocumentStore {
    pool: SqlitePool,
    writes: std::sync::Arc<tokio::sync::Mutex<()>>,
    readers: std::sync::Arc<PointReaders>,
}

impl SqliteDocumentStore {
    pub fn new(pool: SqlitePool) -> Self {
        let writes = crate::db::write_gate(&pool);
        let file = pool.connect_options().get_filename().to_path_buf();
        SqliteDocumentStore { pool, writes, readers: std::sync::Arc::new(PointReaders::new(file)) }
    }
}

/// Read-only connections for point reads (`get`), used on the calling thread.
///
/// sqlx runs every SQLite statement on a worker thread per connection: a read costs two
/// thread hand-offs, which on a busy 2-core machine dominate a plugin call's latency (the
/// statement itself takes microseconds). A point read by primary key in WAL mode never waits
/// for writers, so it runs here directly; if SQLite is ever busy (a WAL recovery) the read
/// goes back to the pool. Writes, transactions and scans stay on sqlx.
struct PointReaders {
    file: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

const POINT_READ: &str =
    "SELECT version, body FROM documents WHERE tenant_id = ?1 AND plugin_id = ?2 AND collection = ?3 AND key = ?4";
/// Connections kept idle; more may be open while many reads run at once.
const MAX_IDLE_READERS: usize = 8;

impl PointReaders {
    fn new(file: std::path::PathBuf) -> Self {
        PointReaders { file, idle: std::sync::Mutex::new(Vec::new()) }
    }

    fn open(&self) -> Option<rusqlite::Connection> {
        use rusqlite::OpenFlags;
        if self.file.as_os_str().is_empty() || self.file.to_string_lossy().contains(":memory:") {
            return None;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let connection = rusqlite::Connection::open_with_flags(&self.file, flags).ok()?;
        // Never block the calling thread for long: busy means "use the pool instead".
        connection.busy_timeout(std::time::Duration::from_millis(20)).ok()?;
        Some(connection)
    }

    /// `None` when the fast path cannot answer (the caller then asks the pool).
    fn get(&self, scope: &Scope, collection: &str, key: &str) -> Option<Option<StoredDocument>> {
        let connection = self.idle.lock().ok()?.pop().or_else(|| self.open())?;
        let result = connection
            .prepare_cached(POINT_READ)
            .and_then(|mut statement| {
                let mut rows = statement.query(rusqlite::params![scope.tenant, scope.plugin, collection, key])?;
                match rows.next()? {
                    None => Ok(None),
                    Some(row) => Ok(Some(StoredDocument {
                        key: key.to_owned(),
                        version: to_u64(row.get(0)?),
                        body: row.get(1)?,
                    })),
                }
            })
            .ok();
        if result.is_some()
            && let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_READERS
        {
            idle.push(connection);
        }
        result
    }
}

fn db_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(ref d) if d.message().contains("locked") || d.message().contains("busy") => {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Internal(other.to_string()),
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[async_trait]
impl DocumentStore for SqliteDocumentStore {
    async fn get(&self, scope: &Scope, collection: &str, key: &str) -> Result<Option<StoredDocument>, StoreError> {
        if let Some(found) = self.readers.get(scope, collection, key) {
            return Ok(found);
        }
        let row = sqlx::query(
            "SELECT version, body FROM documents WHERE tenant_id = ? AND plugin_id = ? AND collection = ? AND key = ?",
        )
        .bind(&scope.tenant)
        .bind(&scope.plugin)
        .bind(collection)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(row.map(|r| StoredDocument { key: key.to_owned(), version: to_u64(r.get(0)), body: r.get(1) }))
    }

    async fn scan(&self, scope: &Scope, range: &KeyRange) -> Result<Vec<StoredDocument>, StoreError> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT d.key, d.version, d.body FROM documents d");
        for (i, f) in range.filters.iter().enumerate() {
            q.push(format!(
                " JOIN document_index i{i} ON i{i}.tenant_id = d.tenant_id AND i{i}.plugin_id = d.plugin_id \
                 AND i{i}.collection = d.collection AND i{i}.key = d.key AND i{i}.field = "
            ));
            q.push_bind(&f.field);
            q.push(format!(" AND i{i}.value = "));
            q.push_bind(&f.value);
        }
        q.push(" WHERE d.tenant_id = ").push_bind(&scope.tenant);
        q.push(" AND d.plugin_id = ").push_bind(&scope.plugin);
        q.push(" AND d.collection = ").push_bind(&range.collection);
        if let Some(after) = &range.after {
            q.push(if range.descending { " AND d.key < " } else { " AND d.key > " }).push_bind(after);
        }
        q.push(if range.descending { " ORDER BY d.key DESC" } else { " ORDER BY d.key ASC" });
        q.push(" LIMIT ").push_bind(i64::from(range.limit));
        let rows = q.build().fetch_all(&self.pool).await.map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| StoredDocument { key: r.get(0), version: to_u64(r.get(1)), body: r.get(2) })
            .collect())
    }

    async fn commit_with(
        &self,
        scope: &Scope,
        writes: &[Write],
        background: &Background,
        now_ms: i64,
        audit: &WriteAudit,
    ) -> Result<Vec<u64>, StoreError> {
        // BEGIN IMMEDIATE takes the write lock up front, so the condition checks below
        // cannot be invalidated before the writes land. Dropping the transaction (an error,
        // or the call's future being cancelled) rolls it back.
        let _gate = self.writes.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let versions = apply(&mut tx, scope, writes, now_ms).await?;
        for (w, version) in writes.iter().zip(&versions) {
            let action = if matches!(w.op, WriteOp::Delete) { "document.delete" } else { "document.put" };
            sqlx::query(
                "INSERT INTO audit_log (at, tenant_id, actor, actor_name, action, plugin_id, collection, key, request_id, detail) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(now_ms)
            .bind(&scope.tenant)
            .bind(&audit.actor)
            .bind(&audit.actor_name)
            .bind(action)
            .bind(&scope.plugin)
            .bind(&w.collection)
            .bind(&w.key)
            .bind(&audit.request_id)
            .bind(format!("{{\"version\":{version}}}"))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        apply_background(&mut tx, scope, background, now_ms).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(versions)
    }

    async fn purge_plugin(&self, plugin: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("DELETE FROM document_index WHERE plugin_id = ?")
            .bind(plugin)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let n = sqlx::query("DELETE FROM documents WHERE plugin_id = ?")
            .bind(plugin)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        tx.commit().await.map_err(db_error)?;
        Ok(n)
    }
}

/// Inserts a queue row unless one with its id exists (an idempotency key seen before).
pub(crate) async fn insert_job(
    conn: &mut sqlx::SqliteConnection,
    tenant: &str,
    job: &NewJob,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO jobs (id, tenant_id, plugin_id, kind, name, payload, idempotency_key, event_id, status, \
         attempts, max_attempts, run_at, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&job.id)
    .bind(tenant)
    .bind(&job.plugin)
    .bind(job.kind.as_str())
    .bind(&job.name)
    .bind(&job.payload)
    .bind(&job.idempotency_key)
    .bind(&job.event_id)
    .bind(i64::from(job.max_attempts))
    .bind(job.run_at)
    .bind(now_ms)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?
    .rows_affected();
    Ok(inserted == 1)
}

async fn apply_background(
    conn: &mut sqlx::SqliteConnection,
    scope: &Scope,
    background: &Background,
    now_ms: i64,
) -> Result<(), StoreError> {
    if let Some(lease) = &background.finishes {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'done', lease_owner = NULL, lease_until = NULL, last_error = NULL, \
             finished_at = ?, updated_at = ? \
             WHERE id = ? AND status = 'running' AND lease_owner = ? AND attempts = ? AND tenant_id = ?",
        )
        .bind(now_ms)
        .bind(now_ms)
        .bind(&lease.job_id)
        .bind(&lease.owner)
        .bind(i64::from(lease.attempt))
        .bind(&scope.tenant)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        if done.rows_affected() != 1 {
            return Err(StoreError::LeaseLost(lease.job_id.clone()));
        }
        sqlx::query("UPDATE job_runs SET finished_at = ?, outcome = 'done' WHERE job_id = ? AND attempt = ? AND finished_at IS NULL")
            .bind(now_ms)
            .bind(&lease.job_id)
            .bind(i64::from(lease.attempt))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    for event in &background.events {
        sqlx::query(
            "INSERT INTO events (id, tenant_id, topic, source_plugin, published_at, payload, request_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&event.id)
        .bind(&scope.tenant)
        .bind(&event.topic)
        .bind(&scope.plugin)
        .bind(now_ms)
        .bind(&event.payload)
        .bind(&event.request_id)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        for delivery in &event.deliveries {
            insert_job(conn, &scope.tenant, delivery, now_ms).await?;
        }
    }
    for job in &background.jobs {
        insert_job(conn, &scope.tenant, job, now_ms).await?;
    }
    Ok(())
}

async fn apply(
    conn: &mut sqlx::SqliteConnection,
    scope: &Scope,
    writes: &[Write],
    now_ms: i64,
) -> Result<Vec<u64>, StoreError> {
    let mut versions = Vec::with_capacity(writes.len());
    for w in writes {
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM documents WHERE tenant_id = ? AND plugin_id = ? AND collection = ? AND key = ?",
        )
        .bind(&scope.tenant)
        .bind(&scope.plugin)
        .bind(&w.collection)
        .bind(&w.key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
        let current = current.map(to_u64);
        let holds = match w.condition {
            Condition::Any => true,
            Condition::Absent => current.is_none(),
            Condition::Version(v) => current == Some(v),
        };
        if !holds {
            return Err(StoreError::Conflict {
                collection: w.collection.clone(),
                key: w.key.clone(),
                expected: match w.condition {
                    Condition::Absent => "absent".into(),
                    Condition::Version(v) => format!("version {v}"),
                    Condition::Any => "anything".into(),
                },
                found: current.map_or("absent".into(), |v| format!("version {v}")),
            });
        }
        sqlx::query("DELETE FROM document_index WHERE tenant_id = ? AND plugin_id = ? AND collection = ? AND key = ?")
            .bind(&scope.tenant)
            .bind(&scope.plugin)
            .bind(&w.collection)
            .bind(&w.key)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        match &w.op {
            WriteOp::Delete => {
                sqlx::query(
                    "DELETE FROM documents WHERE tenant_id = ? AND plugin_id = ? AND collection = ? AND key = ?",
                )
                .bind(&scope.tenant)
                .bind(&scope.plugin)
                .bind(&w.collection)
                .bind(&w.key)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
                versions.push(0);
            }
            WriteOp::Put { body, index } => {
                let version = match w.condition {
                    Condition::Any => w.version.max(current.map_or(1, |v| v + 1)),
                    _ => w.version,
                };
                let version_i64 =
                    i64::try_from(version).map_err(|_| StoreError::Internal("version overflow".into()))?;
                sqlx::query(
                    "INSERT INTO documents (tenant_id, plugin_id, collection, key, version, body, created_at, updated_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (tenant_id, plugin_id, collection, key) \
                     DO UPDATE SET version = excluded.version, body = excluded.body, updated_at = excluded.updated_at",
                )
                .bind(&scope.tenant)
                .bind(&scope.plugin)
                .bind(&w.collection)
                .bind(&w.key)
                .bind(version_i64)
                .bind(body)
                .bind(now_ms)
                .bind(now_ms)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
                for (field, value) in index {
                    sqlx::query(
                        "INSERT INTO document_index (tenant_id, plugin_id, collection, field, value, key) VALUES (?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&scope.tenant)
                    .bind(&scope.plugin)
                    .bind(&w.collection)
                    .bind(field)
                    .bind(value)
                    .bind(&w.key)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_error)?;
                }
                versions.push(version);
            }
        }
    }
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) async fn temp_store() -> (SqliteDocumentStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::open_sqlite(&dir.path().join("test.db")).await.unwrap();
        (SqliteDocumentStore::new(pool), dir)
    }

    #[tokio::test]
    async fn sqlite_passes_the_document_store_conformance_suite() {
        let (store, _dir) = temp_store().await;
        crate::storage::conformance::run_all(&store).await;
    }
}

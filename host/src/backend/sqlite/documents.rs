//! The embedded SQLite document store (WAL mode).

use crate::jobs::NewJob;
use crate::storage::{
    Background, Comparison, Condition, DocumentStore, KeyRange, Position, QuotaExceeded, QuotaResource, QuotaScope,
    Quotas, Read, ReindexError, Scope, ScopeContents, StoreError, StoreSettings, StoredDocument, Usage, Write,
    WriteAudit, WriteOp,
};
use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqlitePool;

/// Documents in the `documents` and `document_index` tables of a SQLite database.
#[derive(Clone)]
pub struct SqliteDocumentStore {
    pool: SqlitePool,
    writes: std::sync::Arc<super::WriteGate>,
    readers: std::sync::Arc<PointReaders>,
    settings: StoreSettings,
    /// Tenants' quotas as last read, with when: a commit checks against these rather than
    /// read them again (this replica's changes clear them at once, other replicas' show
    /// within `QUOTA_CACHE`).
    quotas: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (Quotas, std::time::Instant)>>>,
}

/// A search slower than this is logged.
const SLOW_SEARCH: std::time::Duration = std::time::Duration::from_millis(250);
/// How long a cached quota is trusted.
const QUOTA_CACHE: std::time::Duration = std::time::Duration::from_secs(5);
/// Sequences one plugin may keep in one tenant.
const MAX_SEQUENCES: u32 = 1000;
/// The largest number a sequence hands out (SQLite integers are signed 64-bit).
const SEQUENCE_MAX: i64 = i64::MAX;

impl SqliteDocumentStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self::with_settings(pool, StoreSettings::default())
    }

    pub fn with_settings(pool: SqlitePool, settings: StoreSettings) -> Self {
        let writes = super::write_gate(&pool);
        let file = pool.connect_options().get_filename().to_path_buf();
        SqliteDocumentStore {
            pool,
            writes,
            readers: std::sync::Arc::new(PointReaders::new(file)),
            settings,
            quotas: Default::default(),
        }
    }
}

/// Read-only connections for plugin reads, outside sqlx's pool.
///
/// Point reads (`get`) run on the calling thread: sqlx runs every SQLite statement on a
/// worker thread per connection, and a read's two thread hand-offs dominate a plugin call's
/// latency on a busy 2-core machine (the statement itself takes microseconds); a point read
/// by primary key in WAL mode never waits for writers. If SQLite is ever busy (a WAL
/// recovery) the read goes back to the pool.
///
/// Scans run on a blocking thread with a progress handler that stops them when the calling
/// plugin's deadline passes or its call is dropped, so a costly query can never hold a
/// connection (or a thread) past the call that asked for it; and they never take one of
/// sqlx's connections, which commits and the platform's own stores need. Writes and
/// transactions stay on sqlx.
struct PointReaders {
    file: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

const POINT_READ: &str =
    "SELECT version, body FROM documents WHERE tenant_id = ?1 AND plugin_id = ?2 AND collection = ?3 AND key = ?4";
/// The documents of a JSON array of keys (`?4`): the array is the outer loop, each key one
/// seek of the primary key.
const GET_MANY: &str = "SELECT d.key, d.version, d.body FROM json_each(?4) j CROSS JOIN documents d \
     WHERE d.tenant_id = ?1 AND d.plugin_id = ?2 AND d.collection = ?3 AND d.key = j.value";
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
        // (NO_MUTEX: a connection is only ever used by one thread at a time, taken from `idle`.)
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
        if result.is_some() {
            self.give_back(connection);
        }
        result
    }

    fn give_back(&self, connection: rusqlite::Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_READERS
        {
            idle.push(connection);
        }
    }

    /// Runs `work` on this thread with a reader whose statements stop (`Interrupted`) when
    /// `stopped` is set or `deadline` passes. `None`: no reader could be opened (the caller
    /// then asks the pool).
    fn stoppable<T>(
        &self,
        deadline: Option<std::time::Instant>,
        stopped: std::sync::Arc<std::sync::atomic::AtomicBool>,
        work: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Option<Result<T, StoreError>> {
        let connection = self.idle.lock().ok()?.pop().or_else(|| self.open())?;
        // Checked every thousand virtual-machine steps (microseconds apart).
        let stop = move || {
            stopped.load(std::sync::atomic::Ordering::Relaxed)
                || deadline.is_some_and(|d| std::time::Instant::now() >= d)
        };
        if connection.progress_handler(1000, Some(stop)).is_err() {
            return None;
        }
        let result = work(&connection);
        Some(self.finish(connection, result))
    }

    /// Reads the documents of `keys` (a JSON array) until their bytes reach `max_bytes`,
    /// stopped as a scan is.
    fn get_many(
        &self,
        scope: &Scope,
        collection: &str,
        keys: &str,
        max_bytes: usize,
        deadline: Option<std::time::Instant>,
        stopped: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<Result<Vec<StoredDocument>, StoreError>> {
        self.stoppable(deadline, stopped, |connection| {
            let mut statement = connection.prepare_cached(GET_MANY)?;
            let mut rows = statement.query(rusqlite::params![scope.tenant, scope.plugin, collection, keys])?;
            let mut out = Vec::new();
            let mut bytes = 0usize;
            while let Some(row) = rows.next()? {
                let doc = StoredDocument { key: row.get(0)?, version: to_u64(row.get(1)?), body: row.get(2)? };
                bytes += doc.key.len() + doc.body.len();
                out.push(doc);
                if bytes >= max_bytes {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// Runs a scan, stopped when `stopped` is set or the range's deadline passes.
    fn scan(
        &self,
        scope: &Scope,
        range: &KeyRange,
        stopped: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<Result<Vec<(Position, StoredDocument)>, StoreError>> {
        let (sql, params) = scan_sql(scope, range);
        self.stoppable(range.deadline, stopped, |connection| {
            let mut statement = connection.prepare_cached(&sql)?;
            let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
            let mut out = Vec::new();
            let mut bytes = 0usize;
            while let Some(row) = rows.next()? {
                let doc = StoredDocument { key: row.get(0)?, version: to_u64(row.get(1)?), body: row.get(2)? };
                bytes += doc.key.len() + doc.body.len();
                out.push((Position { entry: row.get(3)?, key: doc.key.clone() }, doc));
                if bytes >= range.max_bytes {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// Runs a search, stopped as a scan is.
    fn search(
        &self,
        scope: &Scope,
        range: &crate::storage::SearchRange,
        stopped: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<Result<crate::storage::SearchHits, StoreError>> {
        let (sql, params) = search_sql(scope, range);
        self.stoppable(range.deadline, stopped, |connection| {
            // One read transaction: an upgrade or purge that drops the table after the check
            // cannot take it away from the search (both see the same snapshot).
            let snapshot = connection.unchecked_transaction()?;
            let exists = snapshot.prepare_cached(SEARCH_TABLE_EXISTS)?.exists(rusqlite::params![
                scope.tenant,
                scope.plugin,
                range.collection
            ])?;
            if !exists {
                return Ok(crate::storage::SearchHits::default());
            }
            let mut statement = snapshot.prepare_cached(&sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(params.iter()), |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0), r.get(2)?))
            })?;
            search_rows(rows, range.max_bytes, scope)
        })
    }

    /// Clears the connection's stop, gives it back, and says what an error means.
    fn finish<T>(&self, connection: rusqlite::Connection, result: rusqlite::Result<T>) -> Result<T, StoreError> {
        let _ = connection.progress_handler(0, None::<fn() -> bool>);
        let result = result.map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::OperationInterrupted => {
                StoreError::Interrupted
            }
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::Internal(other.to_string()),
        });
        self.give_back(connection);
        result
    }
}

/// The scan statement with its parameters, numbered. The driving index (or the collection)
/// is the outer loop, forced by `CROSS JOIN`, so the scan follows its order and stops at the
/// limit; every other condition is one lookup of the document's own entry, by key (the index
/// by key of the `WITHOUT ROWID` table carries the primary key's field and value).
fn scan_sql(scope: &Scope, range: &KeyRange) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut params: Vec<Value> = Vec::new();
    let mut bind = |v: Value| {
        params.push(v);
        format!("?{}", params.len())
    };
    let tenant = bind(Value::Text(scope.tenant.clone()));
    let plugin = bind(Value::Text(scope.plugin.clone()));
    let collection = bind(Value::Text(range.collection.clone()));
    let (direction, beyond) = if range.descending { ("DESC", "<") } else { ("ASC", ">") };
    let mut sql;
    // The table whose key the residual conditions look up.
    let owner;
    match &range.drive {
        Some(drive) => {
            owner = "x";
            sql = format!(
                "SELECT d.key, d.version, d.body, x.value FROM document_index x CROSS JOIN documents d \
                 WHERE x.tenant_id = {tenant} AND x.plugin_id = {plugin} AND x.collection = {collection} \
                 AND x.field = {} \
                 AND d.tenant_id = x.tenant_id AND d.plugin_id = x.plugin_id AND d.collection = x.collection \
                 AND d.key = x.key",
                bind(Value::Text(drive.index.clone()))
            );
            if let Some((lower, inclusive)) = &drive.lower {
                sql.push_str(&format!(
                    " AND x.value {} {}",
                    if *inclusive { ">=" } else { ">" },
                    bind(Value::Text(lower.clone()))
                ));
            }
            if let Some((upper, inclusive)) = &drive.upper {
                sql.push_str(&format!(
                    " AND x.value {} {}",
                    if *inclusive { "<=" } else { "<" },
                    bind(Value::Text(upper.clone()))
                ));
            }
            if let Some(after) = &range.after {
                let entry = bind(Value::Text(after.entry.clone()));
                let key = bind(Value::Text(after.key.clone()));
                sql.push_str(&format!(" AND (x.value, x.key) {beyond} ({entry}, {key})"));
            }
        }
        None => {
            owner = "d";
            sql = format!(
                "SELECT d.key, d.version, d.body, '' FROM documents d \
                 WHERE d.tenant_id = {tenant} AND d.plugin_id = {plugin} AND d.collection = {collection}"
            );
            if let Some(after) = &range.after {
                sql.push_str(&format!(" AND d.key {beyond} {}", bind(Value::Text(after.key.clone()))));
            }
        }
    }
    for p in &range.residual {
        let test = residual_sql(p, owner, [&tenant, &plugin, &collection], &mut bind);
        sql.push_str(&test);
    }
    match &range.drive {
        Some(_) => sql.push_str(&format!(" ORDER BY x.value {direction}, x.key {direction}")),
        None => sql.push_str(&format!(" ORDER BY d.key {direction}")),
    }
    let limit = bind(Value::Integer(i64::from(range.limit)));
    sql.push_str(&format!(" LIMIT {limit}"));
    (sql, params)
}

/// ` AND [NOT] EXISTS (...)`: the check of one condition on the entry of the document whose
/// key is `{owner}.key`, by a lookup of that key (`scope` = the tenant, plugin and collection
/// parameters).
fn residual_sql(
    p: &crate::storage::Predicate,
    owner: &str,
    scope: [&str; 3],
    bind: &mut impl FnMut(rusqlite::types::Value) -> String,
) -> String {
    use rusqlite::types::Value;
    let [tenant, plugin, collection] = scope;
    {
        let field = bind(Value::Text(p.index.clone()));
        let test = match p.op {
            Comparison::Prefix => {
                let mut test = format!("r.value >= {}", bind(Value::Text(p.value.clone())));
                if let Some(end) = crate::storage::index::prefix_end(&p.value) {
                    test.push_str(&format!(" AND r.value < {}", bind(Value::Text(end))));
                }
                test
            }
            op => {
                let sign = match op {
                    Comparison::Eq | Comparison::Ne => "=",
                    Comparison::Lt => "<",
                    Comparison::Le => "<=",
                    Comparison::Gt => ">",
                    Comparison::Ge => ">=",
                    Comparison::Prefix => unreachable!("handled above"),
                };
                format!("r.value {sign} {}", bind(Value::Text(p.value.clone())))
            }
        };
        let exists = if p.op == Comparison::Ne { "NOT EXISTS" } else { "EXISTS" };
        format!(
            " AND {exists} (SELECT 1 FROM document_index r WHERE r.tenant_id = {tenant} AND r.plugin_id = {plugin} \
             AND r.collection = {collection} AND r.key = {owner}.key AND r.field = {field} AND {test})"
        )
    }
}

/// The search statement with its parameters, numbered. FTS5 finds the matches in the scope's
/// own table (so another scope's rows are never even ranked) and ranks them; only the page's
/// ids and scores are sorted, then their documents are read by id, and the scope is checked
/// again on every one: a stale index row can never bring back another scope's document.
fn search_sql(scope: &Scope, range: &crate::storage::SearchRange) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut params: Vec<Value> = Vec::new();
    let mut bind = |v: Value| {
        params.push(v);
        format!("?{}", params.len())
    };
    let table = crate::storage::search::table_name(&scope.tenant, &scope.plugin, &range.collection);
    let expression = bind(Value::Text(crate::storage::search::render_fts5(&range.terms)));
    let tenant = bind(Value::Text(scope.tenant.clone()));
    let plugin = bind(Value::Text(scope.plugin.clone()));
    let collection = bind(Value::Text(range.collection.clone()));
    // The table name is hex from a hash and the weights manifest integers, formatted by the
    // host: no plugin text is ever part of the statement.
    let rank = range.fields.rank_sql(&table);
    // The matches ranked by one top-N sort over (id, score) pairs: no bodies are read, and
    // without conditions nothing but the index either.
    let mut page = format!("SELECT {table}.rowid AS id, {rank} AS score FROM {table}");
    if !range.residual.is_empty() {
        page.push_str(&format!(" CROSS JOIN documents d1 ON d1.id = {table}.rowid"));
    }
    page.push_str(&format!(" WHERE {table} MATCH {expression}"));
    if !range.residual.is_empty() {
        page.push_str(&format!(
            " AND d1.tenant_id = {tenant} AND d1.plugin_id = {plugin} AND d1.collection = {collection}"
        ));
        for p in &range.residual {
            let test = residual_sql(p, "d1", [&tenant, &plugin, &collection], &mut bind);
            page.push_str(&test);
        }
    }
    let limit = bind(Value::Integer(i64::from(range.limit)));
    let offset = bind(Value::Integer(i64::from(range.offset)));
    // The page's rows come back whether or not their document is the scope's (then `key` is
    // NULL): such a row is skipped, but it still counts toward the page, so paging goes on.
    let sql = format!(
        "WITH page AS MATERIALIZED ({page} ORDER BY score, id LIMIT {limit} OFFSET {offset}) \
         SELECT d.key, d.version, d.body FROM page LEFT JOIN documents d ON d.id = page.id \
         AND d.tenant_id = {tenant} AND d.plugin_id = {plugin} AND d.collection = {collection} \
         ORDER BY page.score, page.id"
    );
    (sql, params)
}

/// Whether a collection of `scope` has a full-text table yet.
const SEARCH_TABLE_EXISTS: &str =
    "SELECT 1 FROM search_tables WHERE tenant_id = ?1 AND plugin_id = ?2 AND collection = ?3";

/// Reads a search's rows: each a document or `None` (a row of the index whose document is not
/// the scope's), until their bytes reach `max_bytes`. Returns them and whether it stopped there.
fn search_rows<E>(
    rows: impl Iterator<Item = Result<(Option<String>, i64, Option<String>), E>>,
    max_bytes: usize,
    scope: &Scope,
) -> Result<crate::storage::SearchHits, E> {
    let mut hits = crate::storage::SearchHits::default();
    let mut bytes = 0usize;
    for row in rows {
        let (key, version, body) = row?;
        match (key, body) {
            (Some(key), Some(body)) => {
                bytes += key.len() + body.len();
                hits.rows.push(Some(StoredDocument { key, version: to_u64(version), body }));
                if bytes >= max_bytes {
                    hits.truncated = true;
                    break;
                }
            }
            _ => {
                tracing::error!(tenant = %scope.tenant, plugin = %scope.plugin,
                    "a full-text row names no document of its scope; skipped");
                hits.rows.push(None);
            }
        }
    }
    Ok(hits)
}

/// Rewrites the index entries named `rebuild` of every document a plugin stores in
/// `collection` in `tenant` from `indexes`, after dropping the entries named `drop`: what a
/// tenant's switch to a version that adds, retypes or removes an index needs, in the
/// caller's transaction. A document whose field does not fit its new type fails it, named.
pub(super) async fn reindex(
    conn: &mut sqlx::SqliteConnection,
    tenant: &str,
    plugin: &str,
    step: &crate::plugins::Reindex,
) -> Result<u64, ReindexError> {
    let crate::plugins::Reindex { collection, indexes, drop, rebuild, clear } = step;
    let (collection, clear) = (collection.as_str(), *clear);
    let search_index = crate::storage::index::SEARCH_INDEX;
    if clear {
        sqlx::query("DELETE FROM document_index WHERE tenant_id = ? AND plugin_id = ? AND collection = ?")
            .bind(tenant)
            .bind(plugin)
            .bind(collection)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    // A collection without `search` has no table, also when it had one before an uninstall
    // (a fresh install compares with nothing): then a commit never needs to look for one.
    if clear || indexes.search.is_none() || drop.iter().chain(rebuild).any(|name| name == search_index) {
        drop_search_tables(&mut *conn, plugin, Some(collection), Some(tenant)).await?;
    }
    let search = rebuild.contains(search_index).then_some(indexes.search.as_ref()).flatten();
    for name in drop.iter().chain(rebuild).filter(|name| *name != search_index) {
        sqlx::query(
            "DELETE FROM document_index WHERE tenant_id = ? AND plugin_id = ? AND collection = ? AND field = ?",
        )
        .bind(tenant)
        .bind(plugin)
        .bind(collection)
        .bind(name)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    sqlx::query(
        "INSERT INTO scope_index_signatures (tenant_id, plugin_id, collection, signature) VALUES (?, ?, ?, ?) \
         ON CONFLICT (tenant_id, plugin_id, collection) DO UPDATE SET signature = excluded.signature",
    )
    .bind(tenant)
    .bind(plugin)
    .bind(collection)
    .bind(indexes.signature())
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    if rebuild.is_empty() {
        return Ok(0);
    }
    let mut entries = 0;
    {
        let tenant = tenant.to_owned();
        let mut after = String::new();
        loop {
            let batch: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT key, body, id FROM documents WHERE tenant_id = ? AND plugin_id = ? AND collection = ? AND key > ? \
                 ORDER BY key LIMIT 500",
            )
            .bind(&tenant)
            .bind(plugin)
            .bind(collection)
            .bind(&after)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
            let Some((last, ..)) = batch.last() else { break };
            after = last.clone();
            for (key, body, id) in batch {
                let value: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
                    StoreError::Internal(format!("stored document {collection}/{key} is not JSON: {e}"))
                })?;
                let mismatch = |(field, reason)| ReindexError::Mismatch {
                    tenant: tenant.clone(),
                    collection: collection.to_owned(),
                    key: key.clone(),
                    field,
                    reason,
                };
                for (name, text) in indexes.entries(&value).map_err(mismatch)? {
                    if !rebuild.contains(&name) {
                        continue;
                    }
                    sqlx::query(
                        "INSERT INTO document_index (tenant_id, plugin_id, collection, field, value, key) VALUES (?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&tenant)
                    .bind(plugin)
                    .bind(collection)
                    .bind(&name)
                    .bind(&text)
                    .bind(&key)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_error)?;
                    entries += 1;
                }
                if let Some(fields) = search {
                    let text = fields.extract(&value);
                    if text.iter().any(|t| !t.is_empty()) {
                        let table = ensure_search_table(&mut *conn, &tenant, plugin, collection).await?;
                        insert_search_rows(&mut *conn, &table, &[(id, &text)]).await?;
                        entries += 1;
                    }
                }
            }
        }
    }
    Ok(entries)
}

/// The scan statement for sqlx, with its parameters bound (`scan_sql` makes only integers
/// and text).
fn bound(
    sql: String,
    params: Vec<rusqlite::types::Value>,
) -> sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for p in params {
        q = match p {
            rusqlite::types::Value::Integer(i) => q.bind(i),
            rusqlite::types::Value::Text(t) => q.bind(t),
            rusqlite::types::Value::Real(r) => q.bind(r),
            rusqlite::types::Value::Null | rusqlite::types::Value::Blob(_) => {
                unreachable!("scan_sql and search_sql bind only numbers and text")
            }
        };
    }
    q
}

/// Tells a scan running on another thread that its caller went away.
struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn db_error(e: sqlx::Error) -> StoreError {
    crate::backend::BackendError::from(e).into()
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

    async fn get_many(
        &self,
        scope: &Scope,
        collection: &str,
        keys: &[String],
        max_bytes: usize,
        deadline: Option<std::time::Instant>,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        use std::sync::atomic::AtomicBool;
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Err(StoreError::Interrupted);
        }
        // The keys go in as one JSON array: one cached statement whatever their number.
        let list = serde_json::to_string(keys).map_err(|e| StoreError::Internal(e.to_string()))?;
        let stopped = std::sync::Arc::new(AtomicBool::new(false));
        let _stop_on_drop = StopOnDrop(stopped.clone());
        let (readers, scope_owned, collection_owned, list_owned) =
            (self.readers.clone(), scope.clone(), collection.to_owned(), list.clone());
        let on_reader = tokio::task::spawn_blocking(move || {
            readers.get_many(&scope_owned, &collection_owned, &list_owned, max_bytes, deadline, stopped)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read thread: {e}")))?;
        if let Some(result) = on_reader {
            return result;
        }
        // Only databases the readers cannot open (in memory) get here: tests, not servers.
        use futures_util::TryStreamExt as _;
        let mut rows = sqlx::query(GET_MANY)
            .bind(&scope.tenant)
            .bind(&scope.plugin)
            .bind(collection)
            .bind(&list)
            .fetch(&self.pool);
        let mut found = Vec::new();
        let mut bytes = 0usize;
        while bytes < max_bytes {
            let Some(r) = rows.try_next().await.map_err(db_error)? else { break };
            let doc = StoredDocument { key: r.get(0), version: to_u64(r.get(1)), body: r.get(2) };
            bytes += doc.key.len() + doc.body.len();
            found.push(doc);
        }
        Ok(found)
    }

    async fn scan(&self, scope: &Scope, range: &KeyRange) -> Result<Vec<(Position, StoredDocument)>, StoreError> {
        use std::sync::atomic::AtomicBool;
        if range.deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Err(StoreError::Interrupted);
        }
        let stopped = std::sync::Arc::new(AtomicBool::new(false));
        let _stop_on_drop = StopOnDrop(stopped.clone());
        let (readers, scope_owned, range_owned) = (self.readers.clone(), scope.clone(), range.clone());
        let on_reader = tokio::task::spawn_blocking(move || readers.scan(&scope_owned, &range_owned, stopped))
            .await
            .map_err(|e| StoreError::Internal(format!("scan thread: {e}")))?;
        if let Some(result) = on_reader {
            return result;
        }
        // Only databases the readers cannot open (in memory) get here: tests, not servers.
        let (sql, params) = scan_sql(scope, range);
        let rows = bound(sql, params).fetch_all(&self.pool).await.map_err(db_error)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for r in rows {
            if bytes >= range.max_bytes {
                break;
            }
            let doc = StoredDocument { key: r.get(0), version: to_u64(r.get(1)), body: r.get(2) };
            bytes += doc.key.len() + doc.body.len();
            out.push((Position { entry: r.get(3), key: doc.key.clone() }, doc));
        }
        Ok(out)
    }

    async fn search(
        &self,
        scope: &Scope,
        range: &crate::storage::SearchRange,
    ) -> Result<crate::storage::SearchHits, StoreError> {
        use std::sync::atomic::AtomicBool;
        if range.deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Err(StoreError::Interrupted);
        }
        let started = std::time::Instant::now();
        let stopped = std::sync::Arc::new(AtomicBool::new(false));
        let _stop_on_drop = StopOnDrop(stopped.clone());
        let (readers, scope_owned, range_owned) = (self.readers.clone(), scope.clone(), range.clone());
        let on_reader = tokio::task::spawn_blocking(move || readers.search(&scope_owned, &range_owned, stopped))
            .await
            .map_err(|e| StoreError::Internal(format!("search thread: {e}")))?;
        let result = match on_reader {
            Some(result) => result,
            None => {
                // Only databases the readers cannot open (in memory) get here: tests, not servers.
                let mut snapshot = self.pool.begin().await.map_err(db_error)?;
                let exists = sqlx::query(SEARCH_TABLE_EXISTS)
                    .bind(&scope.tenant)
                    .bind(&scope.plugin)
                    .bind(&range.collection)
                    .fetch_optional(&mut *snapshot)
                    .await
                    .map_err(db_error)?
                    .is_some();
                if !exists {
                    return Ok(crate::storage::SearchHits::default());
                }
                let (sql, params) = search_sql(scope, range);
                let rows = bound(sql, params).fetch_all(&mut *snapshot).await.map_err(db_error)?;
                let rows = rows
                    .into_iter()
                    .map(|r| Ok::<_, StoreError>((r.get(0), r.get::<Option<i64>, _>(1).unwrap_or(0), r.get(2))));
                search_rows(rows, range.max_bytes, scope)
            }
        };
        let took = started.elapsed();
        if took > SLOW_SEARCH {
            // Never the query text: it is the tenant's data.
            tracing::warn!(tenant = %scope.tenant, plugin = %scope.plugin, collection = %range.collection,
                terms = range.terms.len(), ms = took.as_millis() as u64, "slow full-text search");
        }
        result
    }

    async fn reads_current(&self, scope: &Scope, reads: &[Read]) -> Result<bool, StoreError> {
        if reads.is_empty() {
            return Ok(true);
        }
        // A deferred transaction: its first read fixes the view every check then sees.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        match check_reads(&mut tx, scope, reads).await {
            Ok(()) => Ok(true),
            Err(StoreError::ReadConflict { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    async fn commit_with(
        &self,
        scope: &Scope,
        writes: &[Write],
        reads: &[Read],
        background: &Background,
        now_ms: i64,
        audit: &WriteAudit,
    ) -> Result<Vec<u64>, StoreError> {
        // BEGIN IMMEDIATE takes the write lock up front, so the condition checks below
        // cannot be invalidated before the writes land. Dropping the transaction (an error,
        // or the call's future being cancelled) rolls it back.
        let _turn = self.writes.turn(&scope.tenant).await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        check_reads(&mut tx, scope, reads).await?;
        let (versions, delta) = apply(&mut tx, scope, writes, now_ms).await?;
        self.account(&mut tx, scope, delta).await?;
        let audited: Vec<(&Write, &u64)> = writes.iter().zip(&versions).collect();
        for chunk in audited.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO audit_log (at, tenant_id, actor, actor_name, action, plugin_id, collection, key, request_id, detail) ",
            );
            q.push_values(chunk, |mut row, (w, version)| {
                let action = if matches!(w.op, WriteOp::Delete) { "document.delete" } else { "document.put" };
                row.push_bind(now_ms)
                    .push_bind(&scope.tenant)
                    .push_bind(&audit.actor)
                    .push_bind(&audit.actor_name)
                    .push_bind(action)
                    .push_bind(&scope.plugin)
                    .push_bind(&w.collection)
                    .push_bind(&w.key)
                    .push_bind(&audit.request_id)
                    .push_bind(format!("{{\"version\":{version}}}"));
            });
            q.build().execute(&mut *tx).await.map_err(db_error)?;
        }
        apply_background(&mut tx, scope, background, now_ms).await?;
        self.check_queues(&mut tx, scope, background).await?;
        if let Some(tenant_move) = &background.moves {
            super::catalog::commit_move(&mut tx, scope, tenant_move, now_ms).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(versions)
    }

    async fn next_in_sequence(&self, scope: &Scope, name: &str, after: Option<u64>) -> Result<u64, StoreError> {
        let after = match after.map(i64::try_from) {
            None => None,
            Some(Ok(a)) if a < SEQUENCE_MAX => Some(a),
            Some(_) => return Err(StoreError::SequenceExhausted { name: name.to_owned(), max: SEQUENCE_MAX as u64 }),
        };
        let _turn = self.writes.turn(&scope.tenant).await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let moved: Option<i64> = sqlx::query_scalar(
            "UPDATE sequences SET value = max(value, COALESCE(?, 0)) + 1 \
             WHERE tenant_id = ? AND plugin_id = ? AND name = ? AND value < ? RETURNING value",
        )
        .bind(after)
        .bind(&scope.tenant)
        .bind(&scope.plugin)
        .bind(name)
        .bind(SEQUENCE_MAX)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let exists = moved.is_some()
            || sqlx::query_scalar::<_, i64>(
                "SELECT 1 FROM sequences WHERE tenant_id = ? AND plugin_id = ? AND name = ?",
            )
            .bind(&scope.tenant)
            .bind(&scope.plugin)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .is_some();
        let value = match moved {
            Some(value) => value,
            // At the end of its range: the guarded update below matched nothing.
            None if exists => {
                return Err(StoreError::SequenceExhausted { name: name.to_owned(), max: SEQUENCE_MAX as u64 });
            }
            None => {
                let count: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM sequences WHERE tenant_id = ? AND plugin_id = ?")
                        .bind(&scope.tenant)
                        .bind(&scope.plugin)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_error)?;
                if count >= i64::from(MAX_SEQUENCES) {
                    return Err(StoreError::TooManySequences { limit: MAX_SEQUENCES });
                }
                let first = after.unwrap_or(0) + 1;
                sqlx::query("INSERT INTO sequences (tenant_id, plugin_id, name, value) VALUES (?, ?, ?, ?)")
                    .bind(&scope.tenant)
                    .bind(&scope.plugin)
                    .bind(name)
                    .bind(first)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                first
            }
        };
        tx.commit().await.map_err(db_error)?;
        Ok(value as u64)
    }

    async fn purge_scope(&self, scope: &Scope) -> Result<u64, StoreError> {
        let _turn = self.writes.turn(&scope.tenant).await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let (tenant, plugin) = (scope.tenant.as_str(), scope.plugin.as_str());
        // Full-text tables are per (tenant, plugin, collection): this scope's go whole.
        drop_search_tables(&mut tx, plugin, None, Some(tenant)).await?;
        let mut documents = 0;
        for statement in [
            "DELETE FROM document_index WHERE tenant_id = ? AND plugin_id = ?",
            "DELETE FROM documents WHERE tenant_id = ? AND plugin_id = ?",
        ] {
            documents = sqlx::query(statement)
                .bind(tenant)
                .bind(plugin)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
        }
        // The tenant's totals lose what the plugin stored there, then the plugin's row goes.
        sqlx::query(
            "UPDATE storage_usage AS t SET documents = t.documents - p.documents, bytes = t.bytes - p.bytes \
             FROM storage_usage AS p WHERE t.tenant_id = ?1 AND t.plugin_id = '' AND p.tenant_id = ?1 AND p.plugin_id = ?2",
        )
        .bind(tenant)
        .bind(plugin)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        for statement in [
            "DELETE FROM sequences WHERE tenant_id = ? AND plugin_id = ?",
            "DELETE FROM storage_usage WHERE tenant_id = ? AND plugin_id = ?",
            "DELETE FROM scope_index_signatures WHERE tenant_id = ? AND plugin_id = ?",
        ] {
            sqlx::query(statement).bind(tenant).bind(plugin).execute(&mut *tx).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(documents)
    }

    async fn scope_contents(&self, scope: &Scope) -> Result<ScopeContents, StoreError> {
        // One index probe per collection (a loose index scan), not a pass over the documents.
        let collections: Vec<String> = sqlx::query_scalar(
            "WITH RECURSIVE c(name) AS ( \
               SELECT min(collection) FROM documents WHERE tenant_id = ?1 AND plugin_id = ?2 \
               UNION ALL \
               SELECT (SELECT min(collection) FROM documents \
                       WHERE tenant_id = ?1 AND plugin_id = ?2 AND collection > c.name) \
               FROM c WHERE c.name IS NOT NULL) \
             SELECT name FROM c WHERE name IS NOT NULL",
        )
        .bind(&scope.tenant)
        .bind(&scope.plugin)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let sequences: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, value FROM sequences WHERE tenant_id = ?1 AND plugin_id = ?2 ORDER BY name")
                .bind(&scope.tenant)
                .bind(&scope.plugin)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(ScopeContents {
            collections,
            sequences: sequences.into_iter().map(|(name, value)| (name, value as u64)).collect(),
        })
    }

    async fn purge_plugin(&self, plugin: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        drop_search_tables(&mut tx, plugin, None, None).await?;
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
        // The tenants' totals lose what the plugin stored, then its own rows go.
        sqlx::query(
            "UPDATE storage_usage AS t SET documents = t.documents - p.documents, bytes = t.bytes - p.bytes \
             FROM storage_usage AS p WHERE t.plugin_id = '' AND p.plugin_id = ? AND p.tenant_id = t.tenant_id",
        )
        .bind(plugin)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query("DELETE FROM scope_index_signatures WHERE plugin_id = ?")
            .bind(plugin)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query("DELETE FROM sequences WHERE plugin_id = ?")
            .bind(plugin)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query("DELETE FROM storage_usage WHERE plugin_id = ?")
            .bind(plugin)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(n)
    }

    async fn usage(&self, tenant: &str) -> Result<Vec<(String, Usage)>, StoreError> {
        let rows = sqlx::query(
            "SELECT plugin_id, documents, bytes FROM storage_usage \
             WHERE tenant_id = ? AND plugin_id <> '' AND documents > 0 ORDER BY plugin_id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), Usage { documents: to_u64(r.get(1)), bytes: to_u64(r.get(2)) }))
            .collect())
    }

    async fn all_usage(&self) -> Result<Vec<(String, String, Usage)>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, plugin_id, documents, bytes FROM storage_usage WHERE plugin_id <> '' \
             ORDER BY tenant_id, plugin_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), Usage { documents: to_u64(r.get(2)), bytes: to_u64(r.get(3)) }))
            .collect())
    }

    async fn quotas(&self, tenant: &str) -> Result<Quotas, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        self.quotas_on(&mut conn, tenant).await
    }

    async fn set_quotas(&self, tenant: &str, quotas: Option<Quotas>, now_ms: i64) -> Result<Quotas, StoreError> {
        self.quotas.lock().expect("quota cache").remove(tenant);
        match quotas {
            None => {
                sqlx::query("DELETE FROM tenant_quotas WHERE tenant_id = ?")
                    .bind(tenant)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
            }
            Some(q) => {
                let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                sqlx::query(
                    "INSERT INTO tenant_quotas (tenant_id, tenant_documents, tenant_bytes, plugin_documents, plugin_bytes, updated_at) \
                     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id) DO UPDATE SET \
                     tenant_documents = excluded.tenant_documents, tenant_bytes = excluded.tenant_bytes, \
                     plugin_documents = excluded.plugin_documents, plugin_bytes = excluded.plugin_bytes, \
                     updated_at = excluded.updated_at",
                )
                .bind(tenant)
                .bind(int(q.tenant_documents))
                .bind(int(q.tenant_bytes))
                .bind(int(q.plugin_documents))
                .bind(int(q.plugin_bytes))
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
            }
        }
        self.quotas(tenant).await
    }
}

impl SqliteDocumentStore {
    async fn cached_quotas(&self, conn: &mut sqlx::SqliteConnection, tenant: &str) -> Result<Quotas, StoreError> {
        if let Some((quotas, at)) = self.quotas.lock().expect("quota cache").get(tenant)
            && at.elapsed() < QUOTA_CACHE
        {
            return Ok(*quotas);
        }
        let quotas = self.quotas_on(conn, tenant).await?;
        self.quotas.lock().expect("quota cache").insert(tenant.to_owned(), (quotas, std::time::Instant::now()));
        Ok(quotas)
    }

    async fn quotas_on(&self, conn: &mut sqlx::SqliteConnection, tenant: &str) -> Result<Quotas, StoreError> {
        let row = sqlx::query(
            "SELECT tenant_documents, tenant_bytes, plugin_documents, plugin_bytes FROM tenant_quotas WHERE tenant_id = ?",
        )
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
        Ok(row.map_or(self.settings.default_quotas, |r| Quotas {
            tenant_documents: to_u64(r.get(0)),
            tenant_bytes: to_u64(r.get(1)),
            plugin_documents: to_u64(r.get(2)),
            plugin_bytes: to_u64(r.get(3)),
        }))
    }

    /// Adds a commit's change to the scope's usage; refuses it (the transaction then rolls
    /// back) if it grows a quantity past the plugin's or the tenant's quota. Shrinking is
    /// always allowed, so a tenant over a lowered quota can still clean up.
    async fn account(&self, conn: &mut sqlx::SqliteConnection, scope: &Scope, delta: Delta) -> Result<(), StoreError> {
        if delta.documents == 0 && delta.bytes == 0 {
            return Ok(());
        }
        // The plugin's row and the tenant's totals row (plugin '') in one statement.
        let rows = sqlx::query(
            "INSERT INTO storage_usage (tenant_id, plugin_id, documents, bytes) VALUES (?1, ?2, ?3, ?4), (?1, '', ?3, ?4) \
             ON CONFLICT (tenant_id, plugin_id) DO UPDATE SET \
             documents = documents + excluded.documents, bytes = bytes + excluded.bytes \
             RETURNING plugin_id, documents, bytes",
        )
        .bind(&scope.tenant)
        .bind(&scope.plugin)
        .bind(delta.documents)
        .bind(delta.bytes)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        if delta.documents <= 0 && delta.bytes <= 0 {
            return Ok(());
        }
        let usage_of = |plugin: &str| {
            rows.iter()
                .find(|r| r.get::<&str, _>(0) == plugin)
                .map(|r| Usage { documents: to_u64(r.get(1)), bytes: to_u64(r.get(2)) })
                .unwrap_or_default()
        };
        let (plugin, tenant) = (usage_of(&scope.plugin), usage_of(""));
        let quotas = self.cached_quotas(conn, &scope.tenant).await?;
        // The tenant's first: when both are passed, the wider one is what the admin must raise.
        let checks = [
            (QuotaScope::Tenant, QuotaResource::Documents, delta.documents, tenant.documents, quotas.tenant_documents),
            (QuotaScope::Tenant, QuotaResource::Bytes, delta.bytes, tenant.bytes, quotas.tenant_bytes),
            (QuotaScope::Plugin, QuotaResource::Documents, delta.documents, plugin.documents, quotas.plugin_documents),
            (QuotaScope::Plugin, QuotaResource::Bytes, delta.bytes, plugin.bytes, quotas.plugin_bytes),
        ];
        for (scope, resource, change, would_be, limit) in checks {
            if change > 0 && would_be > limit {
                return Err(StoreError::QuotaExceeded(QuotaExceeded { scope, resource, limit, would_be }));
            }
        }
        Ok(())
    }

    /// Refuses a commit that would leave a plugin with more jobs queued in the tenant than it
    /// may have (counted on the index, and never past the limit).
    async fn check_queues(
        &self,
        conn: &mut sqlx::SqliteConnection,
        scope: &Scope,
        background: &Background,
    ) -> Result<(), StoreError> {
        let mut targets: Vec<&str> = background
            .jobs
            .iter()
            .chain(background.events.iter().flat_map(|e| e.deliveries.iter()))
            .map(|j| j.plugin.as_str())
            .collect();
        targets.sort_unstable();
        targets.dedup();
        let limit = self.settings.max_queued_per_plugin;
        for plugin in targets {
            let queued: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE status = 'queued' AND tenant_id = ? AND plugin_id = ? LIMIT ?)",
            )
            .bind(&scope.tenant)
            .bind(plugin)
            .bind(i64::from(limit) + 1)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
            if queued > i64::from(limit) {
                return Err(StoreError::TooManyJobs { plugin: plugin.to_owned(), limit });
            }
        }
        Ok(())
    }
}

/// How a commit changes what its scope stores.
#[derive(Debug, Default, Clone, Copy)]
struct Delta {
    documents: i64,
    bytes: i64,
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
         attempts, max_attempts, run_at, created_at, updated_at, chain, task_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
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
    .bind(i64::from(job.chain))
    .bind(&job.task)
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
    for task in &background.tasks {
        sqlx::query(
            "INSERT INTO tasks (id, tenant_id, plugin_id, name, title, status, total, current_job, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
        )
        .bind(&task.id)
        .bind(&scope.tenant)
        .bind(&task.plugin)
        .bind(&task.name)
        .bind(&task.title)
        .bind(task.total.map(|t| i64::try_from(t).unwrap_or(i64::MAX)))
        .bind(&task.first_job)
        .bind(now_ms)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    for job in &background.jobs {
        insert_job(conn, &scope.tenant, job, now_ms).await?;
    }
    if let Some(advance) = &background.advances {
        // The chunk's work counts whatever happened to the task meanwhile (its writes are
        // committed here); only a task still running moves on: one an admin cancelled
        // meanwhile queues no next chunk. (SET reads the row as it was.)
        let status: Option<String> = sqlx::query_scalar(
            "UPDATE tasks SET done = done + ?1, chunks = chunks + 1, updated_at = ?2, \
                 status = CASE WHEN status = 'running' AND ?3 IS NULL THEN 'done' ELSE status END, \
                 finished_at = CASE WHEN status = 'running' AND ?3 IS NULL THEN ?2 ELSE finished_at END, \
                 current_job = CASE WHEN status = 'running' THEN COALESCE(?3, current_job) ELSE current_job END \
             WHERE id = ?4 AND tenant_id = ?5 RETURNING status",
        )
        .bind(i64::try_from(advance.done).unwrap_or(i64::MAX))
        .bind(now_ms)
        .bind(advance.next.as_ref().map(|j| &j.id))
        .bind(&advance.task)
        .bind(&scope.tenant)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
        if let (Some("running"), Some(next)) = (status.as_deref(), &advance.next) {
            insert_job(conn, &scope.tenant, next, now_ms).await?;
        }
    }
    Ok(())
}

/// Whether everything a call read is still as it saw it; run under the write lock, before
/// the call's writes, so nothing can change between the check and the writes. The work is
/// bounded by what the call read: document versions are looked up 500 keys a statement, and
/// each query is run again only as far as the rows it returned (one more row, or a row that
/// differs, is already a change).
async fn check_reads(conn: &mut sqlx::SqliteConnection, scope: &Scope, reads: &[Read]) -> Result<(), StoreError> {
    use futures_util::TryStreamExt as _;
    use std::collections::BTreeMap;
    let mut documents: BTreeMap<&str, Vec<(&str, Option<u64>)>> = BTreeMap::new();
    for read in reads {
        if let Read::Document { collection, key, version } = read {
            documents.entry(collection).or_default().push((key, *version));
        }
    }
    for (collection, keys) in documents {
        for chunk in keys.chunks(ROWS_PER_STATEMENT * 5) {
            let mut q = of_keys("SELECT key, version FROM documents", scope, collection, chunk.iter().map(|(k, _)| *k));
            let now: std::collections::HashMap<String, i64> = q
                .build()
                .fetch_all(&mut *conn)
                .await
                .map_err(db_error)?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            for (key, seen) in chunk {
                let current = now.get(*key).copied().map(to_u64);
                if current != *seen {
                    let show = |v: Option<u64>| v.map_or("absent".to_owned(), |v| format!("version {v}"));
                    return Err(StoreError::ReadConflict {
                        collection: collection.to_owned(),
                        what: format!("`{key}` was read at {} and is now {}", show(*seen), show(current)),
                    });
                }
            }
        }
    }
    for read in reads {
        let Read::Indexes { collection, signature } = read else { continue };
        let active: Option<String> = sqlx::query_scalar(
            "SELECT signature FROM scope_index_signatures WHERE tenant_id = ? AND plugin_id = ? AND collection = ?",
        )
        .bind(&scope.tenant)
        .bind(&scope.plugin)
        .bind(collection)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
        if active.is_some_and(|active| active != *signature) {
            return Err(StoreError::ReadConflict {
                collection: collection.clone(),
                what: "the plugin's index definitions changed (an upgrade) while the call ran".into(),
            });
        }
    }
    for read in reads {
        let Read::Scan { range, seen } = read else { continue };
        let changed = || StoreError::ReadConflict {
            collection: range.collection.clone(),
            what: "a query's results changed (a document was added, changed or removed)".into(),
        };
        let (sql, params) = scan_sql(scope, range);
        let query = bound(sql, params);
        let mut rows = query.fetch(&mut *conn);
        let mut matched = 0;
        let mut bytes = 0usize;
        // The same stop as the scan's: after the row that reaches the byte budget.
        while bytes < range.max_bytes {
            let Some(row) = rows.try_next().await.map_err(db_error)? else { break };
            let (key, version, body): (&str, i64, &str) = (row.get(0), row.get(1), row.get(2));
            match seen.get(matched) {
                Some((k, v)) if k == key && *v == to_u64(version) => {}
                _ => return Err(changed()),
            }
            matched += 1;
            bytes += key.len() + body.len();
        }
        if matched != seen.len() {
            return Err(changed());
        }
    }
    Ok(())
}

/// `head` (a SELECT or DELETE of one table) narrowed to `keys` of one collection of `scope`.
fn of_keys<'a>(
    head: &str,
    scope: &'a Scope,
    collection: &'a str,
    keys: impl Iterator<Item = &'a str>,
) -> sqlx::QueryBuilder<sqlx::Sqlite> {
    let mut q = sqlx::QueryBuilder::new(format!("{head} WHERE tenant_id = "));
    q.push_bind(&scope.tenant).push(" AND plugin_id = ").push_bind(&scope.plugin);
    q.push(" AND collection = ").push_bind(collection).push(" AND key IN (");
    let mut list = q.separated(", ");
    for key in keys {
        list.push_bind(key);
    }
    q.push(")");
    q
}

/// The full-text table of a collection of (tenant, plugin), if it has one yet.
async fn search_table(
    conn: &mut sqlx::SqliteConnection,
    tenant: &str,
    plugin: &str,
    collection: &str,
) -> Result<Option<String>, StoreError> {
    sqlx::query_scalar("SELECT name FROM search_tables WHERE tenant_id = ? AND plugin_id = ? AND collection = ?")
        .bind(tenant)
        .bind(plugin)
        .bind(collection)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)
}

/// The full-text table of a collection of (tenant, plugin), created (in the caller's
/// transaction) if needed.
async fn ensure_search_table(
    conn: &mut sqlx::SqliteConnection,
    tenant: &str,
    plugin: &str,
    collection: &str,
) -> Result<String, StoreError> {
    if let Some(table) = search_table(&mut *conn, tenant, plugin, collection).await? {
        return Ok(table);
    }
    let table = crate::storage::search::table_name(tenant, plugin, collection);
    sqlx::query(sqlx::AssertSqlSafe(crate::storage::search::create_table_sql(&table)))
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    sqlx::query("INSERT INTO search_tables (tenant_id, plugin_id, collection, name) VALUES (?, ?, ?, ?)")
        .bind(tenant)
        .bind(plugin)
        .bind(collection)
        .bind(&table)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(table)
}

/// Drops the full-text tables of a plugin's collection (all of its collections: `None`) in
/// one tenant (every tenant: `None`).
async fn drop_search_tables(
    conn: &mut sqlx::SqliteConnection,
    plugin: &str,
    collection: Option<&str>,
    tenant: Option<&str>,
) -> Result<(), StoreError> {
    // A write first: a deferred transaction that has read cannot take the write lock once
    // another commit has landed since (SQLITE_BUSY_SNAPSHOT).
    let tables: Vec<String> = sqlx::query_scalar(
        "DELETE FROM search_tables WHERE plugin_id = ?1 AND (?2 IS NULL OR collection = ?2) \
         AND (?3 IS NULL OR tenant_id = ?3) RETURNING name",
    )
    .bind(plugin)
    .bind(collection)
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    for table in &tables {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

/// Adds full-text rows to `table`: (document id, text).
async fn insert_search_rows(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
    rows: &[(i64, &crate::storage::search::SearchText)],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::new(format!("INSERT INTO {table} (rowid, c0, c1, c2, c3) "));
        q.push_values(chunk, |mut row, (id, text)| {
            row.push_bind(*id);
            for field in text.iter() {
                row.push_bind(field.as_str());
            }
        });
        q.build().execute(&mut *conn).await.map_err(db_error)?;
    }
    Ok(())
}

/// Rows per multi-row statement: few enough to stay far below SQLite's limit on bound
/// parameters, many enough that a large commit is a few hundred statements, not one per row
/// (each statement is a round trip to the connection's thread).
const ROWS_PER_STATEMENT: usize = 100;

/// Checks every write's condition against committed state, then applies them all, a set of
/// rows per statement. Returns each write's new version (0 for a delete) and how the scope's
/// usage changes.
async fn apply(
    conn: &mut sqlx::SqliteConnection,
    scope: &Scope,
    writes: &[Write],
    now_ms: i64,
) -> Result<(Vec<u64>, Delta), StoreError> {
    use std::collections::{BTreeMap, HashMap};
    // The keys of each collection written (a call writes each key once).
    let mut by_collection: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for w in writes {
        by_collection.entry(&w.collection).or_default().push(&w.key);
    }
    // What is stored now: (version, size, id) per (collection, key).
    let mut stored: HashMap<(String, String), (i64, i64, i64)> = HashMap::with_capacity(writes.len());
    for (collection, keys) in &by_collection {
        for chunk in keys.chunks(ROWS_PER_STATEMENT * 5) {
            let mut q =
                of_keys("SELECT key, version, size, id FROM documents", scope, collection, chunk.iter().copied());
            for row in q.build().fetch_all(&mut *conn).await.map_err(db_error)? {
                stored.insert(((*collection).to_owned(), row.get(0)), (row.get(1), row.get(2), row.get(3)));
            }
        }
    }

    let mut versions = Vec::with_capacity(writes.len());
    let mut delta = Delta::default();
    let mut sizes = Vec::with_capacity(writes.len());
    for w in writes {
        let found = stored.get(&(w.collection.clone(), w.key.clone())).copied();
        let current = found.map(|(version, ..)| to_u64(version));
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
        let old_size = found.map(|(_, size, _)| size);
        match &w.op {
            WriteOp::Delete => {
                if let Some(size) = old_size {
                    delta.documents -= 1;
                    delta.bytes -= size;
                }
                versions.push(0);
                sizes.push(0);
            }
            WriteOp::Put { body, .. } => {
                let version = match w.condition {
                    Condition::Any => w.version.max(current.map_or(1, |v| v + 1)),
                    _ => w.version,
                };
                i64::try_from(version).map_err(|_| StoreError::Internal("version overflow".into()))?;
                let size = i64::try_from(w.key.len() + body.len()).unwrap_or(i64::MAX);
                match old_size {
                    Some(old) => delta.bytes += size - old,
                    None => {
                        delta.documents += 1;
                        delta.bytes += size;
                    }
                }
                versions.push(version);
                sizes.push(size);
            }
        }
    }

    // Full-text rows, per collection (each has its own table): a put whose text is unchanged
    // keeps its row (a status change reindexes nothing); any other write of a stored document
    // takes its row out (a changed text, a delete, a collection that no longer declares
    // `search`). Collections without a table skip all of it.
    let id_of = |w: &Write| stored.get(&(w.collection.clone(), w.key.clone())).map(|s| s.2);
    let mut tables: HashMap<&str, Option<String>> = HashMap::new();
    for (collection, _) in &by_collection {
        // Puts of the active version carry text exactly when the collection declares `search`
        // (the index signature check holds old versions off), and a collection without it has
        // no table (installs drop them): only those puts, and deletes, need the lookup.
        let touches = writes.iter().any(|w| {
            w.collection == *collection
                && match &w.op {
                    WriteOp::Put { search, .. } => search.is_some(),
                    WriteOp::Delete => id_of(w).is_some(),
                }
        });
        let table =
            if touches { search_table(&mut *conn, &scope.tenant, &scope.plugin, collection).await? } else { None };
        tables.insert(collection, table);
    }
    let mut indexed: HashMap<(&str, i64), crate::storage::search::SearchText> = HashMap::new();
    let mut unindex: HashMap<&str, Vec<i64>> = HashMap::new();
    for (collection, table) in &tables {
        let Some(table) = table else { continue };
        let ids: Vec<i64> = writes.iter().filter(|w| w.collection == *collection).filter_map(id_of).collect();
        for chunk in ids.chunks(ROWS_PER_STATEMENT * 5) {
            let mut q = sqlx::QueryBuilder::new(format!("SELECT rowid, c0, c1, c2, c3 FROM {table} WHERE rowid IN ("));
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            for row in q.build().fetch_all(&mut *conn).await.map_err(db_error)? {
                indexed.insert((collection, row.get(0)), [row.get(1), row.get(2), row.get(3), row.get(4)]);
            }
        }
    }
    // Puts whose text goes into the index, with the id if stored.
    let mut to_index: Vec<(&Write, Option<i64>, &crate::storage::search::SearchText)> = Vec::new();
    for w in writes {
        let id = id_of(w);
        let old = id.and_then(|id| indexed.get(&(w.collection.as_str(), id)));
        let text = match &w.op {
            WriteOp::Put { search: Some(text), .. } => Some(text),
            _ => None,
        };
        if old.is_some() && old == text {
            continue;
        }
        if let (Some(id), Some(_)) = (id, old) {
            unindex.entry(w.collection.as_str()).or_default().push(id);
        }
        if let Some(text) = text.filter(|t| t.iter().any(|f| !f.is_empty())) {
            to_index.push((w, id, text));
        }
    }
    for (collection, ids) in &unindex {
        let Some(Some(table)) = tables.get(collection) else { continue };
        for chunk in ids.chunks(ROWS_PER_STATEMENT * 5) {
            let mut q = sqlx::QueryBuilder::new(format!("DELETE FROM {table} WHERE rowid IN ("));
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            q.build().execute(&mut *conn).await.map_err(db_error)?;
        }
    }
    let new_indexed: std::collections::HashSet<(&str, &str)> = to_index
        .iter()
        .filter(|(_, id, _)| id.is_none())
        .map(|(w, ..)| (w.collection.as_str(), w.key.as_str()))
        .collect();

    // Old index entries of every written key go; deleted documents go.
    for (collection, keys) in &by_collection {
        for chunk in keys.chunks(ROWS_PER_STATEMENT * 5) {
            let mut q = of_keys("DELETE FROM document_index", scope, collection, chunk.iter().copied());
            q.build().execute(&mut *conn).await.map_err(db_error)?;
        }
    }
    let deleted: Vec<&Write> = writes.iter().filter(|w| matches!(w.op, WriteOp::Delete)).collect();
    for chunk in deleted.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::new("DELETE FROM documents WHERE tenant_id = ");
        q.push_bind(&scope.tenant).push(" AND plugin_id = ").push_bind(&scope.plugin);
        q.push(" AND (collection, key) IN (");
        let mut list = q.separated(", ");
        for w in chunk {
            list.push("(").push_bind_unseparated(&w.collection).push_unseparated(", ");
            list.push_bind_unseparated(&w.key).push_unseparated(")");
        }
        q.push(")");
        q.build().execute(&mut *conn).await.map_err(db_error)?;
    }

    // Documents written, and their new index entries.
    let puts: Vec<(&Write, &str, u64, i64)> = writes
        .iter()
        .zip(versions.iter().zip(&sizes))
        .filter_map(|(w, (version, size))| match &w.op {
            WriteOp::Put { body, .. } => Some((w, body.as_str(), *version, *size)),
            WriteOp::Delete => None,
        })
        .collect();
    let mut new_ids: HashMap<(String, String), i64> = HashMap::new();
    for chunk in puts.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO documents (tenant_id, plugin_id, collection, key, version, body, created_at, updated_at, size) ",
        );
        q.push_values(chunk, |mut row, (w, body, version, size)| {
            row.push_bind(&scope.tenant)
                .push_bind(&scope.plugin)
                .push_bind(&w.collection)
                .push_bind(&w.key)
                .push_bind(*version as i64)
                .push_bind(*body)
                .push_bind(now_ms)
                .push_bind(now_ms)
                .push_bind(*size);
        });
        q.push(
            " ON CONFLICT (tenant_id, plugin_id, collection, key) DO UPDATE SET version = excluded.version, \
             body = excluded.body, updated_at = excluded.updated_at, size = excluded.size",
        );
        // New documents with text to index need their ids.
        if chunk.iter().any(|(w, ..)| new_indexed.contains(&(w.collection.as_str(), w.key.as_str()))) {
            q.push(" RETURNING id, collection, key");
            for row in q.build().fetch_all(&mut *conn).await.map_err(db_error)? {
                new_ids.insert((row.get(1), row.get(2)), row.get(0));
            }
        } else {
            q.build().execute(&mut *conn).await.map_err(db_error)?;
        }
    }
    let mut rows: BTreeMap<&str, Vec<(i64, &crate::storage::search::SearchText)>> = BTreeMap::new();
    for (w, id, text) in &to_index {
        let id = match id {
            Some(id) => *id,
            None => *new_ids
                .get(&(w.collection.clone(), w.key.clone()))
                .ok_or_else(|| StoreError::Internal(format!("no id came back for {}/{}", w.collection, w.key)))?,
        };
        rows.entry(w.collection.as_str()).or_default().push((id, text));
    }
    for (collection, rows) in rows {
        let table = match tables.get(collection) {
            Some(Some(table)) => table.clone(),
            _ => ensure_search_table(&mut *conn, &scope.tenant, &scope.plugin, collection).await?,
        };
        insert_search_rows(&mut *conn, &table, &rows).await?;
    }
    let entries: Vec<(&Write, &str, &str)> = puts
        .iter()
        .flat_map(|(w, ..)| match &w.op {
            WriteOp::Put { index, .. } => {
                index.iter().map(|(name, value)| (*w, name.as_str(), value.as_str())).collect()
            }
            WriteOp::Delete => Vec::new(),
        })
        .collect();
    for chunk in entries.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO document_index (tenant_id, plugin_id, collection, field, value, key) ",
        );
        q.push_values(chunk, |mut row, (w, name, value)| {
            row.push_bind(&scope.tenant)
                .push_bind(&scope.plugin)
                .push_bind(&w.collection)
                .push_bind(*name)
                .push_bind(*value)
                .push_bind(&w.key);
        });
        q.build().execute(&mut *conn).await.map_err(db_error)?;
    }
    Ok((versions, delta))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) async fn temp_store() -> (SqliteDocumentStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::backend::sqlite::open_pool(&dir.path().join("test.db")).await.unwrap();
        (SqliteDocumentStore::new(pool), dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_takers_of_a_sequence_get_distinct_values_and_none_fails() {
        let (store, _dir) = temp_store().await;
        let store = std::sync::Arc::new(store);
        let scope = Scope { tenant: "t".into(), plugin: "p".into() };
        let takers: Vec<_> = (0..64)
            .map(|_| {
                let (store, scope) = (store.clone(), scope.clone());
                tokio::spawn(async move { store.next_in_sequence(&scope, "ticket", None).await })
            })
            .collect();
        let mut values = Vec::new();
        for t in takers {
            values.push(t.await.unwrap().expect("no taker fails"));
        }
        values.sort();
        assert_eq!(values, (1..=64).collect::<Vec<u64>>());
        // A plugin cannot start sequences without end.
        for i in 1..MAX_SEQUENCES {
            store.next_in_sequence(&scope, &format!("s{i}"), None).await.unwrap();
        }
        let refused = store.next_in_sequence(&scope, "one-too-many", None).await.unwrap_err();
        assert!(matches!(refused, StoreError::TooManySequences { limit: MAX_SEQUENCES }), "{refused}");
        assert_eq!(store.next_in_sequence(&scope, "ticket", None).await.unwrap(), 65, "existing ones go on");
    }

    /// What SQLite will do for a scan: the `detail` lines of its query plan.
    async fn query_plan(store: &SqliteDocumentStore, range: &KeyRange) -> Vec<String> {
        let scope = Scope { tenant: "t".into(), plugin: "p".into() };
        let (sql, params) = scan_sql(&scope, range);
        query_plan_of(store, &sql, params).await
    }

    #[tokio::test]
    async fn index_queries_seek_their_driving_range_and_look_up_the_rest_by_key() {
        let (store, _dir) = temp_store().await;
        let range = |drive: Option<crate::storage::Drive>, residual: Vec<crate::storage::Predicate>| KeyRange {
            collection: "c".into(),
            drive,
            residual,
            after: Some(Position { entry: "2026-01-01".into(), key: "k1".into() }),
            limit: 50,
            descending: false,
            max_bytes: usize::MAX,
            deadline: None,
        };
        let p = |index: &str, op| crate::storage::Predicate { index: index.into(), op, value: "v".into() };
        let drive = crate::storage::Drive::whole("hired".into()).narrowed(Comparison::Lt, "2026-07-01");
        // "Hired before July in department X, not on leave": the range drives in order; the
        // others are point lookups of the document's own entries.
        let plan =
            query_plan(&store, &range(Some(drive), vec![p("dept", Comparison::Eq), p("status", Comparison::Ne)])).await;
        let text = plan.join("\n");
        assert!(text.contains("SEARCH x USING PRIMARY KEY"), "the driving range seeks the index:\n{text}");
        assert!(
            plan.iter().any(|l| l.starts_with("SEARCH d USING") && l.contains("key=?)")),
            "documents are fetched by key:\n{text}"
        );
        assert!(
            plan.iter()
                .filter(|l| l.starts_with("SEARCH r")
                    && l.contains(
                        "document_index_by_key (tenant_id=? AND plugin_id=? AND collection=? AND key=? AND field=?"
                    ))
                .count()
                == 2
                && !plan.iter().any(|l| l.starts_with("SCAN")),
            "each residual condition is a lookup of the document's entry, nothing is scanned:\n{text}"
        );
        assert!(!text.contains("TEMP B-TREE"), "rows come in index order, never sorted afterwards:\n{text}");
        // Ordered by key with only a range: the collection drives, the range is a lookup per document.
        let plan = query_plan(&store, &range(None, vec![p("hired", Comparison::Lt)])).await.join("\n");
        assert!(plan.contains("SEARCH d USING") && !plan.contains("SCAN") && !plan.contains("TEMP B-TREE"), "{plan}");
    }

    /// A chunk that was running when its task was cancelled still commits, and its work is
    /// counted; it queues no next chunk. While the task runs, the next chunk is queued.
    #[tokio::test]
    async fn a_chunk_of_a_cancelled_task_counts_its_work_and_queues_nothing() {
        use crate::jobs::{JobKind, NewJob, NewTask, TaskAdvance};
        let (store, _dir) = temp_store().await;
        let scope = Scope { tenant: "t".into(), plugin: "p".into() };
        let audit = WriteAudit { actor: "a".into(), actor_name: "a".into(), request_id: "r".into() };
        let chunk = |id: &str| NewJob {
            id: id.into(),
            plugin: "p".into(),
            kind: JobKind::Job,
            name: "walk".into(),
            payload: "{}".into(),
            idempotency_key: None,
            event_id: None,
            run_at: 0,
            max_attempts: 3,
            chain: 0,
            task: Some("task_1".into()),
        };
        let started = Background {
            jobs: vec![chunk("job_1")],
            tasks: vec![NewTask {
                id: "task_1".into(),
                plugin: "p".into(),
                name: "walk".into(),
                title: "Walk".into(),
                total: Some(30),
                first_job: "job_1".into(),
            }],
            ..Background::default()
        };
        store.commit_with(&scope, &[], &[], &started, 1, &audit).await.unwrap();
        let advance = |next: &str| Background {
            advances: Some(TaskAdvance { task: "task_1".into(), done: 10, next: Some(chunk(next)) }),
            ..Background::default()
        };
        store.commit_with(&scope, &[], &[], &advance("job_2"), 2, &audit).await.unwrap();
        sqlx::query("UPDATE tasks SET status = 'cancelled' WHERE id = 'task_1'").execute(&store.pool).await.unwrap();
        store.commit_with(&scope, &[], &[], &advance("job_3"), 3, &audit).await.unwrap();
        let (done, chunks, status, current): (i64, i64, String, String) =
            sqlx::query_as("SELECT done, chunks, status, current_job FROM tasks WHERE id = 'task_1'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!((done, chunks, status.as_str(), current.as_str()), (20, 2, "cancelled", "job_2"));
        let queued: Vec<String> =
            sqlx::query_scalar("SELECT id FROM jobs ORDER BY id").fetch_all(&store.pool).await.unwrap();
        assert_eq!(queued, ["job_1", "job_2"], "no chunk after the cancel");
    }

    /// A call that computed its index entries from one version's definitions cannot commit
    /// them after an upgrade changed the definitions: its entries would be in the old format.
    #[tokio::test]
    async fn a_commit_with_index_entries_of_replaced_definitions_is_a_conflict() {
        use crate::storage::index::{CollectionIndexes, IndexType};
        use crate::storage::{StorageLimits, UnitOfWork, UnitOfWorkError};
        let (store, _dir) = temp_store().await;
        let pool = store.pool.clone();
        let store: std::sync::Arc<dyn DocumentStore> = std::sync::Arc::new(store);
        let audit = WriteAudit { actor: "a".into(), actor_name: "a".into(), request_id: "r".into() };
        let v1 = CollectionIndexes {
            fields: std::collections::BTreeMap::from([("qty".to_string(), IndexType::Text)]),
            compound: vec![],
            search: None,
        };
        let mut v2 = v1.clone();
        v2.fields.insert("qty".into(), IndexType::Integer);
        let call = |indexes: &CollectionIndexes| {
            UnitOfWork::new(
                store.clone(),
                Scope { tenant: "t".into(), plugin: "p".into() },
                std::sync::Arc::new(std::collections::BTreeMap::from([("items".to_string(), indexes.clone())])),
                StorageLimits::default(),
            )
        };
        let set = |signature: String| {
            let pool = pool.clone();
            async move {
                sqlx::query("INSERT INTO scope_index_signatures (tenant_id, plugin_id, collection, signature) VALUES ('t', 'p', 'items', ?) ON CONFLICT DO UPDATE SET signature = excluded.signature")
                    .bind(signature)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        };
        // Before any signature is stored (a plugin installed before them), nothing is checked.
        let mut first = call(&v1);
        first.put("items", "a", r#"{"qty":5}"#, Condition::Any).await.unwrap();
        first.commit(1, &audit).await.unwrap();
        set(v1.signature()).await;
        let mut same = call(&v1);
        same.put("items", "b", r#"{"qty":6}"#, Condition::Any).await.unwrap();
        same.commit(2, &audit).await.unwrap();
        // A v1 call still running when v2 became active.
        let mut stale = call(&v1);
        stale.put("items", "c", r#"{"qty":7}"#, Condition::Any).await.unwrap();
        set(v2.signature()).await;
        let lost = stale.commit(3, &audit).await;
        assert!(matches!(lost, Err(UnitOfWorkError::Store(StoreError::ReadConflict { .. }))), "{lost:?}");
        let mut current = call(&v2);
        current.put("items", "c", r#"{"qty":7}"#, Condition::Any).await.unwrap();
        current.commit(4, &audit).await.unwrap();
        assert_ne!(v1.signature(), v2.signature());
    }

    fn searchable(paths: &[&str]) -> crate::storage::index::CollectionIndexes {
        use crate::storage::search::{SearchField, SearchFields};
        crate::storage::index::CollectionIndexes {
            search: (!paths.is_empty())
                .then(|| SearchFields(paths.iter().map(|p| SearchField { path: (*p).into(), weight: 1 }).collect())),
            ..Default::default()
        }
    }

    fn words(
        query: &str,
        collection: &str,
        indexes: &crate::storage::index::CollectionIndexes,
    ) -> crate::storage::SearchRange {
        crate::storage::SearchRange {
            collection: collection.into(),
            terms: crate::storage::search::parse_query(query, Default::default()).unwrap(),
            fields: indexes.search.clone().unwrap_or_default(),
            residual: vec![],
            offset: 0,
            limit: 100,
            max_bytes: usize::MAX,
            deadline: None,
        }
    }

    async fn commit_texts(
        store: &SqliteDocumentStore,
        s: &Scope,
        indexes: &crate::storage::index::CollectionIndexes,
        docs: &[(&str, &str)],
    ) {
        let writes: Vec<Write> = docs
            .iter()
            .map(|(key, subject)| {
                let body = serde_json::json!({ "subject": subject });
                Write {
                    collection: "cases".into(),
                    key: (*key).into(),
                    condition: Condition::Any,
                    version: 1,
                    op: WriteOp::Put {
                        body: body.to_string(),
                        index: vec![],
                        search: indexes.search.as_ref().map(|f| f.extract(&body)),
                    },
                }
            })
            .collect();
        let audit = WriteAudit { actor: "a".into(), actor_name: "a".into(), request_id: "r".into() };
        for chunk in writes.chunks(1000) {
            store.commit(s, chunk, 1, &audit).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_stray_index_row_never_brings_back_another_scopes_document() {
        let (store, _dir) = temp_store().await;
        let indexes = searchable(&["subject"]);
        let theirs = Scope { tenant: "b".into(), plugin: "crm".into() };
        commit_texts(&store, &theirs, &indexes, &[("secret", "merger plans")]).await;
        let mine = Scope { tenant: "a".into(), plugin: "crm".into() };
        // Each (tenant, plugin, collection) has a table of its own, made with its first row.
        assert!(store.search(&mine, &words("merger", "cases", &indexes)).await.unwrap().rows.is_empty());
        commit_texts(&store, &mine, &indexes, &[("ours", "merger talk, much longer than the others")]).await;
        let (a_table, b_table) = (
            crate::storage::search::table_name("a", "crm", "cases"),
            crate::storage::search::table_name("b", "crm", "cases"),
        );
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM search_tables ORDER BY name").fetch_all(&store.pool).await.unwrap();
        let mut expected = vec![a_table.clone(), b_table];
        expected.sort();
        assert_eq!(tables, expected);
        // Rows in a's table that name b's document and no document (what a bug could leave):
        // the join back to documents drops them, and they still count toward the page.
        let id: i64 =
            sqlx::query_scalar("SELECT id FROM documents WHERE key = 'secret'").fetch_one(&store.pool).await.unwrap();
        for stray in [id, id + 1_000] {
            sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {a_table} (rowid, c0) VALUES (?, 'merger plans')")))
                .bind(stray)
                .execute(&store.pool)
                .await
                .unwrap();
        }
        let hits = store.search(&mine, &words("merger", "cases", &indexes)).await.unwrap();
        assert_eq!(hits.rows.len(), 3);
        let found: Vec<String> = hits.rows.into_iter().flatten().map(|d| d.key).collect();
        assert_eq!(found, ["ours"]);
        // The plan: the FTS5 index finds the matches, documents are read by id.
        let (sql, params) = search_sql(&mine, &words("merger", "cases", &indexes));
        let plan = query_plan_of(&store, &sql, params).await;
        assert!(plan.iter().any(|l| l.contains("VIRTUAL TABLE INDEX")), "{plan:?}");
        assert!(plan.iter().any(|l| l.contains("INTEGER PRIMARY KEY")), "{plan:?}");
    }

    /// The `detail` lines of a statement's query plan.
    async fn query_plan_of(store: &SqliteDocumentStore, sql: &str, params: Vec<rusqlite::types::Value>) -> Vec<String> {
        bound(format!("EXPLAIN QUERY PLAN {sql}"), params)
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(3))
            .collect()
    }

    #[tokio::test]
    async fn an_upgrade_that_adds_or_drops_search_rebuilds_or_removes_the_rows() {
        let (store, _dir) = temp_store().await;
        let (v1, v2, v3) = (searchable(&[]), searchable(&["subject"]), searchable(&[]));
        for tenant in ["a", "b"] {
            let s = Scope { tenant: tenant.into(), plugin: "crm".into() };
            commit_texts(&store, &s, &v1, &[("c1", "kettle"), ("c2", "toaster")]).await;
        }
        let rows = || async {
            let tables: Vec<String> =
                sqlx::query_scalar("SELECT name FROM search_tables").fetch_all(&store.pool).await.unwrap();
            let mut total = 0;
            for table in tables {
                total += sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(&store.pool)
                    .await
                    .unwrap();
            }
            total
        };
        assert_eq!(rows().await, 0);
        let move_tenants = |tenants: &'static [&'static str],
                            from: crate::storage::index::CollectionIndexes,
                            to: crate::storage::index::CollectionIndexes| {
            let pool = store.pool.clone();
            async move {
                let (drop, rebuild) = from.changes_to(&to);
                let step =
                    crate::plugins::Reindex { collection: "cases".into(), indexes: to, drop, rebuild, clear: false };
                let mut tx = pool.begin().await.unwrap();
                for tenant in tenants {
                    reindex(&mut tx, tenant, "crm", &step).await.unwrap();
                }
                tx.commit().await.unwrap();
            }
        };
        let upgrade = |from, to| move_tenants(&["a", "b"], from, to);
        // One tenant moved: only its rows are written.
        move_tenants(&["a"], v1.clone(), v2.clone()).await;
        assert_eq!(rows().await, 2);
        let b = Scope { tenant: "b".into(), plugin: "crm".into() };
        assert!(store.search(&b, &words("kettle", "cases", &v2)).await.unwrap().rows.is_empty());
        move_tenants(&["b"], v1.clone(), v2.clone()).await;
        assert_eq!(rows().await, 4);
        for tenant in ["a", "b"] {
            let s = Scope { tenant: tenant.into(), plugin: "crm".into() };
            let hits = store.search(&s, &words("kettle", "cases", &v2)).await.unwrap();
            assert_eq!(hits.rows.iter().flatten().map(|d| d.key.as_str()).collect::<Vec<_>>(), ["c1"]);
        }
        upgrade(v2.clone(), v3).await;
        assert_eq!(rows().await, 0);
        // Uninstalled with its rows, then installed afresh without `search` (compared with
        // nothing): the old tables go, so commits need never look for them.
        upgrade(Default::default(), v2.clone()).await;
        assert_eq!(rows().await, 4);
        upgrade(Default::default(), v1).await;
        assert_eq!(rows().await, 0);
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM search_tables").fetch_one(&store.pool).await.unwrap();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn a_search_is_interrupted_at_its_deadline_and_the_reader_serves_again() {
        let (store, _dir) = temp_store().await;
        let indexes = searchable(&["subject"]);
        let s = Scope { tenant: "t".into(), plugin: "crm".into() };
        let docs: Vec<(String, String)> =
            (0..20_000).map(|i| (format!("c{i:05}"), format!("common word number {i} and more text"))).collect();
        let refs: Vec<(&str, &str)> = docs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        commit_texts(&store, &s, &indexes, &refs).await;
        let mut range = words("common", "cases", &indexes);
        range.deadline = Some(std::time::Instant::now() + std::time::Duration::from_micros(200));
        assert_eq!(store.search(&s, &range).await.unwrap_err(), StoreError::Interrupted);
        range.deadline = None;
        assert_eq!(store.search(&s, &range).await.unwrap().rows.len(), 100);
    }

    /// 30,000 documents where each of the fields a-d is `x` on about half of them and no
    /// document has all four: a four-condition query must walk thousands of candidates
    /// whichever index the planner starts from, and finds nothing.
    async fn costly_collection(store: &SqliteDocumentStore) -> Scope {
        let scope = Scope { tenant: "t".into(), plugin: "p".into() };
        let mut tx = store.pool.begin().await.unwrap();
        for i in 0..30_000u32 {
            let key = format!("k{i:06}");
            sqlx::query("INSERT INTO documents (tenant_id, plugin_id, collection, key, version, body, created_at, updated_at, size) VALUES ('t', 'p', 'c', ?, 1, '{}', 0, 0, 0)")
                .bind(&key)
                .execute(&mut *tx)
                .await
                .unwrap();
            for (bit, field) in ["a", "b", "c", "d"].into_iter().enumerate() {
                if (i % 15) & (1 << bit) != 0 {
                    sqlx::query("INSERT INTO document_index (tenant_id, plugin_id, collection, field, value, key) VALUES ('t', 'p', 'c', ?, 'x', ?)")
                        .bind(field)
                        .bind(&key)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
            }
        }
        tx.commit().await.unwrap();
        scope
    }

    fn costly_range(deadline: Option<std::time::Instant>) -> KeyRange {
        KeyRange {
            collection: "c".into(),
            drive: Some(crate::storage::Drive::whole("a".into()).narrowed(Comparison::Eq, "x")),
            residual: ["b", "c", "d"]
                .into_iter()
                .map(|f| crate::storage::Predicate { index: f.into(), op: Comparison::Eq, value: "x".into() })
                .collect(),
            after: None,
            limit: 10,
            descending: false,
            max_bytes: usize::MAX,
            deadline,
        }
    }

    #[tokio::test]
    async fn a_scan_is_interrupted_at_its_callers_deadline_and_the_reader_serves_again() {
        let (store, _dir) = temp_store().await;
        let scope = costly_collection(&store).await;
        // Positive control: with time enough it completes (and matches nothing; ~50 ms here).
        assert_eq!(store.scan(&scope, &costly_range(None)).await.unwrap(), vec![]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2);
        assert_eq!(store.scan(&scope, &costly_range(Some(deadline))).await, Err(StoreError::Interrupted));
        // The connection it ran on went back without its handler: the next scan completes.
        assert_eq!(store.scan(&scope, &costly_range(None)).await.unwrap(), vec![]);
    }

    #[tokio::test]
    async fn a_scan_whose_caller_went_away_stops() {
        let (store, _dir) = temp_store().await;
        let scope = costly_collection(&store).await;
        let range = costly_range(None);
        // What the scan's drop guard sets when the calling plugin's future is dropped.
        let gone = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        assert_eq!(store.readers.scan(&scope, &range, gone), Some(Err(StoreError::Interrupted)));
        let here = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        assert_eq!(store.readers.scan(&scope, &range, here), Some(Ok(vec![])));
    }
}

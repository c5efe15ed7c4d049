//! Documents on PostgreSQL.
//!
//! Several hosts commit at once, so the serializable unit of work cannot rest on a process's
//! write gate or on SQLite's single writer. Each commit takes, in its transaction:
//! - a shared advisory lock on its plugin (an install's reindex and a purge take it
//!   exclusively, so the definitions a commit checks cannot change before it lands), and
//! - an exclusive advisory lock on its (tenant, plugin): commits of one scope take turns, in
//!   every replica. A scope's documents, index entries and full-text rows are written only
//!   under that lock, so what the commit checks (every document version and query result the
//!   call read, at READ COMMITTED, each statement seeing the latest commits) cannot change
//!   before its own writes land. Commits of other scopes run in parallel; the rows they share
//!   (the tenant's usage totals, the queue) are updated by single statements under row locks.
//!
//! Reads run on the pool without locks. Scans and searches run with the calling plugin's
//! deadline as a `statement_timeout`, so the server stops them there, and are planned for
//! their own values (`plan_cache_mode = force_custom_plan` in their transaction): a generic
//! plan for a range scan reads the whole range and sorts it. Point reads keep the cached
//! generic plan, which planning each time would only slow down.

use super::shares::ConnectionShares;
use crate::jobs::NewJob;
use crate::storage::search::SearchText;
use crate::storage::{
    Background, Comparison, Condition, DocumentStore, KeyRange, Position, Predicate, QuotaExceeded, QuotaResource,
    QuotaScope, Quotas, Read, ReindexError, Scope, ScopeContents, SearchHits, SearchRange, StoreError, StoreSettings,
    StoredDocument, Usage, Write, WriteAudit, WriteOp,
};
use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgPool};
use sqlx::{Arguments, PgConnection, Postgres, Row};
use std::collections::{BTreeMap, HashMap, HashSet};

fn db_error(e: sqlx::Error) -> StoreError {
    crate::backend::BackendError::from(e).into()
}

/// A statement cancelled (57014) that ran with the caller's deadline as its timeout was
/// stopped by that deadline (the server counts whole milliseconds from a moment earlier, so
/// it may fire a little before the host's clock reaches it): the call ran out of time, not
/// the database. Without a deadline, it is the database's failure.
fn deadline_error(e: sqlx::Error, deadline: Option<std::time::Instant>) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("57014") && deadline.is_some() => {
            StoreError::Interrupted
        }
        _ => db_error(e),
    }
}

/// A `COMMIT` whose reply never came (the connection broke) may have been applied.
fn commit_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed | sqlx::Error::Protocol(_) => {
            StoreError::OutcomeUnknown(e.to_string())
        }
        other => db_error(other),
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Rows per multi-row statement (PostgreSQL allows 65,535 bound parameters).
const ROWS_PER_STATEMENT: usize = 500;
/// How long a cached quota is trusted.
const QUOTA_CACHE: std::time::Duration = std::time::Duration::from_secs(5);
/// Sequences one plugin may keep in one tenant.
const MAX_SEQUENCES: u32 = 1000;
const SEQUENCE_MAX: i64 = i64::MAX;
/// Advisory lock classes (the second key of `hashtextextended`), so locks of different
/// kinds do not share hashes (a collision of two names within a class, about 2^-64 a pair,
/// only makes one wait for the other).
const PLUGIN_LOCK: i64 = 11;
const SCOPE_LOCK: i64 = 12;
const SEQUENCE_LOCK: i64 = 13;

/// Documents in the `documents`, `document_index` and `search_rows` tables.
#[derive(Clone)]
pub struct PgDocumentStore {
    pool: PgPool,
    settings: StoreSettings,
    /// Tenants' quotas as last read, with when (as SQLite's store keeps them).
    quotas: std::sync::Arc<std::sync::Mutex<HashMap<String, (Quotas, std::time::Instant)>>>,
    /// Every operation for a tenant takes a connection's worth of its share first.
    shares: std::sync::Arc<ConnectionShares>,
}

impl PgDocumentStore {
    pub fn new(pool: PgPool, settings: StoreSettings) -> Self {
        let options = pool.options();
        let shares = ConnectionShares::new(options.get_max_connections(), options.get_acquire_timeout());
        PgDocumentStore { pool, settings, quotas: Default::default(), shares }
    }

    /// The tenants' shares of this store's connections.
    pub fn shares(&self) -> &std::sync::Arc<ConnectionShares> {
        &self.shares
    }
}

/// Takes the plugin's lock for the rest of the transaction: shared by commits, exclusive
/// for what rewrites every tenant's data of the plugin (reindexing, purging).
pub(super) async fn lock_plugin(conn: &mut PgConnection, plugin: &str, exclusive: bool) -> Result<(), StoreError> {
    let sql = if exclusive {
        "SELECT pg_advisory_xact_lock(hashtextextended($1, $2))"
    } else {
        "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, $2))"
    };
    sqlx::query(sql).bind(plugin).bind(PLUGIN_LOCK).execute(&mut *conn).await.map_err(db_error)?;
    Ok(())
}

async fn lock_scope(conn: &mut PgConnection, scope: &Scope, class: i64) -> Result<(), StoreError> {
    // Tenant and plugin ids never contain '/'.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, $3))")
        .bind(&scope.tenant)
        .bind(&scope.plugin)
        .bind(class)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// A statement under construction: its text and its numbered parameters.
#[derive(Default)]
struct Statement {
    sql: String,
    args: PgArguments,
    count: usize,
}

impl Statement {
    fn bind_text(&mut self, value: &str) -> String {
        self.args.add(value.to_owned()).expect("text binds");
        self.count += 1;
        format!("${}", self.count)
    }
    fn bind_int(&mut self, value: i64) -> String {
        self.args.add(value).expect("integers bind");
        self.count += 1;
        format!("${}", self.count)
    }
}

/// The scan statement: the driving index's range (or the collection) in order, each other
/// condition one lookup of the document's own entry by key.
fn scan_statement(scope: &Scope, range: &KeyRange) -> Statement {
    let mut st = Statement::default();
    let tenant = st.bind_text(&scope.tenant);
    let plugin = st.bind_text(&scope.plugin);
    let collection = st.bind_text(&range.collection);
    let (direction, beyond) = if range.descending { ("DESC", "<") } else { ("ASC", ">") };
    let owner;
    let mut sql;
    match &range.drive {
        Some(drive) => {
            owner = "x";
            let field = st.bind_text(&drive.index);
            sql = format!(
                "SELECT d.key, d.version, d.body, x.value FROM document_index x JOIN documents d \
                 ON d.tenant_id = x.tenant_id AND d.plugin_id = x.plugin_id AND d.collection = x.collection AND d.key = x.key \
                 WHERE x.tenant_id = {tenant} AND x.plugin_id = {plugin} AND x.collection = {collection} AND x.field = {field}"
            );
            if let Some((lower, inclusive)) = &drive.lower {
                let v = st.bind_text(lower);
                sql.push_str(&format!(" AND x.value {} {v}", if *inclusive { ">=" } else { ">" }));
            }
            if let Some((upper, inclusive)) = &drive.upper {
                let v = st.bind_text(upper);
                sql.push_str(&format!(" AND x.value {} {v}", if *inclusive { "<=" } else { "<" }));
            }
            if let Some(after) = &range.after {
                let (entry, key) = (st.bind_text(&after.entry), st.bind_text(&after.key));
                sql.push_str(&format!(" AND (x.value, x.key) {beyond} ({entry}, {key})"));
            }
        }
        None => {
            owner = "d";
            sql = format!(
                "SELECT d.key, d.version, d.body, ''::text FROM documents d \
                 WHERE d.tenant_id = {tenant} AND d.plugin_id = {plugin} AND d.collection = {collection}"
            );
            if let Some(after) = &range.after {
                let key = st.bind_text(&after.key);
                sql.push_str(&format!(" AND d.key {beyond} {key}"));
            }
        }
    }
    for p in &range.residual {
        let test = residual_sql(&mut st, p, owner, [&tenant, &plugin, &collection]);
        sql.push_str(&test);
    }
    match &range.drive {
        Some(_) => sql.push_str(&format!(" ORDER BY x.value {direction}, x.key {direction}")),
        None => sql.push_str(&format!(" ORDER BY d.key {direction}")),
    }
    let limit = st.bind_int(i64::from(range.limit));
    sql.push_str(&format!(" LIMIT {limit}"));
    st.sql = sql;
    st
}

/// ` AND [NOT] EXISTS (...)`: one condition on the entry of the document whose key is
/// `{owner}.key`.
fn residual_sql(st: &mut Statement, p: &Predicate, owner: &str, scope: [&str; 3]) -> String {
    let [tenant, plugin, collection] = scope;
    let field = st.bind_text(&p.index);
    let test = match p.op {
        Comparison::Prefix => {
            let mut test = format!("r.value >= {}", st.bind_text(&p.value));
            if let Some(end) = crate::storage::index::prefix_end(&p.value) {
                test.push_str(&format!(" AND r.value < {}", st.bind_text(&end)));
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
            format!("r.value {sign} {}", st.bind_text(&p.value))
        }
    };
    let exists = if p.op == Comparison::Ne { "NOT EXISTS" } else { "EXISTS" };
    format!(
        " AND {exists} (SELECT 1 FROM document_index r WHERE r.tenant_id = {tenant} AND r.plugin_id = {plugin} \
         AND r.collection = {collection} AND r.key = {owner}.key AND r.field = {field} AND {test})"
    )
}

/// The search statement: the scope's matches ranked by `ts_rank_cd` with the manifest's
/// weights, the page cut first as (id, score) pairs, then their documents read by id with the
/// scope checked again on every one.
fn search_statement(scope: &Scope, range: &SearchRange) -> Statement {
    let mut st = Statement::default();
    let query = st.bind_text(&crate::storage::search::render_tsquery(&range.terms));
    let tenant = st.bind_text(&scope.tenant);
    let plugin = st.bind_text(&scope.plugin);
    let collection = st.bind_text(&range.collection);
    // Weights {D, C, B, A} = fields 3, 2, 1, 0, scaled to at most 1; manifest integers, not
    // plugin text, so they are part of the statement.
    let max = range.fields.0.iter().map(|f| f.weight).max().unwrap_or(1).max(1) as f32;
    let weights: Vec<String> = (0..crate::storage::search::MAX_SEARCH_FIELDS)
        .rev()
        .map(|i| range.fields.0.get(i).map_or(0.0, |f| f32::from(f.weight) / max))
        .map(|w| format!("{w:.4}"))
        .collect();
    let mut page = format!(
        "SELECT s.document_id AS id, ts_rank_cd('{{{}}}'::float4[], s.doc, q.q, 32) AS score \
         FROM search_rows s CROSS JOIN (SELECT to_tsquery('keel_simple', {query}) AS q) q",
        weights.join(",")
    );
    if !range.residual.is_empty() {
        page.push_str(" JOIN documents d1 ON d1.id = s.document_id");
    }
    page.push_str(&format!(
        " WHERE s.tenant_id = {tenant} AND s.plugin_id = {plugin} AND s.collection = {collection} AND s.doc @@ q.q"
    ));
    if !range.residual.is_empty() {
        page.push_str(&format!(
            " AND d1.tenant_id = {tenant} AND d1.plugin_id = {plugin} AND d1.collection = {collection}"
        ));
        for p in &range.residual {
            let test = residual_sql(&mut st, p, "d1", [&tenant, &plugin, &collection]);
            page.push_str(&test);
        }
    }
    let limit = st.bind_int(i64::from(range.limit));
    let offset = st.bind_int(i64::from(range.offset));
    st.sql = format!(
        "WITH page AS MATERIALIZED ({page} ORDER BY score DESC, id LIMIT {limit} OFFSET {offset}) \
         SELECT d.key, d.version, d.body FROM page LEFT JOIN documents d ON d.id = page.id \
         AND d.tenant_id = {tenant} AND d.plugin_id = {plugin} AND d.collection = {collection} \
         ORDER BY page.score DESC, page.id"
    );
    st
}

/// Plans the transaction's statements for their values (see the module's note).
async fn plan_per_execution(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)")
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Runs `st` in a transaction whose statements are planned for their values and stop at
/// `deadline`.
async fn fetch_by(
    pool: &PgPool,
    st: Statement,
    deadline: Option<std::time::Instant>,
) -> Result<Vec<sqlx::postgres::PgRow>, StoreError> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    let timeout = match deadline {
        Some(deadline) => {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::Interrupted);
            }
            format!("{}ms", left.as_millis().max(1))
        }
        None => "0".to_owned(),
    };
    sqlx::query(
        "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), \
         CASE WHEN $1 <> '0' THEN set_config('statement_timeout', $1, true) END",
    )
    .bind(timeout)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    let rows = sqlx::query_with(sqlx::AssertSqlSafe(st.sql), st.args)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| deadline_error(e, deadline))?;
    tx.commit().await.map_err(db_error)?;
    Ok(rows)
}

#[async_trait]
impl DocumentStore for PgDocumentStore {
    async fn get(&self, scope: &Scope, collection: &str, key: &str) -> Result<Option<StoredDocument>, StoreError> {
        let _share = self.shares.enter(&scope.tenant).await?;
        let row = sqlx::query(
            "SELECT version, body FROM documents WHERE tenant_id = $1 AND plugin_id = $2 AND collection = $3 AND key = $4",
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
        let mut st = Statement::default();
        let (tenant, plugin, coll) =
            (st.bind_text(&scope.tenant), st.bind_text(&scope.plugin), st.bind_text(collection));
        st.args.add(keys.to_vec()).expect("text arrays bind");
        st.count += 1;
        st.sql = format!(
            "SELECT key, version, body FROM documents WHERE tenant_id = {tenant} AND plugin_id = {plugin} \
             AND collection = {coll} AND key = ANY(${})",
            st.count
        );
        let mut found = Vec::new();
        let mut bytes = 0usize;
        let _share = self.shares.enter(&scope.tenant).await?;
        for r in fetch_by(&self.pool, st, deadline).await? {
            if bytes >= max_bytes {
                break;
            }
            let doc = StoredDocument { key: r.get(0), version: to_u64(r.get(1)), body: r.get(2) };
            bytes += doc.key.len() + doc.body.len();
            found.push(doc);
        }
        Ok(found)
    }

    async fn versions_from(
        &self,
        scope: &Scope,
        collection: &str,
        from: &str,
        limit: u32,
    ) -> Result<Option<Vec<(String, u64)>>, StoreError> {
        let _share = self.shares.enter(&scope.tenant).await?;
        let rows = sqlx::query(
            "SELECT key, version FROM documents WHERE tenant_id = $1 AND plugin_id = $2 AND collection = $3 \
             AND key >= $4 ORDER BY key LIMIT $5",
        )
        .bind(&scope.tenant)
        .bind(&scope.plugin)
        .bind(collection)
        .bind(from)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(Some(rows.into_iter().map(|r| (r.get(0), to_u64(r.get(1)))).collect()))
    }

    async fn scan(&self, scope: &Scope, range: &KeyRange) -> Result<Vec<(Position, StoredDocument)>, StoreError> {
        let _share = self.shares.enter(&scope.tenant).await?;
        let rows = fetch_by(&self.pool, scan_statement(scope, range), range.deadline).await?;
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

    async fn search(&self, scope: &Scope, range: &SearchRange) -> Result<SearchHits, StoreError> {
        let _share = self.shares.enter(&scope.tenant).await?;
        let rows = fetch_by(&self.pool, search_statement(scope, range), range.deadline).await?;
        let mut hits = SearchHits::default();
        let mut bytes = 0usize;
        for r in rows {
            let (key, version, body): (Option<String>, Option<i64>, Option<String>) = (r.get(0), r.get(1), r.get(2));
            match (key, body) {
                (Some(key), Some(body)) => {
                    bytes += key.len() + body.len();
                    hits.rows.push(Some(StoredDocument { key, version: to_u64(version.unwrap_or(0)), body }));
                    if bytes >= range.max_bytes {
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

    async fn reads_current(&self, scope: &Scope, reads: &[Read]) -> Result<bool, StoreError> {
        if reads.is_empty() {
            return Ok(true);
        }
        // One consistent view for every check.
        let _share = self.shares.enter(&scope.tenant).await?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        plan_per_execution(&mut tx).await?;
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
        // The scope's commits take turns here first, so one waiting for the advisory lock
        // holds no connection and no share.
        let _turn = self.shares.turn(scope, SCOPE_LOCK).await?;
        let _share = self.shares.enter(&scope.tenant).await?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        lock_plugin(&mut tx, &scope.plugin, false).await?;
        lock_scope(&mut tx, scope, SCOPE_LOCK).await?;
        if reads.iter().any(|r| matches!(r, Read::Scan { .. })) {
            plan_per_execution(&mut tx).await?;
        }
        check_reads(&mut tx, scope, reads).await?;
        let (versions, delta) = apply(&mut tx, scope, writes, now_ms).await?;
        let audited: Vec<(&Write, &u64)> = writes.iter().zip(&versions).collect();
        for chunk in audited.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<Postgres>::new(
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
        // Last: its upsert locks the tenant's totals row, which every commit of the tenant's
        // plugins updates, until COMMIT; taken here, they overlap everything before it.
        self.account(&mut tx, scope, delta).await?;
        tx.commit().await.map_err(commit_error)?;
        Ok(versions)
    }

    async fn next_in_sequence(&self, scope: &Scope, name: &str, after: Option<u64>) -> Result<u64, StoreError> {
        let after = match after.map(i64::try_from) {
            None => None,
            Some(Ok(a)) if a < SEQUENCE_MAX => Some(a),
            Some(_) => return Err(StoreError::SequenceExhausted { name: name.to_owned(), max: SEQUENCE_MAX as u64 }),
        };
        let _turn = self.shares.turn(scope, SEQUENCE_LOCK).await?;
        let _share = self.shares.enter(&scope.tenant).await?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Takers of one scope's sequences wait for each other instead of conflicting.
        lock_scope(&mut tx, scope, SEQUENCE_LOCK).await?;
        let moved: Option<i64> = sqlx::query_scalar(
            "UPDATE sequences SET value = GREATEST(value, COALESCE($1, 0)) + 1 \
             WHERE tenant_id = $2 AND plugin_id = $3 AND name = $4 AND value < $5 RETURNING value",
        )
        .bind(after)
        .bind(&scope.tenant)
        .bind(&scope.plugin)
        .bind(name)
        .bind(SEQUENCE_MAX)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let value = match moved {
            Some(value) => value,
            None => {
                let exists: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM sequences WHERE tenant_id = $1 AND plugin_id = $2 AND name = $3)",
                )
                .bind(&scope.tenant)
                .bind(&scope.plugin)
                .bind(name)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
                if exists {
                    return Err(StoreError::SequenceExhausted { name: name.to_owned(), max: SEQUENCE_MAX as u64 });
                }
                let count: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM sequences WHERE tenant_id = $1 AND plugin_id = $2")
                        .bind(&scope.tenant)
                        .bind(&scope.plugin)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_error)?;
                if count >= i64::from(MAX_SEQUENCES) {
                    return Err(StoreError::TooManySequences { limit: MAX_SEQUENCES });
                }
                let first = after.unwrap_or(0) + 1;
                sqlx::query("INSERT INTO sequences (tenant_id, plugin_id, name, value) VALUES ($1, $2, $3, $4)")
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
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // In turn with the scope's commits and sequence takers, in every replica.
        lock_plugin(&mut tx, &scope.plugin, false).await?;
        lock_scope(&mut tx, scope, SCOPE_LOCK).await?;
        lock_scope(&mut tx, scope, SEQUENCE_LOCK).await?;
        let mut documents = 0;
        for statement in [
            "DELETE FROM search_rows WHERE tenant_id = $1 AND plugin_id = $2",
            "DELETE FROM document_index WHERE tenant_id = $1 AND plugin_id = $2",
            "DELETE FROM documents WHERE tenant_id = $1 AND plugin_id = $2",
        ] {
            documents = sqlx::query(statement)
                .bind(&scope.tenant)
                .bind(&scope.plugin)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
        }
        sqlx::query(
            "UPDATE storage_usage AS t SET documents = t.documents - p.documents, bytes = t.bytes - p.bytes \
             FROM storage_usage AS p WHERE t.tenant_id = $1 AND t.plugin_id = '' AND p.tenant_id = $1 AND p.plugin_id = $2",
        )
        .bind(&scope.tenant)
        .bind(&scope.plugin)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        for statement in [
            "DELETE FROM sequences WHERE tenant_id = $1 AND plugin_id = $2",
            "DELETE FROM storage_usage WHERE tenant_id = $1 AND plugin_id = $2",
            "DELETE FROM scope_index_signatures WHERE tenant_id = $1 AND plugin_id = $2",
        ] {
            sqlx::query(statement).bind(&scope.tenant).bind(&scope.plugin).execute(&mut *tx).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(documents)
    }

    async fn scope_contents(&self, scope: &Scope) -> Result<ScopeContents, StoreError> {
        // One index probe per collection (a loose index scan), not a pass over the documents.
        let collections: Vec<String> = sqlx::query_scalar(
            "WITH RECURSIVE c(name) AS ( \
               SELECT min(collection) FROM documents WHERE tenant_id = $1 AND plugin_id = $2 \
               UNION ALL \
               SELECT (SELECT min(collection) FROM documents \
                       WHERE tenant_id = $1 AND plugin_id = $2 AND collection > c.name) \
               FROM c WHERE c.name IS NOT NULL) \
             SELECT name FROM c WHERE name IS NOT NULL",
        )
        .bind(&scope.tenant)
        .bind(&scope.plugin)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let sequences: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, value FROM sequences WHERE tenant_id = $1 AND plugin_id = $2 ORDER BY name")
                .bind(&scope.tenant)
                .bind(&scope.plugin)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(ScopeContents {
            collections,
            sequences: sequences.into_iter().map(|(name, value)| (name, to_u64(value))).collect(),
        })
    }

    async fn purge_plugin(&self, plugin: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        lock_plugin(&mut tx, plugin, true).await?;
        for statement in
            ["DELETE FROM search_rows WHERE plugin_id = $1", "DELETE FROM document_index WHERE plugin_id = $1"]
        {
            sqlx::query(statement).bind(plugin).execute(&mut *tx).await.map_err(db_error)?;
        }
        let n = sqlx::query("DELETE FROM documents WHERE plugin_id = $1")
            .bind(plugin)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        // The tenants' totals lose what the plugin stored, then its own rows go.
        sqlx::query(
            "UPDATE storage_usage AS t SET documents = t.documents - p.documents, bytes = t.bytes - p.bytes \
             FROM storage_usage AS p WHERE t.plugin_id = '' AND p.plugin_id = $1 AND p.tenant_id = t.tenant_id",
        )
        .bind(plugin)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        for statement in [
            "DELETE FROM scope_index_signatures WHERE plugin_id = $1",
            "DELETE FROM sequences WHERE plugin_id = $1",
            "DELETE FROM storage_usage WHERE plugin_id = $1",
        ] {
            sqlx::query(statement).bind(plugin).execute(&mut *tx).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(n)
    }

    async fn usage(&self, tenant: &str) -> Result<Vec<(String, Usage)>, StoreError> {
        let rows = sqlx::query(
            "SELECT plugin_id, documents, bytes FROM storage_usage \
             WHERE tenant_id = $1 AND plugin_id <> '' AND documents > 0 ORDER BY plugin_id",
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
                sqlx::query("DELETE FROM tenant_quotas WHERE tenant_id = $1")
                    .bind(tenant)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
            }
            Some(q) => {
                let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                sqlx::query(
                    "INSERT INTO tenant_quotas (tenant_id, tenant_documents, tenant_bytes, plugin_documents, plugin_bytes, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id) DO UPDATE SET \
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

impl PgDocumentStore {
    async fn cached_quotas(&self, conn: &mut PgConnection, tenant: &str) -> Result<Quotas, StoreError> {
        if let Some((quotas, at)) = self.quotas.lock().expect("quota cache").get(tenant)
            && at.elapsed() < QUOTA_CACHE
        {
            return Ok(*quotas);
        }
        let quotas = self.quotas_on(conn, tenant).await?;
        self.quotas.lock().expect("quota cache").insert(tenant.to_owned(), (quotas, std::time::Instant::now()));
        Ok(quotas)
    }

    async fn quotas_on(&self, conn: &mut PgConnection, tenant: &str) -> Result<Quotas, StoreError> {
        let row = sqlx::query(
            "SELECT tenant_documents, tenant_bytes, plugin_documents, plugin_bytes FROM tenant_quotas WHERE tenant_id = $1",
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

    /// Adds a commit's change to the scope's usage and refuses growth past a quota (as
    /// SQLite's store does). The tenant's totals row is shared by its plugins' commits: one
    /// statement updates both rows under their row locks, so concurrent commits add up.
    async fn account(&self, conn: &mut PgConnection, scope: &Scope, delta: Delta) -> Result<(), StoreError> {
        if delta.documents == 0 && delta.bytes == 0 {
            return Ok(());
        }
        let rows = sqlx::query(
            "INSERT INTO storage_usage (tenant_id, plugin_id, documents, bytes) VALUES ($1, $2, $3, $4), ($1, '', $3, $4) \
             ON CONFLICT (tenant_id, plugin_id) DO UPDATE SET \
             documents = storage_usage.documents + excluded.documents, bytes = storage_usage.bytes + excluded.bytes \
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
    /// may have.
    async fn check_queues(
        &self,
        conn: &mut PgConnection,
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
                "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE status = 'queued' AND tenant_id = $1 AND plugin_id = $2 LIMIT $3) q",
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

async fn insert_job(conn: &mut PgConnection, tenant: &str, job: &NewJob, now_ms: i64) -> Result<bool, StoreError> {
    super::jobs::insert_job(conn, tenant, job, now_ms).await.map_err(|e| match e {
        crate::jobs::store::JobStoreError::Database(b) => b.into(),
        other => StoreError::Internal(other.to_string()),
    })
}

async fn apply_background(
    conn: &mut PgConnection,
    scope: &Scope,
    background: &Background,
    now_ms: i64,
) -> Result<(), StoreError> {
    if let Some(lease) = &background.finishes {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'done', lease_owner = NULL, lease_until = NULL, last_error = NULL, \
             finished_at = $1, updated_at = $1 \
             WHERE id = $2 AND status = 'running' AND lease_owner = $3 AND attempts = $4 AND tenant_id = $5",
        )
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
        sqlx::query(
            "UPDATE job_runs SET finished_at = $1, outcome = 'done' WHERE job_id = $2 AND attempt = $3 AND finished_at IS NULL",
        )
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
             VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8, $8)",
        )
        .bind(&task.id)
        .bind(&scope.tenant)
        .bind(&task.plugin)
        .bind(&task.name)
        .bind(&task.title)
        .bind(task.total.map(|t| i64::try_from(t).unwrap_or(i64::MAX)))
        .bind(&task.first_job)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    for job in &background.jobs {
        insert_job(conn, &scope.tenant, job, now_ms).await?;
    }
    if let Some(advance) = &background.advances {
        // As on SQLite: the chunk's work counts whatever happened to the task; only a task
        // still running moves on. (SET reads the row as it was.)
        let status: Option<String> = sqlx::query_scalar(
            "UPDATE tasks SET done = done + $1, chunks = chunks + 1, updated_at = $2, \
                 status = CASE WHEN status = 'running' AND $3::text IS NULL THEN 'done' ELSE status END, \
                 finished_at = CASE WHEN status = 'running' AND $3::text IS NULL THEN $2 ELSE finished_at END, \
                 current_job = CASE WHEN status = 'running' THEN COALESCE($3::text, current_job) ELSE current_job END \
             WHERE id = $4 AND tenant_id = $5 RETURNING status",
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

/// Whether everything a call read is still as it saw it (run under the scope's lock in a
/// commit, so nothing can change between the check and the writes).
async fn check_reads(conn: &mut PgConnection, scope: &Scope, reads: &[Read]) -> Result<(), StoreError> {
    let mut documents: BTreeMap<&str, Vec<(&str, Option<u64>)>> = BTreeMap::new();
    for read in reads {
        if let Read::Document { collection, key, version } = read {
            documents.entry(collection).or_default().push((key, *version));
        }
    }
    for (collection, keys) in documents {
        for chunk in keys.chunks(ROWS_PER_STATEMENT * 4) {
            let list: Vec<&str> = chunk.iter().map(|(k, _)| *k).collect();
            let now: HashMap<String, i64> = sqlx::query(
                "SELECT key, version FROM documents WHERE tenant_id = $1 AND plugin_id = $2 AND collection = $3 \
                 AND key = ANY($4)",
            )
            .bind(&scope.tenant)
            .bind(&scope.plugin)
            .bind(collection)
            .bind(&list)
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
            "SELECT signature FROM scope_index_signatures WHERE tenant_id = $3 AND plugin_id = $1 AND collection = $2",
        )
        .bind(&scope.plugin)
        .bind(collection)
        .bind(&scope.tenant)
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
        let st = scan_statement(scope, range);
        let rows =
            sqlx::query_with(sqlx::AssertSqlSafe(st.sql), st.args).fetch_all(&mut *conn).await.map_err(db_error)?;
        let mut matched = 0;
        let mut bytes = 0usize;
        // The same stop as the scan's: after the row that reaches the byte budget.
        for row in rows {
            if bytes >= range.max_bytes {
                break;
            }
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

/// Checks every write's condition against committed state, then applies them all, a set of
/// rows per statement. Returns each write's new version (0 for a delete) and how the scope's
/// usage changes.
async fn apply(
    conn: &mut PgConnection,
    scope: &Scope,
    writes: &[Write],
    now_ms: i64,
) -> Result<(Vec<u64>, Delta), StoreError> {
    let mut by_collection: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for w in writes {
        by_collection.entry(&w.collection).or_default().push(&w.key);
    }
    // What is stored now: (version, size, id) per (collection, key).
    let mut stored: HashMap<(String, String), (i64, i64, i64)> = HashMap::with_capacity(writes.len());
    for (collection, keys) in &by_collection {
        for chunk in keys.chunks(ROWS_PER_STATEMENT * 4) {
            let rows = sqlx::query(
                "SELECT key, version, size, id FROM documents WHERE tenant_id = $1 AND plugin_id = $2 \
                 AND collection = $3 AND key = ANY($4)",
            )
            .bind(&scope.tenant)
            .bind(&scope.plugin)
            .bind(*collection)
            .bind(chunk)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
            for row in rows {
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

    // Full-text rows: a put whose prepared text is unchanged keeps its row; any other put of
    // a stored document with a row takes it out (deletes take theirs with the document).
    let id_of = |w: &Write| stored.get(&(w.collection.clone(), w.key.clone())).map(|s| s.2);
    let prepared = |text: &SearchText| -> SearchText { text.clone().map(|f| crate::storage::search::words_only(&f)) };
    let texts: Vec<Option<SearchText>> = writes
        .iter()
        .map(|w| match &w.op {
            WriteOp::Put { search: Some(text), .. } => Some(prepared(text)),
            _ => None,
        })
        .collect();
    let mut indexed: HashMap<i64, SearchText> = HashMap::new();
    let rewritten: Vec<i64> = writes.iter().filter(|w| matches!(w.op, WriteOp::Put { .. })).filter_map(id_of).collect();
    for chunk in rewritten.chunks(ROWS_PER_STATEMENT * 4) {
        let rows = sqlx::query("SELECT document_id, c0, c1, c2, c3 FROM search_rows WHERE document_id = ANY($1)")
            .bind(chunk)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        for row in rows {
            indexed.insert(row.get(0), [row.get(1), row.get(2), row.get(3), row.get(4)]);
        }
    }
    let mut unindex: Vec<i64> = Vec::new();
    let mut to_index: Vec<(&Write, Option<i64>, &SearchText)> = Vec::new();
    for (w, text) in writes.iter().zip(&texts) {
        if matches!(w.op, WriteOp::Delete) {
            continue;
        }
        let id = id_of(w);
        let old = id.and_then(|id| indexed.get(&id));
        if old.is_some() && old == text.as_ref() {
            continue;
        }
        if let (Some(id), Some(_)) = (id, old) {
            unindex.push(id);
        }
        if let Some(text) = text.as_ref().filter(|t| t.iter().any(|f| !f.trim().is_empty())) {
            to_index.push((w, id, text));
        }
    }
    for chunk in unindex.chunks(ROWS_PER_STATEMENT * 4) {
        sqlx::query("DELETE FROM search_rows WHERE document_id = ANY($1)")
            .bind(chunk)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }

    // Old index entries of every written key go; deleted documents go (their full-text rows
    // with them).
    for (collection, keys) in &by_collection {
        for chunk in keys.chunks(ROWS_PER_STATEMENT * 4) {
            sqlx::query(
                "DELETE FROM document_index WHERE tenant_id = $1 AND plugin_id = $2 AND collection = $3 AND key = ANY($4)",
            )
            .bind(&scope.tenant)
            .bind(&scope.plugin)
            .bind(*collection)
            .bind(chunk)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        }
        let deleted: Vec<&str> = writes
            .iter()
            .filter(|w| w.collection == *collection && matches!(w.op, WriteOp::Delete))
            .map(|w| w.key.as_str())
            .collect();
        for chunk in deleted.chunks(ROWS_PER_STATEMENT * 4) {
            sqlx::query(
                "DELETE FROM documents WHERE tenant_id = $1 AND plugin_id = $2 AND collection = $3 AND key = ANY($4)",
            )
            .bind(&scope.tenant)
            .bind(&scope.plugin)
            .bind(*collection)
            .bind(chunk)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        }
    }

    // Documents written (with their ids), and their new index entries.
    let puts: Vec<(&Write, &str, u64, i64)> = writes
        .iter()
        .zip(versions.iter().zip(&sizes))
        .filter_map(|(w, (version, size))| match &w.op {
            WriteOp::Put { body, .. } => Some((w, body.as_str(), *version, *size)),
            WriteOp::Delete => None,
        })
        .collect();
    let new_indexed: HashSet<(&str, &str)> = to_index
        .iter()
        .filter(|(_, id, _)| id.is_none())
        .map(|(w, ..)| (w.collection.as_str(), w.key.as_str()))
        .collect();
    let mut new_ids: HashMap<(String, String), i64> = HashMap::new();
    for chunk in puts.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<Postgres>::new(
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
        if chunk.iter().any(|(w, ..)| new_indexed.contains(&(w.collection.as_str(), w.key.as_str()))) {
            q.push(" RETURNING id, collection, key");
            for row in q.build().fetch_all(&mut *conn).await.map_err(db_error)? {
                new_ids.insert((row.get(1), row.get(2)), row.get(0));
            }
        } else {
            q.build().execute(&mut *conn).await.map_err(db_error)?;
        }
    }
    let mut rows: BTreeMap<&str, Vec<(i64, &str, SearchText)>> = BTreeMap::new();
    for (w, id, text) in &to_index {
        let id = match id {
            Some(id) => *id,
            None => *new_ids
                .get(&(w.collection.clone(), w.key.clone()))
                .ok_or_else(|| StoreError::Internal(format!("no id came back for {}/{}", w.collection, w.key)))?,
        };
        rows.entry(w.collection.as_str()).or_default().push((id, &scope.tenant, (*text).clone()));
    }
    for (collection, rows) in rows {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            insert_search_rows(&mut *conn, &scope.plugin, collection, chunk).await?;
        }
    }
    let entries: Vec<(&Write, &str, &str)> = puts
        .iter()
        .flat_map(|(w, ..)| match &w.op {
            WriteOp::Put { index, .. } => index.iter().map(move |(f, v)| (*w, f.as_str(), v.as_str())).collect(),
            WriteOp::Delete => Vec::new(),
        })
        .collect();
    for chunk in entries.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<Postgres>::new(
            "INSERT INTO document_index (tenant_id, plugin_id, collection, field, value, key) ",
        );
        q.push_values(chunk, |mut row, (w, field, value)| {
            row.push_bind(&scope.tenant)
                .push_bind(&scope.plugin)
                .push_bind(&w.collection)
                .push_bind(*field)
                .push_bind(*value)
                .push_bind(&w.key);
        });
        q.build().execute(&mut *conn).await.map_err(db_error)?;
    }
    Ok((versions, delta))
}

/// Rewrites the index entries named `rebuild` of every document a plugin stores in
/// `collection` in `tenant` from `indexes`, after dropping the entries named `drop`, in the
/// caller's transaction; the same rule as SQLite's. A document whose field does not fit its
/// new type fails it, named.
pub(super) async fn reindex(
    conn: &mut PgConnection,
    tenant: &str,
    plugin: &str,
    step: &crate::plugins::Reindex,
) -> Result<u64, ReindexError> {
    let crate::plugins::Reindex { collection, indexes, drop, rebuild, clear } = step;
    let (collection, clear) = (collection.as_str(), *clear);
    // In turn with the scope's commits, in every replica: a commit checks the signature
    // written here under the same lock.
    let scope = Scope { tenant: tenant.to_owned(), plugin: plugin.to_owned() };
    lock_plugin(&mut *conn, plugin, false).await?;
    lock_scope(&mut *conn, &scope, SCOPE_LOCK).await?;
    let search_index = crate::storage::index::SEARCH_INDEX;
    if clear {
        sqlx::query("DELETE FROM document_index WHERE tenant_id = $1 AND plugin_id = $2 AND collection = $3")
            .bind(tenant)
            .bind(plugin)
            .bind(collection)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    if clear || indexes.search.is_none() || drop.iter().chain(rebuild).any(|name| name == search_index) {
        sqlx::query("DELETE FROM search_rows WHERE tenant_id = $3 AND plugin_id = $1 AND collection = $2")
            .bind(plugin)
            .bind(collection)
            .bind(tenant)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    let search = rebuild.contains(search_index).then_some(indexes.search.as_ref()).flatten();
    let names: Vec<&str> = drop.iter().chain(rebuild).filter(|n| *n != search_index).map(String::as_str).collect();
    if !names.is_empty() {
        sqlx::query(
            "DELETE FROM document_index WHERE tenant_id = $4 AND plugin_id = $1 AND collection = $2 AND field = ANY($3)",
        )
        .bind(plugin)
        .bind(collection)
        .bind(&names)
        .bind(tenant)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    sqlx::query(
        "INSERT INTO scope_index_signatures (tenant_id, plugin_id, collection, signature) VALUES ($4, $1, $2, $3) \
         ON CONFLICT (tenant_id, plugin_id, collection) DO UPDATE SET signature = excluded.signature",
    )
    .bind(plugin)
    .bind(collection)
    .bind(indexes.signature())
    .bind(tenant)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    if rebuild.is_empty() {
        return Ok(0);
    }
    let mut entries = 0;
    // Each batch a seek of the documents' key.
    let tenants = [tenant.to_owned()];
    let mut cursor: Option<(usize, String)> = tenants.first().map(|_| (0, String::new()));
    while let Some((at, after)) = cursor.take() {
        let batch: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT tenant_id, key, body, id FROM documents WHERE tenant_id = $1 AND plugin_id = $2 AND collection = $3 \
             AND key > $4 ORDER BY key LIMIT 500",
        )
        .bind(&tenants[at])
        .bind(plugin)
        .bind(collection)
        .bind(&after)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        cursor = match batch.last() {
            Some((_, key, ..)) => Some((at, key.clone())),
            None => (at + 1 < tenants.len()).then(|| (at + 1, String::new())),
        };
        let mut index_rows: Vec<(&str, String, String, &str)> = Vec::new();
        let mut search_rows: Vec<(i64, &str, SearchText)> = Vec::new();
        for (tenant, key, body, id) in &batch {
            let value: serde_json::Value = serde_json::from_str(body)
                .map_err(|e| StoreError::Internal(format!("stored document {collection}/{key} is not JSON: {e}")))?;
            let mismatch = |(field, reason)| ReindexError::Mismatch {
                tenant: tenant.clone(),
                collection: collection.to_owned(),
                key: key.clone(),
                field,
                reason,
            };
            for (name, text) in indexes.entries(&value).map_err(mismatch)? {
                if rebuild.contains(&name) {
                    index_rows.push((tenant, name, text, key));
                }
            }
            if let Some(fields) = search {
                // The same rule as a commit's: prepared text, kept when any field has a word.
                let text = fields.extract(&value).map(|f| crate::storage::search::words_only(&f));
                if text.iter().any(|t| !t.trim().is_empty()) {
                    search_rows.push((*id, tenant, text));
                }
            }
        }
        for chunk in index_rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO document_index (tenant_id, plugin_id, collection, field, value, key) ",
            );
            q.push_values(chunk, |mut row, (tenant, name, text, key)| {
                row.push_bind(*tenant)
                    .push_bind(plugin)
                    .push_bind(collection)
                    .push_bind(name)
                    .push_bind(text)
                    .push_bind(*key);
            });
            q.build().execute(&mut *conn).await.map_err(db_error)?;
            entries += chunk.len() as u64;
        }
        for chunk in search_rows.chunks(ROWS_PER_STATEMENT) {
            insert_search_rows(&mut *conn, plugin, collection, chunk).await?;
            entries += chunk.len() as u64;
        }
    }
    Ok(entries)
}

/// Adds full-text rows: (document id, tenant, text prepared by `words_only`, so PostgreSQL's
/// parser finds the words the query parser does).
async fn insert_search_rows(
    conn: &mut PgConnection,
    plugin: &str,
    collection: &str,
    rows: &[(i64, &str, SearchText)],
) -> Result<(), StoreError> {
    let mut q = sqlx::QueryBuilder::new(
        "INSERT INTO search_rows (document_id, tenant_id, plugin_id, collection, c0, c1, c2, c3) ",
    );
    q.push_values(rows, |mut row, (id, tenant, text)| {
        row.push_bind(*id).push_bind(*tenant).push_bind(plugin).push_bind(collection);
        for field in text.iter() {
            row.push_bind(field.clone());
        }
    });
    q.build().execute(&mut *conn).await.map_err(db_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_whose_reply_was_lost_is_unknown_and_one_refused_is_not() {
        let broken = sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"));
        assert!(matches!(commit_error(broken), StoreError::OutcomeUnknown(_)));
        // No connection to send COMMIT on: certainly not applied.
        assert!(matches!(commit_error(sqlx::Error::PoolTimedOut), StoreError::Unavailable(_)));
    }
}

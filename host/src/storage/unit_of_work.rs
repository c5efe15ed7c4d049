//! One plugin call's view of storage: buffered writes over committed data.
//!
//! Writes are kept in memory, so a call that traps or times out never touched the database
//! and nothing needs undoing; a successful call commits them in one transaction, with each
//! key's precondition re-checked against committed state (a race lost between the call's
//! read and its commit is a conflict, never a lost update).

use super::{Condition, DocumentStore, Filter, KeyRange, Scope, StoreError, StoredDocument, Write, WriteOp};
use base64::Engine as _;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Bounds on what one call may store and read.
#[derive(Debug, Clone)]
pub struct StorageLimits {
    pub max_document_bytes: usize,
    pub max_key_bytes: usize,
    pub max_writes_per_call: usize,
    pub max_page: u32,
    pub default_page: u32,
    /// Bytes one call may write (keys, bodies, event and job payloads): what the host
    /// buffers for it, and what its commit asks of the database's single writer.
    pub max_commit_bytes: usize,
    /// Bytes one read may return: a query page ends early (with a cursor) rather than pass it.
    pub max_read_bytes: usize,
    /// Conditions one query may combine (each is a join on the index).
    pub max_filters: usize,
    /// Zero except in tests: every read first waits this long, standing in for a slow or
    /// busy database, to show that a call's deadline reaches into its host calls.
    pub read_delay: std::time::Duration,
}

impl Default for StorageLimits {
    fn default() -> Self {
        StorageLimits {
            max_document_bytes: 1 << 20,
            max_key_bytes: 256,
            max_writes_per_call: 1000,
            max_page: 1000,
            default_page: 100,
            max_commit_bytes: 8 << 20,
            max_read_bytes: 4 << 20,
            max_filters: 4,
            read_delay: std::time::Duration::ZERO,
        }
    }
}

/// Why a storage request from a plugin was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitOfWorkError {
    #[error("collection `{0}` is not declared in the plugin manifest")]
    UndeclaredCollection(String),
    #[error("field `{field}` is not an indexed field of collection `{collection}`")]
    UndeclaredIndex { collection: String, field: String },
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("document body is not JSON: {0}")]
    InvalidBody(String),
    #[error("document is {size} bytes; the limit is {limit}")]
    DocumentTooLarge { size: usize, limit: usize },
    #[error("a call may write at most {0} documents")]
    TooManyWrites(usize),
    #[error("a call may take at most {0} sequence numbers")]
    TooManySequenceNumbers(usize),
    #[error(
        "a call may write at most {limit} bytes (documents, events and jobs together); this write would make it {would_be}"
    )]
    CommitTooLarge { limit: usize, would_be: usize },
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
struct Pending {
    /// Bytes this write buffers: key and body (a delete: its key).
    key_bytes: usize,
    /// Committed version when the call first touched the key (None: absent).
    base: Option<u64>,
    /// Whether any write to the key was conditional; then commit requires `base` to hold.
    strict: bool,
    /// Version the plugin now sees (meaningless for a delete).
    version: u64,
    op: WriteOp,
}

impl Pending {
    fn size(&self) -> usize {
        self.key_bytes
            + match &self.op {
                WriteOp::Put { body, .. } => body.len(),
                WriteOp::Delete => 0,
            }
    }
}

/// The storage side of one plugin call.
pub struct UnitOfWork {
    store: Arc<dyn DocumentStore>,
    scope: Scope,
    /// Declared collections and their indexed fields.
    collections: Arc<BTreeMap<String, Vec<String>>>,
    limits: StorageLimits,
    pending: BTreeMap<(String, String), Pending>,
    /// Bytes of `pending` (keys and bodies) plus event and job payloads the call asked for.
    pending_bytes: usize,
    /// When the call's time is up: storage work still running then is stopped.
    deadline: Option<std::time::Instant>,
    /// Taken around each query: the tenant's scan lanes.
    scan_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Sequence numbers taken so far (each is a write transaction of its own).
    sequence_takes: usize,
}

impl UnitOfWork {
    pub fn new(
        store: Arc<dyn DocumentStore>,
        scope: Scope,
        collections: Arc<BTreeMap<String, Vec<String>>>,
        limits: StorageLimits,
    ) -> Self {
        UnitOfWork {
            store,
            scope,
            collections,
            limits,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            deadline: None,
            scan_gate: None,
            sequence_takes: 0,
        }
    }

    /// The most host memory this call's storage may hold at once: its buffered writes plus
    /// one read. Reserved by admission control before the call starts.
    pub fn host_bytes_budget(&self) -> usize {
        self.limits.max_commit_bytes + self.limits.max_read_bytes
    }

    /// Storage work of this call still running at `deadline` is stopped.
    pub fn set_deadline(&mut self, deadline: std::time::Instant) {
        self.deadline = Some(deadline);
    }

    /// Queries wait for a permit of `gate` (the tenant's scan lanes) before they run.
    pub fn set_scan_gate(&mut self, gate: Arc<tokio::sync::Semaphore>) {
        self.scan_gate = Some(gate);
    }

    /// Counts `bytes` of the call's events or jobs against what it may write.
    pub fn charge(&mut self, bytes: usize) -> Result<(), UnitOfWorkError> {
        let would_be = self.pending_bytes.saturating_add(bytes);
        if would_be > self.limits.max_commit_bytes {
            return Err(UnitOfWorkError::CommitTooLarge { limit: self.limits.max_commit_bytes, would_be });
        }
        self.pending_bytes = would_be;
        Ok(())
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Number of buffered writes.
    pub fn pending_writes(&self) -> usize {
        self.pending.len()
    }

    fn indexes(&self, collection: &str) -> Result<&[String], UnitOfWorkError> {
        self.collections
            .get(collection)
            .map(Vec::as_slice)
            .ok_or_else(|| UnitOfWorkError::UndeclaredCollection(collection.to_owned()))
    }

    fn check_key(&self, key: &str) -> Result<(), UnitOfWorkError> {
        if key.is_empty() {
            return Err(UnitOfWorkError::InvalidKey("keys must not be empty".into()));
        }
        if key.len() > self.limits.max_key_bytes {
            return Err(UnitOfWorkError::InvalidKey(format!("keys are at most {} bytes", self.limits.max_key_bytes)));
        }
        if key.chars().any(char::is_control) {
            return Err(UnitOfWorkError::InvalidKey("keys must not contain control characters".into()));
        }
        Ok(())
    }

    /// The document as this call sees it: its own writes first, then committed data.
    pub async fn get(&self, collection: &str, key: &str) -> Result<Option<StoredDocument>, UnitOfWorkError> {
        self.indexes(collection)?;
        self.check_key(key)?;
        self.slow_database().await;
        self.visible(collection, key).await
    }

    async fn visible(&self, collection: &str, key: &str) -> Result<Option<StoredDocument>, UnitOfWorkError> {
        match self.pending.get(&(collection.to_owned(), key.to_owned())) {
            Some(p) => Ok(match &p.op {
                WriteOp::Put { body, .. } => {
                    Some(StoredDocument { key: key.to_owned(), version: p.version, body: body.clone() })
                }
                WriteOp::Delete => None,
            }),
            None => Ok(self.store.get(&self.scope, collection, key).await?),
        }
    }

    fn check_condition(
        collection: &str,
        key: &str,
        visible: Option<u64>,
        condition: Condition,
    ) -> Result<(), UnitOfWorkError> {
        match (condition, visible) {
            (Condition::Any, _) => Ok(()),
            (Condition::Absent, None) => Ok(()),
            (Condition::Absent, Some(v)) => {
                Err(UnitOfWorkError::Conflict(format!("`{collection}/{key}` already exists (version {v})")))
            }
            (Condition::Version(want), Some(v)) if want == v => Ok(()),
            (Condition::Version(want), Some(v)) => {
                Err(UnitOfWorkError::Conflict(format!("`{collection}/{key}` is at version {v}, not {want}")))
            }
            (Condition::Version(want), None) => {
                Err(UnitOfWorkError::Conflict(format!("`{collection}/{key}` does not exist (expected version {want})")))
            }
        }
    }

    /// Buffers a write; returns the version the document now has for this call.
    pub async fn put(
        &mut self,
        collection: &str,
        key: &str,
        body: &str,
        condition: Condition,
    ) -> Result<u64, UnitOfWorkError> {
        let indexes = self.indexes(collection)?.to_vec();
        self.check_key(key)?;
        if body.len() > self.limits.max_document_bytes {
            return Err(UnitOfWorkError::DocumentTooLarge { size: body.len(), limit: self.limits.max_document_bytes });
        }
        self.check_room(collection, key, key.len() + body.len())?;
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| UnitOfWorkError::InvalidBody(e.to_string()))?;
        let index = indexes
            .iter()
            .filter_map(|field| value.get(field).and_then(super::index_text).map(|v| (field.clone(), v)))
            .collect();
        let op = WriteOp::Put { body: body.to_owned(), index };
        self.record(collection, key, condition, op).await
    }

    /// Buffers a delete; returns whether the document existed for this call.
    pub async fn delete(&mut self, collection: &str, key: &str, condition: Condition) -> Result<bool, UnitOfWorkError> {
        self.indexes(collection)?;
        self.check_key(key)?;
        let existed = self.visible(collection, key).await?.is_some();
        if !existed && condition == Condition::Any {
            return Ok(false);
        }
        self.check_room(collection, key, key.len())?;
        self.record(collection, key, condition, WriteOp::Delete).await?;
        Ok(existed)
    }

    /// Whether writing `size` bytes to `collection/key` keeps the call within what it may
    /// write (a rewrite of a buffered key replaces its bytes).
    fn check_room(&self, collection: &str, key: &str, size: usize) -> Result<(), UnitOfWorkError> {
        let replaced = self.pending.get(&(collection.to_owned(), key.to_owned())).map_or(0, Pending::size);
        let would_be = (self.pending_bytes - replaced).saturating_add(size);
        if would_be > self.limits.max_commit_bytes {
            return Err(UnitOfWorkError::CommitTooLarge { limit: self.limits.max_commit_bytes, would_be });
        }
        Ok(())
    }

    async fn record(
        &mut self,
        collection: &str,
        key: &str,
        condition: Condition,
        op: WriteOp,
    ) -> Result<u64, UnitOfWorkError> {
        let id = (collection.to_owned(), key.to_owned());
        let existing = self.pending.get(&id).cloned();
        if existing.is_none() && self.pending.len() >= self.limits.max_writes_per_call {
            return Err(UnitOfWorkError::TooManyWrites(self.limits.max_writes_per_call));
        }
        let (base, visible) = match &existing {
            Some(p) => (p.base, matches!(p.op, WriteOp::Put { .. }).then_some(p.version)),
            None => {
                let committed = self.store.get(&self.scope, collection, key).await?.map(|d| d.version);
                (committed, committed)
            }
        };
        Self::check_condition(collection, key, visible, condition)?;
        let version = visible.map_or(1, |v| v + 1);
        let strict = existing.as_ref().is_some_and(|p| p.strict) || condition != Condition::Any;
        let pending = Pending { key_bytes: key.len(), base, strict, version, op };
        self.pending_bytes = self.pending_bytes - existing.as_ref().map_or(0, Pending::size) + pending.size();
        self.pending.insert(id, pending);
        Ok(version)
    }

    /// The next value of the call's sequence `name` (see `keel:platform/sequences`): taken at
    /// once, in its own transaction, not with the call's commit. A call takes at most as many
    /// numbers as it may make writes: each is a turn at the database's single writer.
    pub async fn next_in_sequence(&mut self, name: &str, after: Option<u64>) -> Result<u64, UnitOfWorkError> {
        if self.sequence_takes >= self.limits.max_writes_per_call {
            return Err(UnitOfWorkError::TooManySequenceNumbers(self.limits.max_writes_per_call));
        }
        let valid = (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(UnitOfWorkError::InvalidKey(format!(
                "sequence names are 1-64 characters of a-z, 0-9, '-', '_' and '.'; got {name:?}"
            )));
        }
        self.sequence_takes += 1;
        Ok(self.store.next_in_sequence(&self.scope, name, after).await?)
    }

    async fn slow_database(&self) {
        if !self.limits.read_delay.is_zero() {
            tokio::time::sleep(self.limits.read_delay).await;
        }
    }

    /// A page of the collection as this call sees it.
    pub async fn query(
        &self,
        collection: &str,
        filters: Vec<Filter>,
        cursor: Option<&str>,
        limit: u32,
        descending: bool,
    ) -> Result<(Vec<StoredDocument>, Option<String>), UnitOfWorkError> {
        self.slow_database().await;
        let indexes = self.indexes(collection)?;
        if let Some(f) = filters.iter().find(|f| !indexes.contains(&f.field)) {
            return Err(UnitOfWorkError::UndeclaredIndex { collection: collection.to_owned(), field: f.field.clone() });
        }
        if filters.len() > self.limits.max_filters {
            return Err(UnitOfWorkError::InvalidQuery(format!(
                "{} conditions; a query may combine at most {}",
                filters.len(),
                self.limits.max_filters
            )));
        }
        for (i, f) in filters.iter().enumerate() {
            if filters[..i].iter().any(|g| g.field == f.field) {
                return Err(UnitOfWorkError::InvalidQuery(format!("field `{}` is filtered more than once", f.field)));
            }
        }
        let after = cursor.map(decode_cursor).transpose()?;
        let limit = if limit == 0 { self.limits.default_page } else { limit.min(self.limits.max_page) } as usize;
        let beyond = |key: &str| match &after {
            None => true,
            Some(a) if descending => key < a.as_str(),
            Some(a) => key > a.as_str(),
        };

        let _lane = match &self.scan_gate {
            None => None,
            Some(gate) => {
                let wait = gate.acquire();
                let permit = match self.deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline.into(), wait).await.ok(),
                    None => Some(wait.await),
                };
                match permit {
                    Some(Ok(permit)) => Some(permit),
                    _ => return Err(StoreError::Interrupted.into()),
                }
            }
        };
        let ours: Vec<_> = self.pending.iter().filter(|((c, _), _)| c == collection).collect();
        // Ask for enough committed rows that our own deletes cannot leave the page short.
        let fetch = limit + ours.len() + 1;
        let committed = self
            .store
            .scan(
                &self.scope,
                &KeyRange {
                    collection: collection.to_owned(),
                    filters: filters.clone(),
                    after: after.clone(),
                    limit: fetch as u32,
                    descending,
                    max_bytes: self.limits.max_read_bytes,
                    deadline: self.deadline,
                },
            )
            .await?;
        // The store stops early when the page's bytes reach the read budget; the rest is for
        // the next page.
        let store_truncated = committed.len() == fetch || bytes_of(&committed) >= self.limits.max_read_bytes;
        let last_seen = committed.last().map(|d| d.key.clone());

        let mut merged: Vec<StoredDocument> = committed
            .into_iter()
            .filter(|d| !self.pending.contains_key(&(collection.to_owned(), d.key.clone())))
            .collect();
        for ((_, key), p) in ours {
            let WriteOp::Put { body, index } = &p.op else { continue };
            let matches =
                filters.iter().all(|f| index.iter().any(|(field, value)| field == &f.field && value == &f.value));
            // When the committed scan stopped early, our writes past its last key belong to a later page.
            let within_scan = !store_truncated
                || last_seen.as_ref().is_none_or(|last| if descending { key >= last } else { key <= last });
            if matches && beyond(key) && within_scan {
                merged.push(StoredDocument { key: key.clone(), version: p.version, body: body.clone() });
            }
        }
        merged.sort_by(|a, b| if descending { b.key.cmp(&a.key) } else { a.key.cmp(&b.key) });

        // The call's own writes count against the read budget too.
        let mut fits = 0;
        let mut bytes = 0;
        for d in &merged {
            bytes += d.key.len() + d.body.len();
            if fits > 0 && bytes > self.limits.max_read_bytes {
                break;
            }
            fits += 1;
        }
        let limit = limit.min(fits.max(1));
        let next = if merged.len() > limit {
            merged.truncate(limit);
            merged.last().map(|d| d.key.clone())
        } else if store_truncated {
            last_seen
        } else {
            None
        };
        Ok((merged, next.map(|k| encode_cursor(&k))))
    }

    /// Commits the buffered writes in one transaction. Returns how many documents changed.
    pub async fn commit(self, now_ms: i64, audit: &super::WriteAudit) -> Result<usize, UnitOfWorkError> {
        self.commit_with(&super::Background::default(), now_ms, audit).await
    }

    /// Commits the buffered writes and the call's background work in one transaction.
    pub async fn commit_with(
        self,
        background: &super::Background,
        now_ms: i64,
        audit: &super::WriteAudit,
    ) -> Result<usize, UnitOfWorkError> {
        if self.pending.is_empty() && background.is_empty() {
            return Ok(0);
        }
        let writes: Vec<Write> = self
            .pending
            .into_iter()
            .map(|((collection, key), p)| Write {
                collection,
                key,
                condition: match (p.strict, p.base) {
                    (false, _) => Condition::Any,
                    (true, None) => Condition::Absent,
                    (true, Some(v)) => Condition::Version(v),
                },
                version: p.version,
                op: p.op,
            })
            .collect();
        self.store.commit_with(&self.scope, &writes, background, now_ms, audit).await?;
        Ok(writes.len())
    }
}

fn bytes_of(documents: &[StoredDocument]) -> usize {
    documents.iter().map(|d| d.key.len() + d.body.len()).sum()
}

const CURSOR_PREFIX: &str = "k1.";

fn encode_cursor(key: &str) -> String {
    format!("{CURSOR_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key))
}

fn decode_cursor(cursor: &str) -> Result<String, UnitOfWorkError> {
    let raw = cursor.strip_prefix(CURSOR_PREFIX).ok_or(UnitOfWorkError::InvalidCursor)?;
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw).map_err(|_| UnitOfWorkError::InvalidCursor)?;
    String::from_utf8(bytes).map_err(|_| UnitOfWorkError::InvalidCursor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::SqliteDocumentStore;

    fn test_audit() -> crate::storage::WriteAudit {
        crate::storage::WriteAudit {
            actor: "tok_test".into(),
            actor_name: "test".into(),
            request_id: "req_test".into(),
        }
    }

    async fn setup() -> (Arc<dyn DocumentStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::open_sqlite(&dir.path().join("uow.db")).await.unwrap();
        (Arc::new(SqliteDocumentStore::new(pool)), dir)
    }

    fn uow(store: &Arc<dyn DocumentStore>) -> UnitOfWork {
        let collections = BTreeMap::from([("notes".to_string(), vec!["tag".to_string()])]);
        UnitOfWork::new(
            store.clone(),
            Scope { tenant: "t".into(), plugin: "p".into() },
            Arc::new(collections),
            StorageLimits { max_writes_per_call: 20, ..StorageLimits::default() },
        )
    }

    fn keys(page: &(Vec<StoredDocument>, Option<String>)) -> Vec<&str> {
        page.0.iter().map(|d| d.key.as_str()).collect()
    }

    #[tokio::test]
    async fn sequence_numbers_are_taken_at_once_named_validly_and_bounded_per_call() {
        let (store, _dir) = setup().await;
        let mut call = uow(&store);
        assert_eq!(call.next_in_sequence("ticket", None).await.unwrap(), 1);
        // Taken outside the call's unit of work: dropped without commit, the number stays taken.
        drop(call);
        let mut call = uow(&store);
        assert_eq!(call.next_in_sequence("ticket", None).await.unwrap(), 2);
        for bad in ["", "Ticket", "has space", &"x".repeat(65)] {
            assert!(matches!(call.next_in_sequence(bad, None).await, Err(UnitOfWorkError::InvalidKey(_))), "{bad:?}");
        }
        for _ in 1..20 {
            call.next_in_sequence("ticket", None).await.unwrap();
        }
        assert!(matches!(
            call.next_in_sequence("ticket", None).await,
            Err(UnitOfWorkError::TooManySequenceNumbers(20))
        ));
    }

    #[tokio::test]
    async fn writes_are_visible_to_the_call_but_not_to_others_until_commit() {
        let (store, _dir) = setup().await;
        let mut call = uow(&store);
        assert_eq!(call.put("notes", "a", r#"{"tag":"x"}"#, Condition::Absent).await.unwrap(), 1);
        assert_eq!(call.put("notes", "a", r#"{"tag":"y"}"#, Condition::Version(1)).await.unwrap(), 2);
        assert_eq!(call.get("notes", "a").await.unwrap().unwrap().version, 2);
        assert!(uow(&store).get("notes", "a").await.unwrap().is_none(), "uncommitted writes leak to another call");
        call.commit(1, &test_audit()).await.unwrap();
        let committed = uow(&store).get("notes", "a").await.unwrap().unwrap();
        assert_eq!((committed.version, committed.body.as_str()), (2, r#"{"tag":"y"}"#));
    }

    #[tokio::test]
    async fn a_call_that_is_dropped_commits_nothing() {
        let (store, _dir) = setup().await;
        let mut call = uow(&store);
        call.put("notes", "a", "{}", Condition::Any).await.unwrap();
        drop(call);
        assert!(uow(&store).get("notes", "a").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_race_lost_between_read_and_commit_is_a_conflict_and_writes_nothing() {
        let (store, _dir) = setup().await;
        let mut seed = uow(&store);
        seed.put("notes", "a", "{}", Condition::Absent).await.unwrap();
        seed.commit(1, &test_audit()).await.unwrap();

        let mut first = uow(&store);
        let mut second = uow(&store);
        first.put("notes", "a", r#"{"by":1}"#, Condition::Version(1)).await.unwrap();
        first.put("notes", "b", "{}", Condition::Absent).await.unwrap();
        second.put("notes", "a", r#"{"by":2}"#, Condition::Version(1)).await.unwrap();
        second.commit(2, &test_audit()).await.unwrap();
        let lost = first.commit(3, &test_audit()).await;
        assert!(matches!(lost, Err(UnitOfWorkError::Store(StoreError::Conflict { .. }))), "{lost:?}");
        assert!(uow(&store).get("notes", "b").await.unwrap().is_none(), "the losing call left a partial batch");
        assert_eq!(uow(&store).get("notes", "a").await.unwrap().unwrap().body, r#"{"by":2}"#);
    }

    #[tokio::test]
    async fn conditions_are_checked_against_what_the_call_sees() {
        let (store, _dir) = setup().await;
        let mut call = uow(&store);
        call.put("notes", "a", "{}", Condition::Absent).await.unwrap();
        assert!(matches!(call.put("notes", "a", "{}", Condition::Absent).await, Err(UnitOfWorkError::Conflict(_))));
        assert!(matches!(call.put("notes", "a", "{}", Condition::Version(5)).await, Err(UnitOfWorkError::Conflict(_))));
        assert!(call.delete("notes", "a", Condition::Version(1)).await.unwrap());
        assert!(call.get("notes", "a").await.unwrap().is_none());
        assert!(!call.delete("notes", "a", Condition::Any).await.unwrap());
    }

    #[tokio::test]
    async fn queries_merge_the_calls_own_writes_in_key_order() {
        let (store, _dir) = setup().await;
        let mut seed = uow(&store);
        for k in ["k1", "k2", "k3", "k4"] {
            seed.put("notes", k, r#"{"tag":"old"}"#, Condition::Absent).await.unwrap();
        }
        seed.commit(1, &test_audit()).await.unwrap();

        let mut call = uow(&store);
        call.delete("notes", "k2", Condition::Any).await.unwrap();
        call.put("notes", "k25", r#"{"tag":"new"}"#, Condition::Absent).await.unwrap();
        call.put("notes", "k3", r#"{"tag":"new"}"#, Condition::Any).await.unwrap();

        let all = call.query("notes", vec![], None, 10, false).await.unwrap();
        assert_eq!(keys(&all), ["k1", "k25", "k3", "k4"]);
        let new = call
            .query("notes", vec![Filter { field: "tag".into(), value: "new".into() }], None, 10, false)
            .await
            .unwrap();
        assert_eq!(keys(&new), ["k25", "k3"]);
        let old = call
            .query("notes", vec![Filter { field: "tag".into(), value: "old".into() }], None, 10, true)
            .await
            .unwrap();
        assert_eq!(keys(&old), ["k4", "k1"]);

        // Paging two at a time visits every document once.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = call.query("notes", vec![], cursor.as_deref(), 2, false).await.unwrap();
            seen.extend(page.0.iter().map(|d| d.key.clone()));
            match page.1 {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["k1", "k25", "k3", "k4"]);
    }

    #[tokio::test]
    async fn bad_requests_are_typed() {
        let (store, _dir) = setup().await;
        let mut call = uow(&store);
        assert!(matches!(call.get("secrets", "a").await, Err(UnitOfWorkError::UndeclaredCollection(_))));
        assert!(matches!(call.put("notes", "", "{}", Condition::Any).await, Err(UnitOfWorkError::InvalidKey(_))));
        assert!(matches!(
            call.put("notes", &"k".repeat(300), "{}", Condition::Any).await,
            Err(UnitOfWorkError::InvalidKey(_))
        ));
        assert!(matches!(
            call.put("notes", "a", "{not json", Condition::Any).await,
            Err(UnitOfWorkError::InvalidBody(_))
        ));
        let big = format!("\"{}\"", "x".repeat(2 << 20));
        assert!(matches!(
            call.put("notes", "a", &big, Condition::Any).await,
            Err(UnitOfWorkError::DocumentTooLarge { .. })
        ));
        let f = vec![Filter { field: "colour".into(), value: "x".into() }];
        assert!(matches!(call.query("notes", f, None, 10, false).await, Err(UnitOfWorkError::UndeclaredIndex { .. })));
        assert!(matches!(
            call.query("notes", vec![], Some("nope"), 10, false).await,
            Err(UnitOfWorkError::InvalidCursor)
        ));
        for i in 0..20 {
            call.put("notes", &format!("n{i}"), "{}", Condition::Any).await.unwrap();
        }
        assert!(matches!(
            call.put("notes", "one-too-many", "{}", Condition::Any).await,
            Err(UnitOfWorkError::TooManyWrites(20))
        ));
    }
}

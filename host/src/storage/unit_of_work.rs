//! One plugin call's view of storage: buffered writes over committed data.
//!
//! Writes are kept in memory, so a call that traps or times out never touched the database
//! and nothing needs undoing; a successful call commits them in one transaction, with each
//! key's precondition and everything the call read (documents, and each query's results)
//! re-checked against committed state: a race lost between the call's reads and its commit
//! is a conflict, never a lost update or a write skew.

use super::index::{CollectionIndexes, Condition as FieldCondition, PlanError};
use super::{
    Comparison, Condition, DocumentStore, Filter, KeyRange, Position, Read, Scope, StoreError, StoredDocument, Write,
    WriteOp,
};
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
    /// Conditions one query may combine (each one not driving the scan is a lookup per
    /// document).
    pub max_filters: usize,
    /// Documents a call that writes may have read (each is checked again at commit).
    pub max_checked_documents: usize,
    /// Query pages a call that writes may have read (each runs again at commit).
    pub max_checked_queries: usize,
    /// Zero except in tests: every read first waits this long, standing in for a slow or
    /// busy database, to show that a call's deadline reaches into its host calls.
    pub read_delay: std::time::Duration,
    /// Bounds on full-text search text.
    pub search_query: super::search::QueryLimits,
    pub max_search_page: u32,
    pub default_search_page: u32,
    /// How long one search may run (within the call's own deadline).
    pub search_timeout: std::time::Duration,
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
            max_filters: 8,
            max_checked_documents: 10_000,
            max_checked_queries: 100,
            read_delay: std::time::Duration::ZERO,
            search_query: super::search::QueryLimits::default(),
            max_search_page: 100,
            default_search_page: 20,
            search_timeout: std::time::Duration::from_secs(2),
        }
    }
}

/// Why a storage request from a plugin was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitOfWorkError {
    #[error("collection `{0}` is not declared in the plugin manifest")]
    UndeclaredCollection(String),
    #[error("collection `{0}` declares no searchable fields in the plugin manifest")]
    UndeclaredSearch(String),
    #[error(
        "a call may search or write, not both: search results are ranked over data that moves, so they cannot be checked again at commit; search in a call that only reads, then write by key in another"
    )]
    SearchAndWrite,
    #[error("field `{field}` is not an indexed field of collection `{collection}`")]
    UndeclaredIndex { collection: String, field: String },
    #[error("field `{field}` of collection `{collection}` {reason}")]
    InvalidValue { collection: String, field: String, reason: String },
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
    #[error(
        "this call read more than can be checked at commit ({documents} documents, {queries} queries at most); a call that writes must read less: split the work into jobs"
    )]
    ReadSetTooLarge { documents: usize, queries: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl UnitOfWorkError {
    /// Whether the commit failed because another call changed what this one read or wrote
    /// first: running the call again, on the winner's writes, can succeed.
    pub fn is_lost_race(&self) -> bool {
        matches!(self, UnitOfWorkError::Store(StoreError::Conflict { .. } | StoreError::ReadConflict { .. }))
    }
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

/// How many pages' worth of a call's own buffered writes a query over-fetches committed rows
/// for (they may hide committed rows of the page).
const OWN_WRITES_SLACK_PAGES: usize = 4;

/// A row of a query page: committed, or one of the call's own buffered writes (borrowed
/// until it is known to be on the page).
enum PageRow<'a> {
    Stored(StoredDocument),
    Own { key: &'a str, version: u64, body: &'a str },
}

impl PageRow<'_> {
    fn size(&self) -> usize {
        match self {
            PageRow::Stored(d) => d.key.len() + d.body.len(),
            PageRow::Own { key, body, .. } => key.len() + body.len(),
        }
    }

    fn into_document(self) -> StoredDocument {
        match self {
            PageRow::Stored(d) => d,
            PageRow::Own { key, version, body } => {
                StoredDocument { key: key.to_owned(), version, body: body.to_owned() }
            }
        }
    }
}

/// The storage side of one plugin call.
pub struct UnitOfWork {
    store: Arc<dyn DocumentStore>,
    scope: Scope,
    /// Declared collections and their indexes.
    collections: Arc<BTreeMap<String, CollectionIndexes>>,
    limits: StorageLimits,
    pending: BTreeMap<(String, String), Pending>,
    /// The index entries of the buffered puts, (collection, index, entry, key): a query finds
    /// the call's own matching writes by a range here, not by walking every buffered write
    /// (an import buffers tens of thousands and queries per row).
    pending_entries: std::collections::BTreeSet<(String, String, String, String)>,
    /// Bytes of `pending` (keys and bodies) plus event and job payloads the call asked for.
    pending_bytes: usize,
    /// When the call's time is up: storage work still running then is stopped.
    deadline: Option<std::time::Instant>,
    /// Taken around each query: the tenant's scan lanes.
    scan_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Sequence numbers taken so far (each is a write transaction of its own).
    sequence_takes: usize,
    /// What the call read of committed data, checked again at commit.
    reads: std::sync::Mutex<ReadSet>,
    /// Whether the call has searched: then it may not write.
    searched: std::sync::atomic::AtomicBool,
    /// Versions of committed documents learnt a page at a time, for writes to keys the call
    /// never read (see [`DocumentStore::versions_from`]).
    read_ahead: std::sync::Mutex<BTreeMap<String, ReadAhead>>,
    /// Set when the database was found away: the call's later storage work fails at once
    /// rather than each waiting for a connection, so the call ends (503) before its deadline.
    unavailable: std::sync::OnceLock<String>,
}

/// What one collection's read-ahead has learnt: spans of keys whose versions are all known
/// (a key in a span and not in `versions` was absent when the span was read).
#[derive(Debug, Default)]
struct ReadAhead {
    /// First key → last key (inclusive; `None`: to the end of the collection).
    spans: BTreeMap<String, Option<String>>,
    versions: std::collections::HashMap<String, u64>,
    /// Pages read, and writes answered from them without a read of their own.
    pages: u32,
    hits: u32,
}

impl ReadAhead {
    /// How many keys one read-ahead asks for: a round trip costs about the same for one
    /// row or for this many small ones.
    const PAGE: u32 = 64;
    /// Versions held per collection before the call goes back to reading one key at a time.
    const MAX_KNOWN: usize = 1 << 15;

    /// Whether another page is worth a round trip: while pages answer more than the key
    /// they were read for (keys written in order), not for keys written in random order,
    /// where a page is read per key and almost none of it is used.
    fn worth_reading(&self) -> bool {
        self.versions.len() < Self::MAX_KNOWN && (self.pages < 4 || self.hits >= self.pages)
    }

    /// `Some(version)` when `key` lies in a span read ahead.
    fn lookup(&self, key: &str) -> Option<Option<u64>> {
        let (_, last) =
            self.spans.range::<str, _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(key))).next_back()?;

        match last {
            Some(last) if key > last.as_str() => None,
            _ => Some(self.versions.get(key).copied()),
        }
    }

    fn learn(&mut self, from: &str, page: Vec<(String, u64)>) {
        self.pages += 1;
        let last = (page.len() >= Self::PAGE as usize).then(|| page.last().map(|(k, _)| k.clone())).flatten();
        self.spans.insert(from.to_owned(), last);
        self.versions.extend(page);
    }
}

#[derive(Debug, Default)]
struct ReadSet {
    max_documents: usize,
    max_queries: usize,
    /// (collection, key) → the version first seen (`None`: absent).
    documents: BTreeMap<(String, String), Option<u64>>,
    scans: Vec<Read>,
    /// More was read than is recorded: the call may not write.
    overflowed: bool,
}

impl ReadSet {
    fn document(&mut self, collection: &str, key: &str, version: Option<u64>) {
        let id = (collection.to_owned(), key.to_owned());
        if self.documents.contains_key(&id) {
            return;
        }
        if self.documents.len() >= self.max_documents {
            self.overflowed = true;
            return;
        }
        self.documents.insert(id, version);
    }

    fn scan(&mut self, range: KeyRange, seen: Vec<(String, u64)>) {
        if self.scans.len() >= self.max_queries {
            self.overflowed = true;
            return;
        }
        self.scans.push(Read::Scan { range, seen });
    }

    fn into_reads(self) -> Vec<Read> {
        let documents =
            self.documents.into_iter().map(|((collection, key), version)| Read::Document { collection, key, version });
        documents.chain(self.scans).collect()
    }
}

impl UnitOfWork {
    pub fn new(
        store: Arc<dyn DocumentStore>,
        scope: Scope,
        collections: Arc<BTreeMap<String, CollectionIndexes>>,
        limits: StorageLimits,
    ) -> Self {
        let reads = ReadSet {
            max_documents: limits.max_checked_documents,
            max_queries: limits.max_checked_queries,
            ..ReadSet::default()
        };
        UnitOfWork {
            store,
            scope,
            collections,
            limits,
            pending: BTreeMap::new(),
            pending_entries: std::collections::BTreeSet::new(),
            pending_bytes: 0,
            deadline: None,
            scan_gate: None,
            sequence_takes: 0,
            reads: std::sync::Mutex::new(reads),
            searched: std::sync::atomic::AtomicBool::new(false),
            read_ahead: std::sync::Mutex::new(BTreeMap::new()),
            unavailable: std::sync::OnceLock::new(),
        }
    }

    /// Runs one storage operation of the call, unless the database was already found away.
    async fn guarded<T>(
        &self,
        operation: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if let Some(reason) = self.unavailable.get() {
            return Err(StoreError::Unavailable(reason.clone()));
        }
        let result = operation.await;
        if let Err(StoreError::Unavailable(reason)) = &result {
            let _ = self.unavailable.set(reason.clone());
        }
        result
    }

    /// Why the database was away for this call, if it was.
    pub fn storage_unavailable(&self) -> Option<&str> {
        self.unavailable.get().map(String::as_str)
    }

    /// The committed version of a key the call has not read, for a write to it: from what
    /// was read ahead, reading the next page of keys when the backend reads ahead, else from
    /// the key itself. Like a read of the key, it may be a moment old by commit; a write
    /// whose condition depends on it is checked again there.
    /// Also says whether the version came from a page read ahead (maybe older than a read
    /// of the key now would be).
    async fn committed_version(&self, collection: &str, key: &str) -> Result<Option<u64>, UnitOfWorkError> {
        let worth_reading = {
            let mut all = self.read_ahead.lock().expect("read-ahead lock");
            let known = all.entry(collection.to_owned()).or_default();
            if let Some(version) = known.lookup(key) {
                known.hits += 1;
                return Ok(version);
            }
            known.worth_reading()
        };
        if worth_reading {
            let page = self.guarded(self.store.versions_from(&self.scope, collection, key, ReadAhead::PAGE)).await?;
            if let Some(page) = page {
                let mut all = self.read_ahead.lock().expect("read-ahead lock");
                let known = all.entry(collection.to_owned()).or_default();
                known.learn(key, page);
                return Ok(known.lookup(key).flatten());
            }
        }
        Ok(self.guarded(self.store.get(&self.scope, collection, key)).await?.map(|d| d.version))
    }

    /// Documents the call read through a query are as new as anything it knows of them: a
    /// page read ahead earlier takes their versions, so a later write to one is judged by
    /// what the call saw, not by an older page.
    fn refresh_read_ahead(&self, collection: &str, documents: &[(String, u64)]) {
        let mut all = self.read_ahead.lock().expect("read-ahead lock");
        if let Some(known) = all.get_mut(collection) {
            for (key, version) in documents {
                if known.lookup(key).is_some() {
                    known.versions.insert(key.clone(), *version);
                }
            }
        }
    }

    /// Whether everything this call read is still as it saw it. An error answer given on data
    /// that changed while the call ran (a refusal computed from a balance and a ledger read a
    /// moment apart) is worth running again, as a lost commit is. A read set too large to
    /// record is taken as current: such an answer stands.
    pub async fn reads_current(&self) -> Result<bool, UnitOfWorkError> {
        let reads: Vec<Read> = {
            let set = self.reads.lock().expect("read set lock");
            if set.overflowed {
                return Ok(true);
            }
            let documents = set.documents.iter().map(|((collection, key), version)| Read::Document {
                collection: collection.clone(),
                key: key.clone(),
                version: *version,
            });
            documents.chain(set.scans.iter().cloned()).collect()
        };
        if reads.is_empty() {
            return Ok(true);
        }
        Ok(self.guarded(self.store.reads_current(&self.scope, &reads)).await?)
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

    fn indexes(&self, collection: &str) -> Result<&CollectionIndexes, UnitOfWorkError> {
        self.collections.get(collection).ok_or_else(|| UnitOfWorkError::UndeclaredCollection(collection.to_owned()))
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

    /// Several documents of one collection as this call sees them, in the order of `keys`:
    /// one read of committed data for all the keys the call has not written itself. At most
    /// `max_page` keys; what comes back together stays within one read's byte budget.
    pub async fn get_many(
        &self,
        collection: &str,
        keys: &[String],
    ) -> Result<Vec<Option<StoredDocument>>, UnitOfWorkError> {
        self.indexes(collection)?;
        if keys.len() > self.limits.max_page as usize {
            return Err(UnitOfWorkError::InvalidQuery(format!(
                "{} keys; one read takes at most {}",
                keys.len(),
                self.limits.max_page
            )));
        }
        for key in keys {
            self.check_key(key)?;
        }
        self.slow_database().await;
        let max = self.limits.max_read_bytes;
        let too_large = |bytes: usize| {
            UnitOfWorkError::InvalidQuery(format!(
                "the documents of {} keys come to {bytes} bytes or more; one read returns at most {max}: ask for fewer keys",
                keys.len()
            ))
        };
        let mut unwritten: Vec<String> = keys
            .iter()
            .filter(|k| !self.pending.contains_key(&(collection.to_owned(), (*k).clone())))
            .cloned()
            .collect();
        unwritten.sort();
        unwritten.dedup();
        let mut committed: BTreeMap<String, StoredDocument> = BTreeMap::new();
        if !unwritten.is_empty() {
            let _lane = self.scan_lane().await?;
            let found =
                self.guarded(self.store.get_many(&self.scope, collection, &unwritten, max, self.deadline)).await?;
            // The store stops once it holds `max` bytes: past that some keys went unread.
            let bytes: usize = found.iter().map(|d| d.key.len() + d.body.len()).sum();
            if bytes >= max {
                return Err(too_large(bytes));
            }
            committed = found.into_iter().map(|d| (d.key.clone(), d)).collect();
            let mut reads = self.reads.lock().expect("read set lock");
            for key in &unwritten {
                reads.document(collection, key, committed.get(key).map(|d| d.version));
            }
        }
        // What the answer holds: a key asked twice counted twice, the call's own writes too.
        let mut bytes = 0usize;
        for key in keys {
            bytes += match self.pending.get(&(collection.to_owned(), key.clone())) {
                Some(Pending { op: WriteOp::Put { body, .. }, .. }) => key.len() + body.len(),
                Some(_) => 0,
                None => committed.get(key).map_or(0, |d| key.len() + d.body.len()),
            };
            if bytes > max {
                return Err(too_large(bytes));
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(match self.pending.get(&(collection.to_owned(), key.clone())) {
                Some(p) => match &p.op {
                    WriteOp::Put { body, .. } => {
                        Some(StoredDocument { key: key.clone(), version: p.version, body: body.clone() })
                    }
                    WriteOp::Delete => None,
                },
                None => committed.get(key).cloned(),
            });
        }
        Ok(out)
    }

    /// One of the tenant's scan lanes, held while a read of many documents runs.
    async fn scan_lane(&self) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, UnitOfWorkError> {
        let Some(gate) = &self.scan_gate else { return Ok(None) };
        let wait = gate.clone().acquire_owned();
        let permit = match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), wait).await.ok(),
            None => Some(wait.await),
        };
        match permit {
            Some(Ok(permit)) => Ok(Some(permit)),
            _ => Err(StoreError::Interrupted.into()),
        }
    }

    async fn visible(&self, collection: &str, key: &str) -> Result<Option<StoredDocument>, UnitOfWorkError> {
        match self.pending.get(&(collection.to_owned(), key.to_owned())) {
            Some(p) => Ok(match &p.op {
                WriteOp::Put { body, .. } => {
                    Some(StoredDocument { key: key.to_owned(), version: p.version, body: body.clone() })
                }
                WriteOp::Delete => None,
            }),
            None => {
                let found = self.guarded(self.store.get(&self.scope, collection, key)).await?;
                self.reads.lock().expect("read set lock").document(collection, key, found.as_ref().map(|d| d.version));
                Ok(found)
            }
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
        self.indexes(collection)?;
        self.check_key(key)?;
        if body.len() > self.limits.max_document_bytes {
            return Err(UnitOfWorkError::DocumentTooLarge { size: body.len(), limit: self.limits.max_document_bytes });
        }
        self.check_room(collection, key, key.len() + body.len())?;
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| UnitOfWorkError::InvalidBody(e.to_string()))?;
        let indexes = self.indexes(collection)?;
        let index = indexes.entries(&value).map_err(|(field, reason)| UnitOfWorkError::InvalidValue {
            collection: collection.to_owned(),
            field,
            reason,
        })?;
        let search = indexes.search.as_ref().map(|fields| fields.extract(&value));
        let op = WriteOp::Put { body: body.to_owned(), index, search };
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
        if self.has_searched() {
            return Err(UnitOfWorkError::SearchAndWrite);
        }
        let id = (collection.to_owned(), key.to_owned());
        let existing = self.pending.get(&id).cloned();
        if existing.is_none() && self.pending.len() >= self.limits.max_writes_per_call {
            return Err(UnitOfWorkError::TooManyWrites(self.limits.max_writes_per_call));
        }
        let (base, visible) = match &existing {
            Some(p) => (p.base, matches!(p.op, WriteOp::Put { .. }).then_some(p.version)),
            None => {
                // A key the call read is judged by the version it saw: if it moved since, the
                // write's condition still holds for this call, and the commit check (which
                // sees the move) makes the call lose the race as a whole, to be run again.
                let seen = self.reads.lock().expect("read set lock").documents.get(&id).copied();
                let committed = match seen {
                    Some(version) => version,
                    None => self.committed_version(collection, key).await?,
                };
                (committed, committed)
            }
        };
        Self::check_condition(collection, key, visible, condition)?;
        let version = visible.map_or(1, |v| v + 1);
        let strict = existing.as_ref().is_some_and(|p| p.strict) || condition != Condition::Any;
        let pending = Pending { key_bytes: key.len(), base, strict, version, op };
        self.pending_bytes = self.pending_bytes - existing.as_ref().map_or(0, Pending::size) + pending.size();
        let entries = |p: &Pending| match &p.op {
            WriteOp::Put { index, .. } => index
                .iter()
                .map(|(name, entry)| (collection.to_owned(), name.clone(), entry.clone(), key.to_owned()))
                .collect(),
            WriteOp::Delete => Vec::new(),
        };
        for old in existing.as_ref().map(entries).unwrap_or_default() {
            self.pending_entries.remove(&old);
        }
        self.pending_entries.extend(entries(&pending));
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
        if !super::valid_sequence_name(name) {
            return Err(UnitOfWorkError::InvalidKey(format!(
                "sequence names are 1-64 characters of a-z, 0-9, '-', '_' and '.'; got {name:?}"
            )));
        }
        self.sequence_takes += 1;
        Ok(self.guarded(self.store.next_in_sequence(&self.scope, name, after)).await?)
    }

    async fn slow_database(&self) {
        if !self.limits.read_delay.is_zero() {
            tokio::time::sleep(self.limits.read_delay).await;
        }
    }

    /// A page of the collection as this call sees it: documents whose indexed fields equal
    /// `filters`, in key order.
    pub async fn query(
        &self,
        collection: &str,
        filters: Vec<Filter>,
        cursor: Option<&str>,
        limit: u32,
        descending: bool,
    ) -> Result<(Vec<StoredDocument>, Option<String>), UnitOfWorkError> {
        let conditions = filters
            .into_iter()
            .map(|f| FieldCondition { field: f.field, op: Comparison::Eq, value: f.value })
            .collect();
        self.find(&Find {
            collection: collection.to_owned(),
            conditions,
            order_by: None,
            cursor: cursor.map(str::to_owned),
            limit,
            descending,
        })
        .await
    }

    /// A page of the collection as this call sees it: documents meeting every condition,
    /// ordered by `order_by` (then key), or by key.
    pub async fn find(&self, spec: &Find) -> Result<(Vec<StoredDocument>, Option<String>), UnitOfWorkError> {
        self.slow_database().await;
        let collection = spec.collection.as_str();
        let indexes = self.indexes(collection)?;
        if spec.conditions.len() > self.limits.max_filters {
            return Err(UnitOfWorkError::InvalidQuery(format!(
                "{} conditions; a query may combine at most {}",
                spec.conditions.len(),
                self.limits.max_filters
            )));
        }
        // The same condition twice says nothing more: a caller's bug, and the shape of a query
        // built to repeat work (a field may still take several different conditions: a range
        // is two).
        for (i, c) in spec.conditions.iter().enumerate() {
            if spec.conditions[..i].iter().any(|d| d.field == c.field && d.op == c.op && d.value == c.value) {
                return Err(UnitOfWorkError::InvalidQuery(format!(
                    "the condition on `{}` ({:?} `{}`) is given twice",
                    c.field, c.op, c.value
                )));
            }
        }
        let plan = indexes.plan(collection, &spec.conditions, spec.order_by.as_deref()).map_err(|e| match e {
            PlanError::NotIndexed { collection, field } => UnitOfWorkError::UndeclaredIndex { collection, field },
            PlanError::BadValue { field, reason } => {
                UnitOfWorkError::InvalidValue { collection: collection.to_owned(), field, reason }
            }
            PlanError::Invalid(reason) => UnitOfWorkError::InvalidQuery(reason),
        })?;
        let descending = spec.descending;
        let after = spec.cursor.as_deref().map(|c| decode_cursor(c, plan.drive.as_ref())).transpose()?;
        let limit =
            if spec.limit == 0 { self.limits.default_page } else { spec.limit.min(self.limits.max_page) } as usize;
        let beyond = |position: &Position| match &after {
            None => true,
            Some(a) if descending => position < a,
            Some(a) => position > a,
        };

        let _lane = self.scan_lane().await?;
        let in_collection =
            || self.pending.range((collection.to_owned(), String::new())..).take_while(|((c, _), _)| c == collection);
        // The call's own writes that may join the page: with a driving index, those whose
        // entry falls in its range (found in `pending_entries`); else all of the collection's.
        let ours: Vec<(&(String, String), &Pending)> = match &plan.drive {
            None => in_collection().collect(),
            Some(drive) => {
                let from = (
                    collection.to_owned(),
                    drive.index.clone(),
                    drive.lower.as_ref().map_or_else(String::new, |(lo, _)| lo.clone()),
                    String::new(),
                );
                self.pending_entries
                    .range(from..)
                    .take_while(|(c, i, entry, _)| {
                        c == collection
                            && *i == drive.index
                            && drive
                                .upper
                                .as_ref()
                                .is_none_or(|(hi, inclusive)| entry < hi || (*inclusive && entry == hi))
                    })
                    .filter_map(|(c, _, _, key)| self.pending.get_key_value(&(c.clone(), key.clone())))
                    .collect()
            }
        };
        // Ask for enough committed rows that our own deletes and moves rarely leave the page
        // short, but not for every buffered write (an import buffers tens of thousands): a
        // page may then be short, and `next` still says whether more follow.
        let slack = OWN_WRITES_SLACK_PAGES * limit;
        let fetch = limit + in_collection().take(slack).count() + 1;
        let mut range = KeyRange {
            collection: collection.to_owned(),
            drive: plan.drive.clone(),
            residual: plan.residual.clone(),
            after: after.clone(),
            limit: fetch as u32,
            descending,
            max_bytes: self.limits.max_read_bytes,
            deadline: self.deadline,
        };
        let committed = self.guarded(self.store.scan(&self.scope, &range)).await?;
        range.deadline = None;
        let seen: Vec<(String, u64)> = committed.iter().map(|(_, d)| (d.key.clone(), d.version)).collect();
        self.refresh_read_ahead(collection, &seen);
        self.reads.lock().expect("read set lock").scan(range, seen);
        // The store stops early when the page's bytes reach the read budget; the rest is for
        // the next page.
        let store_truncated = committed.len() == fetch
            || committed.iter().map(|(_, d)| d.key.len() + d.body.len()).sum::<usize>() >= self.limits.max_read_bytes;
        let last_seen = committed.last().map(|(p, _)| p.clone());

        // Our own writes join the page by reference: only those that end up on it are copied.
        let mut merged: Vec<(Position, PageRow<'_>)> = committed
            .into_iter()
            .filter(|(_, d)| !self.pending.contains_key(&(collection.to_owned(), d.key.clone())))
            .map(|(position, d)| (position, PageRow::Stored(d)))
            .collect();
        for ((_, key), p) in ours {
            let WriteOp::Put { body, index, .. } = &p.op else { continue };
            let entry = |name: &str| index.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
            let position = match &plan.drive {
                None => Position { entry: String::new(), key: key.clone() },
                Some(drive) => match entry(&drive.index) {
                    Some(value) if drive.contains(value) => Position { entry: value.to_owned(), key: key.clone() },
                    _ => continue,
                },
            };
            if !plan.residual.iter().all(|r| r.holds(entry(&r.index))) || !beyond(&position) {
                continue;
            }
            // When the committed scan stopped early, our writes past its end belong to a later page.
            let within_scan = !store_truncated
                || last_seen.as_ref().is_none_or(|last| if descending { &position >= last } else { &position <= last });
            if within_scan {
                merged.push((position, PageRow::Own { key, version: p.version, body }));
            }
        }
        merged.sort_by(|a, b| if descending { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });

        // The call's own writes count against the read budget too.
        let mut fits = 0;
        let mut bytes = 0;
        for (_, d) in &merged {
            bytes += d.size();
            if fits > 0 && bytes > self.limits.max_read_bytes {
                break;
            }
            fits += 1;
        }
        let limit = limit.min(fits.max(1));
        let next = if merged.len() > limit {
            merged.truncate(limit);
            merged.last().map(|(p, _)| p.clone())
        } else if store_truncated {
            last_seen
        } else {
            None
        };
        let next = next.map(|p| encode_cursor(&p, plan.drive.as_ref()));
        Ok((merged.into_iter().map(|(_, d)| d.into_document()).collect(), next))
    }

    fn has_searched(&self) -> bool {
        self.searched.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A page of full-text matches in committed data, best first. Read-only: a call that has
    /// written may not search, and one that searched may not write (see
    /// [`UnitOfWorkError::SearchAndWrite`]).
    pub async fn search(&self, spec: &Search) -> Result<(Vec<StoredDocument>, Option<String>), UnitOfWorkError> {
        use super::search;
        self.slow_database().await;
        let collection = spec.collection.as_str();
        let indexes = self.indexes(collection)?;
        let Some(fields) = &indexes.search else {
            return Err(UnitOfWorkError::UndeclaredSearch(collection.to_owned()));
        };
        if !self.pending.is_empty() {
            return Err(UnitOfWorkError::SearchAndWrite);
        }
        if spec.conditions.len() > self.limits.max_filters {
            return Err(UnitOfWorkError::InvalidQuery(format!(
                "{} conditions; a search may combine at most {}",
                spec.conditions.len(),
                self.limits.max_filters
            )));
        }
        let terms =
            search::parse_query(&spec.query, self.limits.search_query).map_err(UnitOfWorkError::InvalidQuery)?;
        let residual = indexes.predicates(collection, &spec.conditions).map_err(|e| match e {
            PlanError::NotIndexed { collection, field } => UnitOfWorkError::UndeclaredIndex { collection, field },
            PlanError::BadValue { field, reason } => {
                UnitOfWorkError::InvalidValue { collection: collection.to_owned(), field, reason }
            }
            PlanError::Invalid(reason) => UnitOfWorkError::InvalidQuery(reason),
        })?;
        let fingerprint = search::fingerprint(&[
            collection,
            &format!("{terms:?}"),
            &format!("{:?}", fields.0),
            &format!("{residual:?}"),
        ]);
        let offset = match spec.cursor.as_deref() {
            None => 0,
            Some(c) => search::decode_cursor(c, fingerprint).ok_or(UnitOfWorkError::InvalidCursor)?,
        };
        let limit =
            if spec.limit == 0 { self.limits.default_search_page } else { spec.limit.min(self.limits.max_search_page) }
                as usize;
        let own_deadline = std::time::Instant::now() + self.limits.search_timeout;
        let deadline = Some(self.deadline.map_or(own_deadline, |d| d.min(own_deadline)));
        let _lane = self.scan_lane().await?;
        // From here on the call may not write, whatever the search answers.
        self.searched.store(true, std::sync::atomic::Ordering::Relaxed);
        let range = super::SearchRange {
            collection: collection.to_owned(),
            terms,
            fields: fields.clone(),
            residual,
            offset,
            limit: limit as u32 + 1,
            max_bytes: self.limits.max_read_bytes,
            deadline,
        };
        let mut hits = self.guarded(self.store.search(&self.scope, &range)).await?;
        // One match more than the page was asked for says whether another page follows.
        let more = hits.rows.len() > limit || hits.truncated;
        hits.rows.truncate(limit);
        let next_offset = offset + hits.rows.len() as u32;
        let next = (more && next_offset <= search::MAX_OFFSET).then(|| search::encode_cursor(fingerprint, next_offset));
        Ok((hits.rows.into_iter().flatten().collect(), next))
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
        // A job that searched still finishes (or moves its task on); it may not start work.
        let starts_work = !background.events.is_empty() || !background.jobs.is_empty() || !background.tasks.is_empty();
        if self.has_searched() && (!self.pending.is_empty() || starts_work) {
            return Err(UnitOfWorkError::SearchAndWrite);
        }
        let reads = self.reads.into_inner().expect("read set lock");
        if reads.overflowed {
            return Err(UnitOfWorkError::ReadSetTooLarge {
                documents: reads.max_documents,
                queries: reads.max_queries,
            });
        }
        let mut reads = reads.into_reads();
        // The index entries of the call's writes follow its version's definitions: an upgrade
        // that changed them since must not be undone by this commit. (A migration's commit
        // moves the tenant and rewrites the entries itself.)
        let written: std::collections::BTreeSet<&str> = self
            .pending
            .iter()
            .filter(|(_, p)| matches!(p.op, WriteOp::Put { .. }))
            .map(|((collection, _), _)| collection.as_str())
            .collect();
        for collection in written.into_iter().filter(|_| background.moves.is_none()) {
            if let Some(indexes) = self.collections.get(collection) {
                reads.push(Read::Indexes { collection: collection.to_owned(), signature: indexes.signature() });
            }
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
        if let Some(reason) = self.unavailable.get() {
            return Err(StoreError::Unavailable(reason.clone()).into());
        }
        self.store.commit_with(&self.scope, &writes, &reads, background, now_ms, audit).await?;
        Ok(writes.len())
    }
}

/// A query as a plugin asks it (see `keel:platform/storage.find`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Find {
    pub collection: String,
    pub conditions: Vec<FieldCondition>,
    pub order_by: Option<String>,
    pub cursor: Option<String>,
    pub limit: u32,
    pub descending: bool,
}

/// A full-text search as a plugin asks it (see `keel:platform/storage.search`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    pub collection: String,
    pub query: String,
    pub conditions: Vec<FieldCondition>,
    pub cursor: Option<String>,
    pub limit: u32,
}

/// A cursor of a scan in key order (the collection drives it, or an equality whose entry is
/// the same for every document): the last key.
const KEY_CURSOR: &str = "k1.";
/// A cursor of a scan in an index's order: the index, the last entry and the last key.
const INDEX_CURSOR: &str = "i1.";

fn encode_cursor(position: &Position, drive: Option<&super::Drive>) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    match drive {
        Some(drive) if drive.equality().is_none() => {
            let parts = serde_json::json!([drive.index, position.entry, position.key]);
            format!("{INDEX_CURSOR}{}", b64(parts.to_string().as_bytes()))
        }
        _ => format!("{KEY_CURSOR}{}", b64(position.key.as_bytes())),
    }
}

/// The position a cursor stands for, if it belongs to a query with this driving range.
fn decode_cursor(cursor: &str, drive: Option<&super::Drive>) -> Result<Position, UnitOfWorkError> {
    let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok();
    if let Some(raw) = cursor.strip_prefix(KEY_CURSOR) {
        let key = b64(raw).and_then(|b| String::from_utf8(b).ok()).ok_or(UnitOfWorkError::InvalidCursor)?;
        return match drive {
            None => Ok(Position { entry: String::new(), key }),
            Some(drive) => match drive.equality() {
                Some(entry) => Ok(Position { entry: entry.to_owned(), key }),
                None => Err(UnitOfWorkError::InvalidCursor),
            },
        };
    }
    let raw = cursor.strip_prefix(INDEX_CURSOR).ok_or(UnitOfWorkError::InvalidCursor)?;
    let parts: (String, String, String) =
        b64(raw).and_then(|b| serde_json::from_slice(&b).ok()).ok_or(UnitOfWorkError::InvalidCursor)?;
    let (index, entry, key) = parts;
    match drive {
        Some(drive) if drive.index == index && drive.equality().is_none() => Ok(Position { entry, key }),
        _ => Err(UnitOfWorkError::InvalidCursor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sqlite::SqliteDocumentStore;

    fn test_audit() -> crate::storage::WriteAudit {
        crate::storage::WriteAudit {
            actor: "tok_test".into(),
            actor_name: "test".into(),
            request_id: "req_test".into(),
        }
    }

    async fn setup() -> (Arc<dyn DocumentStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::backend::sqlite::open_pool(&dir.path().join("uow.db")).await.unwrap();
        (Arc::new(SqliteDocumentStore::new(pool)), dir)
    }

    fn uow(store: &Arc<dyn DocumentStore>) -> UnitOfWork {
        let indexes = CollectionIndexes {
            fields: BTreeMap::from([("tag".to_string(), super::super::index::IndexType::Text)]),
            compound: vec![],
            search: None,
        };
        let collections = BTreeMap::from([("notes".to_string(), indexes)]);
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

    #[test]
    fn read_ahead_knows_the_keys_of_its_spans_and_nothing_past_them() {
        let mut known = ReadAhead::default();
        assert_eq!(known.lookup("a"), None);
        // A short page: everything from "b" on is known; "b" and "c" are absent.
        known.learn("b", vec![("bb".into(), 3), ("d".into(), 1)]);
        assert_eq!(known.lookup("a"), None, "before the span");
        assert_eq!(known.lookup("b"), Some(None));
        assert_eq!(known.lookup("bb"), Some(Some(3)));
        assert_eq!(known.lookup("zzz"), Some(None), "a short page reaches the end");
        // A full page covers up to its last key only.
        let mut known = ReadAhead::default();
        let page: Vec<(String, u64)> = (0..ReadAhead::PAGE).map(|i| (format!("k{i:03}"), 1)).collect();
        let last = page.last().unwrap().0.clone();
        known.learn("k", page);
        assert_eq!(known.lookup("k000"), Some(Some(1)));
        assert_eq!(known.lookup("k0005"), Some(None), "between two keys of the page");
        assert_eq!(known.lookup(&last), Some(Some(1)));
        assert_eq!(known.lookup(&format!("{last}0")), None, "past the page's last key");
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

    fn is_read_conflict(result: &Result<usize, UnitOfWorkError>) -> bool {
        matches!(result, Err(UnitOfWorkError::Store(StoreError::ReadConflict { .. })))
    }

    /// Two leave requests that each fit the balance alone: each call counts the existing
    /// requests with a query, then adds its own under a new key. Without the query in the
    /// commit check both would land (write skew); with it the second is a conflict.
    #[tokio::test]
    async fn a_query_whose_results_changed_before_commit_is_a_conflict() {
        let (store, _dir) = setup().await;
        let mut seed = uow(&store);
        seed.put("notes", "req-1", r#"{"tag":"ana"}"#, Condition::Absent).await.unwrap();
        seed.put("notes", "other", r#"{"tag":"ben"}"#, Condition::Absent).await.unwrap();
        seed.commit(1, &test_audit()).await.unwrap();

        let request = |key: &'static str| {
            let store = store.clone();
            async move {
                let mut call = uow(&store);
                let (taken, _) = call
                    .query("notes", vec![Filter { field: "tag".into(), value: "ana".into() }], None, 100, false)
                    .await
                    .unwrap();
                assert_eq!(taken.len(), 1, "each call sees one request taken, so one more fits");
                call.put("notes", key, r#"{"tag":"ana"}"#, Condition::Absent).await.unwrap();
                call
            }
        };
        let (first, second) = (request("req-2").await, request("req-3").await);
        first.commit(2, &test_audit()).await.unwrap();
        assert!(is_read_conflict(&second.commit(3, &test_audit()).await), "the phantom must be seen");
        assert!(uow(&store).get("notes", "req-3").await.unwrap().is_none(), "the loser wrote nothing");

        // A change outside what the query covered is no conflict.
        let mut call = uow(&store);
        call.query("notes", vec![Filter { field: "tag".into(), value: "ana".into() }], None, 100, false).await.unwrap();
        call.put("notes", "req-4", r#"{"tag":"ana"}"#, Condition::Absent).await.unwrap();
        let mut elsewhere = uow(&store);
        elsewhere.put("notes", "other", r#"{"tag":"ben","note":"edited"}"#, Condition::Any).await.unwrap();
        elsewhere.commit(4, &test_audit()).await.unwrap();
        call.commit(5, &test_audit()).await.unwrap();
    }

    /// The classic write skew on documents: both doctors are on call, each may leave only if
    /// the other stays; each reads both and changes its own.
    #[tokio::test]
    async fn a_document_read_that_changed_before_commit_is_a_conflict() {
        let (store, _dir) = setup().await;
        let mut seed = uow(&store);
        seed.put("notes", "alice", r#"{"on_call":true}"#, Condition::Absent).await.unwrap();
        seed.put("notes", "bob", r#"{"on_call":true}"#, Condition::Absent).await.unwrap();
        seed.commit(1, &test_audit()).await.unwrap();
        let leave = |me: &'static str, other: &'static str| {
            let store = store.clone();
            async move {
                let mut call = uow(&store);
                assert!(call.get("notes", other).await.unwrap().unwrap().body.contains("true"));
                let mine = call.get("notes", me).await.unwrap().unwrap();
                call.put("notes", me, r#"{"on_call":false}"#, Condition::Version(mine.version)).await.unwrap();
                call
            }
        };
        let (alice, bob) = (leave("alice", "bob").await, leave("bob", "alice").await);
        alice.commit(2, &test_audit()).await.unwrap();
        assert!(is_read_conflict(&bob.commit(3, &test_audit()).await), "bob read alice as on call");
        assert!(uow(&store).get("notes", "bob").await.unwrap().unwrap().body.contains("true"));

        // Reading a key as absent is a read too: it must still be absent at commit.
        let mut call = uow(&store);
        assert!(call.get("notes", "carol").await.unwrap().is_none());
        call.put("notes", "roster", r#"{"carol":"absent"}"#, Condition::Any).await.unwrap();
        let mut carol = uow(&store);
        carol.put("notes", "carol", "{}", Condition::Absent).await.unwrap();
        carol.commit(4, &test_audit()).await.unwrap();
        assert!(is_read_conflict(&call.commit(5, &test_audit()).await));

        // A call that writes nothing is never checked: reading is always allowed.
        let reader = uow(&store);
        reader.get("notes", "alice").await.unwrap();
        let mut writer = uow(&store);
        writer.put("notes", "alice", "{}", Condition::Any).await.unwrap();
        writer.commit(6, &test_audit()).await.unwrap();
        assert_eq!(reader.commit(7, &test_audit()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn get_many_answers_in_the_order_asked_with_the_calls_own_writes_and_records_each_read() {
        let (store, _dir) = setup().await;
        let mut seed = uow(&store);
        for key in ["a", "b", "c"] {
            seed.put("notes", key, &format!(r#"{{"n":"{key}"}}"#), Condition::Absent).await.unwrap();
        }
        seed.commit(1, &test_audit()).await.unwrap();

        let mut call = uow(&store);
        call.put("notes", "b", r#"{"n":"mine"}"#, Condition::Any).await.unwrap();
        call.delete("notes", "c", Condition::Any).await.unwrap();
        let asked: Vec<String> = ["c", "x", "b", "a", "a"].iter().map(|k| k.to_string()).collect();
        let got = call.get_many("notes", &asked).await.unwrap();
        let bodies: Vec<Option<&str>> = got.iter().map(|d| d.as_ref().map(|d| d.body.as_str())).collect();
        assert_eq!(bodies, [None, None, Some(r#"{"n":"mine"}"#), Some(r#"{"n":"a"}"#), Some(r#"{"n":"a"}"#)]);
        assert_eq!(got[3].as_ref().unwrap().version, 1);

        // Each committed document read (present or absent) is checked at commit.
        let mut other = uow(&store);
        other.put("notes", "x", "{}", Condition::Absent).await.unwrap();
        other.commit(2, &test_audit()).await.unwrap();
        assert!(is_read_conflict(&call.commit(3, &test_audit()).await), "`x` was read as absent");

        // Bounded: keys per read, valid keys, declared collections, one read's bytes.
        let call = uow(&store);
        let many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
        assert!(matches!(call.get_many("notes", &many).await, Err(UnitOfWorkError::InvalidQuery(_))));
        assert!(matches!(call.get_many("notes", &[String::new()]).await, Err(UnitOfWorkError::InvalidKey(_))));
        assert!(matches!(
            call.get_many("secrets", &["a".to_string()]).await,
            Err(UnitOfWorkError::UndeclaredCollection(_))
        ));
        let mut big = uow(&store);
        let body = format!(r#"{{"s":"{}"}}"#, "x".repeat(900_000));
        for key in ["b1", "b2", "b3", "b4", "b5"] {
            big.put("notes", key, &body, Condition::Absent).await.unwrap();
            big.commit(4, &test_audit()).await.unwrap();
            big = uow(&store);
        }
        let five: Vec<String> = (1..=5).map(|i| format!("b{i}")).collect();
        let refused = big.get_many("notes", &five).await.unwrap_err();
        assert!(refused.to_string().contains("ask for fewer keys"), "{refused}");
        assert_eq!(big.get_many("notes", &five[..4]).await.unwrap().iter().flatten().count(), 4);
        // What the answer would hold counts: one document asked five times, or the call's own
        // large writes, cannot pass the budget either.
        let again = vec!["b1".to_string(); 5];
        assert!(big.get_many("notes", &again).await.unwrap_err().to_string().contains("ask for fewer keys"));
        let mut own = uow(&store);
        for key in ["o1", "o2", "o3", "o4", "o5"] {
            own.put("notes", key, &body, Condition::Absent).await.unwrap();
        }
        let mine: Vec<String> = (1..=5).map(|i| format!("o{i}")).collect();
        assert!(own.get_many("notes", &mine).await.unwrap_err().to_string().contains("ask for fewer keys"));
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

    fn staff(store: &Arc<dyn DocumentStore>) -> UnitOfWork {
        use super::super::index::IndexType;
        let indexes = CollectionIndexes {
            fields: BTreeMap::from([
                ("dept".to_string(), IndexType::String),
                ("hired".to_string(), IndexType::Date),
                ("salary".to_string(), IndexType::Decimal),
            ]),
            compound: vec![vec!["dept".to_string(), "hired".to_string()]],
            search: None,
        };
        UnitOfWork::new(
            store.clone(),
            Scope { tenant: "t".into(), plugin: "p".into() },
            Arc::new(BTreeMap::from([("staff".to_string(), indexes)])),
            StorageLimits::default(),
        )
    }

    fn find(conditions: &[(&str, Comparison, &str)], order_by: Option<&str>, limit: u32, descending: bool) -> Find {
        Find {
            collection: "staff".into(),
            conditions: conditions
                .iter()
                .map(|(f, op, v)| FieldCondition { field: f.to_string(), op: *op, value: v.to_string() })
                .collect(),
            order_by: order_by.map(str::to_owned),
            cursor: None,
            limit,
            descending,
        }
    }

    /// Every page of `spec`, `limit` at a time.
    async fn all_pages(call: &UnitOfWork, mut spec: Find) -> Vec<String> {
        let mut keys = Vec::new();
        loop {
            let (docs, next) = call.find(&spec).await.unwrap();
            keys.extend(docs.into_iter().map(|d| d.key));
            match next {
                Some(next) => spec.cursor = Some(next),
                None => return keys,
            }
        }
    }

    #[tokio::test]
    async fn a_call_that_deleted_many_rows_still_pages_through_the_rest_exactly() {
        // More of the call's own deletes than a query over-fetches for: pages may come back
        // short, but every remaining document is on exactly one page.
        let (store, _dir) = setup().await;
        let mut seed = staff(&store);
        for i in 0..60 {
            let body = serde_json::json!({"dept": "ops", "hired": format!("2025-01-{:02}", i % 28 + 1), "salary": "1"});
            seed.put("staff", &format!("p{i:02}"), &body.to_string(), Condition::Absent).await.unwrap();
        }
        seed.commit(1, &test_audit()).await.unwrap();
        let mut call = staff(&store);
        for i in 0..45 {
            call.delete("staff", &format!("p{i:02}"), Condition::Any).await.unwrap();
        }
        call.put("staff", "zed", r#"{"dept":"ops","hired":"2025-01-01","salary":"1"}"#, Condition::Absent)
            .await
            .unwrap();
        let mut expected: Vec<String> = (45..60).map(|i| format!("p{i:02}")).collect();
        expected.push("zed".into());
        assert_eq!(all_pages(&call, find(&[], None, 2, false)).await, expected);
        let by_hire = all_pages(&call, find(&[("dept", Comparison::Eq, "ops")], Some("hired"), 3, false)).await;
        let mut sorted = by_hire.clone();
        sorted.sort();
        assert_eq!(sorted, expected, "each remaining document once, in hiring order: {by_hire:?}");
    }

    #[tokio::test]
    async fn ranges_and_orders_see_the_calls_own_writes_and_page_exactly() {
        let (store, _dir) = setup().await;
        let mut seed = staff(&store);
        for (key, dept, hired, salary) in [
            ("ana", "ops", "2025-03-01", "4200.00"),
            ("ben", "ops", "2026-06-30", "3900.50"),
            ("cy", "ops", "2026-07-01", "5100"),
            ("dee", "sales", "2024-01-15", "3900.5"),
            ("eve", "ops", "2024-11-30", "61e2"),
            ("fay", "ops", "2025-03-01", "4000"),
        ] {
            let body = serde_json::json!({"dept": dept, "hired": hired, "salary": salary}).to_string();
            seed.put("staff", key, &body, Condition::Absent).await.unwrap();
        }
        seed.commit(1, &test_audit()).await.unwrap();

        let mut call = staff(&store);
        // Uncommitted: a new hire in range, one moved out of ops, one deleted.
        call.put("staff", "gus", r#"{"dept":"ops","hired":"2025-01-02","salary":"3000"}"#, Condition::Absent)
            .await
            .unwrap();
        call.put("staff", "fay", r#"{"dept":"sales","hired":"2025-03-01","salary":"4000"}"#, Condition::Any)
            .await
            .unwrap();
        call.delete("staff", "ana", Condition::Any).await.unwrap();

        // "Hired before 2026-07-01 in ops, in hiring order": one query, on the compound index.
        let hired_before =
            find(&[("dept", Comparison::Eq, "ops"), ("hired", Comparison::Lt, "2026-07-01")], Some("hired"), 10, false);
        let (docs, next) = call.find(&hired_before).await.unwrap();
        assert_eq!(docs.iter().map(|d| d.key.as_str()).collect::<Vec<_>>(), ["eve", "gus", "ben"]);
        assert!(next.is_none());
        // The same query a page of one at a time, and newest first.
        assert_eq!(all_pages(&call, Find { limit: 1, ..hired_before.clone() }).await, ["eve", "gus", "ben"]);
        assert_eq!(
            all_pages(&call, Find { limit: 2, descending: true, ..hired_before.clone() }).await,
            ["ben", "gus", "eve"]
        );

        // Decimals order as numbers: 3900.5 and 3900.50 are equal, 61e2 is 6100.
        let by_salary = find(&[("salary", Comparison::Ge, "3900.5")], Some("salary"), 2, false);
        assert_eq!(all_pages(&call, by_salary).await, ["ben", "dee", "fay", "cy", "eve"]);
        let exactly = find(&[("salary", Comparison::Eq, "3900.500")], None, 10, false);
        assert_eq!(all_pages(&call, exactly).await, ["ben", "dee"]);
        // Not equal keeps documents without the field; prefix on strings.
        let not_ops = find(&[("dept", Comparison::Ne, "ops")], None, 10, false);
        assert_eq!(all_pages(&call, not_ops).await, ["dee", "fay"]);
        let s_depts = find(&[("dept", Comparison::Prefix, "sa")], Some("dept"), 10, false);
        assert_eq!(all_pages(&call, s_depts).await, ["dee", "fay"]);

        // A cursor belongs to its query.
        let (_, next) = call.find(&Find { limit: 1, ..hired_before.clone() }).await.unwrap();
        let stray = Find { cursor: next, ..find(&[], Some("salary"), 10, false) };
        assert!(matches!(call.find(&stray).await, Err(UnitOfWorkError::InvalidCursor)));
        let (_, next) = call.find(&find(&[], None, 1, false)).await.unwrap();
        let stray = Find { cursor: next, ..find(&[], Some("hired"), 10, false) };
        assert!(matches!(call.find(&stray).await, Err(UnitOfWorkError::InvalidCursor)));
    }

    #[tokio::test]
    async fn values_of_the_wrong_type_are_refused_naming_the_field() {
        let (store, _dir) = setup().await;
        let mut call = staff(&store);
        let refused = call.put("staff", "x", r#"{"dept":"ops","hired":"last monday"}"#, Condition::Any).await;
        assert!(
            matches!(&refused, Err(UnitOfWorkError::InvalidValue { field, .. }) if field == "hired"),
            "{refused:?}"
        );
        assert_eq!(call.pending_writes(), 0, "a refused write is not buffered");
        let refused = call.find(&find(&[("salary", Comparison::Lt, "a lot")], None, 10, false)).await;
        assert!(
            matches!(&refused, Err(UnitOfWorkError::InvalidValue { field, .. }) if field == "salary"),
            "{refused:?}"
        );
        let refused = call.find(&find(&[], Some("name"), 10, false)).await;
        assert!(
            matches!(&refused, Err(UnitOfWorkError::UndeclaredIndex { field, .. }) if field == "name"),
            "{refused:?}"
        );
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

    fn cases(store: &Arc<dyn DocumentStore>, limits: StorageLimits) -> UnitOfWork {
        use super::super::search::{SearchField, SearchFields};
        let searchable = CollectionIndexes {
            fields: BTreeMap::from([("open".to_string(), super::super::index::IndexType::Boolean)]),
            compound: vec![],
            search: Some(SearchFields(vec![SearchField { path: "subject".into(), weight: 1 }])),
        };
        let collections =
            BTreeMap::from([("cases".to_string(), searchable), ("plain".to_string(), Default::default())]);
        UnitOfWork::new(store.clone(), Scope { tenant: "t".into(), plugin: "p".into() }, Arc::new(collections), limits)
    }

    fn search(query: &str, conditions: &[(&str, &str)], cursor: Option<String>, limit: u32) -> Search {
        Search {
            collection: "cases".into(),
            query: query.into(),
            conditions: conditions
                .iter()
                .map(|(f, v)| FieldCondition { field: f.to_string(), op: Comparison::Eq, value: v.to_string() })
                .collect(),
            cursor,
            limit,
        }
    }

    #[tokio::test]
    async fn a_search_sees_committed_text_pages_by_cursor_and_keeps_its_call_read_only() {
        let (store, _dir) = setup().await;
        let mut call = cases(&store, StorageLimits::default());
        for i in 0..25 {
            let body = format!(r#"{{"subject":"printer {i}","open":{}}}"#, i % 2 == 0);
            call.put("cases", &format!("c{i:02}"), &body, Condition::Absent).await.unwrap();
        }
        // A call that has written may not search (its own writes are not in the index).
        assert_eq!(call.search(&search("printer", &[], None, 0)).await, Err(UnitOfWorkError::SearchAndWrite));
        call.commit(1, &test_audit()).await.unwrap();

        let call = cases(&store, StorageLimits::default());
        // 0 means the default page of 20; the cursor gives the rest, each document once.
        let (first, next) = call.search(&search("printer", &[], None, 0)).await.unwrap();
        assert_eq!(first.len(), 20);
        let (rest, last) = call.search(&search("printer", &[], next.clone(), 0)).await.unwrap();
        assert_eq!(rest.len(), 5);
        assert_eq!(last, None);
        let mut keys: Vec<String> = first.iter().chain(&rest).map(|d| d.key.clone()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 25);
        // A cursor belongs to its search: another query or other conditions refuse it.
        assert_eq!(
            call.search(&search("printers", &[], next.clone(), 0)).await.unwrap_err(),
            UnitOfWorkError::InvalidCursor
        );
        assert_eq!(
            call.search(&search("printer", &[("open", "true")], next, 0)).await.unwrap_err(),
            UnitOfWorkError::InvalidCursor
        );
        let (open, _) = call.search(&search("printer", &[("open", "true")], None, 100)).await.unwrap();
        assert_eq!(open.len(), 13);
        // Past the page cap the host gives 100 at most.
        let (capped, _) = call.search(&search("printer", &[], None, 5_000)).await.unwrap();
        assert_eq!(capped.len(), 25);
    }

    #[tokio::test]
    async fn a_call_that_searched_may_not_write_or_start_work_but_a_job_still_finishes() {
        let (store, _dir) = setup().await;
        let mut call = cases(&store, StorageLimits::default());
        call.search(&search("anything", &[], None, 0)).await.unwrap();
        assert_eq!(call.put("cases", "k", "{}", Condition::Any).await, Err(UnitOfWorkError::SearchAndWrite));
        assert_eq!(call.put("plain", "k", "{}", Condition::Any).await, Err(UnitOfWorkError::SearchAndWrite));
        let event = crate::jobs::NewEvent {
            id: "e1".into(),
            topic: "t.x".into(),
            payload: "{}".into(),
            request_id: "r".into(),
            deliveries: vec![],
        };
        let background = super::super::Background { events: vec![event], ..Default::default() };
        assert_eq!(call.commit_with(&background, 1, &test_audit()).await.unwrap_err(), UnitOfWorkError::SearchAndWrite);
        // Nothing to commit: a read-only search call ends cleanly.
        let call = cases(&store, StorageLimits::default());
        call.search(&search("anything", &[], None, 0)).await.unwrap();
        assert_eq!(call.commit(1, &test_audit()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn searches_are_refused_where_undeclared_or_malformed() {
        let (store, _dir) = setup().await;
        let call = cases(&store, StorageLimits::default());
        let on = |collection: &str| Search { collection: collection.into(), ..search("x y z", &[], None, 0) };
        assert_eq!(call.search(&on("plain")).await, Err(UnitOfWorkError::UndeclaredSearch("plain".into())));
        assert_eq!(call.search(&on("nope")).await, Err(UnitOfWorkError::UndeclaredCollection("nope".into())));
        assert!(matches!(call.search(&search("\"*()", &[], None, 0)).await, Err(UnitOfWorkError::InvalidQuery(_))));
        assert!(matches!(call.search(&search("ab*", &[], None, 0)).await, Err(UnitOfWorkError::InvalidQuery(_))));
        assert!(matches!(
            call.search(&search("x", &[("subject", "y")], None, 0)).await,
            Err(UnitOfWorkError::UndeclaredIndex { .. })
        ));
        assert!(matches!(
            call.search(&search("x", &[("open", "maybe")], None, 0)).await,
            Err(UnitOfWorkError::InvalidValue { .. })
        ));
        assert_eq!(call.search(&search("x", &[], Some("k1.abc".into()), 0)).await, Err(UnitOfWorkError::InvalidCursor));
    }
}

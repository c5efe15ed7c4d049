//! The document store: JSON documents by key in collections, scoped by (tenant, plugin).
//!
//! [`DocumentStore`] is the backend seam: SQLite ([`crate::backend::sqlite::SqliteDocumentStore`]) is the
//! embedded default and a PostgreSQL backend is a second implementation that must pass the
//! same [`conformance`] suite. Plugins never talk to a store directly: every plugin call
//! gets a [`UnitOfWork`] that buffers its writes, shows them to the call's own reads, and
//! commits them in one transaction when the call succeeds.
//!
//! Architecture invariant: every read and write names a [`Scope`] built by the host from the
//! authenticated caller and the routed plugin; nothing a plugin sends can widen it.

pub mod conformance;
pub mod index;
pub mod search;
mod unit_of_work;

pub use unit_of_work::{Find, Search, StorageLimits, UnitOfWork, UnitOfWorkError};

pub use crate::audit::WriteAudit;
pub use crate::jobs::Background;
use async_trait::async_trait;

/// Whose data a call touches: always one tenant and one plugin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub tenant: String,
    pub plugin: String,
}

/// A stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    pub key: String,
    pub version: u64,
    /// JSON text.
    pub body: String,
}

/// Precondition of a write against the committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Any,
    Absent,
    Version(u64),
}

/// Equality on an indexed field, with the value in its text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub field: String,
    pub value: String,
}

/// How a condition compares an index entry with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    /// Not equal; a document without the field matches.
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// The entry begins with the value (text and string fields).
    Prefix,
}

/// A condition on one index's entry of a document, with the value already in index text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predicate {
    pub index: String,
    pub op: Comparison,
    pub value: String,
}

impl Predicate {
    /// Whether a document whose entry in this index is `entry` (`None`: it has none) matches.
    pub fn holds(&self, entry: Option<&str>) -> bool {
        let Some(entry) = entry else { return self.op == Comparison::Ne };
        let value = self.value.as_str();
        match self.op {
            Comparison::Eq => entry == value,
            Comparison::Ne => entry != value,
            Comparison::Lt => entry < value,
            Comparison::Le => entry <= value,
            Comparison::Gt => entry > value,
            Comparison::Ge => entry >= value,
            Comparison::Prefix => entry.starts_with(value),
        }
    }
}

/// The range of one index that drives a scan: its entries from `lower` to `upper` (each
/// with whether it is included), in entry order, then key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    pub index: String,
    pub lower: Option<(String, bool)>,
    pub upper: Option<(String, bool)>,
}

impl Drive {
    /// Every entry of `index`.
    pub fn whole(index: String) -> Self {
        Drive { index, lower: None, upper: None }
    }

    /// Narrowed to entries beginning with `prefix`.
    pub fn within_prefix(self, prefix: &str) -> Self {
        let upper = index::prefix_end(prefix);
        let narrowed = self.narrowed_lower(prefix.to_owned(), true);
        match upper {
            Some(end) => narrowed.narrowed_upper(end, false),
            None => narrowed,
        }
    }

    /// Narrowed by one more condition on the same index (`Ne` cannot narrow a range).
    pub fn narrowed(self, op: Comparison, value: &str) -> Self {
        let v = value.to_owned();
        match op {
            Comparison::Eq => self.narrowed_lower(v.clone(), true).narrowed_upper(v, true),
            Comparison::Lt => self.narrowed_upper(v, false),
            Comparison::Le => self.narrowed_upper(v, true),
            Comparison::Gt => self.narrowed_lower(v, false),
            Comparison::Ge => self.narrowed_lower(v, true),
            Comparison::Prefix => self.within_prefix(value),
            Comparison::Ne => self,
        }
    }

    fn narrowed_lower(mut self, value: String, inclusive: bool) -> Self {
        let tighter = match &self.lower {
            None => true,
            Some((current, current_inclusive)) => {
                value > *current || (value == *current && *current_inclusive && !inclusive)
            }
        };
        if tighter {
            self.lower = Some((value, inclusive));
        }
        self
    }

    fn narrowed_upper(mut self, value: String, inclusive: bool) -> Self {
        let tighter = match &self.upper {
            None => true,
            Some((current, current_inclusive)) => {
                value < *current || (value == *current && *current_inclusive && !inclusive)
            }
        };
        if tighter {
            self.upper = Some((value, inclusive));
        }
        self
    }

    /// The one entry this range holds, when it is an equality.
    pub fn equality(&self) -> Option<&str> {
        match (&self.lower, &self.upper) {
            (Some((lo, true)), Some((hi, true))) if lo == hi => Some(lo),
            _ => None,
        }
    }

    /// Whether `entry` lies in the range.
    pub fn contains(&self, entry: &str) -> bool {
        let above = match &self.lower {
            None => true,
            Some((lo, inclusive)) => entry > lo.as_str() || (*inclusive && entry == lo),
        };
        let below = match &self.upper {
            None => true,
            Some((hi, inclusive)) => entry < hi.as_str() || (*inclusive && entry == hi),
        };
        above && below
    }
}

/// See [`DocumentStore::scope_contents`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeContents {
    pub collections: Vec<String>,
    /// (name, the last value handed out).
    pub sequences: Vec<(String, u64)>,
}

/// Whether `name` may name a sequence: 1-64 characters of a-z, 0-9, '-', '_' and '.'.
pub fn valid_sequence_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

/// Where a scan stands: the driving index's entry (empty when the collection drives) and key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub entry: String,
    pub key: String,
}

/// A page request against committed data: the documents `drive` reaches (all of the
/// collection's, in key order, when `None`) that pass every `residual` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub collection: String,
    pub drive: Option<Drive>,
    pub residual: Vec<Predicate>,
    /// Only documents strictly after this position (in the direction of travel).
    pub after: Option<Position>,
    pub limit: u32,
    pub descending: bool,
    /// Stop after the documents that reach this many bytes (keys and bodies); at least one
    /// document is returned when any matches.
    pub max_bytes: usize,
    /// The calling plugin's deadline: a scan still running then is interrupted.
    pub deadline: Option<std::time::Instant>,
}

/// A full-text search against committed data: the documents of `collection` matching every
/// term, best first, that pass every `residual` condition.
#[derive(Debug, Clone)]
pub struct SearchRange {
    pub collection: String,
    pub terms: Vec<search::Term>,
    /// The collection's searchable fields (their weights rank the matches).
    pub fields: search::SearchFields,
    pub residual: Vec<Predicate>,
    /// Matches to skip (those of earlier pages).
    pub offset: u32,
    pub limit: u32,
    /// As for [`KeyRange::max_bytes`].
    pub max_bytes: usize,
    pub deadline: Option<std::time::Instant>,
}

/// A page of ranked matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchHits {
    /// One per match taken, best first; `None` for an index row whose document is not the
    /// scope's (it must never happen; it is skipped and logged, but still takes its rank).
    pub rows: Vec<Option<StoredDocument>>,
    /// The page stopped early at the byte budget: more matches may follow.
    pub truncated: bool,
}

/// What a committed write does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Store `body`; `index` holds the (field, value) pairs of its declared indexed fields.
    Put {
        body: String,
        index: Vec<(String, String)>,
        /// The text of its full-text index (`None`: the collection has none).
        search: Option<search::SearchText>,
    },
    Delete,
}

/// One write of a batch. `version` is the version the call told the plugin it wrote; a
/// conditional write stores exactly that, an unconditional one never moves a version back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub collection: String,
    pub key: String,
    pub condition: Condition,
    pub version: u64,
    pub op: WriteOp,
}

/// Something a call read, checked again when it commits: the call's writes land only if
/// everything it read is still as it saw it, so concurrent calls behave as if run one at a
/// time (no write skew, no phantoms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// One document, at `version` (`None`: absent).
    Document { collection: String, key: String, version: Option<u64> },
    /// A scan, and the (key, version) of each committed document it returned: the same scan
    /// at commit must return exactly these (a document added to its range is a phantom).
    Scan { range: KeyRange, seen: Vec<(String, u64)> },
    /// The index definitions a collection's entries were computed from (see
    /// `index::CollectionIndexes::signature`): they must still be the active version's.
    Indexes { collection: String, signature: String },
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("`{collection}/{key}` changed underneath this call (expected {expected}, found {found})")]
    Conflict { collection: String, key: String, expected: String, found: String },
    #[error("what this call read of `{collection}` changed before it committed ({what})")]
    ReadConflict { collection: String, what: String },
    #[error("job `{0}` is no longer leased to this worker; its run was discarded")]
    LeaseLost(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    QuotaExceeded(#[from] QuotaExceeded),
    #[error("plugin `{plugin}` already has {limit} jobs queued in this tenant; no more are taken until some run")]
    TooManyJobs { plugin: String, limit: u32 },
    #[error("the storage request ran past the call's deadline and was stopped")]
    Interrupted,
    #[error("this tenant's calls already hold {limit} database connections, its share; try again shortly")]
    Busy { limit: u32 },
    #[error("every database connection this host gives tenants was in use for {waited_ms} ms; try again shortly")]
    Saturated { waited_ms: u64 },
    /// The connection broke while the database was confirming a commit: it may have been
    /// applied or not.
    #[error("the database went away while confirming the commit ({0}); its writes may have been saved")]
    OutcomeUnknown(String),
    #[error("this plugin already has {limit} sequences in this tenant; no new one is started")]
    TooManySequences { limit: u32 },
    #[error("sequence `{name}` cannot go past {max}")]
    SequenceExhausted { name: String, max: u64 },
    /// A migration's move: a document does not fit the new version's indexes (named).
    #[error("{0}")]
    IndexDataMismatch(String),
    /// A migration's move: the tenant was moved meanwhile.
    #[error("the tenant was moved to {} meanwhile", found.as_deref().unwrap_or("no version"))]
    MoveSuperseded { found: Option<String> },
    #[error("storage failure: {0}")]
    Internal(String),
}

/// Whose storage quota a write would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaScope {
    /// Everything the tenant stores.
    Tenant,
    /// What one plugin stores in the tenant.
    Plugin,
}

/// Which stored quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaResource {
    Documents,
    Bytes,
}

/// A commit refused because it would pass a storage quota; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {} quota of {limit} {} would be exceeded ({would_be} after this write)",
    match scope { QuotaScope::Tenant => "the tenant's", QuotaScope::Plugin => "the plugin's" },
    match resource { QuotaResource::Documents => "document", QuotaResource::Bytes => "storage" },
    match resource { QuotaResource::Documents => "documents", QuotaResource::Bytes => "bytes" })]
pub struct QuotaExceeded {
    pub scope: QuotaScope,
    pub resource: QuotaResource,
    pub limit: u64,
    pub would_be: u64,
}

/// Storage limits of one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Documents the tenant may store over all its plugins.
    #[schema(minimum = 1, maximum = 9223372036854775807_u64)]
    pub tenant_documents: u64,
    /// Bytes (keys and bodies) the tenant may store over all its plugins.
    #[schema(minimum = 1, maximum = 9223372036854775807_u64)]
    pub tenant_bytes: u64,
    /// Documents one plugin may store in the tenant.
    #[schema(minimum = 1, maximum = 9223372036854775807_u64)]
    pub plugin_documents: u64,
    /// Bytes one plugin may store in the tenant.
    #[schema(minimum = 1, maximum = 9223372036854775807_u64)]
    pub plugin_bytes: u64,
}

/// What a tenant or one of its plugins stores now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub documents: u64,
    pub bytes: u64,
}

/// What the store enforces at commit.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Quotas of tenants without their own.
    pub default_quotas: Quotas,
    /// Jobs one plugin may have queued in one tenant.
    pub max_queued_per_plugin: u32,
}

impl Default for StoreSettings {
    fn default() -> Self {
        let q = crate::config::QuotasConfig::default();
        StoreSettings {
            default_quotas: Quotas {
                tenant_documents: q.tenant_documents,
                tenant_bytes: q.tenant_mb << 20,
                plugin_documents: q.plugin_documents,
                plugin_bytes: q.plugin_mb << 20,
            },
            max_queued_per_plugin: crate::config::JobsConfig::default().max_queued_per_plugin,
        }
    }
}

/// Why a plugin's stored documents cannot take its new index definitions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReindexError {
    #[error(
        "document `{collection}/{key}` of tenant `{tenant}`: field `{field}` {reason}; migrate the data before this index can be declared"
    )]
    Mismatch { tenant: String, collection: String, key: String, field: String, reason: String },
    /// The plugin's active version is no longer the one the install was decided against
    /// (another host installed or removed it meanwhile); nothing was recorded.
    #[error("plugin `{plugin}` was changed by another install meanwhile (active now: {}); try again", found.as_deref().unwrap_or("none"))]
    Superseded { plugin: String, found: Option<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A backend for documents. Implementations must pass [`conformance::run_all`].
#[async_trait]
pub trait DocumentStore: Send + Sync + 'static {
    async fn get(&self, scope: &Scope, collection: &str, key: &str) -> Result<Option<StoredDocument>, StoreError>;

    /// The documents of `keys` (distinct) that exist, in any order, read until their keys
    /// and bodies reach `max_bytes`: then it stops after that document, so what a caller
    /// holds is bounded (a caller that gets `max_bytes` or more back must not take the
    /// missing keys for absent). Stopped with [`StoreError::Interrupted`] at `deadline`. A
    /// backend that can read a set of keys at once should; this default asks for each in turn.
    async fn get_many(
        &self,
        scope: &Scope,
        collection: &str,
        keys: &[String],
        max_bytes: usize,
        deadline: Option<std::time::Instant>,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        let mut found = Vec::new();
        let mut bytes = 0usize;
        for key in keys {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Err(StoreError::Interrupted);
            }
            if let Some(d) = self.get(scope, collection, key).await? {
                bytes += d.key.len() + d.body.len();
                found.push(d);
                if bytes >= max_bytes {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// The versions of up to `limit` documents of `collection` whose keys are `from` or after,
    /// in key (byte) order; fewer than `limit` means none follow. `None`: the backend does not
    /// read ahead, because a point read costs it no more than this would (an embedded
    /// database). A backend a round trip away implements it, so that a call writing many keys
    /// it never read (an import, a seeding job) learns their versions a page at a time rather
    /// than one round trip per write.
    async fn versions_from(
        &self,
        _scope: &Scope,
        _collection: &str,
        _from: &str,
        _limit: u32,
    ) -> Result<Option<Vec<(String, u64)>>, StoreError> {
        Ok(None)
    }

    /// Up to `range.limit` documents after `range.after`, in the driving index's order (then
    /// key order), each with its position.
    async fn scan(&self, scope: &Scope, range: &KeyRange) -> Result<Vec<(Position, StoredDocument)>, StoreError>;

    /// Up to `range.limit` matches of `range`'s terms after the first `range.offset`, best
    /// first, ranked on `scope`'s own data only (no other tenant's or plugin's documents may
    /// change the order). Every document returned is of `scope` and `range.collection`,
    /// whatever the index holds.
    async fn search(&self, scope: &Scope, range: &SearchRange) -> Result<SearchHits, StoreError> {
        let _ = (scope, range);
        Err(StoreError::Unavailable("this storage backend has no full-text search".into()))
    }

    /// Applies all writes atomically, checking each condition against committed state;
    /// returns the new version of each write (0 for deletes). Nothing is applied if any
    /// condition fails.
    /// Every applied write is recorded in the audit log, in the same transaction, as done by
    /// `audit`.
    async fn commit(
        &self,
        scope: &Scope,
        writes: &[Write],
        now_ms: i64,
        audit: &WriteAudit,
    ) -> Result<Vec<u64>, StoreError> {
        self.commit_with(scope, writes, &[], &Background::default(), now_ms, audit).await
    }

    /// [`commit`](Self::commit), after checking in the same transaction that every one of
    /// `reads` still holds ([`StoreError::ReadConflict`] if not), plus the call's background
    /// work in the same transaction:
    /// events appended to the log with their deliveries, jobs enqueued (a job whose id exists
    /// already is skipped: that is how idempotency keys deduplicate), and the job the call ran
    /// marked done. If `background.finishes` names a lease the worker no longer holds, nothing
    /// is applied and the error is [`StoreError::LeaseLost`].
    async fn commit_with(
        &self,
        scope: &Scope,
        writes: &[Write],
        reads: &[Read],
        background: &Background,
        now_ms: i64,
        audit: &WriteAudit,
    ) -> Result<Vec<u64>, StoreError>;

    /// Whether every one of `reads` still holds (the check of
    /// [`commit_with`](Self::commit_with), on one consistent view, without writing): a call
    /// that answers an error after reading data that has changed since is run again.
    async fn reads_current(&self, scope: &Scope, reads: &[Read]) -> Result<bool, StoreError>;

    /// Removes every document a plugin stored, in every tenant, and its sequences. Returns
    /// how many documents.
    async fn purge_plugin(&self, plugin: &str) -> Result<u64, StoreError>;

    /// Removes everything one plugin stored in one tenant (documents, their index entries
    /// and full-text rows, sequences, usage), in one transaction taken in turn with the
    /// scope's commits; nothing of another tenant or plugin is touched. Returns how many
    /// documents.
    async fn purge_scope(&self, scope: &Scope) -> Result<u64, StoreError>;

    /// What one plugin stores in one tenant besides its documents' bodies: the collections
    /// that hold documents and the sequences' last values, each in name order.
    async fn scope_contents(&self, scope: &Scope) -> Result<ScopeContents, StoreError>;

    /// The next value of `scope`'s sequence `name` (1 for a new one), moved past `after`
    /// first if given, in a transaction of its own (not the caller's commit): no value is
    /// handed out twice, and concurrent callers wait for each other instead of conflicting.
    async fn next_in_sequence(&self, scope: &Scope, name: &str, after: Option<u64>) -> Result<u64, StoreError>;

    /// What `tenant` stores, per plugin (plugins that store nothing are left out).
    async fn usage(&self, tenant: &str) -> Result<Vec<(String, Usage)>, StoreError>;

    /// The tenant's quotas: its own if a platform admin set them, else the defaults.
    async fn quotas(&self, tenant: &str) -> Result<Quotas, StoreError>;

    /// Sets (`Some`) or clears back to the defaults (`None`) the tenant's own quotas.
    async fn set_quotas(&self, tenant: &str, quotas: Option<Quotas>, now_ms: i64) -> Result<Quotas, StoreError>;

    /// Every tenant's and plugin's usage, for metrics: (tenant, plugin, usage).
    async fn all_usage(&self) -> Result<Vec<(String, String, Usage)>, StoreError>;
}

/// The store of a call that must not touch storage (the upload-time `routes` probe): every
/// operation is refused.
pub struct NoStorage;

#[async_trait]
impl DocumentStore for NoStorage {
    async fn get(&self, _: &Scope, _: &str, _: &str) -> Result<Option<StoredDocument>, StoreError> {
        Err(NoStorage::refused())
    }
    async fn scan(&self, _: &Scope, _: &KeyRange) -> Result<Vec<(Position, StoredDocument)>, StoreError> {
        Err(NoStorage::refused())
    }
    async fn commit_with(
        &self,
        _: &Scope,
        _: &[Write],
        _: &[Read],
        _: &Background,
        _: i64,
        _: &WriteAudit,
    ) -> Result<Vec<u64>, StoreError> {
        Err(NoStorage::refused())
    }
    async fn reads_current(&self, _: &Scope, _: &[Read]) -> Result<bool, StoreError> {
        Err(NoStorage::refused())
    }
    async fn purge_scope(&self, _: &Scope) -> Result<u64, StoreError> {
        Err(NoStorage::refused())
    }
    async fn scope_contents(&self, _: &Scope) -> Result<ScopeContents, StoreError> {
        Err(NoStorage::refused())
    }
    async fn purge_plugin(&self, _: &str) -> Result<u64, StoreError> {
        Err(NoStorage::refused())
    }
    async fn next_in_sequence(&self, _: &Scope, _: &str, _: Option<u64>) -> Result<u64, StoreError> {
        Err(NoStorage::refused())
    }
    async fn usage(&self, _: &str) -> Result<Vec<(String, Usage)>, StoreError> {
        Err(NoStorage::refused())
    }
    async fn quotas(&self, _: &str) -> Result<Quotas, StoreError> {
        Err(NoStorage::refused())
    }
    async fn set_quotas(&self, _: &str, _: Option<Quotas>, _: i64) -> Result<Quotas, StoreError> {
        Err(NoStorage::refused())
    }
    async fn all_usage(&self) -> Result<Vec<(String, String, Usage)>, StoreError> {
        Err(NoStorage::refused())
    }
}

impl NoStorage {
    fn refused() -> StoreError {
        StoreError::Unavailable("storage is not available to this call".into())
    }
}

//! The document store: JSON documents by key in collections, scoped by (tenant, plugin).
//!
//! [`DocumentStore`] is the backend seam: SQLite ([`sqlite::SqliteDocumentStore`]) is the
//! embedded default and a PostgreSQL backend is a second implementation that must pass the
//! same [`conformance`] suite. Plugins never talk to a store directly: every plugin call
//! gets a [`UnitOfWork`] that buffers its writes, shows them to the call's own reads, and
//! commits them in one transaction when the call succeeds.
//!
//! Architecture invariant: every read and write names a [`Scope`] built by the host from the
//! authenticated caller and the routed plugin; nothing a plugin sends can widen it.

pub mod conformance;
pub mod sqlite;
mod unit_of_work;

pub use unit_of_work::{StorageLimits, UnitOfWork, UnitOfWorkError};

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

/// Equality on an indexed field, compared as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub field: String,
    pub value: String,
}

/// A page request against committed data, ordered by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub collection: String,
    pub filters: Vec<Filter>,
    /// Only keys strictly after this one (in the direction of travel).
    pub after: Option<String>,
    pub limit: u32,
    pub descending: bool,
    /// Stop after the documents that reach this many bytes (keys and bodies); at least one
    /// document is returned when any matches.
    pub max_bytes: usize,
    /// The calling plugin's deadline: a scan still running then is interrupted.
    pub deadline: Option<std::time::Instant>,
}

/// What a committed write does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Store `body`; `index` holds the (field, value) pairs of its declared indexed fields.
    Put {
        body: String,
        index: Vec<(String, String)>,
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

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("`{collection}/{key}` changed underneath this call (expected {expected}, found {found})")]
    Conflict { collection: String, key: String, expected: String, found: String },
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
    #[error("this plugin already has {limit} sequences in this tenant; no new one is started")]
    TooManySequences { limit: u32 },
    #[error("sequence `{name}` cannot go past {max}")]
    SequenceExhausted { name: String, max: u64 },
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
    pub tenant_documents: u64,
    /// Bytes (keys and bodies) the tenant may store over all its plugins.
    pub tenant_bytes: u64,
    /// Documents one plugin may store in the tenant.
    pub plugin_documents: u64,
    /// Bytes one plugin may store in the tenant.
    pub plugin_bytes: u64,
}

/// What a tenant or one of its plugins stores now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub documents: u64,
    pub bytes: u64,
}

/// A backend for documents. Implementations must pass [`conformance::run_all`].
#[async_trait]
pub trait DocumentStore: Send + Sync + 'static {
    async fn get(&self, scope: &Scope, collection: &str, key: &str) -> Result<Option<StoredDocument>, StoreError>;

    /// Up to `range.limit` documents after `range.after`, ordered by key.
    async fn scan(&self, scope: &Scope, range: &KeyRange) -> Result<Vec<StoredDocument>, StoreError>;

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
        self.commit_with(scope, writes, &Background::default(), now_ms, audit).await
    }

    /// [`commit`](Self::commit), plus the call's background work in the same transaction:
    /// events appended to the log with their deliveries, jobs enqueued (a job whose id exists
    /// already is skipped: that is how idempotency keys deduplicate), and the job the call ran
    /// marked done. If `background.finishes` names a lease the worker no longer holds, nothing
    /// is applied and the error is [`StoreError::LeaseLost`].
    async fn commit_with(
        &self,
        scope: &Scope,
        writes: &[Write],
        background: &Background,
        now_ms: i64,
        audit: &WriteAudit,
    ) -> Result<Vec<u64>, StoreError>;

    /// Removes every document a plugin stored, in every tenant, and its sequences. Returns
    /// how many documents.
    async fn purge_plugin(&self, plugin: &str) -> Result<u64, StoreError>;

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

/// The text an indexed field is compared as: strings as they are, numbers and booleans in
/// JSON form. Other values (null, arrays, objects) are not indexed.
pub fn index_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

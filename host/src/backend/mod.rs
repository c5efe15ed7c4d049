//! Persistence: one trait per concern, and the backends that implement them.
//!
//! Each concern's module owns its trait and the types at the seam (the domain decides what is
//! stored; the backend decides how):
//!
//! | concern | trait | kept in memory above it |
//! |---|---|---|
//! | documents, with the unit-of-work commit | [`crate::storage::DocumentStore`] | quota cache |
//! | jobs, tasks, schedules, events | [`crate::jobs::store::JobQueue`] | |
//! | installed plugins and their artifacts | [`crate::plugins::PluginCatalog`] | prepared components |
//! | tenants, enablement, role grants | [`crate::tenancy::TenancyRows`] | enablement and grants |
//! | API tokens | [`crate::identity::TokenRows`] | verified tokens (5 s) |
//! | users and sign-in throttling | [`crate::users::UserRows`] | |
//! | the audit log | [`crate::audit::AuditRows`] | |
//! | plugin settings | [`crate::settings::SettingRows`] | effective settings (5 s) |
//!
//! [`Backend`] bundles one implementation of each, opened from a database URL. Nothing
//! outside a backend's folder names its driver's types or parses its error text: a failure
//! reaches the rest of the host as a [`BackendError`], which says whether the database is
//! away (answer 503 and retry) or something else went wrong.

pub mod conformance;
pub mod postgres;
pub mod sqlite;

use crate::audit::AuditRows;
use crate::identity::TokenRows;
use crate::jobs::store::JobStore;
use crate::plugins::PluginCatalog;
use crate::settings::SettingRows;
use crate::storage::{DocumentStore, StoreSettings};
use crate::tenancy::TenancyRows;
use crate::users::UserRows;
use async_trait::async_trait;
use std::sync::Arc;

/// Why a backend operation failed, in terms the host can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The database cannot be reached or is too busy to answer now: the request may be
    /// retried later, and nothing was written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Internal(String),
}

impl From<BackendError> for crate::storage::StoreError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Unavailable(m) => crate::storage::StoreError::Unavailable(m),
            BackendError::Internal(m) => crate::storage::StoreError::Internal(m),
        }
    }
}

/// Both backends speak through sqlx: a failure is `Unavailable` when the database cannot be
/// reached, is shutting down, is too busy, or rolled the transaction back for a retry (SQLite's
/// lock; PostgreSQL's connection classes, timeouts, serialization failures), else `Internal`.
impl From<sqlx::Error> for BackendError {
    fn from(e: sqlx::Error) -> Self {
        let away = match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
            sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(d) if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
                // The database is locked or busy.
                d.message().contains("locked") || d.message().contains("busy")
            }
            // PostgreSQL: connection exceptions; shutdown and "cannot connect now"; too many
            // connections; the statement timeout; a lock not available; a serialization
            // failure or deadlock (the transaction was rolled back: sending it again works).
            sqlx::Error::Database(d) => d.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("57P")
                    || ["53300", "57014", "55P03", "40001", "40P01"].contains(&code.as_ref())
            }),
            _ => false,
        };
        if away { BackendError::Unavailable(e.to_string()) } else { BackendError::Internal(e.to_string()) }
    }
}

impl From<sqlx::Error> for crate::jobs::store::JobStoreError {
    fn from(e: sqlx::Error) -> Self {
        crate::jobs::store::JobStoreError::Database(e.into())
    }
}

/// The database as a whole.
#[async_trait]
pub trait Database: Send + Sync + 'static {
    /// Which backend (`sqlite`, `postgres`), for logs.
    fn kind(&self) -> &'static str;
    /// Whether the database answers now (readiness).
    async fn ping(&self) -> Result<(), BackendError>;
    /// Closes its connections (at shutdown); later operations fail.
    async fn close(&self);
}

/// One implementation of every persistence concern, sharing one database.
#[derive(Clone)]
pub struct Backend {
    pub database: Arc<dyn Database>,
    pub documents: Arc<dyn DocumentStore>,
    pub jobs: JobStore,
    pub catalog: Arc<dyn PluginCatalog>,
    pub tenancy: Arc<dyn TenancyRows>,
    pub tokens: Arc<dyn TokenRows>,
    pub users: Arc<dyn UserRows>,
    pub audit: Arc<dyn AuditRows>,
    pub settings: Arc<dyn SettingRows>,
    /// How hosts sharing the database learn of each other's changes; `None` when only one
    /// host can use it.
    pub changes: Option<Arc<dyn crate::cluster::ChangeFeed>>,
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("`{0}` is not a database URL this build supports (use sqlite://<path> or postgres://...)")]
    UnsupportedUrl(String),
    #[error("cannot open database `{url}`: {reason}")]
    Open { url: String, reason: String },
    #[error("migration {version} ({name}) failed: {reason}")]
    Migration { version: i64, name: &'static str, reason: String },
    #[error("the database has migration {0}, newer than this build knows; upgrade keel")]
    TooNew(i64),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl Backend {
    /// Opens (creating and migrating if needed) the database at `url`: `sqlite://<path>`, or
    /// `postgres://` / `postgresql://` (a server; `pool` sizes the connections).
    pub async fn open(url: &str, settings: StoreSettings, pool: &postgres::PoolSettings) -> Result<Backend, OpenError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return postgres::open(url, settings, pool).await;
        }
        match url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            Some(path) if !path.is_empty() => sqlite::open(std::path::Path::new(path), settings).await,
            _ => Err(OpenError::UnsupportedUrl(url.to_owned())),
        }
    }
}

//! The audit log: who did what, when, to which tenant's data. Append-only (the database
//! refuses updates and deletes); there is no API to change it.
//!
//! Plugin storage writes are recorded by the document store in the same transaction as the
//! writes themselves, so there is never a write without its entry. Admin actions are recorded
//! after they succeed.

use crate::backend::BackendError;
use crate::clock::Clock;
use crate::identity::Principal;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// Who made a plugin call's writes, for their audit entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteAudit {
    pub actor: String,
    pub actor_name: String,
    pub request_id: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub tenant: Option<String>,
    pub actor: String,
    pub actor_name: String,
    pub action: String,
    pub plugin: Option<String>,
    pub collection: Option<String>,
    pub key: Option<String>,
    pub request_id: Option<String>,
    #[schema(value_type = Object)]
    pub detail: Option<serde_json::Value>,
}

/// An admin action to record.
#[derive(Debug, Clone)]
pub struct AdminAction<'a> {
    pub tenant: Option<&'a str>,
    pub action: &'a str,
    pub plugin: Option<&'a str>,
    pub detail: serde_json::Value,
}

/// An entry to append.
#[derive(Debug, Clone)]
pub struct NewAuditEntry<'a> {
    pub at: i64,
    pub actor: &'a str,
    pub actor_name: &'a str,
    pub request_id: &'a str,
    pub action: &'a AdminAction<'a>,
}

/// The audit log in the backend. Entries cannot be changed or removed once appended: the
/// backend refuses it, whatever SQL reaches it.
#[async_trait::async_trait]
pub trait AuditRows: Send + Sync + 'static {
    async fn append(&self, entry: &NewAuditEntry<'_>) -> Result<(), BackendError>;
    /// Entries after `after` (an entry id), oldest first; `tenant: None` means every tenant.
    async fn entries(
        &self,
        tenant: Option<&str>,
        action: Option<&str>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, BackendError>;
    /// Entries before `before` (an entry id; none: from the newest), newest first.
    async fn entries_before(
        &self,
        tenant: Option<&str>,
        action: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, BackendError>;
}

#[derive(Clone)]
pub struct AuditLog {
    rows: Arc<dyn AuditRows>,
    clock: Arc<Clock>,
}

impl AuditLog {
    pub fn new(rows: Arc<dyn AuditRows>, clock: Arc<Clock>) -> Self {
        AuditLog { rows, clock }
    }

    /// Records an admin action by `actor`.
    pub async fn admin(&self, actor: &Principal, request_id: &str, action: AdminAction<'_>) {
        self.append(&actor.token_id, &actor.name, request_id, action).await
    }

    /// Records an action whose actor is known only by token id and name (e.g. failures).
    pub async fn append(&self, actor: &str, actor_name: &str, request_id: &str, action: AdminAction<'_>) {
        let entry = NewAuditEntry { at: self.clock.now_ms(), actor, actor_name, request_id, action: &action };
        if let Err(e) = self.rows.append(&entry).await {
            // The action already happened; losing its record is an operational alarm.
            tracing::error!(error = %e, action = action.action, "could not append to the audit log");
        }
    }

    /// Entries after `after` (an entry id), oldest first; `tenant: None` means every tenant.
    pub async fn query(
        &self,
        tenant: Option<&str>,
        action: Option<&str>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, BackendError> {
        self.rows.entries(tenant, action, after, limit).await
    }

    /// Entries before `before` (an entry id; none: from the newest), newest first.
    pub async fn query_newest(
        &self,
        tenant: Option<&str>,
        action: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, BackendError> {
        self.rows.entries_before(tenant, action, before, limit).await
    }
}

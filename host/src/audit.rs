//! The audit log: who did what, when, to which tenant's data. Append-only (the database
//! refuses updates and deletes); there is no API to change it.
//!
//! Plugin storage writes are recorded by the document store in the same transaction as the
//! writes themselves, so there is never a write without its entry. Admin actions are recorded
//! after they succeed.

use crate::clock::Clock;
use crate::identity::Principal;
use serde::Serialize;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
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
pub struct AdminAction<'a> {
    pub tenant: Option<&'a str>,
    pub action: &'a str,
    pub plugin: Option<&'a str>,
    pub detail: serde_json::Value,
}

#[derive(Clone)]
pub struct AuditLog {
    pool: SqlitePool,
    clock: Arc<Clock>,
}

impl AuditLog {
    pub fn new(pool: SqlitePool, clock: Arc<Clock>) -> Self {
        AuditLog { pool, clock }
    }

    /// Records an admin action by `actor`.
    pub async fn admin(&self, actor: &Principal, request_id: &str, action: AdminAction<'_>) {
        self.append(&actor.token_id, &actor.name, request_id, action).await
    }

    /// Records an action whose actor is known only by token id and name (e.g. failures).
    pub async fn append(&self, actor: &str, actor_name: &str, request_id: &str, action: AdminAction<'_>) {
        let result = sqlx::query(
            "INSERT INTO audit_log (at, tenant_id, actor, actor_name, action, plugin_id, request_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(self.clock.now_ms())
        .bind(action.tenant)
        .bind(actor)
        .bind(actor_name)
        .bind(action.action)
        .bind(action.plugin)
        .bind(request_id)
        .bind(action.detail.to_string())
        .execute(&self.pool)
        .await;
        if let Err(e) = result {
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
    ) -> Result<Vec<AuditEntry>, sqlx::Error> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id, at, tenant_id, actor, actor_name, action, plugin_id, collection, key, request_id, detail FROM audit_log WHERE id > ",
        );
        q.push_bind(after);
        if let Some(t) = tenant {
            q.push(" AND tenant_id = ").push_bind(t);
        }
        if let Some(a) = action {
            q.push(" AND action = ").push_bind(a);
        }
        q.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.get(0),
                at: r.get(1),
                tenant: r.get(2),
                actor: r.get(3),
                actor_name: r.get(4),
                action: r.get(5),
                plugin: r.get(6),
                collection: r.get(7),
                key: r.get(8),
                request_id: r.get(9),
                detail: r.get::<Option<String>, _>(10).and_then(|d| serde_json::from_str(&d).ok()),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_database_refuses_to_change_or_remove_entries() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::open_sqlite(&dir.path().join("audit.db")).await.unwrap();
        let log = AuditLog::new(pool.clone(), Arc::default());
        log.append(
            "tok_x",
            "x",
            "req_1",
            AdminAction { tenant: Some("t"), action: "tenant.create", plugin: None, detail: serde_json::json!({}) },
        )
        .await;
        assert_eq!(log.query(Some("t"), None, 0, 10).await.unwrap().len(), 1);
        assert!(sqlx::query("UPDATE audit_log SET actor = 'someone else'").execute(&pool).await.is_err());
        assert!(sqlx::query("DELETE FROM audit_log").execute(&pool).await.is_err());
        let entries = log.query(None, None, 0, 10).await.unwrap();
        assert_eq!((entries.len(), entries[0].actor.as_str()), (1, "tok_x"));
    }
}

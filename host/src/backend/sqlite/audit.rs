//! The audit log on SQLite: append-only, enforced by triggers (migration 0003).

use crate::audit::{AuditEntry, AuditRows, NewAuditEntry};
use crate::backend::BackendError;
use async_trait::async_trait;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

pub(super) struct SqliteAudit(pub(super) SqlitePool);

#[async_trait]
impl AuditRows for SqliteAudit {
    async fn append(&self, entry: &NewAuditEntry<'_>) -> Result<(), BackendError> {
        let action = entry.action;
        sqlx::query(
            "INSERT INTO audit_log (at, tenant_id, actor, actor_name, action, plugin_id, request_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(entry.at)
        .bind(action.tenant)
        .bind(entry.actor)
        .bind(entry.actor_name)
        .bind(action.action)
        .bind(action.plugin)
        .bind(entry.request_id)
        .bind(action.detail.to_string())
        .execute(&self.0)
        .await?;
        Ok(())
    }

    async fn entries(
        &self,
        tenant: Option<&str>,
        action: Option<&str>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, BackendError> {
        self.select(tenant, action, (" > ", Some(after)), "", limit).await
    }

    async fn entries_before(
        &self,
        tenant: Option<&str>,
        action: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, BackendError> {
        self.select(tenant, action, (" < ", before), " DESC", limit).await
    }
}

impl SqliteAudit {
    /// Entries beyond `bound` (comparison, id), filtered, in id order (`direction`).
    async fn select(
        &self,
        tenant: Option<&str>,
        action: Option<&str>,
        bound: (&str, Option<i64>),
        direction: &str,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, BackendError> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id, at, tenant_id, actor, actor_name, action, plugin_id, collection, key, request_id, detail FROM audit_log WHERE 1 = 1",
        );
        if let (comparison, Some(id)) = bound {
            q.push(" AND id").push(comparison).push_bind(id);
        }
        if let Some(t) = tenant {
            q.push(" AND tenant_id = ").push_bind(t);
        }
        if let Some(a) = action {
            q.push(" AND action = ").push_bind(a);
        }
        q.push(" ORDER BY id").push(direction).push(" LIMIT ").push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.0).await?;
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
    use crate::audit::{AdminAction, AuditLog};
    use std::sync::Arc;

    #[tokio::test]
    async fn the_database_refuses_to_change_or_remove_entries() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::backend::sqlite::open_pool(&dir.path().join("audit.db")).await.unwrap();
        let log = AuditLog::new(Arc::new(SqliteAudit(pool.clone())), Arc::default());
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

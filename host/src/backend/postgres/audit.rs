//! The audit log on PostgreSQL: append-only, enforced by triggers (`keel_refuse_change`).

use crate::audit::{AuditEntry, AuditRows, NewAuditEntry};
use crate::backend::BackendError;
use async_trait::async_trait;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, QueryBuilder, Row};

/// The audit log in PostgreSQL.
pub struct PgAudit(pub PgPool);

#[async_trait]
impl AuditRows for PgAudit {
    async fn append(&self, entry: &NewAuditEntry<'_>) -> Result<(), BackendError> {
        let action = entry.action;
        sqlx::query(
            "INSERT INTO audit_log (at, tenant_id, actor, actor_name, action, plugin_id, request_id, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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

impl PgAudit {
    /// Entries beyond `bound` (comparison, id), filtered, in id order (`direction`).
    async fn select(
        &self,
        tenant: Option<&str>,
        action: Option<&str>,
        bound: (&str, Option<i64>),
        direction: &str,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, BackendError> {
        // Only rows below the settled horizon: an entry committing later under a smaller id
        // shows up before any page passes it (see the schema).
        let horizon = super::settled_horizon(&self.0).await?;
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT id, at, tenant_id, actor, actor_name, action, plugin_id, collection, key, request_id, detail \
             FROM audit_log WHERE xid < ",
        );
        q.push_bind(horizon.to_string()).push("::xid8");
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

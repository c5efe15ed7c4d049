//! Tenants, enablement, role grants, API tokens and users on PostgreSQL.

use super::changes::announce;
use crate::backend::BackendError;
use crate::cluster::Topic;
use crate::identity::{NewToken, TokenInfo, TokenRow, TokenRows};
use crate::tenancy::{TenancyRows, Tenant, TenantPluginRow, TenantStatus};
use crate::users::{User, UserRows};
use async_trait::async_trait;
use sqlx::{Row, postgres::PgPool};
use std::collections::BTreeSet;

/// Tenants, enablement, grants, tokens and users in PostgreSQL.
pub struct PgDirectory(pub PgPool);

/// The column's CHECK constraint admits only the two names.
fn tenant_status(text: &str) -> TenantStatus {
    TenantStatus::parse(text).unwrap_or(TenantStatus::Suspended)
}

fn user(r: &sqlx::postgres::PgRow) -> User {
    User {
        id: r.get(0),
        tenant: r.get(1),
        username: r.get(2),
        display_name: r.get(3),
        role: r.get(4),
        created_at: r.get(5),
        disabled_at: r.get(6),
    }
}

/// Revokes every live token a user signed in for (a password reset, or the user disabled).
async fn revoke_sign_ins(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    user_id: &str,
    now: i64,
) -> Result<(), BackendError> {
    sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    announce(&mut **tx, Topic::Tokens).await?;
    Ok(())
}

fn tenant(r: &sqlx::postgres::PgRow) -> Tenant {
    Tenant { id: r.get(0), name: r.get(1), status: tenant_status(r.get(2)), created_at: r.get(3) }
}

#[async_trait]
impl TenancyRows for PgDirectory {
    async fn plugin_rows(&self) -> Result<Vec<TenantPluginRow>, BackendError> {
        let rows =
            sqlx::query("SELECT tenant_id, plugin_id, enabled, version FROM tenant_plugins").fetch_all(&self.0).await?;
        Ok(rows
            .into_iter()
            .map(|r| TenantPluginRow { tenant: r.get(0), plugin: r.get(1), enabled: r.get(2), version: r.get(3) })
            .collect())
    }

    async fn grants(&self) -> Result<Vec<(String, String, String)>, BackendError> {
        let rows = sqlx::query("SELECT tenant_id, role, permission FROM role_grants").fetch_all(&self.0).await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    async fn insert_tenant(&self, tenant: &Tenant) -> Result<bool, BackendError> {
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, name, status, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(tenant.status.as_str())
        .bind(tenant.created_at)
        .execute(&self.0)
        .await?
        .rows_affected();
        Ok(inserted > 0)
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, BackendError> {
        let rows =
            sqlx::query("SELECT id, name, status, created_at FROM tenants ORDER BY id").fetch_all(&self.0).await?;
        Ok(rows.iter().map(tenant).collect())
    }

    async fn tenant(&self, id: &str) -> Result<Option<Tenant>, BackendError> {
        let row = sqlx::query("SELECT id, name, status, created_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.0)
            .await?;
        Ok(row.as_ref().map(tenant))
    }

    async fn set_status(&self, id: &str, status: TenantStatus) -> Result<bool, BackendError> {
        let mut tx = self.0.begin().await?;
        let done = sqlx::query("UPDATE tenants SET status = $1 WHERE id = $2")
            .bind(status.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // A suspended tenant's tokens stop working on every host.
        announce(&mut tx, Topic::Tokens).await?;
        tx.commit().await?;
        Ok(done > 0)
    }

    async fn set_enabled(&self, tenant: &str, plugin: &str, enabled: bool, now: i64) -> Result<(), BackendError> {
        let mut tx = self.0.begin().await?;
        sqlx::query(
            "INSERT INTO tenant_plugins (tenant_id, plugin_id, enabled, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, plugin_id) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(plugin)
        .bind(enabled)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        announce(&mut tx, Topic::Tenancy).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn forget_plugin(&self, plugin: &str) -> Result<(), BackendError> {
        let mut tx = self.0.begin().await?;
        sqlx::query("DELETE FROM tenant_plugins WHERE plugin_id = $1").bind(plugin).execute(&mut *tx).await?;
        announce(&mut tx, Topic::Tenancy).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn replace_grants(
        &self,
        tenant: &str,
        role: &str,
        permissions: &BTreeSet<String>,
        now: i64,
    ) -> Result<(), BackendError> {
        let mut tx = self.0.begin().await?;
        // Replacements of one role's grants take turns, so two at once leave one set, not
        // their union (each would delete only the rows committed before it began).
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 7))")
            .bind(tenant)
            .bind(role)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM role_grants WHERE tenant_id = $1 AND role = $2")
            .bind(tenant)
            .bind(role)
            .execute(&mut *tx)
            .await?;
        for p in permissions {
            sqlx::query("INSERT INTO role_grants (tenant_id, role, permission, granted_at) VALUES ($1, $2, $3, $4)")
                .bind(tenant)
                .bind(role)
                .bind(p)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        announce(&mut tx, Topic::Tenancy).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl TokenRows for PgDirectory {
    async fn tokens(&self, tenant: &str) -> Result<Vec<TokenInfo>, BackendError> {
        let rows = sqlx::query(
            "SELECT id, prefix, name, role, created_at, expires_at, last_used_at, revoked_at FROM api_tokens \
             WHERE tenant_id = $1 ORDER BY created_at DESC, id",
        )
        .bind(tenant)
        .fetch_all(&self.0)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| TokenInfo {
                id: r.get("id"),
                prefix: r.get("prefix"),
                name: r.get("name"),
                role: r.get("role"),
                created_at: r.get("created_at"),
                expires_at: r.get("expires_at"),
                last_used_at: r.get("last_used_at"),
                revoked_at: r.get("revoked_at"),
            })
            .collect())
    }

    async fn revoke(&self, tenant: &str, token_id: &str, now: i64) -> Result<bool, BackendError> {
        let mut tx = self.0.begin().await?;
        let done =
            sqlx::query("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND tenant_id = $3")
                .bind(now)
                .bind(token_id)
                .bind(tenant)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        announce(&mut tx, Topic::Tokens).await?;
        tx.commit().await?;
        Ok(done > 0)
    }

    async fn insert(&self, t: &NewToken<'_>) -> Result<(), BackendError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, prefix, secret_hash, name, role, tenant_id, created_at, expires_at, user_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(t.id)
        .bind(t.prefix)
        .bind(t.secret_hash)
        .bind(t.name)
        .bind(t.role)
        .bind(t.tenant)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.user_id)
        .execute(&self.0)
        .await?;
        Ok(())
    }

    async fn count(&self) -> Result<u64, BackendError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens").fetch_one(&self.0).await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn by_prefix(&self, prefix: &str) -> Result<Option<TokenRow>, BackendError> {
        let row = sqlx::query(
            "SELECT t.id, t.secret_hash, t.name, t.role, t.tenant_id, t.expires_at, t.revoked_at, t.last_used_at, \
             t.user_id, u.display_name, u.disabled_at AS user_disabled_at, COALESCE(n.status, 'active') AS tenant_status \
             FROM api_tokens t LEFT JOIN tenants n ON n.id = t.tenant_id LEFT JOIN users u ON u.id = t.user_id \
             WHERE t.prefix = $1",
        )
        .bind(prefix)
        .fetch_optional(&self.0)
        .await?;
        Ok(row.map(|r| TokenRow {
            id: r.get("id"),
            secret_hash: r.get("secret_hash"),
            name: r.get("name"),
            role: r.get("role"),
            tenant: r.get("tenant_id"),
            expires_at: r.get("expires_at"),
            revoked_at: r.get("revoked_at"),
            last_used_at: r.get("last_used_at"),
            user_id: r.get("user_id"),
            user_display_name: r.get("display_name"),
            user_disabled: r.get::<Option<i64>, _>("user_disabled_at").is_some(),
            tenant_active: r.get::<&str, _>("tenant_status") == TenantStatus::Active.as_str(),
        }))
    }

    async fn touch(&self, token_id: &str, now: i64) -> Result<(), BackendError> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(token_id)
            .execute(&self.0)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl UserRows for PgDirectory {
    async fn insert(&self, user: &User, password_hash: &str) -> Result<bool, BackendError> {
        let inserted = sqlx::query(
            "INSERT INTO users (id, tenant_id, username, display_name, password_hash, role, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, username) DO NOTHING",
        )
        .bind(&user.id)
        .bind(&user.tenant)
        .bind(&user.username)
        .bind(&user.display_name)
        .bind(password_hash)
        .bind(&user.role)
        .bind(user.created_at)
        .execute(&self.0)
        .await?
        .rows_affected();
        Ok(inserted > 0)
    }

    async fn users(&self, tenant: &str) -> Result<Vec<User>, BackendError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, username, display_name, role, created_at, disabled_at FROM users WHERE tenant_id = $1 ORDER BY username",
        )
        .bind(tenant)
        .fetch_all(&self.0)
        .await?;
        Ok(rows.iter().map(user).collect())
    }

    async fn user(&self, tenant: &str, id: &str) -> Result<Option<User>, BackendError> {
        let row = sqlx::query(
            "SELECT id, tenant_id, username, display_name, role, created_at, disabled_at FROM users WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.0)
        .await?;
        Ok(row.as_ref().map(user))
    }

    async fn set_password(&self, tenant: &str, id: &str, password_hash: &str, now: i64) -> Result<bool, BackendError> {
        let mut tx = self.0.begin().await?;
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(password_hash)
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if done > 0 {
            sqlx::query(
                "DELETE FROM login_attempts WHERE tenant_id = $1 AND username = (SELECT username FROM users WHERE id = $2)",
            )
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            revoke_sign_ins(&mut tx, id, now).await?;
        }
        tx.commit().await?;
        Ok(done > 0)
    }

    async fn set_disabled(
        &self,
        tenant: &str,
        id: &str,
        disabled_at: Option<i64>,
        now: i64,
    ) -> Result<bool, BackendError> {
        let mut tx = self.0.begin().await?;
        let done = sqlx::query(
            "UPDATE users SET disabled_at = CASE WHEN $1::BIGINT IS NULL THEN NULL ELSE COALESCE(disabled_at, $1) END \
             WHERE tenant_id = $2 AND id = $3",
        )
        .bind(disabled_at)
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done > 0 && disabled_at.is_some() {
            revoke_sign_ins(&mut tx, id, now).await?;
        }
        tx.commit().await?;
        Ok(done > 0)
    }

    async fn locked_until(&self, tenant: &str, username: &str) -> Result<Option<i64>, BackendError> {
        let until: Option<Option<i64>> =
            sqlx::query_scalar("SELECT locked_until FROM login_attempts WHERE tenant_id = $1 AND username = $2")
                .bind(tenant)
                .bind(username)
                .fetch_optional(&self.0)
                .await?;
        Ok(until.flatten())
    }

    async fn credentials(&self, tenant: &str, username: &str) -> Result<Option<(User, String)>, BackendError> {
        let row = sqlx::query(
            "SELECT u.id, u.display_name, u.role, u.created_at, u.password_hash FROM users u JOIN tenants t ON t.id = u.tenant_id \
             WHERE u.tenant_id = $1 AND u.username = $2 AND u.disabled_at IS NULL AND t.status = 'active'",
        )
        .bind(tenant)
        .bind(username)
        .fetch_optional(&self.0)
        .await?;
        Ok(row.map(|r| {
            let user = User {
                id: r.get(0),
                tenant: tenant.to_owned(),
                username: username.to_owned(),
                display_name: r.get(1),
                role: r.get(2),
                created_at: r.get(3),
                disabled_at: None,
            };
            (user, r.get(4))
        }))
    }

    async fn clear_failures(&self, tenant: &str, username: &str) -> Result<(), BackendError> {
        sqlx::query("DELETE FROM login_attempts WHERE tenant_id = $1 AND username = $2")
            .bind(tenant)
            .bind(username)
            .execute(&self.0)
            .await?;
        Ok(())
    }

    async fn record_failure(
        &self,
        tenant: &str,
        username: &str,
        now: i64,
        max_failures: i64,
        lockout_ms: i64,
    ) -> Result<(), BackendError> {
        sqlx::query(
            "INSERT INTO login_attempts (tenant_id, username, failures, locked_until) VALUES ($1, $2, 1, NULL) \
             ON CONFLICT (tenant_id, username) DO UPDATE SET \
             failures = CASE WHEN login_attempts.locked_until <= $3 THEN 1 ELSE login_attempts.failures + 1 END, \
             locked_until = CASE WHEN (CASE WHEN login_attempts.locked_until <= $3 THEN 1 ELSE login_attempts.failures + 1 END) >= $4 \
             THEN $5 ELSE NULL END",
        )
        .bind(tenant)
        .bind(username)
        .bind(now)
        .bind(max_failures)
        .bind(now + lockout_ms)
        .execute(&self.0)
        .await?;
        Ok(())
    }
}

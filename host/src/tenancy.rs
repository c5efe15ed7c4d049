//! Tenants, which installed plugins each tenant has switched on, and the plugin permissions a
//! tenant grants to its member role.
//!
//! Architecture invariant: a plugin route is served to a caller only if the plugin is
//! installed, enabled by the platform, and enabled for the caller's tenant; a permission is
//! held only through the caller's role in the caller's own tenant. Both decisions are made
//! here, from memory kept in step with the database on every write, so the request path does
//! not query for them.

use crate::clock::Clock;
use crate::identity::{Principal, Role};
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqlitePool};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::RwLock;
use utoipa::ToSchema;

text_states! {
    /// Whether a tenant's tokens and sessions work: `active`, or `suspended` (every request
    /// refused, nothing deleted).
    pub enum TenantStatus {
        Active = "active",
        Suspended = "suspended",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub status: TenantStatus,
    pub created_at: i64,
}

/// The column's CHECK constraint admits only the two names.
fn tenant_status(text: &str) -> TenantStatus {
    TenantStatus::parse(text).unwrap_or(TenantStatus::Suspended)
}

#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error("tenant ids are 2-32 characters of a-z, 0-9 and '-', starting with a letter")]
    InvalidId,
    #[error("tenant names are 1-100 characters")]
    InvalidName,
    #[error("tenant `{0}` already exists")]
    Exists(String),
    #[error("no tenant `{0}`")]
    NotFound(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub struct TenantStore {
    pool: SqlitePool,
    clock: Arc<Clock>,
    /// (tenant, plugin) pairs switched on.
    enabled: RwLock<HashSet<(String, String)>>,
    /// Bumped on every enablement change, so watchers (the scheduler) notice cheaply.
    generation: std::sync::atomic::AtomicU64,
    /// (tenant, role) → granted plugin permissions.
    grants: RwLock<HashMap<(String, String), BTreeSet<String>>>,
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    (2..=32).contains(&id.len())
        && matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.ends_with('-')
}

impl TenantStore {
    /// Loads enablement and grants into memory.
    pub async fn load(pool: SqlitePool, clock: Arc<Clock>) -> Result<TenantStore, sqlx::Error> {
        let enabled = sqlx::query("SELECT tenant_id, plugin_id FROM tenant_plugins WHERE enabled = 1")
            .fetch_all(&pool)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut grants: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
        for r in sqlx::query("SELECT tenant_id, role, permission FROM role_grants").fetch_all(&pool).await? {
            grants.entry((r.get(0), r.get(1))).or_default().insert(r.get(2));
        }
        Ok(TenantStore {
            pool,
            clock,
            enabled: RwLock::new(enabled),
            generation: std::sync::atomic::AtomicU64::new(0),
            grants: RwLock::new(grants),
        })
    }

    pub async fn create(&self, id: &str, name: &str) -> Result<Tenant, TenancyError> {
        if !valid_id(id) {
            return Err(TenancyError::InvalidId);
        }
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(TenancyError::InvalidName);
        }
        let now = self.clock.now_ms();
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, name, status, created_at) VALUES (?, ?, 'active', ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(TenancyError::Exists(id.to_owned()));
        }
        Ok(Tenant { id: id.to_owned(), name: name.to_owned(), status: TenantStatus::Active, created_at: now })
    }

    pub async fn list(&self) -> Result<Vec<Tenant>, TenancyError> {
        let rows =
            sqlx::query("SELECT id, name, status, created_at FROM tenants ORDER BY id").fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| Tenant { id: r.get(0), name: r.get(1), status: tenant_status(r.get(2)), created_at: r.get(3) })
            .collect())
    }

    pub async fn get(&self, id: &str) -> Result<Tenant, TenancyError> {
        let row = sqlx::query("SELECT id, name, status, created_at FROM tenants WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Tenant { id: r.get(0), name: r.get(1), status: tenant_status(r.get(2)), created_at: r.get(3) })
            .ok_or_else(|| TenancyError::NotFound(id.to_owned()))
    }

    /// Suspends or resumes a tenant. Its data is kept either way.
    pub async fn set_status(&self, id: &str, active: bool) -> Result<Tenant, TenancyError> {
        let status = if active { TenantStatus::Active } else { TenantStatus::Suspended }.as_str();
        let done =
            sqlx::query("UPDATE tenants SET status = ? WHERE id = ?").bind(status).bind(id).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(TenancyError::NotFound(id.to_owned()));
        }
        self.get(id).await
    }

    /// Whether `tenant` has switched `plugin` on.
    pub fn is_enabled(&self, tenant: &str, plugin: &str) -> bool {
        self.enabled.read().expect("tenancy lock").contains(&(tenant.to_owned(), plugin.to_owned()))
    }

    /// Changes whenever a tenant switches a plugin on or off.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The tenants that have switched `plugin` on.
    pub fn tenants_enabling(&self, plugin: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .enabled
            .read()
            .expect("tenancy lock")
            .iter()
            .filter(|(_, p)| p == plugin)
            .map(|(t, _)| t.clone())
            .collect();
        out.sort();
        out
    }

    pub async fn set_enabled(&self, tenant: &str, plugin: &str, enabled: bool) -> Result<(), TenancyError> {
        sqlx::query(
            "INSERT INTO tenant_plugins (tenant_id, plugin_id, enabled, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (tenant_id, plugin_id) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(plugin)
        .bind(i64::from(enabled))
        .bind(self.clock.now_ms())
        .execute(&self.pool)
        .await?;
        let key = (tenant.to_owned(), plugin.to_owned());
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        let mut set = self.enabled.write().expect("tenancy lock");
        if enabled {
            set.insert(key);
        } else {
            set.remove(&key);
        }
        Ok(())
    }

    /// Forgets every tenant's enablement of an uninstalled plugin.
    pub async fn forget_plugin(&self, plugin: &str) -> Result<(), TenancyError> {
        sqlx::query("DELETE FROM tenant_plugins WHERE plugin_id = ?").bind(plugin).execute(&self.pool).await?;
        self.enabled.write().expect("tenancy lock").retain(|(_, p)| p != plugin);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The permissions `tenant` grants to the role named `role`.
    pub fn granted(&self, tenant: &str, role: &str) -> BTreeSet<String> {
        self.grants
            .read()
            .expect("tenancy lock")
            .get(&(tenant.to_owned(), role.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// The roles `tenant` has granted permissions to, with their grants.
    pub fn roles(&self, tenant: &str) -> Vec<(String, BTreeSet<String>)> {
        let mut out: Vec<_> = self
            .grants
            .read()
            .expect("tenancy lock")
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, r), g)| (r.clone(), g.clone()))
            .collect();
        out.sort();
        out
    }

    /// Replaces what `tenant` grants to the role named `role`.
    pub async fn set_grants(
        &self,
        tenant: &str,
        role: &str,
        permissions: BTreeSet<String>,
    ) -> Result<(), TenancyError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM role_grants WHERE tenant_id = ? AND role = ?")
            .bind(tenant)
            .bind(role)
            .execute(&mut *tx)
            .await?;
        let now = self.clock.now_ms();
        for p in &permissions {
            sqlx::query("INSERT INTO role_grants (tenant_id, role, permission, granted_at) VALUES (?, ?, ?, ?)")
                .bind(tenant)
                .bind(role)
                .bind(p)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.grants.write().expect("tenancy lock").insert((tenant.to_owned(), role.to_owned()), permissions);
        Ok(())
    }

    /// The single permission decision for plugin routes: admins hold every permission in the
    /// tenant they act in; everyone else holds what their tenant granted to their role.
    pub fn allows(&self, principal: &Principal, permission: &str) -> bool {
        match principal.role {
            Role::PlatformAdmin | Role::TenantAdmin => true,
            Role::Member => self
                .grants
                .read()
                .expect("tenancy lock")
                .get(&(principal.tenant.clone(), principal.role_name.clone()))
                .is_some_and(|g| g.contains(permission)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_slugs() {
        assert!(valid_id("acme"));
        assert!(valid_id("acme-2"));
        assert!(!valid_id("a"));
        assert!(!valid_id("Acme"));
        assert!(!valid_id("acme-"));
        assert!(!valid_id("2acme"));
        assert!(!valid_id("ac me"));
    }
}

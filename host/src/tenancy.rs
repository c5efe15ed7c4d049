//! Tenants, which installed plugins each tenant has switched on, and the plugin permissions a
//! tenant grants to its member role.
//!
//! Architecture invariant: a plugin route is served to a caller only if the plugin is
//! installed, enabled by the platform, and enabled for the caller's tenant; a permission is
//! held only through the caller's role in the caller's own tenant. Both decisions are made
//! here, from memory kept in step with the database on every write, so the request path does
//! not query for them.

use crate::backend::BackendError;
use crate::clock::Clock;
use crate::identity::{Principal, Role};
use serde::{Deserialize, Serialize};
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
    #[error(transparent)]
    Database(#[from] BackendError),
}

/// A tenant's row for one plugin: whether it is on, and the version it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPluginRow {
    pub tenant: String,
    pub plugin: String,
    pub enabled: bool,
    /// None: never switched on (a switch-off recorded first).
    pub version: Option<String>,
}

pub struct TenantStore {
    rows: Arc<dyn TenancyRows>,
    clock: Arc<Clock>,
    /// (tenant, plugin) pairs switched on.
    enabled: RwLock<HashSet<(String, String)>>,
    /// (tenant, plugin) → the version the tenant runs, kept while the plugin is off for it.
    versions: RwLock<HashMap<(String, String), String>>,
    /// Bumped on every enablement change, so watchers (the scheduler) notice cheaply.
    generation: std::sync::atomic::AtomicU64,
    /// (tenant, role) → granted plugin permissions.
    grants: RwLock<HashMap<(String, String), BTreeSet<String>>>,
    /// Held by this host's changes and by a reload, so a reload never puts back what a
    /// change made while it read.
    writing: tokio::sync::Mutex<()>,
    /// Held by a tenant admin's switch from its dependency check to its change, so two
    /// switches on this host cannot both pass a check the other would fail.
    switching: tokio::sync::Mutex<()>,
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    (2..=32).contains(&id.len())
        && matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.ends_with('-')
}

/// Tenant rows in the backend; [`TenantStore`] keeps enablement and grants in memory above it.
#[async_trait::async_trait]
pub trait TenancyRows: Send + Sync + 'static {
    /// Every tenant's row for every plugin.
    async fn plugin_rows(&self) -> Result<Vec<TenantPluginRow>, BackendError>;
    /// Every (tenant, role, permission) granted.
    async fn grants(&self) -> Result<Vec<(String, String, String)>, BackendError>;
    /// Adds a tenant; `false` if its id is taken (nothing changed).
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<bool, BackendError>;
    /// Every tenant, by id.
    async fn tenants(&self) -> Result<Vec<Tenant>, BackendError>;
    async fn tenant(&self, id: &str) -> Result<Option<Tenant>, BackendError>;
    /// `false` if there is no such tenant.
    async fn set_status(&self, id: &str, status: TenantStatus) -> Result<bool, BackendError>;
    /// Switches `plugin` on or off for `tenant`, keeping the version its row records (a
    /// first switch-on records one with `PluginCatalog::switch_tenant`).
    async fn set_enabled(&self, tenant: &str, plugin: &str, enabled: bool, now: i64) -> Result<(), BackendError>;
    /// Forgets every tenant's enablement of `plugin`.
    async fn forget_plugin(&self, plugin: &str) -> Result<(), BackendError>;
    /// Replaces what `tenant` grants to `role`, in one transaction.
    async fn replace_grants(
        &self,
        tenant: &str,
        role: &str,
        permissions: &BTreeSet<String>,
        now: i64,
    ) -> Result<(), BackendError>;
}

impl TenantStore {
    /// Loads enablement and grants into memory.
    pub async fn load(rows: Arc<dyn TenancyRows>, clock: Arc<Clock>) -> Result<TenantStore, BackendError> {
        let (enabled, versions, grants) = Self::read(rows.as_ref()).await?;
        Ok(TenantStore {
            rows,
            clock,
            enabled: RwLock::new(enabled),
            versions: RwLock::new(versions),
            generation: std::sync::atomic::AtomicU64::new(0),
            grants: RwLock::new(grants),
            writing: tokio::sync::Mutex::new(()),
            switching: tokio::sync::Mutex::new(()),
        })
    }

    #[allow(clippy::type_complexity)]
    async fn read(
        rows: &dyn TenancyRows,
    ) -> Result<
        (HashSet<(String, String)>, HashMap<(String, String), String>, HashMap<(String, String), BTreeSet<String>>),
        BackendError,
    > {
        let mut enabled = HashSet::new();
        let mut versions = HashMap::new();
        for row in rows.plugin_rows().await? {
            let key = (row.tenant, row.plugin);
            if row.enabled {
                enabled.insert(key.clone());
            }
            if let Some(version) = row.version {
                versions.insert(key, version);
            }
        }
        let mut grants: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
        for (tenant, role, permission) in rows.grants().await? {
            grants.entry((tenant, role)).or_default().insert(permission);
        }
        Ok((enabled, versions, grants))
    }

    /// Reads enablement and grants again (another host changed them).
    pub async fn reload(&self) -> Result<(), BackendError> {
        let _writing = self.writing.lock().await;
        let (enabled, versions, grants) = Self::read(self.rows.as_ref()).await?;
        let moved = {
            let mut current = self.enabled.write().expect("tenancy lock");
            let mut current_versions = self.versions.write().expect("tenancy lock");
            let moved = *current != enabled || *current_versions != versions;
            *current = enabled;
            *current_versions = versions;
            moved
        };
        if moved {
            self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        *self.grants.write().expect("tenancy lock") = grants;
        Ok(())
    }

    pub async fn create(&self, id: &str, name: &str) -> Result<Tenant, TenancyError> {
        if !valid_id(id) {
            return Err(TenancyError::InvalidId);
        }
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(TenancyError::InvalidName);
        }
        let tenant = Tenant {
            id: id.to_owned(),
            name: name.to_owned(),
            status: TenantStatus::Active,
            created_at: self.clock.now_ms(),
        };
        if !self.rows.insert_tenant(&tenant).await? {
            return Err(TenancyError::Exists(id.to_owned()));
        }
        Ok(tenant)
    }

    pub async fn list(&self) -> Result<Vec<Tenant>, TenancyError> {
        Ok(self.rows.tenants().await?)
    }

    pub async fn get(&self, id: &str) -> Result<Tenant, TenancyError> {
        self.rows.tenant(id).await?.ok_or_else(|| TenancyError::NotFound(id.to_owned()))
    }

    /// Suspends or resumes a tenant. Its data is kept either way.
    pub async fn set_status(&self, id: &str, active: bool) -> Result<Tenant, TenancyError> {
        let status = if active { TenantStatus::Active } else { TenantStatus::Suspended };
        if !self.rows.set_status(id, status).await? {
            return Err(TenancyError::NotFound(id.to_owned()));
        }
        self.get(id).await
    }

    /// Whether `tenant` has switched `plugin` on.
    pub fn is_enabled(&self, tenant: &str, plugin: &str) -> bool {
        self.enabled.read().expect("tenancy lock").contains(&(tenant.to_owned(), plugin.to_owned()))
    }

    /// The version of `plugin` `tenant` runs (also while it is off there); None: the tenant
    /// never switched it on.
    pub fn version_of(&self, tenant: &str, plugin: &str) -> Option<String> {
        self.versions.read().expect("tenancy lock").get(&(tenant.to_owned(), plugin.to_owned())).cloned()
    }

    /// The tenants that recorded a version of `plugin` (on or off), with it, by tenant.
    pub fn versions_of(&self, plugin: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .versions
            .read()
            .expect("tenancy lock")
            .iter()
            .filter(|((_, p), _)| p == plugin)
            .map(|((t, _), v)| (t.clone(), v.clone()))
            .collect();
        out.sort();
        out
    }

    /// Records in memory what `PluginCatalog::switch_tenant` committed: `tenant` runs
    /// `version` of `plugin`, and is on or off for it when `enabled` says.
    pub async fn switched(&self, tenant: &str, plugin: &str, version: &str, enabled: Option<bool>) {
        let _writing = self.writing.lock().await;
        let key = (tenant.to_owned(), plugin.to_owned());
        self.versions.write().expect("tenancy lock").insert(key.clone(), version.to_owned());
        match enabled {
            Some(true) => {
                self.enabled.write().expect("tenancy lock").insert(key);
            }
            Some(false) => {
                self.enabled.write().expect("tenancy lock").remove(&key);
            }
            None => {}
        }
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Changes whenever a tenant switches a plugin on or off or to another version.
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

    /// Taken by a switch that checks what the tenant's plugins require of each other before
    /// it changes them (`api::tenants`), for the check and the change.
    pub async fn checked_switch(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.switching.lock().await
    }

    pub async fn set_enabled(&self, tenant: &str, plugin: &str, enabled: bool) -> Result<(), TenancyError> {
        let _writing = self.writing.lock().await;
        self.rows.set_enabled(tenant, plugin, enabled, self.clock.now_ms()).await?;
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
        let _writing = self.writing.lock().await;
        self.rows.forget_plugin(plugin).await?;
        self.enabled.write().expect("tenancy lock").retain(|(_, p)| p != plugin);
        self.versions.write().expect("tenancy lock").retain(|(_, p), _| p != plugin);
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
        let _writing = self.writing.lock().await;
        self.rows.replace_grants(tenant, role, &permissions, self.clock.now_ms()).await?;
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

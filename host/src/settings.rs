//! Plugin settings per tenant: the values tenant admins set for what a plugin's manifest
//! declares under `[[settings]]`, and the effective map a call's `config.get` reads.
//!
//! Reads are cached per (tenant, plugin) for a few seconds: every call of a plugin that
//! declares settings needs them, and they change rarely. The host that writes forgets its
//! entry at once; another replica sees the change within the cache's lifetime.

use crate::clock::Clock;
use crate::manifest::{Manifest, SettingSpec, SettingValue};
use sqlx::{Row, SqlitePool};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CACHE_TTL: Duration = Duration::from_secs(5);
const CACHE_MAX: usize = 10_000;

/// A value a tenant set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSetting {
    pub value: String,
    pub updated_at: i64,
    pub updated_by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("`{0}` is not a setting of this plugin")]
    Unknown(String),
    #[error("setting `{name}` {reason}")]
    Invalid { name: String, reason: String },
    #[error("settings store unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

type Stored = Arc<BTreeMap<String, StoredSetting>>;

#[derive(Clone)]
pub struct SettingsStore {
    pool: SqlitePool,
    clock: Arc<Clock>,
    cache: Arc<Mutex<HashMap<(String, String), (Instant, Stored)>>>,
}

impl SettingsStore {
    pub fn new(pool: SqlitePool, clock: Arc<Clock>) -> Self {
        SettingsStore { pool, clock, cache: Arc::default() }
    }

    /// What `tenant` set for `plugin`, by setting name (including values a newer version
    /// no longer declares or accepts: they come back if it does again).
    pub async fn stored(&self, tenant: &str, plugin: &str) -> Result<Stored, SettingsError> {
        let key = (tenant.to_owned(), plugin.to_owned());
        if let Some((at, stored)) = self.cache.lock().expect("settings cache lock").get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(stored.clone());
        }
        let rows = sqlx::query(
            "SELECT name, value, updated_at, updated_by FROM plugin_settings WHERE tenant_id = ? AND plugin_id = ?",
        )
        .bind(tenant)
        .bind(plugin)
        .fetch_all(&self.pool)
        .await?;
        let stored: Stored = Arc::new(
            rows.into_iter()
                .map(|r| (r.get(0), StoredSetting { value: r.get(1), updated_at: r.get(2), updated_by: r.get(3) }))
                .collect(),
        );
        let mut cache = self.cache.lock().expect("settings cache lock");
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), stored.clone()));
        Ok(stored)
    }

    /// What a call of `manifest`'s plugin in `tenant` reads with `config.get`: each declared
    /// setting's value, the tenant's if it still fits the declaration, else the default.
    pub async fn effective(
        &self,
        tenant: &str,
        manifest: &Manifest,
    ) -> Result<Arc<BTreeMap<String, String>>, SettingsError> {
        if manifest.settings.is_empty() {
            return Ok(Arc::default());
        }
        let stored = self.stored(tenant, &manifest.id).await?;
        Ok(Arc::new(
            manifest
                .settings
                .iter()
                .filter_map(|spec| {
                    let value = stored
                        .get(&spec.name)
                        .map(|s| s.value.clone())
                        .filter(|v| spec.accepts_text(v))
                        .or_else(|| spec.default.as_ref().and_then(|d| spec.check(d).ok()))?;
                    Some((spec.name.clone(), value))
                })
                .collect(),
        ))
    }

    /// Sets (`Some`) or resets to the default (`None`) some of `manifest`'s settings for
    /// `tenant`, all or none: every change is checked first, and the first problem names
    /// its setting.
    pub async fn update(
        &self,
        tenant: &str,
        manifest: &Manifest,
        changes: &BTreeMap<String, Option<SettingValue>>,
        actor: &str,
    ) -> Result<(), SettingsError> {
        let mut checked: Vec<(&str, Option<String>)> = Vec::with_capacity(changes.len());
        for (name, value) in changes {
            let spec: &SettingSpec = manifest
                .settings
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| SettingsError::Unknown(name.clone()))?;
            let text = match value {
                None => None,
                Some(v) => Some(spec.check(v).map_err(|reason| SettingsError::Invalid { name: name.clone(), reason })?),
            };
            checked.push((name, text));
        }
        let now = self.clock.now_ms();
        let mut tx = self.pool.begin().await?;
        for (name, text) in checked {
            match text {
                Some(value) => {
                    sqlx::query(
                        "INSERT INTO plugin_settings (tenant_id, plugin_id, name, value, updated_at, updated_by) \
                         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, plugin_id, name) DO UPDATE SET \
                         value = excluded.value, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                    )
                    .bind(tenant)
                    .bind(&manifest.id)
                    .bind(name)
                    .bind(value)
                    .bind(now)
                    .bind(actor)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM plugin_settings WHERE tenant_id = ? AND plugin_id = ? AND name = ?")
                        .bind(tenant)
                        .bind(&manifest.id)
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        self.cache.lock().expect("settings cache lock").remove(&(tenant.to_owned(), manifest.id.clone()));
        Ok(())
    }

    /// Drops cached values of a plugin whose settings were purged with it.
    pub fn forget_plugin(&self, plugin: &str) {
        self.cache.lock().expect("settings cache lock").retain(|(_, p), _| p != plugin);
    }
}

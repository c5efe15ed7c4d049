//! Plugin settings per tenant: the values tenant admins set for what a plugin's manifest
//! declares under `[[settings]]`, and the effective map a call's `config.get` reads.
//!
//! Reads are cached per (tenant, plugin) for a few seconds: every call of a plugin that
//! declares settings needs them, and they change rarely. The host that writes forgets its
//! entry at once; another replica sees the change within the cache's lifetime.

use crate::backend::BackendError;
use crate::clock::Clock;
use crate::manifest::{Manifest, SettingSpec, SettingValue};
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
    #[error(transparent)]
    Database(#[from] BackendError),
}

type Stored = Arc<BTreeMap<String, StoredSetting>>;
type Effective = Arc<BTreeMap<String, String>>;

/// A (tenant, plugin)'s stored values, and the effective map last built from them for one
/// plugin version (rebuilt when the version changes: declarations may differ).
struct Cached {
    at: Instant,
    stored: Stored,
    effective: Option<(semver::Version, Effective)>,
}

/// Setting rows in the backend; [`SettingsStore`] checks and caches above it.
#[async_trait::async_trait]
pub trait SettingRows: Send + Sync + 'static {
    /// What `tenant` set for `plugin`, by setting name.
    async fn stored(&self, tenant: &str, plugin: &str) -> Result<BTreeMap<String, StoredSetting>, BackendError>;
    /// Sets (`Some`) or removes (`None`) each named value, all in one transaction.
    async fn apply(
        &self,
        tenant: &str,
        plugin: &str,
        changes: &[(&str, Option<String>)],
        now: i64,
        actor: &str,
    ) -> Result<(), BackendError>;
}

#[derive(Clone)]
pub struct SettingsStore {
    rows: Arc<dyn SettingRows>,
    clock: Arc<Clock>,
    cache: Arc<Mutex<HashMap<(String, String), Cached>>>,
    /// Bumped by every change this host makes: a read that began before a change must not
    /// put what it read into the cache after the change dropped the old entry.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl SettingsStore {
    pub fn new(rows: Arc<dyn SettingRows>, clock: Arc<Clock>) -> Self {
        SettingsStore { rows, clock, cache: Arc::default(), generation: Arc::default() }
    }

    /// What `tenant` set for `plugin`, by setting name (including values a newer version
    /// no longer declares or accepts: they come back if it does again).
    pub async fn stored(&self, tenant: &str, plugin: &str) -> Result<Stored, SettingsError> {
        let key = (tenant.to_owned(), plugin.to_owned());
        if let Some(cached) = self.cache.lock().expect("settings cache lock").get(&key)
            && cached.at.elapsed() < CACHE_TTL
        {
            return Ok(cached.stored.clone());
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let stored: Stored = Arc::new(self.rows.stored(tenant, plugin).await?);
        let mut cache = self.cache.lock().expect("settings cache lock");
        if self.generation.load(std::sync::atomic::Ordering::Acquire) != generation {
            // A change landed while we read: what we read may predate it; do not keep it.
            return Ok(stored);
        }
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, Cached { at: Instant::now(), stored: stored.clone(), effective: None });
        Ok(stored)
    }

    /// What a call of `manifest`'s plugin in `tenant` reads with `config.get`: each declared
    /// setting's value, the tenant's if it still fits the declaration, else the default.
    pub async fn effective(&self, tenant: &str, manifest: &Manifest) -> Result<Effective, SettingsError> {
        if manifest.settings.is_empty() {
            return Ok(Arc::default());
        }
        let key = (tenant.to_owned(), manifest.id.clone());
        if let Some(Cached { at, effective: Some((version, effective)), .. }) =
            self.cache.lock().expect("settings cache lock").get(&key)
            && at.elapsed() < CACHE_TTL
            && *version == manifest.version
        {
            return Ok(effective.clone());
        }
        let stored = self.stored(tenant, &manifest.id).await?;
        let effective: Effective = Arc::new(
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
        );
        if let Some(cached) = self.cache.lock().expect("settings cache lock").get_mut(&key)
            && Arc::ptr_eq(&cached.stored, &stored)
        {
            cached.effective = Some((manifest.version.clone(), effective.clone()));
        }
        Ok(effective)
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
        self.rows.apply(tenant, &manifest.id, &checked, self.clock.now_ms(), actor).await?;
        let mut cache = self.cache.lock().expect("settings cache lock");
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        cache.remove(&(tenant.to_owned(), manifest.id.clone()));
        Ok(())
    }

    /// Sets values read from an export (their stored text), all or none: each must be a
    /// declared, non-secret setting of `manifest` that accepts it.
    pub async fn restore(
        &self,
        tenant: &str,
        manifest: &Manifest,
        values: &[(String, String)],
        actor: &str,
    ) -> Result<(), SettingsError> {
        let mut checked: Vec<(&str, Option<String>)> = Vec::with_capacity(values.len());
        for (name, text) in values {
            let spec = manifest
                .settings
                .iter()
                .find(|s| &s.name == name && !s.secret)
                .ok_or_else(|| SettingsError::Unknown(name.clone()))?;
            if !spec.accepts_text(text) {
                return Err(SettingsError::Invalid { name: name.clone(), reason: "is not a value it accepts".into() });
            }
            checked.push((name, Some(text.clone())));
        }
        if checked.is_empty() {
            return Ok(());
        }
        self.rows.apply(tenant, &manifest.id, &checked, self.clock.now_ms(), actor).await?;
        let mut cache = self.cache.lock().expect("settings cache lock");
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        cache.remove(&(tenant.to_owned(), manifest.id.clone()));
        Ok(())
    }

    /// Removes every value `tenant` set for `plugin` (secrets included), in one transaction;
    /// returns how many.
    pub async fn purge(&self, tenant: &str, plugin: &str, actor: &str) -> Result<usize, SettingsError> {
        let stored = self.rows.stored(tenant, plugin).await?;
        let removals: Vec<(&str, Option<String>)> = stored.keys().map(|name| (name.as_str(), None)).collect();
        if !removals.is_empty() {
            self.rows.apply(tenant, plugin, &removals, self.clock.now_ms(), actor).await?;
        }
        let mut cache = self.cache.lock().expect("settings cache lock");
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        cache.remove(&(tenant.to_owned(), plugin.to_owned()));
        Ok(removals.len())
    }

    /// Forgets everything cached (another host changed settings).
    pub fn forget_all(&self) {
        let mut cache = self.cache.lock().expect("settings cache lock");
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        cache.clear();
    }

    /// Drops cached values of a plugin whose settings were purged with it.
    pub fn forget_plugin(&self, plugin: &str) {
        let mut cache = self.cache.lock().expect("settings cache lock");
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        cache.retain(|(_, p), _| p != plugin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::LimitPolicy;

    fn manifest(version: &str, max_retries: i64) -> Manifest {
        let text = format!(
            r#"
            id = "demo"
            version = "{version}"
            name = "Demo"
            capabilities = ["config"]
            [permissions]
            "demo.use" = "Use it"
            [[routes]]
            method = "GET"
            path = "/x"
            permission = "demo.use"
            [[settings]]
            name = "retries"
            type = "integer"
            description = "How often"
            max = {max_retries}
            default = 1
            "#
        );
        let policy =
            LimitPolicy { max_memory_mb: 64, max_timeout_ms: 1000, default_memory_mb: 16, default_timeout_ms: 500 };
        Manifest::parse(&text, &policy).unwrap()
    }

    #[tokio::test]
    async fn the_effective_map_follows_updates_and_the_plugins_current_declarations() {
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::backend::sqlite::open(&dir.path().join("settings.db"), Default::default()).await.unwrap();
        let store = SettingsStore::new(backend.settings.clone(), Arc::default());
        let v1 = manifest("1.0.0", 10);
        assert_eq!(store.effective("t", &v1).await.unwrap().get("retries").map(String::as_str), Some("1"));
        let change = BTreeMap::from([("retries".to_owned(), Some(SettingValue::Integer(7)))]);
        store.update("t", &v1, &change, "tok").await.unwrap();
        assert_eq!(store.effective("t", &v1).await.unwrap()["retries"], "7", "the writer sees its change at once");
        assert_eq!(store.effective("u", &v1).await.unwrap()["retries"], "1", "per tenant");
        // A newer version allows at most 5: the stored 7 no longer fits, the default applies;
        // the older version (still running somewhere) keeps reading 7.
        let v2 = manifest("2.0.0", 5);
        assert_eq!(store.effective("t", &v2).await.unwrap()["retries"], "1");
        assert_eq!(store.effective("t", &v1).await.unwrap()["retries"], "7");
        let reset = BTreeMap::from([("retries".to_owned(), None)]);
        store.update("t", &v2, &reset, "tok").await.unwrap();
        assert_eq!(store.effective("t", &v1).await.unwrap()["retries"], "1");
        let unknown = BTreeMap::from([("volume".to_owned(), None)]);
        assert!(
            matches!(store.update("t", &v2, &unknown, "tok").await, Err(SettingsError::Unknown(n)) if n == "volume")
        );
    }
}

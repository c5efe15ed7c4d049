//! Installed plugins: their records in the database and, for each, the prepared component
//! the runtime calls.
//!
//! Architecture invariant: a plugin is only ever recorded as installed after its artifact
//! passed every check (envelope, manifest, compilation, world and capability type-check);
//! a refused upload leaves nothing behind.

use crate::artifact::{self, ArtifactError};
use crate::clock::Clock;
use crate::manifest::{LimitPolicy, Manifest, ManifestError, RouteTable};
use crate::runtime::{HostState, PluginPre, PrepareError, Runtime};
use serde::Serialize;
use sqlx::{Row, SqlitePool};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use utoipa::ToSchema;

/// What an admin sees of an installed plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PluginRecord {
    pub id: String,
    pub version: String,
    pub name: String,
    pub description: String,
    /// sha-256 of the artifact, hex.
    pub digest: String,
    pub size_bytes: u64,
    pub enabled: bool,
    pub installed_at: i64,
    pub updated_at: i64,
    /// Effective limits after the host's caps.
    pub memory_limit_bytes: u64,
    pub timeout_ms: u64,
    pub manifest: Manifest,
}

/// A plugin ready to serve.
pub struct LoadedPlugin {
    pub record: PluginRecord,
    pub routes: RouteTable,
    pub pre: PluginPre<HostState>,
    pub collections: Arc<BTreeMap<String, crate::storage::index::CollectionIndexes>>,
    pub memory_cap: usize,
    pub timeout: Duration,
}

/// How an install ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstallOutcome {
    /// A plugin id not installed before.
    Installed,
    /// A newer version of an installed plugin; it is now the active one.
    Upgraded,
    /// The same id, version and digest were already installed: nothing changed.
    Unchanged,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("invalid manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error("{id} {version} is already installed with a different digest ({existing}); bump the version")]
    DigestMismatch { id: String, version: String, existing: String },
    #[error("{id} {active} is installed; {offered} is older (downgrades are refused)")]
    Downgrade { id: String, active: String, offered: String },
    #[error(transparent)]
    Routes(#[from] crate::runtime::RouteCheckError),
    #[error("the stored data does not fit the new indexes: {0}")]
    Reindex(crate::storage::sqlite::ReindexError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no plugin `{0}` is installed")]
    NotFound(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored plugin `{id}` cannot be loaded: {reason}")]
    Corrupt { id: String, reason: String },
    #[error("purging plugin data failed: {0}")]
    Purge(String),
}

/// Counts from loading the installed plugins at start.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadStats {
    pub loaded: usize,
    pub from_cache: usize,
    pub compiled: usize,
}

pub struct PluginRegistry {
    pool: SqlitePool,
    clock: Arc<Clock>,
    runtime: Arc<Runtime>,
    policy: LimitPolicy,
    loaded: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
    /// Bumped on every change to `loaded`, so watchers (the scheduler) notice cheaply.
    generation: std::sync::atomic::AtomicU64,
    /// One install/uninstall at a time: they compare and replace versions.
    changes: tokio::sync::Mutex<()>,
}

impl PluginRegistry {
    pub fn new(pool: SqlitePool, runtime: Arc<Runtime>, policy: LimitPolicy, clock: Arc<Clock>) -> Self {
        PluginRegistry {
            pool,
            clock,
            runtime,
            policy,
            loaded: RwLock::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    pub fn policy(&self) -> &LimitPolicy {
        &self.policy
    }

    /// The plugin serving `id`, if installed.
    pub fn get(&self, id: &str) -> Option<Arc<LoadedPlugin>> {
        self.loaded.read().expect("plugin map lock").get(id).cloned()
    }

    /// Changes whenever a plugin is installed, upgraded, switched or removed.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Every installed plugin, ready to run.
    pub fn loaded(&self) -> Vec<Arc<LoadedPlugin>> {
        self.loaded.read().expect("plugin map lock").values().cloned().collect()
    }

    /// Enabled plugins subscribed to `topic`.
    pub fn subscribers(&self, topic: &str) -> Vec<Arc<LoadedPlugin>> {
        let mut out: Vec<_> = self
            .loaded
            .read()
            .expect("plugin map lock")
            .values()
            .filter(|p| p.record.enabled && p.record.manifest.subscriptions.iter().any(|s| s.topic == topic))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        out
    }

    /// All installed plugins, by id.
    pub fn list(&self) -> Vec<PluginRecord> {
        let mut out: Vec<_> = self.loaded.read().expect("plugin map lock").values().map(|p| p.record.clone()).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Loads every installed plugin's active version (at start).
    pub async fn load_all(&self) -> Result<LoadStats, RegistryError> {
        let rows = sqlx::query(
            "SELECT p.id, p.enabled, p.installed_at, p.updated_at, v.version, v.digest, v.manifest, a.bytes \
             FROM plugins p JOIN plugin_versions v ON v.plugin_id = p.id AND v.version = p.active_version \
             JOIN plugin_artifacts a ON a.digest = v.digest ORDER BY p.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut stats = LoadStats::default();
        for row in rows {
            let id: String = row.get("id");
            let bytes: Vec<u8> = row.get("bytes");
            let digest: String = row.get("digest");
            let corrupt = |reason: String| RegistryError::Corrupt { id: id.clone(), reason };
            let manifest =
                Manifest::parse(&row.get::<String, _>("manifest"), &self.policy).map_err(|e| corrupt(e.to_string()))?;
            let record_times = (row.get::<i64, _>("installed_at"), row.get::<i64, _>("updated_at"));
            let enabled = row.get::<i64, _>("enabled") != 0;
            let runtime = self.runtime.clone();
            let (m, d) = (manifest.clone(), digest.clone());
            let bytes_len = bytes.len() as u64;
            let prepared = tokio::task::spawn_blocking(move || runtime.prepare(&d, &bytes, &m))
                .await
                .map_err(|e| corrupt(e.to_string()))?
                .map_err(|e| corrupt(e.to_string()))?;
            if prepared.from_cache {
                stats.from_cache += 1;
            } else {
                stats.compiled += 1;
            }
            let plugin = self.assemble(manifest, digest, bytes_len, enabled, record_times, prepared.pre);
            self.loaded.write().expect("plugin map lock").insert(id, Arc::new(plugin));
            self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
            stats.loaded += 1;
        }
        Ok(stats)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        &self,
        manifest: Manifest,
        digest: String,
        size: u64,
        enabled: bool,
        (installed_at, updated_at): (i64, i64),
        pre: PluginPre<HostState>,
    ) -> LoadedPlugin {
        let memory_cap = manifest.memory_bytes(&self.policy);
        let timeout = manifest.timeout(&self.policy);
        let routes = RouteTable::new(&manifest.routes).expect("routes were validated with the manifest");
        LoadedPlugin {
            record: PluginRecord {
                id: manifest.id.clone(),
                version: manifest.version.to_string(),
                name: manifest.name.clone(),
                description: manifest.description.clone(),
                digest,
                size_bytes: size,
                enabled,
                installed_at,
                updated_at,
                memory_limit_bytes: memory_cap as u64,
                timeout_ms: timeout.as_millis() as u64,
                manifest: manifest.clone(),
            },
            routes,
            pre,
            collections: Arc::new(manifest.collection_indexes()),
            memory_cap,
            timeout,
        }
    }

    /// Whether `manifest`'s version may be installed with `digest`: `Some(record)` when that
    /// exact artifact is already the active version (nothing to do), an error when the version
    /// exists with another digest or is older than the active one.
    async fn admit_version(&self, manifest: &Manifest, digest: &str) -> Result<Option<PluginRecord>, InstallError> {
        let existing: Option<String> =
            sqlx::query_scalar("SELECT digest FROM plugin_versions WHERE plugin_id = ? AND version = ?")
                .bind(&manifest.id)
                .bind(manifest.version.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(RegistryError::from)?;
        let active = self.get(&manifest.id);
        if let Some(existing) = existing {
            if existing != digest {
                return Err(InstallError::DigestMismatch {
                    id: manifest.id.clone(),
                    version: manifest.version.to_string(),
                    existing,
                });
            }
            if let Some(active) = active.as_ref().filter(|a| a.record.version == manifest.version.to_string()) {
                return Ok(Some(active.record.clone()));
            }
        }
        if let Some(active) = &active {
            let active_version = &active.record.manifest.version;
            if manifest.version < *active_version {
                return Err(InstallError::Downgrade {
                    id: manifest.id.clone(),
                    active: active_version.to_string(),
                    offered: manifest.version.to_string(),
                });
            }
        }
        Ok(None)
    }

    /// Validates, compiles, type-checks and records an uploaded artifact.
    pub async fn install(&self, bytes: Vec<u8>) -> Result<(PluginRecord, InstallOutcome), InstallError> {
        let digest = artifact::digest(&bytes);
        let manifest = Manifest::parse(&artifact::manifest_text(&bytes)?, &self.policy)?;
        // Refuse (or answer unchanged) at once when the version decides it, before compiling.
        if let Some(unchanged) = self.admit_version(&manifest, &digest).await? {
            return Ok((unchanged, InstallOutcome::Unchanged));
        }

        // Compiling takes seconds for large components and the routes probe runs plugin code:
        // both happen before the registry is locked, off the async workers, so one upload
        // never holds up other admins' changes.
        let runtime = self.runtime.clone();
        let (m, d) = (manifest.clone(), digest.clone());
        let (prepared, bytes) = tokio::task::spawn_blocking(move || {
            let prepared = runtime.prepare(&d, &bytes, &m);
            (prepared, bytes)
        })
        .await
        .map_err(|e| RegistryError::Corrupt { id: manifest.id.clone(), reason: e.to_string() })?;
        let prepared = prepared?;
        self.runtime
            .check_routes(&prepared.pre, &manifest, manifest.memory_bytes(&self.policy), manifest.timeout(&self.policy))
            .await?;

        let _guard = self.changes.lock().await;
        // Again under the lock: another upload may have landed meanwhile.
        if let Some(unchanged) = self.admit_version(&manifest, &digest).await? {
            return Ok((unchanged, InstallOutcome::Unchanged));
        }
        let active = self.get(&manifest.id);

        let now = self.clock.now_ms();
        let mut tx = self.pool.begin().await.map_err(RegistryError::from)?;
        // Index entries follow the active version's definitions: an upgrade that adds,
        // retypes or removes an index rewrites them with the switch, or not at all.
        let before = active.as_ref().map(|a| a.record.manifest.collection_indexes()).unwrap_or_default();
        let after = manifest.collection_indexes();
        // A collection the new version no longer declares keeps its documents (a later version
        // may declare it again) but not its full-text rows, which a search could not reach.
        for (collection, old) in before.iter().filter(|(c, old)| !after.contains_key(*c) && old.search.is_some()) {
            let (drop, rebuild) = old.changes_to(&Default::default());
            crate::storage::sqlite::reindex(&mut tx, &manifest.id, collection, &Default::default(), &drop, &rebuild)
                .await
                .map_err(InstallError::Reindex)?;
        }
        for (collection, indexes) in after {
            let (drop, rebuild) = before.get(&collection).cloned().unwrap_or_default().changes_to(&indexes);
            let entries =
                crate::storage::sqlite::reindex(&mut tx, &manifest.id, &collection, &indexes, &drop, &rebuild)
                    .await
                    .map_err(InstallError::Reindex)?;
            if !drop.is_empty() || !rebuild.is_empty() {
                tracing::info!(plugin = %manifest.id, %collection, ?drop, ?rebuild, entries, "index entries rewritten for the new version");
            }
        }
        sqlx::query("INSERT INTO plugin_artifacts (digest, bytes, size, uploaded_at) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING")
            .bind(&digest)
            .bind(&bytes)
            .bind(bytes.len() as i64)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(RegistryError::from)?;
        sqlx::query(
            "INSERT INTO plugin_versions (plugin_id, version, digest, manifest, installed_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (plugin_id, version) DO NOTHING",
        )
        .bind(&manifest.id)
        .bind(manifest.version.to_string())
        .bind(&digest)
        .bind(artifact::manifest_text(&bytes)?)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(RegistryError::from)?;
        sqlx::query(
            "INSERT INTO plugins (id, active_version, enabled, installed_at, updated_at) VALUES (?, ?, 1, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET active_version = excluded.active_version, updated_at = excluded.updated_at",
        )
        .bind(&manifest.id)
        .bind(manifest.version.to_string())
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(RegistryError::from)?;
        tx.commit().await.map_err(RegistryError::from)?;

        let outcome = if active.is_some() { InstallOutcome::Upgraded } else { InstallOutcome::Installed };
        let (enabled, installed_at) =
            active.as_ref().map_or((true, now), |a| (a.record.enabled, a.record.installed_at));
        let id = manifest.id.clone();
        let plugin = self.assemble(manifest, digest, bytes.len() as u64, enabled, (installed_at, now), prepared.pre);
        let record = plugin.record.clone();
        self.loaded.write().expect("plugin map lock").insert(id, Arc::new(plugin));
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok((record, outcome))
    }

    /// Turns a plugin on or off for everyone; a disabled plugin's routes answer 404.
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<PluginRecord, RegistryError> {
        let _guard = self.changes.lock().await;
        let current = self.get(id).ok_or_else(|| RegistryError::NotFound(id.to_owned()))?;
        let now = self.clock.now_ms();
        sqlx::query("UPDATE plugins SET enabled = ?, updated_at = ? WHERE id = ?")
            .bind(i64::from(enabled))
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        let mut record = current.record.clone();
        record.enabled = enabled;
        record.updated_at = now;
        let updated = LoadedPlugin {
            record: record.clone(),
            routes: current.routes.clone(),
            pre: current.pre.clone(),
            collections: current.collections.clone(),
            memory_cap: current.memory_cap,
            timeout: current.timeout,
        };
        self.loaded.write().expect("plugin map lock").insert(id.to_owned(), Arc::new(updated));
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(record)
    }

    /// Removes a plugin (all its versions). Its stored documents are kept unless `purge`.
    pub async fn uninstall(
        &self,
        id: &str,
        purge: Option<&dyn crate::storage::DocumentStore>,
    ) -> Result<u64, RegistryError> {
        let _guard = self.changes.lock().await;
        let Some(current) = self.get(id) else {
            return Err(RegistryError::NotFound(id.to_owned()));
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM plugins WHERE id = ?").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM plugin_versions WHERE plugin_id = ?").bind(id).execute(&mut *tx).await?;
        if purge.is_some() {
            // Settings are the tenants' data, like documents: kept unless purged.
            sqlx::query("DELETE FROM plugin_settings WHERE plugin_id = ?").bind(id).execute(&mut *tx).await?;
        } else {
            // Except secrets: another plugin installed later under the same id must not
            // read this one's credentials.
            for spec in current.record.manifest.settings.iter().filter(|s| s.secret) {
                sqlx::query("DELETE FROM plugin_settings WHERE plugin_id = ? AND name = ?")
                    .bind(id)
                    .bind(&spec.name)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("DELETE FROM plugin_artifacts WHERE digest NOT IN (SELECT digest FROM plugin_versions)")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.loaded.write().expect("plugin map lock").remove(id);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        match purge {
            Some(store) => store.purge_plugin(id).await.map_err(|e| RegistryError::Purge(e.to_string())),
            None => Ok(0),
        }
    }
}

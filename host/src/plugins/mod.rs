//! Installed plugins: their records in the database and, for each, the prepared component
//! the runtime calls.
//!
//! Architecture invariant: a plugin is only ever recorded as installed after its artifact
//! passed every check (envelope, manifest, compilation, world and capability type-check);
//! a refused upload leaves nothing behind.

use crate::artifact::{self, ArtifactError};
use crate::backend::BackendError;
use crate::clock::Clock;
use crate::manifest::{LimitPolicy, Manifest, ManifestError, RouteTable};
use crate::runtime::compat;
use crate::runtime::{HostState, PluginPre, PrepareError, Runtime};
use crate::storage::ReindexError;
use crate::storage::index::CollectionIndexes;
use serde::Serialize;
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
    /// The trusted key whose signature this version carried at install (its name); none
    /// for a version installed unsigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    pub manifest: Manifest,
}

/// A plugin ready to serve.
pub struct LoadedPlugin {
    pub record: PluginRecord,
    pub routes: RouteTable,
    /// What the host checks of each route's requests (by route index).
    pub contracts: Arc<Vec<crate::manifest::schema::RouteContract>>,
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
    /// A newer version of an installed plugin; it is now the active one (what tenants
    /// switching the plugin on get). Tenants running an older one keep it until moved.
    Upgraded,
    /// The same id, version and digest were already installed: nothing changed.
    Unchanged,
    /// A newer version, installed beside the active one a platform admin pinned, which
    /// stays what tenants switching the plugin on get.
    Added,
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
    Reindex(crate::storage::ReindexError),
    #[error(transparent)]
    Trust(#[from] crate::signing::TrustError),
    #[error(
        "this version provides {interface}, which must serve what {replaces} did, but it breaks {}{}",
        breaks.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        if callers.is_empty() { String::new() } else { format!(" (installed callers: {})", callers.join(", ")) }
    )]
    Incompatible {
        interface: String,
        replaces: String,
        breaks: Vec<crate::runtime::compat::Break>,
        /// Installed plugins that require the interface.
        callers: Vec<String>,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no plugin `{0}` is installed")]
    NotFound(String),
    #[error(transparent)]
    Database(#[from] BackendError),
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

/// An installed plugin's active version as stored.
#[derive(Debug, Clone)]
pub struct StoredPlugin {
    pub id: String,
    pub enabled: bool,
    pub installed_at: i64,
    pub updated_at: i64,
    pub version: String,
    pub digest: String,
    /// The manifest's TOML text.
    pub manifest: String,
    /// The artifact.
    pub bytes: Vec<u8>,
    /// See [`PluginRecord::signer`].
    pub signer: Option<String>,
    /// A platform admin pinned the active version: installs do not move it.
    pub pinned: bool,
}

/// What says whether a host's copy of a plugin is current: its active version's digest
/// and the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginHead {
    pub id: String,
    pub digest: String,
    pub enabled: bool,
    pub updated_at: i64,
    /// See [`StoredPlugin::pinned`].
    pub pinned: bool,
}

/// What [`PluginRegistry::sync`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Plugins loaded or replaced by another version.
    pub loaded: Vec<String>,
    /// Plugins switched on or off.
    pub switched: Vec<String>,
    pub removed: Vec<String>,
    /// Plugins whose new version this host could not load (it keeps the one it had).
    pub failed: Vec<String>,
}

/// A version to record as the plugin's active one.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub id: &'a str,
    pub version: &'a str,
    pub digest: &'a str,
    pub manifest: &'a str,
    pub bytes: &'a [u8],
    pub now: i64,
    /// The active version the install was decided against (`None`: a new plugin). The
    /// switch happens only if it is still the active one, so two hosts installing at once
    /// cannot both win, nor downgrade each other.
    pub replaces: Option<&'a str>,
    /// See [`PluginRecord::signer`].
    pub signer: Option<&'a str>,
}

/// An installed version as listed (no artifact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub version: String,
    pub digest: String,
    pub size: u64,
    pub installed_at: i64,
    pub signer: Option<String>,
    /// The manifest's TOML text.
    pub manifest: String,
}

/// One tenant's move to another version of a plugin.
#[derive(Debug, Clone)]
pub struct TenantSwitch<'a> {
    pub tenant: &'a str,
    pub plugin: &'a str,
    /// The version the tenant ran when the move was decided; None: its first switch-on.
    pub from: Option<&'a str>,
    pub to: &'a str,
    /// Also switches the plugin on or off for the tenant.
    pub enabled: Option<bool>,
    pub now: i64,
}

/// Index entries one collection's documents in a tenant need rewritten when the tenant moves
/// to another version: those named `drop` removed (every entry when `clear`), those named
/// `rebuild` computed again from `indexes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reindex {
    pub collection: String,
    pub indexes: crate::storage::index::CollectionIndexes,
    pub drop: Vec<String>,
    pub rebuild: std::collections::BTreeSet<String>,
    /// The entries' definitions are unknown (a first switch-on over data kept from an
    /// uninstalled plugin): every entry of the collection goes before the rebuild.
    pub clear: bool,
}

/// Installed plugins, their versions and artifacts in the backend. Artifacts live in the
/// database, so every host on it can load every plugin.
#[async_trait::async_trait]
pub trait PluginCatalog: Send + Sync + 'static {
    /// Every installed plugin's active version, by id.
    async fn active(&self) -> Result<Vec<StoredPlugin>, BackendError>;
    /// `id`'s active version, if installed.
    async fn active_of(&self, id: &str) -> Result<Option<StoredPlugin>, BackendError>;
    /// Every installed plugin's active digest and switch, by id (no artifacts).
    async fn heads(&self) -> Result<Vec<PluginHead>, BackendError>;
    /// The digest recorded for `id` at `version`, if that version was ever installed.
    async fn digest_of(&self, id: &str, version: &str) -> Result<Option<String>, BackendError>;
    /// Records `version` (artifact, version row) and makes it the active one, the version
    /// tenants switching the plugin on get (a new plugin is enabled), in one transaction;
    /// unless the active version is pinned, which stays. Tenants running another version
    /// keep it. Refused with [`ReindexError::Superseded`]
    /// unless the active version is still `version.replaces`.
    async fn activate(&self, version: &NewVersion<'_>) -> Result<(), ReindexError>;
    /// `id` at `version`, if installed.
    async fn stored_version(&self, id: &str, version: &str) -> Result<Option<StoredPlugin>, BackendError>;
    /// Every installed version of `id`, oldest first (no artifacts).
    async fn versions(&self, id: &str) -> Result<Vec<VersionRow>, BackendError>;
    /// Makes `version` (installed) the active one, pinned or not; false when `id` or the
    /// version is not installed.
    async fn set_active(&self, id: &str, version: &str, pinned: bool, now: i64) -> Result<bool, BackendError>;
    /// Every (plugin, version) some tenant runs.
    async fn versions_in_use(&self) -> Result<Vec<(String, String)>, BackendError>;
    /// Moves one tenant to another version of a plugin, rewriting that tenant's index
    /// entries as `reindex` says, in one transaction: on any error nothing changes. Refused
    /// with [`ReindexError::Superseded`] unless the tenant still runs `switch.from`.
    /// Returns the entries written per step.
    async fn switch_tenant(&self, switch: &TenantSwitch<'_>, reindex: &[Reindex]) -> Result<Vec<u64>, ReindexError>;
    async fn set_enabled(&self, id: &str, enabled: bool, now: i64) -> Result<(), BackendError>;
    /// Removes the plugin and its versions, its artifacts no other version uses, and its
    /// settings: all of them when `purge`, else only those named in `secrets`.
    async fn remove(&self, id: &str, purge: bool, secrets: &[String]) -> Result<(), BackendError>;
    /// Keys platform admins trusted over the API, by name.
    async fn trusted_keys(&self) -> Result<Vec<TrustedKeyRow>, BackendError>;
    /// Trusts `public_key` under `name`; false (nothing changed) when the name or the key
    /// is trusted already.
    async fn trust_key(&self, name: &str, public_key: &str, now: i64, by: &str) -> Result<bool, BackendError>;
    /// Forgets the key named `name`; false if there was none.
    async fn distrust_key(&self, name: &str) -> Result<bool, BackendError>;
}

/// A trusted key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKeyRow {
    pub name: String,
    pub public_key: String,
    pub added_at: i64,
    pub added_by: String,
}

/// What [`PluginCatalog::trust_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustOutcome {
    Added,
    /// The same key was trusted under the same name already.
    Unchanged,
    /// The name is another key's.
    NameTaken,
    /// The key is trusted already, under this name.
    KeyTrustedAs(String),
}

/// The versions of one plugin a host has loaded.
#[derive(Clone)]
struct Installed {
    /// The active version: the one tenants switching the plugin on get.
    active: Arc<LoadedPlugin>,
    /// Every loaded version, the active one included.
    versions: BTreeMap<String, Arc<LoadedPlugin>>,
}

impl Installed {
    fn new(active: Arc<LoadedPlugin>) -> Self {
        Installed { versions: BTreeMap::from([(active.record.version.clone(), active.clone())]), active }
    }

    /// Every version with the platform's switch at `enabled`.
    fn switched(&self, enabled: bool, updated_at: i64) -> Installed {
        let switch = |p: &Arc<LoadedPlugin>| Arc::new(p.switched(enabled, updated_at));
        Installed {
            active: switch(&self.active),
            versions: self.versions.iter().map(|(v, p)| (v.clone(), switch(p))).collect(),
        }
    }
}

impl LoadedPlugin {
    /// This version with the platform's switch at `enabled`.
    fn switched(&self, enabled: bool, updated_at: i64) -> LoadedPlugin {
        let mut record = self.record.clone();
        record.enabled = enabled;
        record.updated_at = updated_at;
        LoadedPlugin {
            record,
            routes: self.routes.clone(),
            contracts: self.contracts.clone(),
            pre: self.pre.clone(),
            collections: self.collections.clone(),
            memory_cap: self.memory_cap,
            timeout: self.timeout,
        }
    }
}

/// Why a tenant could not be moved to a version.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("no plugin `{0}` is installed")]
    NotFound(String),
    #[error("{plugin} {version} is not installed")]
    VersionNotFound { plugin: String, version: String },
    #[error("the tenant's data does not fit the version's indexes: {0}")]
    Reindex(ReindexError),
    #[error("the tenant was moved to {found} meanwhile; try again", found = found.as_deref().unwrap_or("no version"))]
    Superseded { found: Option<String> },
    /// The migration hook trapped, ran out of time, returned an error, or did not finish:
    /// the tenant stays on its version with its data as it was.
    #[error(
        "the migration of {plugin} {version} failed: {reason}; the tenant stays on its version, its data unchanged"
    )]
    MigrationFailed { plugin: String, version: String, reason: String },
    /// A rollback past a migration that cannot run back.
    #[error(
        "{version} migrated the tenant's data from versions `{from}` and declares no way back (`down`); it cannot move back to {to}"
    )]
    MigrationIrreversible { version: String, from: String, to: String },
    /// A move that would leave out an installed version's migration.
    #[error("{version} migrates data from {from}, which the tenant runs, and {to} does not: move to {version} first")]
    MigrationSkipped { version: String, from: String, to: String },
    /// The tenant's data kept changing under the migration.
    #[error(
        "the tenant's data changed under the migration {attempts} times; nothing moved, try again when it is quieter"
    )]
    MigrationConflict { attempts: u32 },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What moving a tenant did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Moved {
    pub plugin: String,
    /// The version it ran (none: its first switch-on).
    pub from: Option<String>,
    pub to: String,
    /// Index and full-text entries rewritten in the tenant's data (with a migration:
    /// counted in the migration's commit, not here).
    pub entries_rewritten: u64,
    /// The migration the move ran, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationReport>,
}

/// What a move's migration did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MigrationReport {
    /// `up` or `down`.
    pub direction: String,
    /// The version whose hook ran.
    pub version: String,
    pub chunks: u32,
    /// Documents the hook said it rewrote.
    pub documents: u64,
    /// Runs of the whole migration (more than one: the data changed under it).
    pub attempts: u32,
    pub elapsed_ms: u64,
}

/// The index rewrites a tenant's data needs to move from the definitions `before` (None: a
/// first switch-on, over data of unknown definitions) to `after`.
pub fn reindex_steps(
    before: Option<&BTreeMap<String, CollectionIndexes>>,
    after: &BTreeMap<String, CollectionIndexes>,
) -> Vec<Reindex> {
    let mut reindex = Vec::new();
    match before {
        Some(before) => {
            // A collection the new version no longer declares keeps its documents (a later
            // version may declare it again) but not its full-text rows.
            for (collection, old) in before.iter().filter(|(c, old)| !after.contains_key(*c) && old.search.is_some()) {
                let (drop, rebuild) = old.changes_to(&Default::default());
                reindex.push(Reindex {
                    collection: collection.clone(),
                    indexes: Default::default(),
                    drop,
                    rebuild,
                    clear: false,
                });
            }
            for (collection, indexes) in after {
                let (drop, rebuild) = before.get(collection).cloned().unwrap_or_default().changes_to(indexes);
                reindex.push(Reindex {
                    collection: collection.clone(),
                    indexes: indexes.clone(),
                    drop,
                    rebuild,
                    clear: false,
                });
            }
        }
        // A first switch-on: whatever entries the tenant's data has (kept from a plugin
        // uninstalled since) follow unknown definitions, so all are built again.
        None => {
            for (collection, indexes) in after {
                let (drop, rebuild) = CollectionIndexes::default().changes_to(indexes);
                reindex.push(Reindex {
                    collection: collection.clone(),
                    indexes: indexes.clone(),
                    drop,
                    rebuild,
                    clear: true,
                });
            }
        }
    }
    reindex
}

pub struct PluginRegistry {
    catalog: Arc<dyn PluginCatalog>,
    clock: Arc<Clock>,
    runtime: Arc<Runtime>,
    policy: LimitPolicy,
    loaded: RwLock<HashMap<String, Installed>>,
    /// Bumped on every change to `loaded`, so watchers (the scheduler) notice cheaply.
    generation: std::sync::atomic::AtomicU64,
    /// One install/uninstall at a time: they compare and replace versions.
    changes: tokio::sync::Mutex<()>,
    /// id → the digest of a version another host installed that this one could not load.
    unloadable: std::sync::Mutex<HashMap<String, String>>,
    signatures: crate::signing::SignaturePolicy,
}

impl PluginRegistry {
    pub fn new(catalog: Arc<dyn PluginCatalog>, runtime: Arc<Runtime>, policy: LimitPolicy, clock: Arc<Clock>) -> Self {
        PluginRegistry {
            catalog,
            clock,
            runtime,
            policy,
            loaded: RwLock::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            changes: tokio::sync::Mutex::new(()),
            unloadable: std::sync::Mutex::new(HashMap::new()),
            signatures: crate::signing::SignaturePolicy::default(),
        }
    }

    /// What installs must carry (by default, nothing: signatures are checked when sent).
    pub fn with_signatures(mut self, signatures: crate::signing::SignaturePolicy) -> Self {
        self.signatures = signatures;
        self
    }

    /// Whether every install must be signed by a trusted key.
    pub fn signatures_required(&self) -> bool {
        self.signatures.required
    }

    /// The keys trusted now: the config's, then those platform admins added, by name.
    pub async fn trusted_keys(&self) -> Result<Vec<crate::signing::TrustedKey>, RegistryError> {
        let mut keys = self.signatures.configured.clone();
        for row in self.catalog.trusted_keys().await? {
            match row.public_key.parse() {
                Ok(public_key) => keys.push(crate::signing::TrustedKey {
                    name: row.name,
                    public_key,
                    source: "admin",
                    added_at: Some(row.added_at),
                    added_by: Some(row.added_by),
                }),
                // Only the API writes these, after parsing; a bad row trusts nothing.
                Err(e) => tracing::error!(key = %row.name, error = %e, "stored trusted key does not parse; ignored"),
            }
        }
        Ok(keys)
    }

    /// Trusts `key` under `name` (platform admins): a name holds one key and a key one
    /// name, the config's included.
    pub async fn trust_key(
        &self,
        name: &str,
        key: crate::signing::PublicKey,
        by: &str,
    ) -> Result<TrustOutcome, RegistryError> {
        let in_config = self.signatures.configured.iter().any(|k| k.name == name || k.public_key == key);
        if !in_config && self.catalog.trust_key(name, &key.to_string(), self.clock.now_ms(), by).await? {
            return Ok(TrustOutcome::Added);
        }
        // Taken: by whom decides the answer.
        let trusted = self.trusted_keys().await?;
        let taken = trusted.iter().find(|k| k.name == name || k.public_key == key);
        Ok(match taken {
            Some(k) if k.name == name && k.public_key == key => TrustOutcome::Unchanged,
            Some(k) if k.name == name => TrustOutcome::NameTaken,
            Some(k) => TrustOutcome::KeyTrustedAs(k.name.clone()),
            // Distrusted between the insert and the look: try once more.
            None => match self.catalog.trust_key(name, &key.to_string(), self.clock.now_ms(), by).await? {
                true => TrustOutcome::Added,
                false => TrustOutcome::NameTaken,
            },
        })
    }

    /// Stops trusting the key platform admins added as `name`; versions it signed stay
    /// installed. False if there was none.
    pub async fn distrust_key(&self, name: &str) -> Result<bool, RegistryError> {
        Ok(self.catalog.distrust_key(name).await?)
    }

    /// The engine the plugins are compiled for (to read their components' types).
    pub fn engine(&self) -> &wasmtime::Engine {
        self.runtime.engine()
    }

    pub fn policy(&self) -> &LimitPolicy {
        &self.policy
    }

    /// The active version of `id` (what tenants switching it on get), if installed.
    pub fn get(&self, id: &str) -> Option<Arc<LoadedPlugin>> {
        self.loaded.read().expect("plugin map lock").get(id).map(|i| i.active.clone())
    }

    /// `id` at `version`, if this host has it loaded.
    pub fn version(&self, id: &str, version: &str) -> Option<Arc<LoadedPlugin>> {
        self.loaded.read().expect("plugin map lock").get(id).and_then(|i| i.versions.get(version).cloned())
    }

    /// The version of `id` that serves `tenant`: the one it runs, or for a tenant that never
    /// switched it on, the active one. None when not installed, or when that version is not
    /// loaded here yet (another host moved the tenant a moment ago; see `cluster::Topic`).
    pub fn for_tenant(
        &self,
        tenancy: &crate::tenancy::TenantStore,
        tenant: &str,
        id: &str,
    ) -> Option<Arc<LoadedPlugin>> {
        match tenancy.version_of(tenant, id) {
            Some(version) => self.version(id, &version),
            None => self.get(id),
        }
    }

    /// Loads `id` at `version` if this host has not yet.
    pub async fn ensure_version(&self, id: &str, version: &str) -> Result<Arc<LoadedPlugin>, MoveError> {
        if let Some(loaded) = self.version(id, version) {
            return Ok(loaded);
        }
        if self.get(id).is_none() {
            return Err(MoveError::NotFound(id.to_owned()));
        }
        let Some(row) = self.catalog.stored_version(id, version).await.map_err(RegistryError::from)? else {
            return Err(MoveError::VersionNotFound { plugin: id.to_owned(), version: version.to_owned() });
        };
        self.load(row, false, &mut LoadStats::default()).await?;
        self.version(id, version)
            .ok_or_else(|| MoveError::VersionNotFound { plugin: id.to_owned(), version: version.to_owned() })
    }

    /// Every installed version of `id`, oldest first, and whether a platform admin pinned
    /// the active one.
    pub async fn versions(&self, id: &str) -> Result<(Vec<VersionRow>, bool), RegistryError> {
        let pinned = self.catalog.heads().await?.iter().any(|h| h.id == id && h.pinned);
        Ok((self.catalog.versions(id).await?, pinned))
    }

    /// Pins `version` as the active version of `id` (what tenants switching it on get, which
    /// later installs do not move), or with None unpins it: the newest installed version
    /// becomes active again. No tenant moves.
    pub async fn pin(&self, id: &str, version: Option<&str>) -> Result<PluginRecord, MoveError> {
        let _guard = self.changes.lock().await;
        self.sync_locked().await?;
        let target = match version {
            Some(v) => v.to_owned(),
            None => {
                let newest = self
                    .catalog
                    .versions(id)
                    .await
                    .map_err(RegistryError::from)?
                    .into_iter()
                    .filter_map(|v| semver::Version::parse(&v.version).ok().map(|parsed| (parsed, v.version)));
                newest.max().map(|(_, v)| v).ok_or_else(|| MoveError::NotFound(id.to_owned()))?
            }
        };
        let loaded = self.ensure_version(id, &target).await?;
        let set = self.catalog.set_active(id, &target, version.is_some(), self.clock.now_ms()).await;
        if !set.map_err(RegistryError::from)? {
            return Err(MoveError::VersionNotFound { plugin: id.to_owned(), version: target });
        }
        if let Some(installed) = self.loaded.write().expect("plugin map lock").get_mut(id) {
            installed.active = loaded.clone();
        }
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(loaded.record.clone())
    }

    /// Moves `tenant` to `to` of `plugin` (switching it on or off with it when `enabled`
    /// says): the tenant's index entries are rewritten for the version's definitions and
    /// its row changes in one transaction, then this host routes it there. Requests already
    /// running finish on the version they started on; a commit of theirs computed from the
    /// old definitions fails its check and runs again on the new version.
    pub async fn move_tenant(
        &self,
        tenancy: &crate::tenancy::TenantStore,
        tenant: &str,
        plugin: &str,
        to: &str,
        enabled: Option<bool>,
    ) -> Result<Moved, MoveError> {
        let target = self.ensure_version(plugin, to).await?;
        let from = tenancy.version_of(tenant, plugin);
        let before = match &from {
            Some(v) => Some(self.ensure_version(plugin, v).await?.record.manifest.collection_indexes()),
            None => None,
        };
        let reindex = reindex_steps(before.as_ref(), &target.record.manifest.collection_indexes());
        let switch = TenantSwitch { tenant, plugin, from: from.as_deref(), to, enabled, now: self.clock.now_ms() };
        let entries = self.catalog.switch_tenant(&switch, &reindex).await.map_err(|e| match e {
            ReindexError::Superseded { found, .. } => MoveError::Superseded { found },
            ReindexError::Mismatch { .. } => MoveError::Reindex(e),
            ReindexError::Store(crate::storage::StoreError::Unavailable(m)) => {
                MoveError::Registry(RegistryError::Database(BackendError::Unavailable(m)))
            }
            ReindexError::Store(other) => {
                MoveError::Registry(RegistryError::Database(BackendError::Internal(other.to_string())))
            }
        })?;
        tenancy.switched(tenant, plugin, to, enabled).await;
        let entries_rewritten = entries.iter().sum();
        if from.as_deref() != Some(to) {
            tracing::info!(%tenant, %plugin, from = ?from, %to, entries_rewritten, "tenant moved to another version");
        }
        Ok(Moved { plugin: plugin.to_owned(), from, to: to.to_owned(), entries_rewritten, migration: None })
    }

    /// Changes whenever a plugin is installed, upgraded, switched or removed.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Every installed plugin's active version, ready to run.
    pub fn loaded(&self) -> Vec<Arc<LoadedPlugin>> {
        self.loaded.read().expect("plugin map lock").values().map(|i| i.active.clone()).collect()
    }

    /// The plugins switched on in `tenant`, each at the version the tenant runs, by id.
    pub fn serving_tenant(&self, tenancy: &crate::tenancy::TenantStore, tenant: &str) -> Vec<Arc<LoadedPlugin>> {
        let ids: Vec<String> = self.loaded.read().expect("plugin map lock").keys().cloned().collect();
        let mut out: Vec<_> = ids
            .iter()
            .filter(|id| tenancy.is_enabled(tenant, id))
            .filter_map(|id| self.for_tenant(tenancy, tenant, id))
            .filter(|p| p.record.enabled)
            .collect();
        out.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        out
    }

    /// The plugins switched on in `tenant` whose version there subscribes to `topic`.
    pub fn subscribers(
        &self,
        tenancy: &crate::tenancy::TenantStore,
        tenant: &str,
        topic: &str,
    ) -> Vec<Arc<LoadedPlugin>> {
        self.serving_tenant(tenancy, tenant)
            .into_iter()
            .filter(|p| p.record.manifest.subscriptions.iter().any(|s| s.topic == topic))
            .collect()
    }

    /// All installed plugins' active versions, by id.
    pub fn list(&self) -> Vec<PluginRecord> {
        let mut out: Vec<_> =
            self.loaded.read().expect("plugin map lock").values().map(|i| i.active.record.clone()).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Loads every installed plugin's active version and every version a tenant runs (at
    /// start).
    pub async fn load_all(&self) -> Result<LoadStats, RegistryError> {
        let mut stats = LoadStats::default();
        for row in self.catalog.active().await? {
            self.load(row, true, &mut stats).await?;
        }
        self.load_in_use(&mut stats).await?;
        Ok(stats)
    }

    /// Loads the versions tenants run that this host has not loaded.
    async fn load_in_use(&self, stats: &mut LoadStats) -> Result<Vec<String>, RegistryError> {
        let mut loaded = Vec::new();
        for (id, version) in self.catalog.versions_in_use().await? {
            if self.get(&id).is_none() || self.version(&id, &version).is_some() {
                continue;
            }
            // Removed meanwhile: the next sync sees it gone.
            let Some(row) = self.catalog.stored_version(&id, &version).await? else { continue };
            self.load(row, false, stats).await?;
            loaded.push(format!("{id} {version}"));
        }
        Ok(loaded)
    }

    /// Compiles (or takes from the compile cache) a stored version and serves it, as the
    /// plugin's active version when `active`.
    async fn load(&self, row: StoredPlugin, active: bool, stats: &mut LoadStats) -> Result<(), RegistryError> {
        let StoredPlugin { id, enabled, installed_at, updated_at, digest, manifest, bytes, signer, .. } = row;
        let corrupt = |reason: String| RegistryError::Corrupt { id: id.clone(), reason };
        let manifest = Manifest::parse(&manifest, &self.policy).map_err(|e| corrupt(e.to_string()))?;
        let record_times = (installed_at, updated_at);
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
        let mut plugin = self.assemble(manifest, digest, bytes_len, enabled, record_times, prepared.pre);
        plugin.record.signer = signer;
        let plugin = Arc::new(plugin);
        {
            let mut map = self.loaded.write().expect("plugin map lock");
            match map.get_mut(&id) {
                Some(installed) => {
                    installed.versions.insert(plugin.record.version.clone(), plugin.clone());
                    if active {
                        installed.active = plugin;
                    }
                }
                None if active => {
                    map.insert(id, Installed::new(plugin));
                }
                // A version of a plugin removed meanwhile.
                None => {}
            }
        }
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        stats.loaded += 1;
        Ok(())
    }

    /// Brings this host's plugins in line with the catalog (another host installed, upgraded,
    /// switched or removed one): only versions whose digest changed are loaded, from the
    /// compile cache when this host compiled them before.
    pub async fn sync(&self) -> Result<SyncReport, RegistryError> {
        let _guard = self.changes.lock().await;
        self.sync_locked().await
    }

    /// [`Self::sync`], with `changes` held by the caller.
    async fn sync_locked(&self) -> Result<SyncReport, RegistryError> {
        let heads = self.catalog.heads().await?;
        let mut report = SyncReport::default();
        let current: HashMap<String, Arc<LoadedPlugin>> =
            self.loaded.read().expect("plugin map lock").iter().map(|(id, i)| (id.clone(), i.active.clone())).collect();
        for gone in current.keys().filter(|id| !heads.iter().any(|h| &h.id == *id)) {
            self.loaded.write().expect("plugin map lock").remove(gone);
            report.removed.push(gone.clone());
        }
        for head in heads {
            match current.get(&head.id) {
                Some(p) if p.record.digest == head.digest => {
                    if p.record.enabled != head.enabled {
                        let mut map = self.loaded.write().expect("plugin map lock");
                        if let Some(installed) = map.get_mut(&head.id) {
                            *installed = installed.switched(head.enabled, head.updated_at);
                        }
                        report.switched.push(head.id);
                    }
                }
                _ => {
                    // A version this host could not load is not tried again until another
                    // replaces it; meanwhile the version it had (if any) keeps serving.
                    let tried = self.unloadable.lock().expect("unloadable lock").get(&head.id) == Some(&head.digest);
                    if tried {
                        continue;
                    }
                    // Removed again since the heads were read: the next sync sees it gone.
                    let Some(row) = self.catalog.active_of(&head.id).await? else { continue };
                    match self.load(row, true, &mut LoadStats::default()).await {
                        Ok(()) => {
                            self.unloadable.lock().expect("unloadable lock").remove(&head.id);
                            report.loaded.push(head.id);
                        }
                        Err(e) => {
                            tracing::error!(plugin = %head.id, digest = %head.digest, error = %e,
                                "cannot load the version another host installed; keeping what this host serves");
                            self.unloadable.lock().expect("unloadable lock").insert(head.id.clone(), head.digest);
                            report.failed.push(head.id);
                        }
                    }
                }
            }
        }
        match self.load_in_use(&mut LoadStats::default()).await {
            Ok(versions) => report.loaded.extend(versions),
            Err(e) => tracing::error!(error = %e, "cannot load a version a tenant runs; its requests wait for it"),
        }
        if report != SyncReport::default() {
            self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
            tracing::info!(loaded = ?report.loaded, switched = ?report.switched, removed = ?report.removed,
                "plugins changed by another host");
        }
        Ok(report)
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
        let contracts = Arc::new(manifest.contracts().expect("contracts were validated with the manifest"));
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
                signer: None,
                manifest: manifest.clone(),
            },
            routes,
            contracts,
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
        let existing =
            self.catalog.digest_of(&manifest.id, &manifest.version.to_string()).await.map_err(RegistryError::from)?;
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

    /// Validates, compiles, type-checks and records an uploaded artifact, with its
    /// publisher's `signature` if it came with one (see [`crate::signing`] for the rules).
    pub async fn install(
        &self,
        bytes: Vec<u8>,
        signature: Option<&str>,
    ) -> Result<(PluginRecord, InstallOutcome), InstallError> {
        let digest = artifact::digest(&bytes);
        // Before anything is parsed or compiled: an artifact the platform may not run is
        // refused at the door.
        let trusted = if signature.is_some() || self.signatures.required { self.trusted_keys().await? } else { vec![] };
        let signer = match crate::signing::judge(&digest, signature, self.signatures.required, &trusted)? {
            crate::signing::Verdict::Signed(name) => Some(name),
            crate::signing::Verdict::Unsigned => None,
        };
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
        // Decided against what the database holds, not what this host last loaded: another
        // host may have installed, upgraded or removed it meanwhile.
        self.sync_locked().await?;
        // Again under the lock: another upload may have landed meanwhile.
        if let Some(unchanged) = self.admit_version(&manifest, &digest).await? {
            return Ok((unchanged, InstallOutcome::Unchanged));
        }
        let active = self.get(&manifest.id);
        if let Some(active) = &active {
            self.check_compatible(&manifest, &prepared.pre, active)?;
        }
        let pinned =
            self.catalog.heads().await.map_err(RegistryError::from)?.iter().any(|h| h.id == manifest.id && h.pinned);

        let now = self.clock.now_ms();
        // Tenants running the plugin keep their version (and their index entries) until they
        // are moved (`move_tenant`); this only makes the version the one new tenants get.
        let version = manifest.version.to_string();
        let manifest_text = artifact::manifest_text(&bytes)?;
        let new = NewVersion {
            id: &manifest.id,
            version: &version,
            digest: &digest,
            manifest: &manifest_text,
            bytes: &bytes,
            now,
            replaces: active.as_ref().map(|a| a.record.version.as_str()),
            signer: signer.as_deref(),
        };
        self.catalog.activate(&new).await.map_err(|e| match e {
            ReindexError::Mismatch { .. } | ReindexError::Superseded { .. } => InstallError::Reindex(e),
            // Whatever else failed in the transaction: the database's failure, not the data's.
            ReindexError::Store(crate::storage::StoreError::Unavailable(m)) => {
                InstallError::Registry(RegistryError::Database(BackendError::Unavailable(m)))
            }
            ReindexError::Store(other) => {
                InstallError::Registry(RegistryError::Database(BackendError::Internal(other.to_string())))
            }
        })?;
        let outcome = match (&active, pinned) {
            (None, _) => InstallOutcome::Installed,
            (Some(_), false) => InstallOutcome::Upgraded,
            (Some(_), true) => InstallOutcome::Added,
        };
        let (enabled, installed_at) =
            active.as_ref().map_or((true, now), |a| (a.record.enabled, a.record.installed_at));
        let id = manifest.id.clone();
        let mut plugin =
            self.assemble(manifest, digest, bytes.len() as u64, enabled, (installed_at, now), prepared.pre);
        plugin.record.signer = signer;
        let record = plugin.record.clone();
        let plugin = Arc::new(plugin);
        {
            let mut map = self.loaded.write().expect("plugin map lock");
            match map.get_mut(&id) {
                Some(installed) => {
                    installed.versions.insert(record.version.clone(), plugin.clone());
                    if !pinned {
                        installed.active = plugin;
                    }
                }
                None => {
                    map.insert(id, Installed::new(plugin));
                }
            }
        }
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok((record, outcome))
    }

    /// Refuses a version that breaks an interface the version it replaces provided under a
    /// compatible version: a function removed, or its type changed (see `runtime::compat`).
    fn check_compatible(
        &self,
        manifest: &Manifest,
        pre: &PluginPre<HostState>,
        active: &LoadedPlugin,
    ) -> Result<(), InstallError> {
        let engine = self.runtime.engine();
        for provided in manifest.provided() {
            for old in active.record.manifest.provided().iter().filter(|old| provided.satisfies(old)) {
                let before = compat::exported(engine, active.pre.component(), old).unwrap_or_default();
                let after = compat::exported(engine, pre.component(), provided).unwrap_or_default();
                let breaks = compat::breaks(&before, &after);
                if breaks.is_empty() {
                    continue;
                }
                let mut callers: Vec<String> = self
                    .loaded()
                    .iter()
                    .filter(|p| p.record.id != manifest.id)
                    .filter(|p| p.record.manifest.required().iter().any(|r| r.name == provided.name))
                    .map(|p| p.record.id.clone())
                    .collect();
                callers.sort();
                return Err(InstallError::Incompatible {
                    interface: provided.to_string(),
                    replaces: old.to_string(),
                    breaks,
                    callers,
                });
            }
        }
        Ok(())
    }

    /// Turns a plugin on or off for everyone; a disabled plugin's routes answer 404.
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<PluginRecord, RegistryError> {
        let _guard = self.changes.lock().await;
        self.sync_locked().await?;
        self.get(id).ok_or_else(|| RegistryError::NotFound(id.to_owned()))?;
        let now = self.clock.now_ms();
        self.catalog.set_enabled(id, enabled, now).await?;
        let record = {
            let mut map = self.loaded.write().expect("plugin map lock");
            let installed = map.get_mut(id).ok_or_else(|| RegistryError::NotFound(id.to_owned()))?;
            *installed = installed.switched(enabled, now);
            installed.active.record.clone()
        };
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
        self.sync_locked().await?;
        let Some(current) = self.get(id) else {
            return Err(RegistryError::NotFound(id.to_owned()));
        };
        // Settings are the tenants' data, like documents: kept unless purged. Except secrets:
        // another plugin installed later under the same id must not read this one's credentials.
        let secrets: Vec<String> =
            current.record.manifest.settings.iter().filter(|s| s.secret).map(|s| s.name.clone()).collect();
        self.catalog.remove(id, purge.is_some(), &secrets).await?;
        self.loaded.write().expect("plugin map lock").remove(id);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        match purge {
            Some(store) => store.purge_plugin(id).await.map_err(|e| RegistryError::Purge(e.to_string())),
            None => Ok(0),
        }
    }
}

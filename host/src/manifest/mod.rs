//! The plugin manifest (`plugin.toml`): what a plugin is, what it serves, what it may use.
//!
//! The manifest travels inside the uploaded component as the custom section
//! [`artifact::MANIFEST_SECTION`](crate::artifact::MANIFEST_SECTION). It is parsed and
//! validated here, once, into a [`Manifest`] the rest of the host trusts.

mod routes;
pub mod schema;
pub mod settings;
pub mod views;

use crate::storage::index::{CollectionIndexes, IndexType};
use crate::storage::search::{MAX_SEARCH_FIELDS, SearchField, SearchFields};
pub use routes::{RouteError, RouteMatch, RouteMismatch, RoutePattern, RouteTable};
use serde::{Deserialize, Serialize};
pub use settings::{SettingSpec, SettingType, SettingValue};
use std::collections::{BTreeMap, BTreeSet};
use utoipa::ToSchema;
pub use views::{FieldFormat, ViewAction, ViewField, ViewKind, ViewSpec};

/// Host services a plugin may ask for. A plugin whose component imports an interface it did
/// not declare is refused at upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Storage,
    Log,
    Config,
    Clock,
    Identity,
    /// Enqueue background jobs (`keel:platform/jobs`).
    Jobs,
    /// Publish events (`keel:platform/events`).
    Events,
    /// Take numbers from named counters (`keel:platform/sequences`, since 0.1.1).
    Sequences,
}

impl Capability {
    /// The `keel:platform` interface that provides the capability.
    pub fn interface(self) -> &'static str {
        match self {
            Capability::Storage => "storage",
            Capability::Log => "log",
            Capability::Config => "config",
            Capability::Clock => "clock",
            Capability::Identity => "identity",
            Capability::Jobs => "jobs",
            Capability::Events => "events",
            Capability::Sequences => "sequences",
        }
    }

    pub fn from_interface(name: &str) -> Option<Capability> {
        // Tasks are chains of jobs: the same capability.
        if name == "tasks" {
            return Some(Capability::Jobs);
        }
        [
            Capability::Storage,
            Capability::Log,
            Capability::Config,
            Capability::Clock,
            Capability::Identity,
            Capability::Jobs,
            Capability::Events,
            Capability::Sequences,
        ]
        .into_iter()
        .find(|c| c.interface() == name)
    }
}

/// Resource limits a plugin asks for; the host caps them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RequestedLimits {
    /// Linear memory, all memories of an instance together, in MiB.
    pub memory_mb: Option<u32>,
    /// Wall time per request, in milliseconds.
    pub timeout_ms: Option<u32>,
}

/// A collection and the fields of its documents that queries may filter and order on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CollectionSpec {
    pub name: String,
    /// Indexed fields: a bare name (`"status"`, type `text`) or `{ field, type }`.
    #[serde(default)]
    pub indexes: Vec<IndexSpec>,
    /// Indexes over several indexed fields, for queries with equality on all but the last
    /// and ordered by the last (`[["item", "at"]]`: movements of one item in time order).
    #[serde(default)]
    pub compound_indexes: Vec<Vec<String>>,
    /// Fields indexed for full-text search (at most four, in order of importance): a dotted
    /// path (`"email.subject"`) or `{ field, weight }`. An array field indexes each string.
    #[serde(default)]
    pub search: Vec<SearchSpec>,
}

/// One field of a collection's full-text index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SearchSpec {
    /// A field of weight 1.
    Field(String),
    Weighted(WeightedSearchSpec),
}

/// A searchable field with the weight of a match in it (1-100; a larger weight ranks
/// documents matching there first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedSearchSpec {
    pub field: String,
    pub weight: u8,
}

impl SearchSpec {
    pub fn field(&self) -> &str {
        match self {
            SearchSpec::Field(f) => f,
            SearchSpec::Weighted(w) => &w.field,
        }
    }

    pub fn weight(&self) -> u8 {
        match self {
            SearchSpec::Field(_) => 1,
            SearchSpec::Weighted(w) => w.weight,
        }
    }
}

/// One indexed field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum IndexSpec {
    /// A field of type `text`: strings, numbers and booleans compared as text.
    Field(String),
    Typed(TypedIndexSpec),
}

/// An indexed field with its type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TypedIndexSpec {
    pub field: String,
    #[serde(rename = "type")]
    pub ty: IndexType,
}

impl IndexSpec {
    pub fn field(&self) -> &str {
        match self {
            IndexSpec::Field(f) => f,
            IndexSpec::Typed(t) => &t.field,
        }
    }

    pub fn ty(&self) -> IndexType {
        match self {
            IndexSpec::Field(_) => IndexType::Text,
            IndexSpec::Typed(t) => t.ty,
        }
    }
}

impl CollectionSpec {
    /// The collection's indexes, as storage uses them.
    pub fn indexes(&self) -> CollectionIndexes {
        CollectionIndexes {
            fields: self.indexes.iter().map(|i| (i.field().to_owned(), i.ty())).collect(),
            compound: self.compound_indexes.clone(),
            search: (!self.search.is_empty()).then(|| {
                SearchFields(
                    self.search
                        .iter()
                        .map(|s| SearchField { path: s.field().to_owned(), weight: s.weight() })
                        .collect(),
                )
            }),
        }
    }
}

/// A route the plugin serves under `/v1/plugins/{id}`, and the permission it needs. A
/// `public` route needs none: anyone may call it, also without a token, under
/// `/v1/public/{tenant}/{id}` (a web form customers fill in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub permission: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
    /// One line on what the route does (OpenAPI `summary`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// JSON Schemas of path parameters by name; a parameter not named is any text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// JSON Schema (an object) of the query parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub query: Option<serde_json::Value>,
    /// JSON Schema of the JSON body (POST, PUT, PATCH): checked before the plugin runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub input: Option<serde_json::Value>,
    /// JSON Schema of the success response's JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub output: Option<serde_json::Value>,
    /// The success status (200 unless given; 204 for a route that answers no body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl RouteSpec {
    /// A route with no contract: `method path`, needing `permission`.
    pub fn new(method: &str, path: &str, permission: &str) -> RouteSpec {
        RouteSpec {
            method: method.to_owned(),
            path: path.to_owned(),
            permission: permission.to_owned(),
            public: false,
            summary: String::new(),
            description: String::new(),
            params: BTreeMap::new(),
            query: None,
            input: None,
            output: None,
            status: None,
        }
    }

    /// The status a successful call answers with.
    pub fn success_status(&self) -> u16 {
        self.status.unwrap_or(200)
    }
}

/// A cron schedule: the host runs the plugin's `worker.run-job` with this name, per tenant
/// where the plugin is enabled, at every time the expression matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ScheduleSpec {
    pub name: String,
    /// Five fields: minute hour day-of-month month day-of-week (or `@hourly`, `@daily`, ...).
    pub cron: String,
    /// IANA time zone the expression is read in.
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// A bulk import: rows uploaded as JSON Lines or CSV, checked and stored by the plugin's
/// `importer` export, committed all together or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ImportSpec {
    /// 1-64 of a-z, 0-9, '-', '_': the last segment of the upload URL.
    pub name: String,
    /// What uploading needs: one of the plugin's declared permissions.
    pub permission: String,
    /// What the rows are, for people uploading them.
    #[serde(default)]
    pub description: String,
}

/// Versions whose stored data this version migrates (`keel:platform/migrator`, since 0.1.7):
/// a tenant moving here from one of them runs the plugin's `migrate` up; with `down`, a
/// tenant moving back from here to one of them runs it down. A move back to a version this
/// one migrated from, without `down`, is refused, naming the migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationSpec {
    /// A semver requirement, e.g. `<2.0.0` or `>=1.2, <2`: the versions migrated from.
    #[schema(value_type = String)]
    pub from: semver::VersionReq,
    /// Whether the migration can also run back (a rollback keeps the data usable).
    #[serde(default)]
    pub down: bool,
}

impl MigrationSpec {
    /// Whether this migration turns data of `version` into this version's.
    pub fn covers(&self, version: &semver::Version) -> bool {
        self.from.matches(version)
    }
}

/// Events of `topic` are delivered to the plugin's `worker.on-event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    pub topic: String,
}

/// How background work (jobs, scheduled runs, event deliveries) is retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts before a job is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry; each further retry doubles it (with jitter), up to an hour.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u32,
}

fn default_attempts() -> u32 {
    5
}

fn default_backoff() -> u32 {
    1_000
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec { max_attempts: default_attempts(), backoff_ms: default_backoff() }
    }
}

/// A validated plugin manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manifest {
    pub id: String,
    #[schema(value_type = String, example = "0.1.0")]
    pub version: semver::Version,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub capabilities: BTreeSet<Capability>,
    #[serde(default)]
    pub limits: RequestedLimits,
    /// Permission name → what it allows, for people granting it.
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
    #[serde(default)]
    pub collections: Vec<CollectionSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub schedules: Vec<ScheduleSpec>,
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionSpec>,
    #[serde(default)]
    pub retry: RetrySpec,
    /// Bulk imports the plugin accepts at `POST /v1/imports/{id}/{name}`.
    #[serde(default)]
    pub imports: Vec<ImportSpec>,
    /// Department interfaces this plugin exports for others, e.g. `keel:hr/directory@0.2.0`.
    #[serde(default)]
    pub provides: Vec<String>,
    /// Department interfaces this plugin imports, at their lowest acceptable version; the host
    /// links each call to a compatible provider enabled in the caller's tenant.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Settings tenant admins give the plugin; it reads them with `config.get`.
    #[serde(default)]
    pub settings: Vec<SettingSpec>,
    /// Versions whose data this one migrates (see [`MigrationSpec`]).
    #[serde(default)]
    pub migrations: Vec<MigrationSpec>,
    /// Screens for the web console, drawn over the routes (see [`views`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<ViewSpec>,
    /// Named JSON Schemas routes refer to as `#/schemas/<Name>` (see [`schema`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub schemas: BTreeMap<String, serde_json::Value>,
    /// `provides`, parsed once by [`Manifest::parse`].
    #[serde(skip)]
    provided: Vec<InterfaceRef>,
    /// `requires`, parsed once by [`Manifest::parse`].
    #[serde(skip)]
    required: Vec<InterfaceRef>,
}

/// A versioned department interface: `namespace:package/interface@version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceRef {
    /// `namespace:package/interface`.
    pub name: String,
    pub version: semver::Version,
}

impl InterfaceRef {
    /// Parses `keel:hr/directory@0.2.0`. Platform interfaces are not department interfaces.
    pub fn parse(text: &str) -> Option<InterfaceRef> {
        let (name, version) = text.split_once('@')?;
        let (package, interface) = name.split_once('/')?;
        let (namespace, package) = package.split_once(':')?;
        let part = |s: &str| is_slug(s, 64);
        if !part(namespace) || !part(package) || !part(interface) || namespace == "wasi" || package == "platform" {
            return None;
        }
        Some(InterfaceRef { name: name.to_owned(), version: semver::Version::parse(version).ok()? })
    }

    /// Whether a provider of `self` can serve a caller that requires `required`: the same
    /// interface, semver-compatible (same major; same minor below 1.0), and not older.
    pub fn satisfies(&self, required: &InterfaceRef) -> bool {
        let v = &self.version;
        let r = &required.version;
        self.name == required.name && v.major == r.major && (r.major > 0 || v.minor == r.minor) && v >= r
    }
}

impl std::fmt::Display for InterfaceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// The host's ceilings, applied to what manifests ask for.
#[derive(Debug, Clone)]
pub struct LimitPolicy {
    pub max_memory_mb: u32,
    pub max_timeout_ms: u32,
    pub default_memory_mb: u32,
    pub default_timeout_ms: u32,
}

/// Why a manifest was refused. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not valid TOML for a Keel manifest: {0}")]
    Syntax(String),
    #[error("`{field}`: {reason}")]
    Field { field: String, reason: String },
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Field { field: field.into(), reason: reason.into() }
}

const MAX_COLLECTIONS: usize = 64;
const MAX_INDEXES: usize = 16;
const MAX_COMPOUND_FIELDS: usize = 4;
const MAX_ROUTES: usize = 256;
const MAX_SCHEDULES: usize = 32;
const MAX_SUBSCRIPTIONS: usize = 64;

/// Job and schedule names: 1-64 of a-z, 0-9, '-', '_' and '.'.
pub fn is_job_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

/// Event topics: `<plugin-id>.<name>[.<name>...]`, at most 128 bytes.
pub fn is_topic(s: &str) -> bool {
    let mut parts = s.split('.');
    let owner = parts.next().unwrap_or("");
    let rest: Vec<&str> = parts.collect();
    s.len() <= 128
        && is_slug(owner, 32)
        && !rest.is_empty()
        && rest.iter().all(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

fn is_slug(s: &str, max: usize) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && s.len() <= max
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.ends_with('-')
}

fn is_identifier(s: &str, max: usize) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z' | 'A'..='Z' | '_'))
        && s.len() <= max
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Manifest {
    /// Parses and validates manifest text.
    pub fn parse(text: &str, policy: &LimitPolicy) -> Result<Manifest, ManifestError> {
        let mut manifest: Manifest = toml::from_str(text).map_err(|e| ManifestError::Syntax(e.message().to_owned()))?;
        manifest.validate(policy)?;
        let parsed = |list: &[String]| list.iter().filter_map(|entry| InterfaceRef::parse(entry)).collect();
        manifest.provided = parsed(&manifest.provides);
        manifest.required = parsed(&manifest.requires);
        Ok(manifest)
    }

    fn validate(&self, policy: &LimitPolicy) -> Result<(), ManifestError> {
        if !is_slug(&self.id, 32) || self.id.len() < 2 {
            return Err(field("id", "must be 2-32 characters of a-z, 0-9 and '-', starting with a letter"));
        }
        if self.name.trim().is_empty() || self.name.len() > 100 {
            return Err(field("name", "must be 1-100 characters"));
        }
        if self.description.len() > 2000 {
            return Err(field("description", "must be at most 2000 characters"));
        }
        if let Some(mb) = self.limits.memory_mb
            && !(1..=policy.max_memory_mb).contains(&mb)
        {
            return Err(field(
                "limits.memory-mb",
                format!("asks for {mb} MiB; this host allows 1 to {}", policy.max_memory_mb),
            ));
        }
        if let Some(ms) = self.limits.timeout_ms
            && !(1..=policy.max_timeout_ms).contains(&ms)
        {
            return Err(field(
                "limits.timeout-ms",
                format!("asks for {ms} ms; this host allows 1 to {}", policy.max_timeout_ms),
            ));
        }
        let prefix = format!("{}.", self.id);
        for name in self.permissions.keys() {
            let rest = name.strip_prefix(&prefix).unwrap_or("");
            if rest.is_empty() || name.len() > 100 || !rest.split('.').all(|part| is_identifier(part, 40)) {
                return Err(field(
                    format!("permissions.\"{name}\""),
                    format!("permission names are `{prefix}<name>[.<name>...]` with letters, digits and '_'"),
                ));
            }
        }
        if self.collections.len() > MAX_COLLECTIONS {
            return Err(field("collections", format!("at most {MAX_COLLECTIONS} collections")));
        }
        let mut seen = BTreeSet::new();
        for c in &self.collections {
            if !is_identifier(&c.name.replace('-', "_"), 64) {
                return Err(field(
                    format!("collections.{}", c.name),
                    "collection names are letters, digits, '_' and '-'",
                ));
            }
            if !seen.insert(&c.name) {
                return Err(field(format!("collections.{}", c.name), "declared twice"));
            }
            if c.indexes.len() + c.compound_indexes.len() > MAX_INDEXES {
                return Err(field(
                    format!("collections.{}.indexes", c.name),
                    format!("at most {MAX_INDEXES} indexes, compound ones included"),
                ));
            }
            let mut fields = BTreeSet::new();
            for i in &c.indexes {
                let name = i.field();
                if !is_identifier(name, 64) || !fields.insert(name) {
                    return Err(field(
                        format!("collections.{}.indexes", c.name),
                        format!("`{name}` is not a field name or is repeated"),
                    ));
                }
            }
            let mut compounds = BTreeSet::new();
            for parts in &c.compound_indexes {
                let at = || format!("collections.{}.compound-indexes", c.name);
                if !(2..=MAX_COMPOUND_FIELDS).contains(&parts.len()) {
                    return Err(field(at(), format!("a compound index has 2 to {MAX_COMPOUND_FIELDS} fields")));
                }
                for (n, part) in parts.iter().enumerate() {
                    if !fields.contains(part.as_str()) {
                        return Err(field(at(), format!("`{part}` is not one of the collection's indexed fields")));
                    }
                    if parts[..n].contains(part) {
                        return Err(field(at(), format!("`{part}` appears twice in one compound index")));
                    }
                }
                if !compounds.insert(parts) {
                    return Err(field(at(), format!("[{}] is declared twice", parts.join(", "))));
                }
            }
            let at = || format!("collections.{}.search", c.name);
            if c.search.len() > MAX_SEARCH_FIELDS {
                return Err(field(at(), format!("at most {MAX_SEARCH_FIELDS} searchable fields")));
            }
            for (n, s) in c.search.iter().enumerate() {
                let path = s.field();
                let parts: Vec<&str> = path.split('.').collect();
                if parts.len() > 4 || !parts.iter().all(|p| is_identifier(p, 64)) {
                    return Err(field(at(), format!("`{path}` is not a field name or a dotted path of up to 4 names")));
                }
                if c.search[..n].iter().any(|other| other.field() == path) {
                    return Err(field(at(), format!("`{path}` is declared twice")));
                }
                if !(1..=100).contains(&s.weight()) {
                    return Err(field(at(), format!("the weight of `{path}` must be 1 to 100")));
                }
            }
        }
        if !self.collections.is_empty() && !self.capabilities.contains(&Capability::Storage) {
            return Err(field("capabilities", "declares collections but not the `storage` capability"));
        }
        if self.routes.is_empty() {
            return Err(field("routes", "a plugin must serve at least one route"));
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(field("routes", format!("at most {MAX_ROUTES} routes")));
        }
        for r in &self.routes {
            let at = || format!("routes.{} {}", r.method, r.path);
            match (r.public, r.permission.is_empty()) {
                (true, false) => {
                    return Err(field(at(), "a public route takes no permission: anyone may call it"));
                }
                (false, true) => return Err(field(at(), "a route needs a `permission` (or `public = true`)")),
                (false, false) if !self.permissions.contains_key(&r.permission) => {
                    return Err(field(
                        at(),
                        format!("permission `{}` is not declared under [permissions]", r.permission),
                    ));
                }
                _ => {}
            }
        }
        RouteTable::new(&self.routes).map_err(|e| field("routes", e))?;
        self.contracts().map_err(|(at, reason)| field(at, reason))?;
        let mut imports = BTreeSet::new();
        for i in &self.imports {
            let at = || format!("imports.{}", i.name);
            let valid = (1..=64).contains(&i.name.len())
                && i.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
            if !valid {
                return Err(field(at(), "import names are 1-64 of a-z, 0-9, '-' and '_'"));
            }
            if !imports.insert(&i.name) {
                return Err(field(at(), "declared twice"));
            }
            if !self.permissions.contains_key(&i.permission) {
                return Err(field(at(), format!("permission `{}` is not declared under [permissions]", i.permission)));
            }
        }
        for (i, m) in self.migrations.iter().enumerate() {
            if m.from.matches(&self.version) {
                return Err(field(
                    format!("migrations[{i}].from"),
                    format!("`{}` matches this version itself", m.from),
                ));
            }
            if !self.capabilities.contains(&Capability::Storage) {
                return Err(field("capabilities", "declares migrations but not the `storage` capability they rewrite"));
            }
        }
        settings::validate(&self.settings).map_err(|(at, reason)| field(at, reason))?;
        if !self.settings.is_empty() && !self.capabilities.contains(&Capability::Config) {
            return Err(field("capabilities", "declares settings but not the `config` capability that reads them"));
        }
        views::validate(&self.views, &self.routes).map_err(|(at, reason)| field(at, reason))?;
        self.validate_background()?;
        Ok(())
    }

    /// Each route's compiled contract, in the order of `routes`: what the host checks before
    /// the plugin runs. Errors name the manifest field at fault.
    pub fn contracts(&self) -> Result<Vec<schema::RouteContract>, (String, String)> {
        let mut compiler = schema::Compiler::new(&self.schemas)?;
        let mut contracts = Vec::with_capacity(self.routes.len());
        for r in &self.routes {
            let at = format!("routes.{} {}", r.method, r.path);
            let pattern = RoutePattern::parse(&r.path).map_err(|e| (at.clone(), e))?;
            if r.method == "GET" && r.path == "/openapi.json" {
                return Err((at, "the host serves each plugin's OpenAPI document at GET /openapi.json".into()));
            }
            let names = pattern.param_names();
            for name in r.params.keys() {
                if !names.contains(&name.as_str()) {
                    return Err((format!("{at}.params"), format!("`{name}` is not a parameter of the path")));
                }
            }
            let params = if r.params.is_empty() {
                None
            } else {
                let object = serde_json::json!({ "type": "object", "properties": r.params });
                Some(compiler.schema(&object, &format!("{at}.params"), &self.schemas)?)
            };
            let query = match &r.query {
                None => None,
                Some(q) => {
                    if q.get("type").and_then(|t| t.as_str()) != Some("object")
                        || !q.get("properties").is_some_and(|p| p.is_object())
                    {
                        return Err((
                            format!("{at}.query"),
                            "the query is an object schema: `type = \"object\"` and its `properties`".into(),
                        ));
                    }
                    Some(compiler.schema(q, &format!("{at}.query"), &self.schemas)?)
                }
            };
            let input = match &r.input {
                Some(_) if !matches!(r.method.as_str(), "POST" | "PUT" | "PATCH") => {
                    return Err((format!("{at}.input"), format!("a {} request has no body to describe", r.method)));
                }
                Some(i) => Some(compiler.schema(i, &format!("{at}.input"), &self.schemas)?),
                None => None,
            };
            let output = match &r.output {
                Some(o) => Some(compiler.schema(o, &format!("{at}.output"), &self.schemas)?),
                None => None,
            };
            match r.status {
                Some(204) if r.output.is_some() => {
                    return Err((format!("{at}.status"), "a 204 answer has no body for `output` to describe".into()));
                }
                Some(s) if !(200..=299).contains(&s) => {
                    return Err((format!("{at}.status"), "the success status is 200 to 299".into()));
                }
                _ => {}
            }
            if r.summary.len() > 200 || r.description.len() > 4000 {
                return Err((at, "`summary` is at most 200 characters, `description` 4000".into()));
            }
            contracts.push(schema::RouteContract { params, query, input, output });
        }
        Ok(contracts)
    }

    fn validate_background(&self) -> Result<(), ManifestError> {
        if self.schedules.len() > MAX_SCHEDULES {
            return Err(field("schedules", format!("at most {MAX_SCHEDULES} schedules")));
        }
        let mut names = BTreeSet::new();
        for s in &self.schedules {
            if !is_job_name(&s.name) {
                return Err(field(format!("schedules.{}", s.name), "names are 1-64 of a-z, 0-9, '-', '_' and '.'"));
            }
            if !names.insert(&s.name) {
                return Err(field(format!("schedules.{}", s.name), "declared twice"));
            }
            crate::jobs::cron::CronSchedule::parse(&s.cron, &s.timezone)
                .map_err(|e| field(format!("schedules.{}", s.name), e.to_string()))?;
        }
        if self.subscriptions.len() > MAX_SUBSCRIPTIONS {
            return Err(field("subscriptions", format!("at most {MAX_SUBSCRIPTIONS} subscriptions")));
        }
        let mut topics = BTreeSet::new();
        for s in &self.subscriptions {
            if !is_topic(&s.topic) {
                return Err(field(
                    format!("subscriptions.{}", s.topic),
                    "topics are `<plugin-id>.<name>[.<name>...]` with a-z, 0-9, '-' and '_'",
                ));
            }
            if !topics.insert(&s.topic) {
                return Err(field(format!("subscriptions.{}", s.topic), "declared twice"));
            }
        }
        for (field_name, list) in [("provides", &self.provides), ("requires", &self.requires)] {
            let mut seen = BTreeSet::new();
            for entry in list {
                let parsed = InterfaceRef::parse(entry).ok_or_else(|| {
                    field(
                        format!("{field_name}.\"{entry}\""),
                        "department interfaces are `namespace:package/interface@x.y.z` (not keel:platform or wasi)",
                    )
                })?;
                if !seen.insert(parsed.name.clone()) {
                    return Err(field(format!("{field_name}.\"{entry}\""), "interface listed twice"));
                }
            }
        }
        if !(1..=100).contains(&self.retry.max_attempts) {
            return Err(field("retry.max-attempts", "must be 1 to 100"));
        }
        if !(1..=3_600_000).contains(&self.retry.backoff_ms) {
            return Err(field("retry.backoff-ms", "must be 1 ms to one hour"));
        }
        Ok(())
    }

    /// The interfaces in `provides`, parsed (validated at parse time).
    pub fn provided(&self) -> &[InterfaceRef] {
        &self.provided
    }

    /// The interfaces in `requires`, parsed (validated at parse time).
    pub fn required(&self) -> &[InterfaceRef] {
        &self.required
    }

    /// Whether the plugin calls other departments (and its calls then cannot be repeated
    /// after a lost race: the providers' writes are committed already).
    pub fn calls_departments(&self) -> bool {
        !self.required.is_empty()
    }

    /// Whether the host will call the plugin's `worker` export, which it then must have.
    pub fn needs_worker(&self) -> bool {
        !self.schedules.is_empty() || !self.subscriptions.is_empty() || self.capabilities.contains(&Capability::Jobs)
    }

    /// The effective memory cap in bytes.
    pub fn memory_bytes(&self, policy: &LimitPolicy) -> usize {
        self.limits.memory_mb.unwrap_or(policy.default_memory_mb) as usize * 1024 * 1024
    }

    /// The effective time limit per request.
    pub fn timeout(&self, policy: &LimitPolicy) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.limits.timeout_ms.unwrap_or(policy.default_timeout_ms)))
    }

    /// Declared collections and their indexes.
    pub fn collection_indexes(&self) -> BTreeMap<String, CollectionIndexes> {
        self.collections.iter().map(|c| (c.name.clone(), c.indexes())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn policy() -> LimitPolicy {
        LimitPolicy { max_memory_mb: 256, max_timeout_ms: 30_000, default_memory_mb: 64, default_timeout_ms: 5_000 }
    }

    const GOOD: &str = r#"
        id = "helpdesk"
        version = "1.2.3"
        name = "Helpdesk"
        capabilities = ["storage", "log"]
        [limits]
        memory-mb = 32
        [permissions]
        "helpdesk.ticket.read" = "Read tickets"
        [[collections]]
        name = "tickets"
        indexes = ["status"]
        [[routes]]
        method = "GET"
        path = "/tickets/{id}"
        permission = "helpdesk.ticket.read"
    "#;

    fn with(replace: &str, by: &str) -> Result<Manifest, ManifestError> {
        assert!(GOOD.contains(replace), "test setup: `{replace}` not in the sample");
        Manifest::parse(&GOOD.replace(replace, by), &policy())
    }

    fn refused_field(result: Result<Manifest, ManifestError>) -> String {
        match result {
            Err(ManifestError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn route_contracts_are_checked_at_install_naming_the_field() {
        let route = |extra: &str| {
            let text = GOOD.replacen("[[routes]]", &format!("[schemas.Id]\ntype = \"integer\"\n\n[[routes]]"), 1);
            let at = text.find("path = \"/tickets/{id}\"").expect("GOOD has the route");
            let end = at + "path = \"/tickets/{id}\"".len();
            Manifest::parse(&format!("{}\n{extra}{}", &text[..end], &text[end..]), &policy())
        };
        let contracts = route(r##"params.id = { "$ref" = "#/schemas/Id" }"##).unwrap().contracts().unwrap();
        assert!(contracts.iter().any(|c| c.params.is_some()));
        for (extra, at) in [
            (r#"params.number = { type = "integer" }"#, "params"),
            (r#"input = { type = "object" }"#, "input"),
            (r#"query = { type = "string" }"#, "query"),
            (r#"output = { type = "objet" }"#, "output.type"),
            (r##"output = { "$ref" = "#/schemas/Nope" }"##, "output.$ref"),
            ("status = 302", "status"),
        ] {
            let refused = refused_field(route(extra));
            assert!(refused.ends_with(at), "{extra}: refused at {refused}");
        }
        let reserved = GOOD.replacen("path = \"/tickets/{id}\"", "path = \"/openapi.json\"", 1);
        assert!(refused_field(Manifest::parse(&reserved, &policy())).starts_with("routes.GET /openapi.json"));
    }

    #[test]
    fn schemas_as_the_sdk_derives_them_are_accepted() {
        // What `keel_sdk::schema::Schemas::to_toml` writes for two serde types (its own test
        // derives the same text).
        let derived = r##"
[schemas.Line]
additionalProperties = false
properties = { item = { type = "string" }, qty = { maximum = 4294967295, minimum = 1, type = "integer" } }
required = ["qty", "item"]
type = "object"

[schemas.Order]
additionalProperties = false
properties = { buyer = { description = "Who ordered.", maxLength = 100, minLength = 1, type = "string" }, lines = { items = { "$ref" = "#/schemas/Line" }, type = "array" }, note = { type = ["string", "null"] }, rush = { default = false, type = "boolean" } }
required = ["buyer", "lines"]
type = "object"
"##;
        let text = GOOD.replace("[[routes]]", &format!("{derived}\n[[routes]]"));
        let m = Manifest::parse(&text, &policy()).unwrap();
        assert_eq!(m.schemas.len(), 2);
        let mut compiler = schema::Compiler::new(&m.schemas).unwrap();
        let order = compiler.schema(&serde_json::json!({"$ref": "#/schemas/Order"}), "t", &m.schemas).unwrap();
        let fine = serde_json::json!({"buyer": "Ada", "lines": [{"qty": 2, "item": "pen"}], "note": null});
        assert!(order.check(&fine, 100).is_empty());
        let bad = serde_json::json!({"buyer": "", "lines": [{"qty": 0, "item": "pen"}]});
        assert_eq!(order.check(&bad, 100).len(), 2);
    }

    #[test]
    fn the_helpdesk_describes_every_route() {
        let text = include_str!("../../../plugins/helpdesk/plugin.toml");
        let m = Manifest::parse(text, &policy()).unwrap();
        let contracts = m.contracts().unwrap();
        for (route, contract) in m.routes.iter().zip(&contracts) {
            assert!(contract.output.is_some() && !route.summary.is_empty(), "{} {}", route.method, route.path);
            let has_body = matches!(route.method.as_str(), "POST" | "PUT" | "PATCH");
            assert_eq!(contract.input.is_some(), has_body, "{} {}", route.method, route.path);
        }
    }

    #[test]
    fn a_good_manifest_parses_with_its_limits() {
        let m = Manifest::parse(GOOD, &policy()).unwrap();
        assert_eq!(m.version, semver::Version::new(1, 2, 3));
        assert_eq!(m.memory_bytes(&policy()), 32 << 20);
        assert_eq!(m.timeout(&policy()).as_millis(), 5_000);
        let tickets = &m.collection_indexes()["tickets"];
        assert_eq!(tickets.fields.get("status"), Some(&IndexType::Text));
        assert!(tickets.compound.is_empty());
    }

    #[test]
    fn indexes_take_types_and_compounds_of_declared_fields() {
        let typed = r#"indexes = ["status", { field = "opened", type = "datetime" }, { field = "cost", type = "decimal" }]
        compound-indexes = [["status", "opened"]]"#;
        let m = with(r#"indexes = ["status"]"#, typed).unwrap();
        let tickets = &m.collection_indexes()["tickets"];
        assert_eq!(tickets.fields["opened"], IndexType::Datetime);
        assert_eq!(tickets.fields["cost"], IndexType::Decimal);
        assert_eq!(tickets.compound, [vec!["status".to_string(), "opened".to_string()]]);

        for (bad, why) in [
            (r#"indexes = [{ field = "opened", type = "timestamp" }]"#, "unknown type"),
            (r#"indexes = [{ field = "opened" }]"#, "no type"),
            (r#"indexes = ["status", { field = "status", type = "string" }]"#, "a field twice"),
        ] {
            let refused = with(r#"indexes = ["status"]"#, bad);
            assert!(refused.is_err(), "{why}: {refused:?}");
        }
        let field = |compound: &str| {
            refused_field(with(r#"indexes = ["status"]"#, &format!("indexes = [\"status\", \"owner\"]\n{compound}")))
        };
        assert_eq!(field(r#"compound-indexes = [["status"]]"#), "collections.tickets.compound-indexes");
        assert_eq!(field(r#"compound-indexes = [["status", "colour"]]"#), "collections.tickets.compound-indexes");
        assert_eq!(field(r#"compound-indexes = [["status", "status"]]"#), "collections.tickets.compound-indexes");
        assert_eq!(
            field(r#"compound-indexes = [["status", "owner"], ["status", "owner"]]"#),
            "collections.tickets.compound-indexes"
        );
    }

    #[test]
    fn bad_ids_versions_and_limits_are_refused_naming_the_field() {
        assert_eq!(refused_field(with(r#"id = "helpdesk""#, r#"id = "Help Desk""#)), "id");
        assert!(matches!(with(r#"version = "1.2.3""#, r#"version = "1.2""#), Err(ManifestError::Syntax(_))));
        assert_eq!(refused_field(with("memory-mb = 32", "memory-mb = 4096")), "limits.memory-mb");
        assert!(matches!(
            with(r#"name = "Helpdesk""#, "name = \"Helpdesk\"\nsurprise = 1"),
            Err(ManifestError::Syntax(_))
        ));
    }

    #[test]
    fn routes_need_declared_permissions_and_valid_patterns() {
        assert!(
            refused_field(with(r#"permission = "helpdesk.ticket.read""#, r#"permission = "helpdesk.ticket.write""#))
                .starts_with("routes.")
        );
        assert_eq!(refused_field(with(r#"path = "/tickets/{id}""#, r#"path = "tickets""#)), "routes");
        assert_eq!(refused_field(with(r#"method = "GET""#, r#"method = "BREW""#)), "routes");
    }

    #[test]
    fn a_public_route_takes_no_permission_and_every_other_route_takes_one() {
        let public = with(r#"permission = "helpdesk.ticket.read""#, "public = true").unwrap();
        assert!(public.routes[0].public && public.routes[0].permission.is_empty());
        let both =
            with(r#"permission = "helpdesk.ticket.read""#, "permission = \"helpdesk.ticket.read\"\npublic = true");
        assert!(refused_field(both).starts_with("routes."));
        let neither = with(r#"permission = "helpdesk.ticket.read""#, "public = false");
        assert!(refused_field(neither).starts_with("routes."));
    }

    #[test]
    fn permissions_must_carry_the_plugin_prefix() {
        assert!(
            refused_field(with(r#""helpdesk.ticket.read" = "Read tickets""#, r#""payroll.run" = "x""#))
                .starts_with("permissions.")
        );
    }

    #[test]
    fn schedules_subscriptions_and_retry_are_validated_naming_the_field() {
        let background = |extra: &str| Manifest::parse(&format!("{GOOD}\n{extra}"), &policy());
        let m = background(
            "[[schedules]]\nname = \"nightly\"\ncron = \"0 2 * * *\"\ntimezone = \"Europe/Paris\"\n\
             [[subscriptions]]\ntopic = \"hr.employee.hired\"\n[retry]\nmax-attempts = 3",
        )
        .unwrap();
        assert!(m.needs_worker());
        assert_eq!((m.retry.max_attempts, m.retry.backoff_ms), (3, 1_000));
        assert!(!Manifest::parse(GOOD, &policy()).unwrap().needs_worker());
        assert_eq!(
            refused_field(background("[[schedules]]\nname = \"nightly\"\ncron = \"0 25 * * *\"")),
            "schedules.nightly"
        );
        assert_eq!(
            refused_field(background("[[schedules]]\nname = \"n\"\ncron = \"@daily\"\ntimezone = \"Nowhere/City\"")),
            "schedules.n"
        );
        assert_eq!(refused_field(background("[[subscriptions]]\ntopic = \"no-dot\"")), "subscriptions.no-dot");
        assert_eq!(refused_field(background("[retry]\nmax-attempts = 0")), "retry.max-attempts");
    }

    #[test]
    fn interfaces_parse_and_match_by_semver() {
        let r = |s: &str| InterfaceRef::parse(s).unwrap();
        assert!(r("keel:hr/directory@0.1.3").satisfies(&r("keel:hr/directory@0.1.0")));
        assert!(!r("keel:hr/directory@0.1.0").satisfies(&r("keel:hr/directory@0.1.3")), "older than required");
        assert!(!r("keel:hr/directory@0.2.0").satisfies(&r("keel:hr/directory@0.1.0")), "0.x minors are breaking");
        assert!(r("keel:hr/directory@1.4.0").satisfies(&r("keel:hr/directory@1.2.0")));
        assert!(!r("keel:hr/directory@2.0.0").satisfies(&r("keel:hr/directory@1.2.0")));
        assert!(!r("keel:hr/people@0.1.0").satisfies(&r("keel:hr/directory@0.1.0")));
        for bad in ["keel:hr/directory", "hr/directory@0.1.0", "keel:platform/storage@0.1.0", "wasi:io/streams@0.2.0"] {
            assert!(InterfaceRef::parse(bad).is_none(), "{bad}");
        }
        // Top-level keys go before the sample's tables.
        let with = |extra: &str| Manifest::parse(&format!("{extra}\n{GOOD}"), &policy());
        assert_eq!(with("provides = [\"keel:hr/directory@0.1.0\"]").unwrap().provided().len(), 1);
        assert_eq!(refused_field(with("requires = [\"keel:hr/directory\"]")), "requires.\"keel:hr/directory\"");
    }

    #[test]
    fn collections_require_the_storage_capability() {
        assert_eq!(
            refused_field(with(r#"capabilities = ["storage", "log"]"#, r#"capabilities = ["log"]"#)),
            "capabilities"
        );
    }

    /// Migrations name the versions they migrate from, never the version itself.
    #[test]
    fn migrations_name_earlier_versions_and_need_storage() {
        let with_migrations = |text: &str| {
            let manifest = format!("{GOOD}\n{text}");
            Manifest::parse(&manifest, &policy())
        };
        let m = with_migrations("[[migrations]]\nfrom = \"<1.2.0\"\ndown = true").unwrap();
        let (old, new) = (semver::Version::new(1, 1, 9), semver::Version::new(1, 2, 0));
        assert!(m.migrations[0].covers(&old) && !m.migrations[0].covers(&new) && m.migrations[0].down);
        assert_eq!(refused_field(with_migrations("[[migrations]]\nfrom = \"^1\"")), "migrations[0].from");
        assert!(matches!(with_migrations("[[migrations]]\nfrom = \"soon\""), Err(ManifestError::Syntax(_))));
        assert!(matches!(with_migrations("[[migrations]]\nfrom = \"^0\"\nup = true"), Err(ManifestError::Syntax(_))));
    }
}

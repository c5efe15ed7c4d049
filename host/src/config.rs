//! Server configuration: one typed struct, loaded once from an optional TOML file and then
//! overridden by command-line flags and environment variables.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Database, compiled-component cache and other state live here.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Compiled components; defaults to `<data-dir>/compiled`.
    pub cache_dir: Option<PathBuf>,
    /// Plugin artifacts (`*.wasm`) installed (or upgraded) at start.
    pub plugins_dir: Option<PathBuf>,
    pub database: DatabaseConfig,
    pub limits: LimitsConfig,
    pub jobs: JobsConfig,
    pub quotas: QuotasConfig,
    pub http: HttpConfig,
    pub signatures: SignaturesConfig,
    /// Serve `POST /v1/admin/clock/advance`, which moves the host clock forward for every
    /// plugin and schedule. For tests and demos; never on a production host.
    pub allow_clock_control: bool,
    /// Start the host clock at this reading (ms since the epoch) and let it move only when
    /// advanced, so tests of time-based rules assert exact bounds. Needs
    /// `allow_clock_control`; set from code (tests), never from a file.
    #[serde(skip)]
    pub frozen_clock_at: Option<i64>,
    /// Tests only (set from code): every storage read of a plugin first waits this long,
    /// standing in for a slow database.
    #[serde(skip)]
    pub storage_read_delay_ms: u64,
}

/// The background worker: jobs, schedules and event deliveries.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct JobsConfig {
    /// Run background work in this process (replicas that only serve HTTP may turn it off).
    pub enabled: bool,
    /// How often to look for due work when nothing signals it sooner (ms).
    pub poll_interval_ms: u64,
    /// How long a claimed job stays with its worker before another may take it over (ms);
    /// must exceed limits.max-timeout-ms.
    pub lease_ms: u64,
    /// Background calls that may run at once.
    pub concurrency: usize,
    /// Background calls of one tenant that may run at once (default: one fewer than
    /// `concurrency`, at least 1), so another tenant's work always finds a free slot.
    pub tenant_concurrency: Option<usize>,
    /// Jobs (and event deliveries) one plugin may have queued in one tenant; enqueuing more
    /// is refused with `too-many-jobs`.
    pub max_queued_per_plugin: u32,
    /// How long a chain of jobs enqueued by jobs may grow (a job that enqueues itself
    /// forever is stopped here).
    pub max_chain: u32,
    /// Chunks one task may run: the chunk that would need one more (asking for chunk N + 1)
    /// is dead-lettered, unsaved, and the task shows `failed` (raise the limit and retry that
    /// chunk to go on); a task that keeps asking thus commits N - 1. Stops a
    /// task that never stops asking for another chunk.
    pub max_task_chunks: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            enabled: true,
            poll_interval_ms: 250,
            lease_ms: 60_000,
            concurrency: 4,
            tenant_concurrency: None,
            max_queued_per_plugin: 10_000,
            max_chain: 1_000,
            max_task_chunks: 100_000,
        }
    }
}

impl JobsConfig {
    pub fn tenant_concurrency(&self) -> usize {
        self.tenant_concurrency.unwrap_or(self.concurrency.saturating_sub(1)).clamp(1, self.concurrency.max(1))
    }
}

/// Storage every tenant gets unless a platform admin sets its own (`PUT
/// /v1/tenants/{tenant}/quotas`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct QuotasConfig {
    /// Documents one tenant may store, over all its plugins.
    pub tenant_documents: u64,
    /// Bytes (keys and bodies) one tenant may store, in MiB.
    pub tenant_mb: u64,
    /// Documents one plugin may store in one tenant.
    pub plugin_documents: u64,
    /// Bytes one plugin may store in one tenant, in MiB.
    pub plugin_mb: u64,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        QuotasConfig { tenant_documents: 2_000_000, tenant_mb: 2048, plugin_documents: 1_000_000, plugin_mb: 1024 }
    }
}

/// Where state lives: the embedded SQLite file by default, or a PostgreSQL server that
/// several hosts share.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://<path>` or `postgres://user:password@host:port/database`; defaults to
    /// `sqlite://<data-dir>/keel.db`.
    pub url: Option<String>,
    /// PostgreSQL: connections this host keeps at most. One tenant's storage work holds at
    /// most half of them, less two kept for the platform's own work (7 of the default 16).
    pub max_connections: u32,
    /// PostgreSQL: how long a request waits for a free connection, or for a database that is
    /// away to come back, before it is answered 503 (default 3 s, under the default plugin
    /// timeout).
    pub acquire_timeout_ms: u64,
    /// PostgreSQL: the longest a single statement may run (plugin queries stop earlier, at
    /// the calling plugin's deadline).
    pub statement_timeout_ms: u64,
    /// PostgreSQL: the longest a host goes without looking whether another host changed
    /// plugins, enablement, grants, tokens or settings (it is normally woken at once).
    pub change_poll_ms: u64,
}

/// Publisher signatures on plugin artifacts (see `signing`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SignaturesConfig {
    /// Refuse every install (uploads and bundled plugins) not signed by a trusted key.
    pub required: bool,
    /// Publisher keys trusted from this file, by name: `acme = "ed25519:..."`. Platform
    /// admins trust more over the API; these cannot be removed there.
    pub trusted_keys: std::collections::BTreeMap<String, String>,
}

impl SignaturesConfig {
    /// The policy, with every key parsed; the first bad name or key is the error.
    pub fn policy(&self) -> Result<crate::signing::SignaturePolicy, ConfigError> {
        let mut configured = Vec::with_capacity(self.trusted_keys.len());
        for (name, key) in &self.trusted_keys {
            if !crate::signing::valid_key_name(name) {
                return Err(ConfigError::Invalid(format!(
                    "signatures.trusted-keys: `{name}` is not a key name (a-z, 0-9, '-', '.', starting with a letter)"
                )));
            }
            let public_key =
                key.parse().map_err(|e| ConfigError::Invalid(format!("signatures.trusted-keys.{name}: {e}")))?;
            configured.push(crate::signing::TrustedKey {
                name: name.clone(),
                public_key,
                source: "config",
                added_at: None,
                added_by: None,
            });
        }
        Ok(crate::signing::SignaturePolicy { required: self.required, configured })
    }
}

/// How plugin responses meet browsers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct HttpConfig {
    /// Plugins whose own CORS headers (`access-control-*`) are passed on; every other
    /// plugin's are dropped, so no plugin can open the platform's origin to other sites.
    pub cors_plugins: Vec<String>,
    /// Reverse proxies in front of the server: for a connection from one of them, the
    /// client address of a public route is the last `X-Forwarded-For` address that is not
    /// one of them (from anyone else the header is ignored, since clients can forge it).
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct LimitsConfig {
    /// Memory a plugin may ask for, at most (MiB).
    pub max_memory_mb: u32,
    /// Memory of a plugin that does not say (MiB).
    pub default_memory_mb: u32,
    /// Time per request a plugin may ask for, at most (ms).
    pub max_timeout_ms: u32,
    /// Time per request of a plugin that does not say (ms).
    pub default_timeout_ms: u32,
    /// Largest request body for a plugin route.
    pub max_body_bytes: usize,
    /// Largest plugin artifact upload.
    pub max_artifact_bytes: usize,
    /// Largest stored document.
    pub max_document_bytes: usize,
    /// Plugin instances that may run at once (sizes the instance pool).
    pub max_concurrent_instances: u32,
    /// Instances one tenant may hold at once (default: half of those requests may use).
    pub max_instances_per_tenant: Option<u32>,
    /// Instances one plugin may hold at once over all tenants (default: three quarters).
    pub max_instances_per_plugin: Option<u32>,
    /// Memory all running calls may reserve together (MiB): each reserves its plugin's
    /// memory cap plus what the host may buffer for it. The ceiling of plugin memory.
    pub instance_memory_mb: u64,
    /// Of that, what one tenant's calls may reserve (MiB; default half).
    pub tenant_instance_memory_mb: Option<u64>,
    /// How long a request waits for a free instance of its share before 429/503 (ms).
    pub admission_wait_ms: u64,
    /// Long-running calls (past their first 5 ms slice) of one tenant that execute at once.
    pub tenant_cpu_lanes: u32,
    /// Bytes one call may write (documents, events and jobs together): bounds what the host
    /// buffers for a call and how long its commit holds the database's writer.
    pub max_commit_bytes: usize,
    /// Bytes one storage read (a page of a query) may return; a page stops short of it.
    pub max_read_bytes: usize,
    /// Bytes of response headers a plugin may send (names and values together).
    pub max_response_header_bytes: usize,
    /// Requests per second each token may sustain (0: no limit).
    pub rate_limit_per_second: u32,
    /// Requests a token may make in a burst above that rate.
    pub rate_limit_burst: u32,
    /// Requests per minute one client address (an IPv6 /64) may make to one tenant's public
    /// routes (web forms; 0: no limit), and in a burst above that.
    pub public_rate_per_minute: u32,
    pub public_rate_burst: u32,
    /// Requests per minute all clients together may make to one tenant's public routes, and
    /// in a burst: a flood from many addresses stays within what the tenant can absorb.
    pub public_tenant_rate_per_minute: u32,
    pub public_tenant_rate_burst: u32,
    /// Largest request body of a public route.
    pub max_public_body_bytes: usize,
    /// Longest time any request may take end to end (ms).
    pub request_timeout_ms: u64,
    /// Largest file a bulk import may upload (bytes).
    pub max_import_bytes: usize,
    /// Most rows one bulk import may have; all are committed in one transaction.
    pub max_import_rows: usize,
    /// How deep calls between plugins may nest (A calls B calls C is 2); deeper calls, and
    /// so cycles, get `unavailable`.
    pub max_call_depth: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(".keel"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cache_dir: None,
            plugins_dir: None,
            database: DatabaseConfig::default(),
            limits: LimitsConfig::default(),
            jobs: JobsConfig::default(),
            quotas: QuotasConfig::default(),
            http: HttpConfig::default(),
            signatures: SignaturesConfig::default(),
            allow_clock_control: false,
            frozen_clock_at: None,
            storage_read_delay_ms: 0,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        let pool = crate::backend::postgres::PoolSettings::default();
        DatabaseConfig {
            url: None,
            max_connections: pool.max_connections,
            acquire_timeout_ms: pool.acquire_timeout.as_millis() as u64,
            statement_timeout_ms: pool.statement_timeout.as_millis() as u64,
            change_poll_ms: 1_000,
        }
    }
}

impl Config {
    /// The database URL this host opens.
    pub fn database_url(&self) -> String {
        self.database.url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("keel.db").display()))
    }

    /// The PostgreSQL pool's sizing and limits.
    pub fn pool_settings(&self) -> crate::backend::postgres::PoolSettings {
        crate::backend::postgres::PoolSettings {
            max_connections: self.database.max_connections,
            acquire_timeout: std::time::Duration::from_millis(self.database.acquire_timeout_ms),
            statement_timeout: std::time::Duration::from_millis(self.database.statement_timeout_ms),
            connect_tries: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_memory_mb: 256,
            default_memory_mb: 64,
            max_timeout_ms: 30_000,
            default_timeout_ms: 5_000,
            max_body_bytes: 1 << 20,
            max_artifact_bytes: 64 << 20,
            max_import_bytes: 32 << 20,
            max_import_rows: 100_000,
            max_document_bytes: 1 << 20,
            max_concurrent_instances: 128,
            max_instances_per_tenant: None,
            max_instances_per_plugin: None,
            instance_memory_mb: 4096,
            tenant_instance_memory_mb: None,
            admission_wait_ms: 250,
            tenant_cpu_lanes: 1,
            max_commit_bytes: 8 << 20,
            max_read_bytes: 4 << 20,
            max_response_header_bytes: 64 << 10,
            rate_limit_per_second: 50,
            rate_limit_burst: 200,
            public_rate_per_minute: 10,
            public_rate_burst: 5,
            public_tenant_rate_per_minute: 600,
            public_tenant_rate_burst: 100,
            max_public_body_bytes: 64 << 10,
            request_timeout_ms: 60_000,
            max_call_depth: 4,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file `{path}`: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML config file (every key optional).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.message().to_owned() })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let d = &self.database;
        if d.max_connections == 0 || d.acquire_timeout_ms == 0 || d.statement_timeout_ms == 0 || d.change_poll_ms == 0 {
            return Err(ConfigError::Invalid(
                "database.max-connections, acquire-timeout-ms, statement-timeout-ms and change-poll-ms must be at least 1"
                    .into(),
            ));
        }
        self.signatures.policy()?;
        if self.frozen_clock_at.is_some() && !self.allow_clock_control {
            return Err(ConfigError::Invalid("a frozen clock needs allow-clock-control".into()));
        }
        if l.default_memory_mb == 0 || l.default_memory_mb > l.max_memory_mb {
            return Err(ConfigError::Invalid("limits.default-memory-mb must be 1..=max-memory-mb".into()));
        }
        if l.default_timeout_ms == 0 || l.default_timeout_ms > l.max_timeout_ms {
            return Err(ConfigError::Invalid("limits.default-timeout-ms must be 1..=max-timeout-ms".into()));
        }
        if l.rate_limit_per_second > 0 && l.rate_limit_burst == 0 {
            return Err(ConfigError::Invalid(
                "limits.rate-limit-burst must be at least 1 when rate limiting is on".into(),
            ));
        }
        if (l.public_rate_per_minute > 0 && l.public_rate_burst == 0)
            || (l.public_tenant_rate_per_minute > 0 && l.public_tenant_rate_burst == 0)
        {
            return Err(ConfigError::Invalid(
                "limits.public-rate-burst and public-tenant-rate-burst must be at least 1 when their rate is on".into(),
            ));
        }
        if u64::from(l.max_timeout_ms) >= l.request_timeout_ms {
            return Err(ConfigError::Invalid("limits.request-timeout-ms must exceed limits.max-timeout-ms".into()));
        }
        if self.jobs.lease_ms <= u64::from(l.max_timeout_ms) {
            return Err(ConfigError::Invalid("jobs.lease-ms must exceed limits.max-timeout-ms".into()));
        }
        if self.jobs.concurrency == 0 || self.jobs.poll_interval_ms == 0 {
            return Err(ConfigError::Invalid("jobs.concurrency and jobs.poll-interval-ms must be at least 1".into()));
        }
        if l.max_concurrent_instances < 2 {
            return Err(ConfigError::Invalid("limits.max-concurrent-instances must be at least 2".into()));
        }
        let admission = self.admission();
        if l.max_instances_per_tenant
            .is_some_and(|n| n == 0 || n > admission.instances - admission.background_instances)
        {
            return Err(ConfigError::Invalid(
                "limits.max-instances-per-tenant must be 1..=(max-concurrent-instances - jobs.concurrency)".into(),
            ));
        }
        if l.max_instances_per_plugin.is_some_and(|n| n == 0 || n > l.max_concurrent_instances) {
            return Err(ConfigError::Invalid(
                "limits.max-instances-per-plugin must be 1..=max-concurrent-instances".into(),
            ));
        }
        let largest_call = (u64::from(l.max_memory_mb) << 20) + (l.max_commit_bytes + l.max_read_bytes) as u64;
        if admission.tenant_memory_bytes < largest_call || admission.tenant_memory_bytes > admission.memory_bytes {
            return Err(ConfigError::Invalid(format!(
                "limits.tenant-instance-memory-mb must hold the largest call ({} MiB: max-memory-mb plus \
                 max-commit-bytes and max-read-bytes) and not exceed instance-memory-mb",
                largest_call >> 20
            )));
        }
        if l.admission_wait_ms >= l.request_timeout_ms || l.tenant_cpu_lanes == 0 {
            return Err(ConfigError::Invalid(
                "limits.admission-wait-ms must be below request-timeout-ms and tenant-cpu-lanes at least 1".into(),
            ));
        }
        if l.max_commit_bytes < l.max_document_bytes || l.max_read_bytes < l.max_document_bytes {
            return Err(ConfigError::Invalid(
                "limits.max-commit-bytes and max-read-bytes must be at least max-document-bytes".into(),
            ));
        }
        if self.jobs.max_queued_per_plugin == 0 || self.jobs.max_chain == 0 || self.jobs.max_task_chunks == 0 {
            return Err(ConfigError::Invalid(
                "jobs.max-queued-per-plugin, jobs.max-chain and jobs.max-task-chunks must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The admission shares this configuration asks for.
    pub fn admission(&self) -> crate::runtime::AdmissionLimits {
        let l = &self.limits;
        let background = u32::try_from(self.jobs.concurrency).unwrap_or(u32::MAX);
        let mut admission = crate::runtime::AdmissionLimits::for_pool(
            l.max_concurrent_instances,
            background,
            l.instance_memory_mb << 20,
        );
        if let Some(n) = l.max_instances_per_tenant {
            admission.tenant_instances = n;
        }
        if let Some(n) = l.max_instances_per_plugin {
            admission.plugin_instances = n;
        }
        if let Some(mb) = l.tenant_instance_memory_mb {
            admission.tenant_memory_bytes = mb << 20;
        }
        admission.wait = std::time::Duration::from_millis(l.admission_wait_ms);
        admission.tenant_cpu_lanes = l.tenant_cpu_lanes;
        admission
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| self.data_dir.join("compiled"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_keep_defaults_and_unknown_keys_are_refused() {
        let c: Config = toml::from_str("listen = \"0.0.0.0:9000\"\n[limits]\nmax-memory-mb = 512").unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.limits.max_memory_mb, 512);
        assert_eq!(c.limits.default_timeout_ms, 5_000);
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }

    #[test]
    fn inconsistent_limits_are_invalid() {
        let mut c = Config::default();
        c.limits.default_memory_mb = 1024;
        assert!(c.validate().is_err());
    }
}

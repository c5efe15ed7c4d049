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
    pub limits: LimitsConfig,
    pub jobs: JobsConfig,
    /// Serve `POST /v1/admin/clock/advance`, which moves the host clock forward for every
    /// plugin and schedule. For tests and demos; never on a production host.
    pub allow_clock_control: bool,
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
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig { enabled: true, poll_interval_ms: 250, lease_ms: 60_000, concurrency: 4 }
    }
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
    /// Requests per second each token may sustain (0: no limit).
    pub rate_limit_per_second: u32,
    /// Requests a token may make in a burst above that rate.
    pub rate_limit_burst: u32,
    /// Longest time any request may take end to end (ms).
    pub request_timeout_ms: u64,
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
            limits: LimitsConfig::default(),
            jobs: JobsConfig::default(),
            allow_clock_control: false,
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
            max_document_bytes: 1 << 20,
            max_concurrent_instances: 128,
            rate_limit_per_second: 50,
            rate_limit_burst: 200,
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
        if u64::from(l.max_timeout_ms) >= l.request_timeout_ms {
            return Err(ConfigError::Invalid("limits.request-timeout-ms must exceed limits.max-timeout-ms".into()));
        }
        if self.jobs.lease_ms <= u64::from(l.max_timeout_ms) {
            return Err(ConfigError::Invalid("jobs.lease-ms must exceed limits.max-timeout-ms".into()));
        }
        if self.jobs.concurrency == 0 || self.jobs.poll_interval_ms == 0 {
            return Err(ConfigError::Invalid("jobs.concurrency and jobs.poll-interval-ms must be at least 1".into()));
        }
        if l.max_concurrent_instances == 0 {
            return Err(ConfigError::Invalid("limits.max-concurrent-instances must be at least 1".into()));
        }
        Ok(())
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

//! Start-up and shutdown: open the database, build the runtime, load installed plugins,
//! install bundled ones, then serve HTTP.

use crate::api::{self, ApiLimits, AppState};
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::identity::TokenStore;
use crate::jobs::runner::{JobRunner, RunnerSettings};
use crate::manifest::LimitPolicy;
use crate::metrics::Metrics;
use crate::plugins::{InstallError, InstallOutcome, PluginRegistry, RegistryError};
use crate::runtime::{Runtime, RuntimeError, RuntimeSettings};
use crate::storage::StorageLimits;
use crate::tenancy::TenantStore;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot create data directory `{path}`: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Database(#[from] crate::backend::OpenError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("loading installed plugins: {0}")]
    Plugins(#[from] RegistryError),
    #[error("bundled plugin `{path}`: {source}")]
    Bundled { path: PathBuf, source: Box<InstallError> },
    #[error("cannot read bundled plugins directory `{path}`: {source}")]
    BundledDir { path: PathBuf, source: std::io::Error },
    #[error("cannot create the bootstrap token: {0}")]
    Token(crate::backend::BackendError),
    #[error("tenancy: {0}")]
    Tenancy(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// What start-up did, for the log and the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct StartupReport {
    pub plugins_loaded: usize,
    pub plugins_from_cache: usize,
    pub plugins_compiled: usize,
    pub bundled_installed: usize,
    pub elapsed: Duration,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    /// The platform-admin token created at first start; `None` on later starts.
    pub bootstrap_token: Option<String>,
    pub startup: StartupReport,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    stop_worker: tokio::sync::watch::Sender<bool>,
    worker: Option<JoinHandle<()>>,
    watcher: Option<JoinHandle<()>>,
}

impl Server {
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let started = Instant::now();
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| StartError::DataDir { path: config.data_dir.clone(), source })?;
        let quotas = &config.quotas;
        let store_settings = crate::storage::StoreSettings {
            default_quotas: crate::storage::Quotas {
                tenant_documents: quotas.tenant_documents,
                tenant_bytes: quotas.tenant_mb << 20,
                plugin_documents: quotas.plugin_documents,
                plugin_bytes: quotas.plugin_mb << 20,
            },
            max_queued_per_plugin: config.jobs.max_queued_per_plugin,
        };
        let backend =
            crate::backend::Backend::open(&config.database_url(), store_settings, &config.pool_settings()).await?;
        tracing::info!(backend = backend.database.kind(), "database open");
        let limits = &config.limits;
        let clock = Arc::new(config.frozen_clock_at.map_or_else(Clock::default, Clock::frozen));
        let runtime = Arc::new(Runtime::new(
            &RuntimeSettings {
                max_concurrent_instances: limits.max_concurrent_instances,
                max_memory_bytes: limits.max_memory_mb as usize * 1024 * 1024,
                cache_dir: Some(config.cache_dir()),
                admission: config.admission(),
            },
            clock.clone(),
        )?);
        let policy = LimitPolicy {
            max_memory_mb: limits.max_memory_mb,
            max_timeout_ms: limits.max_timeout_ms,
            default_memory_mb: limits.default_memory_mb,
            default_timeout_ms: limits.default_timeout_ms,
        };
        let registry = Arc::new(
            PluginRegistry::new(backend.catalog.clone(), runtime.clone(), policy, clock.clone())
                .with_signatures(config.signatures.policy()?),
        );
        let stats = registry.load_all().await?;

        let tokens = TokenStore::new(backend.tokens.clone(), clock.clone());
        let bootstrap = tokens.ensure_bootstrap(backend.tenancy.as_ref()).await.map_err(StartError::Token)?;
        let tenancy =
            Arc::new(TenantStore::load(backend.tenancy.clone(), clock.clone()).await.map_err(StartError::Token)?);

        let store = backend.documents.clone();
        let metrics = Arc::new(Metrics::default());
        let storage_limits = StorageLimits {
            max_document_bytes: limits.max_document_bytes,
            max_commit_bytes: limits.max_commit_bytes,
            max_read_bytes: limits.max_read_bytes,
            read_delay: Duration::from_millis(config.storage_read_delay_ms),
            ..StorageLimits::default()
        };
        let jobs = backend.jobs.clone();
        let jobs_wake = Arc::new(tokio::sync::Notify::new());
        let settings = crate::settings::SettingsStore::new(backend.settings.clone(), clock.clone());
        let calls = Arc::new(crate::calls::Calls {
            registry: registry.clone(),
            tenancy: tenancy.clone(),
            runtime: runtime.clone(),
            store: store.clone(),
            storage_limits: storage_limits.clone(),
            settings: settings.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            jobs_wake: jobs_wake.clone(),
            retry_lanes: Default::default(),
        });
        let mut bundled_installed = 0;
        if let Some(dir) = &config.plugins_dir {
            bundled_installed = install_bundled(&calls, dir).await?;
        }
        let departments = Arc::new(crate::departments::Departments {
            calls: calls.clone(),
            max_depth: limits.max_call_depth,
            max_chain: config.jobs.max_chain,
        });
        let runner = Arc::new(JobRunner::new(
            jobs.clone(),
            calls.clone(),
            RunnerSettings {
                poll_interval: Duration::from_millis(config.jobs.poll_interval_ms),
                lease: Duration::from_millis(config.jobs.lease_ms),
                concurrency: config.jobs.concurrency,
                tenant_concurrency: config.jobs.tenant_concurrency(),
                max_chain: config.jobs.max_chain,
                max_task_chunks: config.jobs.max_task_chunks,
            },
            departments.clone(),
        ));
        let state = AppState {
            registry,
            runtime,
            store,
            tokens,
            tenancy,
            audit: crate::audit::AuditLog::new(backend.audit.clone(), clock.clone()),
            users: crate::users::UserStore::new(backend.users.clone(), clock.clone()),
            settings,
            metrics,
            rate_limiter: Arc::new(crate::api::rate_limit::RateLimiter::new(
                limits.rate_limit_per_second,
                limits.rate_limit_burst,
                clock.clone(),
            )),
            public_limiter: Arc::new(crate::api::rate_limit::RateLimiter::per_minute(
                limits.public_rate_per_minute,
                limits.public_rate_burst,
                clock.clone(),
            )),
            public_tenant_limiter: Arc::new(crate::api::rate_limit::RateLimiter::per_minute(
                limits.public_tenant_rate_per_minute,
                limits.public_tenant_rate_burst,
                clock.clone(),
            )),
            trusted_proxies: Arc::new(config.http.trusted_proxies.clone()),
            database: backend.database.clone(),
            clock,
            limits: ApiLimits {
                request_timeout: Duration::from_millis(limits.request_timeout_ms),
                max_body_bytes: limits.max_body_bytes,
                max_public_body_bytes: limits.max_public_body_bytes,
                max_artifact_bytes: limits.max_artifact_bytes,
                max_import_bytes: limits.max_import_bytes,
                max_import_rows: limits.max_import_rows,
                storage: storage_limits,
                plugin_responses: crate::api::dispatch::ResponsePolicy {
                    max_header_bytes: limits.max_response_header_bytes,
                    cors_plugins: config.http.cors_plugins.clone(),
                },
            },
            jobs,
            jobs_wake,
            runner: runner.clone(),
            departments,
            clock_control: config.allow_clock_control,
            calls,
            import_lanes: Arc::default(),
        };
        let (stop_worker, worker_stop) = tokio::sync::watch::channel(false);
        let worker = config.jobs.enabled.then(|| runner.spawn(worker_stop));
        // Hosts sharing the database follow each other's changes.
        let watcher = backend.changes.clone().map(|feed| {
            crate::cluster::Watcher {
                feed,
                followers: crate::cluster::Followers {
                    tenancy: state.tenancy.clone(),
                    registry: state.registry.clone(),
                    tokens: state.tokens.clone(),
                    settings: state.settings.clone(),
                },
                poll: Duration::from_millis(config.database.change_poll_ms),
                resync: Duration::from_secs(60),
            }
            .spawn(stop_worker.subscribe())
        });
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let (shutdown, signal) = oneshot::channel::<()>();
        let app = api::router(state.clone());
        let task = tokio::spawn(async move {
            // The client's address keys the rate limit of public routes.
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async {
                    let _ = signal.await;
                })
                .await
        });
        let startup = StartupReport {
            plugins_loaded: stats.loaded,
            plugins_from_cache: stats.from_cache,
            plugins_compiled: stats.compiled,
            bundled_installed,
            elapsed: started.elapsed(),
        };
        tracing::info!(
            %addr,
            ready_ms = startup.elapsed.as_millis() as u64,
            plugins = startup.plugins_loaded,
            from_cache = startup.plugins_from_cache,
            compiled = startup.plugins_compiled,
            bundled_installed,
            "keel is ready"
        );
        Ok(Server {
            addr,
            bootstrap_token: bootstrap.map(|t| t.token),
            startup,
            state,
            shutdown: Some(shutdown),
            task,
            stop_worker,
            worker,
            watcher,
        })
    }

    /// Stops accepting connections, lets in-flight requests finish, and returns.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        // Attempts in flight finish (or reach their deadline) before the database closes.
        let _ = self.stop_worker.send(true);
        if let Some(worker) = self.worker.take() {
            let _ = worker.await;
        }
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.await;
        }
        self.state.database.close().await;
    }

    /// Serves until the process gets Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

/// Installs every `*.wasm` in `dir` that is new or newer than what is installed, with its
/// publisher's signature from `<name>.wasm.sig` beside it if there is one.
/// Newly installed bundled plugins are switched on for the default tenant; a newer bundled
/// version is rolled out to every tenant running an older one (the operator shipped it),
/// stopping at a tenant it cannot move, which keeps its version (logged).
async fn install_bundled(calls: &crate::calls::Calls, dir: &std::path::Path) -> Result<usize, StartError> {
    let (registry, tenancy) = (calls.registry.as_ref(), calls.tenancy.as_ref());
    let entries = std::fs::read_dir(dir).map_err(|source| StartError::BundledDir { path: dir.into(), source })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    paths.sort();
    let mut installed = 0;
    for path in paths {
        let bytes = std::fs::read(&path).map_err(|source| StartError::BundledDir { path: path.clone(), source })?;
        let sig_path = path.with_extension("wasm.sig");
        let signature = match std::fs::read_to_string(&sig_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(StartError::BundledDir { path: sig_path, source }),
        };
        match registry.install(bytes, signature.as_deref()).await {
            Ok((record, InstallOutcome::Unchanged)) => {
                tracing::debug!(plugin = %record.id, "bundled plugin already installed")
            }
            Ok((record, outcome)) => {
                installed += 1;
                match outcome {
                    InstallOutcome::Installed => {
                        crate::lifecycle::switch_on(registry, tenancy, crate::identity::DEFAULT_TENANT, &record.id)
                            .await
                            .map_err(|e| StartError::Tenancy(e.to_string()))?;
                    }
                    // A platform admin pinned another version: tenants stay where they are.
                    InstallOutcome::Added | InstallOutcome::Unchanged => {}
                    InstallOutcome::Upgraded => {
                        let report = crate::lifecycle::rollout(calls, &record.id, &record.version, None)
                            .await
                            .map_err(|e| StartError::Tenancy(e.to_string()))?;
                        for waiting in &report.awaiting_approval {
                            tracing::warn!(plugin = %record.id, version = %record.version, tenant = %waiting.tenant,
                                requested = ?waiting.requested, "bundled version waits for the tenant admin's approval");
                        }
                        if let Some(failed) = &report.failed {
                            tracing::warn!(plugin = %record.id, version = %record.version, tenant = %failed.tenant,
                                code = %failed.code, detail = %failed.detail, remaining = ?report.remaining,
                                "bundled version not rolled out to every tenant");
                        }
                    }
                }
                tracing::info!(plugin = %record.id, version = %record.version, ?outcome, "bundled plugin installed");
            }
            // An older bundled copy than what an admin installed is fine: keep theirs.
            Err(InstallError::Downgrade { id, active, offered }) => {
                tracing::info!(plugin = %id, %active, %offered, "keeping the installed, newer version over the bundled one");
            }
            Err(e) => return Err(StartError::Bundled { path, source: Box::new(e) }),
        }
    }
    Ok(installed)
}

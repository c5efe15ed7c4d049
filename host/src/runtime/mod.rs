//! The component runtime: one wasmtime [`Engine`] for the process, a pre-linked
//! [`PluginPre`] per installed plugin version, and a fresh [`Store`] per call.
//!
//! Architecture invariants:
//! - a call's failure (trap, deadline, memory cap) is confined to its `Store` and reported
//!   as a [`CallError`]; the engine and other calls carry on;
//! - wall time is bounded twice: epoch interruption stops guest code, and a timer around
//!   the whole call bounds time spent in host imports (epochs cannot interrupt those);
//! - the epoch ticker is an OS thread, so a busy async executor cannot stop time.

pub mod admission;
pub mod bindings;
mod cache;
pub mod compat;
mod host;
pub mod interop;
mod limits;

pub use admission::{Admission, AdmissionLimits, Lane, Refusal};
pub use host::{CallLabels, HostState};
pub use interop::Interop;
pub use limits::MemoryCapExceeded;

use crate::clock::Clock;
use crate::jobs::PendingOutbox;
use crate::manifest::InterfaceRef;
use crate::manifest::{Capability, Manifest};
use crate::storage::UnitOfWork;
use bindings::exports::keel::platform::handler::{self, Request, Response};
use bindings::exports::keel::platform::importer::{self, ImportRow, RowProblem};
pub use bindings::exports::keel::platform::migrator::{self, Direction, MigrateStep};
use bindings::exports::keel::platform::routes;
use bindings::exports::keel::platform::worker::{self, Event as WitEvent, Job as WitJob};
use bindings::keel::platform::types::{Caller, Error as WitError};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::types::ComponentFunc;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, Val};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap, UpdateDeadline};

/// The longest an upload waits for a plugin to list its routes.
const ROUTES_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the epoch advances: the resolution of deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Instances that can run at once (sizes the pooling allocator).
    pub max_concurrent_instances: u32,
    /// The largest memory any plugin may be granted, in bytes.
    pub max_memory_bytes: usize,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// How the pool, memory and CPU are shared between tenants and plugins.
    pub admission: AdmissionLimits,
}

impl RuntimeSettings {
    /// Settings with the admission shares derived from the pool size (see
    /// [`AdmissionLimits::for_pool`]): `background` instances kept for background work and
    /// 4 GiB of memory for all calls together.
    pub fn new(
        max_concurrent_instances: u32,
        max_memory_bytes: usize,
        cache_dir: Option<PathBuf>,
        background: u32,
    ) -> Self {
        RuntimeSettings {
            max_concurrent_instances,
            max_memory_bytes,
            cache_dir,
            admission: AdmissionLimits::for_pool(max_concurrent_instances, background, 4 << 30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot link host interfaces: {0}")]
    Link(String),
}

/// Why a component could not be prepared to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    #[error("the component does not compile: {0}")]
    Compile(String),
    #[error("the component does not fit the keel:platform/plugin world: {0}")]
    WorldMismatch(String),
    #[error("the component imports `{import}` but the manifest does not declare the `{capability}` capability")]
    UndeclaredCapability { import: String, capability: String },
    #[error("the component imports `{0}`, which this host does not provide")]
    UnknownImport(String),
    #[error("the component imports `{import}` but the manifest does not list it under `requires`")]
    UndeclaredRequirement { import: String },
    #[error("department function `{function}` {reason}")]
    DepartmentSignature { function: String, reason: String },
    #[error("the manifest says the plugin provides `{0}` but the component does not export it")]
    MissingProvidedExport(String),
    #[error(
        "the manifest declares background work (schedules, subscriptions or the `jobs` capability) but the component does not export `keel:platform/worker`: {0}"
    )]
    MissingWorker(String),
    #[error("the manifest declares imports but the component does not export `keel:platform/importer`: {0}")]
    MissingImporter(String),
    #[error("the manifest declares migrations but the component does not export `keel:platform/migrator`: {0}")]
    MissingMigrator(String),
}

/// Why an upload's routes check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteCheckError {
    #[error("the plugin's routes differ from its manifest: {0}")]
    Mismatch(#[from] crate::manifest::RouteMismatch),
    #[error("the plugin's `keel:platform/routes` export could not be read: {0}")]
    Unreadable(CallError),
}

/// Why a call failed. Each is confined to the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the plugin did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the plugin exceeded its memory cap of {cap} bytes")]
    MemoryLimit { cap: usize },
    #[error("the plugin trapped: {0}")]
    Trap(String),
    #[error("the plugin could not be instantiated: {0}")]
    Instantiate(String),
    /// Not started: its tenant's or plugin's share, or the platform's capacity, was in use.
    #[error("the call was not started: {0}")]
    Refused(Refusal),
}

impl CallError {
    /// A short stable label for metrics and problem codes.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout(_) => "timeout",
            CallError::MemoryLimit { .. } => "memory_limit",
            CallError::Trap(_) => "trap",
            CallError::Instantiate(_) => "instantiate",
            CallError::Refused(_) => "refused",
        }
    }
}

/// A plugin version linked and type-checked, ready to instantiate per call: the component's
/// pre-instantiation plus where its exports are.
pub struct PluginPre<T: 'static> {
    instance_pre: InstancePre<T>,
    handler: handler::GuestIndices,
    /// Present for plugins whose manifest declares background work.
    worker: Option<worker::GuestIndices>,
    /// Present for plugins whose manifest declares imports.
    importer: Option<importer::GuestIndices>,
    /// Present for plugins whose manifest declares migrations.
    migrator: Option<migrator::GuestIndices>,
    /// Present for plugins that export their router's routes (SDK builds since 0.1.4).
    routes: Option<routes::GuestIndices>,
    /// Department interfaces the plugin provides, with their export names.
    exports: Vec<(InterfaceRef, String)>,
}

impl<T: 'static> PluginPre<T> {
    /// The compiled component (its types: what it imports and exports).
    pub fn component(&self) -> &Component {
        self.instance_pre.component()
    }
}

impl<T: 'static> Clone for PluginPre<T> {
    fn clone(&self) -> Self {
        PluginPre {
            instance_pre: self.instance_pre.clone(),
            handler: self.handler.clone(),
            worker: self.worker.clone(),
            importer: self.importer.clone(),
            migrator: self.migrator.clone(),
            routes: self.routes.clone(),
            exports: self.exports.clone(),
        }
    }
}

impl<T: 'static> PluginPre<T> {
    /// Whether the plugin exports `worker` (and the host will call it).
    pub fn has_worker(&self) -> bool {
        self.worker.is_some()
    }

    /// The export name under which the plugin provides `interface` (no version), if it does.
    pub fn export_of(&self, interface: &str) -> Option<&str> {
        self.exports.iter().find(|(i, _)| i.name == interface).map(|(_, name)| name.as_str())
    }
}

/// A plugin version ready to run.
pub struct PreparedPlugin {
    pub pre: PluginPre<HostState>,
    /// Whether machine code came from the on-disk cache (no compilation).
    pub from_cache: bool,
}

/// What one call needs besides the plugin itself.
pub struct Invocation {
    pub caller: Caller,
    pub request: Request,
    pub context: CallContext,
}

/// The per-call state every entry point needs.
pub struct CallContext {
    pub uow: UnitOfWork,
    pub labels: Arc<CallLabels>,
    pub config: Arc<BTreeMap<String, String>>,
    pub memory_cap: usize,
    pub timeout: Duration,
    /// How this call reaches other plugins' department interfaces (none: it cannot).
    pub interop: Option<Arc<dyn Interop>>,
    /// How many cross-plugin calls deep this call is (0 for a request or a job).
    pub depth: u32,
    /// The task the job being run is a chunk of.
    pub task: Option<String>,
}

/// A successful call: the plugin's response, its uncommitted writes and the background work
/// it asked for (to be committed with the writes).
pub struct Outcome {
    pub response: Response,
    pub uow: UnitOfWork,
    pub outbox: PendingOutbox,
    /// The call reached another department: it must not be run again.
    pub called_departments: bool,
}

/// Background work handed to a plugin's `worker` export.
#[derive(Clone)]
pub enum WorkItem {
    Job(WitJob),
    Event(WitEvent),
}

/// A finished background call: what the plugin answered, with its uncommitted writes.
pub struct WorkOutcome {
    pub result: Result<(), WitError>,
    pub uow: UnitOfWork,
    pub outbox: PendingOutbox,
}

/// A finished batch of an import: its rows' problems (or why the import must stop), with the
/// import's writes so far.
pub struct ImportOutcome {
    pub result: Result<Vec<RowProblem>, WitError>,
    pub uow: UnitOfWork,
    pub outbox: PendingOutbox,
}

/// A finished chunk of a migration: what it did, with its writes.
pub struct MigrateOutcome {
    pub result: Result<MigrateStep, WitError>,
    pub uow: UnitOfWork,
    pub outbox: PendingOutbox,
}

/// A finished call of a provided department function: its results, with its writes.
pub struct ExportOutcome {
    pub results: Vec<Val>,
    pub uow: UnitOfWork,
    pub outbox: PendingOutbox,
}

/// Why a department function could not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("the plugin does not export `{0}`")]
    Missing(String),
    #[error("the plugin's `{0}` has a different signature than the caller expects")]
    Mismatch(String),
    #[error(transparent)]
    Call(#[from] CallError),
}

enum Entry {
    Request(Caller, Request),
    Work(Caller, WorkItem),
    Import(Caller, String, Vec<ImportRow>),
    Migrate(Direction, String, Option<String>),
    Export { export: String, function: String, expected: ComponentFunc, params: Vec<Val> },
    Routes,
}

enum Answer {
    Response(Response),
    Work(Result<(), WitError>),
    Import(Result<Vec<RowProblem>, WitError>),
    Migrate(Result<MigrateStep, WitError>),
    Values(Vec<Val>),
    /// The instance's export is not what the caller expects (named): nothing was called.
    Mismatch(String),
    Routes(Vec<routes::Route>),
}

pub struct Runtime {
    engine: Engine,
    /// Grows as plugins importing department interfaces are prepared; `linked` lists the
    /// dynamic functions already defined.
    linker: std::sync::Mutex<(Linker<HostState>, HashSet<String>)>,
    cache: Option<cache::CompileCache>,
    clock: Arc<Clock>,
    ticker_stop: Arc<AtomicBool>,
    admission: Arc<Admission>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn engine_config(settings: &RuntimeSettings, pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.memory_init_cow(true);
    config.table_lazy_init(true);
    config.parallel_compilation(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if pooling {
        let n = settings.max_concurrent_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 4)
            .total_stacks(n)
            .max_core_instances_per_component(32)
            .max_memories_per_component(16)
            .max_tables_per_component(32)
            .max_core_instance_size(4 << 20)
            .table_elements(1 << 20)
            .max_memory_size(settings.max_memory_bytes)
            // Reuse warm slots without giving pages back to the kernel: PAGEMAP_SCAN (Linux
            // 6.7+) finds the pages a call dirtied and only those are reset, so the next call
            // neither refaults nor memsets untouched memory.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(16 << 20)
            .table_keep_resident(1 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

impl Runtime {
    pub fn new(settings: &RuntimeSettings, clock: Arc<Clock>) -> Result<Runtime, RuntimeError> {
        // The pool reserves address space up front; where that is refused (tight ulimits),
        // fall back to on-demand allocation rather than not starting.
        let engine = match Engine::new(&engine_config(settings, true)) {
            Ok(engine) => engine,
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand instance allocation");
                Engine::new(&engine_config(settings, false)).map_err(|e| RuntimeError::Engine(e.to_string()))?
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| RuntimeError::Link(e.to_string()))?;
        bindings::Department::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| RuntimeError::Link(e.to_string()))?;
        let cache = match &settings.cache_dir {
            None => None,
            Some(dir) => match cache::CompileCache::new(dir, &engine) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "compile cache disabled");
                    None
                }
            },
        };
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("keel-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch thread: {e}")))?;
        }
        let admission = Admission::new(settings.admission.clone());
        Ok(Runtime {
            engine,
            linker: std::sync::Mutex::new((linker, HashSet::new())),
            cache,
            clock,
            ticker_stop,
            admission,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn clock(&self) -> &Arc<Clock> {
        &self.clock
    }

    /// Who holds the instance pool now.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// Compiles (or loads from cache) and type-checks a component against the `plugin`
    /// world and the manifest's declared capabilities.
    pub fn prepare(&self, digest: &str, bytes: &[u8], manifest: &Manifest) -> Result<PreparedPlugin, PrepareError> {
        let (component, from_cache) = match self.cache.as_ref().and_then(|c| c.load(&self.engine, digest)) {
            Some(component) => (component, true),
            None => {
                let component =
                    Component::new(&self.engine, bytes).map_err(|e| PrepareError::Compile(format!("{e:#}")))?;
                (component, false)
            }
        };
        check_imports(&self.engine, &component, manifest)?;
        let exports = interop::provided_exports(&self.engine, &component, manifest)?;
        let instance_pre = {
            let mut guard = self.linker.lock().expect("linker lock");
            let (linker, linked) = &mut *guard;
            interop::link_department_imports(&self.engine, linker, linked, &component, manifest)?;
            linker.instantiate_pre(&component).map_err(|e| PrepareError::WorldMismatch(format!("{e:#}")))?
        };
        check_handler_export(&self.engine, &component, &instance_pre)?;
        let handler =
            handler::GuestIndices::new(&instance_pre).map_err(|e| PrepareError::WorldMismatch(format!("{e:#}")))?;
        let worker = if manifest.needs_worker() {
            check_worker_export(&self.engine, &component, &instance_pre)?;
            Some(worker::GuestIndices::new(&instance_pre).map_err(|e| PrepareError::MissingWorker(format!("{e:#}")))?)
        } else {
            None
        };
        let importer = if manifest.imports.is_empty() {
            None
        } else {
            Some(
                importer::GuestIndices::new(&instance_pre)
                    .map_err(|e| PrepareError::MissingImporter(format!("{e:#}")))?,
            )
        };
        let migrator = match manifest.migrations.is_empty() {
            true => None,
            false => Some(
                migrator::GuestIndices::new(&instance_pre)
                    .map_err(|e| PrepareError::MissingMigrator(format!("{e:#}")))?,
            ),
        };
        // Optional: components built before 0.1.4, or without the SDK, do not export it; one
        // that does must export it whole, or it could dodge the routes check.
        let exports_routes =
            component.component_type().exports(&self.engine).any(|(name, _)| name.starts_with("keel:platform/routes@"));
        let routes = match exports_routes {
            false => None,
            true => Some(routes::GuestIndices::new(&instance_pre).map_err(|e| {
                PrepareError::WorldMismatch(format!("export `keel:platform/routes` has the wrong shape: {e:#}"))
            })?),
        };
        let pre = PluginPre { instance_pre, handler, worker, importer, migrator, routes, exports };
        if !from_cache && let Some(cache) = &self.cache {
            cache.store(digest, &component);
        }
        Ok(PreparedPlugin { pre, from_cache })
    }

    /// Runs one request in a fresh instance.
    pub async fn call(&self, pre: &PluginPre<HostState>, invocation: Invocation) -> Result<Outcome, CallError> {
        let Invocation { caller, request, context } = invocation;
        let (answer, state) = self.invoke(pre, context, Entry::Request(caller, request)).await?;
        match answer {
            Answer::Response(response) => Ok(Outcome {
                response,
                uow: state.uow,
                outbox: state.outbox,
                called_departments: state.called_departments,
            }),
            _ => unreachable!("a request is answered with a response"),
        }
    }

    /// Runs one job or event delivery through the plugin's `worker` export, in a fresh
    /// instance, under the same limits as a request.
    pub async fn run_work(
        &self,
        pre: &PluginPre<HostState>,
        caller: Caller,
        item: WorkItem,
        context: CallContext,
    ) -> Result<WorkOutcome, CallError> {
        if pre.worker.is_none() {
            return Err(CallError::Instantiate("the plugin does not export keel:platform/worker".into()));
        }
        let (answer, state) = self.invoke(pre, context, Entry::Work(caller, item)).await?;
        match answer {
            Answer::Work(result) => Ok(WorkOutcome { result, uow: state.uow, outbox: state.outbox }),
            _ => unreachable!("work is answered with a result"),
        }
    }

    /// Hands a batch of rows of import `name` to the plugin's `importer` export, in a fresh
    /// instance; its writes stay in the returned unit of work for the next batch or the commit.
    pub async fn run_import(
        &self,
        pre: &PluginPre<HostState>,
        caller: Caller,
        name: &str,
        rows: Vec<ImportRow>,
        context: CallContext,
    ) -> Result<ImportOutcome, CallError> {
        if pre.importer.is_none() {
            return Err(CallError::Instantiate("the plugin does not export keel:platform/importer".into()));
        }
        let (answer, state) = self.invoke(pre, context, Entry::Import(caller, name.to_owned(), rows)).await?;
        match answer {
            Answer::Import(result) => Ok(ImportOutcome { result, uow: state.uow, outbox: state.outbox }),
            _ => unreachable!("an import batch is answered with its problems"),
        }
    }

    /// Runs one chunk of a migration (`keel:platform/migrator`) in a fresh instance; its writes
    /// stay in the returned unit of work for the next chunk or the commit.
    pub async fn run_migration(
        &self,
        pre: &PluginPre<HostState>,
        direction: Direction,
        other: &str,
        cursor: Option<String>,
        context: CallContext,
    ) -> Result<MigrateOutcome, CallError> {
        if pre.migrator.is_none() {
            return Err(CallError::Instantiate("the plugin does not export keel:platform/migrator".into()));
        }
        let (answer, state) = self.invoke(pre, context, Entry::Migrate(direction, other.to_owned(), cursor)).await?;
        match answer {
            Answer::Migrate(result) => Ok(MigrateOutcome { result, uow: state.uow, outbox: state.outbox }),
            _ => unreachable!("a migration chunk is answered with its step"),
        }
    }

    /// Calls `function` of the department interface the plugin exports as `export`, in a
    /// fresh instance, if its type is `expected` (the caller's view of it).
    pub async fn call_export(
        &self,
        pre: &PluginPre<HostState>,
        export: &str,
        function: &str,
        expected: &ComponentFunc,
        params: &[Val],
        context: CallContext,
    ) -> Result<ExportOutcome, ExportError> {
        let component = pre.instance_pre.component();
        let interface = component.get_export_index(None, export).ok_or_else(|| ExportError::Missing(export.into()))?;
        component
            .get_export_index(Some(&interface), function)
            .ok_or_else(|| ExportError::Missing(format!("{export}.{function}")))?;
        let entry = Entry::Export {
            export: export.to_owned(),
            function: function.to_owned(),
            expected: expected.clone(),
            params: params.to_vec(),
        };
        let (answer, state) = self.invoke(pre, context, entry).await?;
        match answer {
            Answer::Values(results) => Ok(ExportOutcome { results, uow: state.uow, outbox: state.outbox }),
            Answer::Mismatch(what) => Err(ExportError::Mismatch(what)),
            _ => unreachable!("an export call is answered with values"),
        }
    }

    /// The routes the plugin's code serves, as `(METHOD, pattern)`, if it exports them: run
    /// once at upload in a fresh instance without storage, under the plugin's own memory cap
    /// and timeout (a plugin that loops or traps here fails its upload, nothing else).
    pub async fn declared_routes(
        &self,
        pre: &PluginPre<HostState>,
        manifest: &Manifest,
        memory_cap: usize,
        timeout: Duration,
    ) -> Result<Option<Vec<(String, String)>>, CallError> {
        if pre.routes.is_none() {
            return Ok(None);
        }
        let scope = crate::storage::Scope { tenant: String::new(), plugin: manifest.id.clone() };
        let context = CallContext {
            uow: UnitOfWork::new(
                Arc::new(crate::storage::NoStorage),
                scope,
                Arc::default(),
                crate::storage::StorageLimits::default(),
            ),
            labels: Arc::new(CallLabels {
                plugin: manifest.id.clone(),
                version: manifest.version.to_string(),
                // No tenant: the probe runs on behalf of the upload, in a lane of its own.
                tenant: String::new(),
                request_id: "upload-routes".into(),
                permissions: Vec::new(),
                lane: Lane::Request,
                chain: 0,
            }),
            config: Arc::default(),
            memory_cap,
            timeout,
            interop: None,
            depth: 0,
            task: None,
        };
        match self.invoke(pre, context, Entry::Routes).await?.0 {
            Answer::Routes(routes) => Ok(Some(routes.into_iter().map(|r| (r.method, r.path)).collect())),
            _ => unreachable!("a routes call is answered with routes"),
        }
    }

    /// Compares the routes the plugin's code serves with its manifest's (when the plugin
    /// exports them): any route in one only refuses the plugin, named.
    pub async fn check_routes(
        &self,
        pre: &PluginPre<HostState>,
        manifest: &Manifest,
        memory_cap: usize,
        timeout: Duration,
    ) -> Result<(), RouteCheckError> {
        // Listing routes is instant for an honest plugin; one that stalls holds up only its
        // own upload, and not for its whole call timeout.
        let timeout = timeout.min(ROUTES_PROBE_TIMEOUT);
        match self.declared_routes(pre, manifest, memory_cap, timeout).await {
            Ok(Some(handled)) => Ok(crate::manifest::RouteMismatch::check(&manifest.routes, &handled)?),
            Ok(None) => Ok(()),
            Err(e) => Err(RouteCheckError::Unreadable(e)),
        }
    }

    async fn invoke(
        &self,
        pre: &PluginPre<HostState>,
        context: CallContext,
        entry: Entry,
    ) -> Result<(Answer, HostState), CallError> {
        let CallContext { mut uow, labels, config, memory_cap, timeout, interop, depth, task } = context;
        // Admission first: the memory the call may use (its plugin's cap plus what the host
        // may buffer for it) is reserved before anything is allocated.
        let reservation = (memory_cap as u64).saturating_add(uow.host_bytes_budget() as u64);
        let _permit = self
            .admission
            .admit(&labels.tenant, &labels.plugin, labels.lane, reservation)
            .await
            .map_err(CallError::Refused)?;
        let permissions = match &entry {
            Entry::Request(caller, _) | Entry::Work(caller, _) | Entry::Import(caller, ..) => {
                caller.permissions.clone()
            }
            Entry::Export { .. } => labels.permissions.clone(),
            Entry::Routes | Entry::Migrate(..) => Vec::new(),
        };
        let deadline = Instant::now() + timeout;
        uow.set_deadline(deadline);
        uow.set_scan_gate(self.admission.scan_lane(&labels.tenant));
        // A call between plugins runs while its caller waits in a host function, holding the
        // tenant's lane: it runs on that lane rather than queue for it behind its own caller.
        let lane = (depth == 0).then(|| self.admission.cpu_lane(&labels.tenant));
        let mut state = HostState::new(uow, labels, config, self.clock.clone(), memory_cap, permissions);
        state.interop = interop;
        state.depth = depth;
        state.task = task;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(1);
        // Past its first slice a call runs only while it holds one of its tenant's CPU lanes,
        // given up at every tick: a tenant's long calls take turns with each other, and
        // other tenants' calls are never queued behind more than one slice of theirs.
        let held: Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>> = Arc::default();
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                return Err(wasmtime::Error::new(DeadlineExceeded));
            }
            drop(held.lock().expect("lane lock").take());
            let (held, lane) = (held.clone(), lane.clone());
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    if let Some(lane) = lane
                        && let Ok(Ok(permit)) = tokio::time::timeout_at(deadline.into(), lane.acquire_owned()).await
                    {
                        *held.lock().expect("lane lock") = Some(permit);
                    }
                }),
            ))
        });

        let run = async {
            let instance = pre.instance_pre.instantiate_async(&mut store).await.map_err(Failure::Instantiate)?;
            match entry {
                Entry::Request(caller, request) => {
                    let handler = pre.handler.load(&mut store, &instance).map_err(Failure::Instantiate)?;
                    handler.call_handle(&mut store, &caller, &request).await.map(Answer::Response).map_err(Failure::Run)
                }
                Entry::Work(caller, item) => {
                    let indices = pre.worker.as_ref().expect("checked by run_work");
                    let worker = indices.load(&mut store, &instance).map_err(Failure::Instantiate)?;
                    let result = match item {
                        WorkItem::Job(job) => worker.call_run_job(&mut store, &caller, &job).await,
                        WorkItem::Event(event) => worker.call_on_event(&mut store, &caller, &event).await,
                    };
                    result.map(Answer::Work).map_err(Failure::Run)
                }
                Entry::Import(caller, name, rows) => {
                    let indices = pre.importer.as_ref().expect("checked by run_import");
                    let importer = indices.load(&mut store, &instance).map_err(Failure::Instantiate)?;
                    importer
                        .call_import_rows(&mut store, &caller, &name, &rows)
                        .await
                        .map(Answer::Import)
                        .map_err(Failure::Run)
                }
                Entry::Migrate(direction, other, cursor) => {
                    let indices = pre.migrator.as_ref().expect("checked by run_migration");
                    let migrator = indices.load(&mut store, &instance).map_err(Failure::Instantiate)?;
                    migrator
                        .call_migrate(&mut store, direction, &other, cursor.as_deref())
                        .await
                        .map(Answer::Migrate)
                        .map_err(Failure::Run)
                }
                Entry::Export { export, function, expected, params } => {
                    let func = instance
                        .get_export_index(&mut store, None, &export)
                        .and_then(|interface| instance.get_export_index(&mut store, Some(&interface), &function))
                        .and_then(|index| instance.get_func(&mut store, index))
                        .filter(|func| interop::same_signature(&func.ty(&store), &expected));
                    let Some(func) = func else {
                        return Ok(Answer::Mismatch(format!("{export}.{function}")));
                    };
                    let mut results = vec![Val::Bool(false); expected.results().len()];
                    func.call_async(&mut store, &params, &mut results).await.map_err(Failure::Run)?;
                    Ok(Answer::Values(results))
                }
                Entry::Routes => {
                    let indices = pre.routes.as_ref().expect("checked by declared_routes");
                    let routes = indices.load(&mut store, &instance).map_err(Failure::Instantiate)?;
                    routes.call_declared(&mut store).await.map(Answer::Routes).map_err(Failure::Run)
                }
            }
        };
        let result = tokio::time::timeout(timeout, run).await;
        let state = store.into_data();
        log_stdio(&state);
        match result {
            Err(_) => Err(CallError::Timeout(timeout)),
            Ok(Ok(answer)) => Ok((answer, state)),
            Ok(Err(failure)) => Err(classify(failure, &state, memory_cap, timeout)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

enum Failure {
    Instantiate(wasmtime::Error),
    Run(wasmtime::Error),
}

fn classify(failure: Failure, state: &HostState, memory_cap: usize, timeout: Duration) -> CallError {
    let (error, instantiating) = match failure {
        Failure::Instantiate(e) => (e, true),
        Failure::Run(e) => (e, false),
    };
    if error.downcast_ref::<DeadlineExceeded>().is_some() {
        return CallError::Timeout(timeout);
    }
    if state.limiter.hit() || error.downcast_ref::<MemoryCapExceeded>().is_some() {
        return CallError::MemoryLimit { cap: memory_cap };
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return CallError::Trap(trap.to_string());
    }
    if instantiating { CallError::Instantiate(format!("{error:#}")) } else { CallError::Trap(format!("{error:#}")) }
}

/// Plugin stdout/stderr (where Rust panics print) goes to the log, tagged with the call.
fn log_stdio(state: &HostState) {
    for (stream, pipe) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
        let bytes = pipe.contents();
        if !bytes.is_empty() {
            let text = String::from_utf8_lossy(&bytes);
            let l = &state.labels;
            tracing::warn!(target: "keel::plugin", plugin = %l.plugin, version = %l.version, tenant = %l.tenant,
                request_id = %l.request_id, stream, "{}", text.trim_end());
        }
    }
}

/// The exported handler must have exactly the signature of our world. The generated bindings
/// only check this at instantiation, which is too late to refuse an upload.
fn check_handler_export(
    engine: &Engine,
    component: &Component,
    instance_pre: &wasmtime::component::InstancePre<HostState>,
) -> Result<(), PrepareError> {
    use wasmtime::component::types::ComponentItem;
    let mismatch = |m: String| PrepareError::WorldMismatch(m);
    let component_type = component.component_type();
    let interface = component_type
        .exports(engine)
        .find(|(name, _)| name.starts_with(HANDLER_EXPORT))
        .map(|(_, item)| item)
        .ok_or_else(|| mismatch(format!("no export `{HANDLER_EXPORT}@0.1.x` found")))?;
    let ComponentItem::ComponentInstance(interface) = interface.ty else {
        return Err(mismatch(format!("export `{HANDLER_EXPORT}` is not an interface")));
    };
    let handle = interface
        .exports(engine)
        .find(|(name, _)| *name == "handle")
        .map(|(_, item)| item)
        .ok_or_else(|| mismatch(format!("`{HANDLER_EXPORT}` has no function `handle`")))?;
    let ComponentItem::ComponentFunc(handle) = handle.ty else {
        return Err(mismatch(format!("`{HANDLER_EXPORT}.handle` is not a function")));
    };
    // `typecheck` is the check the generated bindings run at instantiation.
    handle
        .typecheck::<(&Caller, &Request), (Response,)>(&instance_pre.instance_type())
        .map_err(|e| mismatch(format!("export `{HANDLER_EXPORT}.handle` has the wrong signature: {e:#}")))
}

const HANDLER_EXPORT: &str = "keel:platform/handler";
const WORKER_EXPORT: &str = "keel:platform/worker";

/// Like [`check_handler_export`], for the `worker` export of plugins that do background work.
fn check_worker_export(
    engine: &Engine,
    component: &Component,
    instance_pre: &InstancePre<HostState>,
) -> Result<(), PrepareError> {
    use wasmtime::component::types::ComponentItem;
    let missing = |m: String| PrepareError::MissingWorker(m);
    let component_type = component.component_type();
    let interface = component_type
        .exports(engine)
        .find(|(name, _)| name.starts_with(WORKER_EXPORT))
        .map(|(_, item)| item)
        .ok_or_else(|| missing(format!("no export `{WORKER_EXPORT}@0.1.x` found")))?;
    let ComponentItem::ComponentInstance(interface) = interface.ty else {
        return Err(missing(format!("export `{WORKER_EXPORT}` is not an interface")));
    };
    let instance_type = instance_pre.instance_type();
    for (name, item) in interface.exports(engine) {
        let ComponentItem::ComponentFunc(func) = item.ty else { continue };
        let checked = match name {
            "run-job" => func.typecheck::<(&Caller, &WitJob), (Result<(), WitError>,)>(&instance_type),
            "on-event" => func.typecheck::<(&Caller, &WitEvent), (Result<(), WitError>,)>(&instance_type),
            _ => continue,
        };
        checked.map_err(|e| missing(format!("export `{WORKER_EXPORT}.{name}` has the wrong signature: {e:#}")))?;
    }
    Ok(())
}

/// Every `keel:platform` import must be a declared capability; other imports must be WASI.
fn check_imports(engine: &Engine, component: &Component, manifest: &Manifest) -> Result<(), PrepareError> {
    for (name, _) in component.component_type().imports(engine) {
        if let Some(rest) = name.strip_prefix("keel:platform/") {
            let interface = rest.split('@').next().unwrap_or(rest);
            if interface == "types" {
                continue;
            }
            match Capability::from_interface(interface) {
                Some(cap) if manifest.capabilities.contains(&cap) => {}
                Some(cap) => {
                    return Err(PrepareError::UndeclaredCapability {
                        import: name.to_owned(),
                        capability: cap.interface().to_owned(),
                    });
                }
                None => return Err(PrepareError::UnknownImport(name.to_owned())),
            }
        } else if !name.starts_with("wasi:") && InterfaceRef::parse(name).is_none() {
            // Department interfaces (`keel:hr/directory@...`) are checked when linked.
            return Err(PrepareError::UnknownImport(name.to_owned()));
        }
    }
    Ok(())
}

//! What a plugin instance can reach: the per-call [`HostState`] and its implementations of
//! the `keel:platform` interfaces.

use super::bindings::keel::platform::{clock, config, identity, log, storage, types};
use super::limits::MemoryLimiter;
use crate::clock::Clock;
use crate::storage::{Condition, Filter, UnitOfWork, UnitOfWorkError};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Longest log line kept, and how many lines one call may write.
const MAX_LOG_LINE: usize = 4096;
const MAX_LOG_LINES: u32 = 200;
/// Bytes of stdout/stderr kept per call (panic messages land on stderr).
pub const STDIO_CAPTURE: usize = 16 * 1024;

/// Identity of the call, for log lines.
#[derive(Debug, Clone)]
pub struct CallLabels {
    pub plugin: String,
    pub version: String,
    pub tenant: String,
    pub request_id: String,
}

/// Everything one call's `Store` holds. Built fresh per call: nothing survives between callers.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) uow: UnitOfWork,
    pub(crate) labels: Arc<CallLabels>,
    config: Arc<BTreeMap<String, String>>,
    clock: Arc<Clock>,
    /// The caller's permissions among this plugin's, for `identity.has-permission`.
    permissions: Vec<String>,
    log_lines: u32,
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) stdout: MemoryOutputPipe,
}

impl HostState {
    pub fn new(
        uow: UnitOfWork,
        labels: Arc<CallLabels>,
        config: Arc<BTreeMap<String, String>>,
        clock: Arc<Clock>,
        memory_cap: usize,
        permissions: Vec<String>,
    ) -> Self {
        let stdout = MemoryOutputPipe::new(STDIO_CAPTURE);
        let stderr = MemoryOutputPipe::new(STDIO_CAPTURE);
        // No preopened directories, environment, arguments or network: WASI gives a plugin
        // only clocks, randomness and the captured stdio.
        let wasi = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_cap),
            uow,
            labels,
            config,
            clock,
            permissions,
            log_lines: 0,
            stderr,
            stdout,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for HostState {}

fn to_wit(error: UnitOfWorkError) -> types::Error {
    use crate::storage::StoreError;
    match error {
        UnitOfWorkError::UndeclaredCollection(_) | UnitOfWorkError::UndeclaredIndex { .. } => {
            types::Error::Forbidden(error.to_string())
        }
        UnitOfWorkError::InvalidKey(_)
        | UnitOfWorkError::InvalidBody(_)
        | UnitOfWorkError::DocumentTooLarge { .. }
        | UnitOfWorkError::TooManyWrites(_)
        | UnitOfWorkError::InvalidCursor => types::Error::Invalid(error.to_string()),
        UnitOfWorkError::Conflict(m) => types::Error::Conflict(m),
        UnitOfWorkError::Store(StoreError::Conflict { .. }) => types::Error::Conflict(error.to_string()),
        UnitOfWorkError::Store(StoreError::Unavailable(m)) => types::Error::Unavailable(m),
        UnitOfWorkError::Store(StoreError::Internal(m)) => {
            tracing::error!(error = %m, "storage failure during a plugin call");
            types::Error::Internal("storage failure; see the host log".into())
        }
    }
}

fn condition(c: storage::WriteCondition) -> Condition {
    match c {
        storage::WriteCondition::Any => Condition::Any,
        storage::WriteCondition::Absent => Condition::Absent,
        storage::WriteCondition::Version(v) => Condition::Version(v),
    }
}

impl storage::Host for HostState {
    async fn get(&mut self, collection: String, key: String) -> Result<Option<storage::Document>, types::Error> {
        let doc = self.uow.get(&collection, &key).await.map_err(to_wit)?;
        Ok(doc.map(|d| storage::Document { key: d.key, version: d.version, body: d.body }))
    }

    async fn put(
        &mut self,
        collection: String,
        key: String,
        body: String,
        cond: storage::WriteCondition,
    ) -> Result<u64, types::Error> {
        self.uow.put(&collection, &key, &body, condition(cond)).await.map_err(to_wit)
    }

    async fn delete(
        &mut self,
        collection: String,
        key: String,
        cond: storage::WriteCondition,
    ) -> Result<bool, types::Error> {
        self.uow.delete(&collection, &key, condition(cond)).await.map_err(to_wit)
    }

    async fn query(&mut self, spec: storage::QuerySpec) -> Result<storage::Page, types::Error> {
        let filters = spec.filters.into_iter().map(|f| Filter { field: f.field, value: f.value }).collect();
        let (docs, next) = self
            .uow
            .query(&spec.collection, filters, spec.cursor.as_deref(), spec.limit, spec.descending)
            .await
            .map_err(to_wit)?;
        Ok(storage::Page {
            documents: docs
                .into_iter()
                .map(|d| storage::Document { key: d.key, version: d.version, body: d.body })
                .collect(),
            next,
        })
    }
}

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, mut message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let l = &self.labels;
        macro_rules! emit {
            ($lvl:ident) => {
                tracing::$lvl!(target: "keel::plugin", plugin = %l.plugin, version = %l.version, tenant = %l.tenant, request_id = %l.request_id, "{message}")
            };
        }
        match level {
            log::Level::Trace => emit!(trace),
            log::Level::Debug => emit!(debug),
            log::Level::Info => emit!(info),
            log::Level::Warn => emit!(warn),
            log::Level::Error => emit!(error),
        }
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

impl identity::Host for HostState {
    fn has_permission(&mut self, permission: String) -> bool {
        self.permissions.iter().any(|p| *p == permission)
    }
}

impl clock::Host for HostState {
    fn now(&mut self) -> u64 {
        u64::try_from(self.clock.now_ms()).unwrap_or(0)
    }
}

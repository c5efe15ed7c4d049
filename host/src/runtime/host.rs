//! What a plugin instance can reach: the per-call [`HostState`] and its implementations of
//! the `keel:platform` interfaces.

use super::bindings::keel::platform::{clock, config, events, identity, jobs, log, sequences, storage, tasks, types};
use super::limits::MemoryLimiter;
use crate::clock::Clock;
use crate::jobs::{PendingEvent, PendingJob, PendingOutbox};
use crate::storage::index::Condition as FieldCondition;
use crate::storage::{Comparison, Condition, Filter, Find, Search, StoredDocument, UnitOfWork, UnitOfWorkError};
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
/// Events plus jobs one call may emit, and the largest payload of either.
const MAX_OUTBOX_ENTRIES: usize = 100;
const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;

/// Identity of the call, for log lines.
#[derive(Debug, Clone)]
pub struct CallLabels {
    pub plugin: String,
    pub version: String,
    pub tenant: String,
    pub request_id: String,
    /// For a provided department function: the caller's permissions among this plugin's.
    pub permissions: Vec<String>,
    /// Whose share of the instance pool the call (and the calls it makes) draws on.
    pub lane: super::Lane,
    /// The chain the jobs and events this call starts belong to (see `NewJob::chain`).
    pub chain: u32,
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
    /// Jobs and events the call asked for; committed with its writes if it succeeds.
    pub(crate) outbox: PendingOutbox,
    /// How this call reaches other plugins' department interfaces, and how deep it is.
    pub(crate) interop: Option<std::sync::Arc<dyn super::Interop>>,
    pub(crate) depth: u32,
    /// Whether this call reached another department (whose writes are its own): such a
    /// call's answer stands, it is never run again after losing a race.
    pub(crate) called_departments: bool,
    /// The task the running job is a chunk of (`tasks.current`, `tasks.advance`).
    pub(crate) task: Option<String>,
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
            outbox: PendingOutbox::default(),
            interop: None,
            depth: 0,
            called_departments: false,
            task: None,
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
        UnitOfWorkError::UndeclaredCollection(_)
        | UnitOfWorkError::UndeclaredIndex { .. }
        | UnitOfWorkError::UndeclaredSearch(_) => types::Error::Forbidden(error.to_string()),
        UnitOfWorkError::InvalidKey(_)
        | UnitOfWorkError::InvalidBody(_)
        | UnitOfWorkError::DocumentTooLarge { .. }
        | UnitOfWorkError::TooManyWrites(_)
        | UnitOfWorkError::TooManySequenceNumbers(_)
        | UnitOfWorkError::CommitTooLarge { .. }
        | UnitOfWorkError::InvalidQuery(_)
        | UnitOfWorkError::InvalidValue { .. }
        | UnitOfWorkError::InvalidCursor
        | UnitOfWorkError::SearchAndWrite => types::Error::Invalid(error.to_string()),
        UnitOfWorkError::Conflict(m) => types::Error::Conflict(m),
        UnitOfWorkError::ReadSetTooLarge { .. } => types::Error::Invalid(error.to_string()),
        UnitOfWorkError::Store(StoreError::ReadConflict { .. }) => types::Error::Conflict(error.to_string()),
        UnitOfWorkError::Store(ref e @ StoreError::SequenceExhausted { .. }) => types::Error::Invalid(e.to_string()),
        UnitOfWorkError::Store(
            StoreError::Conflict { .. } | StoreError::IndexDataMismatch(_) | StoreError::MoveSuperseded { .. },
        ) => types::Error::Conflict(error.to_string()),
        UnitOfWorkError::Store(StoreError::Unavailable(m)) => types::Error::Unavailable(m),
        UnitOfWorkError::Store(
            ref e @ (StoreError::Interrupted
            | StoreError::Busy { .. }
            | StoreError::Saturated { .. }
            | StoreError::OutcomeUnknown(_)
            | StoreError::QuotaExceeded(_)
            | StoreError::TooManyJobs { .. }
            | StoreError::TooManySequences { .. }),
        ) => types::Error::Unavailable(e.to_string()),
        UnitOfWorkError::Store(StoreError::Internal(m)) | UnitOfWorkError::Store(StoreError::LeaseLost(m)) => {
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

impl sequences::Host for HostState {
    async fn next(&mut self, name: String) -> Result<u64, types::Error> {
        self.uow.next_in_sequence(&name, None).await.map_err(to_wit)
    }

    async fn next_after(&mut self, name: String, value: u64) -> Result<u64, types::Error> {
        self.uow.next_in_sequence(&name, Some(value)).await.map_err(to_wit)
    }
}

impl storage::Host for HostState {
    async fn get(&mut self, collection: String, key: String) -> Result<Option<storage::Document>, types::Error> {
        let doc = self.uow.get(&collection, &key).await.map_err(to_wit)?;
        Ok(doc.map(|d| storage::Document { key: d.key, version: d.version, body: d.body }))
    }

    async fn get_many(
        &mut self,
        collection: String,
        keys: Vec<String>,
    ) -> Result<Vec<Option<storage::Document>>, types::Error> {
        let docs = self.uow.get_many(&collection, &keys).await.map_err(to_wit)?;
        Ok(docs
            .into_iter()
            .map(|d| d.map(|d| storage::Document { key: d.key, version: d.version, body: d.body }))
            .collect())
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
        Ok(page(docs, next))
    }

    async fn find(&mut self, spec: storage::FindSpec) -> Result<storage::Page, types::Error> {
        let find = Find {
            collection: spec.collection,
            conditions: spec
                .conditions
                .into_iter()
                .map(|p| FieldCondition { field: p.field, op: comparison(p.op), value: p.value })
                .collect(),
            order_by: spec.order_by,
            cursor: spec.cursor,
            limit: spec.limit,
            descending: spec.descending,
        };
        let (docs, next) = self.uow.find(&find).await.map_err(to_wit)?;
        Ok(page(docs, next))
    }

    async fn search(&mut self, spec: storage::SearchSpec) -> Result<storage::Page, types::Error> {
        let search = Search {
            collection: spec.collection,
            query: spec.query,
            conditions: spec
                .conditions
                .into_iter()
                .map(|p| FieldCondition { field: p.field, op: comparison(p.op), value: p.value })
                .collect(),
            cursor: spec.cursor,
            limit: spec.limit,
        };
        let (docs, next) = self.uow.search(&search).await.map_err(to_wit)?;
        Ok(page(docs, next))
    }
}

fn comparison(c: storage::Comparison) -> Comparison {
    match c {
        storage::Comparison::Eq => Comparison::Eq,
        storage::Comparison::Ne => Comparison::Ne,
        storage::Comparison::Lt => Comparison::Lt,
        storage::Comparison::Le => Comparison::Le,
        storage::Comparison::Gt => Comparison::Gt,
        storage::Comparison::Ge => Comparison::Ge,
        storage::Comparison::Prefix => Comparison::Prefix,
    }
}

fn page(docs: Vec<StoredDocument>, next: Option<String>) -> storage::Page {
    storage::Page {
        documents: docs
            .into_iter()
            .map(|d| storage::Document { key: d.key, version: d.version, body: d.body })
            .collect(),
        next,
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

impl HostState {
    fn outbox_room(&self) -> Result<(), types::Error> {
        if self.outbox.events.len() + self.outbox.jobs.len() >= MAX_OUTBOX_ENTRIES {
            return Err(types::Error::Invalid(format!(
                "a call may publish and enqueue at most {MAX_OUTBOX_ENTRIES} events and jobs"
            )));
        }
        Ok(())
    }
}

fn check_payload(payload: &str) -> Result<(), types::Error> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(types::Error::Invalid(format!(
            "payload is {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
            payload.len()
        )));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(payload)
        .map_err(|e| types::Error::Invalid(format!("payload is not JSON: {e}")))?;
    Ok(())
}

impl jobs::Host for HostState {
    fn enqueue(&mut self, spec: jobs::JobSpec) -> Result<String, types::Error> {
        self.outbox_room()?;
        if !crate::manifest::is_job_name(&spec.name) {
            return Err(types::Error::Invalid("job names are 1-64 of a-z, 0-9, '-', '_' and '.'".into()));
        }
        check_payload(&spec.payload)?;
        let now = self.clock.now_ms();
        let run_at = match spec.run_at {
            None => now,
            Some(at) => i64::try_from(at).map_err(|_| types::Error::Invalid("run-at is out of range".into()))?,
        };
        let id = match &spec.idempotency_key {
            Some(key) if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES => {
                return Err(types::Error::Invalid(format!("idempotency keys are 1-{MAX_IDEMPOTENCY_KEY_BYTES} bytes")));
            }
            Some(key) => crate::jobs::keyed_job_id(&self.labels.tenant, &self.labels.plugin, key),
            None => crate::jobs::random_id("job"),
        };
        // The same key twice in one call is one job, like across calls.
        if !self.outbox.jobs.iter().any(|j| j.id == id) {
            self.uow.charge(spec.payload.len()).map_err(to_wit)?;
            self.outbox.jobs.push(PendingJob {
                id: id.clone(),
                name: spec.name,
                payload: spec.payload,
                run_at,
                idempotency_key: spec.idempotency_key,
                task: None,
            });
        }
        Ok(id)
    }
}

/// Longest task title, in bytes.
const MAX_TASK_TITLE_BYTES: usize = 200;

impl tasks::Host for HostState {
    fn start(&mut self, spec: tasks::TaskSpec) -> Result<String, types::Error> {
        self.outbox_room()?;
        if !crate::manifest::is_job_name(&spec.name) {
            return Err(types::Error::Invalid("task names are 1-64 of a-z, 0-9, '-', '_' and '.'".into()));
        }
        if spec.title.is_empty() || spec.title.len() > MAX_TASK_TITLE_BYTES || spec.title.chars().any(char::is_control)
        {
            return Err(types::Error::Invalid(format!(
                "task titles are 1-{MAX_TASK_TITLE_BYTES} bytes without control characters"
            )));
        }
        check_payload(&spec.payload)?;
        self.uow.charge(spec.payload.len() + spec.title.len()).map_err(to_wit)?;
        let task = crate::jobs::random_id("task");
        let first_job = crate::jobs::random_id("job");
        self.outbox.jobs.push(PendingJob {
            id: first_job.clone(),
            name: spec.name.clone(),
            payload: spec.payload,
            run_at: self.clock.now_ms(),
            idempotency_key: None,
            task: Some(task.clone()),
        });
        self.outbox.tasks.push(crate::jobs::PendingTask {
            id: task.clone(),
            name: spec.name,
            title: spec.title,
            total: spec.total,
            first_job,
        });
        Ok(task)
    }

    fn current(&mut self) -> Option<String> {
        self.task.clone()
    }

    fn advance(&mut self, done: u64, next: Option<String>) -> Result<(), types::Error> {
        if self.task.is_none() {
            return Err(types::Error::Invalid("only a chunk of a task can advance it".into()));
        }
        if self.outbox.advance.is_some() {
            return Err(types::Error::Invalid("this chunk advanced its task already".into()));
        }
        if let Some(next) = &next {
            check_payload(next)?;
            self.uow.charge(next.len()).map_err(to_wit)?;
        }
        self.outbox.advance = Some((done, next));
        Ok(())
    }
}

impl events::Host for HostState {
    fn publish(&mut self, topic: String, payload: String) -> Result<String, types::Error> {
        self.outbox_room()?;
        let own = topic.strip_prefix(self.labels.plugin.as_str()).is_some_and(|rest| rest.starts_with('.'));
        if !own || !crate::manifest::is_topic(&topic) {
            return Err(types::Error::Forbidden(format!(
                "plugin `{}` may publish only topics `{}.<name>` (a-z, 0-9, '-', '_')",
                self.labels.plugin, self.labels.plugin
            )));
        }
        check_payload(&payload)?;
        self.uow.charge(payload.len()).map_err(to_wit)?;
        let id = crate::jobs::random_id("evt");
        self.outbox.events.push(PendingEvent { id: id.clone(), topic, payload });
        Ok(id)
    }
}

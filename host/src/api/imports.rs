//! Bulk imports: `POST /v1/imports/{plugin}/{import}` with a JSON Lines or CSV file. The host
//! reads the rows, hands them to the plugin's `importer` export in batches (each a fresh
//! instance) over one unit of work, and commits every batch's writes together only if no row
//! has a problem; otherwise nothing is saved and the answer lists every problem.

use super::problem::{ApiError, Problem, read_body};
use super::{AppState, RequestId};
use crate::calls::{CallPlan, Save};
use crate::identity::Principal;
use crate::imports::{Format, Problem as RowProblem};
use crate::jobs::PendingOutbox;
use crate::runtime::bindings::exports::keel::platform::importer::ImportRow;
use crate::runtime::bindings::keel::platform::types::Error as WitError;
use crate::runtime::{CallContext, Lane};
use crate::storage::{StorageLimits, UnitOfWork, WriteAudit};
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(import))
}

/// Rows handed to the plugin per call (fewer when they are large: see `BATCH_BYTES`).
const BATCH_ROWS: usize = 500;
/// Bytes of rows handed to the plugin per call.
const BATCH_BYTES: usize = 1 << 20;
/// Problems listed in a refusal; `problems_total` counts them all.
const MAX_LISTED_PROBLEMS: usize = 10_000;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImportQuery {
    /// Check every row and save nothing.
    dry_run: Option<bool>,
    /// `jsonl` or `csv`; by default the body's `Content-Type` says (`application/x-ndjson`,
    /// `text/csv`).
    #[param(pattern = "^(jsonl|csv)$")]
    format: Option<String>,
}

/// What an import did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportReport {
    /// Rows read from the file.
    pub rows: u64,
    /// Calls of the plugin's importer.
    pub batches: u32,
    /// Documents written (0 for a dry run).
    pub documents: u64,
    /// Whether the writes were saved (false for a dry run).
    pub committed: bool,
    pub elapsed_ms: u64,
}

/// Imports a file of rows into a plugin, all rows or none. A refusal (422 `import-rejected`)
/// lists every problem as `problems: [{line, field, reason}]` (the first 10,000; the count in
/// `problems_total`).
#[utoipa::path(post, path = "/v1/imports/{plugin}/{import}", tag = "plugins",
    params(("plugin" = String, Path), ("import" = String, Path), ImportQuery),
    request_body(content = String, content_type = "application/x-ndjson", description = "JSON Lines, or CSV with a header line as text/csv"),
    responses((status = 200, body = ImportReport),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn import(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    principal: Principal,
    Path((plugin_id, name)): Path<(String, String)>,
    Query(q): Query<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportReport>, ApiError> {
    let started = Instant::now();
    let err = |e: ApiError| e.with_plugin(&plugin_id).with_request_id(&request_id);
    let plugin = state
        .registry
        .for_tenant(&state.tenancy, &principal.tenant, &plugin_id)
        .filter(|p| p.record.enabled && state.tenancy.is_enabled(&principal.tenant, &p.record.id))
        .ok_or_else(|| err(ApiError::not_found("plugin-not-found", format!("no enabled plugin `{plugin_id}`"))))?;
    let spec = plugin.record.manifest.imports.iter().find(|i| i.name == name).ok_or_else(|| {
        err(ApiError::not_found("import-not-found", format!("plugin `{plugin_id}` declares no import `{name}`")))
    })?;
    if !state.tenancy.allows(&principal, &spec.permission) {
        return Err(err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this import needs `{}`", spec.permission),
        )));
    }
    let format = match &q.format {
        Some(name) => Format::from_name(name).ok_or_else(|| {
            err(ApiError::unprocessable("invalid-format", format!("`format` must be jsonl or csv (got `{name}`)")))
        })?,
        None => headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(Format::from_content_type)
            .ok_or_else(|| {
                err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "send JSON Lines (application/x-ndjson) or CSV (text/csv), or say `?format=jsonl|csv`",
                ))
            })?,
    };
    // One import at a time per tenant: each holds its file and every buffered write.
    let Some(_import_lane) = state.import_lanes.try_enter(&principal.tenant, "") else {
        let mut api = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "import-in-progress",
            "another import of this tenant is running; retry when it ends",
        );
        api.retry_after = Some(5);
        return Err(err(api));
    };
    let bytes = read_body(body, state.limits.max_import_bytes).await.map_err(err)?;
    let limits = crate::imports::ReadLimits {
        max_rows: state.limits.max_import_rows,
        max_problems: MAX_LISTED_PROBLEMS,
        max_row_bytes: state.limits.max_import_bytes.saturating_mul(2),
    };
    // Reading a large file takes a while: off the async workers.
    let parsed = tokio::task::spawn_blocking(move || {
        std::str::from_utf8(&bytes).map(|text| crate::imports::read(format, text, &limits)).map_err(|e| e.valid_up_to())
    })
    .await
    .map_err(|e| err(ApiError::internal(format!("reading the file failed: {e}"))))?
    .map_err(|at| err(ApiError::unprocessable("invalid-encoding", format!("the file is not UTF-8 (byte {at})"))))?;
    if parsed.rows_total > state.limits.max_import_rows {
        return Err(err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-many-rows",
            format!("{} rows; an import takes at most {}", parsed.rows_total, state.limits.max_import_rows),
        )));
    }
    if parsed.rows_total == 0 && parsed.problems_total == 0 {
        return Err(err(ApiError::unprocessable("empty-import", "the file has no rows")));
    }
    let (rows, mut problems, mut problems_total) = (parsed.rows, parsed.problems, parsed.problems_total);
    let row_count = rows.len() as u64;

    // One unit of work for every batch, sized for the whole import.
    let limits = StorageLimits {
        max_writes_per_call: state.limits.max_import_rows.max(state.limits.storage.max_writes_per_call),
        max_commit_bytes: state.limits.storage.max_commit_bytes.max(state.limits.max_import_bytes.saturating_mul(2)),
        max_checked_documents: state.limits.max_import_rows.saturating_mul(2),
        max_checked_queries: state.limits.max_import_rows,
        ..state.limits.storage.clone()
    };
    let plan = CallPlan {
        plugin: &plugin,
        tenant: &principal.tenant,
        request_id: &request_id,
        lane: Lane::Request,
        chain: 0,
        depth: 0,
        task: None,
        permissions: Vec::new(),
        interop: None,
        limits: Some(limits),
    };
    let first = state.calls.context(plan).await.map_err(|e| {
        tracing::error!(plugin = %plugin_id, error = %e, "reading the plugin's settings failed");
        err(ApiError::unavailable("settings-unavailable", "the plugin's settings cannot be read now"))
    })?;
    let (labels, config) = (first.labels.clone(), first.config.clone());
    let mut first = Some(first);
    let mut uow: Option<UnitOfWork> = None;
    let caller = super::dispatch::caller_of(&state, &plugin, &principal);
    let mut outbox = PendingOutbox::default();
    let mut batches = 0u32;
    let mut rows = rows.into_iter().map(|r| ImportRow { line: r.line, fields: r.fields }).peekable();
    while rows.peek().is_some() {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(row) =
            rows.next_if(|r| batch.is_empty() || (batch.len() < BATCH_ROWS && bytes + r.fields.len() <= BATCH_BYTES))
        {
            bytes += row.fields.len();
            batch.push(row);
        }
        // Every batch after the first continues the first one's unit of work.
        let context = match (first.take(), uow.take()) {
            (Some(first), _) => first,
            (None, Some(uow)) => CallContext {
                uow,
                labels: labels.clone(),
                config: config.clone(),
                memory_cap: plugin.memory_cap,
                timeout: plugin.timeout,
                interop: None,
                depth: 0,
                task: None,
            },
            (None, None) => unreachable!("each batch hands its unit of work on"),
        };
        batches += 1;
        let outcome =
            state.runtime.run_import(&plugin.pre, caller.clone(), &name, batch, context).await.map_err(|e| {
                tracing::warn!(plugin = %plugin_id, %request_id, error = %e, "import batch failed");
                err(super::dispatch::call_failure(&e))
            })?;
        // A batch that found the database away (whatever the plugin made of it, rows reported
        // as problems included) ends the import with the platform's 503: nothing is saved.
        if let Some(reason) = outcome.uow.storage_unavailable() {
            tracing::warn!(plugin = %plugin_id, %request_id, %reason, "storage unavailable during an import");
            return Err(err(ApiError::unavailable("storage-unavailable", "storage is unavailable; nothing was saved")));
        }
        uow = Some(outcome.uow);
        outbox.events.extend(outcome.outbox.events);
        outbox.jobs.extend(outcome.outbox.jobs);
        outbox.tasks.extend(outcome.outbox.tasks);
        match outcome.result {
            Ok(found) => {
                problems_total += found.len();
                let room = MAX_LISTED_PROBLEMS.saturating_sub(problems.len());
                let kept = found.into_iter().take(room);
                problems.extend(kept.map(|p| RowProblem { line: p.line, field: p.field, reason: p.reason }));
            }
            Err(e) => return Err(err(plugin_error(e))),
        }
    }

    if problems_total > 0 {
        problems.sort_by_key(|p| p.line);
        let total = problems_total;
        let mut api = ApiError::unprocessable(
            "import-rejected",
            format!("{total} of the file's rows have problems; nothing was saved"),
        );
        let mut members = serde_json::Map::new();
        members.insert("problems".into(), serde_json::to_value(&problems).unwrap_or_default());
        members.insert("problems_total".into(), total.into());
        api.extensions = Some(members);
        return Err(err(api));
    }
    let uow = match (uow, first) {
        (Some(uow), _) => uow,
        (None, Some(first)) => first.uow,
        (None, None) => unreachable!("the unit of work is with the last batch or unused"),
    };
    let documents = uow.pending_writes() as u64;
    if q.dry_run == Some(true) {
        return Ok(Json(ImportReport {
            rows: row_count,
            batches,
            documents: 0,
            committed: false,
            elapsed_ms: started.elapsed().as_millis() as u64,
        }));
    }
    let audit = WriteAudit {
        actor: principal.token_id.clone(),
        actor_name: principal.name.clone(),
        request_id: request_id.clone(),
    };
    state.calls.commit(&plugin, uow, outbox, Save::new(&request_id, 0, audit)).await.map_err(|e| {
        err(super::dispatch::commit_failure(&state, &principal.tenant, &plugin_id, &request_id, &e, "import").0)
    })?;
    tracing::info!(plugin = %plugin_id, tenant = %principal.tenant, import = %name, rows = row_count, documents,
        elapsed_ms = started.elapsed().as_millis() as u64, "import committed");
    Ok(Json(ImportReport {
        rows: row_count,
        batches,
        documents,
        committed: true,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }))
}

/// The plugin's own reason to stop the whole import.
fn plugin_error(e: WitError) -> ApiError {
    let (status, detail) = match e {
        WitError::Invalid(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
        WitError::NotFound(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
        WitError::Conflict(m) => (StatusCode::CONFLICT, m),
        WitError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
        WitError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        WitError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
    };
    ApiError::new(status, "import-failed", format!("{detail}; nothing was saved"))
}

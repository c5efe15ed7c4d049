//! A tenant's data of one plugin, out and in: `GET .../export` streams it as JSON Lines
//! (see [`crate::portability`] for the format and its rules), `POST .../import` reads such a
//! file into a tenant where the plugin is switched off and holds nothing, all or nothing.

use super::AppState;
use super::auth::TenantAdmin;
use super::problem::{ApiError, Problem};
use crate::portability::{self, Counts, Header, ImportError, Importer};
use crate::storage::{Scope, StoreError, WriteAudit};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(export)).routes(routes!(import))
}

/// Chunks of an export buffered between the database and a slow reader.
const EXPORT_BUFFER: usize = 4;

fn store_problem(e: StoreError, done: &str) -> ApiError {
    match e {
        StoreError::Unavailable(m) => {
            ApiError::unavailable("storage-unavailable", format!("storage is unavailable ({m}); {done}"))
        }
        StoreError::QuotaExceeded(q) => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "quota-exceeded", format!("{q}; {done}"))
        }
        e @ StoreError::Busy { .. } => {
            let mut api = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "storage-busy", format!("{e}; {done}"));
            api.retry_after = Some(1);
            api
        }
        e @ StoreError::Saturated { .. } => {
            let mut api = ApiError::unavailable("capacity-exhausted", format!("{e}; {done}"));
            api.retry_after = Some(1);
            api
        }
        e @ StoreError::TooManySequences { .. } => {
            ApiError::unprocessable("too-many-sequences", format!("{e}; {done}"))
        }
        e @ StoreError::SequenceExhausted { .. } => {
            ApiError::unprocessable("sequence-exhausted", format!("{e}; {done}"))
        }
        other => {
            tracing::error!(error = %other, "moving a tenant's plugin data failed");
            ApiError::internal(format!("storage failed; {done}"))
        }
    }
}

/// The installed plugin `id` at the version `tenant` runs (the active one if it never
/// switched it on), or 404.
fn installed(
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<std::sync::Arc<crate::plugins::LoadedPlugin>, ApiError> {
    state
        .registry
        .for_tenant(&state.tenancy, tenant, id)
        .ok_or_else(|| ApiError::not_found("plugin-not-found", format!("no plugin `{id}` is installed")))
}

/// Everything this tenant stored with a plugin, as JSON Lines: a header (the plugin's id,
/// version and digest, the collections, the secret settings left out), then the settings,
/// sequences and documents, then an `end` line with the counts. Streamed: a file that lacks
/// its `end` line was cut short. Secret settings are never exported.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/plugins/{plugin}/export", tag = "tenants",
    params(("tenant" = String, Path), ("plugin" = String, Path)),
    responses(
        (status = 200, description = "JSON Lines: header, settings, sequences, documents, end", body = String, content_type = "application/x-ndjson"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn export(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((_tenant, plugin_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let plugin = installed(&state, admin.id(), &plugin_id)?;
    let manifest = &plugin.record.manifest;
    let scope = Scope { tenant: admin.id().to_owned(), plugin: plugin_id.clone() };
    let nothing = "nothing was exported";
    let contents = state.store.scope_contents(&scope).await.map_err(|e| store_problem(e, nothing))?;
    let stored = state.settings.stored(admin.id(), &plugin_id).await.map_err(|e| {
        tracing::error!(error = %e, plugin = %plugin_id, "reading settings to export failed");
        ApiError::unavailable("storage-unavailable", format!("the plugin's settings could not be read; {nothing}"))
    })?;
    let secret = |name: &str| manifest.settings.iter().find(|s| s.name == name).is_none_or(|s| s.secret);
    let (secrets, settings): (Vec<_>, Vec<_>) = stored.iter().partition(|(name, _)| secret(name));
    let header = Header {
        format: portability::FORMAT.into(),
        format_version: portability::FORMAT_VERSION,
        tenant: admin.id().to_owned(),
        plugin: plugin_id.clone(),
        version: manifest.version.clone(),
        digest: plugin.record.digest.clone(),
        exported_at: state.clock.now_ms(),
        plugin_enabled: state.tenancy.is_enabled(admin.id(), &plugin_id),
        collections: contents.collections.clone(),
        // Values of settings the installed version no longer declares are left out with
        // the secrets: whether they were secret is not known any more.
        secrets_omitted: secrets.iter().map(|(name, _)| (*name).clone()).collect(),
    };
    let mut head = portability::lines::header(&header);
    for (name, setting) in &settings {
        head.push_str(&portability::lines::setting(name, &setting.value));
    }
    for (name, value) in &contents.sequences {
        head.push_str(&portability::lines::sequence(name, *value));
    }
    let detail =
        json!({ "collections": header.collections, "settings": settings.len(), "sequences": contents.sequences.len() });
    admin.record(&state, "tenant.plugin.export", Some(&plugin_id), detail).await;

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(EXPORT_BUFFER);
    let store = state.store.clone();
    let counts = Counts { documents: 0, settings: settings.len() as u64, sequences: contents.sequences.len() as u64 };
    let collections = contents.collections;
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(head))).await.is_err() {
            return;
        }
        let mut pages = portability::DocumentPages::new(scope.clone(), collections);
        let mut documents = 0;
        loop {
            match pages.next(store.as_ref()).await {
                Ok(Some((chunk, n))) => {
                    documents += n;
                    if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                        return; // The reader went away.
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // The reader gets a file without its `end` line, which an import refuses.
                    tracing::warn!(error = %e, tenant = %scope.tenant, plugin = %scope.plugin, "export stopped");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
        }
        let _ = tx.send(Ok(Bytes::from(portability::lines::end(Counts { documents, ..counts })))).await;
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let filename = format!("attachment; filename=\"{}-{}-{}.jsonl\"", header.tenant, plugin_id, header.version);
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    if let Ok(value) = HeaderValue::from_str(&filename) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// What an import read and saved.
#[derive(Debug, Serialize, ToSchema)]
pub struct DataImport {
    pub plugin: String,
    /// The tenant the file was exported from.
    pub from_tenant: String,
    /// The plugin version that wrote the file.
    pub from_version: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// Secret settings the file left out: set them again.
    pub secrets_omitted: Vec<String>,
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        let undone = "nothing was kept";
        match e {
            ImportError::Store(e) => store_problem(e, undone),
            ImportError::NewerThanPlugin { .. } => ApiError::conflict("export-newer-than-plugin", e.to_string()),
            ImportError::NeedsMigration { .. } => ApiError::conflict("export-needs-migration", e.to_string()),
            ImportError::LineTooLong { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "line-too-large", format!("{e}; {undone}"))
            }
            ImportError::Truncated | ImportError::CountMismatch { .. } => {
                ApiError::unprocessable("export-incomplete", format!("{e}; {undone}"))
            }
            ImportError::UnsupportedVersion(_) => {
                ApiError::unprocessable("unsupported-export-version", format!("{e}; {undone}"))
            }
            ImportError::PluginMismatch { .. } => ApiError::unprocessable("export-plugin-mismatch", e.to_string()),
            ImportError::UnknownCollection { .. } => {
                ApiError::unprocessable("unknown-collection", format!("{e}; {undone}"))
            }
            ImportError::InvalidDocument { .. } => {
                ApiError::unprocessable("invalid-document", format!("{e}; {undone}"))
            }
            ImportError::Duplicate { .. } => ApiError::unprocessable("duplicate-document", format!("{e}; {undone}")),
            ImportError::InvalidSetting { .. } => ApiError::unprocessable("invalid-setting", format!("{e}; {undone}")),
            ImportError::Malformed { .. } | ImportError::NotAnExport(_) => {
                ApiError::unprocessable("invalid-export", format!("{e}; {undone}"))
            }
        }
    }
}

/// Reads a file from `export` (of this or another tenant, on this or another platform) into
/// this tenant: its documents (versions kept), sequences and settings. The plugin must be
/// installed, switched off here, and hold no data here (purge it first); the file's plugin
/// version may not be newer than the installed one, nor one whose data the installed version
/// migrates (import it on that version, then upgrade). All or nothing: on any refusal what the
/// import had saved is removed again. Secret settings are not in files: set them after.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/plugins/{plugin}/import", tag = "tenants", operation_id = "import_tenant_data",
    params(("tenant" = String, Path), ("plugin" = String, Path)),
    request_body(content = String, content_type = "application/x-ndjson", description = "A file from `export`"),
    responses(
        (status = 200, body = DataImport),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`plugin-enabled`: switch it off here first; `plugin-data-exists`: purge what it holds here first; `export-newer-than-plugin`; `export-needs-migration`: the installed version migrates the file's version's data", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`line-too-large`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-export`, `export-incomplete`, `export-plugin-mismatch`, `unsupported-export-version`, `unknown-collection`, `invalid-document`, `duplicate-document`, `invalid-setting`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`import-in-progress`", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "`quota-exceeded`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn import(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((_tenant, plugin_id)): Path<(String, String)>,
    body: Body,
) -> Result<Json<DataImport>, ApiError> {
    let plugin = installed(&state, admin.id(), &plugin_id)?;
    let scope = Scope { tenant: admin.id().to_owned(), plugin: plugin_id.clone() };
    // One import at a time per tenant: each holds a batch of writes.
    let Some(_lane) = state.import_lanes.try_enter(admin.id(), "") else {
        let mut api = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "import-in-progress",
            "another import of this tenant is running; retry when it ends",
        );
        api.retry_after = Some(5);
        return Err(api);
    };
    let refused = "nothing was imported";
    ensure_switched_off(&state, &admin, &plugin_id).await?;
    let contents = state.store.scope_contents(&scope).await.map_err(|e| store_problem(e, refused))?;
    if !contents.collections.is_empty() || !contents.sequences.is_empty() {
        return Err(ApiError::conflict(
            "plugin-data-exists",
            format!(
                "`{plugin_id}` already holds data in this tenant ({} collections, {} sequences); export it if it matters, purge it, then import",
                contents.collections.len(),
                contents.sequences.len()
            ),
        ));
    }
    let audit = WriteAudit {
        actor: admin.principal.token_id.clone(),
        actor_name: admin.principal.name.clone(),
        request_id: admin.request_id().to_owned(),
    };
    let mut importer = Importer::new(
        state.store.clone(),
        admin.id(),
        plugin.clone(),
        state.calls.storage_limits.clone(),
        audit,
        state.clock.now_ms(),
    );
    let outcome = read_into(&state, &admin, &plugin_id, body, &mut importer).await;
    let outcome = match outcome {
        Ok(()) => importer.finish().await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let settings = match outcome {
        Ok((counts, settings)) => {
            match state.settings.restore(admin.id(), &plugin.record.manifest, &settings, &admin.principal.name).await {
                Ok(()) => Ok(counts),
                Err(e) => {
                    tracing::error!(error = %e, plugin = %plugin_id, "restoring imported settings failed");
                    Err(ApiError::unavailable(
                        "storage-unavailable",
                        "the plugin's settings could not be saved; nothing was kept",
                    ))
                }
            }
        }
        Err(e) => Err(e),
    };
    let counts = match settings {
        Ok(counts) => counts,
        Err(e) => {
            if importer.wrote() {
                undo(&state, &scope).await?;
            }
            return Err(e);
        }
    };
    let header = importer.header().expect("a finished import read its header").clone();
    let detail = json!({
        "from_tenant": header.tenant, "from_version": header.version.to_string(),
        "documents": counts.documents, "settings": counts.settings, "sequences": counts.sequences,
    });
    admin.record(&state, "tenant.plugin.import", Some(&plugin_id), detail).await;
    Ok(Json(DataImport {
        plugin: plugin_id,
        from_tenant: header.tenant,
        from_version: header.version.to_string(),
        counts,
        secrets_omitted: header.secrets_omitted,
    }))
}

/// Refuses while the plugin is switched on for the tenant: it would run on half its data.
async fn ensure_switched_off(state: &AppState, admin: &TenantAdmin, plugin: &str) -> Result<(), ApiError> {
    let _checked = state.tenancy.checked_switch().await;
    if state.tenancy.is_enabled(admin.id(), plugin) {
        return Err(ApiError::conflict(
            "plugin-enabled",
            format!("`{plugin}` is switched on for this tenant; switch it off while its data is imported"),
        ));
    }
    Ok(())
}

/// Feeds the request body to `importer` a line at a time, checking before each line that
/// the plugin is still switched off (an admin may switch it on meanwhile: the import stops).
async fn read_into(
    state: &AppState,
    admin: &TenantAdmin,
    plugin: &str,
    body: Body,
    importer: &mut Importer,
) -> Result<(), ApiError> {
    let max_line = Importer::max_line_bytes(&state.calls.storage_limits);
    let mut stream = body.into_data_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut checked_at = 0u64;
    let feed = async |importer: &mut Importer, line: &[u8]| -> Result<(), ApiError> {
        let text = std::str::from_utf8(line).map_err(|e| {
            ApiError::unprocessable(
                "invalid-encoding",
                format!("line {} is not UTF-8 (byte {}); nothing was kept", importer.lines_read() + 1, e.valid_up_to()),
            )
        })?;
        importer.line(text).await.map_err(ApiError::from)
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("body-unreadable", format!("reading the file failed: {e}; nothing was kept"))
        })?;
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(at) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + at];
            if line.len() > max_line {
                return Err(ImportError::LineTooLong { line: importer.lines_read() + 1, limit: max_line }.into());
            }
            feed(importer, line).await?;
            start += at + 1;
        }
        pending.drain(..start);
        if pending.len() > max_line {
            return Err(ImportError::LineTooLong { line: importer.lines_read() + 1, limit: max_line }.into());
        }
        // Once per thousand lines or so: cheap, and a switch on stops the import soon.
        if importer.lines_read() >= checked_at + 1000 {
            checked_at = importer.lines_read();
            ensure_switched_off(state, admin, plugin).await?;
        }
    }
    if !pending.is_empty() {
        feed(importer, &pending).await?;
    }
    ensure_switched_off(state, admin, plugin).await
}

/// Removes what a refused import had saved: the scope held nothing before it began.
async fn undo(state: &AppState, scope: &Scope) -> Result<(), ApiError> {
    state.store.purge_scope(scope).await.map(drop).map_err(|e| {
        tracing::error!(error = %e, tenant = %scope.tenant, plugin = %scope.plugin, "removing a refused import's data failed");
        ApiError::internal(
            "the import was refused, and removing what it had saved failed: purge the plugin's data in this tenant, then import again",
        )
    })
}

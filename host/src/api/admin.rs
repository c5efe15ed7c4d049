//! The admin API for plugins: install, list, show, enable, disable, uninstall.

use super::auth::AdminPrincipal;
use super::body::JsonBody;
use super::problem::{ApiError, Problem, read_body};
use super::{AppState, RequestId};
use crate::artifact::ArtifactError;
use crate::audit::AdminAction;
use crate::plugins::{InstallError, InstallOutcome, PluginRecord, RegistryError};
use crate::runtime::{CallError, PrepareError, RouteCheckError};
use crate::signing::{SIGNATURE_HEADER, TrustError};
use axum::Json;
use axum::body::Body;
use axum::extract::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(install_plugin, list_plugins))
        .routes(routes!(show_plugin, uninstall_plugin))
        .routes(routes!(enable_plugin))
        .routes(routes!(disable_plugin))
        .routes(routes!(plugin_versions))
        .routes(routes!(rollout_plugin))
        .routes(routes!(pin_plugin, unpin_plugin))
}

#[derive(Serialize, ToSchema)]
pub struct InstallResponse {
    pub outcome: InstallOutcome,
    pub plugin: PluginRecord,
}

#[derive(Serialize, ToSchema)]
pub struct PluginList {
    pub items: Vec<PluginRecord>,
}

impl From<InstallError> for ApiError {
    fn from(e: InstallError) -> Self {
        let detail = e.to_string();
        match e {
            InstallError::Artifact(a) => {
                let code = match a {
                    ArtifactError::NotWasm => "not-wasm",
                    ArtifactError::NotComponent => "not-a-component",
                    ArtifactError::Malformed(_) => "malformed-component",
                    ArtifactError::MissingManifest => "missing-manifest",
                    ArtifactError::DuplicateManifest | ArtifactError::ManifestNotText => "invalid-manifest",
                };
                ApiError::unprocessable(code, detail)
            }
            InstallError::Manifest(_) => ApiError::unprocessable("invalid-manifest", detail),
            InstallError::Prepare(p) => {
                let code = match p {
                    PrepareError::Compile(_) => "malformed-component",
                    PrepareError::WorldMismatch(_) => "world-mismatch",
                    PrepareError::UndeclaredCapability { .. } => "undeclared-capability",
                    PrepareError::UnknownImport(_) => "unknown-import",
                    PrepareError::MissingWorker(_) => "missing-worker-export",
                    PrepareError::MissingImporter(_) => "missing-importer-export",
                    PrepareError::MissingMigrator(_) => "missing-migrator-export",
                    PrepareError::UndeclaredRequirement { .. } => "undeclared-requirement",
                    PrepareError::DepartmentSignature { .. } => "department-signature",
                    PrepareError::MissingProvidedExport(_) => "missing-provided-export",
                };
                ApiError::unprocessable(code, detail)
            }
            InstallError::Routes(RouteCheckError::Mismatch(_)) => ApiError::unprocessable("route-mismatch", detail),
            InstallError::Routes(RouteCheckError::Unreadable(CallError::Refused(_))) => {
                ApiError::unavailable("capacity-exhausted", detail)
            }
            InstallError::Routes(RouteCheckError::Unreadable(_)) => {
                ApiError::unprocessable("routes-unreadable", detail)
            }
            InstallError::DigestMismatch { .. } => ApiError::conflict("version-digest-conflict", detail),
            InstallError::Downgrade { .. } => ApiError::conflict("downgrade-refused", detail),
            InstallError::Reindex(crate::storage::ReindexError::Mismatch { .. }) => {
                ApiError::conflict("index-data-mismatch", detail)
            }
            InstallError::Reindex(crate::storage::ReindexError::Superseded { .. }) => {
                ApiError::conflict("install-conflict", detail)
            }
            InstallError::Reindex(crate::storage::ReindexError::Store(e)) => match e {
                crate::storage::StoreError::Unavailable(_) => ApiError::unavailable("database-unavailable", detail),
                _ => ApiError::internal(detail),
            },
            InstallError::Trust(t) => {
                let code = match t {
                    TrustError::Invalid(_) => "invalid-signature",
                    TrustError::Required => "signature-required",
                    TrustError::Untrusted(_) => "untrusted-signer",
                };
                ApiError::unprocessable(code, detail)
            }
            InstallError::Incompatible { breaks, callers, .. } => {
                let mut api = ApiError::conflict("interface-incompatible", detail);
                let mut members = serde_json::Map::new();
                members.insert("breaks".into(), serde_json::to_value(&breaks).unwrap_or_default());
                members.insert("callers".into(), serde_json::to_value(&callers).unwrap_or_default());
                api.extensions = Some(members);
                api
            }
            InstallError::Registry(r) => r.into(),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(_) => ApiError::not_found("plugin-not-found", e.to_string()),
            RegistryError::Database(d) => d.into(),
            other => {
                tracing::error!(error = %other, "plugin registry failure");
                ApiError::internal(other.to_string())
            }
        }
    }
}

/// Upload a plugin artifact (a component with its manifest embedded) and install it.
///
/// The artifact is validated (envelope, manifest, compilation, type-check against the
/// `keel:platform/plugin` world, declared capabilities) before anything is stored. Uploading
/// the same id, version and digest again is a no-op (200); a newer version becomes the active
/// one, which tenants switching the plugin on get; tenants running an older one keep it until
/// their admin upgrades or a rollout moves them (`/v1/admin/plugins/{id}/rollout`).
///
/// The publisher's signature goes in the `keel-signature` header (the line `keel plugin
/// sign` writes). A signature that does not verify is refused (422 `invalid-signature`);
/// one by a trusted key records that key's name as the version's `signer`. When the
/// platform requires signatures, an unsigned artifact is refused (422 `signature-required`)
/// and so is one signed by a key nobody trusts (422 `untrusted-signer`).
#[utoipa::path(
    post, path = "/v1/admin/plugins", tag = "plugins",
    params(("keel-signature" = Option<String>, Header, description = "`keel-signature-v1 ed25519:<key> <signature>`")),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses(
        (status = 201, description = "Installed or upgraded", body = InstallResponse),
        (status = 200, description = "Already installed, unchanged", body = InstallResponse),
        (status = 409, description = "Same version with another digest, or a downgrade", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Artifact too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid plugin artifact", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn install_plugin(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<InstallResponse>), ApiError> {
    let signature = match headers.get(SIGNATURE_HEADER) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::unprocessable("invalid-signature", format!("the `{SIGNATURE_HEADER}` header is not text"))
        })?),
    };
    let bytes = read_body(body, state.limits.max_artifact_bytes).await?;
    let (plugin, outcome) = state.registry.install(bytes.to_vec(), signature).await?;
    // A new plugin is switched on where it was installed from; other tenants opt in.
    if outcome == InstallOutcome::Installed {
        crate::lifecycle::switch_on(&state.registry, &state.tenancy, &admin.tenant, &plugin.id).await?;
    }
    tracing::info!(actor = %admin.name, plugin = %plugin.id, version = %plugin.version, digest = %plugin.digest, ?outcome, "plugin installed");
    let detail =
        json!({ "version": plugin.version, "digest": plugin.digest, "outcome": outcome, "signer": plugin.signer });
    state
        .audit
        .admin(&admin, &rid, AdminAction { tenant: None, action: "plugin.install", plugin: Some(&plugin.id), detail })
        .await;
    let status = if outcome == InstallOutcome::Unchanged { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(InstallResponse { outcome, plugin })))
}

/// One installed version of a plugin, and the tenants running it.
#[derive(Serialize, ToSchema)]
pub struct PluginVersion {
    pub version: String,
    /// sha-256 of the artifact, hex.
    pub digest: String,
    pub size_bytes: u64,
    pub installed_at: i64,
    /// The trusted key whose signature it carried at install.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The version tenants switching the plugin on get.
    pub active: bool,
    /// Tenants that run it (switched on or off there), by id.
    pub tenants: Vec<String>,
    /// The manifest as uploaded (TOML).
    pub manifest: String,
}

#[derive(Serialize, ToSchema)]
pub struct PluginVersionList {
    pub plugin: String,
    pub active_version: String,
    /// A platform admin pinned the active version: installs do not move it.
    pub pinned: bool,
    /// Oldest first.
    pub items: Vec<PluginVersion>,
}

/// The installed versions of a plugin, oldest first, each with its digest, signer, manifest
/// and the tenants that run it.
#[utoipa::path(get, path = "/v1/admin/plugins/{id}/versions", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")),
    responses((status = 200, body = PluginVersionList), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn plugin_versions(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    Path(id): Path<String>,
) -> Result<Json<PluginVersionList>, ApiError> {
    let active = state
        .registry
        .get(&id)
        .ok_or_else(|| ApiError::not_found("plugin-not-found", format!("no plugin `{id}` is installed")))?;
    let running = state.tenancy.versions_of(&id);
    let (versions, pinned) = state.registry.versions(&id).await?;
    let items = versions
        .into_iter()
        .map(|v| PluginVersion {
            active: v.version == active.record.version,
            tenants: running.iter().filter(|(_, r)| *r == v.version).map(|(t, _)| t.clone()).collect(),
            version: v.version,
            digest: v.digest,
            size_bytes: v.size,
            installed_at: v.installed_at,
            signer: v.signer,
            manifest: v.manifest,
        })
        .collect();
    Ok(Json(PluginVersionList { plugin: id, active_version: active.record.version.clone(), pinned, items }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    /// An installed version.
    pub version: String,
}

/// Pin the version tenants switching the plugin on get: installing a newer one then adds it
/// beside (outcome `added`) without making it active. No tenant moves.
#[utoipa::path(put, path = "/v1/admin/plugins/{id}/pin", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")),
    request_body = PinRequest,
    responses((status = 200, body = PluginRecord),
        (status = 404, description = "`plugin-not-found`, `version-not-found`", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn pin_plugin(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<PinRequest>,
) -> Result<Json<PluginRecord>, ApiError> {
    let record = state.registry.pin(&id, Some(&request.version)).await?;
    let detail = json!({ "version": record.version });
    state
        .audit
        .admin(&admin, &rid, AdminAction { tenant: None, action: "plugin.pin", plugin: Some(&id), detail })
        .await;
    Ok(Json(record))
}

/// Unpin: the newest installed version becomes the one tenants switching the plugin on get.
/// No tenant moves.
#[utoipa::path(delete, path = "/v1/admin/plugins/{id}/pin", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")),
    responses((status = 200, body = PluginRecord), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn unpin_plugin(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    Path(id): Path<String>,
) -> Result<Json<PluginRecord>, ApiError> {
    let record = state.registry.pin(&id, None).await?;
    let detail = json!({ "version": record.version });
    state
        .audit
        .admin(&admin, &rid, AdminAction { tenant: None, action: "plugin.unpin", plugin: Some(&id), detail })
        .await;
    Ok(Json(record))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// The installed version to move tenants to; the plugin's active version when absent.
    #[serde(default)]
    pub version: Option<String>,
    /// The tenants to move, in this order; every tenant running another version (by id)
    /// when absent.
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
}

/// Move tenants to a version of a plugin, one after the other, with the checks of a tenant
/// admin's upgrade (no force), stopping at the first tenant that fails. The report lists
/// the tenants moved, the one it stopped at (with a stable code and why), and those not
/// reached; `complete` says whether every tenant is on the version.
#[utoipa::path(post, path = "/v1/admin/plugins/{id}/rollout", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")),
    request_body = RolloutRequest,
    responses((status = 200, body = crate::lifecycle::RolloutReport),
        (status = 404, description = "`plugin-not-found`, `version-not-found`", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn rollout_plugin(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<RolloutRequest>,
) -> Result<Json<crate::lifecycle::RolloutReport>, ApiError> {
    let active = state
        .registry
        .get(&id)
        .ok_or_else(|| ApiError::not_found("plugin-not-found", format!("no plugin `{id}` is installed")))?;
    let version = request.version.unwrap_or_else(|| active.record.version.clone());
    let report = crate::lifecycle::rollout(&state.calls, &id, &version, request.tenants).await?;
    tracing::info!(actor = %admin.name, plugin = %id, %version, moved = report.moved.len(), complete = report.complete, "rollout");
    let detail = serde_json::to_value(&report).unwrap_or_default();
    state
        .audit
        .admin(&admin, &rid, AdminAction { tenant: None, action: "plugin.rollout", plugin: Some(&id), detail })
        .await;
    Ok(Json(report))
}

/// List installed plugins.
#[utoipa::path(get, path = "/v1/admin/plugins", tag = "plugins",
    responses((status = 200, body = PluginList)), security(("bearer" = [])))]
async fn list_plugins(State(state): State<AppState>, _admin: AdminPrincipal) -> Json<PluginList> {
    Json(PluginList { items: state.registry.list() })
}

/// Show one installed plugin: version, digest, routes, limits.
#[utoipa::path(get, path = "/v1/admin/plugins/{id}", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")),
    responses((status = 200, body = PluginRecord), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn show_plugin(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    Path(id): Path<String>,
) -> Result<Json<PluginRecord>, ApiError> {
    state
        .registry
        .get(&id)
        .map(|p| Json(p.record.clone()))
        .ok_or_else(|| ApiError::not_found("plugin-not-found", format!("no plugin `{id}` is installed")))
}

/// Enable a plugin: its routes are served again.
#[utoipa::path(post, path = "/v1/admin/plugins/{id}/enable", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")),
    responses((status = 200, body = PluginRecord), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn enable_plugin(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    Path(id): Path<String>,
) -> Result<Json<PluginRecord>, ApiError> {
    let record = state.registry.set_enabled(&id, true).await?;
    tracing::info!(actor = %admin.name, plugin = %id, "plugin enabled");
    state
        .audit
        .admin(
            &admin,
            &rid,
            AdminAction { tenant: None, action: "plugin.enable", plugin: Some(&id), detail: json!({}) },
        )
        .await;
    Ok(Json(record))
}

/// Disable a plugin: its routes answer 404 until it is enabled again; its data is kept.
#[utoipa::path(post, path = "/v1/admin/plugins/{id}/disable", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id")),
    responses((status = 200, body = PluginRecord), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn disable_plugin(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    Path(id): Path<String>,
) -> Result<Json<PluginRecord>, ApiError> {
    let record = state.registry.set_enabled(&id, false).await?;
    tracing::info!(actor = %admin.name, plugin = %id, "plugin disabled");
    state
        .audit
        .admin(
            &admin,
            &rid,
            AdminAction { tenant: None, action: "plugin.disable", plugin: Some(&id), detail: json!({}) },
        )
        .await;
    Ok(Json(record))
}

#[derive(Deserialize, IntoParams)]
struct UninstallParams {
    /// Also delete every document the plugin stored, in every tenant.
    #[serde(default)]
    purge: bool,
}

/// Uninstall a plugin (every version). Its data is kept unless `purge=true`.
#[utoipa::path(delete, path = "/v1/admin/plugins/{id}", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id"), UninstallParams),
    responses((status = 204, description = "Uninstalled"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn uninstall_plugin(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    Path(id): Path<String>,
    Query(params): Query<UninstallParams>,
) -> Result<StatusCode, ApiError> {
    let purge = params.purge.then_some(state.store.as_ref());
    let purged = state.registry.uninstall(&id, purge).await?;
    state.tenancy.forget_plugin(&id).await?;
    state.settings.forget_plugin(&id);
    tracing::info!(actor = %admin.name, plugin = %id, purged_documents = purged, "plugin uninstalled");
    let detail = json!({ "purged_documents": purged });
    state
        .audit
        .admin(&admin, &rid, AdminAction { tenant: None, action: "plugin.uninstall", plugin: Some(&id), detail })
        .await;
    Ok(StatusCode::NO_CONTENT)
}

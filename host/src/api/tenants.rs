//! Tenants and what each one controls: its plugins, its tokens, and the permissions it
//! grants to members.
//!
//! Platform admins create, list, suspend and resume tenants under `/v1/admin/tenants`. A
//! tenant's own settings live under `/v1/tenants/{tenant}` and need a principal that may
//! administer that tenant; for anyone else the tenant does not exist (404), so tenant ids do
//! not leak across tenants.

use super::auth::AdminPrincipal;
use super::auth::TenantAdmin;
use super::body::JsonBody;
use super::problem::{ApiError, Problem};
use super::{AppState, RequestId};
use crate::audit::AdminAction;
use crate::dependencies::{self, Dependent, Enabled};
use crate::identity::{Principal, Role, TokenInfo};
use crate::tenancy::{TenancyError, Tenant};
use axum::Json;
use axum::extract::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(show_tenant))
        .routes(routes!(suspend_tenant))
        .routes(routes!(resume_tenant))
        .routes(routes!(tenant_plugins))
        .routes(routes!(enable_for_tenant))
        .routes(routes!(disable_for_tenant))
        .routes(routes!(purge_for_tenant))
        .routes(routes!(preview_upgrade, upgrade_for_tenant))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(list_roles))
        .routes(routes!(role_permissions, set_role_permissions))
}

impl From<TenancyError> for ApiError {
    fn from(e: TenancyError) -> Self {
        match e {
            TenancyError::InvalidId => ApiError::invalid_field("id", e.to_string()),
            TenancyError::InvalidName => ApiError::invalid_field("name", e.to_string()),
            TenancyError::Exists(_) => ApiError::conflict("tenant-exists", e.to_string()).at_field("body", "id"),
            TenancyError::NotFound(_) => ApiError::not_found("tenant-not-found", e.to_string()),
            TenancyError::Database(d) => d.into(),
        }
    }
}

fn db(e: crate::backend::BackendError) -> ApiError {
    e.into()
}

/// The tenant, if `principal` may administer it; otherwise it does not exist for them.
pub(super) async fn administered(state: &AppState, principal: &Principal, tenant: &str) -> Result<Tenant, ApiError> {
    if !principal.may_administer(tenant) {
        if principal.tenant == tenant {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this needs a tenant-admin token"));
        }
        return Err(ApiError::not_found("tenant-not-found", format!("no tenant `{tenant}`")));
    }
    Ok(state.tenancy.get(tenant).await?)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "acme", "name": "Acme Ltd"}))]
pub struct NewTenant {
    /// 2-32 characters of a-z, 0-9 and '-', starting with a letter.
    #[schema(pattern = "^[a-z][a-z0-9-]{0,30}[a-z0-9]$")]
    pub id: String,
    /// 1-100 characters, not blank.
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
}

/// Create a tenant.
#[utoipa::path(post, path = "/v1/admin/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 201, body = Tenant), (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn create_tenant(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    JsonBody(input): JsonBody<NewTenant>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    let tenant = state.tenancy.create(&input.id, &input.name).await?;
    tracing::info!(actor = %admin.name, tenant = %tenant.id, "tenant created");
    state
        .audit
        .admin(
            &admin,
            &rid,
            AdminAction {
                tenant: Some(&tenant.id),
                action: "tenant.create",
                plugin: None,
                detail: json!({ "name": tenant.name }),
            },
        )
        .await;
    Ok((StatusCode::CREATED, Json(tenant)))
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct TenantList {
    pub items: Vec<Tenant>,
}

/// List tenants.
#[utoipa::path(get, path = "/v1/admin/tenants", tag = "tenants", responses((status = 200, body = TenantList)), security(("bearer" = [])))]
async fn list_tenants(State(state): State<AppState>, _admin: AdminPrincipal) -> Result<Json<TenantList>, ApiError> {
    Ok(Json(TenantList { items: state.tenancy.list().await? }))
}

/// Show one tenant.
#[utoipa::path(get, path = "/v1/admin/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path)), responses((status = 200, body = Tenant), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn show_tenant(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    Path(tenant): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    Ok(Json(state.tenancy.get(&tenant).await?))
}

/// Suspend a tenant: its tokens get 403 `tenant-suspended`; its data is kept.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/suspend", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Tenant),
        (status = 409, description = "`cannot-suspend-default`: the default tenant holds the platform admins", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn suspend_tenant(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    Path(tenant): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    if tenant == crate::identity::DEFAULT_TENANT {
        return Err(ApiError::conflict(
            "cannot-suspend-default",
            "the default tenant holds the platform admins and cannot be suspended",
        ));
    }
    let t = state.tenancy.set_status(&tenant, false).await?;
    state.tokens.forget_tenant(&tenant);
    tracing::info!(actor = %admin.name, %tenant, "tenant suspended");
    state
        .audit
        .admin(
            &admin,
            &rid,
            AdminAction { tenant: Some(&tenant), action: "tenant.suspend", plugin: None, detail: json!({}) },
        )
        .await;
    Ok(Json(t))
}

/// Resume a suspended tenant.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/resume", tag = "tenants",
    params(("tenant" = String, Path)), responses((status = 200, body = Tenant)), security(("bearer" = [])))]
async fn resume_tenant(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    Path(tenant): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    let t = state.tenancy.set_status(&tenant, true).await?;
    tracing::info!(actor = %admin.name, %tenant, "tenant resumed");
    state
        .audit
        .admin(
            &admin,
            &rid,
            AdminAction { tenant: Some(&tenant), action: "tenant.resume", plugin: None, detail: json!({}) },
        )
        .await;
    Ok(Json(t))
}

#[derive(Serialize, ToSchema)]
pub struct TenantPlugin {
    pub id: String,
    /// The version this tenant runs (keeps while it is off here); for a plugin never
    /// switched on here, the version it would get.
    pub version: String,
    /// The plugin's active version, when it is not the one this tenant runs: what an
    /// upgrade without a version moves it to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_version: Option<String>,
    pub name: String,
    /// Switched on for this tenant (and on for the platform).
    pub enabled: bool,
    /// Department interfaces it requires (`name@version`).
    pub requires: Vec<String>,
    /// Department interfaces it provides (`name@version`).
    pub provides: Vec<String>,
    /// What it requires that no plugin switched on here provides: its calls there fail
    /// with `department-unavailable` (or would, once it is switched on) until one is.
    pub missing: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TenantPluginList {
    pub items: Vec<TenantPlugin>,
}

/// The installed plugins and whether this tenant has them switched on.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/plugins", tag = "tenants",
    params(("tenant" = String, Path)), responses((status = 200, body = TenantPluginList)), security(("bearer" = [])))]
async fn tenant_plugins(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path(tenant): Path<String>,
) -> Result<Json<TenantPluginList>, ApiError> {
    // One snapshot of the registry for the switches and the listing, each plugin at the
    // version this tenant runs.
    let mut all: Vec<(std::sync::Arc<crate::plugins::LoadedPlugin>, String)> = state
        .registry
        .loaded()
        .into_iter()
        .map(|active| {
            let mine = state.registry.for_tenant(&state.tenancy, &tenant, &active.record.id);
            let active_version = active.record.version.clone();
            (mine.unwrap_or(active), active_version)
        })
        .collect();
    all.sort_by(|a, b| a.0.record.id.cmp(&b.0.record.id));
    let is_on = |p: &crate::plugins::LoadedPlugin| p.record.enabled && state.tenancy.is_enabled(&tenant, &p.record.id);
    let enabled: Vec<Enabled<'_>> = all.iter().filter(|(p, _)| is_on(p)).map(|(p, _)| enabled_of(p)).collect();
    let names = |refs: &[crate::manifest::InterfaceRef]| refs.iter().map(ToString::to_string).collect();
    let items = all
        .iter()
        .map(|(p, active)| {
            let manifest = &p.record.manifest;
            TenantPlugin {
                id: p.record.id.clone(),
                version: p.record.version.clone(),
                active_version: (*active != p.record.version).then(|| active.clone()),
                name: p.record.name.clone(),
                enabled: is_on(p),
                requires: names(manifest.required()),
                provides: names(manifest.provided()),
                missing: dependencies::missing(manifest.required(), manifest.provided(), &enabled),
            }
        })
        .collect();
    Ok(Json(TenantPluginList { items }))
}

/// The plugins switched on in `tenant` (on for the platform and for the tenant), by id.
fn switched_on(state: &AppState, tenant: &str) -> Vec<std::sync::Arc<crate::plugins::LoadedPlugin>> {
    state.registry.serving_tenant(&state.tenancy, tenant)
}

fn enabled_of(p: &crate::plugins::LoadedPlugin) -> Enabled<'_> {
    Enabled { id: &p.record.id, provides: p.record.manifest.provided(), requires: p.record.manifest.required() }
}

/// A plugin switched on or off for a tenant, and what that leaves unserved.
#[derive(Serialize, ToSchema)]
pub struct PluginSwitch {
    pub plugin: String,
    /// Whether it now runs here: switched on for the tenant and on for the platform.
    pub enabled: bool,
    /// Switched on: what it requires that no plugin switched on here provides; its calls
    /// there fail with `department-unavailable` until one is.
    pub missing: Vec<String>,
    /// Switched off by force: the plugins left without a provider of what they require.
    pub dependents: Vec<Dependent>,
}

#[derive(Deserialize, IntoParams)]
struct DisableParams {
    /// Switch it off even though plugins switched on here require what only it provides.
    #[serde(default)]
    force: bool,
}

async fn switch(
    state: &AppState,
    admin: &TenantAdmin,
    plugin: &str,
    on: bool,
    force: bool,
) -> Result<Json<PluginSwitch>, ApiError> {
    if state.registry.get(plugin).is_none() {
        return Err(ApiError::not_found("plugin-not-found", format!("no plugin `{plugin}` is installed")));
    }
    let _checked = state.tenancy.checked_switch().await;
    // The version the tenant would run: the one it ran before, or the active one.
    let target = match state.tenancy.version_of(admin.id(), plugin) {
        Some(version) => state.registry.ensure_version(plugin, &version).await.map_err(ApiError::from)?,
        None => state
            .registry
            .get(plugin)
            .ok_or_else(|| ApiError::not_found("plugin-not-found", format!("no plugin `{plugin}` is installed")))?,
    };
    let loaded = switched_on(state, admin.id());
    let enabled: Vec<Enabled<'_>> = loaded.iter().map(|p| enabled_of(p)).collect();
    let (missing, dependents) = if on {
        let manifest = &target.record.manifest;
        (dependencies::missing(manifest.required(), manifest.provided(), &enabled), Vec::new())
    } else {
        (Vec::new(), dependencies::dependents(plugin, &enabled))
    };
    if let Some(refusal) = on.then(|| unserved_refusal(state, plugin, &target, &loaded)).flatten() {
        return Err(refusal);
    }
    if !on && !force && !dependents.is_empty() {
        return Err(provider_required(&format!("`{plugin}` is the only provider here of"), &dependents));
    }
    if on {
        crate::lifecycle::switch_on(&state.registry, &state.tenancy, admin.id(), plugin).await?;
    } else {
        state.tenancy.set_enabled(admin.id(), plugin, false).await?;
    }
    let action = if on { "tenant.plugin.enable" } else { "tenant.plugin.disable" };
    let detail = if on {
        json!({ "missing": missing })
    } else {
        json!({ "forced": !dependents.is_empty(), "dependents": dependents })
    };
    admin.record(state, action, Some(plugin), detail).await;
    let enabled = on && target.record.enabled;
    Ok(Json(PluginSwitch { plugin: plugin.to_owned(), enabled, missing, dependents }))
}

/// Refuses (409 `interface-incompatible`) a provider version that does not serve what the
/// plugins switched on here import of its interfaces.
fn unserved_refusal(
    state: &AppState,
    plugin: &str,
    target: &crate::plugins::LoadedPlugin,
    loaded: &[std::sync::Arc<crate::plugins::LoadedPlugin>],
) -> Option<ApiError> {
    let unserved = dependencies::unserved(state.runtime.engine(), target, loaded);
    (!unserved.is_empty()).then(|| unserved_problem(plugin, &target.record.version, unserved))
}

/// 409 `provider-required`, its `dependents` member listing each plugin and interface:
/// `{lead} what <dependents> require`.
fn provider_required(lead: &str, dependents: &[Dependent]) -> ApiError {
    let listed: Vec<String> =
        dependents.iter().map(|d| format!("{} ({})", d.plugin, d.interfaces.join(", "))).collect();
    let mut refusal = ApiError::conflict(
        "provider-required",
        format!(
            "{lead} what {} require{}; switch on another provider first, or force it",
            listed.join(" and "),
            if dependents.len() == 1 { "s" } else { "" }
        ),
    );
    let mut members = serde_json::Map::new();
    members.insert("dependents".into(), serde_json::to_value(dependents).unwrap_or_default());
    refusal.extensions = Some(members);
    refusal
}

/// 409 `interface-incompatible`, its `unserved` member listing each plugin and function.
fn unserved_problem(plugin: &str, version: &str, unserved: Vec<dependencies::Unserved>) -> ApiError {
    let listed: Vec<String> = unserved
        .iter()
        .map(|u| {
            let breaks: Vec<String> = u.breaks.iter().map(ToString::to_string).collect();
            format!("{} ({})", u.plugin, breaks.join("; "))
        })
        .collect();
    let mut refusal = ApiError::conflict(
        "interface-incompatible",
        format!(
            "`{plugin}` {version} does not serve what plugins switched on here import of {}: {}",
            unserved[0].interface,
            listed.join(", ")
        ),
    );
    let mut members = serde_json::Map::new();
    members.insert("unserved".into(), serde_json::to_value(&unserved).unwrap_or_default());
    refusal.extensions = Some(members);
    refusal
}

impl From<crate::plugins::MoveError> for ApiError {
    fn from(e: crate::plugins::MoveError) -> Self {
        use crate::plugins::MoveError;
        let code = crate::lifecycle::move_code(&e);
        match e {
            MoveError::NotFound(_) | MoveError::VersionNotFound { .. } => ApiError::not_found(code, e.to_string()),
            MoveError::Reindex(_) => ApiError::conflict(code, e.to_string()),
            MoveError::Superseded { .. }
            | MoveError::MigrationFailed { .. }
            | MoveError::MigrationIrreversible { .. }
            | MoveError::MigrationSkipped { .. }
            | MoveError::MigrationConflict { .. } => ApiError::conflict(code, e.to_string()),
            MoveError::Registry(r) => r.into(),
        }
    }
}

impl From<crate::lifecycle::LifecycleError> for ApiError {
    fn from(e: crate::lifecycle::LifecycleError) -> Self {
        match e {
            crate::lifecycle::LifecycleError::Move(m) => m.into(),
            crate::lifecycle::LifecycleError::Tenancy(t) => t.into(),
        }
    }
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {
    /// The installed version to move to (older is a rollback); the plugin's active version
    /// when absent.
    #[serde(default)]
    pub version: Option<String>,
    /// Move even though plugins switched on here would be left without a provider of an
    /// interface only the current version provides.
    #[serde(default)]
    pub force: bool,
    /// What the version asks for that the one this tenant runs does not, exactly as the
    /// preview (`GET` on this path) or a refusal lists it: the tenant admin's approval.
    #[serde(default)]
    pub approve: Vec<String>,
}

#[derive(Deserialize, IntoParams)]
struct PreviewParams {
    /// The installed version to preview a move to; the plugin's active version when absent.
    version: Option<String>,
}

/// What moving this tenant to a version would mean, before it is asked for.
#[derive(Serialize, ToSchema)]
pub struct UpgradePreview {
    pub plugin: String,
    pub from: String,
    pub to: String,
    /// What the version asks for that the one this tenant runs does not (capabilities,
    /// collections, permissions, department interfaces it calls, event topics it receives,
    /// each `kind:name`): the upgrade must approve exactly this list.
    pub approval_required: Vec<String>,
    /// What it requires that no plugin switched on here provides.
    pub missing: Vec<String>,
    /// Plugins the move would leave without a provider (the upgrade needs `force`).
    pub dependents: Vec<Dependent>,
    /// Why the move would be refused however it is asked (`interface-incompatible`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Preview moving this tenant to another installed version of a plugin: what it would have
/// to approve, what would be missing, and who would lose a provider. Changes nothing.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/plugins/{plugin}/upgrade", tag = "tenants",
    params(("tenant" = String, Path), ("plugin" = String, Path), PreviewParams),
    responses(
        (status = 200, body = UpgradePreview),
        (status = 404, description = "`plugin-not-found`, `version-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`not-switched-on`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn preview_upgrade(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((_tenant, plugin)): Path<(String, String)>,
    Query(params): Query<PreviewParams>,
) -> Result<Json<UpgradePreview>, ApiError> {
    let (current, target) = move_ends(&state, admin.id(), &plugin, params.version).await?;
    let mut preview = UpgradePreview {
        plugin: plugin.clone(),
        from: current.record.version.clone(),
        to: target.record.version.clone(),
        approval_required: crate::lifecycle::new_asks(&current.record.manifest, &target.record.manifest),
        missing: vec![],
        dependents: vec![],
        refused: None,
    };
    match crate::lifecycle::check_move(&state.registry, &state.tenancy, state.runtime.engine(), admin.id(), &target) {
        Ok(checked) => preview.missing = checked.missing,
        Err(crate::lifecycle::Refusal::ProviderRequired(dependents)) => preview.dependents = dependents,
        Err(crate::lifecycle::Refusal::Unserved(unserved)) => {
            preview.refused = Some(unserved_problem(&plugin, &preview.to, unserved).detail)
        }
    }
    Ok(Json(preview))
}

/// The version `tenant` runs of `plugin` and the one it would move to (`version`, or the
/// active one).
async fn move_ends(
    state: &AppState,
    tenant: &str,
    plugin: &str,
    version: Option<String>,
) -> Result<(std::sync::Arc<crate::plugins::LoadedPlugin>, std::sync::Arc<crate::plugins::LoadedPlugin>), ApiError> {
    let Some(active) = state.registry.get(plugin) else {
        return Err(ApiError::not_found("plugin-not-found", format!("no plugin `{plugin}` is installed")));
    };
    let version = version.unwrap_or_else(|| active.record.version.clone());
    let Some(from) = state.tenancy.version_of(tenant, plugin) else {
        return Err(ApiError::conflict(
            "not-switched-on",
            format!("this tenant never switched `{plugin}` on; switching it on gives it {}", active.record.version),
        ));
    };
    let current = state.registry.ensure_version(plugin, &from).await?;
    let target = state.registry.ensure_version(plugin, &version).await?;
    Ok((current, target))
}

/// What moving this tenant to another version did.
#[derive(Serialize, ToSchema)]
pub struct TenantUpgrade {
    #[serde(flatten)]
    pub moved: crate::plugins::Moved,
    /// What the new version requires that no plugin switched on here provides.
    pub missing: Vec<String>,
    /// Moved by force: the plugins left without a provider of what they require.
    pub dependents: Vec<Dependent>,
}

/// Move this tenant to another installed version of a plugin (the active one by default;
/// an older one rolls back). The tenant's index entries are rewritten for the version and
/// its switch moves in one transaction; until it commits, requests go to the version it
/// ran, and those in flight finish there. Refused with 409 `interface-incompatible` when
/// the version does not serve what plugins switched on here import of it, with 409
/// `provider-required` when it stops providing what they require (unless `force`), and with
/// 409 `approval-required` (its `requested` member listing them) when it asks for more than
/// the version this tenant runs and `approve` does not list exactly that.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/plugins/{plugin}/upgrade", tag = "tenants",
    params(("tenant" = String, Path), ("plugin" = String, Path)),
    request_body = UpgradeRequest,
    responses(
        (status = 200, body = TenantUpgrade),
        (status = 404, description = "`plugin-not-found`, `version-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`not-switched-on`, `approval-required`, `interface-incompatible`, `provider-required`, `move-conflict`, `index-data-mismatch` (a document does not fit the version's indexes; named), `migration-failed`, `migration-irreversible`, `migration-skipped`, `migration-conflict`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: the body is not an upgrade request", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn upgrade_for_tenant(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((_tenant, plugin)): Path<(String, String)>,
    JsonBody(request): JsonBody<UpgradeRequest>,
) -> Result<Json<TenantUpgrade>, ApiError> {
    let _checked = state.tenancy.checked_switch().await;
    let (current, target) = move_ends(&state, admin.id(), &plugin, request.version.clone()).await?;
    let (from, version) = (current.record.version.clone(), target.record.version.clone());
    if let Some(requested) = crate::lifecycle::approval_needed(&current, &target, &request.approve) {
        let mut refusal = ApiError::conflict(
            "approval-required",
            format!(
                "`{plugin}` {version} asks for what {from} did not: {}; approve exactly that list to move",
                requested.join(", ")
            ),
        );
        let mut members = serde_json::Map::new();
        members.insert("requested".into(), serde_json::to_value(&requested).unwrap_or_default());
        refusal.extensions = Some(members);
        return Err(refusal);
    }
    let checked =
        crate::lifecycle::check_move(&state.registry, &state.tenancy, state.runtime.engine(), admin.id(), &target);
    let (missing, dependents) = match checked {
        Ok(checked) => (checked.missing, checked.dependents),
        Err(crate::lifecycle::Refusal::Unserved(unserved)) => {
            return Err(unserved_problem(&plugin, &target.record.version, unserved));
        }
        Err(crate::lifecycle::Refusal::ProviderRequired(dependents)) if request.force => (vec![], dependents),
        Err(crate::lifecycle::Refusal::ProviderRequired(dependents)) => {
            return Err(provider_required(&format!("`{plugin}` {version} stops providing"), &dependents));
        }
    };
    let moved = crate::lifecycle::move_tenant(&state.calls, admin.id(), &plugin, &version).await?;
    let detail = json!({
        "from": from,
        "to": version,
        "entries_rewritten": moved.entries_rewritten,
        "forced": !dependents.is_empty(),
        "dependents": dependents,
        "approved": request.approve,
    });
    admin.record(&state, "tenant.plugin.upgrade", Some(&plugin), detail).await;
    Ok(Json(TenantUpgrade { moved, missing, dependents }))
}

/// Switch an installed plugin on for this tenant. What it requires that no plugin switched
/// on here provides is listed in `missing`. A provider is refused (409
/// `interface-incompatible`, the problem's `unserved` listing each plugin and function)
/// when plugins switched on here import functions of its interface it lacks or types
/// otherwise.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/plugins/{plugin}/enable", tag = "tenants",
    params(("tenant" = String, Path), ("plugin" = String, Path)),
    responses((status = 200, body = PluginSwitch), (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`interface-incompatible`", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn enable_for_tenant(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((_tenant, plugin)): Path<(String, String)>,
) -> Result<Json<PluginSwitch>, ApiError> {
    switch(&state, &admin, &plugin, true, false).await
}

/// Switch a plugin off for this tenant: its routes answer 404 here; the data is kept.
/// Refused (409 `provider-required`, listing the dependents) while it is the only provider
/// of what other plugins switched on here require, unless `force=true`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/plugins/{plugin}/disable", tag = "tenants",
    params(("tenant" = String, Path), ("plugin" = String, Path), DisableParams),
    responses(
        (status = 200, body = PluginSwitch),
        (status = 400, description = "`force` is not `true` or `false`", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`provider-required`: other plugins here require what only it provides; the problem's `dependents` lists each plugin and interface", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn disable_for_tenant(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((_tenant, plugin)): Path<(String, String)>,
    Query(params): Query<DisableParams>,
) -> Result<Json<PluginSwitch>, ApiError> {
    switch(&state, &admin, &plugin, false, params.force).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// The plugin's id again: a purge cannot be undone (422 `confirmation-mismatch`
    /// otherwise).
    #[schema(pattern = "^[a-z][a-z0-9-]{0,30}[a-z0-9]$")]
    pub confirm: String,
}

#[derive(Serialize, ToSchema)]
pub struct PurgeReport {
    pub plugin: String,
    /// Documents deleted (with their index entries and full-text rows).
    pub documents: u64,
    /// Setting values deleted (secrets included).
    pub settings: usize,
    /// Jobs of the plugin in this tenant that had not started, cancelled.
    pub jobs_cancelled: u64,
}

/// Delete everything this tenant stored with a plugin: its documents (with their index
/// entries and full-text rows), sequences and settings, and cancel its queued jobs here.
/// Other tenants' data, the plugin itself, and the audit log are untouched. The plugin must
/// be switched off here first, and the request must name it again in `confirm`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/plugins/{plugin}/purge", tag = "tenants",
    params(("tenant" = String, Path), ("plugin" = String, Path)),
    request_body = PurgeRequest,
    responses(
        (status = 200, body = PurgeReport),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`plugin-enabled`: switch it off here first", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`confirmation-mismatch`: `confirm` is not the plugin's id", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn purge_for_tenant(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((_tenant, plugin)): Path<(String, String)>,
    JsonBody(request): JsonBody<PurgeRequest>,
) -> Result<Json<PurgeReport>, ApiError> {
    if state.registry.get(&plugin).is_none() {
        return Err(ApiError::not_found("plugin-not-found", format!("no plugin `{plugin}` is installed")));
    }
    if request.confirm != plugin {
        return Err(ApiError::unprocessable(
            "confirmation-mismatch",
            format!("`confirm` must be `{plugin}`, the plugin whose data is deleted"),
        ));
    }
    // No switch on while the data goes: it would run on half of it.
    let _checked = state.tenancy.checked_switch().await;
    if state.tenancy.is_enabled(admin.id(), &plugin) {
        return Err(ApiError::conflict(
            "plugin-enabled",
            format!("`{plugin}` is switched on for this tenant; switch it off first, then purge"),
        ));
    }
    let scope = crate::storage::Scope { tenant: admin.id().to_owned(), plugin: plugin.clone() };
    let documents = state.store.purge_scope(&scope).await.map_err(|e| match e {
        crate::storage::StoreError::Unavailable(m) => ApiError::unavailable("storage-unavailable", m),
        other => {
            tracing::error!(error = %other, %plugin, "purging a tenant's plugin data failed");
            ApiError::internal("purging the plugin's data failed; nothing was deleted")
        }
    })?;
    let settings = state.settings.purge(admin.id(), &plugin, &admin.principal.name).await.map_err(|e| {
        tracing::error!(error = %e, %plugin, "purging a tenant's plugin settings failed");
        ApiError::internal("the plugin's documents were deleted but its settings were not; purge again")
    })?;
    // Work queued for data that is gone would run on nothing once switched on again.
    let jobs = state.jobs.cancel_queued_of(admin.id(), &plugin, state.clock.now_ms()).await.map_err(|e| {
        tracing::error!(error = %e, %plugin, "cancelling a purged plugin's queued jobs failed");
        ApiError::internal("the plugin's data was deleted but its queued jobs were not cancelled; purge again")
    })?;
    let detail = json!({ "documents": documents, "settings": settings, "jobs_cancelled": jobs });
    admin.record(&state, "tenant.plugin.purge", Some(&plugin), detail).await;
    Ok(Json(PurgeReport { plugin, documents, settings, jobs_cancelled: jobs }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "payroll export", "role": "member", "ttl_seconds": 86400}))]
pub struct NewToken {
    /// 1-100 characters, not blank.
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
    /// `tenant-admin`, `member`, or a tenant-defined role name (e.g. `agent`).
    #[schema(pattern = "^[a-z][a-z0-9-]{1,31}$")]
    pub role: String,
    /// Lifetime in seconds (1 second to 2 years); none means until revoked.
    #[schema(minimum = 1, maximum = 63244800)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// Shown only now; only a hash is stored.
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// Two years of 366 days (the schema of `NewToken::ttl_seconds` says the same).
const MAX_TTL_SECONDS: u64 = 2 * 366 * 24 * 3600;

/// Create a token for this tenant (a person's or a service's).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/tokens", tag = "tenants", request_body = NewToken,
    params(("tenant" = String, Path)), responses((status = 201, body = CreatedToken)), security(("bearer" = [])))]
async fn create_token(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path(tenant): Path<String>,
    JsonBody(input): JsonBody<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    check_tenant_role(&input.role)?;
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid_field("name", "`name` must be 1-100 characters"));
    }
    let expires_at = match input.ttl_seconds {
        None => None,
        Some(s) if (1..=MAX_TTL_SECONDS).contains(&s) => Some(state.clock.now_ms() + (s as i64) * 1000),
        Some(_) => return Err(ApiError::invalid_field("ttl_seconds", "`ttl_seconds` must be 1 second to 2 years")),
    };
    let issued = state.tokens.issue(name, &input.role, &tenant, expires_at).await.map_err(db)?;
    let info = TokenInfo {
        id: issued.id.clone(),
        prefix: issued.prefix.clone(),
        name: name.to_owned(),
        role: input.role.clone(),
        created_at: issued.created_at,
        expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    admin
        .record(
            &state,
            "token.create",
            None,
            json!({ "token": issued.id, "prefix": issued.prefix, "role": input.role.as_str() }),
        )
        .await;
    Ok((StatusCode::CREATED, Json(CreatedToken { token: issued.token, info })))
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenInfo>,
}

/// This tenant's tokens (never their secrets).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/tokens", tag = "tenants",
    params(("tenant" = String, Path)), responses((status = 200, body = TokenList)), security(("bearer" = [])))]
async fn list_tokens(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path(tenant): Path<String>,
) -> Result<Json<TokenList>, ApiError> {
    Ok(Json(TokenList { items: state.tokens.list(&tenant).await.map_err(db)? }))
}

/// Revoke a token at once.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/tokens/{token}", tag = "tenants",
    params(("tenant" = String, Path), ("token" = String, Path)), responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn revoke_token(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((tenant, token)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if !state.tokens.revoke(&tenant, &token).await.map_err(db)? {
        return Err(ApiError::not_found("token-not-found", format!("no token `{token}` in tenant `{tenant}`")));
    }
    admin.record(&state, "token.revoke", None, json!({ "token": token })).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A role a tenant may hand out: `tenant-admin`, or a member-standing role (`member` or a
/// tenant-defined name). Never `platform-admin`.
pub(super) fn check_tenant_role(role: &str) -> Result<(), ApiError> {
    match Role::of(role) {
        Some(Role::PlatformAdmin) => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "tenants cannot hand out platform-admin")
                .at_field("body", "role"))
        }
        Some(_) => Ok(()),
        None => Err(ApiError::unprocessable("invalid-role", "role names are 2-32 characters of a-z, 0-9 and '-'")
            .at_field("body", "role")),
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// Plugin permissions, as declared in the installed plugins' manifests.
    pub permissions: BTreeSet<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RoleGrants {
    pub role: String,
    pub permissions: BTreeSet<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RoleList {
    pub items: Vec<RoleGrants>,
}

/// The roles this tenant grants permissions to. `tenant-admin` holds every permission and is
/// not listed.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/roles", tag = "tenants",
    params(("tenant" = String, Path)), responses((status = 200, body = RoleList)), security(("bearer" = [])))]
async fn list_roles(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path(tenant): Path<String>,
) -> Result<Json<RoleList>, ApiError> {
    let items =
        state.tenancy.roles(&tenant).into_iter().map(|(role, permissions)| RoleGrants { role, permissions }).collect();
    Ok(Json(RoleList { items }))
}

fn grantable_role(role: &str) -> Result<(), ApiError> {
    match Role::of(role) {
        Some(Role::Member) => Ok(()),
        Some(_) => Err(ApiError::unprocessable("reserved-role", format!("`{role}` holds every permission already"))
            .at_field("path", "role")),
        None => Err(ApiError::unprocessable("invalid-role", "role names are 2-32 characters of a-z, 0-9 and '-'")
            .at_field("path", "role")),
    }
}

/// The plugin permissions this tenant grants to a role.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/roles/{role}/permissions", tag = "tenants",
    params(("tenant" = String, Path), ("role" = String, Path)), responses((status = 200, body = Permissions)), security(("bearer" = [])))]
async fn role_permissions(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path((tenant, role)): Path<(String, String)>,
) -> Result<Json<Permissions>, ApiError> {
    grantable_role(&role)?;
    Ok(Json(Permissions { permissions: state.tenancy.granted(&tenant, &role) }))
}

/// Replace the plugin permissions this tenant grants to a role (`member` or its own role
/// names; a new name creates the role).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/roles/{role}/permissions", tag = "tenants", request_body = Permissions,
    params(("tenant" = String, Path), ("role" = String, Path)),
    responses((status = 200, body = Permissions), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn set_role_permissions(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((tenant, role)): Path<(String, String)>,
    JsonBody(input): JsonBody<Permissions>,
) -> Result<Json<Permissions>, ApiError> {
    grantable_role(&role)?;
    let declared: BTreeSet<String> =
        state.registry.list().into_iter().flat_map(|p| p.manifest.permissions.into_keys()).collect();
    if let Some(unknown) = input.permissions.iter().find(|p| !declared.contains(*p)) {
        return Err(ApiError::unprocessable("unknown-permission", format!("no installed plugin declares `{unknown}`"))
            .at_field("body", "permissions"));
    }
    state.tenancy.set_grants(&tenant, &role, input.permissions.clone()).await?;
    admin.record(&state, "role.grant", None, json!({ "role": role, "permissions": input.permissions })).await;
    Ok(Json(input))
}

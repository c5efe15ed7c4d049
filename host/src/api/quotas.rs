//! A tenant's share of the platform: its storage quotas with current usage, and the plugin
//! instances it holds now against its share.
//!
//! Tenant admins read their own; only platform admins set quotas (a tenant raising its own
//! quota would defeat it).

use super::auth::AdminPrincipal;
use super::auth::TenantAdmin;
use super::body::JsonBody;
use super::problem::{ApiError, Problem};
use super::{AppState, RequestId};
use crate::audit::AdminAction;
use crate::storage::{Quotas, StoreError, Usage};
use axum::Json;
use axum::extract::{Extension, Path, State};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show_quotas, set_quotas, reset_quotas))
}

#[derive(Serialize, ToSchema)]
pub struct PluginUsage {
    pub plugin: String,
    pub documents: u64,
    pub bytes: u64,
}

/// Plugin instances the tenant holds now, against its share.
#[derive(Serialize, ToSchema)]
pub struct InstanceShare {
    pub in_use: u32,
    pub limit: u32,
    /// Memory its running calls reserve (their plugins' caps plus host buffers).
    pub memory_reserved_bytes: u64,
    pub memory_limit_bytes: u64,
}

#[derive(Serialize, ToSchema)]
pub struct TenantQuotas {
    pub tenant: String,
    pub quotas: Quotas,
    /// What the tenant stores over all its plugins.
    pub usage: Usage,
    /// Per plugin (plugins that store nothing are left out).
    pub plugins: Vec<PluginUsage>,
    pub instances: InstanceShare,
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "quota store failure");
    ApiError::internal("storage usage is unavailable")
}

async fn describe(state: &AppState, tenant: &str) -> Result<TenantQuotas, ApiError> {
    let quotas = state.store.quotas(tenant).await.map_err(store_error)?;
    let per_plugin = state.store.usage(tenant).await.map_err(store_error)?;
    let usage = per_plugin.iter().fold(Usage::default(), |total, (_, u)| Usage {
        documents: total.documents + u.documents,
        bytes: total.bytes + u.bytes,
    });
    let admission = state.runtime.admission();
    let (in_use, reserved) = admission.tenant_usage(tenant);
    Ok(TenantQuotas {
        tenant: tenant.to_owned(),
        quotas,
        usage,
        plugins: per_plugin
            .into_iter()
            .map(|(plugin, u)| PluginUsage { plugin, documents: u.documents, bytes: u.bytes })
            .collect(),
        instances: InstanceShare {
            in_use,
            limit: admission.limits().tenant_instances,
            memory_reserved_bytes: reserved,
            memory_limit_bytes: admission.limits().tenant_memory_bytes,
        },
    })
}

/// The tenant's quotas and what it uses now.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/quotas", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 200, body = TenantQuotas), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn show_quotas(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path(tenant): Path<String>,
) -> Result<Json<TenantQuotas>, ApiError> {
    Ok(Json(describe(&state, &tenant).await?))
}

/// Set the tenant's own quotas (platform admins only). Lowering a quota below what the
/// tenant stores refuses its growing writes until it is under again; deletes always pass.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/quotas", tag = "tenants",
    params(("tenant" = String, Path)), request_body = Quotas,
    responses((status = 200, body = TenantQuotas), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn set_quotas(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    Path(tenant): Path<String>,
    JsonBody(quotas): JsonBody<Quotas>,
) -> Result<Json<TenantQuotas>, ApiError> {
    state.tenancy.get(&tenant).await?;
    let positive = [
        ("tenant_documents", quotas.tenant_documents),
        ("tenant_bytes", quotas.tenant_bytes),
        ("plugin_documents", quotas.plugin_documents),
        ("plugin_bytes", quotas.plugin_bytes),
    ];
    if let Some((field, _)) = positive.iter().find(|(_, v)| *v == 0 || *v > i64::MAX as u64) {
        return Err(ApiError::unprocessable("invalid-field", format!("`{field}` must be 1..=2^63-1")));
    }
    if quotas.plugin_documents > quotas.tenant_documents || quotas.plugin_bytes > quotas.tenant_bytes {
        return Err(ApiError::unprocessable(
            "invalid-field",
            "a plugin's quota (`plugin_documents`, `plugin_bytes`) cannot exceed the tenant's",
        ));
    }
    state.store.set_quotas(&tenant, Some(quotas), state.clock.now_ms()).await.map_err(store_error)?;
    tracing::info!(actor = %admin.name, %tenant, "quotas set");
    let detail = serde_json::to_value(quotas).unwrap_or_default();
    state
        .audit
        .admin(&admin, &rid, AdminAction { tenant: Some(&tenant), action: "tenant.quotas.set", plugin: None, detail })
        .await;
    Ok(Json(describe(&state, &tenant).await?))
}

/// Give the tenant the platform's default quotas again (platform admins only).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/quotas", tag = "tenants",
    params(("tenant" = String, Path)), responses((status = 200, body = TenantQuotas)), security(("bearer" = [])))]
async fn reset_quotas(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    Path(tenant): Path<String>,
) -> Result<Json<TenantQuotas>, ApiError> {
    state.tenancy.get(&tenant).await?;
    state.store.set_quotas(&tenant, None, state.clock.now_ms()).await.map_err(store_error)?;
    state
        .audit
        .admin(
            &admin,
            &rid,
            AdminAction { tenant: Some(&tenant), action: "tenant.quotas.reset", plugin: None, detail: json!({}) },
        )
        .await;
    Ok(Json(describe(&state, &tenant).await?))
}

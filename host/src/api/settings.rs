//! A plugin's settings in one tenant: what the manifest declares, with the tenant's values.
//!
//! Tenant admins read and change their own tenant's settings; secrets are write-only (the
//! listing says whether one is set, never its value) and audited by name only.

use super::AppState;
use super::auth::TenantAdmin;
use super::body::JsonBody;
use super::problem::{ApiError, Problem};
use crate::manifest::{Manifest, SettingType, SettingValue};
use crate::settings::SettingsError;
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show_settings, change_settings))
}

/// One declared setting and the tenant's value.
#[derive(Serialize, ToSchema)]
pub struct SettingView {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SettingType,
    pub description: String,
    pub secret: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<SettingValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// Whether the tenant set a value (else the default applies).
    pub set: bool,
    /// What the plugin reads now: the tenant's value or the default (text, integer or
    /// boolean, by the setting's type); `null` for a secret or an unset setting.
    #[schema(value_type = serde_json::Value)]
    pub value: Value,
    pub updated_at: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct PluginSettings {
    pub tenant: String,
    pub plugin: String,
    pub items: Vec<SettingView>,
}

/// Settings to change: name → value of the setting's type, or `null` for the default.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    #[schema(value_type = Object)]
    pub values: BTreeMap<String, Value>,
}

fn manifest_of(state: &AppState, plugin: &str) -> Result<Manifest, ApiError> {
    state
        .registry
        .get(plugin)
        .map(|p| p.record.manifest.clone())
        .ok_or_else(|| ApiError::not_found("plugin-not-found", format!("no plugin `{plugin}` is installed")))
}

fn settings_error(e: SettingsError) -> ApiError {
    match e {
        SettingsError::Unknown(_) => ApiError::unprocessable("unknown-setting", e.to_string()),
        SettingsError::Invalid { .. } => ApiError::unprocessable("invalid-setting", e.to_string()),
        // The same code a plugin call gets when its settings cannot be read.
        SettingsError::Database(inner) => {
            tracing::error!(error = %inner, "settings store failure");
            let mut e = ApiError::unavailable("settings-unavailable", "settings cannot be read or saved now");
            e.retry_after = Some(1);
            e
        }
    }
}

async fn describe(state: &AppState, tenant: &str, manifest: &Manifest) -> Result<PluginSettings, ApiError> {
    let stored = state.settings.stored(tenant, &manifest.id).await.map_err(settings_error)?;
    let effective = state.settings.effective(tenant, manifest).await.map_err(settings_error)?;
    let items = manifest
        .settings
        .iter()
        .map(|spec| {
            let set = stored.get(&spec.name).filter(|s| spec.accepts_text(&s.value));
            let value = match (spec.secret, effective.get(&spec.name)) {
                (false, Some(text)) => spec.to_json(text),
                _ => Value::Null,
            };
            SettingView {
                name: spec.name.clone(),
                kind: spec.kind,
                description: spec.description.clone(),
                secret: spec.secret,
                default: spec.default.clone(),
                choices: spec.choices.clone(),
                min: spec.min,
                max: spec.max,
                set: set.is_some(),
                value,
                updated_at: set.map(|s| s.updated_at),
            }
        })
        .collect();
    Ok(PluginSettings { tenant: tenant.to_owned(), plugin: manifest.id.clone(), items })
}

/// A plugin's settings in a tenant, with what the plugin reads now (secrets: only whether
/// they are set).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/plugins/{plugin}/settings", tag = "tenants",
    params(("tenant" = String, Path), ("plugin" = String, Path)),
    responses((status = 200, body = PluginSettings), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn show_settings(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path((tenant, plugin)): Path<(String, String)>,
) -> Result<Json<PluginSettings>, ApiError> {
    let manifest = manifest_of(&state, &plugin)?;
    Ok(Json(describe(&state, &tenant, &manifest).await?))
}

/// Changes some settings, all or none. Each value is JSON of the setting's type; `null`
/// gives the setting its default again. Errors name the setting.
#[utoipa::path(patch, path = "/v1/tenants/{tenant}/plugins/{plugin}/settings", tag = "tenants",
    params(("tenant" = String, Path), ("plugin" = String, Path)), request_body = SettingsChange,
    responses((status = 200, body = PluginSettings), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn change_settings(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((tenant, plugin)): Path<(String, String)>,
    JsonBody(change): JsonBody<SettingsChange>,
) -> Result<Json<PluginSettings>, ApiError> {
    let manifest = manifest_of(&state, &plugin)?;
    if change.values.is_empty() {
        return Err(ApiError::unprocessable("invalid-field", "`values` names no setting"));
    }
    let mut changes = BTreeMap::new();
    for (name, value) in &change.values {
        let spec = manifest
            .settings
            .iter()
            .find(|s| &s.name == name)
            .ok_or_else(|| settings_error(SettingsError::Unknown(name.clone())))?;
        let value = match value {
            Value::Null => None,
            Value::Bool(b) => Some(SettingValue::Boolean(*b)),
            Value::String(s) => Some(SettingValue::String(s.clone())),
            Value::Number(n) if n.is_i64() => Some(SettingValue::Integer(n.as_i64().unwrap_or_default())),
            _ => {
                let reason = format!("must be {}", spec.kind.with_article());
                return Err(settings_error(SettingsError::Invalid { name: name.clone(), reason }));
            }
        };
        changes.insert(name.clone(), value);
    }
    state.settings.update(&tenant, &manifest, &changes, &admin.principal.token_id).await.map_err(settings_error)?;
    // The audit names every changed setting; it records values only of settings that are
    // not secret.
    let shown: BTreeMap<&String, &Value> = change
        .values
        .iter()
        .filter(|(name, _)| manifest.settings.iter().any(|s| &s.name == *name && !s.secret))
        .collect();
    let names: Vec<&String> = change.values.keys().collect();
    tracing::info!(actor = %admin.principal.name, %tenant, %plugin, settings = ?names, "plugin settings changed");
    let detail = json!({ "settings": names, "values": shown });
    admin.record(&state, "plugin.settings.change", Some(&plugin), detail).await;
    Ok(Json(describe(&state, &tenant, &manifest).await?))
}

//! The publisher keys platform admins trust: `/v1/admin/trusted-keys`. An install signed by
//! one of them records its name as the version's signer; see [`crate::signing`].

use super::AppState;
use super::RequestId;
use super::auth::AdminPrincipal;
use super::body::JsonBody;
use super::problem::{ApiError, Problem};
use crate::audit::AdminAction;
use crate::plugins::TrustOutcome;
use crate::signing::{PublicKey, TrustedKey, valid_key_name};
use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_keys)).routes(routes!(trust_key, distrust_key))
}

#[derive(Serialize, ToSchema)]
pub struct TrustedKeyList {
    /// Whether every install must be signed by one of them.
    pub signatures_required: bool,
    /// The config file's keys, then those trusted over the API, by name.
    pub items: Vec<TrustedKey>,
}

/// The publisher keys this platform trusts, and whether installs must be signed.
#[utoipa::path(get, path = "/v1/admin/trusted-keys", tag = "plugins",
    responses((status = 200, body = TrustedKeyList)), security(("bearer" = [])))]
async fn list_keys(State(state): State<AppState>, _admin: AdminPrincipal) -> Result<Json<TrustedKeyList>, ApiError> {
    let items = state.registry.trusted_keys().await?;
    Ok(Json(TrustedKeyList { signatures_required: state.registry.signatures_required(), items }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTrustedKey {
    /// `ed25519:<32 bytes, base64url>`, as `keel key new` prints it; 422
    /// `invalid-public-key` for 32 bytes that are not a point of the curve.
    #[schema(pattern = "^ed25519:[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")]
    pub public_key: String,
}

/// Trust a publisher's key under a name. Trusting it again under the same name is a no-op
/// (200); a name holds one key and a key one name (409).
#[utoipa::path(put, path = "/v1/admin/trusted-keys/{name}", tag = "plugins",
    params(("name" = String, Path, description = "a-z, 0-9, '-', '.', starting with a letter")),
    request_body = NewTrustedKey,
    responses(
        (status = 201, description = "Trusted", body = TrustedKey),
        (status = 200, description = "Already trusted under this name", body = TrustedKey),
        (status = 409, description = "`key-name-taken`, or `key-already-trusted` under another name", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-key-name`, `invalid-public-key`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn trust_key(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    Path(name): Path<String>,
    JsonBody(input): JsonBody<NewTrustedKey>,
) -> Result<(StatusCode, Json<TrustedKey>), ApiError> {
    if !valid_key_name(&name) {
        return Err(ApiError::unprocessable(
            "invalid-key-name",
            "key names are 1-64 of a-z, 0-9, '-' and '.', starting with a letter",
        ));
    }
    let key: PublicKey = input
        .public_key
        .parse()
        .map_err(|e: crate::signing::SignatureError| ApiError::unprocessable("invalid-public-key", e.to_string()))?;
    let status = match state.registry.trust_key(&name, key, &admin.name).await? {
        TrustOutcome::Added => StatusCode::CREATED,
        TrustOutcome::Unchanged => StatusCode::OK,
        TrustOutcome::NameTaken => {
            return Err(ApiError::conflict(
                "key-name-taken",
                format!("`{name}` names another key; distrust it first, or choose another name"),
            ));
        }
        TrustOutcome::KeyTrustedAs(other) => {
            return Err(ApiError::conflict(
                "key-already-trusted",
                format!("this key is trusted already, as `{other}`"),
            ));
        }
    };
    if status == StatusCode::CREATED {
        let detail = json!({ "name": name, "public_key": key.to_string() });
        let entry = AdminAction { tenant: None, action: "trusted-key.add", plugin: None, detail };
        state.audit.admin(&admin, &rid, entry).await;
    }
    let trusted = state.registry.trusted_keys().await?;
    let record = trusted
        .into_iter()
        .find(|k| k.name == name)
        .ok_or_else(|| ApiError::conflict("key-name-taken", format!("`{name}` was distrusted meanwhile")))?;
    Ok((status, Json(record)))
}

/// Stop trusting a key. Versions it signed stay installed (their `signer` is history);
/// later installs signed by it are treated as signed by an unknown key. Keys from the
/// config file are changed only there (409 `key-from-config`).
#[utoipa::path(delete, path = "/v1/admin/trusted-keys/{name}", tag = "plugins",
    params(("name" = String, Path)),
    responses(
        (status = 204, description = "No longer trusted"),
        (status = 404, description = "`key-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`key-from-config`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn distrust_key(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let trusted = state.registry.trusted_keys().await?;
    if trusted.iter().any(|k| k.name == name && k.source == "config") {
        return Err(ApiError::conflict(
            "key-from-config",
            format!("`{name}` is trusted by the server's config file; remove it there"),
        ));
    }
    if !state.registry.distrust_key(&name).await? {
        return Err(ApiError::not_found("key-not-found", format!("no trusted key is named `{name}`")));
    }
    let entry =
        AdminAction { tenant: None, action: "trusted-key.remove", plugin: None, detail: json!({ "name": name }) };
    state.audit.admin(&admin, &rid, entry).await;
    Ok(StatusCode::NO_CONTENT)
}

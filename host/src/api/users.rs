//! Users of a tenant and signing in with a password.

use super::auth::TenantAdmin;
use super::body::JsonBody;
use super::problem::{ApiError, Problem};
use super::tenants::check_tenant_role;
use super::{AppState, RequestId};
use crate::audit::AdminAction;
use crate::users::{LoginError, User, UserError};
use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How long a sign-in token lives.
const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(show_user))
        .routes(routes!(reset_password))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
        .routes(routes!(login))
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::InvalidUsername => ApiError::invalid_field("username", e.to_string()),
            UserError::InvalidDisplayName => ApiError::invalid_field("display_name", e.to_string()),
            UserError::WeakPassword => ApiError::invalid_field("password", e.to_string()),
            UserError::Exists(_) => ApiError::conflict("user-exists", e.to_string()).at_field("body", "username"),
            UserError::NotFound(_) => ApiError::not_found("user-not-found", e.to_string()),
            UserError::Database(d) => d.into(),
            UserError::Hash(_) => {
                tracing::error!(error = %e, "user store failure");
                ApiError::internal("user store failure")
            }
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 1-64 letters, digits, '.', '_', '-' and '@'.
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    pub username: String,
    /// 1-100 characters, not blank.
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub display_name: String,
    /// 12-256 characters; stored only as an argon2id hash.
    #[schema(min_length = 12, max_length = 256)]
    pub password: String,
    /// `tenant-admin`, `member`, or a tenant-defined role; in the `default` tenant a platform
    /// admin may also create `platform-admin` users.
    #[schema(pattern = "^[a-z][a-z0-9-]{1,31}$")]
    pub role: String,
}

/// Create a user in this tenant.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/users", tag = "tenants", request_body = NewUser,
    params(("tenant" = String, Path)),
    responses((status = 201, body = User), (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn create_user(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path(tenant): Path<String>,
    JsonBody(input): JsonBody<NewUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    // Platform admins sign in as users of the default tenant; only a platform admin makes one.
    let platform_admin = input.role == crate::identity::Role::PlatformAdmin.as_str()
        && admin.principal.is_platform_admin()
        && tenant == crate::identity::DEFAULT_TENANT;
    if !platform_admin {
        check_tenant_role(&input.role)?;
    }
    let user = state.users.create(&tenant, &input.username, &input.display_name, &input.password, &input.role).await?;
    admin.record(&state, "user.create", None, json!({ "user": user.id, "role": user.role })).await;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub items: Vec<User>,
}

/// This tenant's users.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/users", tag = "tenants",
    params(("tenant" = String, Path)), responses((status = 200, body = UserList)), security(("bearer" = [])))]
async fn list_users(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path(tenant): Path<String>,
) -> Result<Json<UserList>, ApiError> {
    let items = state.users.list(&tenant).await.map_err(UserError::from)?;
    Ok(Json(UserList { items }))
}

/// One user of this tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/users/{user}", tag = "tenants",
    params(("tenant" = String, Path), ("user" = String, Path)),
    responses((status = 200, body = User), (status = 404, description = "`user-not-found`", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn show_user(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((_tenant, user)): Path<(String, String)>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(state.users.get(admin.id(), &user).await?))
}

/// The user an admin is about to change. A platform admin's account is changed only by a
/// platform admin: otherwise the default tenant's admins could take over the platform.
async fn changeable(state: &AppState, admin: &TenantAdmin, id: &str) -> Result<User, ApiError> {
    let user = state.users.get(admin.id(), id).await?;
    if user.role == crate::identity::Role::PlatformAdmin.as_str() && !admin.principal.is_platform_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only a platform admin may change a platform admin",
        ));
    }
    Ok(user)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// 12-256 characters; stored only as an argon2id hash.
    #[schema(min_length = 12, max_length = 256)]
    pub password: String,
}

/// Set a user's password. The user's sign-in sessions end and a sign-in lockout is lifted;
/// API tokens not made by signing in are unaffected.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/users/{user}/password", tag = "tenants", request_body = NewPassword,
    params(("tenant" = String, Path), ("user" = String, Path)),
    responses((status = 200, body = User),
        (status = 403, description = "`forbidden`: the user is a platform admin and the caller is not", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`user-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn reset_password(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((_tenant, user)): Path<(String, String)>,
    JsonBody(input): JsonBody<NewPassword>,
) -> Result<Json<User>, ApiError> {
    changeable(&state, &admin, &user).await?;
    let user = state.users.reset_password(admin.id(), &user, &input.password).await?;
    state.tokens.forget_user(&user.id);
    admin.record(&state, "user.password-reset", None, json!({ "user": user.id })).await;
    Ok(Json(user))
}

/// Disable a user: signing in is refused (as for a wrong password) and the user's sign-in
/// sessions end at once. The user's records keep its id. Idempotent.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/users/{user}/disable", tag = "tenants",
    params(("tenant" = String, Path), ("user" = String, Path)),
    responses((status = 200, body = User),
        (status = 403, description = "`forbidden`: the user is a platform admin and the caller is not", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`user-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`cannot-disable-self`: an admin cannot lock themselves out", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn disable_user(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((_tenant, user)): Path<(String, String)>,
) -> Result<Json<User>, ApiError> {
    let target = changeable(&state, &admin, &user).await?;
    if admin.principal.user_id.as_deref() == Some(target.id.as_str()) {
        return Err(ApiError::conflict("cannot-disable-self", "you cannot disable the account you are signed in with"));
    }
    let user = state.users.set_disabled(admin.id(), &target.id, true).await?;
    state.tokens.forget_user(&user.id);
    admin.record(&state, "user.disable", None, json!({ "user": user.id })).await;
    Ok(Json(user))
}

/// Enable a disabled user again; it signs in with its password (earlier sessions stay ended).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/users/{user}/enable", tag = "tenants",
    params(("tenant" = String, Path), ("user" = String, Path)),
    responses((status = 200, body = User),
        (status = 403, description = "`forbidden`: the user is a platform admin and the caller is not", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`user-not-found`", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn enable_user(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((_tenant, user)): Path<(String, String)>,
) -> Result<Json<User>, ApiError> {
    changeable(&state, &admin, &user).await?;
    let user = state.users.set_disabled(admin.id(), &user, false).await?;
    admin.record(&state, "user.enable", None, json!({ "user": user.id })).await;
    Ok(Json(user))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub tenant: String,
    pub username: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct Session {
    /// A bearer token for this user, valid for 12 hours; shown only now.
    pub token: String,
    pub expires_at: i64,
    pub user: User,
}

/// Sign in with a password. After 5 consecutive failures for a (tenant, username) further
/// attempts are refused for 15 minutes with 429, whether or not the user exists.
#[utoipa::path(post, path = "/v1/auth/login", tag = "tenants", request_body = Login,
    responses((status = 200, body = Session), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 429, body = Problem, content_type = "application/problem+json")))]
async fn login(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    JsonBody(input): JsonBody<Login>,
) -> Result<Json<Session>, ApiError> {
    let audit = |action: &'static str, detail: serde_json::Value| {
        let (state, rid, tenant) = (state.clone(), rid.clone(), input.tenant.clone());
        async move {
            state
                .audit
                .append(
                    "anonymous",
                    "sign-in",
                    &rid,
                    AdminAction { tenant: Some(&tenant), action, plugin: None, detail },
                )
                .await
        }
    };
    match state.users.verify(&input.tenant, &input.username, &input.password).await {
        Ok(user) => {
            let expires_at = state.clock.now_ms() + SESSION_TTL_MS;
            let issued = state
                .tokens
                .issue_for(
                    &format!("sign-in of {}", user.username),
                    &user.role,
                    &user.tenant,
                    Some(expires_at),
                    Some(&user.id),
                )
                .await
                .map_err(ApiError::from)?;
            audit("auth.login", json!({ "user": user.id, "token": issued.id })).await;
            Ok(Json(Session { token: issued.token, expires_at, user }))
        }
        Err(LoginError::InvalidCredentials) => {
            audit("auth.login.failed", json!({ "username": input.username })).await;
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "the tenant, username or password is wrong",
            ))
        }
        Err(LoginError::Locked { retry_after_ms }) => {
            audit("auth.login.locked", json!({ "username": input.username })).await;
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-attempts",
                "too many failed sign-ins; try again later",
            );
            e.retry_after = Some(((retry_after_ms + 999) / 1000) as u64);
            Err(e)
        }
        Err(LoginError::Database(e)) => {
            tracing::error!(error = %e, "sign-in failed");
            Err(ApiError::unavailable("auth-unavailable", "sign-in is temporarily unavailable"))
        }
    }
}

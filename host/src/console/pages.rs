//! The console's pages. Each reads and changes the platform only through the API, as the
//! signed-in person ([`Session::api`]); a refusal there (403, 404) is the page's refusal.

use super::api::{ApiReply, FieldErrors, segment};
use super::session::{Form, Session};
use super::{ConsoleState, layout, message_for, respond};
use crate::identity::Principal;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::{Value, json};

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/console/tenants", get(tenants).post(create_tenant))
        .route("/console/tenants/{tenant}/suspend", get(confirm_suspend).post(suspend_tenant))
        .route("/console/tenants/{tenant}/resume", post(resume_tenant))
        .route("/console/tenants/{tenant}/departments", get(departments))
        .route("/console/tenants/{tenant}/departments/{plugin}/{switch}", post(switch_department))
        .route("/console/tenants/{tenant}/users", get(users).post(create_user))
        .route("/console/tenants/{tenant}/users/{user}", get(user))
        .route("/console/tenants/{tenant}/users/{user}/password", post(reset_password))
        .route("/console/tenants/{tenant}/users/{user}/disable", get(confirm_disable).post(disable_user))
        .route("/console/tenants/{tenant}/users/{user}/enable", post(enable_user))
        .route("/console/tenants/{tenant}/roles", get(roles).post(set_role))
        .route("/console/tenants/{tenant}/jobs", get(jobs))
        .route("/console/tenants/{tenant}/jobs/{job}/{change}", post(change_job))
}

/// The pages a person's role reaches, for the navigation bar.
pub fn navigation(principal: &Principal) -> Vec<(String, &'static str)> {
    let mut links = vec![("/console/".to_owned(), "Home")];
    if principal.may_administer(&principal.tenant) {
        let tenant = segment(&principal.tenant);
        links.push((format!("/console/tenants/{tenant}/departments"), "Departments"));
        links.push((format!("/console/tenants/{tenant}/users"), "Users"));
        links.push((format!("/console/tenants/{tenant}/roles"), "Roles"));
        links.push((format!("/console/tenants/{tenant}/jobs"), "Jobs"));
        links.push((format!("/console/tenants/{tenant}/tokens"), "API tokens"));
        links.push((format!("/console/tenants/{tenant}/audit"), "Audit log"));
    }
    if principal.is_platform_admin() {
        links.push(("/console/plugins".to_owned(), "Plugins"));
        links.push(("/console/tenants".to_owned(), "Tenants"));
        links.push(("/console/audit".to_owned(), "Platform audit"));
        links.push(("/console/health".to_owned(), "Health"));
    }
    links
}

#[derive(serde::Deserialize)]
pub struct Done {
    pub(super) done: Option<String>,
}

/// What a finished change says, from a fixed list: the query cannot put words on a page.
pub(super) fn notice(done: &Done) -> Option<&'static str> {
    Some(match done.done.as_deref()? {
        "enabled" => "The department is switched on.",
        "disabled" => "The department is switched off. Its data is kept.",
        "user-created" => "The user is created and can sign in now.",
        "password-reset" => "The password is set. The person's sessions have ended; they sign in with the new one.",
        "user-disabled" => "The person is disabled: signed out everywhere, and sign-in is refused until enabled.",
        "user-enabled" => "The person is enabled and can sign in again.",
        "tenant-created" => "The tenant is created.",
        "tenant-suspended" => "The tenant is suspended: its people and tokens are refused until it is resumed.",
        "tenant-resumed" => "The tenant is active again.",
        "role-saved" => "The role's permissions are saved. They apply to its people's next request.",
        "job-retried" => "The job is queued again, with a fresh set of attempts.",
        "job-cancelled" => "The job is cancelled; it will not run.",
        "token-revoked" => "The token is revoked: requests with it are refused from now on.",
        "schedule-run" => "The schedule's run is queued; it shows under Jobs.",
        "task-cancelled" => "The task is cancelled: no further chunk runs.",
        "installed" => "The plugin is installed. Tenants switch it on from their Departments page.",
        "plugin-enabled" => "The plugin is on for the platform.",
        "plugin-disabled" => "The plugin is off for the platform: its routes answer 404 in every tenant. Data is kept.",
        "uninstalled" => "The plugin is uninstalled. Its data is kept unless you purged it.",
        "version-pinned" => {
            "The version is pinned: tenants switching the plugin on get it, and installs do not move it."
        }
        "version-unpinned" => "Unpinned: the newest installed version is the one tenants switching the plugin on get.",
        _ => return None,
    })
}

/// A millisecond timestamp as UTC date and time.
pub(super) fn when(ms: Option<i64>) -> String {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// The page for an API refusal or failure.
pub(super) fn refused(session: &Session, reply: &ApiReply) -> Response {
    let title = match reply.status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::TOO_MANY_REQUESTS => "Slow down",
        s if s.is_server_error() => "Unavailable",
        _ => "Refused",
    };
    message_for(Some(session), reply.status, title, &reply.detail())
}

/// A refused form's messages above it: those about the form as a whole, and those about a
/// field the form has no control for (`placed` lists the ones it has, which show their
/// message beside them).
pub(super) fn error_banner(errors: &FieldErrors, placed: &[&str]) -> Markup {
    let unplaced = errors.fields.iter().filter(|(field, _)| !placed.contains(&field.as_str()));
    let beside = errors.fields.iter().any(|(field, _)| placed.contains(&field.as_str()));
    html! {
        @for message in &errors.general {
            p.error role="alert" { (message) }
        }
        @for (_, message) in unplaced {
            p.error role="alert" { (message) }
        }
        @if beside {
            p.error role="alert" { "Some fields need attention; see the messages beside them." }
        }
    }
}

/// A labelled text input with its validation message beside it (and tied to it for
/// screen readers).
pub(super) fn field(
    name: &str,
    label: &str,
    kind: &str,
    value: &str,
    errors: &FieldErrors,
    hint: Option<&str>,
) -> Markup {
    let error = errors.for_field(name);
    let described = match (error.is_some(), hint.is_some()) {
        (true, _) => Some(format!("{name}-error")),
        (false, true) => Some(format!("{name}-hint")),
        (false, false) => None,
    };
    html! {
        div.field {
            label for=(name) { (label) }
            input id=(name) name=(name) type=(kind) value=(value) required
                aria-invalid=[error.map(|_| "true")] aria-describedby=[described];
            @if let Some(error) = error {
                p.field-error id={(name) "-error"} { (error) }
            } @else if let Some(hint) = hint {
                p.hint id={(name) "-hint"} { (hint) }
            }
        }
    }
}

pub(super) fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// The signed-in person's start page: who they are and the departments their organisation
/// runs.
pub async fn home(State(state): State<ConsoleState>, session: Session) -> Response {
    let principal = &session.principal;
    let mut departments = state.app.registry.serving_tenant(&state.app.tenancy, &principal.tenant);
    departments.sort_by(|a, b| a.record.name.cmp(&b.record.name));
    let content = html! {
        p { "Signed in as " strong { (principal.name) } " (" (principal.role_name) ") in " strong { (principal.tenant) } "." }
        h2 { "Departments" }
        @if departments.is_empty() {
            p { "No department is switched on for your organisation yet." }
        } @else {
            ul.cards {
                @for plugin in &departments {
                    li.card {
                        h3 {
                            @if super::views::visible_views(&state, &session, plugin).iter().any(|v| v.in_menu()) {
                                a href={"/console/apps/" (segment(&plugin.record.id))} { (plugin.record.name) }
                            } @else {
                                (plugin.record.name)
                            }
                        }
                        p { (plugin.record.description) }
                        p.meta { "Version " (plugin.record.version) }
                    }
                }
            }
        }
    };
    respond(StatusCode::OK, layout("Home", Some(&session), None, content))
}

// Tenant admins: departments.

pub async fn departments(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    departments_page(&state, &session, &tenant, notice(&done), None).await
}

async fn departments_page(
    state: &ConsoleState,
    session: &Session,
    tenant: &str,
    notice: Option<&str>,
    failure: Option<&ApiReply>,
) -> Response {
    let path = format!("/v1/tenants/{}/plugins", segment(tenant));
    let reply = session.api(state, Method::GET, &path, None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let items = reply.body["items"].as_array().cloned().unwrap_or_default();
    let base = format!("/console/tenants/{}/departments", segment(tenant));
    let content = html! {
        @if let Some(failure) = failure {
            p.error role="alert" { (failure.detail()) }
        }
        p { "Switch departments on or off for " strong { (tenant) } ". Switching one off keeps its data." }
        table {
            caption { "Installed departments" }
            thead { tr { th scope="col" { "Department" } th scope="col" { "Version" } th scope="col" { "Status" } th scope="col" { "Action" } } }
            tbody {
                @for item in &items {
                    @let id = item["id"].as_str().unwrap_or("");
                    @let enabled = item["enabled"].as_bool().unwrap_or(false);
                    @let missing: Vec<&str> = item["missing"].as_array().map(|m| m.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                    tr {
                        th scope="row" { (item["name"].as_str().unwrap_or(id)) br; span.meta { (id) } }
                        td { (item["version"].as_str().unwrap_or("")) }
                        td {
                            @if enabled { span.on { "On" } } @else { span.off { "Off" } }
                            @if !missing.is_empty() {
                                p.meta { "Needs: " (missing.join(", ")) }
                            }
                        }
                        td {
                            form method="post" action={(base) "/" (segment(id)) "/" (if enabled { "disable" } else { "enable" })} {
                                (csrf(session))
                                button type="submit" aria-label={(if enabled { "Switch off " } else { "Switch on " }) (id)} {
                                    (if enabled { "Switch off" } else { "Switch on" })
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let status = failure.map_or(StatusCode::OK, |f| f.status);
    respond(status, layout("Departments", Some(session), notice, content))
}

pub async fn switch_department(
    State(state): State<ConsoleState>,
    session: Session,
    Path((tenant, plugin, switch)): Path<(String, String, String)>,
    form: Form,
) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    if switch != "enable" && switch != "disable" {
        return message_for(Some(&session), StatusCode::NOT_FOUND, "Not found", "There is no such console page.");
    }
    let path = format!("/v1/tenants/{}/plugins/{}/{switch}", segment(&tenant), segment(&plugin));
    let reply = session.api(&state, Method::POST, &path, None).await;
    if reply.ok() {
        let done = if switch == "enable" { "enabled" } else { "disabled" };
        return Redirect::to(&format!("/console/tenants/{}/departments?done={done}", segment(&tenant))).into_response();
    }
    if matches!(reply.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED) {
        return refused(&session, &reply);
    }
    departments_page(&state, &session, &tenant, None, Some(&reply)).await
}

// Tenant admins: users.

pub async fn users(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    users_page(&state, &session, &tenant, notice(&done), &Form { fields: Vec::new() }, None).await
}

async fn users_page(
    state: &ConsoleState,
    session: &Session,
    tenant: &str,
    notice: Option<&str>,
    form: &Form,
    failure: Option<&ApiReply>,
) -> Response {
    let tenant_path = segment(tenant);
    let reply = session.api(state, Method::GET, &format!("/v1/tenants/{tenant_path}/users"), None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let roles = session.api(state, Method::GET, &format!("/v1/tenants/{tenant_path}/roles"), None).await;
    let mut role_names: Vec<String> = vec!["member".into(), "tenant-admin".into()];
    for role in roles.body["items"].as_array().into_iter().flatten() {
        if let Some(name) = role["role"].as_str()
            && !role_names.iter().any(|r| r == name)
        {
            role_names.push(name.to_owned());
        }
    }
    let errors = failure.map(ApiReply::field_errors).unwrap_or_default();
    let chosen_role = form.get("role").unwrap_or("member");
    let items = reply.body["items"].as_array().cloned().unwrap_or_default();
    let content = html! {
        table {
            caption { "People in " (tenant) }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Username" } th scope="col" { "Role" } th scope="col" { "Status" } th scope="col" { "Created" } } }
            tbody {
                @for user in &items {
                    tr {
                        th scope="row" {
                            a href={"/console/tenants/" (tenant_path) "/users/" (segment(user["id"].as_str().unwrap_or("")))} {
                                (user["display_name"].as_str().unwrap_or(""))
                            }
                        }
                        td { (user["username"].as_str().unwrap_or("")) }
                        td { (user["role"].as_str().unwrap_or("")) }
                        td { (account_status(user)) }
                        td { (when(user["created_at"].as_i64())) }
                    }
                }
            }
        }
        h2 #new-user { "Add a person" }
        form.card method="post" action={"/console/tenants/" (tenant_path) "/users"} aria-labelledby="new-user" {
            (csrf(session))
            (error_banner(&errors, &["username", "display_name", "password", "role"]))
            (field("username", "Username", "text", form.text("username"), &errors, Some("Letters, digits, '.', '_', '-' and '@'.")))
            (field("display_name", "Display name", "text", form.text("display_name"), &errors, None))
            // The password is never sent back: after a refusal it is typed again.
            (field("password", "Password", "password", "", &errors, Some("At least 12 characters.")))
            div.field {
                label for="role" { "Role" }
                select #role name="role" {
                    @for role in &role_names {
                        option value=(role) selected[role == chosen_role] { (role) }
                    }
                }
                @if let Some(error) = errors.for_field("role") {
                    p.field-error { (error) }
                }
            }
            button type="submit" { "Add person" }
        }
    };
    let status = failure.map_or(StatusCode::OK, |f| f.status);
    respond(status, layout("Users", Some(session), notice, content))
}

pub async fn create_user(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    form: Form,
) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    let body = json!({
        "username": form.text("username").trim(),
        "display_name": form.text("display_name").trim(),
        "password": form.text("password"),
        "role": form.text("role"),
    });
    let path = format!("/v1/tenants/{}/users", segment(&tenant));
    let reply = session.api(&state, Method::POST, &path, Some(&body)).await;
    if reply.ok() {
        return Redirect::to(&format!("/console/tenants/{}/users?done=user-created", segment(&tenant))).into_response();
    }
    if matches!(reply.status, StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND) {
        return refused(&session, &reply);
    }
    users_page(&state, &session, &tenant, None, &form, Some(&reply)).await
}

fn account_status(user: &serde_json::Value) -> String {
    match user["disabled_at"].as_i64() {
        Some(at) => format!("Disabled since {}", when(Some(at))),
        None => "Active".to_owned(),
    }
}

pub async fn user(
    State(state): State<ConsoleState>,
    session: Session,
    Path((tenant, user)): Path<(String, String)>,
    Query(done): Query<Done>,
) -> Response {
    user_page(&state, &session, &tenant, &user, notice(&done), None).await
}

/// One person: their account, a new password, and disabling or enabling them.
async fn user_page(
    state: &ConsoleState,
    session: &Session,
    tenant: &str,
    user: &str,
    notice: Option<&str>,
    failure: Option<&ApiReply>,
) -> Response {
    let base = format!("/console/tenants/{}/users/{}", segment(tenant), segment(user));
    let reply = session
        .api(state, Method::GET, &format!("/v1/tenants/{}/users/{}", segment(tenant), segment(user)), None)
        .await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let person = &reply.body;
    let name = person["display_name"].as_str().unwrap_or("").to_owned();
    let yourself = session.principal.user_id.as_deref() == person["id"].as_str();
    let errors = failure.map(ApiReply::field_errors).unwrap_or_default();
    let content = html! {
        p { a href={"/console/tenants/" (segment(tenant)) "/users"} { "All people" } }
        dl.record {
            dt { "Username" } dd { (person["username"].as_str().unwrap_or("")) }
            dt { "Role" } dd { (person["role"].as_str().unwrap_or("")) }
            dt { "Status" } dd { (account_status(person)) }
            dt { "Created" } dd { (when(person["created_at"].as_i64())) }
        }
        h2 #new-password { "Set a new password" }
        form.card method="post" action={(base) "/password"} aria-labelledby="new-password" {
            (csrf(session))
            (error_banner(&errors, &["password"]))
            @if yourself {
                p.hint { "This is your own account: your sessions end too, and you sign in again with the new password." }
            } @else {
                p.hint { "Their sessions end at once and a sign-in lockout is lifted. Tell them the new password another way." }
            }
            (field("password", "New password", "password", "", &errors, Some("At least 12 characters.")))
            button type="submit" { "Set password" }
        }
        h2 { "Access" }
        @if person["disabled_at"].is_i64() {
            form.card method="post" action={(base) "/enable"} {
                (csrf(session))
                p { (name) " cannot sign in. Enabling lets them sign in again with their password." }
                button type="submit" { "Enable" }
            }
        } @else if yourself {
            p { "You cannot disable the account you are signed in with." }
        } @else {
            p { a.button.danger href={(base) "/disable"} { "Disable " (name) "…" } }
        }
    };
    let status = failure.map_or(StatusCode::OK, |f| f.status);
    respond(status, layout(&name, Some(session), notice, content))
}

pub async fn reset_password(
    State(state): State<ConsoleState>,
    session: Session,
    Path((tenant, user)): Path<(String, String)>,
    form: Form,
) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    let path = format!("/v1/tenants/{}/users/{}/password", segment(&tenant), segment(&user));
    let reply = session.api(&state, Method::PUT, &path, Some(&json!({ "password": form.text("password") }))).await;
    if reply.ok() {
        let to = format!("/console/tenants/{}/users/{}?done=password-reset", segment(&tenant), segment(&user));
        return Redirect::to(&to).into_response();
    }
    if reply.status != StatusCode::UNPROCESSABLE_ENTITY {
        return refused(&session, &reply);
    }
    user_page(&state, &session, &tenant, &user, None, Some(&reply)).await
}

/// Disabling signs a person out everywhere: it is asked for on its own page first.
pub async fn confirm_disable(
    State(state): State<ConsoleState>,
    session: Session,
    Path((tenant, user)): Path<(String, String)>,
) -> Response {
    let reply = session
        .api(&state, Method::GET, &format!("/v1/tenants/{}/users/{}", segment(&tenant), segment(&user)), None)
        .await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let base = format!("/console/tenants/{}/users/{}", segment(&tenant), segment(&user));
    let name = reply.body["display_name"].as_str().unwrap_or("").to_owned();
    let content = html! {
        form.card method="post" action={(base) "/disable"} {
            (csrf(&session))
            p { "Disable " strong { (name) } " (" (reply.body["username"].as_str().unwrap_or("")) ")? They are signed out everywhere and cannot sign in until enabled. Their records are kept." }
            div.buttons {
                button.danger type="submit" { "Disable" }
                a href=(base) { "Cancel" }
            }
        }
    };
    respond(StatusCode::OK, layout("Disable a person", Some(&session), None, content))
}

pub async fn disable_user(
    State(state): State<ConsoleState>,
    session: Session,
    Path((tenant, user)): Path<(String, String)>,
    form: Form,
) -> Response {
    account_switch(state, session, tenant, user, form, "disable").await
}

pub async fn enable_user(
    State(state): State<ConsoleState>,
    session: Session,
    Path((tenant, user)): Path<(String, String)>,
    form: Form,
) -> Response {
    account_switch(state, session, tenant, user, form, "enable").await
}

async fn account_switch(
    state: ConsoleState,
    session: Session,
    tenant: String,
    user: String,
    form: Form,
    change: &str,
) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    let path = format!("/v1/tenants/{}/users/{}/{change}", segment(&tenant), segment(&user));
    let reply = session.api(&state, Method::POST, &path, None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let done = if change == "disable" { "user-disabled" } else { "user-enabled" };
    Redirect::to(&format!("/console/tenants/{}/users/{}?done={done}", segment(&tenant), segment(&user))).into_response()
}

// Tenant admins: roles and their grants.

pub async fn roles(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    roles_page(&state, &session, &tenant, notice(&done), None).await
}

/// The permissions the departments switched on in `tenant` declare, by department.
fn declared_permissions(state: &ConsoleState, tenant: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut plugins = state.app.registry.serving_tenant(&state.app.tenancy, tenant);
    plugins.sort_by(|a, b| a.record.name.cmp(&b.record.name));
    plugins
        .iter()
        .filter(|p| !p.record.manifest.permissions.is_empty())
        .map(|p| {
            let permissions = p.record.manifest.permissions.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            (p.record.name.clone(), permissions)
        })
        .collect()
}

async fn roles_page(
    state: &ConsoleState,
    session: &Session,
    tenant: &str,
    notice: Option<&str>,
    failure: Option<&ApiReply>,
) -> Response {
    let tenant_path = segment(tenant);
    let reply = session.api(state, Method::GET, &format!("/v1/tenants/{tenant_path}/roles"), None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let mut roles: Vec<(String, Vec<String>)> = reply.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let granted = r["permissions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect();
            (r["role"].as_str().unwrap_or("").to_owned(), granted)
        })
        .collect();
    if !roles.iter().any(|(name, _)| name == "member") {
        roles.insert(0, ("member".to_owned(), Vec::new()));
    }
    let catalogue = declared_permissions(state, tenant);
    let errors = failure.map(ApiReply::field_errors).unwrap_or_default();
    let action = format!("/console/tenants/{tenant_path}/roles");
    let grant_boxes = |prefix: &str, granted: &[String]| {
        html! {
            @for (department, permissions) in &catalogue {
                fieldset {
                    legend { (department) }
                    @for (permission, about) in permissions {
                        @let id = format!("{prefix}--{permission}");
                        div.check {
                            input type="checkbox" id=(id) name="permission" value=(permission) checked[granted.contains(permission)];
                            label for=(id) { code { (permission) } }
                            @if !about.is_empty() { p.hint { (about) } }
                        }
                    }
                }
            }
        }
    };
    let content = html! {
        p { "Tenant admins hold every permission. Every other role holds what is ticked here; " code { "member" } " is everyone's role unless given another." }
        @if catalogue.is_empty() {
            p { "Switch a department on to grant its permissions." }
        }
        @for (role, granted) in &roles {
            form.card.role method="post" action=(action) aria-labelledby={"role-" (role)} {
                h2 id={"role-" (role)} { (role) }
                (csrf(session))
                input type="hidden" name="role" value=(role);
                (grant_boxes(role, granted))
                button type="submit" { "Save " (role) }
            }
        }
        h2 #new-role { "A new role" }
        form.card method="post" action=(action) aria-labelledby="new-role" {
            (csrf(session))
            (error_banner(&errors, &["role"]))
            (field("role", "Name", "text", "", &errors, Some("2-32 characters of a-z, 0-9 and '-', e.g. agent.")))
            (grant_boxes("new", &[]))
            button type="submit" { "Create role" }
        }
    };
    let status = failure.map_or(StatusCode::OK, |f| f.status);
    respond(status, layout("Roles", Some(session), notice, content))
}

pub async fn set_role(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    form: Form,
) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    let role = form.text("role").trim();
    let body = json!({ "permissions": form.all("permission") });
    let path = format!("/v1/tenants/{}/roles/{}/permissions", segment(&tenant), segment(role));
    let reply = session.api(&state, Method::PUT, &path, Some(&body)).await;
    if reply.ok() {
        return Redirect::to(&format!("/console/tenants/{}/roles?done=role-saved", segment(&tenant))).into_response();
    }
    if matches!(reply.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return refused(&session, &reply);
    }
    roles_page(&state, &session, &tenant, None, Some(&reply)).await
}

// Tenant admins: background jobs.

#[derive(serde::Deserialize)]
pub struct JobFilter {
    status: Option<String>,
    kind: Option<String>,
    plugin: Option<String>,
    cursor: Option<String>,
    done: Option<String>,
}

pub async fn jobs(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(filter): Query<JobFilter>,
) -> Response {
    jobs_page(&state, &session, &tenant, &filter, None).await
}

async fn jobs_page(
    state: &ConsoleState,
    session: &Session,
    tenant: &str,
    filter: &JobFilter,
    failure: Option<&ApiReply>,
) -> Response {
    let tenant_path = segment(tenant);
    let filters = {
        // Not held across an await: the serializer is not `Send`.
        let mut query = form_urlencoded::Serializer::new(String::new());
        let chosen = [("status", &filter.status), ("kind", &filter.kind), ("plugin", &filter.plugin)];
        for (name, value) in chosen {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                query.append_pair(name, value);
            }
        }
        query.finish()
    };
    let mut path = format!("/v1/tenants/{tenant_path}/jobs?limit=50");
    if !filters.is_empty() {
        path = format!("{path}&{filters}");
    }
    if let Some(cursor) = &filter.cursor {
        path = format!("{path}&cursor={}", segment(cursor));
    }
    let reply = session.api(state, Method::GET, &path, None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let items = reply.body["items"].as_array().cloned().unwrap_or_default();
    let next = reply.body["next"].as_str().map(|cursor| {
        let and = if filters.is_empty() { String::new() } else { format!("{filters}&") };
        format!("/console/tenants/{tenant_path}/jobs?{and}cursor={}", segment(cursor))
    });
    let select = |name: &str, label: &str, choices: &[&str], current: &Option<String>| {
        html! {
            div.field {
                label for=(name) { (label) }
                select id=(name) name=(name) {
                    option value="" { "Any" }
                    @for choice in choices {
                        option value=(choice) selected[current.as_deref() == Some(*choice)] { (choice) }
                    }
                }
            }
        }
    };
    let done = Done { done: filter.done.clone() };
    let content = html! {
        (super::operations::work_tabs(tenant))
        @if let Some(failure) = failure {
            p.error role="alert" { (failure.detail()) }
        }
        form.filters method="get" action={"/console/tenants/" (tenant_path) "/jobs"} aria-label="Filters" {
            (select("status", "Status", &["queued", "running", "done", "dead", "cancelled"], &filter.status))
            (select("kind", "Kind", &["job", "schedule", "event"], &filter.kind))
            div.field {
                label for="plugin" { "Plugin" }
                input #plugin name="plugin" value=(filter.plugin.as_deref().unwrap_or(""));
            }
            button type="submit" { "Filter" }
        }
        @if items.is_empty() {
            p { "No jobs match." }
        } @else {
            table {
                caption.visually-hidden { "Jobs" }
                thead { tr { th scope="col" { "Job" } th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "Last error" } th scope="col" { "Updated" } th scope="col" { "Action" } } }
                tbody {
                    @for job in &items {
                        @let id = job["id"].as_str().unwrap_or("");
                        @let status = job["status"].as_str().unwrap_or("");
                        tr {
                            th scope="row" data-label="Job" {
                                (job["plugin"].as_str().unwrap_or("")) " · " (job["kind"].as_str().unwrap_or("")) " · " (job["name"].as_str().unwrap_or(""))
                                br; span.meta { (id) }
                            }
                            td data-label="Status" { (status) }
                            td data-label="Attempts" { (job["attempts"].as_u64().unwrap_or(0)) " of " (job["max_attempts"].as_u64().unwrap_or(0)) }
                            td data-label="Last error" { (job["last_error"].as_str().unwrap_or("")) }
                            td data-label="Updated" { (when(job["updated_at"].as_i64())) }
                            td {
                                @let change = match status { "dead" | "cancelled" => Some(("retry", "Retry")), "queued" => Some(("cancel", "Cancel")), _ => None };
                                @if let Some((change, label)) = change {
                                    form.inline method="post" action={"/console/tenants/" (tenant_path) "/jobs/" (segment(id)) "/" (change)} {
                                        (csrf(session))
                                        button type="submit" aria-label={(label) " " (id)} { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p { a href=(next) rel="next" { "Next page" } }
        }
    };
    let status = failure.map_or(StatusCode::OK, |f| f.status);
    respond(status, layout("Jobs", Some(session), notice(&done), content))
}

pub async fn change_job(
    State(state): State<ConsoleState>,
    session: Session,
    Path((tenant, job, change)): Path<(String, String, String)>,
    form: Form,
) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    if change != "retry" && change != "cancel" {
        return message_for(Some(&session), StatusCode::NOT_FOUND, "Not found", "There is no such console page.");
    }
    let path = format!("/v1/tenants/{}/jobs/{}/{change}", segment(&tenant), segment(&job));
    let reply = session.api(&state, Method::POST, &path, None).await;
    if reply.ok() {
        let done = if change == "retry" { "job-retried" } else { "job-cancelled" };
        return Redirect::to(&format!("/console/tenants/{}/jobs?done={done}", segment(&tenant))).into_response();
    }
    if matches!(reply.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
        return refused(&session, &reply);
    }
    let filter = JobFilter { status: None, kind: None, plugin: None, cursor: None, done: None };
    jobs_page(&state, &session, &tenant, &filter, Some(&reply)).await
}

// Platform admins: tenants.

pub async fn tenants(State(state): State<ConsoleState>, session: Session, Query(done): Query<Done>) -> Response {
    tenants_page(&state, &session, notice(&done), &Form { fields: Vec::new() }, None).await
}

async fn tenants_page(
    state: &ConsoleState,
    session: &Session,
    notice: Option<&str>,
    form: &Form,
    failure: Option<&ApiReply>,
) -> Response {
    let reply = session.api(state, Method::GET, "/v1/admin/tenants", None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let errors = failure.map(ApiReply::field_errors).unwrap_or_default();
    let items = reply.body["items"].as_array().cloned().unwrap_or_default();
    let content = html! {
        table {
            caption { "Tenants" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Id" } th scope="col" { "Status" } th scope="col" { "Created" } th scope="col" { "Manage" } } }
            tbody {
                @for tenant in &items {
                    @let id = tenant["id"].as_str().unwrap_or("");
                    @let active = tenant["status"].as_str() == Some("active");
                    tr {
                        th scope="row" { (tenant["name"].as_str().unwrap_or("")) }
                        td { (id) }
                        td { @if active { span.on { "Active" } } @else { span.off { "Suspended" } } }
                        td { (when(tenant["created_at"].as_i64())) }
                        td.actions {
                            a href={"/console/tenants/" (segment(id)) "/departments"} { "Departments" }
                            " "
                            a href={"/console/tenants/" (segment(id)) "/users"} { "Users" }
                            " "
                            a href={"/console/tenants/" (segment(id)) "/jobs"} { "Jobs" }
                            " "
                            @if active {
                                a href={"/console/tenants/" (segment(id)) "/suspend"} { "Suspend…" }
                            } @else {
                                form.inline method="post" action={"/console/tenants/" (segment(id)) "/resume"} {
                                    (csrf(session))
                                    button type="submit" aria-label={"Resume " (id)} { "Resume" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 #new-tenant { "Create a tenant" }
        form.card method="post" action="/console/tenants" aria-labelledby="new-tenant" {
            (csrf(session))
            (error_banner(&errors, &["id", "name"]))
            (field("id", "Id", "text", form.text("id"), &errors, Some("2-32 characters of a-z, 0-9 and '-', starting with a letter.")))
            (field("name", "Name", "text", form.text("name"), &errors, None))
            button type="submit" { "Create tenant" }
        }
    };
    let status = failure.map_or(StatusCode::OK, |f| f.status);
    respond(status, layout("Tenants", Some(session), notice, content))
}

pub async fn create_tenant(State(state): State<ConsoleState>, session: Session, form: Form) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    let body = json!({ "id": form.text("id").trim(), "name": form.text("name").trim() });
    let reply = session.api(&state, Method::POST, "/v1/admin/tenants", Some(&body)).await;
    if reply.ok() {
        return Redirect::to("/console/tenants?done=tenant-created").into_response();
    }
    if matches!(reply.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return refused(&session, &reply);
    }
    tenants_page(&state, &session, None, &form, Some(&reply)).await
}

/// Suspending shuts a whole organisation out: it is asked for on its own page first.
pub async fn confirm_suspend(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
) -> Response {
    let reply = session.api(&state, Method::GET, &format!("/v1/admin/tenants/{}", segment(&tenant)), None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let name = reply.body["name"].as_str().unwrap_or(&tenant).to_owned();
    let content = html! {
        form.card method="post" action={"/console/tenants/" (segment(&tenant)) "/suspend"} {
            (csrf(&session))
            p { "Suspend " strong { (name) } " (" (tenant) ")? Its people are signed out and its tokens, routes and jobs are refused until it is resumed. No data is removed." }
            div.buttons {
                button.danger type="submit" { "Suspend tenant" }
                a href="/console/tenants" { "Cancel" }
            }
        }
    };
    respond(StatusCode::OK, layout("Suspend tenant", Some(&session), None, content))
}

pub async fn suspend_tenant(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    form: Form,
) -> Response {
    tenant_status(state, session, tenant, form, "suspend").await
}

pub async fn resume_tenant(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    form: Form,
) -> Response {
    tenant_status(state, session, tenant, form, "resume").await
}

async fn tenant_status(state: ConsoleState, session: Session, tenant: String, form: Form, change: &str) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    let path = format!("/v1/admin/tenants/{}/{change}", segment(&tenant));
    let reply = session.api(&state, Method::POST, &path, None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let done = if change == "suspend" { "tenant-suspended" } else { "tenant-resumed" };
    Redirect::to(&format!("/console/tenants?done={done}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;

    #[test]
    fn navigation_follows_the_role() {
        let principal = |role: Role, role_name: &str| Principal {
            token_id: "t".into(),
            user_id: None,
            name: "n".into(),
            role,
            role_name: role_name.into(),
            tenant: "acme".into(),
        };
        let labels = |p: &Principal| navigation(p).into_iter().map(|(_, label)| label).collect::<Vec<_>>();
        assert_eq!(labels(&principal(Role::Member, "agent")), ["Home"]);
        let tenant_pages = ["Home", "Departments", "Users", "Roles", "Jobs", "API tokens", "Audit log"];
        assert_eq!(labels(&principal(Role::TenantAdmin, "tenant-admin")), tenant_pages);
        let platform_pages: Vec<&str> =
            tenant_pages.into_iter().chain(["Plugins", "Tenants", "Platform audit", "Health"]).collect();
        assert_eq!(labels(&principal(Role::PlatformAdmin, "platform-admin")), platform_pages);
    }

    #[test]
    fn notices_come_from_a_fixed_list() {
        assert!(notice(&Done { done: Some("enabled".into()) }).is_some());
        assert_eq!(notice(&Done { done: Some("<b>you have been hacked</b>".into()) }), None);
    }
}

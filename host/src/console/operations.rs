//! Tenant operations pages: API tokens (shown once), the audit log (a tenant's and the
//! platform's), schedules with "run now", tasks (long work) with their progress, and the
//! event log with replay to a subscriber.

use super::api::{ApiReply, segment};
use super::pages::{Done, csrf, error_banner, field, notice, refused, when};
use super::session::{Form, Session};
use super::{ConsoleState, layout, message_for, refreshing_layout, respond};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::{Value, json};

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/console/tenants/{tenant}/tokens", get(tokens).post(create_token))
        .route("/console/tenants/{tenant}/tokens/{token}/revoke", get(confirm_revoke).post(revoke_token))
        .route("/console/tenants/{tenant}/audit", get(tenant_audit))
        .route("/console/audit", get(platform_audit))
        .route("/console/tenants/{tenant}/schedules", get(schedules))
        .route("/console/tenants/{tenant}/schedules/{plugin}/{name}/run", post(run_schedule))
        .route("/console/tenants/{tenant}/tasks", get(tasks))
        .route("/console/tenants/{tenant}/tasks/{task}/cancel", post(cancel_task))
        .route("/console/tenants/{tenant}/events", get(events))
        .route("/console/tenants/{tenant}/events/replay", post(replay_events))
}

/// Links between the background-work pages.
pub(super) fn work_tabs(tenant: &str) -> Markup {
    let t = segment(tenant);
    html! {
        nav.tabs aria-label="Background work" {
            a href={"/console/tenants/" (t) "/jobs"} { "Jobs" }
            a href={"/console/tenants/" (t) "/schedules"} { "Schedules" }
            a href={"/console/tenants/" (t) "/tasks"} { "Tasks" }
            a href={"/console/tenants/" (t) "/events"} { "Events" }
        }
    }
}

// API tokens.

async fn tokens(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    tokens_page(&state, &session, &tenant, notice(&done), None, &Form { fields: Vec::new() }, None).await
}

/// The tokens page; `created` is a token just made, whose secret is shown this once.
async fn tokens_page(
    state: &ConsoleState,
    session: &Session,
    tenant: &str,
    notice: Option<&str>,
    failure: Option<&ApiReply>,
    form: &Form,
    created: Option<&Value>,
) -> Response {
    let t = segment(tenant);
    let reply = session.api(state, Method::GET, &format!("/v1/tenants/{t}/tokens"), None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let errors = failure.map(ApiReply::field_errors).unwrap_or_default();
    let items = reply.body["items"].as_array().cloned().unwrap_or_default();
    let content = html! {
        @if let Some(created) = created {
            div.secret role="status" {
                p { strong { "Copy this token now." } " It is shown only once; only a hash is stored." }
                p { label for="new-token" { "Token for " (created["name"].as_str().unwrap_or("")) }
                    input #new-token readonly value=(created["token"].as_str().unwrap_or("")); }
            }
        }
        table {
            caption.visually-hidden { "API tokens" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Token" } th scope="col" { "Role" } th scope="col" { "Last used" } th scope="col" { "Expires" } th scope="col" { "Action" } } }
            tbody {
                @for token in &items {
                    @let id = token["id"].as_str().unwrap_or("");
                    @let revoked = !token["revoked_at"].is_null();
                    tr {
                        th scope="row" data-label="Name" { (token["name"].as_str().unwrap_or("")) }
                        td data-label="Token" { code { "keel_" (token["prefix"].as_str().unwrap_or("")) "_…" } }
                        td data-label="Role" { (token["role"].as_str().unwrap_or("")) }
                        td data-label="Last used" { (when(token["last_used_at"].as_i64())) }
                        td data-label="Expires" { @if token["expires_at"].is_null() { "never" } @else { (when(token["expires_at"].as_i64())) } }
                        td {
                            @if revoked {
                                span.off { "Revoked " (when(token["revoked_at"].as_i64())) }
                            } @else if id == session.principal.token_id {
                                span.meta { "this session" }
                            } @else {
                                a href={"/console/tenants/" (t) "/tokens/" (segment(id)) "/revoke"} aria-label={"Revoke " (token["name"].as_str().unwrap_or(id))} { "Revoke…" }
                            }
                        }
                    }
                }
            }
        }
        h2 #new-token-heading { "Create a token" }
        form.card method="post" action={"/console/tenants/" (t) "/tokens"} aria-labelledby="new-token-heading" {
            (csrf(session))
            (error_banner(&errors, &["name", "role", "ttl_days"]))
            (field("name", "Name", "text", form.text("name"), &errors, Some("What uses it, e.g. the payroll export.")))
            (field("role", "Role", "text", form.get("role").unwrap_or("member"), &errors, Some("tenant-admin, member, or one of your roles.")))
            div.field {
                label for="ttl_days" { "Expires after (days)" span.meta { " (optional)" } }
                input #ttl_days name="ttl_days" type="number" min="1" max="732" value=(form.text("ttl_days"));
            }
            button type="submit" { "Create token" }
        }
    };
    let status = match (failure, created) {
        (Some(f), _) => f.status,
        (None, Some(_)) => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    respond(status, layout("API tokens", Some(session), notice, content))
}

async fn create_token(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    form: Form,
) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    let mut body = json!({ "name": form.text("name").trim(), "role": form.text("role").trim() });
    let days = form.text("ttl_days").trim();
    if !days.is_empty() {
        match days.parse::<u64>() {
            Ok(days) => body["ttl_seconds"] = json!(days.saturating_mul(86_400)),
            Err(_) => body["ttl_seconds"] = json!(days),
        }
    }
    let reply =
        session.api(&state, Method::POST, &format!("/v1/tenants/{}/tokens", segment(&tenant)), Some(&body)).await;
    if matches!(reply.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
        return refused(&session, &reply);
    }
    if reply.ok() {
        // Shown now, in this answer only: never in a URL, never again.
        let created = reply.body.clone();
        return tokens_page(&state, &session, &tenant, None, None, &Form { fields: Vec::new() }, Some(&created)).await;
    }
    let mut failure = reply;
    // The form asks for days; the API names the seconds it was sent.
    for error in failure.body["errors"].as_array_mut().into_iter().flatten() {
        if error["field"] == "ttl_seconds" {
            error["field"] = json!("ttl_days");
        }
    }
    tokens_page(&state, &session, &tenant, None, Some(&failure), &form, None).await
}

async fn confirm_revoke(session: Session, Path((tenant, token)): Path<(String, String)>) -> Response {
    let t = segment(&tenant);
    let content = html! {
        form.card method="post" action={"/console/tenants/" (t) "/tokens/" (segment(&token)) "/revoke"} {
            (csrf(&session))
            p { "Revoke token " code { (token) } "? Whatever uses it is refused from its next request. This cannot be undone." }
            div.buttons {
                button.danger type="submit" { "Revoke token" }
                a href={"/console/tenants/" (t) "/tokens"} { "Cancel" }
            }
        }
    };
    respond(StatusCode::OK, layout("Revoke token", Some(&session), None, content))
}

async fn revoke_token(
    State(state): State<ConsoleState>,
    session: Session,
    Path((tenant, token)): Path<(String, String)>,
    form: Form,
) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    let path = format!("/v1/tenants/{}/tokens/{}", segment(&tenant), segment(&token));
    let reply = session.api(&state, Method::DELETE, &path, None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    Redirect::to(&format!("/console/tenants/{}/tokens?done=token-revoked", segment(&tenant))).into_response()
}

// The audit log.

#[derive(serde::Deserialize)]
struct AuditFilter {
    action: Option<String>,
    tenant: Option<String>,
    before: Option<i64>,
}

async fn tenant_audit(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(filter): Query<AuditFilter>,
) -> Response {
    let base = format!("/console/tenants/{}/audit", segment(&tenant));
    let api = format!("/v1/tenants/{}/audit", segment(&tenant));
    audit_page(&state, &session, &base, &api, &filter, false).await
}

async fn platform_audit(
    State(state): State<ConsoleState>,
    session: Session,
    Query(filter): Query<AuditFilter>,
) -> Response {
    audit_page(&state, &session, "/console/audit", "/v1/admin/audit", &filter, true).await
}

/// A page of the log, newest first (before `before`), as the API pages it.
async fn audit_page(
    state: &ConsoleState,
    session: &Session,
    base: &str,
    api: &str,
    filter: &AuditFilter,
    platform: bool,
) -> Response {
    let mut query: Vec<(&str, String)> = vec![("limit", "100".into()), ("order", "newest".into())];
    if let Some(action) = filter.action.as_deref().filter(|a| !a.is_empty()) {
        query.push(("action", action.to_owned()));
    }
    if platform && let Some(tenant) = filter.tenant.as_deref().filter(|t| !t.is_empty()) {
        query.push(("tenant", tenant.to_owned()));
    }
    let kept: Vec<(&str, String)> = query.iter().filter(|(k, _)| !matches!(*k, "limit" | "order")).cloned().collect();
    if let Some(before) = filter.before {
        query.push(("before", before.to_string()));
    }
    let encode = |pairs: &[(&str, String)]| {
        pairs.iter().map(|(k, v)| format!("{k}={}", segment(v))).collect::<Vec<_>>().join("&")
    };
    let reply = session.api(state, Method::GET, &format!("{api}?{}", encode(&query)), None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let items = reply.body["items"].as_array().cloned().unwrap_or_default();
    let next = reply.body["next_before"].as_i64().map(|before| {
        let mut pairs = kept.clone();
        pairs.push(("before", before.to_string()));
        format!("{base}?{}", encode(&pairs))
    });
    let title = if platform { "Platform audit log" } else { "Audit log" };
    let content = html! {
        p { "Every admin action and every plugin storage write, newest first. Nothing here can be changed." }
        form.filters method="get" action=(base) aria-label="Filters" {
            div.field {
                label for="action" { "Action" }
                input #action name="action" value=(filter.action.as_deref().unwrap_or("")) placeholder="e.g. tenant.plugin.enable";
            }
            @if platform {
                div.field {
                    label for="tenant" { "Tenant" }
                    input #tenant name="tenant" value=(filter.tenant.as_deref().unwrap_or(""));
                }
            }
            button type="submit" { "Filter" }
        }
        @if items.is_empty() {
            p { "No entries match." }
        } @else {
            table {
                caption.visually-hidden { (title) }
                thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" } @if platform { th scope="col" { "Tenant" } } th scope="col" { "Plugin" } th scope="col" { "Detail" } } }
                tbody {
                    @for entry in &items {
                        tr {
                            th scope="row" data-label="When" { (when(entry["at"].as_i64())) }
                            td data-label="Who" { (entry["actor_name"].as_str().unwrap_or("")) }
                            td data-label="Action" { code { (entry["action"].as_str().unwrap_or("")) } }
                            @if platform { td data-label="Tenant" { (entry["tenant"].as_str().unwrap_or("—")) } }
                            td data-label="Plugin" { (entry["plugin"].as_str().unwrap_or("")) }
                            td data-label="Detail" {
                                @let place = [entry["collection"].as_str(), entry["key"].as_str()].into_iter().flatten().collect::<Vec<_>>().join("/");
                                @if !place.is_empty() { code { (place) } " " }
                                @if !entry["detail"].is_null() { code { (entry["detail"].to_string()) } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p { a href=(next) rel="next" { "Older entries" } }
        }
    };
    respond(StatusCode::OK, layout(title, Some(session), None, content))
}

// Schedules.

async fn schedules(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let t = segment(&tenant);
    let reply = session.api(&state, Method::GET, &format!("/v1/tenants/{t}/schedules"), None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let items = reply.body["items"].as_array().cloned().unwrap_or_default();
    let content = html! {
        (work_tabs(&tenant))
        @if items.is_empty() {
            p { "No department switched on here runs on a schedule." }
        } @else {
            table {
                caption.visually-hidden { "Schedules" }
                thead { tr { th scope="col" { "Schedule" } th scope="col" { "When" } th scope="col" { "Next run" } th scope="col" { "Last run" } th scope="col" { "Action" } } }
                tbody {
                    @for schedule in &items {
                        @let plugin = schedule["plugin"].as_str().unwrap_or("");
                        @let name = schedule["name"].as_str().unwrap_or("");
                        tr {
                            th scope="row" data-label="Schedule" { (plugin) " · " (name) }
                            td data-label="When" { code { (schedule["spec"].as_str().unwrap_or("")) } }
                            td data-label="Next run" { (when(schedule["next_run_at"].as_i64())) }
                            td data-label="Last run" { (when(schedule["last_run_at"].as_i64())) }
                            td {
                                form.inline method="post" action={"/console/tenants/" (t) "/schedules/" (segment(plugin)) "/" (segment(name)) "/run"} {
                                    (csrf(&session))
                                    button type="submit" aria-label={"Run " (plugin) " " (name) " now"} { "Run now" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    respond(StatusCode::OK, layout("Schedules", Some(&session), notice(&done), content))
}

async fn run_schedule(
    State(state): State<ConsoleState>,
    session: Session,
    Path((tenant, plugin, name)): Path<(String, String, String)>,
    form: Form,
) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    let path =
        format!("/v1/tenants/{}/plugins/{}/schedules/{}/run", segment(&tenant), segment(&plugin), segment(&name));
    let reply = session.api(&state, Method::POST, &path, None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    Redirect::to(&format!("/console/tenants/{}/schedules?done=schedule-run", segment(&tenant))).into_response()
}

// Tasks: long work in chunks, with progress.

async fn tasks(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let t = segment(&tenant);
    let reply = session.api(&state, Method::GET, &format!("/v1/tenants/{t}/tasks?limit=50"), None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let items = reply.body["items"].as_array().cloned().unwrap_or_default();
    let running = items.iter().any(|task| task["status"] == "running");
    let content = html! {
        (work_tabs(&tenant))
        @if running {
            p.meta { "Work is running: this page refreshes every 5 seconds." }
        }
        @if items.is_empty() {
            p { "No long work has run here yet (a pay run, a re-plan, an import)." }
        } @else {
            table {
                caption.visually-hidden { "Tasks" }
                thead { tr { th scope="col" { "Task" } th scope="col" { "Status" } th scope="col" { "Progress" } th scope="col" { "Started" } th scope="col" { "Action" } } }
                tbody {
                    @for task in &items {
                        @let id = task["id"].as_str().unwrap_or("");
                        @let done = task["done"].as_u64().unwrap_or(0);
                        @let total = task["total"].as_u64();
                        @let status = task["status"].as_str().unwrap_or("");
                        tr {
                            th scope="row" data-label="Task" {
                                (task["title"].as_str().unwrap_or("")) br;
                                span.meta { (task["plugin"].as_str().unwrap_or("")) " · " (task["name"].as_str().unwrap_or("")) }
                            }
                            td data-label="Status" {
                                (status)
                                @if let Some(error) = task["last_error"].as_str() { p.meta { (error) } }
                            }
                            td data-label="Progress" {
                                @if let Some(total) = total {
                                    progress value=(done) max=(total.max(1)) aria-label={"Progress of " (id)} { (done) " of " (total) }
                                    " " (done) " of " (total)
                                } @else {
                                    progress aria-label={"Progress of " (id)} {}
                                    " " (done) " so far"
                                }
                            }
                            td data-label="Started" { (when(task["created_at"].as_i64())) }
                            td {
                                @if status == "running" {
                                    form.inline method="post" action={"/console/tenants/" (t) "/tasks/" (segment(id)) "/cancel"} {
                                        (csrf(&session))
                                        button type="submit" aria-label={"Cancel " (id)} { "Cancel" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let refresh = running.then_some(5);
    respond(StatusCode::OK, refreshing_layout("Tasks", Some(&session), notice(&done), content, refresh))
}

async fn cancel_task(
    State(state): State<ConsoleState>,
    session: Session,
    Path((tenant, task)): Path<(String, String)>,
    form: Form,
) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    let path = format!("/v1/tenants/{}/tasks/{}/cancel", segment(&tenant), segment(&task));
    let reply = session.api(&state, Method::POST, &path, None).await;
    if !reply.ok() {
        if reply.status == StatusCode::CONFLICT {
            return message_for(Some(&session), StatusCode::CONFLICT, "Not cancelled", &reply.detail());
        }
        return refused(&session, &reply);
    }
    Redirect::to(&format!("/console/tenants/{}/tasks?done=task-cancelled", segment(&tenant))).into_response()
}

// Events: the tenant's log, and delivering a range again to one subscriber.

#[derive(serde::Deserialize, Default)]
struct EventFilter {
    topic: Option<String>,
    after: Option<i64>,
    done: Option<String>,
}

async fn events(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(filter): Query<EventFilter>,
) -> Response {
    events_page(&state, &session, &tenant, &filter, &Form { fields: Vec::new() }, None).await
}

/// How much of an event's payload a row shows.
const PAYLOAD_SHOWN: usize = 300;

async fn events_page(
    state: &ConsoleState,
    session: &Session,
    tenant: &str,
    filter: &EventFilter,
    form: &Form,
    failure: Option<&ApiReply>,
) -> Response {
    let t = segment(tenant);
    let topic = filter.topic.as_deref().filter(|s| !s.is_empty());
    let mut query = vec![format!("limit=100&after={}", filter.after.unwrap_or(0).max(0))];
    if let Some(topic) = topic {
        query.push(format!("topic={}", segment(topic)));
    }
    let reply = session.api(state, Method::GET, &format!("/v1/tenants/{t}/events?{}", query.join("&")), None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let items = reply.body["items"].as_array().cloned().unwrap_or_default();
    let next = reply.body["next_after"].as_i64().map(|after| {
        let topic = topic.map(|topic| format!("&topic={}", segment(topic))).unwrap_or_default();
        format!("/console/tenants/{t}/events?after={after}{topic}")
    });
    // Who can be replayed to: the departments on here that subscribe to something.
    let subscribers: Vec<(String, String)> = state
        .app
        .registry
        .serving_tenant(&state.app.tenancy, tenant)
        .iter()
        .filter(|p| !p.record.manifest.subscriptions.is_empty())
        .map(|p| {
            let topics: Vec<&str> = p.record.manifest.subscriptions.iter().map(|s| s.topic.as_str()).collect();
            (p.record.id.clone(), format!("{} ({})", p.record.name, topics.join(", ")))
        })
        .collect();
    let seqs: Vec<i64> = items.iter().filter_map(|e| e["seq"].as_i64()).collect();
    let (first, last) = (seqs.first().copied().unwrap_or(1), seqs.last().copied().unwrap_or(1));
    let errors = failure.map(ApiReply::field_errors).unwrap_or_default();
    let chosen = form.get("subscriber").unwrap_or("");
    let typed = |name: &str, default: i64| form.get(name).map(str::to_owned).unwrap_or_else(|| default.to_string());
    let notice = (filter.done.as_deref() == Some("events-replayed"))
        .then_some("The events are queued for delivery again; each delivery shows under Jobs.");
    let content = html! {
        (work_tabs(tenant))
        p { "Everything the departments here published, oldest first. Subscribers get each event as a job." }
        form.filters method="get" action={"/console/tenants/" (t) "/events"} aria-label="Filters" {
            div.field {
                label for="topic" { "Topic" }
                input #topic name="topic" value=(topic.unwrap_or("")) placeholder="e.g. ticket.created";
            }
            button type="submit" { "Filter" }
        }
        @if items.is_empty() {
            p { "No events match." }
        } @else {
            table {
                caption.visually-hidden { "Events" }
                thead { tr { th scope="col" { "#" } th scope="col" { "Published" } th scope="col" { "Topic" } th scope="col" { "From" } th scope="col" { "Payload" } } }
                tbody {
                    @for event in &items {
                        @let payload = event["payload"].as_str().unwrap_or("");
                        tr {
                            th scope="row" data-label="#" { (event["seq"].as_i64().unwrap_or(0)) }
                            td data-label="Published" { (when(event["published_at"].as_i64())) }
                            td data-label="Topic" { code { (event["topic"].as_str().unwrap_or("")) } }
                            td data-label="From" { (event["source"].as_str().unwrap_or("")) }
                            td data-label="Payload" {
                                code.payload {
                                    @if payload.chars().count() > PAYLOAD_SHOWN {
                                        (payload.chars().take(PAYLOAD_SHOWN).collect::<String>()) "…"
                                    } @else { (payload) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p { a href=(next) rel="next" { "Later events" } }
        }
        h2 #replay { "Deliver again" }
        @if subscribers.is_empty() {
            p { "No department switched on here subscribes to events." }
        } @else {
            form.card method="post" action={"/console/tenants/" (t) "/events/replay"} aria-labelledby="replay" {
                (csrf(session))
                p.hint { "Each event in the range whose topic the department subscribes to is delivered to it again, as a new job with the event's own id; a department that records what it handled does nothing twice." }
                (error_banner(&errors, &["subscriber", "from_seq", "to_seq"]))
                div.field {
                    label for="subscriber" { "Department" }
                    select #subscriber name="subscriber" {
                        @for (id, label) in &subscribers {
                            option value=(id) selected[id == chosen] { (label) }
                        }
                    }
                }
                (field("from_seq", "From event #", "number", &typed("from_seq", first), &errors, None))
                (field("to_seq", "To event # (inclusive)", "number", &typed("to_seq", last), &errors, None))
                button type="submit" { "Deliver again" }
            }
        }
    };
    let status = failure.map_or(StatusCode::OK, |f| f.status);
    respond(status, layout("Events", Some(session), notice, content))
}

async fn replay_events(
    State(state): State<ConsoleState>,
    session: Session,
    Path(tenant): Path<String>,
    form: Form,
) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    let number = |name: &str| form.text(name).trim().parse::<i64>().ok();
    let (Some(from_seq), Some(to_seq)) = (number("from_seq"), number("to_seq")) else {
        let reply = ApiReply {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: json!({ "detail": "the range needs two whole numbers", "errors": [] }),
            retry_after: None,
        };
        return events_page(&state, &session, &tenant, &EventFilter::default(), &form, Some(&reply)).await;
    };
    let body = json!({ "subscriber": form.text("subscriber"), "from_seq": from_seq, "to_seq": to_seq });
    let path = format!("/v1/tenants/{}/events/replay", segment(&tenant));
    let reply = session.api(&state, Method::POST, &path, Some(&body)).await;
    if reply.ok() {
        return Redirect::to(&format!("/console/tenants/{}/events?done=events-replayed", segment(&tenant)))
            .into_response();
    }
    if !matches!(reply.status, StatusCode::UNPROCESSABLE_ENTITY | StatusCode::NOT_FOUND)
        || reply.code() == "tenant-not-found"
    {
        return refused(&session, &reply);
    }
    events_page(&state, &session, &tenant, &EventFilter::default(), &form, Some(&reply)).await
}

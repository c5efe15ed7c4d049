//! Platform admins' plugin pages: the installed plugins, one plugin's versions, manifest and
//! permissions, switching it on or off for the platform, uninstalling it (after a
//! confirmation), installing an artifact uploaded from a file input, pinning the version new
//! tenants get, and rolling a version out to tenants (after a confirmation, with its report).

use super::api::{ApiReply, segment};
use super::pages::{Done, csrf, notice, refused, when};
use super::session::{Form, Session, forgery, same_origin, same_secret};
use super::{ConsoleState, layout, message_for, respond};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::html;
use serde_json::Value;

pub fn routes(max_artifact_bytes: usize) -> Router<ConsoleState> {
    Router::new()
        .route(
            "/console/plugins",
            // Room for the artifact and the form around it.
            get(plugins).post(upload).layer(DefaultBodyLimit::max(max_artifact_bytes.saturating_add(64 * 1024))),
        )
        .route("/console/plugins/{plugin}", get(plugin))
        .route("/console/plugins/{plugin}/{change}", get(confirm_uninstall).post(change))
        .route("/console/plugins/{plugin}/versions/{version}/{change}", get(confirm_rollout).post(change_version))
}

async fn plugins(State(state): State<ConsoleState>, session: Session, Query(done): Query<Done>) -> Response {
    plugins_page(&state, &session, notice(&done), None).await
}

async fn plugins_page(
    state: &ConsoleState,
    session: &Session,
    notice: Option<&str>,
    failure: Option<&ApiReply>,
) -> Response {
    let reply = session.api(state, Method::GET, "/v1/admin/plugins", None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let items = reply.body["items"].as_array().cloned().unwrap_or_default();
    let content = html! {
        table {
            caption { "Installed plugins" }
            thead { tr { th scope="col" { "Plugin" } th scope="col" { "Version" } th scope="col" { "Platform-wide" } th scope="col" { "Signed by" } th scope="col" { "Permissions" } } }
            tbody {
                @for plugin in &items {
                    @let id = plugin["id"].as_str().unwrap_or("");
                    tr {
                        th scope="row" data-label="Plugin" {
                            a href={"/console/plugins/" (segment(id))} { (plugin["name"].as_str().unwrap_or(id)) }
                            br; span.meta { (id) }
                            p.meta { (plugin["description"].as_str().unwrap_or("")) }
                        }
                        td data-label="Version" { (plugin["version"].as_str().unwrap_or("")) }
                        td data-label="Platform-wide" { @if plugin["enabled"].as_bool().unwrap_or(false) { span.on { "On" } } @else { span.off { "Off" } } }
                        td data-label="Signed by" { (plugin["signer"].as_str().unwrap_or("unsigned")) }
                        td data-label="Permissions" {
                            ul.plain {
                                @for (name, about) in permissions(plugin) {
                                    li { code { (name) } @if !about.is_empty() { " — " (about) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 #upload { "Install or upgrade a plugin" }
        form.card method="post" action="/console/plugins" enctype="multipart/form-data" aria-labelledby="upload" {
            @if let Some(failure) = failure {
                p.error role="alert" { (failure.detail()) }
            }
            (csrf(session))
            div.field {
                label for="artifact" { "Plugin artifact (.wasm)" }
                input #artifact name="artifact" type="file" accept=".wasm,application/wasm" required aria-describedby="artifact-hint";
                p.hint #artifact-hint { "What `keel plugin package` writes. A new version of an installed plugin becomes the version new tenants get; tenants already on it keep theirs until upgraded." }
            }
            div.field {
                label for="signature" { "Signature" span.meta { " (optional)" } }
                input #signature name="signature" type="text" aria-describedby="signature-hint";
                p.hint #signature-hint { "keel-signature-v1 ed25519:<key> <signature>, from `keel plugin sign`." }
            }
            button type="submit" { "Install" }
        }
    };
    let status = failure.map_or(StatusCode::OK, |f| f.status);
    respond(status, layout("Plugins", Some(session), notice, content))
}

/// A plugin's declared permissions with their descriptions, from its manifest.
fn permissions(plugin: &Value) -> Vec<(String, String)> {
    plugin["manifest"]["permissions"]
        .as_object()
        .map(|map| map.iter().map(|(name, about)| (name.clone(), about.as_str().unwrap_or("").to_owned())).collect())
        .unwrap_or_default()
}

/// Installs an uploaded artifact through `POST /v1/admin/plugins`.
async fn upload(
    State(state): State<ConsoleState>,
    session: Session,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    if !same_origin(&headers) {
        return forgery();
    }
    let (mut csrf_sent, mut artifact, mut signature) = (None, None, None);
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_owned();
                match name.as_str() {
                    "csrf" => csrf_sent = field.text().await.ok(),
                    "signature" => signature = field.text().await.ok().filter(|s| !s.trim().is_empty()),
                    "artifact" => match field.bytes().await {
                        Ok(bytes) => artifact = Some(bytes.to_vec()),
                        Err(e) => return unreadable(&session, &e),
                    },
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => return unreadable(&session, &e),
        }
    }
    // The token is checked before the artifact is looked at.
    if !csrf_sent.as_deref().is_some_and(|sent| same_secret(sent, &session.csrf)) {
        return forgery();
    }
    let Some(artifact) = artifact.filter(|a| !a.is_empty()) else {
        let reply = ApiReply {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: serde_json::json!({ "detail": "Choose a plugin artifact (.wasm) to upload." }),
            retry_after: None,
        };
        return plugins_page(&state, &session, None, Some(&reply)).await;
    };
    let signature = signature.map(|s| s.trim().to_owned());
    let extra: Vec<(&str, &str)> = signature.as_deref().map(|s| vec![("keel-signature", s)]).unwrap_or_default();
    let reply = state
        .api
        .call_raw(
            &session.token,
            &session.request_id,
            Method::POST,
            "/v1/admin/plugins",
            "application/wasm",
            &extra,
            artifact,
        )
        .await;
    if reply.ok() {
        let id = reply.body["plugin"]["id"].as_str().unwrap_or("");
        return Redirect::to(&format!("/console/plugins/{}?done=installed", segment(id))).into_response();
    }
    if matches!(reply.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return refused(&session, &reply);
    }
    plugins_page(&state, &session, None, Some(&reply)).await
}

/// An upload that could not be read: too large (413) or malformed (400), as the multipart
/// reader tells.
fn unreadable(session: &Session, e: &axum::extract::multipart::MultipartError) -> Response {
    let status = e.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "The upload is larger than the platform accepts for a plugin artifact."
    } else {
        "The upload could not be read as a form (it may have been cut off)."
    };
    message_for(Some(session), status, "Upload refused", message)
}

/// One plugin: its versions and which tenants run each, its manifest, its switches.
async fn plugin(
    State(state): State<ConsoleState>,
    session: Session,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let path = format!("/v1/admin/plugins/{}", segment(&id));
    let record = session.api(&state, Method::GET, &path, None).await;
    if !record.ok() {
        return refused(&session, &record);
    }
    let versions = session.api(&state, Method::GET, &format!("{path}/versions"), None).await;
    if !versions.ok() {
        return refused(&session, &versions);
    }
    let plugin = &record.body;
    let manifest = &plugin["manifest"];
    let enabled = plugin["enabled"].as_bool().unwrap_or(false);
    let list = |value: &Value| {
        value
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let base = format!("/console/plugins/{}", segment(&id));
    let pinned = versions.body["pinned"] == true;
    let content = html! {
        p { (plugin["description"].as_str().unwrap_or("")) }
        div.actions {
            form.inline method="post" action={(base) "/" (if enabled { "disable" } else { "enable" })} {
                (csrf(&session))
                button type="submit" { (if enabled { "Switch off for the platform" } else { "Switch on for the platform" }) }
            }
            a.button href={(base) "/uninstall"} { "Uninstall…" }
        }
        dl.record {
            dt { "Active version" } dd { (plugin["version"].as_str().unwrap_or("")) }
            dt { "Platform-wide" } dd { @if enabled { span.on { "On" } } @else { span.off { "Off" } } }
            dt { "Signed by" } dd { (plugin["signer"].as_str().unwrap_or("unsigned")) }
            dt { "Capabilities" } dd { (list(&manifest["capabilities"]).join(", ")) }
            dt { "Limits" } dd { (plugin["memory_limit_bytes"].as_u64().unwrap_or(0) / (1024 * 1024)) " MiB, " (plugin["timeout_ms"].as_u64().unwrap_or(0)) " ms per request" }
            dt { "Provides" } dd { (list(&manifest["provides"]).join(", ")) }
            dt { "Requires" } dd { (list(&manifest["requires"]).join(", ")) }
        }
        h2 { "Versions" }
        table {
            caption.visually-hidden { "Versions" }
            thead { tr { th scope="col" { "Version" } th scope="col" { "Installed" } th scope="col" { "Size" } th scope="col" { "Signed by" } th scope="col" { "Tenants running it" } th scope="col" { "Actions" } } }
            tbody {
                @for version in versions.body["items"].as_array().into_iter().flatten() {
                    @let number = version["version"].as_str().unwrap_or("");
                    @let active = version["active"] == true;
                    @let here = format!("{base}/versions/{}", segment(number));
                    tr {
                        th scope="row" data-label="Version" {
                            (number)
                            @if active { " " span.on { @if pinned { "active, pinned" } @else { "active" } } }
                        }
                        td data-label="Installed" { (when(version["installed_at"].as_i64())) }
                        td data-label="Size" { (version["size_bytes"].as_u64().unwrap_or(0) / 1024) " KiB" }
                        td data-label="Signed by" { (version["signer"].as_str().unwrap_or("unsigned")) }
                        td data-label="Tenants" { (list(&version["tenants"]).join(", ")) }
                        td data-label="Actions" {
                            div.actions {
                                @if active && pinned {
                                    form.inline method="post" action={(here) "/unpin"} {
                                        (csrf(&session))
                                        button type="submit" aria-label={"Unpin " (number)} { "Unpin" }
                                    }
                                } @else {
                                    form.inline method="post" action={(here) "/pin"} {
                                        (csrf(&session))
                                        button type="submit" aria-label={"Pin " (number) " for tenants switching on"} { "Pin" }
                                    }
                                }
                                @if elsewhere(&versions.body, number) > 0 {
                                    a.button href={(here) "/rollout"} aria-label={"Roll out " (number)} { "Roll out…" }
                                }
                            }
                        }
                    }
                }
            }
        }
        p.hint { "Pinning makes a version the one tenants get when they switch the plugin on; installing a newer one then adds it beside without moving anyone. Rolling out moves the tenants on other versions, one after the other, with the same checks as a tenant admin's upgrade." }
        h2 { "Permissions it declares" }
        ul.plain {
            @for (name, about) in permissions(plugin) {
                li { code { (name) } @if !about.is_empty() { " — " (about) } }
            }
        }
        h2 { "Routes" }
        ul.plain {
            @for route in manifest["routes"].as_array().into_iter().flatten() {
                li {
                    code { (route["method"].as_str().unwrap_or("")) " " (route["path"].as_str().unwrap_or("")) }
                    " " (route["summary"].as_str().unwrap_or(""))
                    @if let Some(permission) = route["permission"].as_str() { " " span.meta { "(" (permission) ")" } }
                    @if route["public"] == true { " " span.meta { "(public)" } }
                }
            }
        }
    };
    let title = plugin["name"].as_str().unwrap_or(&id).to_owned();
    respond(StatusCode::OK, layout(&title, Some(&session), notice(&done), content))
}

/// Uninstalling asks first, and offers to purge the data.
async fn confirm_uninstall(session: Session, Path((id, change)): Path<(String, String)>) -> Response {
    if change != "uninstall" {
        return message_for(Some(&session), StatusCode::NOT_FOUND, "Not found", "There is no such console page.");
    }
    let base = format!("/console/plugins/{}", segment(&id));
    let content = html! {
        form.card method="post" action={(base) "/uninstall"} {
            (csrf(&session))
            p { "Uninstall " code { (id) } "? Every tenant loses its routes, jobs and screens at once." }
            div.check {
                input #purge type="checkbox" name="purge" value="true";
                label for="purge" { "Also delete every tenant's data of this plugin (cannot be undone)" }
            }
            div.buttons {
                button.danger type="submit" { "Uninstall" }
                a href=(base) { "Cancel" }
            }
        }
    };
    respond(StatusCode::OK, layout("Uninstall plugin", Some(&session), None, content))
}

async fn change(
    State(state): State<ConsoleState>,
    session: Session,
    Path((id, change)): Path<(String, String)>,
    form: Form,
) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    let path = format!("/v1/admin/plugins/{}", segment(&id));
    let (method, path, done) = match change.as_str() {
        "enable" => (Method::POST, format!("{path}/enable"), "plugin-enabled"),
        "disable" => (Method::POST, format!("{path}/disable"), "plugin-disabled"),
        "uninstall" if form.get("purge") == Some("true") => {
            (Method::DELETE, format!("{path}?purge=true"), "uninstalled")
        }
        "uninstall" => (Method::DELETE, path, "uninstalled"),
        _ => return message_for(Some(&session), StatusCode::NOT_FOUND, "Not found", "There is no such console page."),
    };
    let reply = session.api(&state, method, &path, None).await;
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let to = if done == "uninstalled" {
        format!("/console/plugins?done={done}")
    } else {
        format!("/console/plugins/{}?done={done}", segment(&id))
    };
    Redirect::to(&to).into_response()
}

/// How many tenants run a version of the plugin other than `version`.
fn elsewhere(versions: &Value, version: &str) -> usize {
    versions["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["version"] != version)
        .map(|v| v["tenants"].as_array().map_or(0, Vec::len))
        .sum()
}

/// Rolling out moves tenants: asked for first, with the tenants it would move.
async fn confirm_rollout(
    State(state): State<ConsoleState>,
    session: Session,
    Path((id, version, change)): Path<(String, String, String)>,
) -> Response {
    if change != "rollout" {
        return message_for(Some(&session), StatusCode::NOT_FOUND, "Not found", "There is no such console page.");
    }
    let versions =
        session.api(&state, Method::GET, &format!("/v1/admin/plugins/{}/versions", segment(&id)), None).await;
    if !versions.ok() {
        return refused(&session, &versions);
    }
    let items = versions.body["items"].as_array().cloned().unwrap_or_default();
    if !items.iter().any(|v| v["version"] == version.as_str()) {
        return message_for(
            Some(&session),
            StatusCode::NOT_FOUND,
            "Not found",
            "That version of the plugin is not installed.",
        );
    }
    let movers: Vec<(String, String)> = items
        .iter()
        .filter(|v| v["version"] != version.as_str())
        .flat_map(|v| {
            let from = v["version"].as_str().unwrap_or("").to_owned();
            v["tenants"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |t| t.as_str().map(|t| (t.to_owned(), from.clone())))
        })
        .collect();
    let base = format!("/console/plugins/{}", segment(&id));
    let content = html! {
        @if movers.is_empty() {
            p { "Every tenant with " code { (id) } " already runs " (version) "." }
            p { a href=(base) { "Back to the plugin" } }
        } @else {
            form.card method="post" action={(base) "/versions/" (segment(&version)) "/rollout"} {
                (csrf(&session))
                p { "Move these tenants to " code { (id) } " " strong { (version) } "? Each is moved with its data migrated and its indexes rebuilt; the rollout stops at the first that fails and says why. A tenant whose admin must approve what the version newly asks for is left where it is." }
                fieldset {
                    legend { "Tenants" }
                    @for (tenant, from) in &movers {
                        div.check {
                            input id={"tenant-" (tenant)} type="checkbox" name="tenant" value=(tenant) checked;
                            label for={"tenant-" (tenant)} { (tenant) " (now " (from) ")" }
                        }
                    }
                }
                div.buttons {
                    button type="submit" { "Roll out" }
                    a href=(base) { "Cancel" }
                }
            }
        }
    };
    respond(StatusCode::OK, layout("Roll out a version", Some(&session), None, content))
}

async fn change_version(
    State(state): State<ConsoleState>,
    session: Session,
    Path((id, version, change)): Path<(String, String, String)>,
    form: Form,
) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    let path = format!("/v1/admin/plugins/{}", segment(&id));
    let base = format!("/console/plugins/{}", segment(&id));
    let reply = match change.as_str() {
        "pin" => {
            let body = serde_json::json!({ "version": version });
            session.api(&state, Method::PUT, &format!("{path}/pin"), Some(&body)).await
        }
        "unpin" => session.api(&state, Method::DELETE, &format!("{path}/pin"), None).await,
        "rollout" => {
            let tenants = form.all("tenant");
            if tenants.is_empty() {
                return message_for(
                    Some(&session),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Nothing to do",
                    "Choose at least one tenant to move.",
                );
            }
            let body = serde_json::json!({ "version": version, "tenants": tenants });
            let reply = session.api(&state, Method::POST, &format!("{path}/rollout"), Some(&body)).await;
            if !reply.ok() {
                return refused(&session, &reply);
            }
            return rollout_report(&session, &base, &reply.body);
        }
        _ => return message_for(Some(&session), StatusCode::NOT_FOUND, "Not found", "There is no such console page."),
    };
    if !reply.ok() {
        return refused(&session, &reply);
    }
    let done = if change == "pin" { "version-pinned" } else { "version-unpinned" };
    Redirect::to(&format!("{base}?done={done}")).into_response()
}

/// What a rollout did, tenant by tenant.
fn rollout_report(session: &Session, base: &str, report: &Value) -> Response {
    let tenants = |key: &str| report[key].as_array().cloned().unwrap_or_default();
    let version = report["version"].as_str().unwrap_or("");
    let complete = report["complete"] == true;
    let content = html! {
        @if complete {
            p.notice role="status" { "Every tenant with the plugin now runs " (version) "." }
        } @else if report["failed"].is_object() {
            p.error role="alert" { "The rollout stopped at " (report["failed"]["tenant"].as_str().unwrap_or("")) ": " (report["failed"]["detail"].as_str().unwrap_or("")) " (" code { (report["failed"]["code"].as_str().unwrap_or("")) } ")." }
        } @else {
            p.notice role="status" { "Done; some tenants stay on their version (below)." }
        }
        table {
            caption.visually-hidden { "Rollout report" }
            thead { tr { th scope="col" { "Tenant" } th scope="col" { "Outcome" } } }
            tbody {
                @for step in tenants("moved") {
                    tr { th scope="row" { (step["tenant"].as_str().unwrap_or("")) } td { "Moved from " (step["from"].as_str().unwrap_or("")) } }
                }
                @for tenant in tenants("unchanged") {
                    tr { th scope="row" { (tenant.as_str().unwrap_or("")) } td { "Already on " (version) } }
                }
                @for waiting in tenants("awaiting_approval") {
                    tr {
                        th scope="row" { (waiting["tenant"].as_str().unwrap_or("")) }
                        td { "Waits on " (waiting["from"].as_str().unwrap_or("")) " until its admin approves: "
                            (waiting["requested"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")) }
                    }
                }
                @if let Some(tenant) = report["failed"]["tenant"].as_str() {
                    tr { th scope="row" { (tenant) } td { "Failed; left on " (report["failed"]["from"].as_str().unwrap_or("")) } }
                }
                @for tenant in tenants("remaining") {
                    tr { th scope="row" { (tenant.as_str().unwrap_or("")) } td { "Not reached" } }
                }
            }
        }
        p { a href=(base) { "Back to the plugin" } }
    };
    respond(StatusCode::OK, layout("Rollout report", Some(session), None, content))
}

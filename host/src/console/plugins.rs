//! Platform admins' plugin pages: the installed plugins, one plugin's versions, manifest and
//! permissions, switching it on or off for the platform, uninstalling it (after a
//! confirmation), and installing an artifact uploaded from a file input.

use super::api::{ApiReply, segment};
use super::pages::{Done, csrf, notice, refused, when};
use super::session::{Form, Session, forgery, same_origin, same_secret};
use super::{ConsoleState, layout, message_page, respond};
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
        return refused(&reply);
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
                        Err(e) => return unreadable(&e),
                    },
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => return unreadable(&e),
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
        return refused(&reply);
    }
    plugins_page(&state, &session, None, Some(&reply)).await
}

/// An upload that could not be read: too large (413) or malformed (400), as the multipart
/// reader tells.
fn unreadable(e: &axum::extract::multipart::MultipartError) -> Response {
    let status = e.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "The upload is larger than the platform accepts for a plugin artifact."
    } else {
        "The upload could not be read as a form (it may have been cut off)."
    };
    message_page(status, "Upload refused", message)
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
        return refused(&record);
    }
    let versions = session.api(&state, Method::GET, &format!("{path}/versions"), None).await;
    if !versions.ok() {
        return refused(&versions);
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
            thead { tr { th scope="col" { "Version" } th scope="col" { "Installed" } th scope="col" { "Size" } th scope="col" { "Signed by" } th scope="col" { "Tenants running it" } } }
            tbody {
                @for version in versions.body["items"].as_array().into_iter().flatten() {
                    tr {
                        th scope="row" data-label="Version" {
                            (version["version"].as_str().unwrap_or(""))
                            @if version["active"] == true { " " span.on { "active" } }
                        }
                        td data-label="Installed" { (when(version["installed_at"].as_i64())) }
                        td data-label="Size" { (version["size_bytes"].as_u64().unwrap_or(0) / 1024) " KiB" }
                        td data-label="Signed by" { (version["signer"].as_str().unwrap_or("unsigned")) }
                        td data-label="Tenants" { (list(&version["tenants"]).join(", ")) }
                    }
                }
            }
        }
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
        return message_page(StatusCode::NOT_FOUND, "Not found", "There is no such console page.");
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
        _ => return message_page(StatusCode::NOT_FOUND, "Not found", "There is no such console page."),
    };
    let reply = session.api(&state, method, &path, None).await;
    if !reply.ok() {
        return refused(&reply);
    }
    let to = if done == "uninstalled" {
        format!("/console/plugins?done={done}")
    } else {
        format!("/console/plugins/{}?done={done}", segment(&id))
    };
    Redirect::to(&to).into_response()
}

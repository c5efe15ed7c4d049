//! The web console under `/console`: server-rendered HTML pages for the people a business
//! puts on Keel and for platform admins. No script at all: plain forms, which work by
//! keyboard and on any screen, and a Content-Security-Policy that allows none.
//!
//! Every page reads and changes the platform through the API router in process, with the
//! signed-in person's token ([`api::InProcessApi`]), so a page shows and does exactly what
//! that person's API access allows. Templates are `maud`'s, which escape every interpolated
//! string: a ticket titled `<script>` is text.

pub mod api;
mod health;
mod operations;
mod pages;
mod plugins;
pub mod session;
mod views;

use crate::api::AppState;
use api::InProcessApi;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use session::{Form, SESSION_COOKIE, SIGN_IN_COOKIE, Session, Visit};

/// What console handlers share: the platform's state and the API to call.
#[derive(Clone)]
pub struct ConsoleState {
    pub app: AppState,
    pub api: InProcessApi,
}

/// The console's stylesheet, in the binary.
const STYLESHEET: &str = include_str!("console.css");

/// No script, no framing, forms only to this origin.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes; `api` is the API router the pages call.
pub fn router(app: AppState, api: Router) -> Router {
    let max_artifact_bytes = app.limits.max_artifact_bytes;
    let state = ConsoleState { app, api: InProcessApi::new(api) };
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(pages::home))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/assets/console.css", get(stylesheet))
        .merge(pages::routes())
        .merge(views::routes())
        .merge(operations::routes())
        .merge(health::routes())
        .merge(plugins::routes(max_artifact_bytes))
        // Not a router fallback: the console shares the server with the API, whose fallback
        // answers everything outside /console.
        .route("/console/{*rest}", get(not_found).post(not_found))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Headers on every console response: the policy above, no sniffing, no caching of pages
/// that show a person's data, no referrer to other sites.
async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/console/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    let cache = if is_asset { "public, max-age=3600" } else { "no-store" };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

async fn not_found() -> Response {
    message_page(StatusCode::NOT_FOUND, "Not found", "There is no such console page.")
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLESHEET).into_response()
}

/// A whole page: the navigation for whoever is signed in, then `content`.
pub fn layout(title: &str, session: Option<&Session>, notice: Option<&str>, content: Markup) -> Markup {
    refreshing_layout(title, session, notice, content, None)
}

/// [`layout`], reloaded by the browser every `refresh` seconds (progress of running work,
/// without script).
pub fn refreshing_layout(
    title: &str,
    session: Option<&Session>,
    notice: Option<&str>,
    content: Markup,
    refresh: Option<u32>,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if let Some(seconds) = refresh {
                    meta http-equiv="refresh" content=(seconds);
                }
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Keel" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                @if let Some(session) = session {
                    header.top {
                        a.brand href="/console/" { "Keel" }
                        nav aria-label="Main" {
                            ul {
                                @for (href, label) in pages::navigation(&session.principal) {
                                    li { a href=(href) { (label) } }
                                }
                            }
                        }
                        div.who {
                            span { (session.name()) " · " (session.principal.role_name) " · " (session.principal.tenant) }
                            form method="post" action="/console/sign-out" {
                                input type="hidden" name="csrf" value=(session.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    @if let Some(notice) = notice {
                        p.notice role="status" { (notice) }
                    }
                    (content)
                }
            }
        }
    }
}

/// An HTML response.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A page with one message, for errors and refusals, to someone not signed in.
pub fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    message_for(None, status, title, message)
}

/// A page with one message; with the navigation when someone is signed in.
pub fn message_for(session: Option<&Session>, status: StatusCode, title: &str, message: &str) -> Response {
    respond(
        status,
        layout(
            title,
            session,
            None,
            html! { p.error role="alert" { (message) } p { a href="/console/" { "Back to the console" } } },
        ),
    )
}

#[derive(serde::Deserialize)]
struct SignInQuery {
    reason: Option<String>,
}

/// Why the sign-in page is shown, from a fixed list: the query cannot put words on it.
fn sign_in_reason(reason: Option<&str>) -> Option<&'static str> {
    match reason? {
        "signed-out" => Some("You have signed out."),
        "expired" => Some("Your session has ended. Sign in again."),
        "suspended" => Some("Your organisation's account is suspended. Ask your administrator."),
        _ => None,
    }
}

async fn sign_in_page(State(state): State<ConsoleState>, visit: Visit, Query(query): Query<SignInQuery>) -> Response {
    if let Some(token) = session::cookie(&visit.headers, SESSION_COOKIE)
        && state.app.tokens.authenticate(Some(&format!("Bearer {token}"))).await.is_ok()
    {
        return Redirect::to("/console/").into_response();
    }
    let notice = sign_in_reason(query.reason.as_deref());
    sign_in_form(&visit, StatusCode::OK, notice, None, "", "")
}

/// The sign-in form with a fresh double-submit nonce.
fn sign_in_form(
    visit: &Visit,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
    tenant: &str,
    username: &str,
) -> Response {
    let nonce = session::fresh_nonce();
    let content = html! {
        form.card method="post" action="/console/sign-in" {
            @if let Some(error) = error {
                p.error role="alert" id="sign-in-error" { (error) }
            }
            input type="hidden" name="csrf" value=(nonce);
            label for="tenant" { "Organisation" }
            input #tenant name="tenant" value=(tenant) required autocomplete="organization" autocapitalize="none";
            label for="username" { "Username" }
            input #username name="username" value=(username) required autocomplete="username" autocapitalize="none";
            label for="password" { "Password" }
            input #password name="password" type="password" required autocomplete="current-password";
            button type="submit" { "Sign in" }
        }
    };
    let mut response = respond(status, layout("Sign in", None, notice, content));
    let cookie = session::set_cookie(SIGN_IN_COOKIE, &nonce, 3600, visit.tls);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

async fn sign_in(State(state): State<ConsoleState>, visit: Visit, form: Form) -> Response {
    let nonce = session::cookie(&visit.headers, SIGN_IN_COOKIE);
    let sent = form.get("csrf");
    if !matches!((nonce, sent), (Some(nonce), Some(sent)) if session::same_secret(nonce, sent)) {
        return session::forgery();
    }
    let (tenant, username) = (form.text("tenant").trim(), form.text("username").trim());
    let body = serde_json::json!({ "tenant": tenant, "username": username, "password": form.text("password") });
    let reply = state.api.call(None, &visit.request_id, Method::POST, "/v1/auth/login", Some(&body)).await;
    let secure = visit.tls;
    if reply.ok() {
        let Some(token) = reply.body["token"].as_str() else {
            return message_page(StatusCode::BAD_GATEWAY, "Sign-in failed", "The sign-in answer had no session.");
        };
        let expires_at = reply.body["expires_at"].as_i64().unwrap_or(0);
        let max_age = ((expires_at - state.app.clock.now_ms()) / 1000).max(0);
        let mut response = Redirect::to("/console/").into_response();
        let headers = response.headers_mut();
        headers.append(header::SET_COOKIE, session::set_cookie(SESSION_COOKIE, token, max_age, secure));
        headers.append(header::SET_COOKIE, session::set_cookie(SIGN_IN_COOKIE, "", 0, secure));
        return response;
    }
    let error = match reply.code() {
        "invalid-credentials" => "The organisation, username or password is wrong.".to_owned(),
        "too-many-attempts" => {
            let minutes = reply.retry_after.map(|s| s.div_ceil(60));
            match minutes {
                Some(m) => {
                    format!("Too many failed sign-ins. Sign-in for this user is locked; try again in {m} minutes.")
                }
                None => {
                    "Too many failed sign-ins. Sign-in for this user is locked for a while; try again later.".to_owned()
                }
            }
        }
        "tenant-suspended" => "Your organisation's account is suspended. Ask your administrator.".to_owned(),
        _ => reply.detail(),
    };
    sign_in_form(&visit, reply.status, None, Some(&error), tenant, username)
}

async fn sign_out(State(state): State<ConsoleState>, visit: Visit, session: Session, form: Form) -> Response {
    if let Err(refused) = session.verify(&form) {
        return refused;
    }
    if let Err(e) = state.app.tokens.revoke(&session.principal.tenant, &session.principal.token_id).await {
        tracing::error!(error = %e, "revoking a console session failed");
        return message_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-out failed",
            "Signing out is temporarily unavailable; your session is still open. Try again.",
        );
    }
    session::signed_out("signed-out", visit.tls)
}

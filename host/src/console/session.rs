//! Signing in to the console, and proving each form came from it.
//!
//! A console session is a sign-in token (the same one `POST /v1/auth/login` issues) kept in
//! an HttpOnly cookie, so the page's script (there is none) or an injected one could never
//! read it. It is checked on every request by the API's own [`TokenStore`]: revoking it,
//! suspending the tenant or its expiry ends the session at once, on every replica.
//!
//! Forms carry a CSRF token derived from the session token (a keyed hash), so no server-side
//! state is needed and every replica agrees. The sign-in form, before there is a session,
//! uses a double-submit cookie. Every form post must also be same-origin by `Origin` and
//! `Sec-Fetch-Site` when the browser sends them.
//!
//! [`TokenStore`]: crate::identity::TokenStore

use super::ConsoleState;
use crate::api::RequestId;
use crate::identity::{AuthError, Principal};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The cookie holding the sign-in token.
pub const SESSION_COOKIE: &str = "keel_session";
/// The sign-in form's double-submit cookie.
pub const SIGN_IN_COOKIE: &str = "keel_sign_in";
/// Largest form body the console reads.
const MAX_FORM_BYTES: usize = 256 * 1024;

/// A signed-in person.
pub struct Session {
    pub principal: Principal,
    /// The sign-in token: the console calls the API with it.
    pub token: String,
    /// What this session's forms must carry.
    pub csrf: String,
    pub request_id: String,
}

/// The CSRF token of the session whose token is `token`.
pub fn csrf_for(token: &str) -> String {
    let digest = Sha256::new().chain_update(b"keel-console-csrf\0").chain_update(token.as_bytes()).finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// A fresh random value for the sign-in form's double-submit cookie.
pub fn fresh_nonce() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Equality that takes as long whatever the inputs share.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name`, if the request has exactly one.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some((key, value)) = pair.trim().split_once('=') else { continue };
            if key == name {
                if found.is_some() {
                    // Two cookies of one name (one planted by a sibling domain): trust neither.
                    return None;
                }
                found = Some(value);
            }
        }
    }
    found.filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: always HttpOnly and SameSite=Strict, scoped to the console, and
/// Secure when the browser reached us over TLS.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{name}={value}; Path=/console; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}");
    HeaderValue::from_str(&cookie).expect("cookie values are base64url or token characters")
}

/// Whether the browser's connection is TLS: the host serves plain HTTP, so only a trusted
/// proxy's `X-Forwarded-Proto: https` says so.
pub fn over_tls(parts: &Parts, state: &ConsoleState) -> bool {
    let from_proxy = parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|peer| state.app.trusted_proxies.contains(&peer.0.ip()));
    from_proxy
        && parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

fn request_id(parts: &Parts) -> String {
    parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default()
}

/// What a page needs of any request, signed in or not.
pub struct Visit {
    pub headers: HeaderMap,
    /// Whether cookies set now must be Secure.
    pub tls: bool,
    pub request_id: String,
}

impl FromRequestParts<ConsoleState> for Visit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Self, Self::Rejection> {
        Ok(Visit { headers: parts.headers.clone(), tls: over_tls(parts, state), request_id: request_id(parts) })
    }
}

impl FromRequestParts<ConsoleState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Self, Self::Rejection> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(Redirect::to("/console/sign-in").into_response());
        };
        match state.app.tokens.authenticate(Some(&format!("Bearer {token}"))).await {
            Ok(principal) => {
                Ok(Session { principal, token: token.to_owned(), csrf: csrf_for(token), request_id: request_id(parts) })
            }
            Err(AuthError::Unavailable(e)) => {
                tracing::error!(error = %e, "console session lookup failed");
                Err(super::message_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    "Signing in is temporarily unavailable. Try again in a moment.",
                ))
            }
            Err(AuthError::Suspended) => Err(signed_out("suspended", over_tls(parts, state))),
            Err(_) => Err(signed_out("expired", over_tls(parts, state))),
        }
    }
}

/// Back to the sign-in page, forgetting the session cookie.
pub fn signed_out(reason: &str, secure: bool) -> Response {
    let mut response = Redirect::to(&format!("/console/sign-in?reason={reason}")).into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0, secure));
    response
}

impl Session {
    /// Refuses a form that does not carry this session's CSRF token.
    pub fn verify(&self, form: &Form) -> Result<(), Response> {
        match form.get("csrf") {
            Some(sent) if same_secret(sent, &self.csrf) => Ok(()),
            _ => Err(forgery()),
        }
    }

    pub fn name(&self) -> &str {
        &self.principal.name
    }

    /// Calls the API as this person.
    pub async fn api(
        &self,
        state: &ConsoleState,
        method: axum::http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> super::api::ApiReply {
        state.api.call(Some(&self.token), &self.request_id, method, path, body).await
    }
}

/// The answer to a form that is not the console's own.
pub fn forgery() -> Response {
    super::message_page(
        StatusCode::FORBIDDEN,
        "Form refused",
        "This form did not come from this console page (it may have expired). Go back, reload the page and try again.",
    )
}

/// A posted `application/x-www-form-urlencoded` form, from this origin.
pub struct Form {
    pub fields: Vec<(String, String)>,
}

impl Form {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (checkboxes).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The value of `name`, or empty.
    pub fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }
}

/// Whether a request's `Origin` and `Sec-Fetch-Site` (when the browser sends them) say it
/// came from a page of this host.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|site| site != "same-origin" && site != "none") {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else { return false };
    let origin = origin.to_str().unwrap_or("");
    let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    authority.is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

impl FromRequest<ConsoleState> for Form {
    type Rejection = Response;

    async fn from_request(request: Request, _state: &ConsoleState) -> Result<Self, Self::Rejection> {
        if !same_origin(request.headers()) {
            return Err(forgery());
        }
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(super::message_page(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Form refused",
                "Console forms are sent as application/x-www-form-urlencoded.",
            ));
        }
        let body = axum::body::to_bytes(request.into_body(), MAX_FORM_BYTES).await.map_err(|_| {
            super::message_page(StatusCode::PAYLOAD_TOO_LARGE, "Form refused", "The form is too large.")
        })?;
        let fields = form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        Ok(Form { fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let a = csrf_for("keel_a_secret");
        assert_eq!(a, csrf_for("keel_a_secret"));
        assert_ne!(a, csrf_for("keel_b_secret"));
        assert!(same_secret(&a, &a.clone()));
        assert!(!same_secret(&a, &a[..a.len() - 1]));
        assert!(!same_secret(&a, ""));
    }

    #[test]
    fn a_duplicated_cookie_is_trusted_by_neither_copy() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; keel_session=one"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("one"));
        headers.append(header::COOKIE, HeaderValue::from_static("keel_session=two"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), None);
    }

    #[test]
    fn cross_site_posts_are_refused_by_origin_or_fetch_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("keel.example:8080"));
        assert!(same_origin(&headers), "no browser metadata: the CSRF token decides");
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://keel.example:8080"));
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://keel.example:8080"));
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&headers));
    }
}

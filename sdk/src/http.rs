//! Requests and responses as a handler sees them.

use crate::bindings::exports::keel::platform::handler as wit;
use crate::bindings::keel::platform::types::Caller as WitCaller;
use crate::error::Error;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Who is calling, as established by the host. A plugin cannot choose its tenant.
///
/// ```
/// use keel_sdk::Caller;
/// let caller = Caller {
///     tenant: "acme".into(),
///     user_id: "usr_1".into(),
///     display_name: "Ana".into(),
///     permissions: vec!["helpdesk.ticket.read".into()],
/// };
/// assert!(caller.has_permission("helpdesk.ticket.read"));
/// assert!(!caller.has_permission("helpdesk.agent"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant every read and write of this call belongs to.
    pub tenant: String,
    /// The authenticated user (or service token) id.
    pub user_id: String,
    /// A name fit to show to people.
    pub display_name: String,
    /// The permissions of this plugin that the caller holds.
    pub permissions: Vec<String>,
}

impl Caller {
    /// Whether the caller holds `permission`.
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission || p == "*")
    }
}

/// An incoming request, routed by the host.
///
/// Handlers read path parameters, query pairs, headers and a JSON body from it; tests build
/// one with [`Request::new`]:
///
/// ```
/// use keel_sdk::{Caller, Request};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Patch { title: String }
///
/// let caller = Caller { tenant: "t".into(), user_id: "u".into(), display_name: "U".into(), permissions: vec![] };
/// let req = Request::new(caller, "PATCH", "/tickets/{number}", &[("number", "7")], br#"{"title":"New"}"#);
/// assert_eq!(req.param("number").unwrap(), "7");
/// assert!(req.param("missing").is_err()); // a 400 for the client
/// let patch: Patch = req.json().unwrap();
/// assert_eq!(patch.title, "New");
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    /// The caller's identity.
    pub caller: Caller,
    /// The host's request id, for logs and error bodies.
    pub request_id: String,
    /// Upper-case HTTP method.
    pub method: String,
    /// Path below the plugin's prefix, e.g. `/tickets/42`.
    pub path: String,
    /// The route pattern that matched, e.g. `/tickets/{id}`.
    pub route: String,
    params: Vec<(String, String)>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Request {
    pub(crate) fn from_wit(caller: WitCaller, request: wit::Request) -> Self {
        Request {
            caller: Caller {
                tenant: caller.tenant,
                user_id: caller.user_id,
                display_name: caller.display_name,
                permissions: caller.permissions,
            },
            request_id: request.request_id,
            method: request.method,
            path: request.path,
            route: request.route,
            params: request.params,
            query: request.query,
            headers: request.headers,
            body: request.body,
        }
    }

    /// Builds a request directly, for unit tests of handlers.
    pub fn new(caller: Caller, method: &str, route: &str, params: &[(&str, &str)], body: &[u8]) -> Self {
        Request {
            caller,
            request_id: "test".into(),
            method: method.to_ascii_uppercase(),
            path: route.into(),
            route: route.into(),
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            query: Vec::new(),
            headers: Vec::new(),
            body: body.to_vec(),
        }
    }

    /// The value of the `{name}` segment of the matched route; a 400 error if absent.
    pub fn param(&self, name: &str) -> Result<&str, Error> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| Error::bad_request("missing-parameter", format!("missing path parameter `{name}`")))
    }

    /// The first query-string value named `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON into `T`; a 400 `malformed-json` error says where it failed.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::bad_request("malformed-json", format!("request body is not valid JSON for this route: {e}"))
        })
    }
}

/// A response to send back.
///
/// ```
/// use keel_sdk::Response;
/// let created = Response::json(201, &serde_json::json!({ "number": 7 })).unwrap()
///     .with_header("Location", "/tickets/7");
/// assert_eq!(created.status, 201);
/// assert_eq!(created.body_json()["number"], 7);
/// assert!(created.headers.contains(&("location".into(), "/tickets/7".into())));
/// assert_eq!(Response::no_content().status, 204);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response with `status`.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Result<Response, Error> {
        let body = serde_json::to_vec(value)?;
        Ok(Response::raw(status, "application/json", body))
    }

    /// A response with an explicit content type.
    pub fn raw(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response { status, headers: vec![("content-type".into(), content_type.into())], body }
    }

    /// 204 with no body.
    pub fn no_content() -> Response {
        Response { status: 204, headers: Vec::new(), body: Vec::new() }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The body parsed as JSON, for tests.
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub(crate) fn into_wit(self) -> wit::Response {
        wit::Response { status: self.status, headers: self.headers, body: self.body }
    }
}

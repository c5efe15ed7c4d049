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

    /// Whether this is someone without a token on a `public` route (a customer filling in a
    /// web form): user id `public`, no permissions. Treat everything they send as untrusted.
    pub fn is_public(&self) -> bool {
        self.user_id == "public" && self.permissions.is_empty()
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

    /// The body parsed as JSON into `T`; a 400 `malformed-json` error says where it failed,
    /// and names the field (`field` in the problem body) when one is at fault: missing, unknown,
    /// or of the wrong type.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let mut deserializer = serde_json::Deserializer::from_slice(&self.body);
        let mut track = serde_path_to_error::Track::new();
        let tracked = serde_path_to_error::Deserializer::new(&mut deserializer, &mut track);
        let parsed = T::deserialize(tracked).and_then(|value| deserializer.end().map(|()| value));
        parsed.map_err(|e| {
            let error =
                Error::bad_request("malformed-json", format!("request body is not valid JSON for this route: {e}"));
            match field_of(&track.path().to_string(), &e.to_string()) {
                Some(field) if e.is_data() => error.at_field(field),
                _ => error,
            }
        })
    }

    /// The paging a list request asks for: `?limit=` (1 to `max`; `default` when absent) and
    /// `?cursor=` (the `next` of the previous page). A bad limit is 422 `invalid-limit`,
    /// naming the field.
    ///
    /// ```
    /// # use keel_sdk::{Caller, Request};
    /// # let caller = Caller { tenant: "t".into(), user_id: "u".into(), display_name: "U".into(), permissions: vec![] };
    /// # let req = Request::new(caller, "GET", "/tickets", &[], b"");
    /// let paging = req.paging(50, 200)?;
    /// assert_eq!((paging.limit, paging.cursor), (50, None));
    /// # Ok::<(), keel_sdk::Error>(())
    /// ```
    pub fn paging(&self, default: u32, max: u32) -> Result<Paging, Error> {
        let limit = match self.query("limit") {
            None => default,
            Some(raw) => raw.parse::<u32>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                Error::invalid("invalid-limit", format!("`limit` must be 1 to {max} (got `{raw}`)")).at_field("limit")
            })?,
        };
        Ok(Paging { limit, cursor: self.query("cursor").map(str::to_owned) })
    }

    /// The version the client last saw, from an `If-Match` header (`3`, `"3"` or `W/"3"`, as
    /// [`Response::with_version`] sends it in `ETag`); `None` without one, or for `*` (any
    /// version). A header that is not a version is 400 `invalid-if-match`.
    pub fn if_match(&self) -> Result<Option<u64>, Error> {
        let Some(raw) = self.header("if-match") else { return Ok(None) };
        let trimmed = raw.trim();
        // `*`: any current version will do.
        if trimmed == "*" {
            return Ok(None);
        }
        let bare = trimmed.strip_prefix("W/").unwrap_or(trimmed).trim_matches('"');
        bare.parse::<u64>().map(Some).map_err(|_| {
            Error::bad_request("invalid-if-match", format!("If-Match must be a version number (got `{raw}`)"))
                .at_field("If-Match")
        })
    }
}

/// What a list request asks for: see [`Request::paging`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// How many items the page may hold.
    pub limit: u32,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

/// The field a serde error is about: its path, or the field a "missing field" names.
pub(crate) fn field_of(path: &str, message: &str) -> Option<String> {
    if !path.is_empty() && path != "." && path != "?" {
        return Some(path.to_owned());
    }
    ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.split(p).nth(1).and_then(|rest| rest.split('`').next()).map(str::to_owned))
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

    /// A page of a list, in the envelope every Keel list answers with (the host's admin API
    /// too): `{"items": [...], "next": "<cursor>"}`, `next` absent on the last page.
    ///
    /// ```
    /// use keel_sdk::Response;
    /// let page = Response::page(&[1, 2], Some("k1.abc")).unwrap();
    /// assert_eq!(page.body_json(), serde_json::json!({ "items": [1, 2], "next": "k1.abc" }));
    /// ```
    pub fn page<T: Serialize>(items: &[T], next: Option<&str>) -> Result<Response, Error> {
        let mut body = serde_json::json!({ "items": items });
        if let Some(next) = next {
            body["next"] = next.into();
        }
        Response::json(200, &body)
    }

    /// Adds `ETag: "<version>"`, which clients send back as `If-Match` (see
    /// [`Request::if_match`]).
    pub fn with_version(self, version: u64) -> Response {
        self.with_header("etag", &format!("\"{version}\""))
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

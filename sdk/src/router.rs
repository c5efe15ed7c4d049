//! Dispatch from `(method, route pattern)` to a handler function.
//!
//! The host has already matched the request path against the manifest's routes (and checked
//! the route's permission); it passes the matched pattern, so dispatch here is an exact
//! lookup and the patterns in code must equal the ones in `plugin.toml`. They are checked:
//! the SDK exports this table (`keel:platform/routes`), and an upload or `keel plugin build`
//! whose manifest and router differ is refused, naming each route that is in one only.

use crate::error::Error;
use crate::http::{Request, Response};

/// A handler: a plain function from a request to a response.
pub type Handler = fn(&Request) -> Result<Response, Error>;

/// The routing table of a plugin.
///
/// ```
/// use keel_sdk::{Error, Request, Response, Router};
/// fn hello(_: &Request) -> Result<Response, Error> { Response::json(200, "hi") }
/// let router = Router::new().get("/hello", hello);
/// assert_eq!(router.routes().count(), 1);
/// ```
#[derive(Default)]
pub struct Router {
    routes: Vec<(&'static str, &'static str, Handler)>,
}

impl Router {
    /// An empty table.
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds a route for any method.
    pub fn route(mut self, method: &'static str, pattern: &'static str, handler: Handler) -> Self {
        self.routes.push((method, pattern, handler));
        self
    }
    /// Adds a `GET` route.
    pub fn get(self, pattern: &'static str, handler: Handler) -> Self {
        self.route("GET", pattern, handler)
    }
    /// Adds a `POST` route.
    pub fn post(self, pattern: &'static str, handler: Handler) -> Self {
        self.route("POST", pattern, handler)
    }
    /// Adds a `PUT` route.
    pub fn put(self, pattern: &'static str, handler: Handler) -> Self {
        self.route("PUT", pattern, handler)
    }
    /// Adds a `PATCH` route.
    pub fn patch(self, pattern: &'static str, handler: Handler) -> Self {
        self.route("PATCH", pattern, handler)
    }
    /// Adds a `DELETE` route.
    pub fn delete(self, pattern: &'static str, handler: Handler) -> Self {
        self.route("DELETE", pattern, handler)
    }

    /// The `(method, pattern)` pairs in the table.
    pub fn routes(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.routes.iter().map(|(m, p, _)| (*m, *p))
    }

    /// Runs the handler for the request's method and matched route.
    pub fn dispatch(&self, request: &Request) -> Result<Response, Error> {
        self.routes
            .iter()
            .find(|(m, p, _)| m.eq_ignore_ascii_case(&request.method) && *p == request.route)
            .map(|(_, _, handler)| handler(request))
            .unwrap_or_else(|| {
                Err(Error::not_found(
                    "route-not-implemented",
                    format!("the plugin declares {} {} but does not implement it", request.method, request.route),
                ))
            })
    }
}

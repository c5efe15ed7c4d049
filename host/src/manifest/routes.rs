//! Route patterns (`/tickets/{number}/comments`) and matching request paths against them.

use super::RouteSpec;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A parsed route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    text: String,
    segments: Vec<Segment>,
}

impl RoutePattern {
    pub fn parse(text: &str) -> Result<RoutePattern, String> {
        let rest = text.strip_prefix('/').ok_or_else(|| format!("`{text}` must start with '/'"))?;
        if text.len() > 200 {
            return Err(format!("`{text}` is longer than 200 characters"));
        }
        let mut segments = Vec::new();
        if !rest.is_empty() {
            for part in rest.split('/') {
                if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                    if !valid {
                        return Err(format!("`{text}`: parameter `{name}` must be lower-case letters, digits and '_'"));
                    }
                    if segments.iter().any(|s| *s == Segment::Param(name.to_owned())) {
                        return Err(format!("`{text}`: parameter `{name}` appears twice"));
                    }
                    segments.push(Segment::Param(name.to_owned()));
                } else if !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c)) {
                    segments.push(Segment::Literal(part.to_owned()));
                } else {
                    return Err(format!(
                        "`{text}`: segment `{part}` must be a literal of letters, digits, '-', '.', '_', '~' or a `{{param}}`"
                    ));
                }
            }
        }
        Ok(RoutePattern { text: text.to_owned(), segments })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The names of the `{param}` segments, in order.
    pub fn param_names(&self) -> Vec<&str> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(name) => Some(name.as_str()),
                Segment::Literal(_) => None,
            })
            .collect()
    }

    fn matches(&self, parts: &[&str]) -> Option<Vec<(String, String)>> {
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.clone(), percent_decode(part)?)),
            }
        }
        Some(params)
    }

    /// Literal segments first, so `/tickets/export` wins over `/tickets/{number}`.
    fn specificity(&self) -> Vec<bool> {
        self.segments.iter().map(|s| matches!(s, Segment::Param(_))).collect()
    }

    fn same_shape(&self, other: &RoutePattern) -> bool {
        self.segments.len() == other.segments.len()
            && self.segments.iter().zip(&other.segments).all(|(a, b)| match (a, b) {
                (Segment::Literal(x), Segment::Literal(y)) => x == y,
                (Segment::Param(_), Segment::Param(_)) => true,
                _ => false,
            })
    }
}

fn percent_decode(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = part.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The routes of one plugin, ready for matching.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// (method, pattern, index into the manifest's routes), most specific first.
    routes: Vec<(String, RoutePattern, usize)>,
}

/// A request matched to a manifest route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub index: usize,
    pub pattern: String,
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no route matches this path")]
    NotFound,
    #[error("this path does not accept {method}; it accepts {allowed}")]
    MethodNotAllowed { method: String, allowed: String },
}

impl RouteTable {
    pub fn new(specs: &[RouteSpec]) -> Result<RouteTable, String> {
        let mut routes: Vec<(String, RoutePattern, usize)> = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            if !METHODS.contains(&spec.method.as_str()) {
                return Err(format!("method `{}` is not one of {}", spec.method, METHODS.join(", ")));
            }
            let pattern = RoutePattern::parse(&spec.path)?;
            if let Some((_, other, _)) = routes.iter().find(|(m, p, _)| *m == spec.method && p.same_shape(&pattern)) {
                return Err(format!("{} `{}` is ambiguous with `{}`", spec.method, spec.path, other.as_str()));
            }
            routes.push((spec.method.clone(), pattern, index));
        }
        routes.sort_by_key(|(_, p, _)| p.specificity());
        Ok(RouteTable { routes })
    }

    /// Matches a path below the plugin prefix (`/tickets/42`).
    pub fn find(&self, method: &str, path: &str) -> Result<RouteMatch, RouteError> {
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        let parts: Vec<&str> = if trimmed.is_empty() { Vec::new() } else { trimmed.split('/').collect() };
        let mut allowed = Vec::new();
        for (m, pattern, index) in &self.routes {
            if let Some(params) = pattern.matches(&parts) {
                if m == method {
                    return Ok(RouteMatch { index: *index, pattern: pattern.as_str().to_owned(), params });
                }
                allowed.push(m.clone());
            }
        }
        if allowed.is_empty() {
            Err(RouteError::NotFound)
        } else {
            allowed.sort();
            allowed.dedup();
            Err(RouteError::MethodNotAllowed { method: method.to_owned(), allowed: allowed.join(", ") })
        }
    }
}

/// How a plugin's router and its manifest's routes differ: routes are written twice (the
/// manifest says what the host serves and who may call it, the router which function runs),
/// so an upload compares them and names every route that is in one only.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
#[error("{}", self.describe())]
pub struct RouteMismatch {
    /// Handled by the code but not declared, so unreachable (`GET /x`).
    pub undeclared: Vec<String>,
    /// Declared but not handled, so every call would answer 404 `route-not-implemented`.
    pub unhandled: Vec<String>,
}

impl RouteMismatch {
    /// Compares the manifest's routes with the `(method, pattern)` pairs the code handles.
    /// Methods compare case-insensitively, patterns exactly (parameter names included:
    /// the SDK looks them up by name).
    pub fn check(manifest: &[RouteSpec], handled: &[(String, String)]) -> Result<(), RouteMismatch> {
        let key = |method: &str, path: &str| format!("{} {path}", method.to_ascii_uppercase());
        let declared: std::collections::BTreeSet<String> = manifest.iter().map(|r| key(&r.method, &r.path)).collect();
        let handled: std::collections::BTreeSet<String> = handled.iter().map(|(m, p)| key(m, p)).collect();
        let mismatch = RouteMismatch {
            undeclared: handled.difference(&declared).cloned().collect(),
            unhandled: declared.difference(&handled).cloned().collect(),
        };
        if mismatch.undeclared.is_empty() && mismatch.unhandled.is_empty() { Ok(()) } else { Err(mismatch) }
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.undeclared.is_empty() {
            parts.push(format!("the router handles {} that plugin.toml does not declare", self.undeclared.join(", ")));
        }
        if !self.unhandled.is_empty() {
            parts.push(format!("plugin.toml declares {} that the router does not handle", self.unhandled.join(", ")));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: &str, path: &str) -> RouteSpec {
        RouteSpec::new(method, path, "p.x")
    }

    fn table() -> RouteTable {
        RouteTable::new(&[
            spec("GET", "/tickets/{number}"),
            spec("GET", "/tickets/export"),
            spec("POST", "/tickets"),
            spec("GET", "/tickets"),
            spec("POST", "/tickets/{number}/comments"),
        ])
        .unwrap()
    }

    #[test]
    fn params_are_extracted_and_percent_decoded() {
        let m = table().find("GET", "/tickets/4%202").unwrap();
        assert_eq!(m.pattern, "/tickets/{number}");
        assert_eq!(m.params, vec![("number".to_string(), "4 2".to_string())]);
    }

    #[test]
    fn literal_segments_win_over_params() {
        assert_eq!(table().find("GET", "/tickets/export").unwrap().pattern, "/tickets/export");
    }

    #[test]
    fn unknown_paths_and_wrong_methods_are_told_apart() {
        assert_eq!(table().find("GET", "/nope"), Err(RouteError::NotFound));
        assert_eq!(table().find("GET", "/tickets/1/comments/2"), Err(RouteError::NotFound));
        assert_eq!(
            table().find("DELETE", "/tickets"),
            Err(RouteError::MethodNotAllowed { method: "DELETE".into(), allowed: "GET, POST".into() })
        );
        assert_eq!(table().find("GET", "/tickets/%zz"), Err(RouteError::NotFound));
    }

    #[test]
    fn ambiguous_and_malformed_patterns_are_refused() {
        assert!(RouteTable::new(&[spec("GET", "/a/{x}"), spec("GET", "/a/{y}")]).is_err());
        assert!(RouteTable::new(&[spec("GET", "/a/{x}/{x}")]).is_err());
        assert!(RouteTable::new(&[spec("GET", "a")]).is_err());
        assert!(RouteTable::new(&[spec("GET", "/a//b")]).is_err());
        assert!(RouteTable::new(&[spec("GET", "/a/{X}")]).is_err());
        assert!(RouteTable::new(&[spec("GET", "/a/{x}"), spec("POST", "/a/{y}")]).is_ok());
    }

    #[test]
    fn a_router_and_manifest_that_differ_name_every_route_in_one_only() {
        let manifest = [spec("GET", "/tickets"), spec("post", "/tickets"), spec("GET", "/tickets/{id}")];
        let handled =
            |routes: &[(&str, &str)]| routes.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect::<Vec<_>>();
        assert_eq!(
            RouteMismatch::check(
                &manifest,
                &handled(&[("GET", "/tickets"), ("POST", "/tickets"), ("get", "/tickets/{id}")])
            ),
            Ok(()),
            "methods compare case-insensitively"
        );
        let mismatch = RouteMismatch::check(
            &manifest,
            &handled(&[
                ("GET", "/tickets"),
                ("POST", "/tickets"),
                ("GET", "/tickets/{number}"),
                ("DELETE", "/tickets"),
            ]),
        )
        .unwrap_err();
        assert_eq!(mismatch.undeclared, ["DELETE /tickets", "GET /tickets/{number}"]);
        assert_eq!(mismatch.unhandled, ["GET /tickets/{id}"]);
        assert_eq!(
            mismatch.to_string(),
            "the router handles DELETE /tickets, GET /tickets/{number} that plugin.toml does not declare; \
             plugin.toml declares GET /tickets/{id} that the router does not handle"
        );
    }
}

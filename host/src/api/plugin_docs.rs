//! OpenAPI for department routes: each plugin's manifest routes, with the JSON Schemas it
//! declares ([`crate::manifest::schema`]), as operations under `/v1/plugins/{id}/...` (and
//! `/v1/public/{tenant}/{id}/...` for public routes). `GET /v1/openapi.json` merges the
//! departments the caller's tenant has on into the platform's document;
//! `GET /v1/plugins/{id}/openapi.json` is one plugin's own.

use crate::manifest::schema::to_openapi;
use crate::manifest::{Manifest, RouteSpec};
use crate::plugins::LoadedPlugin;
use serde_json::{Map, Value, json};

/// The statuses the host itself may answer on any plugin route, besides the plugin's own
/// errors (which the SDK renders as problems too): why, by status.
const HOST_ANSWERS: [(u16, &str); 14] = [
    (400, "Malformed request (a body that is not JSON, a plugin's own `bad-request`)"),
    (401, "No valid bearer token"),
    (403, "The caller lacks the route's permission, or the tenant is suspended"),
    (404, "No such route, the department is not on for this tenant, or the plugin's own not-found"),
    (408, "The request took longer than the host's request timeout"),
    (409, "A conflict the plugin reports, or a write that lost to a concurrent one"),
    (413, "The body exceeds the host's limit"),
    (
        422,
        "The input breaks the route's declared schema (`invalid-field`, with `field` and `errors`), or a rule of the plugin",
    ),
    (429, "Rate limited, or the tenant's share of plugin instances is in use (see Retry-After)"),
    (500, "The plugin failed (trap, memory limit) or answered something invalid"),
    (502, "The plugin's response broke the host's response policy"),
    (503, "Storage or capacity is unavailable now; nothing was saved (see Retry-After)"),
    (504, "The plugin ran past its time limit"),
    (507, "The tenant's storage quota is used up"),
];

/// Statuses of a public route called without a token (no 401, no permission).
fn answers(route: &RouteSpec, public_path: bool) -> impl Iterator<Item = &'static (u16, &'static str)> {
    let has_body = matches!(route.method.as_str(), "POST" | "PUT" | "PATCH");
    HOST_ANSWERS.iter().filter(move |(status, _)| match status {
        401 => !public_path,
        413 => has_body,
        _ => true,
    })
}

/// Shared components every plugin document refers to.
fn shared_components() -> Map<String, Value> {
    let mut responses = Map::new();
    for (status, why) in HOST_ANSWERS.iter().chain(&[(415, "The body is not `application/json`")]) {
        responses.insert(
            format!("Problem{status}"),
            json!({
                "description": why,
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
            }),
        );
    }
    let mut components = Map::new();
    components.insert("responses".into(), Value::Object(responses));
    components
}

/// `helpdesk` + `POST /tickets/{number}/comments` → `helpdesk.post_tickets_number_comments`.
fn operation_id(plugin: &str, route: &RouteSpec, public: bool) -> String {
    let mut id = format!("{plugin}.{}{}", if public { "public_" } else { "" }, route.method.to_ascii_lowercase());
    for part in route.path.split('/').filter(|p| !p.is_empty()) {
        id.push('_');
        let part = part.trim_start_matches('{').trim_end_matches('}');
        id.extend(part.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }));
    }
    id
}

fn operation(manifest: &Manifest, route: &RouteSpec, public_path: bool) -> Value {
    let prefix = format!("{}.", manifest.id);
    let schema = |s: &Option<Value>| s.as_ref().map(|s| to_openapi(s, &prefix)).unwrap_or_else(|| json!({}));
    let mut parameters = Vec::new();
    if public_path {
        parameters.push(json!({
            "name": "tenant", "in": "path", "required": true,
            "description": "The tenant whose department serves the form",
            "schema": {"type": "string"},
        }));
    }
    let pattern = crate::manifest::RoutePattern::parse(&route.path).expect("validated with the manifest");
    for name in pattern.param_names() {
        let declared = route.params.get(name).map(|s| to_openapi(s, &prefix));
        // A path segment is never empty.
        let fallback = json!({"type": "string", "minLength": 1});
        parameters.push(json!({"name": name, "in": "path", "required": true, "schema": declared.unwrap_or(fallback)}));
    }
    if let Some(query) = &route.query {
        let required: Vec<&str> = query
            .get("required")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(Value::Object(properties)) = query.get("properties") {
            for (name, property) in properties {
                let mut parameter = json!({
                    "name": name, "in": "query", "required": required.contains(&name.as_str()),
                    "schema": to_openapi(property, &prefix),
                });
                if let Some(description) = property.get("description") {
                    parameter["description"] = description.clone();
                }
                if property.get("type").and_then(Value::as_str) == Some("array") {
                    parameter["style"] = "form".into();
                    parameter["explode"] = true.into();
                }
                parameters.push(parameter);
            }
        }
    }
    let mut op = Map::new();
    op.insert("tags".into(), json!([manifest.id]));
    op.insert("operationId".into(), operation_id(&manifest.id, route, public_path).into());
    let summary =
        if route.summary.is_empty() { format!("{} {}", route.method, route.path) } else { route.summary.clone() };
    op.insert("summary".into(), summary.into());
    if !route.description.is_empty() {
        op.insert("description".into(), route.description.clone().into());
    }
    if route.public {
        op.insert("x-keel-public".into(), true.into());
    } else {
        op.insert("x-keel-permission".into(), route.permission.clone().into());
    }
    op.insert("security".into(), if public_path { json!([]) } else { json!([{"bearer": []}]) });
    op.insert("parameters".into(), Value::Array(parameters));
    let has_body = matches!(route.method.as_str(), "POST" | "PUT" | "PATCH");
    if has_body {
        op.insert(
            "requestBody".into(),
            json!({"required": route.input.is_some(), "content": {"application/json": {"schema": schema(&route.input)}}}),
        );
    }
    let mut responses = Map::new();
    let status = route.success_status();
    let success = if status == 204 {
        json!({"description": "Done; no body"})
    } else {
        json!({"description": "Success", "content": {"application/json": {"schema": schema(&route.output)}}})
    };
    let mut success = success;
    let links = links_from(manifest, route);
    if !links.is_empty() && !public_path {
        success["links"] = Value::Object(links);
    }
    responses.insert(status.to_string(), success);
    for (status, _) in answers(route, public_path) {
        responses.insert(status.to_string(), json!({"$ref": format!("#/components/responses/Problem{status}")}));
    }
    if has_body && route.input.is_some() {
        responses.insert("415".into(), json!({"$ref": "#/components/responses/Problem415"}));
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// The property names of an object schema, through one `#/schemas/<Name>` reference.
fn output_properties<'a>(manifest: &'a Manifest, schema: &'a Value) -> Vec<&'a str> {
    let resolved = match schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(crate::manifest::schema::REF_PREFIX))
    {
        Some(name) => manifest.schemas.get(name),
        None => Some(schema),
    };
    resolved
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// OpenAPI links from a route that creates something to the routes below it that take it
/// as their next path parameter, when its answer carries a property of that name:
/// `POST /tickets` answering `number` → `GET /tickets/{number}`, ...
fn links_from(manifest: &Manifest, route: &RouteSpec) -> Map<String, Value> {
    let mut links = Map::new();
    let Some(output) = route.output.as_ref().filter(|_| route.method == "POST") else { return links };
    let properties = output_properties(manifest, output);
    let base = route.path.trim_end_matches('/');
    for target in &manifest.routes {
        let Some(rest) = target.path.strip_prefix(base).and_then(|r| r.strip_prefix("/{")) else { continue };
        let Some((param, _)) = rest.split_once('}') else { continue };
        if !properties.contains(&param) {
            continue;
        }
        let operation_id = operation_id(&manifest.id, target, false);
        let link = json!({"operationId": operation_id, "parameters": {param: format!("$response.body#/{param}")}});
        links.insert(operation_id, link);
    }
    links
}

/// Adds `manifest`'s routes, named schemas and tag to an OpenAPI document (`doc` must have
/// `paths` and `components`, as the platform's does).
pub fn merge(doc: &mut Value, manifest: &Manifest) {
    for (path, item) in paths(manifest) {
        let entry = doc["paths"].as_object_mut().map(|p| p.entry(path).or_insert_with(|| json!({})));
        if let (Some(Value::Object(entry)), Value::Object(item)) = (entry, item) {
            entry.extend(item);
        }
    }
    let components = &mut doc["components"];
    if !components.is_object() {
        *components = json!({});
    }
    for (name, schema) in &manifest.schemas {
        components["schemas"][format!("{}.{name}", manifest.id)] = to_openapi(schema, &format!("{}.", manifest.id));
    }
    for (name, value) in shared_components() {
        if let (Some(into), Value::Object(from)) = (components.as_object_mut(), value) {
            let slot = into.entry(name).or_insert_with(|| json!({}));
            if let Some(slot) = slot.as_object_mut() {
                slot.extend(from);
            }
        }
    }
    if let Some(tags) = doc.get_mut("tags").and_then(Value::as_array_mut) {
        tags.push(json!({"name": manifest.id, "description": format!("{} ({} {})", manifest.name, manifest.id, manifest.version)}));
    }
}

fn paths(manifest: &Manifest) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    let mut add = |path: String, method: &str, op: Value| match out.iter_mut().find(|(p, _)| *p == path) {
        Some((_, item)) => item[method.to_ascii_lowercase()] = op,
        None => out.push((path, json!({ method.to_ascii_lowercase(): op }))),
    };
    for route in &manifest.routes {
        let suffix = if route.path == "/" { String::new() } else { route.path.clone() };
        add(format!("/v1/plugins/{}{suffix}", manifest.id), &route.method, operation(manifest, route, false));
        if route.public {
            add(
                format!("/v1/public/{{tenant}}/{}{suffix}", manifest.id),
                &route.method,
                operation(manifest, route, true),
            );
        }
    }
    out
}

/// One plugin's own document.
pub fn document(plugin: &LoadedPlugin, problem_schema: Value) -> Value {
    let manifest = &plugin.record.manifest;
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {"title": manifest.name, "version": manifest.version.to_string(), "description": manifest.description},
        "paths": {},
        "components": {
            "schemas": {"Problem": problem_schema},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "tags": [],
    });
    merge(&mut doc, manifest);
    doc
}

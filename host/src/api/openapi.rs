//! The platform's OpenAPI document, made exact: the handlers' annotations (utoipa) say what
//! each operation answers on success and its own refusals; what every request can meet on
//! the way (authentication, rate limits, body and query parsing, timeouts, the database
//! going away) is added here, once, from each operation's shape, so no operation can forget
//! a status the host answers.

use serde_json::{Value, json};

/// Why the host answers a status on its own, before or around a handler.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "The request is malformed: a body that is not JSON, a query or path that does not parse",
        401 => "No valid bearer token (`missing-token`, `malformed-token`, `invalid-token`)",
        403 => "The token may not do this (`forbidden`), or its tenant is suspended",
        404 => "No such resource, or none visible to this caller",
        408 => "The request took longer than the host's request timeout",
        409 => "The current state does not allow it",
        413 => "The body exceeds the host's limit",
        415 => "The body is not of a type the operation takes",
        422 => "The input breaks a rule (`invalid-request` for a body of the wrong shape)",
        429 => "Rate limited (see Retry-After)",
        500 => "An unexpected failure",
        503 => "The database or another dependency is unavailable; nothing changed (see Retry-After)",
        507 => "A storage quota is used up",
        _ => "An error",
    }
}

fn problem(status: u16) -> Value {
    json!({
        "description": reason(status),
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    })
}

/// The schema of a path parameter, by its name (and path): identifiers have one form
/// across the API, checked the same way wherever they appear.
fn path_parameter(path: &str, name: &str) -> Value {
    const SLUG: &str = "^[a-z][a-z0-9-]{0,30}[a-z0-9]$";
    match name {
        "tenant" => json!({"type": "string", "pattern": "^[a-z][a-z0-9-]{0,30}[a-z0-9]$"}),
        "plugin" => json!({"type": "string", "pattern": SLUG}),
        "id" if path.starts_with("/v1/admin/plugins/") => json!({"type": "string", "pattern": SLUG}),
        "role" => json!({"type": "string", "pattern": "^[a-z][a-z0-9-]{1,31}$"}),
        "name" if path.contains("/trusted-keys/") => json!({"type": "string", "pattern": "^[a-z][a-z0-9.-]{0,63}$"}),
        "import" => json!({"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"}),
        _ => json!({"type": "string", "minLength": 1}),
    }
}

/// Where what one operation creates is used next (OpenAPI links, which clients and
/// stateful testers follow): (operation, its success status, the path prefix of the
/// operations that take it, the parameter, where its value is in the response).
const LINKS: [(&str, &str, &str, &str, &str); 4] = [
    ("post /v1/admin/tenants", "201", "/v1/tenants/{tenant}", "tenant", "$response.body#/id"),
    ("post /v1/admin/tenants", "201", "/v1/admin/tenants/{tenant}", "tenant", "$response.body#/id"),
    ("post /v1/tenants/{tenant}/tokens", "201", "/v1/tenants/{tenant}/tokens/{token}", "token", "$response.body#/id"),
    (
        "post /v1/tenants/{tenant}/plugins/{plugin}/schedules/{name}/run",
        "202",
        "/v1/tenants/{tenant}/jobs/{id}",
        "id",
        "$response.body#/job_id",
    ),
];

/// Adds [`LINKS`] to `doc`: every operation under each target prefix, with the path
/// parameters the source has in common passed along from its request.
fn add_links(doc: &mut Value) {
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else { return };
    let mut additions = Vec::new();
    for (source, status, prefix, param, from) in LINKS {
        let (source_method, source_path) = source.split_once(' ').expect("`method path`");
        for (path, item) in paths {
            if !path.starts_with(prefix) {
                continue;
            }
            for (method, op) in item.as_object().into_iter().flatten() {
                let Some(operation_id) = op.get("operationId").and_then(Value::as_str) else { continue };
                let mut parameters = serde_json::Map::new();
                parameters.insert(param.to_owned(), from.into());
                for p in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
                    let name = p["name"].as_str().unwrap_or_default();
                    if p["in"] == "path" && name != param && source_path.contains(&format!("{{{name}}}")) {
                        parameters.insert(name.to_owned(), format!("$request.path.{name}").into());
                    }
                }
                let link = json!({"operationId": operation_id, "parameters": parameters});
                additions.push((
                    source_path.to_owned(),
                    source_method,
                    status,
                    format!("{method}_{operation_id}"),
                    link,
                ));
            }
        }
    }
    for (path, method, status, name, link) in additions {
        if let Some(response) = doc["paths"][&path][method]["responses"].get_mut(status).and_then(Value::as_object_mut)
        {
            let links = response.entry("links").or_insert_with(|| json!({}));
            links[name] = link;
        }
    }
}

/// The documents themselves, which are served beside the annotated handlers.
fn add_document_operations(doc: &mut Value) {
    let any_document = json!({"description": "An OpenAPI 3.1 document", "content": {"application/json": {"schema": {"type": "object"}}}});
    doc["paths"]["/v1/openapi.json"] = json!({"get": {
        "tags": ["operations"],
        "operationId": "openapi_document",
        "summary": "This document",
        "description": "Without a token, the platform's operations. With one, also the routes of every department the caller's tenant has on, at the version it runs (an invalid token is 401).",
        "security": [{}, {"bearer": []}],
        "responses": {"200": any_document},
    }});
    doc["paths"]["/v1/plugins/{plugin}/openapi.json"] = json!({"get": {
        "tags": ["plugins"],
        "operationId": "plugin_openapi_document",
        "summary": "One department's routes, at the version the caller's tenant runs",
        "parameters": [{"name": "plugin", "in": "path", "required": true, "schema": {"type": "string"}}],
        "security": [{"bearer": []}],
        "responses": {"200": any_document},
    }});
}

/// Adds to every operation of `doc` the statuses the host's envelope may answer, and a
/// description to every response that lacks one (OpenAPI requires it).
pub fn complete(doc: &mut Value) {
    add_document_operations(doc);
    add_links(doc);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (_, op) in item.iter_mut() {
            let Some(op) = op.as_object_mut() else { continue };
            let secured = op.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
            if let Some(Value::Array(parameters)) = op.get_mut("parameters") {
                for p in parameters.iter_mut().filter(|p| p["in"] == "path") {
                    let name = p["name"].as_str().unwrap_or_default().to_owned();
                    p["schema"] = path_parameter(path, &name);
                }
            }
            let parameters = op.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
            let has_query = parameters.iter().any(|p| p["in"] == "query");
            let has_path = path.contains('{');
            let body_types: Vec<String> = op
                .get("requestBody")
                .and_then(|b| b.get("content"))
                .and_then(Value::as_object)
                .map(|c| c.keys().cloned().collect())
                .unwrap_or_default();
            let mut statuses = vec![408, 500];
            if secured {
                statuses.extend([401, 403, 429, 503]);
            }
            if has_query || has_path {
                statuses.push(400);
            }
            if has_path {
                statuses.push(404);
            }
            if has_path || has_query {
                statuses.push(422);
            }
            if !body_types.is_empty() {
                statuses.extend([400, 413, 415, 503]);
                if body_types.iter().any(|t| t == "application/json") {
                    statuses.push(422);
                }
            }
            let responses = op.entry("responses").or_insert_with(|| json!({}));
            let Some(responses) = responses.as_object_mut() else { continue };
            for status in statuses {
                responses.entry(status.to_string()).or_insert_with(|| problem(status));
            }
            for (status, response) in responses.iter_mut() {
                if let Some(response) = response.as_object_mut()
                    && !response.contains_key("description")
                    && !response.contains_key("$ref")
                {
                    let described = status.parse::<u16>().map(reason).unwrap_or("An answer");
                    let text = if status.starts_with('2') { "Success" } else { described };
                    response.insert("description".into(), text.into());
                }
            }
        }
    }
}

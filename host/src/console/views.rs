//! Department screens drawn from the `[[views]]` of a plugin's manifest (see
//! [`crate::manifest::views`]): lists, records and forms over the plugin's own routes, called
//! through the API as the signed-in person. A view whose route the person may not call is
//! not shown, and could do nothing if reached: the API checks the route's permission again.
//!
//! Addresses: `/console/apps/{plugin}` (the department's menu), `/console/apps/{plugin}/{view}`
//! with the route's path parameters and a list's filters in the query string, and
//! `/console/apps/{plugin}/{view}/actions/{n}` for a record's actions.

use super::api::{ApiReply, segment};
use super::pages::refused;
use super::session::{Form, Session};
use super::{ConsoleState, layout, message_for, respond};
use crate::manifest::views::{find_route, path_params, split_route};
use crate::manifest::{FieldFormat, RouteSpec, ViewField, ViewKind, ViewSpec};
use crate::plugins::LoadedPlugin;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde_json::{Map, Value};
use std::sync::Arc;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/console/apps/{plugin}", get(department))
        .route("/console/apps/{plugin}/{view}", get(show).post(submit))
        .route("/console/apps/{plugin}/{view}/actions/{index}", get(confirm).post(act))
}

/// The query string of a view's address: path parameters, filters, a cursor, a notice.
type Params = Vec<(String, String)>;

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn query_string(params: &[(String, String)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        out.append_pair(k, v);
    }
    out.finish()
}

/// A view's console address with `params`.
fn view_href(plugin: &str, view: &str, params: &[(String, String)]) -> String {
    let base = format!("/console/apps/{}/{}", segment(plugin), segment(view));
    if params.is_empty() { base } else { format!("{base}?{}", query_string(params)) }
}

/// A JSON value as the text of a path parameter or query value.
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The path parameters of `route` taken from `record` (by the same names), else `params`.
fn params_for(route: &str, record: Option<&Value>, params: &Params) -> Params {
    let (_, path) = split_route(route).unwrap_or(("", ""));
    path_params(path)
        .into_iter()
        .filter_map(|name| {
            let value = record.and_then(|r| as_text(&r[name])).or_else(|| param(params, name).map(str::to_owned))?;
            Some((name.to_owned(), value))
        })
        .collect()
}

/// The API path of `route` with its parameters filled in; `None` if one is missing.
fn api_path(plugin: &str, route: &RouteSpec, params: &Params) -> Option<String> {
    let mut path = format!("/v1/plugins/{}", segment(plugin));
    for part in route.path.split('/').filter(|p| !p.is_empty()) {
        path.push('/');
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => path.push_str(&segment(param(params, name.trim_start_matches('*'))?)),
            None => path.push_str(part),
        }
    }
    Some(path)
}

/// The plugin as the caller's tenant runs it, if it is switched on there.
fn department_of(state: &ConsoleState, session: &Session, plugin: &str) -> Result<Arc<LoadedPlugin>, Response> {
    state
        .app
        .registry
        .serving_tenant(&state.app.tenancy, &session.principal.tenant)
        .into_iter()
        .find(|p| p.record.id == plugin)
        .ok_or_else(|| {
            message_for(Some(&session), StatusCode::NOT_FOUND, "Not found", "Your organisation has no such department.")
        })
}

/// Whether the caller may call `route`.
fn may_call(state: &ConsoleState, session: &Session, route: &RouteSpec) -> bool {
    route.public || state.app.tenancy.allows(&session.principal, &route.permission)
}

/// The views of a plugin the caller may open.
pub fn visible_views<'a>(state: &ConsoleState, session: &Session, plugin: &'a LoadedPlugin) -> Vec<&'a ViewSpec> {
    let routes = &plugin.record.manifest.routes;
    plugin
        .record
        .manifest
        .views
        .iter()
        .filter(|v| find_route(routes, &v.route).is_some_and(|r| may_call(state, session, r)))
        .collect()
}

/// The view and its route, if the caller may open it.
fn view_of<'a>(
    state: &ConsoleState,
    session: &Session,
    plugin: &'a LoadedPlugin,
    name: &str,
) -> Result<(&'a ViewSpec, &'a RouteSpec), Response> {
    let manifest = &plugin.record.manifest;
    let view = manifest.views.iter().find(|v| v.name == name).ok_or_else(|| {
        message_for(Some(&session), StatusCode::NOT_FOUND, "Not found", "This department has no such screen.")
    })?;
    let route = find_route(&manifest.routes, &view.route).expect("views name declared routes (checked at upload)");
    if !may_call(state, session, route) {
        return Err(message_for(
            Some(&session),
            StatusCode::FORBIDDEN,
            "Not allowed",
            "You do not have the permission this screen needs. Ask your administrator.",
        ));
    }
    Ok((view, route))
}

fn label(field: &ViewField) -> String {
    field.label.clone().unwrap_or_else(|| humanize(&field.field))
}

/// `first_response_due` → `First response due`.
fn humanize(name: &str) -> String {
    let spaced = name.replace(['_', '-'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A value for people: text as it is (escaped by the template), times as dates, the rest as
/// compact JSON.
fn shown(value: &Value, format: FieldFormat) -> Markup {
    match (value, format) {
        (Value::Null, _) => html! { span.meta { "—" } },
        (Value::Number(n), FieldFormat::Datetime) => {
            let text = n
                .as_i64()
                .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| n.to_string());
            html! { (text) }
        }
        (Value::String(s), FieldFormat::Multiline) => html! { span.multiline { (s) } },
        (Value::String(s), _) => html! { (s) },
        (Value::Bool(b), _) => html! { (if *b { "Yes" } else { "No" }) },
        (Value::Number(n), _) => html! { (n.to_string()) },
        (other, _) => nested(other, 0),
    }
}

/// A structured value drawn for people: a list of plain values joined, a list of records
/// as a small table, a record as its named parts; past two levels, or for odd shapes, the
/// JSON as text.
fn nested(value: &Value, depth: u32) -> Markup {
    let plain = |v: &Value| !v.is_object() && !v.is_array();
    match value {
        Value::Array(items) if items.is_empty() => html! { span.meta { "none" } },
        Value::Array(items) if items.iter().all(plain) => {
            html! { (items.iter().map(|v| as_text(v).unwrap_or_else(|| "—".into())).collect::<Vec<_>>().join(", ")) }
        }
        Value::Array(items) if depth < 2 && items.iter().all(Value::is_object) => {
            let mut columns: Vec<&str> = Vec::new();
            for item in items {
                for key in item.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !columns.contains(&key.as_str()) {
                        columns.push(key);
                    }
                }
            }
            html! {
                table.nested {
                    thead { tr { @for c in &columns { th scope="col" { (humanize(c)) } } } }
                    tbody {
                        @for item in items {
                            tr { @for c in &columns { td data-label=(humanize(c)) { (shown_at(&item[*c], depth + 1)) } } }
                        }
                    }
                }
            }
        }
        Value::Object(fields) if fields.is_empty() => html! { span.meta { "none" } },
        Value::Object(fields) if depth < 2 => html! {
            dl.nested {
                @for (key, value) in fields {
                    dt { (humanize(key)) }
                    dd { (shown_at(value, depth + 1)) }
                }
            }
        },
        other => html! { code { (other.to_string()) } },
    }
}

fn shown_at(value: &Value, depth: u32) -> Markup {
    match value {
        Value::Array(_) | Value::Object(_) => nested(value, depth),
        other => shown(other, FieldFormat::Text),
    }
}

/// A department's menu: the views the caller may open.
async fn department(State(state): State<ConsoleState>, session: Session, Path(plugin): Path<String>) -> Response {
    let loaded = match department_of(&state, &session, &plugin) {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    let views: Vec<&ViewSpec> = visible_views(&state, &session, &loaded).into_iter().filter(|v| v.in_menu()).collect();
    let content = html! {
        p { (loaded.record.description) }
        @if views.is_empty() {
            p { "There is nothing here you have the permission to see. Ask your administrator." }
        } @else {
            ul.cards {
                @for view in &views {
                    li.card { a href=(view_href(&plugin, &view.name, &[])) { (view.title) } }
                }
            }
        }
    };
    respond(StatusCode::OK, layout(&loaded.record.name, Some(&session), None, content))
}

/// What a finished change says, from a fixed list.
fn notice(params: &Params) -> Option<&'static str> {
    match param(params, "done")? {
        "saved" => Some("Saved."),
        "done" => Some("Done."),
        _ => None,
    }
}

/// Everything but the console's own parameters.
fn without_notice(params: &Params) -> Params {
    params.iter().filter(|(k, _)| k != "done").cloned().collect()
}

async fn show(
    State(state): State<ConsoleState>,
    session: Session,
    Path((plugin, view)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Response {
    let loaded = match department_of(&state, &session, &plugin) {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    let (view, route) = match view_of(&state, &session, &loaded, &view) {
        Ok(found) => found,
        Err(page) => return page,
    };
    let notice = notice(&params);
    let params = without_notice(&params);
    let content = match view.kind {
        ViewKind::List => list(&state, &session, &loaded, view, route, &params, true).await,
        ViewKind::Record => record(&state, &session, &loaded, view, route, &params, None).await,
        ViewKind::Form => match load(&state, &session, &loaded, view, &params).await {
            Ok(record) => {
                Ok(form(&session, &loaded, view, route, &params, &Form { fields: Vec::new() }, None, record.as_ref()))
            }
            Err(reply) => Err(reply),
        },
    };
    match content {
        Ok((title, markup)) => respond(StatusCode::OK, layout(&title, Some(&session), notice, markup)),
        Err(reply) => refused(&session, &reply),
    }
}

/// A list view: its filters, its rows, a link to the next page.
async fn list(
    state: &ConsoleState,
    session: &Session,
    plugin: &LoadedPlugin,
    view: &ViewSpec,
    route: &RouteSpec,
    params: &Params,
    whole_page: bool,
) -> Result<(String, Markup), ApiReply> {
    let id = &plugin.record.id;
    let Some(mut path) = api_path(id, route, params) else {
        return Err(missing_parameter());
    };
    let path_names = path_params(&route.path);
    let mut query: Params = view
        .filters
        .iter()
        .filter_map(|f| param(params, f).filter(|v| !v.is_empty()).map(|v| (f.clone(), v.to_owned())))
        .collect();
    // Paging, when the route takes it (it declares the parameter, or declares no query at
    // all, so nothing checks it before the plugin): `cursor` from a "next page" link,
    // `limit` from the address.
    let declared = |name: &str| route.query.as_ref().is_none_or(|q| q["properties"].get(name).is_some());
    for name in ["limit", "cursor"] {
        if declared(name)
            && let Some(value) = param(params, name).filter(|v| !v.is_empty())
        {
            query.push((name.into(), value.to_owned()));
        }
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query_string(&query));
    }
    let reply = session.api(state, Method::GET, &path, None).await;
    if !reply.ok() {
        return Err(reply);
    }
    let rows = reply.body[view.items.as_deref().unwrap_or("items")].as_array().cloned().unwrap_or_default();
    let link = view.link.as_ref().and_then(|name| plugin.record.manifest.views.iter().find(|v| &v.name == name));
    let link = link.filter(|target| {
        find_route(&plugin.record.manifest.routes, &target.route).is_some_and(|r| may_call(state, session, r))
    });
    let own: Params = params.iter().filter(|(k, _)| path_names.contains(&k.as_str())).cloned().collect();
    let next = reply.body["next"].as_str().map(|cursor| {
        let mut next = own.clone();
        next.extend(query.iter().filter(|(k, _)| k != "cursor").cloned());
        next.push(("cursor".into(), cursor.to_owned()));
        view_href(id, &view.name, &next)
    });
    let query_schema = route.query.as_ref().map(|q| &q["properties"]);
    let markup = html! {
        @if whole_page {
            (view_actions(state, session, plugin, view, None, params))
        } @else {
            h2 { (view.title) }
        }
        @if whole_page && !view.filters.is_empty() {
            form.filters method="get" action=(view_href(id, &view.name, &[])) aria-label="Filters" {
                @for (name, value) in &own {
                    input type="hidden" name=(name) value=(value);
                }
                @for filter in &view.filters {
                    @let schema = query_schema.map(|q| resolve(&q[filter.as_str()], &plugin.record.manifest.schemas)).unwrap_or_default();
                    div.field {
                        label for={"filter-" (filter)} { (humanize(filter)) }
                        (input_for(&format!("filter-{filter}"), filter, &schema, param(params, filter).unwrap_or(""), false, None, FieldFormat::Text))
                    }
                }
                button type="submit" { "Filter" }
            }
        }
        @if rows.is_empty() {
            p { "Nothing here yet." }
        } @else {
            table {
                caption.visually-hidden { (view.title) }
                thead { tr { @for field in &view.fields { th scope="col" { (label(field)) } } } }
                tbody {
                    @for row in &rows {
                        tr {
                            @for (i, field) in view.fields.iter().enumerate() {
                                @let value = shown(&row[field.field.as_str()], field.format);
                                @if i == 0 {
                                    th scope="row" data-label=(label(field)) {
                                        @if let Some(target) = link {
                                            a href=(view_href(id, &target.name, &params_for(&target.route, Some(row), params))) { (value) }
                                        } @else { (value) }
                                    }
                                } @else {
                                    td data-label=(label(field)) { (value) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p { a href=(next) rel="next" { "Next page" } }
        }
    };
    Ok((view.title.clone(), markup))
}

fn missing_parameter() -> ApiReply {
    ApiReply {
        status: StatusCode::NOT_FOUND,
        body: serde_json::json!({ "code": "not-found", "detail": "This address lacks what the screen shows (a record number, say)." }),
        retry_after: None,
    }
}

/// The buttons of a view: links to other views, and route calls (for a record, while its
/// fields allow them), each only for whoever may call the route behind it.
fn view_actions(
    state: &ConsoleState,
    session: &Session,
    plugin: &LoadedPlugin,
    view: &ViewSpec,
    record: Option<&Value>,
    params: &Params,
) -> Markup {
    let manifest = &plugin.record.manifest;
    let id = &plugin.record.id;
    html! {
        div.actions {
            @for (index, action) in view.actions.iter().enumerate() {
                @let applies = action.when.iter().all(|(field, values)| {
                    record.and_then(|r| as_text(&r[field.as_str()])).is_some_and(|v| values.contains(&v))
                });
                @if applies {
                    @if let Some(target) = action.view.as_ref().and_then(|n| manifest.views.iter().find(|v| &v.name == n)) {
                        @if find_route(&manifest.routes, &target.route).is_some_and(|r| may_call(state, session, r)) {
                            a.button href=(view_href(id, &target.name, &params_for(&target.route, record, params))) { (action.label) }
                        }
                    } @else if let Some(route) = action.route.as_ref().and_then(|r| find_route(&manifest.routes, r)) {
                        @if may_call(state, session, route) {
                            @let action_params = action_params(view, route, record, params);
                            @let href = format!("/console/apps/{}/{}/actions/{index}?{}", segment(id), segment(&view.name), query_string(&action_params));
                            @if action.confirm.is_some() {
                                a.button href=(href) { (action.label) "…" }
                            } @else {
                                form.inline method="post" action=(href) {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    button type="submit" { (action.label) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What an action's address carries: the view's path parameters (to come back to it) and
/// the action route's, each once.
fn action_params(view: &ViewSpec, route: &RouteSpec, record: Option<&Value>, params: &Params) -> Params {
    let mut out = params_for(&view.route, record, params);
    for (name, value) in params_for(&format!("{} {}", route.method, route.path), record, params) {
        if param(&out, &name).is_none() {
            out.push((name, value));
        }
    }
    out
}

/// A record view: heading, fields, actions, then its list sections.
async fn record(
    state: &ConsoleState,
    session: &Session,
    plugin: &LoadedPlugin,
    view: &ViewSpec,
    route: &RouteSpec,
    params: &Params,
    failure: Option<&ApiReply>,
) -> Result<(String, Markup), ApiReply> {
    let Some(path) = api_path(&plugin.record.id, route, params) else {
        return Err(missing_parameter());
    };
    let reply = session.api(state, Method::GET, &path, None).await;
    if !reply.ok() {
        return Err(reply);
    }
    let data = reply.body;
    let title = view.heading.as_ref().and_then(|h| as_text(&data[h.as_str()])).unwrap_or_else(|| view.title.clone());
    let fields: Vec<ViewField> = if view.fields.is_empty() {
        data.as_object()
            .map(|o| {
                o.iter()
                    .filter(|(_, v)| !v.is_object() && !v.is_array())
                    .map(|(k, _)| ViewField { field: k.clone(), label: None, format: FieldFormat::Text })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        view.fields.clone()
    };
    let mut sections = Vec::new();
    for name in &view.sections {
        let Some(section) = plugin.record.manifest.views.iter().find(|v| &v.name == name) else { continue };
        let Some(section_route) = find_route(&plugin.record.manifest.routes, &section.route) else { continue };
        if !may_call(state, session, section_route) {
            continue;
        }
        let section_params = params_for(&section.route, Some(&data), params);
        match Box::pin(list(state, session, plugin, section, section_route, &section_params, false)).await {
            Ok((_, markup)) => sections.push(markup),
            Err(reply) => sections.push(html! { h2 { (section.title) } p.error { (reply.detail()) } }),
        }
    }
    let markup = html! {
        @if let Some(failure) = failure {
            p.error role="alert" { (failure.detail()) }
        }
        (view_actions(state, session, plugin, view, Some(&data), params))
        dl.record {
            @for field in &fields {
                dt { (label(field)) }
                dd { (shown(&data[field.field.as_str()], field.format)) }
            }
        }
        @for section in sections {
            section { (section) }
        }
    };
    Ok((title, markup))
}

/// A JSON Schema with `$ref`s followed and `allOf`s merged, and `anyOf [X, null]` taken as
/// an optional X: what a form field needs to know (type, enum, bounds, description).
/// Set by [`resolve`] on a schema that also admits `null`.
const NULLABLE: &str = "x-keel-nullable";

fn resolve(schema: &Value, schemas: &std::collections::BTreeMap<String, Value>) -> Map<String, Value> {
    fn go(
        schema: &Value,
        schemas: &std::collections::BTreeMap<String, Value>,
        depth: u32,
        out: &mut Map<String, Value>,
    ) {
        let Some(object) = schema.as_object() else { return };
        if depth > 16 {
            return;
        }
        if let Some(target) = object.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/schemas/"))
            && let Some(target) = schemas.get(target)
        {
            go(target, schemas, depth + 1, out);
        }
        for member in object.get("allOf").and_then(Value::as_array).into_iter().flatten() {
            go(member, schemas, depth + 1, out);
        }
        if let Some(any) = object.get("anyOf").and_then(Value::as_array) {
            let not_null: Vec<&Value> = any.iter().filter(|m| m.get("type") != Some(&Value::from("null"))).collect();
            if let [only] = not_null.as_slice() {
                go(only, schemas, depth + 1, out);
            }
            if not_null.len() < any.len() {
                out.insert(NULLABLE.into(), Value::Bool(true));
            }
        }
        for (key, value) in object {
            if !matches!(key.as_str(), "$ref" | "allOf" | "anyOf") {
                out.insert(key.clone(), value.clone());
            }
        }
        // `type = ["integer", "null"]` is an optional integer.
        if let Some(types) = out.get("type").and_then(Value::as_array).cloned() {
            if types.iter().any(|t| t == "null") {
                out.insert(NULLABLE.into(), Value::Bool(true));
            }
            let not_null: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
            if let [only] = not_null.as_slice() {
                out.insert("type".into(), only.clone());
            }
        }
    }
    let mut out = Map::new();
    go(schema, schemas, 0, &mut out);
    out
}

/// The control for one input, from its schema.
fn input_for(
    id: &str,
    name: &str,
    schema: &Map<String, Value>,
    value: &str,
    required: bool,
    described_by: Option<&str>,
    format: FieldFormat,
) -> Markup {
    let kind = schema.get("type").and_then(Value::as_str).unwrap_or("string");
    let invalid = described_by.is_some_and(|d| d.ends_with("-error")).then_some("true");
    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        return html! {
            select id=(id) name=(name) required[required] aria-describedby=[described_by] aria-invalid=[invalid] {
                @if !required { option value="" { "—" } }
                @for choice in choices.iter().filter_map(as_text) {
                    option value=(choice) selected[choice == value] { (choice) }
                }
            }
        };
    }
    match kind {
        "boolean" => html! {
            input id=(id) name=(name) type="checkbox" value="true" checked[value == "true"] aria-describedby=[described_by];
        },
        "integer" | "number" => html! {
            input id=(id) name=(name) type="number" step=(if kind == "integer" { "1" } else { "any" }) value=(value)
                required[required] min=[schema.get("minimum").map(Value::to_string)] max=[schema.get("maximum").map(Value::to_string)]
                aria-describedby=[described_by] aria-invalid=[invalid];
        },
        _ => {
            let max = schema.get("maxLength").and_then(Value::as_u64);
            if format == FieldFormat::Multiline {
                html! {
                    textarea id=(id) name=(name) rows="6" required[required] maxlength=[max] aria-describedby=[described_by] aria-invalid=[invalid] { (value) }
                }
            } else {
                let kind = if schema.get("format").and_then(Value::as_str) == Some("date") { "date" } else { "text" };
                html! {
                    input id=(id) name=(name) type=(kind) value=(value) required[required] maxlength=[max]
                        aria-describedby=[described_by] aria-invalid=[invalid];
                }
            }
        }
    }
}

/// The inputs a form asks for: the view's list, else every property of the input schema.
fn form_fields(view: &ViewSpec, input: &Map<String, Value>) -> Vec<ViewField> {
    if !view.fields.is_empty() {
        return view.fields.clone();
    }
    input
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().map(|k| ViewField { field: k.clone(), label: None, format: FieldFormat::Text }).collect())
        .unwrap_or_default()
}

/// The record an edit form starts from (its `load` route's answer), if it has one.
async fn load(
    state: &ConsoleState,
    session: &Session,
    plugin: &LoadedPlugin,
    view: &ViewSpec,
    params: &Params,
) -> Result<Option<Value>, ApiReply> {
    let Some(source) = view.load.as_ref().and_then(|l| find_route(&plugin.record.manifest.routes, l)) else {
        return Ok(None);
    };
    let path = api_path(&plugin.record.id, source, params).ok_or_else(missing_parameter)?;
    let reply = session.api(state, Method::GET, &path, None).await;
    if !reply.ok() {
        return Err(reply);
    }
    Ok(Some(reply.body))
}

/// Whether the form's input carries the record's `version` back without asking for it.
fn carries_version(view: &ViewSpec, input: &Map<String, Value>) -> bool {
    view.load.is_some()
        && input.get("properties").is_some_and(|p| p.get("version").is_some())
        && !view.fields.iter().any(|f| f.field == "version")
}

/// `record` is what an edit form starts from; once the form was sent, what was sent is shown
/// instead (with the record's latest `version`, so sending again applies over it).
#[allow(clippy::too_many_arguments)]
fn form(
    session: &Session,
    plugin: &LoadedPlugin,
    view: &ViewSpec,
    route: &RouteSpec,
    params: &Params,
    sent: &Form,
    failure: Option<&ApiReply>,
    record: Option<&Value>,
) -> (String, Markup) {
    let schemas = &plugin.record.manifest.schemas;
    let input = resolve(route.input.as_ref().unwrap_or(&Value::Null), schemas);
    let required: Vec<&str> = input
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let errors = failure.map(ApiReply::field_errors).unwrap_or_default();
    let fields = form_fields(view, &input);
    let own = params_for(&view.route, None, params);
    // Path parameters the address does not give (which priority's targets, say) are asked.
    let asked: Vec<&str> = path_params(&route.path).into_iter().filter(|n| param(params, n).is_none()).collect();
    let value_of = |name: &str| -> String {
        match record {
            Some(record) if sent.fields.is_empty() => as_text(&record[name]).unwrap_or_default(),
            _ => sent.text(name).to_owned(),
        }
    };
    let version = record.filter(|_| carries_version(view, &input)).and_then(|r| as_text(&r["version"]));
    let markup = html! {
        form.card method="post" action=(view_href(&plugin.record.id, &view.name, &own)) {
            input type="hidden" name="csrf" value=(session.csrf);
            @if let Some(version) = &version {
                input type="hidden" name="version" value=(version);
            }
            (super::pages::error_banner(&errors, &asked.iter().copied().chain(fields.iter().map(|f| f.field.as_str())).collect::<Vec<_>>()))
            @for name in &asked {
                @let schema = route.params.get(*name).map(|s| resolve(s, schemas)).unwrap_or_default();
                @let error = errors.for_field(name);
                @let described = error.map(|_| format!("{name}-error"));
                div.field {
                    label for=(name) { (humanize(name)) }
                    (input_for(name, name, &schema, sent.text(name), true, described.as_deref(), FieldFormat::Text))
                    @if let Some(error) = error {
                        p.field-error id={(name) "-error"} { (error) }
                    }
                }
            }
            @for field in &fields {
                @let schema = input.get("properties").map(|p| resolve(&p[field.field.as_str()], schemas)).unwrap_or_default();
                @let error = errors.for_field(&field.field);
                @let hint = schema.get("description").and_then(Value::as_str);
                @let described = if error.is_some() { Some(format!("{}-error", field.field)) } else { hint.map(|_| format!("{}-hint", field.field)) };
                div.field {
                    label for=(field.field) { (label(field)) @if !required.contains(&field.field.as_str()) { span.meta { " (optional)" } } }
                    (input_for(&field.field, &field.field, &schema, &value_of(&field.field), required.contains(&field.field.as_str()), described.as_deref(), field.format))
                    @if let Some(error) = error {
                        p.field-error id={(field.field) "-error"} { (error) }
                    } @else if let Some(hint) = hint {
                        p.hint id={(field.field) "-hint"} { (hint) }
                    }
                }
            }
            button type="submit" { (view.title) }
        }
    };
    (view.title.clone(), markup)
}

/// A form's fields as the route's JSON body: numbers and booleans typed by the schema,
/// empty optional fields left out. What cannot be typed is sent as typed, so the route's
/// own validation answers with the message shown beside the field.
fn body_of(view: &ViewSpec, plugin: &LoadedPlugin, route: &RouteSpec, form: &Form) -> Value {
    let schemas = &plugin.record.manifest.schemas;
    let input = resolve(route.input.as_ref().unwrap_or(&Value::Null), schemas);
    let required: Vec<&str> = input
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut body = Map::new();
    for field in form_fields(view, &input) {
        let name = field.field.as_str();
        let schema = input.get("properties").map(|p| resolve(&p[name], schemas)).unwrap_or_default();
        let kind = schema.get("type").and_then(Value::as_str).unwrap_or("string");
        let raw = form.text(name);
        if kind == "boolean" {
            body.insert(name.to_owned(), Value::Bool(raw == "true"));
            continue;
        }
        if raw.trim().is_empty() && !required.contains(&name) {
            // Emptied on an edit form: cleared, where the route takes `null` for it.
            if view.load.is_some() && schema.get(NULLABLE) == Some(&Value::Bool(true)) {
                body.insert(name.to_owned(), Value::Null);
            }
            continue;
        }
        let value = match kind {
            "integer" => raw.trim().parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(raw)),
            "number" => raw
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .unwrap_or_else(|| Value::from(raw)),
            _ => Value::from(raw),
        };
        body.insert(name.to_owned(), value);
    }
    if carries_version(view, &input)
        && let Ok(version) = form.text("version").trim().parse::<u64>()
    {
        body.insert("version".into(), Value::from(version));
    }
    Value::Object(body)
}

async fn submit(
    State(state): State<ConsoleState>,
    session: Session,
    Path((plugin, view)): Path<(String, String)>,
    Query(params): Query<Params>,
    form_data: Form,
) -> Response {
    if let Err(refused) = session.verify(&form_data) {
        return refused;
    }
    let loaded = match department_of(&state, &session, &plugin) {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    let (view, route) = match view_of(&state, &session, &loaded, &view) {
        Ok(found) => found,
        Err(page) => return page,
    };
    if view.kind != ViewKind::Form {
        return message_for(Some(&session), StatusCode::METHOD_NOT_ALLOWED, "Not a form", "This screen takes no form.");
    }
    // Path parameters from the address, else from the form (see `form`).
    let mut params = params;
    for name in path_params(&route.path) {
        if param(&params, name).is_none()
            && let Some(value) = form_data.get(name).filter(|v| !v.is_empty())
        {
            params.push((name.to_owned(), value.to_owned()));
        }
    }
    let Some(path) = api_path(&plugin, route, &params) else {
        let mut reply = missing_parameter();
        let asked: Vec<Value> = path_params(&route.path)
            .into_iter()
            .filter(|n| param(&params, n).is_none())
            .map(|n| serde_json::json!({ "in": "path", "field": n, "message": "is required" }))
            .collect();
        reply.status = StatusCode::UNPROCESSABLE_ENTITY;
        reply.body["errors"] = Value::Array(asked);
        let (title, markup) = form(&session, &loaded, view, route, &params, &form_data, Some(&reply), None);
        return respond(reply.status, layout(&title, Some(&session), None, markup));
    };
    let body = body_of(view, &loaded, route, &form_data);
    let method = Method::from_bytes(route.method.to_ascii_uppercase().as_bytes()).unwrap_or(Method::POST);
    let reply = session.api(&state, method, &path, Some(&body)).await;
    if reply.ok() {
        let target = view.then.as_ref().and_then(|n| loaded.record.manifest.views.iter().find(|v| &v.name == n));
        let href = match target {
            Some(target) => {
                let mut next = params_for(&target.route, Some(&reply.body), &params);
                next.push(("done".into(), "saved".into()));
                view_href(&plugin, &target.name, &next)
            }
            None => {
                let mut again = params_for(&view.route, None, &params);
                again.push(("done".into(), "saved".into()));
                view_href(&plugin, &view.name, &again)
            }
        };
        return Redirect::to(&href).into_response();
    }
    if matches!(reply.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
        return refused(&session, &reply);
    }
    // An edit form comes back with the record's latest version: the message says what
    // changed meanwhile, and sending again is a deliberate overwrite.
    let record = load(&state, &session, &loaded, view, &params).await.ok().flatten();
    let (title, markup) = form(&session, &loaded, view, route, &params, &form_data, Some(&reply), record.as_ref());
    respond(reply.status, layout(&title, Some(&session), None, markup))
}

/// The action `index` of a view, if the caller may run it.
fn action_of<'a>(
    state: &ConsoleState,
    session: &Session,
    plugin: &'a LoadedPlugin,
    view: &'a ViewSpec,
    index: usize,
) -> Result<(&'a crate::manifest::ViewAction, &'a RouteSpec), Response> {
    let not_found =
        || message_for(Some(&session), StatusCode::NOT_FOUND, "Not found", "This screen has no such action.");
    let action = view.actions.get(index).ok_or_else(not_found)?;
    let route =
        action.route.as_ref().and_then(|r| find_route(&plugin.record.manifest.routes, r)).ok_or_else(not_found)?;
    if !may_call(state, session, route) {
        return Err(message_for(
            Some(&session),
            StatusCode::FORBIDDEN,
            "Not allowed",
            "You do not have the permission this action needs.",
        ));
    }
    Ok((action, route))
}

/// An action's confirmation page.
async fn confirm(
    State(state): State<ConsoleState>,
    session: Session,
    Path((plugin, view, index)): Path<(String, String, usize)>,
    Query(params): Query<Params>,
) -> Response {
    let loaded = match department_of(&state, &session, &plugin) {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    let (view, _) = match view_of(&state, &session, &loaded, &view) {
        Ok(found) => found,
        Err(page) => return page,
    };
    let (action, _) = match action_of(&state, &session, &loaded, view, index) {
        Ok(found) => found,
        Err(page) => return page,
    };
    let back = view_href(&plugin, &view.name, &params_for(&view.route, None, &params));
    let here =
        format!("/console/apps/{}/{}/actions/{index}?{}", segment(&plugin), segment(&view.name), query_string(&params));
    let content = html! {
        form.card method="post" action=(here) {
            input type="hidden" name="csrf" value=(session.csrf);
            p { (action.confirm.as_deref().unwrap_or("Are you sure?")) }
            div.buttons {
                button type="submit" { (action.label) }
                a href=(back) { "Cancel" }
            }
        }
    };
    respond(StatusCode::OK, layout(&action.label, Some(&session), None, content))
}

/// Runs an action, then back to its view.
async fn act(
    State(state): State<ConsoleState>,
    session: Session,
    Path((plugin, view, index)): Path<(String, String, usize)>,
    Query(params): Query<Params>,
    form_data: Form,
) -> Response {
    if let Err(refused) = session.verify(&form_data) {
        return refused;
    }
    let loaded = match department_of(&state, &session, &plugin) {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    let (view, view_route) = match view_of(&state, &session, &loaded, &view) {
        Ok(found) => found,
        Err(page) => return page,
    };
    let (action, route) = match action_of(&state, &session, &loaded, view, index) {
        Ok(found) => found,
        Err(page) => return page,
    };
    let Some(path) = api_path(&plugin, route, &params) else {
        return refused(&session, &missing_parameter());
    };
    let method = Method::from_bytes(route.method.to_ascii_uppercase().as_bytes()).unwrap_or(Method::POST);
    let body = action.body.clone().unwrap_or_else(|| Value::Object(Map::new()));
    let reply = session.api(&state, method, &path, Some(&body)).await;
    let own = params_for(&view.route, None, &params);
    if reply.ok() {
        let mut back = own;
        back.push(("done".into(), "done".into()));
        return Redirect::to(&view_href(&plugin, &view.name, &back)).into_response();
    }
    if view.kind == ViewKind::Record
        && !matches!(reply.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND)
    {
        // The record again, with why the action was refused (a workflow rule, say).
        return match record(&state, &session, &loaded, view, view_route, &own, Some(&reply)).await {
            Ok((title, markup)) => respond(reply.status, layout(&title, Some(&session), None, markup)),
            Err(other) => refused(&session, &other),
        };
    }
    refused(&session, &reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_resolve_through_refs_all_of_and_optional_any_of() {
        let schemas: std::collections::BTreeMap<String, Value> = serde_json::from_value(serde_json::json!({
            "Text": { "type": "string", "maxLength": 20000 },
            "Title": { "allOf": [{ "$ref": "#/schemas/Text" }], "maxLength": 200 },
            "Priority": { "enum": ["P1", "P2"] },
            "Loop": { "$ref": "#/schemas/Loop" },
        }))
        .unwrap();
        let title = resolve(&serde_json::json!({ "$ref": "#/schemas/Title" }), &schemas);
        assert_eq!(title["type"], "string");
        assert_eq!(title["maxLength"], 200, "the outer bound wins");
        let priority =
            resolve(&serde_json::json!({ "anyOf": [{ "$ref": "#/schemas/Priority" }, { "type": "null" }] }), &schemas);
        assert_eq!(priority["enum"], serde_json::json!(["P1", "P2"]));
        assert_eq!(priority[NULLABLE], true, "an edit form may send null for it");
        let optional = resolve(&serde_json::json!({ "type": ["integer", "null"] }), &schemas);
        assert_eq!(optional["type"], "integer");
        assert_eq!(optional[NULLABLE], true);
        assert!(title.get(NULLABLE).is_none());
        // A reference cycle ends.
        assert!(resolve(&serde_json::json!({ "$ref": "#/schemas/Loop" }), &schemas).is_empty());
    }

    #[test]
    fn structured_values_are_drawn_as_lists_tables_and_named_parts_and_escaped() {
        let draw = |v: serde_json::Value| shown(&v, FieldFormat::Text).into_string();
        assert_eq!(draw(serde_json::json!(["mon", "tue"])), "mon, tue");
        assert_eq!(draw(serde_json::json!([])), r#"<span class="meta">none</span>"#);
        let lines = draw(serde_json::json!([{ "name": "Salary", "amount": "3000.00" }, { "name": "<b>Tax</b>" }]));
        assert!(lines.starts_with(r#"<table class="nested">"#), "{lines}");
        assert!(lines.contains("<th scope=\"col\">Amount</th><th scope=\"col\">Name</th>"), "{lines}");
        assert!(lines.contains("&lt;b&gt;Tax&lt;/b&gt;") && !lines.contains("<b>"), "{lines}");
        let employment = draw(serde_json::json!({ "type": "full-time", "days": ["mon"] }));
        assert_eq!(employment, r#"<dl class="nested"><dt>Days</dt><dd>mon</dd><dt>Type</dt><dd>full-time</dd></dl>"#);
        // Past two levels the JSON is shown as text.
        let deep = draw(serde_json::json!({ "a": { "b": { "c": 1 } } }));
        assert!(deep.contains(r#"<code>{&quot;c&quot;:1}</code>"#), "{deep}");
    }

    #[test]
    fn path_parameters_are_encoded_and_required() {
        let route = RouteSpec::new("GET", "/tickets/{number}/comments", "r");
        let params = vec![("number".to_owned(), "1/../../admin".to_owned())];
        assert_eq!(
            api_path("helpdesk", &route, &params).unwrap(),
            "/v1/plugins/helpdesk/tickets/1%2F%2E%2E%2F%2E%2E%2Fadmin/comments"
        );
        assert_eq!(api_path("helpdesk", &route, &vec![]), None);
    }
}

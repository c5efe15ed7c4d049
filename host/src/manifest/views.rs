//! `[[views]]`: the screens a plugin declares for the web console, drawn over its own routes.
//!
//! A view names one declared route and says how to show it: a **list** (rows of a GET
//! route's answer, with columns, filters from the route's query parameters, and a link to a
//! record view), a **record** (one GET answer's fields, with actions and list sections), or
//! a **form** (the fields of a POST/PUT/PATCH route's input schema). A view is shown to
//! whoever holds its route's permission; an action to whoever holds its own route's. The
//! console calls the routes exactly as an API client would, so a view can do nothing its
//! route does not allow.

use super::RouteSpec;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use utoipa::ToSchema;

pub const MAX_VIEWS: usize = 64;
const MAX_FIELDS: usize = 32;
const MAX_ACTIONS: usize = 8;
const MAX_LABEL: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ViewKind {
    List,
    Record,
    Form,
}

/// How a value is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FieldFormat {
    /// As it is (numbers, text; lists and objects as compact JSON).
    #[default]
    Text,
    /// Milliseconds since 1970 as a UTC date and time.
    Datetime,
    /// Long text, line breaks kept; in a form, a text area.
    Multiline,
}

/// One column of a list, field of a record, or input of a form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewField {
    /// A top-level member of the row, record or input.
    pub field: String,
    /// Shown instead of the field's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "is_default_format")]
    pub format: FieldFormat,
}

fn is_default_format(format: &FieldFormat) -> bool {
    *format == FieldFormat::Text
}

/// A button on a record or list: open another view, or call a route (after a confirmation
/// page when `confirm` is given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewAction {
    pub label: String,
    /// Another view of this plugin to open (a form, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
    /// `METHOD /path` of a declared route to call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The JSON body sent to `route`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub body: Option<serde_json::Value>,
    /// The question asked before `route` is called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<String>,
    /// Shown only while the record's fields hold one of the listed values, e.g.
    /// `when = { status = ["new", "open"] }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub when: BTreeMap<String, Vec<String>>,
}

/// A screen of the plugin in the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewSpec {
    /// Unique in the plugin: 1-32 of a-z, 0-9 and '-'. It is the page's address.
    pub name: String,
    pub kind: ViewKind,
    pub title: String,
    /// `METHOD /path` of a declared route: GET for a list or record, POST, PUT or PATCH
    /// with an `input` schema for a form.
    pub route: String,
    /// List: the columns. Record: the fields shown (none: every field). Form: the inputs
    /// asked, in order (none: every property of the input schema).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<ViewField>,
    /// List: the route's query parameters offered as filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// List: the answer's member holding the rows (`items` unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<String>,
    /// List: the record view a row opens; its route's path parameters come from the row's
    /// fields of the same names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Record: the field shown as the page's heading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
    /// Record: list views shown below the record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<String>,
    /// Form: the view opened with the answer (path parameters from the answer's fields,
    /// else the form's own); none: the form again, with a notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<String>,
    /// Form: `METHOD /path` of a GET route (its path parameters among the form's) whose
    /// answer fills the inputs, making an edit form. Its `version`, when the form's input
    /// declares one, is sent back, so the route can refuse a change made over someone
    /// else's; an optional input emptied is sent as `null` where the schema allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ViewAction>,
    /// Listed in the department's menu (lists and forms without path parameters are,
    /// unless `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub menu: Option<bool>,
}

/// `METHOD /path` split in two.
pub fn split_route(text: &str) -> Option<(&str, &str)> {
    let (method, path) = text.trim().split_once(' ')?;
    Some((method, path.trim()))
}

/// The path parameters of a route path, in order.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| name.trim_start_matches('*'))
        .collect()
}

impl ViewSpec {
    /// Whether the department's menu lists it.
    pub fn in_menu(&self) -> bool {
        let (_, path) = split_route(&self.route).unwrap_or(("", ""));
        self.menu.unwrap_or(self.kind != ViewKind::Record && path_params(path).is_empty())
    }
}

/// Finds the route a view names.
pub fn find_route<'a>(routes: &'a [RouteSpec], text: &str) -> Option<&'a RouteSpec> {
    let (method, path) = split_route(text)?;
    routes.iter().find(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
}

fn label_ok(label: &str) -> bool {
    !label.trim().is_empty() && label.chars().count() <= MAX_LABEL && !label.chars().any(char::is_control)
}

/// Checks the views against each other and the routes; the error names the place.
pub fn validate(views: &[ViewSpec], routes: &[RouteSpec]) -> Result<(), (String, String)> {
    if views.len() > MAX_VIEWS {
        return Err(("views".into(), format!("at most {MAX_VIEWS} views")));
    }
    let mut kinds = BTreeMap::new();
    for view in views {
        if !super::is_slug(&view.name, 32) {
            return Err((format!("views.{}", view.name), "view names are 1-32 of a-z, 0-9 and '-'".into()));
        }
        if kinds.insert(view.name.as_str(), view.kind).is_some() {
            return Err((format!("views.{}", view.name), "declared twice".into()));
        }
    }
    for view in views {
        let at = |what: &str| format!("views.{}.{what}", view.name);
        if !label_ok(&view.title) {
            return Err((at("title"), format!("1-{MAX_LABEL} characters, no control characters")));
        }
        let Some(route) = find_route(routes, &view.route) else {
            return Err((at("route"), format!("`{}` is not a declared route (`METHOD /path`)", view.route)));
        };
        let get = route.method.eq_ignore_ascii_case("GET");
        match view.kind {
            ViewKind::List | ViewKind::Record if !get => {
                return Err((at("route"), "a list or record view shows a GET route".into()));
            }
            ViewKind::Form if get || route.input.is_none() => {
                return Err((
                    at("route"),
                    "a form view posts to a POST, PUT or PATCH route with an `input` schema".into(),
                ));
            }
            _ => {}
        }
        if view.fields.len() > MAX_FIELDS {
            return Err((at("fields"), format!("at most {MAX_FIELDS}")));
        }
        if view.kind == ViewKind::List && view.fields.is_empty() {
            return Err((at("fields"), "a list needs at least one column".into()));
        }
        let mut seen = BTreeSet::new();
        for f in &view.fields {
            if f.field.is_empty() || f.field.len() > 64 || f.field.chars().any(char::is_control) {
                return Err((at("fields"), "field names are 1-64 characters".into()));
            }
            if !seen.insert(&f.field) {
                return Err((at("fields"), format!("`{}` is listed twice", f.field)));
            }
            if let Some(label) = &f.label
                && !label_ok(label)
            {
                return Err((at("fields"), format!("the label of `{}` is 1-{MAX_LABEL} characters", f.field)));
            }
        }
        let query: BTreeSet<&str> = route
            .query
            .as_ref()
            .and_then(|q| q["properties"].as_object())
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        for filter in &view.filters {
            if view.kind != ViewKind::List || !query.contains(filter.as_str()) {
                return Err((at("filters"), format!("`{filter}` is not a query parameter of a list's route")));
            }
        }
        let refers = |what: &str, name: &Option<String>, allowed: &[ViewKind]| -> Result<(), (String, String)> {
            match name {
                Some(name) if !kinds.get(name.as_str()).is_some_and(|k| allowed.contains(k)) => {
                    Err((at(what), format!("`{name}` is not a {} view of this plugin", kind_names(allowed))))
                }
                _ => Ok(()),
            }
        };
        let only = |what: &str, kind: ViewKind, present: bool| -> Result<(), (String, String)> {
            if present && view.kind != kind {
                return Err((at(what), format!("only a {} view has `{what}`", kind_names(&[kind]))));
            }
            Ok(())
        };
        only("link", ViewKind::List, view.link.is_some())?;
        only("items", ViewKind::List, view.items.is_some())?;
        only("heading", ViewKind::Record, view.heading.is_some())?;
        only("sections", ViewKind::Record, !view.sections.is_empty())?;
        only("then", ViewKind::Form, view.then.is_some())?;
        only("load", ViewKind::Form, view.load.is_some())?;
        if let Some(load) = &view.load {
            let Some(source) = find_route(routes, load).filter(|r| r.method.eq_ignore_ascii_case("GET")) else {
                return Err((at("load"), format!("`{load}` is not a declared GET route")));
            };
            let own = path_params(&route.path);
            if let Some(missing) = path_params(&source.path).into_iter().find(|p| !own.contains(p)) {
                return Err((at("load"), format!("`{{{missing}}}` is not a path parameter of the form's route")));
            }
        }
        refers("link", &view.link, &[ViewKind::Record])?;
        refers("then", &view.then, &[ViewKind::Record, ViewKind::List])?;
        for section in &view.sections {
            refers("sections", &Some(section.clone()), &[ViewKind::List])?;
            if section == &view.name {
                return Err((at("sections"), "a view cannot contain itself".into()));
            }
        }
        if view.actions.len() > MAX_ACTIONS {
            return Err((at("actions"), format!("at most {MAX_ACTIONS}")));
        }
        for action in &view.actions {
            if !label_ok(&action.label) {
                return Err((at("actions"), format!("action labels are 1-{MAX_LABEL} characters")));
            }
            if let Some(confirm) = &action.confirm
                && (confirm.trim().is_empty() || confirm.chars().count() > 500)
            {
                return Err((at("actions"), "`confirm` is 1-500 characters".into()));
            }
            match (&action.view, &action.route) {
                (Some(_), None) => {
                    refers("actions", &action.view, &[ViewKind::Form, ViewKind::List, ViewKind::Record])?
                }
                (None, Some(route)) => {
                    let Some(target) = find_route(routes, route) else {
                        return Err((at("actions"), format!("`{route}` is not a declared route")));
                    };
                    if target.method.eq_ignore_ascii_case("GET") {
                        return Err((
                            at("actions"),
                            format!("`{route}`: an action changes something; open a view to show"),
                        ));
                    }
                    if action.body.as_ref().is_some_and(|b| !b.is_object()) {
                        return Err((at("actions"), "an action's `body` is a JSON object".into()));
                    }
                }
                _ => {
                    return Err((at("actions"), format!("`{}` needs exactly one of `view` and `route`", action.label)));
                }
            }
        }
    }
    Ok(())
}

fn kind_names(kinds: &[ViewKind]) -> String {
    kinds
        .iter()
        .map(|k| match k {
            ViewKind::List => "list",
            ViewKind::Record => "record",
            ViewKind::Form => "form",
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<RouteSpec> {
        let mut post = RouteSpec::new("POST", "/tickets", "t.write");
        post.input = Some(serde_json::json!({ "type": "object" }));
        let mut list = RouteSpec::new("GET", "/tickets", "t.read");
        list.query = Some(serde_json::json!({ "type": "object", "properties": { "status": { "type": "string" } } }));
        let mut patch = RouteSpec::new("PATCH", "/tickets/{number}", "t.write");
        patch.input = Some(serde_json::json!({ "type": "object" }));
        vec![
            post,
            list,
            patch,
            RouteSpec::new("GET", "/tickets/{number}", "t.read"),
            RouteSpec::new("POST", "/tickets/{number}/transition", "t.write"),
        ]
    }

    fn views(extra: &str) -> Result<(), (String, String)> {
        let text = format!(
            r#"
            [[views]]
            name = "tickets"
            kind = "list"
            title = "Tickets"
            route = "GET /tickets"
            fields = [{{ field = "title" }}]
            filters = ["status"]
            link = "ticket"

            [[views]]
            name = "ticket"
            kind = "record"
            title = "Ticket"
            route = "GET /tickets/{{number}}"
            actions = [{{ label = "Resolve", route = "POST /tickets/{{number}}/transition", body = {{ to = "resolved" }}, confirm = "Sure?" }}]
            {extra}
            "#
        );
        #[derive(Deserialize)]
        struct Doc {
            views: Vec<ViewSpec>,
        }
        let doc: Doc = toml::from_str(&text).map_err(|e| ("toml".to_owned(), e.to_string()))?;
        validate(&doc.views, &routes())
    }

    #[test]
    fn views_must_name_declared_routes_of_the_right_method_and_existing_views() {
        assert_eq!(views(""), Ok(()));
        let edit = "[[views]]\nname = \"edit\"\nkind = \"form\"\ntitle = \"Edit\"\nroute = \"PATCH /tickets/{number}\"\nload = \"GET /tickets/{number}\"";
        assert_eq!(views(edit), Ok(()), "an edit form loads the record it changes");
        let bad = [
            (
                "[[views]]\nname = \"x\"\nkind = \"list\"\ntitle = \"X\"\nroute = \"GET /nowhere\"\nfields = [{ field = \"a\" }]",
                "views.x.route",
            ),
            (
                "[[views]]\nname = \"x\"\nkind = \"list\"\ntitle = \"X\"\nroute = \"POST /tickets\"\nfields = [{ field = \"a\" }]",
                "views.x.route",
            ),
            (
                "[[views]]\nname = \"x\"\nkind = \"form\"\ntitle = \"X\"\nroute = \"POST /tickets/{number}/transition\"",
                "views.x.route",
            ),
            ("[[views]]\nname = \"x\"\nkind = \"list\"\ntitle = \"X\"\nroute = \"GET /tickets\"", "views.x.fields"),
            (
                "[[views]]\nname = \"x\"\nkind = \"list\"\ntitle = \"X\"\nroute = \"GET /tickets\"\nfields = [{ field = \"a\" }]\nfilters = [\"colour\"]",
                "views.x.filters",
            ),
            (
                "[[views]]\nname = \"x\"\nkind = \"list\"\ntitle = \"X\"\nroute = \"GET /tickets\"\nfields = [{ field = \"a\" }]\nlink = \"tickets\"",
                "views.x.link",
            ),
            (
                "[[views]]\nname = \"x\"\nkind = \"form\"\ntitle = \"X\"\nroute = \"POST /tickets\"\nthen = \"missing\"",
                "views.x.then",
            ),
            ("[[views]]\nname = \"ticket\"\nkind = \"form\"\ntitle = \"X\"\nroute = \"POST /tickets\"", "views.ticket"),
            (
                "[[views]]\nname = \"x\"\nkind = \"record\"\ntitle = \"X\"\nroute = \"GET /tickets/{number}\"\nactions = [{ label = \"Go\", route = \"GET /tickets\" }]",
                "views.x.actions",
            ),
            (
                "[[views]]\nname = \"x\"\nkind = \"record\"\ntitle = \"X\"\nroute = \"GET /tickets/{number}\"\nactions = [{ label = \"Go\" }]",
                "views.x.actions",
            ),
            (
                "[[views]]\nname = \"x\"\nkind = \"record\"\ntitle = \"\"\nroute = \"GET /tickets/{number}\"",
                "views.x.title",
            ),
            (
                "[[views]]\nname = \"x\"\nkind = \"form\"\ntitle = \"X\"\nroute = \"POST /tickets\"\nload = \"GET /tickets/{number}\"",
                "views.x.load",
            ),
            (
                "[[views]]\nname = \"x\"\nkind = \"form\"\ntitle = \"X\"\nroute = \"PATCH /tickets/{number}\"\nload = \"POST /tickets/{number}/transition\"",
                "views.x.load",
            ),
            (
                "[[views]]\nname = \"x\"\nkind = \"record\"\ntitle = \"X\"\nroute = \"GET /tickets/{number}\"\nload = \"GET /tickets/{number}\"",
                "views.x.load",
            ),
            (
                "[[views]]\nname = \"X!\"\nkind = \"record\"\ntitle = \"X\"\nroute = \"GET /tickets/{number}\"",
                "views.X!",
            ),
        ];
        for (extra, place) in bad {
            let error = views(extra).expect_err(extra);
            assert_eq!(error.0, place, "{extra}: {}", error.1);
        }
    }

    #[test]
    fn lists_and_forms_without_path_parameters_are_in_the_menu() {
        let view = |kind, route: &str| ViewSpec {
            name: "v".into(),
            kind,
            title: "V".into(),
            route: route.into(),
            fields: vec![],
            filters: vec![],
            items: None,
            link: None,
            heading: None,
            sections: vec![],
            then: None,
            load: None,
            actions: vec![],
            menu: None,
        };
        assert!(view(ViewKind::List, "GET /tickets").in_menu());
        assert!(view(ViewKind::Form, "POST /tickets").in_menu());
        assert!(!view(ViewKind::List, "GET /tickets/{number}/comments").in_menu());
        assert!(!view(ViewKind::Record, "GET /desk").in_menu());
        assert_eq!(path_params("/tickets/{number}/comments/{seq}"), ["number", "seq"]);
    }
}

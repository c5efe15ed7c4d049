//! The helpdesk department: tickets with priorities, categories, assignees, comments and an
//! enforced status workflow. Written against the public SDK only.

mod ticket;

use keel_sdk::services::now_ms;
use keel_sdk::{Collection, Error, Plugin, Request, Response, Router, Versioned, export_plugin};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use ticket::{Comment, FieldError, Status, Ticket};

const TICKETS: Collection<Ticket> = Collection::new("tickets");
const COMMENTS: Collection<Comment> = Collection::new("comments");
const COUNTERS: Collection<Counter> = Collection::new("counters");

const DEFAULT_PAGE: u32 = 25;
const MAX_PAGE: u32 = 100;

struct Helpdesk;

impl Plugin for Helpdesk {
    fn router() -> Router {
        Router::new()
            .post("/tickets", create_ticket)
            .get("/tickets", list_tickets)
            .get("/tickets/{number}", get_ticket)
            .patch("/tickets/{number}", update_ticket)
            .post("/tickets/{number}/transition", transition_ticket)
            .post("/tickets/{number}/comments", add_comment)
            .get("/tickets/{number}/comments", list_comments)
    }
}

export_plugin!(Helpdesk);

/// Per-tenant sequence for ticket numbers (storage is tenant-scoped by the host).
#[derive(Serialize, Deserialize)]
struct Counter {
    next: u64,
}

/// A ticket as the API shows it: the stored fields plus the version to send back on writes.
#[derive(Serialize)]
struct TicketView<'a> {
    #[serde(flatten)]
    ticket: &'a Ticket,
    version: u64,
}

fn view(ticket: &Ticket, version: u64) -> TicketView<'_> {
    TicketView { ticket, version }
}

/// Agents work on every ticket; everyone else only on tickets they requested. The host has
/// already checked the route's permission; this is the finer, per-ticket check.
fn is_agent(_req: &Request) -> bool {
    keel_sdk::services::has_permission(AGENT)
}

const AGENT: &str = "helpdesk.agent";
const ASSIGN: &str = "helpdesk.ticket.assign";

fn require_assign(_req: &Request) -> Result<(), Error> {
    if keel_sdk::services::has_permission(ASSIGN) {
        Ok(())
    } else {
        Err(Error::forbidden("forbidden", format!("assigning tickets needs `{ASSIGN}`")))
    }
}

fn invalid(e: FieldError) -> Error {
    Error::invalid("invalid-field", e.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTicket {
    title: String,
    #[serde(default)]
    description: String,
    requester: Option<String>,
    priority: Option<String>,
    category: Option<String>,
    assignee: Option<String>,
}

fn create_ticket(req: &Request) -> Result<Response, Error> {
    let input: NewTicket = req.json()?;
    let now = now_ms();
    let requester = match input.requester {
        Some(r) => ticket::required_text("requester", &r, ticket::NAME_MAX).map_err(invalid)?,
        None => req.caller.user_id.clone(),
    };
    if requester != req.caller.user_id && !is_agent(req) {
        return Err(Error::forbidden("forbidden", format!("filing tickets for someone else needs `{AGENT}`")));
    }
    let assignee = match input.assignee {
        Some(a) => {
            require_assign(req)?;
            Some(ticket::required_text("assignee", &a, ticket::NAME_MAX).map_err(invalid)?)
        }
        None => None,
    };
    let mut ticket = Ticket {
        number: 0,
        title: ticket::required_text("title", &input.title, ticket::TITLE_MAX).map_err(invalid)?,
        description: ticket::optional_text("description", &input.description, ticket::DESCRIPTION_MAX)
            .map_err(invalid)?,
        requester,
        priority: ticket::priority(input.priority.as_deref().unwrap_or("P3")).map_err(invalid)?,
        category: ticket::required_text("category", input.category.as_deref().unwrap_or("general"), ticket::NAME_MAX)
            .map_err(invalid)?,
        status: Status::New,
        assignee,
        comment_count: 0,
        created_at: now,
        updated_at: now,
    };
    ticket.number = next_ticket_number()?;
    let version = TICKETS.insert(&ticket::ticket_key(ticket.number), &ticket)?;
    Response::json(201, &view(&ticket, version))
        .map(|r| r.with_header("location", &format!("/tickets/{}", ticket.number)))
}

/// Takes the next number. Two concurrent creates race on the counter's version; the loser's
/// whole call is refused with a 409 and can be retried.
fn next_ticket_number() -> Result<u64, Error> {
    match COUNTERS.get("ticket")? {
        None => {
            COUNTERS.insert("ticket", &Counter { next: 2 })?;
            Ok(1)
        }
        Some(counter) => {
            let number = counter.value.next;
            COUNTERS.update("ticket", &Counter { next: number + 1 }, counter.version)?;
            Ok(number)
        }
    }
}

fn load_ticket(req: &Request) -> Result<Versioned<Ticket>, Error> {
    let segment = req.param("number")?;
    let number = ticket::parse_number(segment)
        .ok_or_else(|| Error::bad_request("invalid-ticket-number", format!("`{segment}` is not a ticket number")))?;
    TICKETS
        .get(&ticket::ticket_key(number))?
        // Someone else's ticket does not exist for a non-agent: no existence leak.
        .filter(|t| is_agent(req) || t.value.requester == req.caller.user_id)
        .ok_or_else(|| Error::not_found("ticket-not-found", format!("there is no ticket {number}")))
}

fn get_ticket(req: &Request) -> Result<Response, Error> {
    let stored = load_ticket(req)?;
    Response::json(200, &view(&stored.value, stored.version))
}

fn page_limit(req: &Request) -> Result<u32, Error> {
    match req.query("limit") {
        None => Ok(DEFAULT_PAGE),
        Some(raw) => {
            raw.parse::<u32>().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
                Error::invalid("invalid-limit", format!("`limit` must be 1 to {MAX_PAGE} (got `{raw}`)"))
            })
        }
    }
}

fn list_tickets(req: &Request) -> Result<Response, Error> {
    let mut query = TICKETS.query().descending().limit(page_limit(req)?).cursor(req.query("cursor"));
    if let Some(status) = req.query("status") {
        query = query.filter("status", ticket::status(status).map_err(invalid)?);
    }
    if let Some(priority) = req.query("priority") {
        query = query.filter("priority", ticket::priority(priority).map_err(invalid)?);
    }
    for field in ["assignee", "requester", "category"] {
        if let Some(value) = req.query(field) {
            query = query.filter(field, value);
        }
    }
    if !is_agent(req) {
        query = query.filter("requester", &req.caller.user_id);
    }
    let page = query.fetch()?;
    let items: Vec<_> = page.items.iter().map(|t| view(&t.value, t.version)).collect();
    Response::json(200, &serde_json::json!({ "items": items, "next_cursor": page.next }))
}

/// The version the client last saw, from the body's `version` or an `If-Match` header.
fn expected_version(req: &Request, body_version: Option<u64>) -> Result<Option<u64>, Error> {
    if let Some(v) = body_version {
        return Ok(Some(v));
    }
    match req.header("if-match") {
        None => Ok(None),
        Some(raw) => raw.trim().trim_matches('"').parse().map(Some).map_err(|_| {
            Error::bad_request("invalid-if-match", format!("If-Match must be a version number (got `{raw}`)"))
        }),
    }
}

fn check_version(stored: &Versioned<Ticket>, expected: Option<u64>) -> Result<(), Error> {
    match expected {
        Some(v) if v != stored.version => Err(Error::conflict(
            "version-conflict",
            format!("ticket {} is at version {}, not {v}; reload and retry", stored.value.number, stored.version),
        )),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketPatch {
    title: Option<String>,
    description: Option<String>,
    priority: Option<String>,
    category: Option<String>,
    /// Missing: unchanged; `null`: unassign; a string: assign.
    #[serde(default, deserialize_with = "present")]
    assignee: Option<Value>,
    /// Present only to give a clear error: status changes go through `/transition`.
    status: Option<Value>,
    version: Option<u64>,
}

/// Keeps an explicit `null` as `Some(Value::Null)`, unlike `Option`'s default.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn update_ticket(req: &Request) -> Result<Response, Error> {
    let patch: TicketPatch = req.json()?;
    if patch.status.is_some() {
        return Err(Error::invalid("use-transition", "status changes go through POST /tickets/{number}/transition"));
    }
    let mut stored = load_ticket(req)?;
    check_version(&stored, expected_version(req, patch.version)?)?;
    let ticket = &mut stored.value;
    let mut changed = false;
    if let Some(title) = patch.title {
        ticket.title = ticket::required_text("title", &title, ticket::TITLE_MAX).map_err(invalid)?;
        changed = true;
    }
    if let Some(description) = patch.description {
        ticket.description =
            ticket::optional_text("description", &description, ticket::DESCRIPTION_MAX).map_err(invalid)?;
        changed = true;
    }
    if let Some(priority) = patch.priority {
        ticket.priority = ticket::priority(&priority).map_err(invalid)?;
        changed = true;
    }
    if let Some(category) = patch.category {
        ticket.category = ticket::required_text("category", &category, ticket::NAME_MAX).map_err(invalid)?;
        changed = true;
    }
    if patch.assignee.is_some() {
        require_assign(req)?;
    }
    match patch.assignee {
        None => {}
        Some(Value::Null) => {
            ticket.assignee = None;
            changed = true;
        }
        Some(Value::String(a)) => {
            ticket.assignee = Some(ticket::required_text("assignee", &a, ticket::NAME_MAX).map_err(invalid)?);
            changed = true;
        }
        Some(_) => return Err(Error::invalid("invalid-field", "`assignee` must be a string or null")),
    }
    if !changed {
        return Err(Error::invalid(
            "empty-update",
            "give at least one of title, description, priority, category, assignee",
        ));
    }
    if ticket.status == Status::Closed {
        return Err(Error::conflict("ticket-closed", format!("ticket {} is closed", ticket.number)));
    }
    ticket.updated_at = now_ms();
    let version = TICKETS.update(&stored.key, ticket, stored.version)?;
    Response::json(200, &view(ticket, version))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionInput {
    to: String,
    version: Option<u64>,
}

fn transition_ticket(req: &Request) -> Result<Response, Error> {
    let input: TransitionInput = req.json()?;
    let to = ticket::status(&input.to).map_err(invalid)?;
    let mut stored = load_ticket(req)?;
    check_version(&stored, expected_version(req, input.version)?)?;
    let ticket = &mut stored.value;
    ticket.status = ticket.status.transition(to).map_err(|e| Error::conflict("invalid-transition", e.to_string()))?;
    ticket.updated_at = now_ms();
    let version = TICKETS.update(&stored.key, ticket, stored.version)?;
    Response::json(200, &view(ticket, version))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewComment {
    body: String,
}

fn add_comment(req: &Request) -> Result<Response, Error> {
    let input: NewComment = req.json()?;
    let body = ticket::required_text("body", &input.body, ticket::COMMENT_MAX).map_err(invalid)?;
    let mut stored = load_ticket(req)?;
    let ticket = &mut stored.value;
    if ticket.status == Status::Closed {
        return Err(Error::conflict("ticket-closed", format!("ticket {} is closed", ticket.number)));
    }
    let now = now_ms();
    ticket.comment_count += 1;
    ticket.updated_at = now;
    let comment = Comment {
        ticket: ticket.number,
        seq: ticket.comment_count,
        author: req.caller.user_id.clone(),
        body,
        created_at: now,
    };
    TICKETS.update(&stored.key, ticket, stored.version)?;
    COMMENTS.insert(&format!("{}/{:06}", stored.key, comment.seq), &comment)?;
    Response::json(201, &comment)
}

fn list_comments(req: &Request) -> Result<Response, Error> {
    let stored = load_ticket(req)?;
    let page = COMMENTS
        .query()
        .filter("ticket", stored.value.number)
        .limit(page_limit(req)?)
        .cursor(req.query("cursor"))
        .fetch()?;
    let items: Vec<_> = page.items.into_iter().map(|c| c.value).collect();
    Response::json(200, &serde_json::json!({ "items": items, "next_cursor": page.next }))
}

//! The helpdesk department: tickets with priorities, categories, assignees, comments, an
//! enforced status workflow and SLAs in the desk's business hours. Written against the public
//! SDK only.

mod sla;
mod ticket;

use keel_sdk::business_hours::{Calendar, CalendarSpec};
use keel_sdk::services::now_ms;
use keel_sdk::{
    Collection, Direction, Error, Event, Job, Migration, MigrationStep, Plugin, Request, Response, Router, Sequence,
    Versioned, export_plugin,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sla::{Kind, Origin, Policy, Rules, Sla, Timer};
use ticket::{Comment, FieldError, Priority, Status, Ticket};

const TICKETS: Collection<Ticket> = Collection::new("tickets");
/// Tickets per migration chunk (each chunk runs under the call timeout).
const MIGRATION_CHUNK: u32 = 500;
const COMMENTS: Collection<Comment> = Collection::new("comments");
/// Before 0.4: the ticket counter document, read only to carry its numbering over.
const COUNTERS: Collection<Counter> = Collection::new("counters");
const TICKET_NUMBERS: Sequence = Sequence::new("ticket");
const SLA_POLICIES: Collection<Policy> = Collection::new("sla_policies");
const SLA_TIMERS: Collection<Timer> = Collection::new("sla_timers");
/// The desk's business hours, under [`DESK_CALENDAR`].
const CALENDARS: Collection<DeskHours> = Collection::new("calendars");
const DESK_CALENDAR: &str = "desk";

/// Published when a ticket misses an SLA target; payload: number, target, due_at, breached_at,
/// priority, title.
const SLA_BREACHED: &str = "helpdesk.ticket.sla_breached";
/// Published when a ticket has used the warning share (80 % by default) of an SLA target's
/// business time; payload: number, target, warn_at, due_at, warned_at, priority, title.
const SLA_WARNING: &str = "helpdesk.ticket.sla_warning";
/// Published when a ticket is resolved; payload: number, title, link, requester,
/// resolved_at. Departments that filed a ticket (`link`) follow it by this.
const TICKET_RESOLVED: &str = "helpdesk.ticket.resolved";
/// Published when a ticket is filed; payload: number, title, priority, category, requester.
const TICKET_CREATED: &str = "helpdesk.ticket.created";
/// HR's events the helpdesk turns into onboarding and offboarding tickets.
const HR_HIRED: &str = "hr.employee.hired";
const HR_TERMINATED: &str = "hr.employee.terminated";
/// Events already turned into tickets (their ids).
const PROCESSED_EVENTS: &str = "processed_events";
/// Timers the scheduled check handles per run; the rest wait for the next minute. Each may
/// write the ticket and move its four timers: 80 stay well inside a call's 1,000 writes.
const SLA_BATCH: u32 = 80;
/// Tickets a chunk of the re-planning task (after a calendar change) visits (up to nine
/// writes each).
const REPLAN_BATCH: u32 = 50;

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
            .get("/sla-policies", list_policies)
            .put("/sla-policies/{priority}", set_policy)
            .get("/business-hours", get_business_hours)
            .put("/business-hours", set_business_hours)
            .delete("/business-hours", clear_business_hours)
    }

    fn run_job(job: &Job) -> Result<(), Error> {
        match job.name.as_str() {
            "sla-check" => check_sla(),
            "replan-sla" => replan_sla(job),
            other => Err(Error::invalid("unknown-job", format!("the helpdesk has no job `{other}`"))),
        }
    }

    /// 0.9.0 gives every ticket filed before it its reference (`HD-000042`), and takes it
    /// away again when a tenant goes back (older versions keep unknown fields, but a
    /// reference they would not keep up to date is worse than none).
    fn migrate(m: &Migration) -> Result<MigrationStep, Error> {
        let page = TICKETS.query().limit(MIGRATION_CHUNK).cursor(m.cursor.as_deref()).fetch()?;
        let mut migrated = 0;
        for stored in &page.items {
            let mut ticket = stored.value.clone();
            let reference = match m.direction {
                Direction::Up => Some(ticket::reference_of(ticket.number)),
                Direction::Down => None,
            };
            if ticket.reference != reference {
                ticket.reference = reference;
                TICKETS.update(&stored.key, &ticket, stored.version)?;
                migrated += 1;
            }
        }
        Ok(MigrationStep { migrated, next: page.next })
    }

    fn on_event(event: &Event) -> Result<(), Error> {
        match event.topic.as_str() {
            HR_HIRED | HR_TERMINATED => people_ticket(event),
            other => Err(Error::invalid("unknown-event", format!("the helpdesk does not handle `{other}`"))),
        }
    }
}

export_plugin!(Helpdesk);

/// The pre-0.4 ticket counter: the next number it would have given.
#[derive(Serialize, Deserialize)]
struct Counter {
    next: u64,
}

/// A ticket as the API shows it: the stored fields, the version to send back on writes, and
/// where it stands against its SLA.
#[derive(Serialize)]
struct TicketView<'a> {
    #[serde(flatten)]
    ticket: &'a Ticket,
    version: u64,
    sla_state: Option<sla::State>,
}

fn view(ticket: &Ticket, version: u64) -> TicketView<'_> {
    TicketView { ticket, version, sla_state: ticket.sla.as_ref().map(Sla::state) }
}

/// The tenant's policy for `priority`, or the default.
fn policy_for(priority: Priority) -> Result<Policy, Error> {
    Ok(SLA_POLICIES.get(&priority.to_string())?.map_or_else(|| Policy::default_for(priority), |p| p.value))
}

/// The desk's business hours: `None` is around the clock in UTC. The hours they replaced at
/// `changed_at` are kept, so clocks running across the change measure the time before it
/// on those.
#[derive(Serialize, Deserialize)]
struct DeskHours {
    calendar: Option<Calendar>,
    previous: Option<Calendar>,
    changed_at: u64,
}

fn desk_hours() -> Result<DeskHours, Error> {
    Ok(CALENDARS
        .get(DESK_CALENDAR)?
        .map_or(DeskHours { calendar: None, previous: None, changed_at: 0 }, |stored| stored.value))
}

/// The desk's SLA rules: its business hours (around the clock in UTC until an admin sets
/// them) and the share of a target at which to warn (the `sla-warning-percent` setting).
fn rules() -> Result<Rules, Error> {
    let hours = desk_hours()?;
    let warn_percent = keel_sdk::services::config("sla-warning-percent")
        .and_then(|v| v.parse().ok())
        .filter(|p| (1..=99).contains(p))
        .unwrap_or(80);
    Ok(Rules {
        calendar: hours.calendar.unwrap_or_else(Calendar::always),
        previous: hours.previous.unwrap_or_else(Calendar::always),
        changed_at: hours.changed_at,
        warn_percent,
    })
}

/// Where a ticket's clock starts if it has none yet (see [`Origin`]).
fn origin(ticket: &Ticket) -> Origin {
    let paused_at = match ticket.status {
        Status::Pending => Some(ticket.updated_at),
        Status::Resolved | Status::Closed => {
            Some(ticket.sla.as_ref().and_then(|s| s.resolved_at).unwrap_or(ticket.updated_at))
        }
        Status::New | Status::Open => None,
    };
    Origin { created_at: ticket.created_at, paused_at }
}

/// Brings the stored timers from what `before` watched to what `after` watches.
fn sync_timers(number: u64, before: Option<&Sla>, after: Option<&Sla>) -> Result<(), Error> {
    let old = before.map(|s| s.timers(number)).unwrap_or_default();
    let new = after.map(|s| s.timers(number)).unwrap_or_default();
    sync_timer_docs(&old, &new)
}

fn sync_timer_docs(old: &[Timer], new: &[Timer]) -> Result<(), Error> {
    for t in old.iter().filter(|t| !new.contains(t)) {
        SLA_TIMERS.delete(&t.key(), None)?;
    }
    for t in new.iter().filter(|t| !old.contains(t)) {
        SLA_TIMERS.upsert(&t.key(), t)?;
    }
    Ok(())
}

/// Whether the caller's action counts as the helpdesk responding (not the requester).
fn responds(req: &Request, ticket: &Ticket) -> bool {
    req.caller.user_id != ticket.requester
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
    let (ticket, version) = open_ticket(
        Filing {
            title: &input.title,
            description: &input.description,
            requester,
            priority: input.priority.as_deref(),
            category: input.category.as_deref(),
            assignee,
            link: None,
        },
        now,
    )?;
    Response::json(201, &view(&ticket, version))
        .map(|r| r.with_header("location", &format!("/tickets/{}", ticket.number)))
}

/// Files a ticket: checks its fields, applies the tenant's defaults, numbers it, starts its
/// SLA clock and publishes `helpdesk.ticket.created`.
/// A ticket as it is filed, before the desk's checks and defaults.
struct Filing<'a> {
    title: &'a str,
    description: &'a str,
    requester: String,
    priority: Option<&'a str>,
    category: Option<&'a str>,
    assignee: Option<String>,
    /// What another department filed it for.
    link: Option<String>,
}

fn open_ticket(filing: Filing, now: u64) -> Result<(Ticket, u64), Error> {
    let Filing { title, description, requester, priority, category, assignee, link } = filing;
    // The tenant's choices (manifest `[[settings]]`), with the manifest's defaults.
    let default_priority = keel_sdk::services::config("default-priority").unwrap_or_else(|| "P3".into());
    let default_category = keel_sdk::services::config("default-category").unwrap_or_else(|| "general".into());
    let mut ticket = Ticket {
        number: 0,
        title: ticket::required_text("title", title, ticket::TITLE_MAX).map_err(invalid)?,
        description: ticket::optional_text("description", description, ticket::DESCRIPTION_MAX).map_err(invalid)?,
        requester,
        priority: ticket::priority(priority.unwrap_or(&default_priority)).map_err(invalid)?,
        category: ticket::required_text("category", category.unwrap_or(&default_category), ticket::NAME_MAX)
            .map_err(invalid)?,
        status: Status::New,
        assignee,
        comment_count: 0,
        created_at: now,
        updated_at: now,
        sla: None,
        link,
        reference: None,
    };
    ticket.sla = Some(Sla::new(policy_for(ticket.priority)?, now, &rules()?));
    ticket.number = next_ticket_number()?;
    ticket.reference = Some(ticket::reference_of(ticket.number));
    let version = TICKETS.insert(&ticket::ticket_key(ticket.number), &ticket)?;
    sync_timers(ticket.number, None, ticket.sla.as_ref())?;
    keel_sdk::publish(
        TICKET_CREATED,
        &serde_json::json!({ "number": ticket.number, "title": ticket.title, "priority": ticket.priority,
                             "category": ticket.category, "requester": ticket.requester }),
    )?;
    Ok((ticket, version))
}

/// HR's hires and departures, each turned into one IT ticket however often it is delivered:
/// a laptop and accounts before the first day, access revoked and equipment back after the
/// last.
fn people_ticket(event: &Event) -> Result<(), Error> {
    if !keel_sdk::first_time(PROCESSED_EVENTS, &event.id)? {
        return Ok(());
    }
    let payload: Value = event.payload()?;
    let person = &payload["employee"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    // A title has room for 200 characters: a long name is cut there, and kept whole below.
    let full_name = text(&person["name"]);
    let name: String = match full_name.chars().count() > 100 {
        true => full_name.chars().take(99).chain(['…']).collect(),
        false => full_name.clone(),
    };
    let who = format!(
        "{full_name} (employee {}, {}, {})",
        person["number"],
        text(&person["title"]),
        person["department"].as_str().unwrap_or("no department")
    );
    let (title, description, category) = match event.topic.as_str() {
        HR_HIRED => (
            format!("Laptop and accounts for {name}, starts {}", text(&person["hire_date"])),
            format!(
                "New hire: {who}. Work email {}. Prepare a laptop and accounts before the first day.",
                text(&person["email"])
            ),
            "onboarding",
        ),
        _ => (
            format!("Revoke access of {name}, last day {}", text(&payload["last_day"])),
            format!("Leaving: {who}. Revoke every account after the last day and collect the equipment."),
            "offboarding",
        ),
    };
    let filing = Filing {
        title: &title,
        description: &description,
        requester: "hr".into(),
        priority: None,
        category: Some(category),
        assignee: None,
        link: None,
    };
    open_ticket(filing, now_ms())?;
    Ok(())
}

/// Takes the next number. Two concurrent creates race on the counter's version; the loser's
/// whole call is refused with a 409 and can be retried.
/// Ticket numbers come from a sequence, so concurrent filings never conflict over them.
/// Helpdesks before 0.4 kept a counter document (the next number to give); numbering goes on
/// from it.
fn next_ticket_number() -> Result<u64, Error> {
    let number = TICKET_NUMBERS.next()?;
    match COUNTERS.get("ticket")? {
        Some(legacy) if legacy.value.next > number => TICKET_NUMBERS.next_after(legacy.value.next - 1),
        _ => Ok(number),
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
    Ok(Response::json(200, &view(&stored.value, stored.version))?.with_version(stored.version))
}

fn list_tickets(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(DEFAULT_PAGE, MAX_PAGE)?;
    let query = match req.query("sort").unwrap_or("newest") {
        "newest" => TICKETS.query().descending(),
        "oldest" => TICKETS.query(),
        // Priorities sort as text, P1 first; equal ones in filing order.
        "priority" => TICKETS.query().order_by("priority"),
        other => {
            return Err(Error::invalid("invalid-field", format!("sort is newest, oldest or priority, not `{other}`")));
        }
    };
    let mut query = query.limit(paging.limit).cursor(paging.cursor.as_deref());
    if let Some(status) = req.query("status") {
        query = query.filter("status", ticket::status(status).map_err(invalid)?);
    }
    if let Some(priority) = req.query("priority") {
        query = query.filter("priority", ticket::priority(priority).map_err(invalid)?);
    }
    for field in ["assignee", "requester", "category", "reference"] {
        if let Some(value) = req.query(field) {
            query = query.filter(field, value);
        }
    }
    if !is_agent(req) {
        query = query.filter("requester", &req.caller.user_id);
    }
    let page = query.fetch()?;
    let items: Vec<_> = page.items.iter().map(|t| view(&t.value, t.version)).collect();
    Response::page(&items, page.next.as_deref())
}

/// The version the client last saw, from the body's `version` or an `If-Match` header (the
/// `ETag` of a ticket it read).
fn expected_version(req: &Request, body_version: Option<u64>) -> Result<Option<u64>, Error> {
    match body_version {
        Some(v) => Ok(Some(v)),
        None => req.if_match(),
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
    let sla_before = stored.value.sla.clone();
    let origin = origin(&stored.value);
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
        let priority = ticket::priority(&priority).map_err(invalid)?;
        if priority != ticket.priority {
            ticket.priority = priority;
            let policy = policy_for(priority)?;
            if let Some(sla) = ticket.sla.as_mut() {
                sla.repolicy(policy, &rules()?, origin);
            }
        }
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
    sync_timers(ticket.number, sla_before.as_ref(), ticket.sla.as_ref())?;
    Ok(Response::json(200, &view(ticket, version))?.with_version(version))
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
    let sla_before = stored.value.sla.clone();
    let responding = responds(req, &stored.value);
    let origin = origin(&stored.value);
    let ticket = &mut stored.value;
    let from = ticket.status;
    ticket.status = ticket.status.transition(to).map_err(|e| Error::conflict("invalid-transition", e.to_string()))?;
    let now = now_ms();
    ticket.updated_at = now;
    if let Some(sla) = ticket.sla.as_mut() {
        let rules = rules()?;
        if responding {
            sla.responded(now);
        }
        // Waiting on the requester pauses the clocks; its end (or a reopening) resumes them.
        match (from, to) {
            (_, Status::Resolved) => sla.resolved(&rules, now, origin),
            (Status::Resolved, Status::Open) => sla.reopened(&rules, now, origin),
            (_, Status::Pending) => sla.pause(&rules, now, origin),
            (Status::Pending, _) => sla.resume(&rules, now, origin),
            _ => {}
        }
    }
    let version = TICKETS.update(&stored.key, ticket, stored.version)?;
    sync_timers(ticket.number, sla_before.as_ref(), ticket.sla.as_ref())?;
    if to == Status::Resolved {
        keel_sdk::publish(
            TICKET_RESOLVED,
            &serde_json::json!({ "number": ticket.number, "title": ticket.title, "link": ticket.link,
                                 "requester": ticket.requester, "resolved_at": now }),
        )?;
    }
    Ok(Response::json(200, &view(ticket, version))?.with_version(version))
}

/// `keel:helpdesk/tickets`: other departments file IT tickets and follow them.
impl keel_helpdesk::provide::tickets::Guest for Helpdesk {
    fn open_ticket(
        t: keel_helpdesk::provide::tickets::NewTicket,
    ) -> Result<keel_helpdesk::provide::tickets::Ticket, keel_helpdesk::provide::tickets::Error> {
        let link = ticket::required_text("link", &t.link, ticket::NAME_MAX * 2).map_err(invalid)?;
        let requester = ticket::required_text("requester", &t.requester, ticket::NAME_MAX).map_err(invalid)?;
        let filing = Filing {
            title: &t.title,
            description: &t.description,
            requester,
            priority: t.priority.as_deref(),
            category: t.category.as_deref(),
            assignee: None,
            link: Some(link),
        };
        let (ticket, _) = open_ticket(filing, now_ms())?;
        Ok(contract_ticket(&ticket))
    }

    fn get_ticket(
        number: u64,
    ) -> Result<keel_helpdesk::provide::tickets::Ticket, keel_helpdesk::provide::tickets::Error> {
        TICKETS
            .get(&ticket::ticket_key(number))?
            .filter(|t| t.value.link.is_some())
            .map(|t| contract_ticket(&t.value))
            .ok_or_else(|| Error::not_found("ticket-not-found", format!("there is no ticket {number}")).into())
    }
}

fn contract_ticket(t: &Ticket) -> keel_helpdesk::provide::tickets::Ticket {
    keel_helpdesk::provide::tickets::Ticket {
        number: t.number,
        title: t.title.clone(),
        status: t.status.to_string(),
        priority: t.priority.to_string(),
        requester: t.requester.clone(),
        link: t.link.clone(),
    }
}

keel_helpdesk::export_tickets!(Helpdesk);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewComment {
    body: String,
}

fn add_comment(req: &Request) -> Result<Response, Error> {
    let input: NewComment = req.json()?;
    let body = ticket::required_text("body", &input.body, ticket::COMMENT_MAX).map_err(invalid)?;
    let mut stored = load_ticket(req)?;
    let sla_before = stored.value.sla.clone();
    let responding = responds(req, &stored.value);
    let origin = origin(&stored.value);
    let ticket = &mut stored.value;
    if ticket.status == Status::Closed {
        return Err(Error::conflict("ticket-closed", format!("ticket {} is closed", ticket.number)));
    }
    let now = now_ms();
    ticket.comment_count += 1;
    ticket.updated_at = now;
    // The requester answering a ticket that waits on them puts it back in the queue, and its
    // SLA clocks run again.
    let answered = !responding && ticket.status == Status::Pending;
    if answered {
        ticket.status = Status::Open;
    }
    if let Some(sla) = ticket.sla.as_mut() {
        if responding {
            sla.responded(now);
        }
        if answered {
            sla.resume(&rules()?, now, origin);
        }
    }
    let comment = Comment {
        ticket: ticket.number,
        seq: ticket.comment_count,
        author: req.caller.user_id.clone(),
        body,
        created_at: now,
    };
    TICKETS.update(&stored.key, ticket, stored.version)?;
    sync_timers(ticket.number, sla_before.as_ref(), ticket.sla.as_ref())?;
    COMMENTS.insert(&format!("{}/{:06}", stored.key, comment.seq), &comment)?;
    Response::json(201, &comment)
}

fn list_comments(req: &Request) -> Result<Response, Error> {
    let stored = load_ticket(req)?;
    let paging = req.paging(DEFAULT_PAGE, MAX_PAGE)?;
    let page = COMMENTS
        .query()
        .filter("ticket", stored.value.number)
        .limit(paging.limit)
        .cursor(paging.cursor.as_deref())
        .fetch()?;
    let items: Vec<_> = page.items.into_iter().map(|c| c.value).collect();
    Response::page(&items, page.next.as_deref())
}

fn list_policies(_req: &Request) -> Result<Response, Error> {
    let items = [Priority::P1, Priority::P2, Priority::P3, Priority::P4]
        .into_iter()
        .map(|p| {
            let stored = SLA_POLICIES.get(&p.to_string())?;
            let custom = stored.is_some();
            let policy = stored.map_or_else(|| Policy::default_for(p), |s| s.value);
            Ok(serde_json::json!({ "priority": p, "first_response_minutes": policy.first_response_minutes,
                                   "resolution_minutes": policy.resolution_minutes, "custom": custom }))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Response::json(200, &serde_json::json!({ "items": items }))
}

/// Sets the targets for one priority. Tickets filed from now on (and tickets whose priority
/// changes) use it; existing deadlines stay as they were promised.
fn set_policy(req: &Request) -> Result<Response, Error> {
    let priority = ticket::priority(req.param("priority")?).map_err(invalid)?;
    let policy: Policy = req.json()?;
    policy.validate().map_err(|e| Error::invalid("invalid-policy", e))?;
    check_reachable(&rules()?.calendar, Some((priority, policy)))?;
    SLA_POLICIES.upsert(&priority.to_string(), &policy)?;
    Response::json(
        200,
        &serde_json::json!({ "priority": priority, "first_response_minutes": policy.first_response_minutes,
                                             "resolution_minutes": policy.resolution_minutes, "custom": true }),
    )
}

/// The scheduled check: walks timers in time order up to now, re-plans each ticket on the
/// current business hours (an admin may have changed them), records warnings and breaches
/// that still hold and publishes each once.
fn check_sla() -> Result<(), Error> {
    let now = now_ms();
    let rules = rules()?;
    let due = SLA_TIMERS.query().le("due", now).order_by("due").limit(SLA_BATCH).fetch()?;
    let (mut warnings, mut breaches) = (0, 0);
    for timer in due.items {
        // Handling an earlier timer of the same ticket may have moved this one already.
        if !SLA_TIMERS.delete(&timer.key, None)? {
            continue;
        }
        let Some(mut stored) = TICKETS.get(&ticket::ticket_key(timer.value.ticket))? else { continue };
        let (number, origin) = (stored.value.number, origin(&stored.value));
        let Some(sla) = stored.value.sla.as_mut() else { continue };
        let unchanged = sla.clone();
        // The fired timer is gone; if it still stands after re-planning it is put back.
        let before: Vec<Timer> = sla.timers(number).into_iter().filter(|t| t.key() != timer.key).collect();
        sla.plan(&rules, origin);
        let target = timer.value.target;
        let fired = sla.fire(target, timer.value.kind, now);
        let after = sla.timers(number);
        let (due_at, warn_at) = (sla.due(target, Kind::Breach), sla.due(target, Kind::Warning));
        if *sla != unchanged {
            if !fired.is_empty() {
                stored.value.updated_at = now;
            }
            TICKETS.update(&stored.key, &stored.value, stored.version)?;
        }
        sync_timer_docs(&before, &after)?;
        let t = &stored.value;
        for kind in fired {
            match kind {
                Kind::Warning => {
                    keel_sdk::publish(
                        SLA_WARNING,
                        &serde_json::json!({ "number": t.number, "target": target, "warn_at": warn_at,
                                         "due_at": due_at, "warned_at": now, "priority": t.priority,
                                         "title": t.title }),
                    )?;
                    warnings += 1;
                }
                Kind::Breach => {
                    keel_sdk::publish(
                        SLA_BREACHED,
                        &serde_json::json!({ "number": t.number, "target": target, "due_at": due_at,
                                         "breached_at": now, "priority": t.priority, "title": t.title }),
                    )?;
                    breaches += 1;
                }
            }
        }
    }
    if warnings + breaches > 0 {
        keel_sdk::services::log_info(&format!("SLA check: {warnings} warning(s), {breaches} breach(es) recorded"));
    }
    Ok(())
}

/// The desk's business hours as the API shows them: the calendar, and whether an admin set
/// it (else it is the 24/7 UTC default).
fn business_hours_view(calendar: &Calendar, custom: bool) -> Result<Response, Error> {
    let mut body = serde_json::to_value(calendar.spec())?;
    body["custom"] = Value::Bool(custom);
    Response::json(200, &body)
}

fn get_business_hours(_req: &Request) -> Result<Response, Error> {
    match desk_hours()?.calendar {
        Some(calendar) => business_hours_view(&calendar, true),
        None => business_hours_view(&Calendar::always(), false),
    }
}

/// Sets the desk's business hours (the body a GET returns is accepted back as it is).
/// Running clocks keep the time they used until now as measured on the old hours; open
/// tickets are re-planned on the new ones by a task, and paused ones when they resume.
fn set_business_hours(req: &Request) -> Result<Response, Error> {
    let mut body: Value = req.json()?;
    if let Some(fields) = body.as_object_mut() {
        fields.remove("custom");
    }
    let spec: CalendarSpec =
        serde_json::from_value(body).map_err(|e| Error::invalid("invalid-calendar", e.to_string()))?;
    let calendar = Calendar::new(spec)?;
    check_reachable(&calendar, None)?;
    change_hours(Some(calendar.clone()))?;
    business_hours_view(&calendar, true)
}

/// Back to around the clock in UTC.
fn clear_business_hours(_req: &Request) -> Result<Response, Error> {
    if desk_hours()?.calendar.is_some() {
        change_hours(None)?;
    }
    business_hours_view(&Calendar::always(), false)
}

fn change_hours(calendar: Option<Calendar>) -> Result<(), Error> {
    let previous = desk_hours()?.calendar;
    CALENDARS.upsert(DESK_CALENDAR, &DeskHours { calendar, previous, changed_at: now_ms() })?;
    start_replan()?;
    Ok(())
}

/// Refuses hours under which some priority's resolution target (with `policy` in place of
/// the stored one for its priority) could not be met within ten years: such a ticket would
/// never have a deadline.
fn check_reachable(calendar: &Calendar, policy: Option<(Priority, Policy)>) -> Result<(), Error> {
    let now = now_ms();
    for priority in [Priority::P1, Priority::P2, Priority::P3, Priority::P4] {
        let target = match policy {
            Some((p, policy)) if p == priority => policy,
            _ => policy_for(priority)?,
        };
        if calendar.add(now, target.resolution_minutes * 60_000).is_none() {
            return Err(Error::invalid(
                "unreachable-target",
                format!(
                    "the business hours leave {priority}'s resolution target of {} minutes unreachable",
                    target.resolution_minutes
                ),
            ));
        }
    }
    Ok(())
}

fn start_replan() -> Result<String, Error> {
    keel_sdk::TaskSpec::new("replan-sla", "Re-plan SLA deadlines on new business hours", &ReplanChunk::default())?
        .start()
}

/// Where the re-planning task is: the status it walks (new, then open) and the page after
/// `cursor`.
#[derive(Serialize, Deserialize)]
struct ReplanChunk {
    status: Status,
    cursor: Option<String>,
}

impl Default for ReplanChunk {
    fn default() -> ReplanChunk {
        ReplanChunk { status: Status::New, cursor: None }
    }
}

/// One chunk of the re-planning task: the next page of tickets whose clocks run (paused,
/// resolved and closed tickets have no deadline to move).
fn replan_sla(job: &Job) -> Result<(), Error> {
    let chunk: ReplanChunk = job.payload()?;
    let rules = rules()?;
    let page =
        TICKETS.query().filter("status", chunk.status).limit(REPLAN_BATCH).cursor(chunk.cursor.as_deref()).fetch()?;
    let done = page.items.len() as u64;
    for mut stored in page.items {
        let (number, origin) = (stored.value.number, origin(&stored.value));
        let Some(sla) = stored.value.sla.as_mut() else { continue };
        let before = sla.clone();
        sla.plan(&rules, origin);
        if *sla != before {
            let after = sla.clone();
            TICKETS.update(&stored.key, &stored.value, stored.version)?;
            sync_timers(number, Some(&before), Some(&after))?;
        }
    }
    let next = match (page.next, chunk.status) {
        (Some(cursor), status) => Some(ReplanChunk { status, cursor: Some(cursor) }),
        (None, Status::New) => Some(ReplanChunk { status: Status::Open, cursor: None }),
        (None, _) => None,
    };
    keel_sdk::task::advance(done, next.as_ref())
}

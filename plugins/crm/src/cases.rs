//! Cases and their timeline: opening, the field changes agents make (each a timeline entry
//! saying who changed what from what to what), replies that go out through the outbox with
//! proper threading headers, internal notes and logged calls, followers, and the SLA clock
//! that every status change pauses or resumes.

use crate::desk::{self, hours_for, policy_for};
use crate::mail;
use crate::model::{
    self, Change, Channel, Contact, EmailMeta, Entry, EntryKind, FieldError, Priority, Status, Tier, case_key,
};
use crate::people::{self, load_contact};
use crate::sla::{CaseSla, Hours, State};
use crate::{DEFAULT_PAGE, MAX_PAGE, invalid, now_ms};
use keel_sdk::{Collection, Error, Request, Response, Sequence, Versioned};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub const CASES: Collection<Case> = Collection::new("cases");
pub const TIMELINE: Collection<Entry> = Collection::new("timeline");
/// `id_key(Message-ID)` → the entry that message is (inbound and outbound alike), so a
/// reply threads onto its case and a second delivery is recognised.
pub const MESSAGE_IDS: Collection<MessageRef> = Collection::new("message_ids");
pub const OUTBOX: Collection<Outgoing> = Collection::new("outbox");
const CASE_NUMBERS: Sequence = Sequence::new("case");
const OUTBOX_IDS: Sequence = Sequence::new("outbox");

/// Published when a case is opened; payload: case, subject, channel, priority, contact,
/// customer, team.
pub const CASE_OPENED: &str = "crm.case.opened";
/// Published for each timeline entry of a case that has followers; payload: case, seq, kind,
/// by, followers.
pub const CASE_ACTIVITY: &str = "crm.case.activity";

/// Followers a case may have.
const FOLLOWERS_MAX: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageRef {
    pub case: u64,
    pub seq: u32,
    /// One the desk sent.
    #[serde(default)]
    pub outbound: bool,
}

/// A stored case. `status`, `priority`, `assignee`, `team`, `contact`, `customer` and
/// `next_due` are indexed (see plugin.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub number: u64,
    pub subject: String,
    pub description: String,
    pub channel: Channel,
    pub priority: Priority,
    pub status: Status,
    pub assignee: Option<String>,
    pub team: Option<String>,
    pub tags: Vec<String>,
    pub contact: u64,
    pub customer: Option<u64>,
    pub tier: Tier,
    pub created_at: u64,
    pub updated_at: u64,
    pub sla: CaseSla,
    /// The earliest pending SLA deadline; absent while paused or when all are met or missed,
    /// so ordering by it lists only the cases whose clocks run.
    pub next_due: Option<u64>,
    /// Still being worked (new, open or waiting on the customer).
    #[serde(default)]
    pub open: bool,
    /// Open and nobody's.
    #[serde(default)]
    pub unassigned: bool,
    /// Timeline entries so far (the last entry's `seq`).
    pub entries: u32,
    pub followers: Vec<String>,
    /// The last message the customer sent (its id, References and sender), which a reply
    /// answers.
    pub last_inbound: Option<String>,
    #[serde(default)]
    pub last_inbound_refs: Vec<String>,
    #[serde(default)]
    pub last_inbound_from: Option<String>,
    /// The closed case a customer wrote about again.
    #[serde(default)]
    pub follow_up_of: Option<u64>,
    /// For a closed case: the follow-up that later messages about it thread onto.
    #[serde(default)]
    pub followed_by: Option<u64>,
    /// IT helpdesk tickets this case was escalated into.
    #[serde(default)]
    pub escalations: Vec<u64>,
    /// Its rating link (from its first resolution) and the customer's rating.
    #[serde(default)]
    pub satisfaction: Option<crate::public::Satisfaction>,
}

impl Case {
    /// Brings the fields lists query by in line with the case.
    pub fn refresh(&mut self) {
        self.open = self.status.is_active();
        self.unassigned = self.open && self.assignee.is_none();
        self.next_due = self.sla.next_due();
    }
}

/// A case as the API shows it.
#[derive(Serialize)]
struct CaseView<'a> {
    #[serde(flatten)]
    case: &'a Case,
    version: u64,
    sla_state: State,
}

pub fn view(case: &Case, version: u64) -> Result<Response, Error> {
    Ok(Response::json(200, &CaseView { case, version, sla_state: case.sla.state() })?.with_version(version))
}

/// An outgoing message for the mail relay, which reads `GET /outbox` and acknowledges each
/// with `POST /outbox/{id}/sent`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outgoing {
    pub id: u64,
    pub case: u64,
    pub seq: u32,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    /// `pending` until the relay acknowledges it, then `sent`.
    pub state: String,
    pub created_at: u64,
    pub sent_at: Option<u64>,
}

/// What a new case starts with.
pub struct Opening<'a> {
    pub subject: String,
    pub description: String,
    pub channel: Channel,
    pub priority: Option<Priority>,
    pub team: Option<String>,
    pub assignee: Option<String>,
    pub tags: Vec<String>,
    pub contact: &'a Contact,
    pub follow_up_of: Option<u64>,
    pub at: u64,
}

/// The tenant's choice (manifest `[[settings]]`) of a field, else `fallback`.
fn setting(name: &str, fallback: &str) -> String {
    keel_sdk::services::config(name).filter(|v| !v.is_empty()).unwrap_or_else(|| fallback.to_owned())
}

/// The `default-team` setting, if it names a team. A setting naming no team must not refuse
/// every email: such cases get no team, and the log says why.
fn default_team() -> Result<Option<String>, Error> {
    let Some(slug) = keel_sdk::services::config("default-team").filter(|t| !t.is_empty()) else { return Ok(None) };
    match desk::existing_team(&slug) {
        Ok(slug) => Ok(Some(slug)),
        Err(_) => {
            keel_sdk::services::log_warn(&format!("the default-team setting names no team (`{slug}`)"));
            Ok(None)
        }
    }
}

/// Opens a case: numbers it, starts its SLA clocks on its team's hours and publishes
/// `crm.case.opened`. The caller writes it (it may add entries first).
pub fn open(opening: Opening) -> Result<Case, Error> {
    let priority = match opening.priority {
        Some(p) => p,
        None => Priority::parse(&setting("default-priority", "normal")).map_err(invalid)?,
    };
    let team = match opening.team {
        Some(t) => Some(t),
        None => default_team()?,
    };
    let tier = people::tier_of(opening.contact)?;
    let hours = hours_for(team.as_deref())?;
    let sla = CaseSla::start(policy_for(tier, priority)?, opening.at, &hours);
    let mut case = Case {
        number: CASE_NUMBERS.next()?,
        subject: opening.subject,
        description: opening.description,
        channel: opening.channel,
        priority,
        status: Status::New,
        assignee: opening.assignee,
        team,
        tags: opening.tags,
        contact: opening.contact.id,
        customer: opening.contact.customer,
        tier,
        created_at: opening.at,
        updated_at: opening.at,
        next_due: None,
        open: true,
        unassigned: true,
        sla,
        entries: 0,
        followers: Vec::new(),
        last_inbound: None,
        last_inbound_refs: Vec::new(),
        last_inbound_from: None,
        follow_up_of: opening.follow_up_of,
        followed_by: None,
        escalations: Vec::new(),
        satisfaction: None,
    };
    case.refresh();
    keel_sdk::publish(
        CASE_OPENED,
        &json!({ "case": case.number, "subject": case.subject, "channel": case.channel,
                 "priority": case.priority, "contact": case.contact, "customer": case.customer,
                 "team": case.team }),
    )?;
    Ok(case)
}

/// Writes a new case and its timers.
pub fn insert(case: &Case) -> Result<u64, Error> {
    let version = CASES.insert(&case_key(case.number), case)?;
    desk::sync_timer_docs(&[], &case.sla.timers(case.number))?;
    Ok(version)
}

/// Adds an entry to `case`'s timeline (the caller writes the case), and tells its followers.
pub fn append(
    case: &mut Case,
    kind: EntryKind,
    by: &str,
    body: String,
    email: Option<EmailMeta>,
    change: Option<Change>,
    at: u64,
) -> Result<Entry, Error> {
    case.entries += 1;
    case.updated_at = at;
    let entry = Entry { case: case.number, seq: case.entries, at, kind, by: by.to_owned(), body, email, change };
    TIMELINE.insert(&model::entry_key(case.number, entry.seq), &entry)?;
    if !case.followers.is_empty() {
        keel_sdk::publish(
            CASE_ACTIVITY,
            &json!({ "case": case.number, "seq": entry.seq, "kind": kind, "by": by, "followers": case.followers }),
        )?;
    }
    Ok(entry)
}

fn record_change(case: &mut Case, by: &str, field: &str, from: Value, to: Value, at: u64) -> Result<(), Error> {
    let change = Change { field: field.to_owned(), from, to };
    append(case, EntryKind::FieldChange, by, String::new(), None, Some(change), at)?;
    Ok(())
}

/// Moves `case` to `to`, recording the change, and pauses, resumes, stops or restarts its
/// clocks: waiting on the customer and resolved stop them; leaving either starts them.
pub fn change_status(case: &mut Case, to: Status, by: &str, at: u64, hours: &Hours) -> Result<(), Error> {
    let from = case.status;
    if from == to {
        return Ok(());
    }
    case.status = from.transition(to).map_err(|e| Error::conflict("invalid-transition", e.to_string()))?;
    match (from, to) {
        (_, Status::Resolved) => case.sla.resolved(at, hours),
        (Status::Resolved, Status::Open) => case.sla.reopened(at, hours),
        (_, Status::WaitingOnCustomer) => case.sla.pause(at, hours),
        (Status::WaitingOnCustomer, _) => case.sla.resume(at, hours),
        _ => {}
    }
    record_change(case, by, "status", json!(from), json!(to), at)
}

/// The customer wrote (not an automatic message): a waiting case is open again, a resolved
/// one reopened, and the clocks run.
pub fn customer_answered(case: &mut Case, at: u64, hours: &Hours) -> Result<(), Error> {
    match case.status {
        Status::WaitingOnCustomer | Status::Resolved => change_status(case, Status::Open, "customer", at, hours),
        _ => Ok(()),
    }
}

pub fn number_param(req: &Request) -> Result<u64, Error> {
    let segment = req.param("number")?;
    model::parse_number(segment)
        .ok_or_else(|| Error::bad_request("invalid-case-number", format!("`{segment}` is not a case number")))
}

pub fn load(number: u64) -> Result<Versioned<Case>, Error> {
    CASES
        .get(&case_key(number))?
        .ok_or_else(|| Error::not_found("case-not-found", format!("there is no case {number}")))
}

fn check_version(req: &Request, stored: &Versioned<Case>, body_version: Option<u64>) -> Result<(), Error> {
    let expected = match body_version {
        Some(v) => Some(v),
        None => req.if_match()?,
    };
    match expected {
        Some(v) if v != stored.version => Err(Error::conflict(
            "version-conflict",
            format!("case {} is at version {}, not {v}; reload and retry", stored.value.number, stored.version),
        )),
        _ => Ok(()),
    }
}

fn assignee(value: &str) -> Result<String, FieldError> {
    model::required_line("assignee", value, model::NAME_MAX)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCase {
    subject: String,
    #[serde(default)]
    description: String,
    /// An existing contact, or `contact_email` (found or created).
    contact: Option<u64>,
    contact_email: Option<String>,
    contact_name: Option<String>,
    channel: Option<String>,
    priority: Option<String>,
    team: Option<String>,
    assignee: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// An agent opens a case (a phone call, a chat, a walk-in).
pub fn create(req: &Request) -> Result<Response, Error> {
    let input: NewCase = req.json()?;
    let subject = model::required_line("subject", &input.subject, model::SUBJECT_MAX).map_err(invalid)?;
    let description = model::optional_text("description", &input.description, model::BODY_MAX).map_err(invalid)?;
    let contact = match (input.contact, input.contact_email) {
        (Some(id), None) => people::live_contact(id)?.value,
        (None, Some(email)) => {
            let email = model::email("contact_email", &email).map_err(invalid)?;
            people::contact_for_email(&email, input.contact_name.as_deref())?.0
        }
        _ => return Err(Error::invalid("invalid-field", "give exactly one of `contact` and `contact_email`")),
    };
    let opening = Opening {
        subject,
        description,
        channel: Channel::parse(input.channel.as_deref().unwrap_or("phone")).map_err(invalid)?,
        priority: input.priority.as_deref().map(Priority::parse).transpose().map_err(invalid)?,
        team: input.team.as_deref().map(desk::existing_team).transpose()?,
        assignee: input.assignee.as_deref().map(assignee).transpose().map_err(invalid)?,
        tags: model::tags(&input.tags).map_err(invalid)?,
        contact: &contact,
        follow_up_of: None,
        at: now_ms(),
    };
    let case = open(opening)?;
    let version = insert(&case)?;
    Ok(Response::json(201, &CaseView { case: &case, version, sla_state: case.sla.state() })?
        .with_version(version)
        .with_header("location", &format!("/cases/{}", case.number)))
}

pub fn get(req: &Request) -> Result<Response, Error> {
    let stored = load(number_param(req)?)?;
    view(&stored.value, stored.version)
}

/// Lists cases: by `status`, `priority`, `assignee`, `team`, `contact`, `customer`, `open`
/// or `unassigned`; with `sort=next_due` only cases whose clocks run, earliest deadline first
/// (`due_before` bounds it: "breaching soon"). The views: my open cases
/// (`assignee=me&open=true`), unassigned (`unassigned=true`), breaching soon
/// (`sort=next_due&due_before=...`), a customer's open cases (`customer=7&open=true`).
/// `GET /cases`: filtered by the query's fields; with `q`, the cases whose subject,
/// description or tags match, best first.
pub fn list(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(DEFAULT_PAGE, MAX_PAGE)?;
    let mut filters: Vec<(&'static str, String)> = Vec::new();
    if let Some(status) = req.query("status") {
        filters.push(("status", Status::parse(status).map_err(invalid)?.as_str().to_owned()));
    }
    if let Some(priority) = req.query("priority") {
        filters.push(("priority", Priority::parse(priority).map_err(invalid)?.as_str().to_owned()));
    }
    if let Some(who) = req.query("assignee") {
        let who = if who == "me" { req.caller.user_id.as_str() } else { who };
        filters.push(("assignee", who.to_owned()));
    }
    if let Some(team) = req.query("team") {
        filters.push(("team", desk::team_slug(team)?));
    }
    for field in ["open", "unassigned"] {
        match req.query(field) {
            None => {}
            Some(v @ ("true" | "false")) => filters.push((field, v.to_owned())),
            Some(other) => {
                return Err(Error::invalid(
                    "invalid-field",
                    format!("`{field}` must be true or false (got `{other}`)"),
                ));
            }
        }
    }
    for field in ["contact", "customer"] {
        if let Some(value) = req.query(field) {
            let id = model::parse_number(value)
                .ok_or_else(|| Error::invalid("invalid-field", format!("`{field}` `{value}` is not an id")))?;
            filters.push((field, id.to_string()));
        }
    }
    if let Some(q) = crate::search::text(req) {
        if req.query("sort").is_some() {
            return Err(Error::invalid("invalid-field", "`sort` cannot be combined with `q`: matches come best first")
                .at_field("sort"));
        }
        let mut search = CASES.search(q).limit(paging.limit).cursor(paging.cursor.as_deref());
        for (field, value) in &filters {
            search = search.eq(field, value);
        }
        return list_page(crate::search::fetch(search)?);
    }
    let mut query = CASES.query().limit(paging.limit).cursor(paging.cursor.as_deref());
    for (field, value) in &filters {
        query = query.filter(field, value);
    }
    match req.query("sort") {
        None => query = query.descending(),
        Some("next_due") => {
            query = query.ge("next_due", 0).order_by("next_due");
            if let Some(before) = req.query("due_before") {
                let before: u64 = before
                    .parse()
                    .map_err(|_| Error::invalid("invalid-field", "`due_before` must be ms since the epoch"))?;
                query = query.lt("next_due", before);
            }
        }
        Some(other) => {
            return Err(Error::invalid("invalid-field", format!("`sort` must be `next_due` (got `{other}`)")));
        }
    }
    list_page(query.fetch()?)
}

fn list_page(page: keel_sdk::Page<Case>) -> Result<Response, Error> {
    let items: Vec<_> = page
        .items
        .iter()
        .map(|c| CaseView { case: &c.value, version: c.version, sla_state: c.value.sla.state() })
        .collect();
    Response::page(&items, page.next.as_deref())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CasePatch {
    pub subject: Option<String>,
    pub priority: Option<String>,
    pub status: Option<String>,
    /// Missing: unchanged; `null`: unassign / no team; a string: set.
    #[serde(default, deserialize_with = "crate::present")]
    pub assignee: Option<Value>,
    #[serde(default, deserialize_with = "crate::present")]
    pub team: Option<Value>,
    pub tags: Option<Vec<String>>,
    pub version: Option<u64>,
}

fn optional_string(field: &'static str, value: Value) -> Result<Option<String>, Error> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(Error::invalid("invalid-field", format!("`{field}` must be a string or null"))),
    }
}

/// Changes a case's fields; each change is a timeline entry. A new priority re-plans its
/// SLA on the policy for it; a new team on that team's hours; a status change pauses or
/// resumes the clocks.
pub fn update(req: &Request) -> Result<Response, Error> {
    let patch: CasePatch = req.json()?;
    let mut stored = load(number_param(req)?)?;
    check_version(req, &stored, patch.version)?;
    let sla_before = stored.value.sla.clone();
    let entries_before = stored.value.entries;
    let case = &mut stored.value;
    if case.status == Status::Closed {
        return Err(Error::conflict("case-closed", format!("case {} is closed", case.number)));
    }
    apply(case, patch, &req.caller.user_id, now_ms())?;
    if case.entries == entries_before {
        // Every field already had the value asked for: nothing to write.
        return view(&stored.value, stored.version);
    }
    desk::settle(case, &sla_before)?;
    let version = CASES.update(&stored.key, case, stored.version)?;
    view(case, version)
}

/// Applies `patch` to `case` as `by`: each change a timeline entry, SLAs re-planned. The
/// caller settles and writes the case.
pub fn apply(case: &mut Case, patch: CasePatch, by: &str, now: u64) -> Result<(), Error> {
    let by = by.to_owned();
    let mut hours = hours_for(case.team.as_deref())?;
    if let Some(subject) = patch.subject {
        let subject = model::required_line("subject", &subject, model::SUBJECT_MAX).map_err(invalid)?;
        if subject != case.subject {
            let old = std::mem::replace(&mut case.subject, subject.clone());
            record_change(case, &by, "subject", json!(old), json!(subject), now)?;
        }
    }
    if let Some(value) = patch.assignee {
        let new = optional_string("assignee", value)?.map(|a| assignee(&a)).transpose().map_err(invalid)?;
        if new != case.assignee {
            let old = std::mem::replace(&mut case.assignee, new.clone());
            record_change(case, &by, "assignee", json!(old), json!(new), now)?;
        }
    }
    if let Some(value) = patch.team {
        let new = optional_string("team", value)?.map(|t| desk::existing_team(&t)).transpose()?;
        if new != case.team {
            // Time so far is measured on the old team's hours; what is left on the new.
            case.sla.plan(&hours);
            case.sla.clock.rebase(&hours.calendar, now);
            hours = hours_for(new.as_deref())?;
            case.sla.plan(&hours);
            let old = std::mem::replace(&mut case.team, new.clone());
            record_change(case, &by, "team", json!(old), json!(new), now)?;
        }
    }
    if let Some(priority) = patch.priority {
        let priority = Priority::parse(&priority).map_err(invalid)?;
        if priority != case.priority {
            case.sla.repolicy(policy_for(case.tier, priority)?, &hours);
            let old = std::mem::replace(&mut case.priority, priority);
            record_change(case, &by, "priority", json!(old), json!(priority), now)?;
        }
    }
    if let Some(tags) = patch.tags {
        let tags = model::tags(&tags).map_err(invalid)?;
        if tags != case.tags {
            let old = std::mem::replace(&mut case.tags, tags.clone());
            record_change(case, &by, "tags", json!(old), json!(tags), now)?;
        }
    }
    if let Some(status) = patch.status {
        let to = Status::parse(&status).map_err(invalid)?;
        // Waiting on the customer pauses the clocks; it takes having asked them something.
        if to == Status::WaitingOnCustomer && case.sla.first_response.is_pending() {
            return Err(Error::conflict(
                "first-response-pending",
                "answer the customer first: a reply (or a logged call) with the status `waiting_on_customer`",
            ));
        }
        change_status(case, to, &by, now, &hours)?;
    }
    Ok(())
}

pub fn timeline(req: &Request) -> Result<Response, Error> {
    let number = number_param(req)?;
    load(number)?;
    let paging = req.paging(DEFAULT_PAGE, MAX_PAGE)?;
    let page = TIMELINE.query().filter("case", number).limit(paging.limit).cursor(paging.cursor.as_deref()).fetch()?;
    let items: Vec<_> = page.items.into_iter().map(|e| e.value).collect();
    Response::page(&items, page.next.as_deref())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyInput {
    body: String,
    /// Where the case goes with the reply (e.g. `waiting_on_customer`, `resolved`); a new
    /// case becomes `open`.
    status: Option<String>,
}

/// The desk's address and mail domain (settings `mail-from`, `mail-domain`).
fn desk_address() -> (String, String) {
    let domain = setting("mail-domain", "desk.invalid");
    let from = setting("mail-from", &format!("support@{domain}"));
    (from, domain)
}

/// An agent answers the customer: a `message_out` entry with its own Message-ID, threaded to
/// the customer's last message, queued in the outbox for the mail relay. The first answer
/// meets the first-response target.
pub fn reply(req: &Request) -> Result<Response, Error> {
    let input: ReplyInput = req.json()?;
    let body = model::required_text("body", &input.body, model::BODY_MAX).map_err(invalid)?;
    let status = input.status.as_deref().map(Status::parse).transpose().map_err(invalid)?;
    let mut stored = load(number_param(req)?)?;
    let sla_before = stored.value.sla.clone();
    let case = &mut stored.value;
    if case.status == Status::Closed {
        return Err(Error::conflict("case-closed", format!("case {} is closed", case.number)));
    }
    let entry = send_reply(case, body, status, &req.caller.user_id, &req.caller.tenant, now_ms())?;
    desk::settle(case, &sla_before)?;
    CASES.update(&stored.key, &stored.value, stored.version)?;
    Response::json(201, &entry)
}

/// Answers the customer on `case` as `by`, moving it to `status` (a new case to `open`).
/// The caller settles and writes the case.
/// The first reply that resolves a case carries its satisfaction-rating link: in the mail
/// only (the outbox, which only the mail relay reads), not on the timeline, and the case
/// keeps only the token's hash, so nobody working the case can rate it.
pub fn send_reply(
    case: &mut Case,
    body: String,
    status: Option<Status>,
    by: &str,
    tenant: &str,
    now: u64,
) -> Result<Entry, Error> {
    let mail_body = match status {
        Some(Status::Resolved) => match crate::public::offer_rating(case)? {
            Some(token) => {
                let base = setting("public-url", "");
                let base = base.trim_end_matches('/');
                format!("{body}\n\nHow did we do? Rate this case: {base}/v1/public/{tenant}/crm/ratings/{token}")
            }
            None => body.clone(),
        },
        _ => body.clone(),
    };
    // The address the customer last wrote from, else their first.
    let to = match case.last_inbound_from.clone() {
        Some(address) => address,
        None => {
            let contact = load_contact(case.contact)?.value;
            contact.emails.first().cloned().ok_or_else(|| {
                Error::invalid("no-address", format!("contact {} has no email address to answer", contact.id))
            })?
        }
    };
    let by = by.to_owned();
    let hours = hours_for(case.team.as_deref())?;
    let (from, domain) = desk_address();
    let seq = case.entries + 1;
    let parent = case.last_inbound.as_deref().map(|id| (id, case.last_inbound_refs.as_slice()));
    let token = getrandom::u64().map_err(|e| Error::internal("no-randomness", e.to_string()))?;
    let (message_id, in_reply_to, references) = mail::outbound_ids(case.number, seq, token, &domain, parent);
    let subject = mail::reply_subject(&case.subject, case.number);
    let meta = EmailMeta {
        message_id: message_id.clone(),
        subject: subject.clone(),
        from: from.clone(),
        to: vec![to.clone()],
        in_reply_to: in_reply_to.clone(),
        references: references.clone(),
        attachments: Vec::new(),
        automatic: false,
    };
    let entry = append(case, EntryKind::MessageOut, &by, body, Some(meta), None, now)?;
    MESSAGE_IDS
        .insert(&mail::id_key(&message_id), &MessageRef { case: case.number, seq: entry.seq, outbound: true })?;
    let outgoing = Outgoing {
        id: OUTBOX_IDS.next()?,
        case: case.number,
        seq: entry.seq,
        from,
        to: vec![to],
        subject,
        body: mail_body,
        message_id,
        in_reply_to,
        references,
        state: "pending".into(),
        created_at: now,
        sent_at: None,
    };
    OUTBOX.insert(&model::record_key(outgoing.id), &outgoing)?;
    case.sla.responded(now, &hours);
    case.sla.plan(&hours);
    let to_status = status.or((case.status == Status::New).then_some(Status::Open));
    if let Some(to) = to_status {
        change_status(case, to, &by, now, &hours)?;
    }
    Ok(entry)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteInput {
    body: String,
    /// `note` (default) or `call` (a phone call logged).
    kind: Option<String>,
}

/// An internal note or a logged call: on the timeline, never sent to the customer. A call is
/// talking to the customer, so the first one meets the first-response target.
pub fn note(req: &Request) -> Result<Response, Error> {
    let input: NoteInput = req.json()?;
    let body = model::required_text("body", &input.body, model::BODY_MAX).map_err(invalid)?;
    let kind = match input.kind.as_deref() {
        None | Some("note") => EntryKind::Note,
        Some("call") => EntryKind::Call,
        Some(other) => {
            return Err(Error::invalid("invalid-field", format!("`kind` must be note or call (got `{other}`)")));
        }
    };
    let mut stored = load(number_param(req)?)?;
    let sla_before = stored.value.sla.clone();
    let case = &mut stored.value;
    if case.status == Status::Closed {
        return Err(Error::conflict("case-closed", format!("case {} is closed", case.number)));
    }
    let now = now_ms();
    let entry = append(case, kind, &req.caller.user_id, body, None, None, now)?;
    if kind == EntryKind::Call {
        let hours = hours_for(case.team.as_deref())?;
        case.sla.responded(now, &hours);
        case.sla.plan(&hours);
        desk::settle(case, &sla_before)?;
    }
    CASES.update(&stored.key, &stored.value, stored.version)?;
    Response::json(201, &entry)
}

fn follower_param(req: &Request) -> Result<String, Error> {
    model::required_line("user", req.param("user")?, model::NAME_MAX).map_err(invalid)
}

/// Adds a follower: they are told of every entry from now on (`crm.case.activity`).
pub fn follow(req: &Request) -> Result<Response, Error> {
    let user = follower_param(req)?;
    let mut stored = load(number_param(req)?)?;
    let case = &mut stored.value;
    if !case.followers.contains(&user) {
        if case.followers.len() >= FOLLOWERS_MAX {
            return Err(Error::invalid("too-many-followers", format!("a case has at most {FOLLOWERS_MAX} followers")));
        }
        case.followers.push(user);
        let version = CASES.update(&stored.key, &stored.value, stored.version)?;
        return view(&stored.value, version);
    }
    view(&stored.value, stored.version)
}

pub fn unfollow(req: &Request) -> Result<Response, Error> {
    let user = follower_param(req)?;
    let mut stored = load(number_param(req)?)?;
    let before = stored.value.followers.len();
    stored.value.followers.retain(|f| *f != user);
    if stored.value.followers.len() == before {
        return view(&stored.value, stored.version);
    }
    let version = CASES.update(&stored.key, &stored.value, stored.version)?;
    view(&stored.value, version)
}

/// The outbox for the mail relay: `pending` (default) or `sent` messages, oldest first.
pub fn outbox(req: &Request) -> Result<Response, Error> {
    let state = req.query("state").unwrap_or("pending");
    if !["pending", "sent"].contains(&state) {
        return Err(Error::invalid("invalid-field", format!("`state` must be pending or sent (got `{state}`)")));
    }
    let paging = req.paging(DEFAULT_PAGE, MAX_PAGE)?;
    let page = OUTBOX.query().filter("state", state).limit(paging.limit).cursor(paging.cursor.as_deref()).fetch()?;
    let items: Vec<_> = page.items.into_iter().map(|o| o.value).collect();
    Response::page(&items, page.next.as_deref())
}

/// The relay handed a message on. Acknowledging twice is harmless.
pub fn sent(req: &Request) -> Result<Response, Error> {
    let segment = req.param("id")?;
    let id = model::parse_number(segment)
        .ok_or_else(|| Error::bad_request("invalid-id", format!("`{segment}` is not an outbox id")))?;
    let mut stored = OUTBOX
        .get(&model::record_key(id))?
        .ok_or_else(|| Error::not_found("message-not-found", format!("there is no outgoing message {id}")))?;
    if stored.value.state != "sent" {
        stored.value.state = "sent".into();
        stored.value.sent_at = Some(now_ms());
        OUTBOX.update(&stored.key, &stored.value, stored.version)?;
    }
    Response::json(200, &stored.value)
}

//! Customers (companies, with a support tier) and contacts (people, with their emails and
//! phones, maybe of a customer). Each email belongs to one contact: `contact_emails` maps it
//! to the contact, created only if absent, so two deliveries from a new sender make one.

use crate::model::{self, Contact, Customer, FieldError, Tier};
use crate::{DEFAULT_PAGE, MAX_PAGE, invalid, now_ms};
use keel_sdk::{Collection, Error, ImportBatch, Request, Response, RowProblem, Sequence, Versioned};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const CUSTOMERS: Collection<Customer> = Collection::new("customers");
pub const CONTACTS: Collection<Contact> = Collection::new("contacts");
/// `{email}` → the contact it belongs to.
pub const CONTACT_EMAILS: Collection<EmailOwner> = Collection::new("contact_emails");
const CUSTOMER_IDS: Sequence = Sequence::new("customer");
const CONTACT_IDS: Sequence = Sequence::new("contact");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmailOwner {
    pub contact: u64,
}

fn id_param(req: &Request, what: &str) -> Result<u64, Error> {
    let segment = req.param("id")?;
    model::parse_number(segment)
        .ok_or_else(|| Error::bad_request("invalid-id", format!("`{segment}` is not a {what} id")))
}

pub fn load_customer(id: u64) -> Result<Versioned<Customer>, Error> {
    CUSTOMERS
        .get(&model::record_key(id))?
        .ok_or_else(|| Error::not_found("customer-not-found", format!("there is no customer {id}")))
}

pub fn load_contact(id: u64) -> Result<Versioned<Contact>, Error> {
    CONTACTS
        .get(&model::record_key(id))?
        .ok_or_else(|| Error::not_found("contact-not-found", format!("there is no contact {id}")))
}

/// Merges a chain may hold (a merged into b merged into c ...) before it is refused.
const MAX_MERGE_CHAIN: usize = 20;

/// Contact `id`, or the survivor it was merged into (through a chain of merges).
pub fn live_contact(id: u64) -> Result<Versioned<Contact>, Error> {
    let mut contact = load_contact(id)?;
    for _ in 0..MAX_MERGE_CHAIN {
        match contact.value.merged_into {
            Some(next) => contact = load_contact(next)?,
            None => return Ok(contact),
        }
    }
    Err(Error::conflict("merge-chain", format!("contact {id} was merged more than {MAX_MERGE_CHAIN} times over")))
}

/// Customer `id`, or the survivor it was merged into.
pub fn live_customer(id: u64) -> Result<Versioned<Customer>, Error> {
    let mut customer = load_customer(id)?;
    for _ in 0..MAX_MERGE_CHAIN {
        match customer.value.merged_into {
            Some(next) => customer = load_customer(next)?,
            None => return Ok(customer),
        }
    }
    Err(Error::conflict("merge-chain", format!("customer {id} was merged more than {MAX_MERGE_CHAIN} times over")))
}

/// A customer a record may point to: one that was not merged away.
fn unmerged_customer(id: u64) -> Result<(), Error> {
    match load_customer(id)?.value.merged_into {
        Some(into) => {
            Err(Error::conflict("customer-merged", format!("customer {id} was merged into {into}; use that")))
        }
        None => Ok(()),
    }
}

/// The tier a contact's cases are served at: their customer's (its survivor's, if merged),
/// else standard.
pub fn tier_of(contact: &Contact) -> Result<Tier, Error> {
    match contact.customer {
        Some(id) => Ok(live_customer(id)?.value.tier),
        None => Ok(Tier::Standard),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerInput {
    name: String,
    tier: Option<String>,
}

pub fn create_customer(req: &Request) -> Result<Response, Error> {
    let input: CustomerInput = req.json()?;
    let name = model::required_line("name", &input.name, model::NAME_MAX).map_err(invalid)?;
    let customer = Customer {
        id: CUSTOMER_IDS.next()?,
        name_key: name.to_lowercase(),
        name,
        tier: Tier::parse(input.tier.as_deref().unwrap_or("standard")).map_err(invalid)?,
        created_at: now_ms(),
        merged_into: None,
    };
    let version = CUSTOMERS.insert(&model::record_key(customer.id), &customer)?;
    Ok(Response::json(201, &customer)?
        .with_version(version)
        .with_header("location", &format!("/customers/{}", customer.id)))
}

pub fn get_customer(req: &Request) -> Result<Response, Error> {
    let stored = load_customer(id_param(req, "customer")?)?;
    Ok(Response::json(200, &stored.value)?.with_version(stored.version))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerPatch {
    name: Option<String>,
    tier: Option<String>,
}

/// Renames a customer or changes its tier. A new tier applies to cases opened from then on.
pub fn update_customer(req: &Request) -> Result<Response, Error> {
    let patch: CustomerPatch = req.json()?;
    let mut stored = load_customer(id_param(req, "customer")?)?;
    if let Some(name) = patch.name {
        stored.value.name = model::required_line("name", &name, model::NAME_MAX).map_err(invalid)?;
        stored.value.name_key = stored.value.name.to_lowercase();
    }
    if let Some(tier) = patch.tier {
        stored.value.tier = Tier::parse(&tier).map_err(invalid)?;
    }
    let version = CUSTOMERS.update(&stored.key, &stored.value, stored.version)?;
    Ok(Response::json(200, &stored.value)?.with_version(version))
}

pub fn list_customers(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(DEFAULT_PAGE, MAX_PAGE)?;
    let tier = req.query("tier").map(Tier::parse).transpose().map_err(invalid)?;
    if let Some(q) = crate::search::text(req) {
        let mut search = CUSTOMERS.search(q).limit(paging.limit).cursor(paging.cursor.as_deref());
        if let Some(tier) = tier {
            search = search.eq("tier", tier.as_str());
        }
        let page = crate::search::fetch(search)?;
        let items = crate::search::live(page.items, |c: &Customer| c.merged_into.is_none());
        return Response::page(&items, page.next.as_deref());
    }
    let mut query = CUSTOMERS.query().limit(paging.limit).cursor(paging.cursor.as_deref());
    if let Some(tier) = tier {
        query = query.filter("tier", tier.as_str());
    }
    let page = query.fetch()?;
    let items: Vec<_> = page.items.into_iter().map(|c| c.value).collect();
    Response::page(&items, page.next.as_deref())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactInput {
    name: String,
    #[serde(default)]
    emails: Vec<String>,
    #[serde(default)]
    phones: Vec<String>,
    customer: Option<u64>,
}

fn phones(values: &[String]) -> Result<Vec<String>, FieldError> {
    values
        .iter()
        .map(|p| {
            let p = p.trim();
            let ok = (3..=32).contains(&p.len())
                && p.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c))
                && p.chars().any(|c| c.is_ascii_digit());
            if ok {
                Ok(p.to_owned())
            } else {
                Err(model::field_error("phones", format!("`{p}` is not a phone number")))
            }
        })
        .collect()
}

fn emails(values: &[String]) -> Result<Vec<String>, FieldError> {
    if values.len() > model::EMAILS_MAX {
        return Err(model::field_error("emails", format!("at most {} addresses", model::EMAILS_MAX)));
    }
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let e = model::email("emails", v)?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

/// Claims each of `emails` for contact `id`; a `409 email-taken` naming the owner if another
/// contact has one.
fn claim_emails(id: u64, emails: &[String]) -> Result<(), Error> {
    for email in emails {
        match CONTACT_EMAILS.get(email)? {
            Some(owner) if owner.value.contact != id => {
                return Err(Error::conflict(
                    "email-taken",
                    format!("`{email}` belongs to contact {}", owner.value.contact),
                ));
            }
            Some(_) => {}
            None => {
                CONTACT_EMAILS.insert(email, &EmailOwner { contact: id })?;
            }
        }
    }
    Ok(())
}

pub fn create_contact(req: &Request) -> Result<Response, Error> {
    let input: ContactInput = req.json()?;
    if let Some(customer) = input.customer {
        unmerged_customer(customer)?;
    }
    let contact = Contact {
        id: CONTACT_IDS.next()?,
        name: model::required_line("name", &input.name, model::NAME_MAX).map_err(invalid)?,
        emails: emails(&input.emails).map_err(invalid)?,
        phones: phones(&input.phones).map_err(invalid)?,
        customer: input.customer,
        created_at: now_ms(),
        merged_into: None,
    };
    claim_emails(contact.id, &contact.emails)?;
    let version = CONTACTS.insert(&model::record_key(contact.id), &contact)?;
    Ok(Response::json(201, &contact)?
        .with_version(version)
        .with_header("location", &format!("/contacts/{}", contact.id)))
}

pub fn get_contact(req: &Request) -> Result<Response, Error> {
    let stored = load_contact(id_param(req, "contact")?)?;
    Ok(Response::json(200, &stored.value)?.with_version(stored.version))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactPatch {
    name: Option<String>,
    emails: Option<Vec<String>>,
    phones: Option<Vec<String>>,
    /// Missing: unchanged; `null`: no company; an id: that customer.
    #[serde(default, deserialize_with = "crate::present")]
    customer: Option<Value>,
}

pub fn update_contact(req: &Request) -> Result<Response, Error> {
    let patch: ContactPatch = req.json()?;
    let mut stored = load_contact(id_param(req, "contact")?)?;
    let contact = &mut stored.value;
    if let Some(into) = contact.merged_into {
        return Err(Error::conflict(
            "contact-merged",
            format!("contact {} was merged into {into}; change that", contact.id),
        ));
    }
    if let Some(name) = patch.name {
        contact.name = model::required_line("name", &name, model::NAME_MAX).map_err(invalid)?;
    }
    if let Some(list) = patch.emails {
        let new = emails(&list).map_err(invalid)?;
        for gone in contact.emails.iter().filter(|e| !new.contains(e)) {
            if let Some(owner) = CONTACT_EMAILS.get(gone)?.filter(|o| o.value.contact == contact.id) {
                CONTACT_EMAILS.delete(gone, Some(owner.version))?;
            }
        }
        claim_emails(contact.id, &new)?;
        contact.emails = new;
    }
    if let Some(list) = patch.phones {
        contact.phones = phones(&list).map_err(invalid)?;
    }
    match patch.customer {
        None => {}
        Some(Value::Null) => contact.customer = None,
        Some(Value::Number(n)) => {
            let id = n.as_u64().ok_or_else(|| Error::invalid("invalid-field", "`customer` must be an id"))?;
            unmerged_customer(id)?;
            contact.customer = Some(id);
        }
        Some(_) => return Err(Error::invalid("invalid-field", "`customer` must be an id or null")),
    }
    let version = CONTACTS.update(&stored.key, contact, stored.version)?;
    Ok(Response::json(200, contact)?.with_version(version))
}

pub fn list_contacts(req: &Request) -> Result<Response, Error> {
    if let Some(email) = req.query("email") {
        let email = model::email("email", email).map_err(invalid)?;
        let found = match CONTACT_EMAILS.get(&email)? {
            Some(owner) => vec![load_contact(owner.value.contact)?.value],
            None => Vec::new(),
        };
        return Response::page(&found, None);
    }
    let paging = req.paging(DEFAULT_PAGE, MAX_PAGE)?;
    let customer = match req.query("customer") {
        Some(customer) => Some(
            model::parse_number(customer)
                .ok_or_else(|| Error::invalid("invalid-field", format!("`customer` `{customer}` is not an id")))?,
        ),
        None => None,
    };
    if let Some(q) = crate::search::text(req) {
        let mut search = CONTACTS.search(q).limit(paging.limit).cursor(paging.cursor.as_deref());
        if let Some(id) = customer {
            search = search.eq("customer", id);
        }
        let page = crate::search::fetch(search)?;
        let items = crate::search::live(page.items, |c: &Contact| c.merged_into.is_none());
        return Response::page(&items, page.next.as_deref());
    }
    let mut query = CONTACTS.query().limit(paging.limit).cursor(paging.cursor.as_deref());
    if let Some(id) = customer {
        query = query.filter("customer", id);
    }
    let page = query.fetch()?;
    let items: Vec<_> = page.items.into_iter().map(|c| c.value).collect();
    Response::page(&items, page.next.as_deref())
}

/// The contact who owns `email` (its survivor, if merged), if any.
pub fn existing_contact(email: &str) -> Result<Option<Contact>, Error> {
    match CONTACT_EMAILS.get(email)? {
        Some(owner) => Ok(Some(live_contact(owner.value.contact)?.value)),
        None => Ok(None),
    }
}

/// The contact who owns `email`, or a new one named `name` (else the address's local part).
/// Returns it and whether it was created.
pub fn contact_for_email(email: &str, name: Option<&str>) -> Result<(Contact, bool), Error> {
    if let Some(owner) = CONTACT_EMAILS.get(email)? {
        // A merged contact forwards to its survivor.
        return Ok((live_contact(owner.value.contact)?.value, false));
    }
    let fallback = email.split('@').next().unwrap_or(email);
    let name = name.and_then(|n| model::required_line("name", n, model::NAME_MAX).ok());
    let contact = Contact {
        id: CONTACT_IDS.next()?,
        name: name.unwrap_or_else(|| fallback.to_owned()),
        emails: vec![email.to_owned()],
        phones: Vec::new(),
        customer: None,
        created_at: now_ms(),
        merged_into: None,
    };
    // Two first messages from one new sender at once: one insert wins, the other call's
    // unit of work conflicts and is run again, then finds this contact.
    CONTACT_EMAILS.insert(email, &EmailOwner { contact: contact.id })?;
    CONTACTS.insert(&model::record_key(contact.id), &contact)?;
    Ok((contact, true))
}

/// Cases (and, for a customer, contacts) a merge moves per call: inline first, the rest by
/// a task. Each moved case may tell its followers (an event), and a call may publish at most
/// 100 events.
const MERGE_INLINE: u32 = 80;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeInput {
    /// The survivor's id.
    into: u64,
}

/// What a merge moves from one record to another, chunk by chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Merging {
    Contact,
    Customer,
}

/// Where a merge task is: what it merges, from and into which record, who asked, and
/// whether it still moves contacts (a customer's) before cases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergeChunk {
    pub merging: Merging,
    pub from: u64,
    pub into: u64,
    pub by: String,
    pub contacts_done: bool,
}

/// Merges duplicate contact `{id}` into `into`: its emails (and the mail they thread),
/// phones and cases go to the survivor, each moved case says so on its timeline, and the
/// duplicate only points to the survivor from then on. Nothing is deleted.
pub fn merge_contact(req: &Request) -> Result<Response, Error> {
    let input: MergeInput = req.json()?;
    let from = id_param(req, "contact")?;
    let mut loser = load_contact(from)?;
    let mut survivor = load_contact(input.into)?;
    check_mergeable(from, input.into, loser.value.merged_into, survivor.value.merged_into, "contact")?;
    let mut emails = survivor.value.emails.clone();
    for e in &loser.value.emails {
        if !emails.contains(e) {
            emails.push(e.clone());
        }
    }
    if emails.len() > model::EMAILS_MAX {
        return Err(Error::invalid(
            "too-many-emails",
            format!("together they have {} addresses; a contact has at most {}", emails.len(), model::EMAILS_MAX),
        ));
    }
    for e in &loser.value.emails {
        CONTACT_EMAILS.upsert(e, &EmailOwner { contact: input.into })?;
    }
    survivor.value.emails = emails;
    for p in std::mem::take(&mut loser.value.phones) {
        if !survivor.value.phones.contains(&p) {
            survivor.value.phones.push(p);
        }
    }
    survivor.value.customer = survivor.value.customer.or(loser.value.customer);
    loser.value.emails.clear();
    loser.value.merged_into = Some(input.into);
    CONTACTS.update(&loser.key, &loser.value, loser.version)?;
    let version = CONTACTS.update(&survivor.key, &survivor.value, survivor.version)?;
    let chunk = MergeChunk {
        merging: Merging::Contact,
        from,
        into: input.into,
        by: req.caller.user_id.clone(),
        contacts_done: true,
    };
    let (moved, task) = merge_inline(chunk)?;
    Ok(Response::json(200, &serde_json::json!({ "survivor": survivor.value, "cases_moved": moved, "task": task }))?
        .with_version(version))
}

/// Merges duplicate customer `{id}` into `into`: its contacts and cases go to the survivor
/// (each moved case says so on its timeline); the duplicate only points to the survivor.
pub fn merge_customer(req: &Request) -> Result<Response, Error> {
    let input: MergeInput = req.json()?;
    let from = id_param(req, "customer")?;
    let mut loser = load_customer(from)?;
    let survivor = load_customer(input.into)?;
    check_mergeable(from, input.into, loser.value.merged_into, survivor.value.merged_into, "customer")?;
    loser.value.merged_into = Some(input.into);
    CUSTOMERS.update(&loser.key, &loser.value, loser.version)?;
    let chunk = MergeChunk {
        merging: Merging::Customer,
        from,
        into: input.into,
        by: req.caller.user_id.clone(),
        contacts_done: false,
    };
    let (moved, task) = merge_inline(chunk)?;
    Response::json(200, &serde_json::json!({ "survivor": survivor.value, "cases_moved": moved, "task": task }))
}

fn check_mergeable(from: u64, into: u64, a: Option<u64>, b: Option<u64>, what: &str) -> Result<(), Error> {
    if from == into {
        return Err(Error::invalid("merge-into-itself", format!("a {what} cannot be merged into itself")));
    }
    if let Some(to) = a {
        return Err(Error::conflict("already-merged", format!("{what} {from} was merged into {to} already")));
    }
    if let Some(to) = b {
        return Err(Error::conflict("already-merged", format!("{what} {into} was merged into {to}; merge into that")));
    }
    Ok(())
}

/// Moves the first records inline, so a small merge is whole when it answers; a task moves
/// the rest. Returns the cases moved here and the task's id, if one was needed.
fn merge_inline(chunk: MergeChunk) -> Result<(u64, Option<String>), Error> {
    let (moved, next) = merge_step(chunk)?;
    let task = match next {
        Some(next) => Some(
            keel_sdk::TaskSpec::new(
                "merge",
                &format!("Merge {:?} {} into {}", next.merging, next.from, next.into).to_lowercase(),
                &next,
            )?
            .start()?,
        ),
        None => None,
    };
    Ok((moved, task))
}

/// One chunk of a merge task.
pub fn merge_task(job: &keel_sdk::Job) -> Result<(), Error> {
    let (moved, next) = merge_step(job.payload()?)?;
    keel_sdk::task::advance(moved, next.as_ref())
}

/// Moves up to [`MERGE_INLINE`] records: a customer's contacts first, then cases. Moved
/// records no longer match the query, so each step starts from the beginning. Returns the
/// cases moved and what is left, if anything.
fn merge_step(chunk: MergeChunk) -> Result<(u64, Option<MergeChunk>), Error> {
    use crate::cases::{self, CASES};
    if chunk.merging == Merging::Customer && !chunk.contacts_done {
        let into = live_customer(chunk.into)?.value.id;
        let page = CONTACTS.query().filter("customer", chunk.from).limit(MERGE_INLINE).fetch()?;
        for mut contact in page.items {
            contact.value.customer = Some(into);
            CONTACTS.update(&contact.key, &contact.value, contact.version)?;
        }
        let contacts_done = page.next.is_none();
        return match contacts_done {
            true => merge_step(MergeChunk { contacts_done: true, ..chunk }),
            false => Ok((0, Some(chunk))),
        };
    }
    let field = match chunk.merging {
        Merging::Contact => "contact",
        Merging::Customer => "customer",
    };
    // The survivor may itself have been merged meanwhile (a task runs on): move to the end
    // of the chain.
    let into = match chunk.merging {
        Merging::Contact => live_contact(chunk.into)?.value.id,
        Merging::Customer => live_customer(chunk.into)?.value.id,
    };
    let chunk = MergeChunk { into, ..chunk };
    let page = CASES.query().filter(field, chunk.from).limit(MERGE_INLINE).fetch()?;
    let moved = page.items.len() as u64;
    let survivor_customer = match chunk.merging {
        Merging::Contact => load_contact(chunk.into)?.value.customer,
        Merging::Customer => Some(chunk.into),
    };
    let now = now_ms();
    for mut stored in page.items {
        let case = &mut stored.value;
        let (old, new) = match chunk.merging {
            Merging::Contact => (case.contact, chunk.into),
            Merging::Customer => (case.customer.unwrap_or_default(), chunk.into),
        };
        if chunk.merging == Merging::Contact {
            case.contact = chunk.into;
        }
        case.customer = survivor_customer.or(case.customer);
        let change = model::Change { field: field.into(), from: old.into(), to: new.into() };
        cases::append(
            case,
            model::EntryKind::FieldChange,
            &chunk.by,
            format!("merged into {new}"),
            None,
            Some(change),
            now,
        )?;
        CASES.update(&stored.key, &stored.value, stored.version)?;
    }
    Ok((moved, page.next.map(|_| chunk)))
}

/// Customers read to find one by name (merged ones keep their names).
const SAME_NAME_MAX: u32 = 100;

/// The customer named `name` (case-insensitively), if exactly one live customer is.
fn customer_named(name: &str) -> Result<Result<Option<u64>, usize>, Error> {
    let page = CUSTOMERS.query().filter("name_key", name.to_lowercase()).limit(SAME_NAME_MAX).fetch()?;
    let live: Vec<_> = page.items.iter().filter(|c| c.value.merged_into.is_none()).collect();
    Ok(match live.len() {
        0 => Ok(None),
        1 => Ok(Some(live[0].value.id)),
        n => Err(n),
    })
}

/// `customers`: `name`, optional `tier`. A row naming a customer that exists is reported, so
/// a file imported twice adds nothing.
pub fn import_customers(batch: &ImportBatch) -> Result<Vec<RowProblem>, Error> {
    let mut problems = Vec::new();
    for row in &batch.rows {
        let result = (|| -> Result<Result<(), RowProblem>, Error> {
            let cells = match row.cells(&["name", "tier"]) {
                Ok(c) => c,
                Err(p) => return Ok(Err(p)),
            };
            let name = match cells.required("name").and_then(|n| {
                model::required_line("name", &n, model::NAME_MAX).map_err(|e| cells.problem("name", e.reason))
            }) {
                Ok(n) => n,
                Err(p) => return Ok(Err(p)),
            };
            let tier = match Tier::parse(cells.text("tier").as_deref().unwrap_or("standard")) {
                Ok(t) => t,
                Err(e) => return Ok(Err(cells.problem("tier", e.reason))),
            };
            match customer_named(&name)? {
                Ok(None) => {}
                Ok(Some(id)) => {
                    return Ok(Err(cells.problem("name", format!("a customer named `{name}` exists (id {id})"))));
                }
                Err(_) => return Ok(Err(cells.problem("name", format!("customers named `{name}` exist")))),
            }
            let customer = Customer {
                id: CUSTOMER_IDS.next()?,
                name_key: name.to_lowercase(),
                name,
                tier,
                created_at: now_ms(),
                merged_into: None,
            };
            CUSTOMERS.insert(&model::record_key(customer.id), &customer)?;
            Ok(Ok(()))
        })()?;
        if let Err(p) = result {
            problems.push(p);
        }
    }
    Ok(problems)
}

/// `contacts`: `name`, optional `emails` and `phones` (`;`-separated) and `customer` (a
/// customer's name). An address another contact (or an earlier row) has is reported.
pub fn import_contacts(batch: &ImportBatch) -> Result<Vec<RowProblem>, Error> {
    let mut problems = Vec::new();
    for row in &batch.rows {
        let result = (|| -> Result<Result<(), RowProblem>, Error> {
            let cells = match row.cells(&["name", "emails", "phones", "customer"]) {
                Ok(c) => c,
                Err(p) => return Ok(Err(p)),
            };
            let checked = (|| {
                let name = model::required_line("name", &cells.required("name")?, model::NAME_MAX)
                    .map_err(|e| cells.problem("name", e.reason))?;
                let emails = emails(&cells.list("emails")).map_err(|e| cells.problem("emails", e.reason))?;
                let phones = phones(&cells.list("phones")).map_err(|e| cells.problem("phones", e.reason))?;
                Ok::<_, RowProblem>((name, emails, phones))
            })();
            let (name, emails, phones) = match checked {
                Ok(v) => v,
                Err(p) => return Ok(Err(p)),
            };
            let customer = match cells.text("customer") {
                None => None,
                Some(company) => match customer_named(&company)? {
                    Ok(Some(id)) => Some(id),
                    Ok(None) => return Ok(Err(cells.problem("customer", format!("no customer is named `{company}`")))),
                    Err(_) => {
                        return Ok(Err(cells.problem("customer", format!("several customers are named `{company}`"))));
                    }
                },
            };
            for email in &emails {
                if let Some(owner) = CONTACT_EMAILS.get(email)? {
                    return Ok(Err(cells
                        .problem("emails", format!("`{email}` belongs to contact {} already", owner.value.contact))));
                }
            }
            let contact = Contact {
                id: CONTACT_IDS.next()?,
                name,
                emails,
                phones,
                customer,
                created_at: now_ms(),
                merged_into: None,
            };
            for email in &contact.emails {
                CONTACT_EMAILS.insert(email, &EmailOwner { contact: contact.id })?;
            }
            CONTACTS.insert(&model::record_key(contact.id), &contact)?;
            Ok(Ok(()))
        })()?;
        if let Err(p) = result {
            problems.push(p);
        }
    }
    Ok(problems)
}

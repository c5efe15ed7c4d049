//! Customers (companies, with a support tier) and contacts (people, with their emails and
//! phones, maybe of a customer). Each email belongs to one contact: `contact_emails` maps it
//! to the contact, created only if absent, so two deliveries from a new sender make one.

use crate::model::{self, Contact, Customer, FieldError, Tier};
use crate::{DEFAULT_PAGE, MAX_PAGE, invalid, now_ms};
use keel_sdk::{Collection, Error, Request, Response, Sequence, Versioned};
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

/// The tier a contact's cases are served at: their customer's, else standard.
pub fn tier_of(contact: &Contact) -> Result<Tier, Error> {
    match contact.customer {
        Some(id) => Ok(CUSTOMERS.get(&model::record_key(id))?.map_or(Tier::Standard, |c| c.value.tier)),
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
    let customer = Customer {
        id: CUSTOMER_IDS.next()?,
        name: model::required_line("name", &input.name, model::NAME_MAX).map_err(invalid)?,
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
    }
    if let Some(tier) = patch.tier {
        stored.value.tier = Tier::parse(&tier).map_err(invalid)?;
    }
    let version = CUSTOMERS.update(&stored.key, &stored.value, stored.version)?;
    Ok(Response::json(200, &stored.value)?.with_version(version))
}

pub fn list_customers(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(DEFAULT_PAGE, MAX_PAGE)?;
    let mut query = CUSTOMERS.query().limit(paging.limit).cursor(paging.cursor.as_deref());
    if let Some(tier) = req.query("tier") {
        query = query.filter("tier", Tier::parse(tier).map_err(invalid)?.as_str());
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
        load_customer(customer)?;
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
            load_customer(id)?;
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
    let mut query = CONTACTS.query().limit(paging.limit).cursor(paging.cursor.as_deref());
    if let Some(customer) = req.query("customer") {
        let id = model::parse_number(customer)
            .ok_or_else(|| Error::invalid("invalid-field", format!("`customer` `{customer}` is not an id")))?;
        query = query.filter("customer", id);
    }
    let page = query.fetch()?;
    let items: Vec<_> = page.items.into_iter().map(|c| c.value).collect();
    Response::page(&items, page.next.as_deref())
}

/// The contact who owns `email`, or a new one named `name` (else the address's local part).
/// Returns it and whether it was created.
pub fn contact_for_email(email: &str, name: Option<&str>) -> Result<(Contact, bool), Error> {
    if let Some(owner) = CONTACT_EMAILS.get(email)? {
        let mut contact = load_contact(owner.value.contact)?.value;
        // A merged contact forwards to its survivor.
        while let Some(survivor) = contact.merged_into {
            contact = load_contact(survivor)?.value;
        }
        return Ok((contact, false));
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

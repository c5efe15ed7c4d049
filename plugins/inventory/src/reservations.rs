//! Reservations: stock held for a reference (an order, a ticket) until it is issued,
//! released, or its time runs out. Available = on hand − reserved, per place.
//!
//! A reservation is taken in the same serializable unit as the balance it checks, so two
//! callers cannot both reserve the last units. An expired reservation stops holding stock at
//! once: any movement or reservation that finds stock short releases the item's expired
//! reservations first, and the `expire-reservations` schedule sweeps the rest.

use crate::master::{Tracking, usable_location, valid_code};
use crate::num::Qty;
use crate::stock::{Posting, insufficient};
use crate::{now_ms, time};
use keel_sdk::{Collection, Error, Request, Response, Sequence};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub const RESERVATIONS: Collection<Reservation> = Collection::new("reservations");
const RESERVATION_NUMBERS: Sequence = Sequence::new("reservation");
/// The longest a reservation may hold stock: a year.
const MAX_HOLD_MS: i64 = 366 * 86_400_000;
/// Expired reservations released in one call (each frees its lots' balances: a few writes).
const SWEEP: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Active,
    /// Issued in full.
    Consumed,
    Released,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    pub qty: Qty,
    /// What is still held (less what was issued).
    pub left: Qty,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub number: u64,
    pub item: String,
    pub location: String,
    pub reference: String,
    pub state: State,
    pub expires_at: i64,
    /// RFC 3339, indexed.
    pub expires: String,
    pub lines: Vec<Held>,
    pub created_by: String,
    pub created_at: u64,
}

impl Reservation {
    fn to_json(&self) -> Value {
        let left = self.lines.iter().fold(Qty::ZERO, |sum, l| sum + l.left);
        json!({
            "number": self.number,
            "item": self.item,
            "location": self.location,
            "reference": self.reference,
            "state": self.state,
            "expires": self.expires,
            "qty": self.lines.iter().fold(Qty::ZERO, |sum, l| sum + l.qty).to_string(),
            "left": left.to_string(),
            "lines": self.lines.iter().map(|l| json!({ "lot": l.lot, "qty": l.qty.to_string(), "left": l.left.to_string() })).collect::<Vec<_>>(),
            "created_by": self.created_by,
        })
    }
}

pub fn key(number: u64) -> String {
    format!("{number:012}")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveInput {
    item: String,
    location: String,
    qty: String,
    #[serde(default)]
    uom: Option<String>,
    #[serde(default)]
    lot: Option<String>,
    reference: String,
    /// RFC 3339.
    expires: String,
}

/// `POST /reservations`: holds stock of an item at a location for a reference.
pub fn create(req: &Request) -> Result<Response, Error> {
    let input: ReserveInput = req.json()?;
    let mut posting = Posting::new();
    let now = posting.now;
    let item = match posting.item(&input.item) {
        Ok(item) => item.clone(),
        Err(e) if e.code() == "unknown-item" => return Err(Error::invalid("unknown-item", e.detail()).at_field("item")),
        Err(e) => return Err(e),
    };
    if !item.active {
        return Err(Error::invalid("inactive-item", format!("`{}` is not active", item.sku)).at_field("item"));
    }
    let location = usable_location(&input.location).map_err(|e| e.at_field("location"))?;
    let uom = input.uom.clone().unwrap_or_else(|| item.base_uom.clone());
    let factor = item
        .factor(&uom)
        .ok_or_else(|| Error::invalid("unknown-unit", format!("`{}` has no unit `{uom}`", item.sku)).at_field("uom"))?;
    let qty = Qty::parse(&input.qty)
        .and_then(|q| q.times_factor(factor))
        .filter(|q| q.0 > 0 && *q <= crate::num::MAX_LINE_QTY)
        .ok_or_else(|| {
            Error::invalid("invalid-qty", "a quantity is a number more than zero, 3 decimals at most").at_field("qty")
        })?;
    if item.tracking == Tracking::Serial && !qty.is_whole() {
        return Err(Error::invalid("invalid-qty", "serial numbers are reserved in whole units").at_field("qty"));
    }
    let reference = input.reference.trim();
    if reference.is_empty() || reference.chars().count() > 200 || reference.chars().any(char::is_control) {
        return Err(Error::invalid("invalid-reference", "a reference is 1-200 characters").at_field("reference"));
    }
    let expires_at = time::parse(&input.expires)
        .ok_or_else(|| Error::invalid("invalid-time", "`expires` is an RFC 3339 time").at_field("expires"))?;
    if expires_at <= now || expires_at > now + MAX_HOLD_MS {
        return Err(
            Error::invalid("invalid-expiry", "a reservation expires in the future, within a year").at_field("expires")
        );
    }
    if let Some(lot) = &input.lot
        && (item.tracking == Tracking::None || !valid_code(lot))
    {
        return Err(Error::invalid("invalid-lot", format!("`{lot}` is not a lot of `{}`", item.sku)).at_field("lot"));
    }
    let picks = match &input.lot {
        Some(lot) => vec![(Some(lot.clone()), qty)],
        None => match posting.pick(&item.sku, &location.id, qty, time::day_of(now)) {
            Err(e) if e.code() == "insufficient-stock" && release_expired(&mut posting, &item.sku)? => {
                posting.pick(&item.sku, &location.id, qty, time::day_of(now))?
            }
            other => other?,
        },
    };
    let mut lines = Vec::new();
    for (lot, q) in picks {
        let mut balance = posting.balance(&item.sku, &location.id, lot.as_deref())?.clone();
        if balance.available() < q && release_expired(&mut posting, &item.sku)? {
            balance = posting.balance(&item.sku, &location.id, lot.as_deref())?.clone();
        }
        if balance.available() < q {
            let why = format!("{} on hand, {} of it reserved", balance.on_hand, balance.reserved);
            return Err(
                insufficient(&item.sku, &location.id, lot.as_deref(), q - balance.available(), &why).at_field("qty")
            );
        }
        posting.hold(&item.sku, &location.id, lot.as_deref(), q)?;
        lines.push(Held { lot, qty: q, left: q });
    }
    let number = RESERVATION_NUMBERS.next()?;
    let reservation = Reservation {
        number,
        item: item.sku.clone(),
        location: location.id.clone(),
        reference: reference.to_owned(),
        state: State::Active,
        expires_at,
        expires: time::format(expires_at),
        lines,
        created_by: req.caller.user_id.clone(),
        created_at: now as u64,
    };
    posting.finish()?;
    RESERVATIONS.insert(&key(number), &reservation)?;
    Response::json(201, &reservation.to_json())
}

fn load(req: &Request) -> Result<(u64, keel_sdk::Versioned<Reservation>), Error> {
    let number: u64 = req
        .param("number")?
        .parse()
        .map_err(|_| Error::not_found("unknown-reservation", "there is no such reservation"))?;
    let stored = RESERVATIONS
        .get(&key(number))?
        .ok_or_else(|| Error::not_found("unknown-reservation", format!("there is no reservation {number}")))?;
    Ok((number, stored))
}

pub fn get(req: &Request) -> Result<Response, Error> {
    let (_, stored) = load(req)?;
    let mut reservation = stored.value;
    if reservation.state == State::Active && reservation.expires_at <= now_ms() as i64 {
        reservation.state = State::Expired;
    }
    Response::json(200, &reservation.to_json())
}

/// `GET /reservations?item=&reference=&state=`.
pub fn list(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(50, 500)?;
    let mut query = RESERVATIONS.query().limit(paging.limit).cursor(paging.cursor.as_deref());
    for field in ["item", "reference", "state", "location"] {
        if let Some(value) = req.query(field) {
            query = query.eq(field, value);
        }
    }
    let page = query.fetch()?;
    let items: Vec<Value> = page.items.iter().map(|r| r.value.to_json()).collect();
    Response::page(&items, page.next.as_deref())
}

/// `POST /reservations/{number}/release`: stops holding what is left.
pub fn release(req: &Request) -> Result<Response, Error> {
    let (number, _) = load(req)?;
    let mut posting = Posting::new();
    let reservation = posting.reservation(number)?.clone();
    if reservation.state != State::Active {
        return Err(Error::conflict(
            "reservation-closed",
            format!("reservation {number} is {:?}", reservation.state).to_lowercase(),
        ));
    }
    end(&mut posting, number, State::Released)?;
    let shown = posting.reservation(number)?.to_json();
    posting.finish()?;
    Response::json(200, &shown)
}

/// Ends a reservation: what it still holds is free again.
fn end(posting: &mut Posting, number: u64, state: State) -> Result<(), Error> {
    let reservation = posting.reservation(number)?.clone();
    for line in &reservation.lines {
        if line.left.0 > 0 {
            posting.hold(&reservation.item, &reservation.location, line.lot.as_deref(), -line.left)?;
        }
    }
    let stored = posting.reservation(number)?;
    stored.state = state;
    for line in &mut stored.lines {
        line.left = Qty::ZERO;
    }
    Ok(())
}

/// Releases the item's reservations that have expired; whether there were any.
pub fn release_expired(posting: &mut Posting, sku: &str) -> Result<bool, Error> {
    let now = time::format(posting.now);
    posting.spend_query()?;
    let page = RESERVATIONS.query().eq("item", sku).eq("state", "active").le("expires", now).limit(SWEEP).fetch()?;
    let mut any = false;
    for found in page.items {
        let number = found.value.number;
        if posting.reservation(number)?.state == State::Active {
            end(posting, number, State::Expired)?;
            any = true;
        }
    }
    Ok(any)
}

/// The `expire-reservations` schedule: ends reservations whose time has run out.
pub fn sweep() -> Result<(), Error> {
    let mut posting = Posting::new();
    let now = time::format(posting.now);
    let page =
        RESERVATIONS.query().eq("state", "active").le("expires", now).order_by("expires").limit(SWEEP).fetch()?;
    for found in page.items {
        end(&mut posting, found.value.number, State::Expired)?;
    }
    posting.finish()?;
    Ok(())
}

/// An issue against a reservation: which lots it takes, how much, and how much of each
/// comes out of the reservation (all of it).
pub fn take(
    posting: &mut Posting,
    number: u64,
    sku: &str,
    location: &str,
    want: Qty,
    lot: Option<&str>,
) -> Result<Vec<(Option<String>, Qty, Qty)>, Error> {
    let now = posting.now;
    let reservation = posting.reservation(number)?;
    if reservation.item != sku || reservation.location != location {
        return Err(Error::invalid(
            "reservation-mismatch",
            format!("reservation {number} holds `{}` at `{}`", reservation.item, reservation.location),
        ));
    }
    if reservation.state != State::Active || reservation.expires_at <= now {
        let state = if reservation.state == State::Active { State::Expired } else { reservation.state };
        return Err(Error::conflict(
            "reservation-closed",
            format!("reservation {number} is {}", serde_json::to_value(state)?.as_str().unwrap_or("closed")),
        ));
    }
    let left = reservation
        .lines
        .iter()
        .filter(|l| lot.is_none() || l.lot.as_deref() == lot)
        .fold(Qty::ZERO, |s, l| s + l.left);
    if want > left {
        return Err(Error::conflict("exceeds-reservation", format!("reservation {number} holds {left}, not {want}")));
    }
    let mut picks = Vec::new();
    let mut rest = want;
    for line in reservation.lines.iter_mut().filter(|l| lot.is_none() || l.lot.as_deref() == lot) {
        if rest.0 == 0 {
            break;
        }
        let q = line.left.min(rest);
        if q.0 > 0 {
            line.left -= q;
            rest -= q;
            picks.push((line.lot.clone(), q, q));
        }
    }
    if reservation.lines.iter().all(|l| l.left.0 == 0) {
        reservation.state = State::Consumed;
    }
    Ok(picks)
}

//! Reports: stock value per item, optionally within a warehouse or location, as of any time;
//! lots expiring within N days.
//!
//! An item is valued as a whole (moving average or FIFO over all its places); the value of
//! the part of it in a warehouse or location is that quantity at the item's unit cost at the
//! time, so the places' values add up to the item's (to the rounding of each).

use crate::journal::Journal;
use crate::master::{ITEMS, LOCATIONS};
use crate::num::{Money, Qty};
use crate::stock::{BALANCES, loader};
use crate::{HEADS, now_ms, time};
use keel_sdk::{Error, Request, Response};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// `GET /reports/valuation?at=&warehouse=&location=&category=`: a page of items with their
/// quantity, value and unit cost as of `at` (now by default), within the warehouse or the
/// location's subtree when given.
pub fn valuation(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(50, 200)?;
    let at = match req.query("at") {
        Some(text) => time::parse(text)
            .ok_or_else(|| Error::invalid("invalid-time", "`at` is an RFC 3339 time").at_field("at"))?,
        None => i64::MAX,
    };
    let scope = match (req.query("warehouse"), req.query("location")) {
        (Some(_), Some(_)) => return Err(Error::invalid("invalid-filter", "give a warehouse or a location, not both")),
        (Some(warehouse), None) => Some(("warehouse", warehouse.to_owned())),
        (None, Some(location)) => {
            let found = LOCATIONS.get(location)?.ok_or_else(|| {
                Error::invalid("unknown-location", format!("there is no location `{location}`")).at_field("location")
            })?;
            Some(("path", found.value.path))
        }
        (None, None) => None,
    };
    let mut query = ITEMS.query().limit(paging.limit).cursor(paging.cursor.as_deref());
    if let Some(category) = req.query("category") {
        query = query.eq("category", category);
    }
    let page = query.fetch()?;
    let mut rows = Vec::new();
    let (mut total, mut pending_any) = (Money::ZERO, false);
    for item in &page.items {
        let sku = item.key.as_str();
        let Some(head) = HEADS.get(sku)?.map(|h| h.value) else { continue };
        let pending = head.dirty_from.is_some_and(|d| d.0 <= at);
        let mut journal = Journal::new(head);
        let whole = journal.valuation_at((at, u64::MAX), &mut loader(sku))?;
        let (qty, value) = match &scope {
            None => (whole.qty, whole.value),
            Some((field, value)) => {
                let qty = scoped_qty(&mut journal, sku, field, value, at)?;
                let value = if qty == whole.qty { whole.value } else { whole.unit_cost().of(qty) };
                (qty, value)
            }
        };
        if qty.0 == 0 && value.0 == 0 {
            continue;
        }
        total += value;
        pending_any |= pending;
        rows.push(json!({
            "item": sku,
            "name": item.value.name,
            "qty": qty.to_string(),
            "uom": item.value.base_uom,
            "unit_cost": whole.unit_cost().to_string(),
            "value": value.to_string(),
            "revaluation_pending": pending,
        }));
    }
    Response::json(
        200,
        &json!({
            "at": (at != i64::MAX).then(|| time::format(at)),
            "items": rows,
            "page_value": total.to_string(),
            "revaluation_pending": pending_any,
            "next": page.next,
        }),
    )
}

/// The item's quantity within a warehouse (`field` "warehouse") or a location's subtree
/// ("path") as of `at`: what its places there hold now, less their entries after `at`.
fn scoped_qty(journal: &mut Journal, sku: &str, field: &str, value: &str, at: i64) -> Result<Qty, Error> {
    let (mut qty, mut places) = (Qty::ZERO, BTreeSet::new());
    let mut cursor: Option<String> = None;
    loop {
        let mut query = BALANCES.query().eq("item", sku).limit(1000).cursor(cursor.as_deref());
        query = if field == "warehouse" { query.eq("warehouse", value) } else { query.prefix("path", value) };
        let page = query.fetch()?;
        for b in &page.items {
            // A prefix of `WH1/A` also matches `WH1/AB`: only the path itself or below it.
            if field == "path" && b.value.path != value && !b.value.path.starts_with(&format!("{value}/")) {
                continue;
            }
            qty += b.value.on_hand;
            places.insert(b.value.location.clone());
        }
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    if at != i64::MAX && !places.is_empty() {
        let ids: Vec<u32> = journal.head.chunks.iter().filter(|c| c.last.0 > at).map(|c| c.id).collect();
        for id in ids {
            // Scanned, not kept: the tail after an early date can be long.
            let chunk = crate::journal::checked(&journal.head, id, &mut loader(sku))?;
            for e in chunk.entries.iter().filter(|e| e.t > at && places.contains(&e.l)) {
                qty -= e.q;
            }
        }
    }
    Ok(qty)
}

/// `GET /reports/expiring?days=30&warehouse=`: lots in stock whose expiry is within `days`
/// (expired ones first), soonest first.
pub fn expiring(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(100, 1000)?;
    let days: i64 = match req.query("days") {
        None => 30,
        Some(text) => text.parse().ok().filter(|d| (0..=3650).contains(d)).ok_or_else(|| {
            Error::invalid("invalid-days", "`days` is a whole number from 0 to 3650").at_field("days")
        })?,
    };
    let today = time::day_of(now_ms() as i64);
    let until = time::format_date(today + days);
    let mut query = BALANCES
        .query()
        .le("expiry", until.as_str())
        .gt("on_hand", 0)
        .order_by("expiry")
        .limit(paging.limit)
        .cursor(paging.cursor.as_deref());
    if let Some(warehouse) = req.query("warehouse") {
        query = query.eq("warehouse", warehouse);
    }
    let page = query.fetch()?;
    let today = time::format_date(today);
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|b| {
            let mut row = b.value.to_json();
            row["expired"] = json!(b.value.expiry.as_deref().is_some_and(|e| e < today.as_str()));
            row
        })
        .collect();
    Response::page(&items, page.next.as_deref())
}

//! Reorder: each item may have a reorder point and quantity per warehouse. The `reorder-check`
//! schedule compares each with the warehouse's available stock (on hand − reserved) and, when
//! it is at or below the point, opens a suggestion and publishes `inventory.stock.low` — once
//! per crossing: not again until stock has gone back above the point.
//!
//! The suggested quantity is the smallest multiple of the reorder quantity that brings the
//! available stock above the point (point 100, quantity 50, 10 available: 100).

use crate::master::{ITEMS, Item, Reorder};
use crate::num::Qty;
use crate::stock::BALANCES;
use crate::{now_ms, time};
use keel_sdk::{Collection, Error, Job, Request, Response, TaskSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `{sku}|{warehouse}`: whether the item is low there now (the crossing already reported).
pub const LEVELS: Collection<Level> = Collection::new("levels");
/// `{sku}|{warehouse}|{crossing}`: what a crossing suggested.
pub const SUGGESTIONS: Collection<Suggestion> = Collection::new("suggestions");
pub const CHECK: &str = "reorder-check";
/// Items checked per chunk of the check: each reads a page of its places, and a chunk may
/// re-check at most 100 query pages at commit.
const ITEMS_PER_CHUNK: u32 = 40;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    pub low: bool,
    /// Crossings so far: the number of the last suggestion.
    pub crossings: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SuggestionState {
    Open,
    Dismissed,
    /// Stock went back above the point.
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suggestion {
    pub id: String,
    pub item: String,
    pub warehouse: String,
    pub state: SuggestionState,
    pub available: Qty,
    pub point: Qty,
    pub suggested: Qty,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<u64>,
}

impl Suggestion {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "item": self.item,
            "warehouse": self.warehouse,
            "state": self.state,
            "available": self.available.to_string(),
            "point": self.point.to_string(),
            "suggested": self.suggested.to_string(),
            "created_at": time::format(self.created_at as i64),
        })
    }
}

/// The smallest multiple of `qty` that brings `available` above `point`.
pub fn suggest(available: Qty, level: &Reorder) -> Qty {
    let needed = level.point.0 - available.0 + 1;
    let lots = (needed + level.qty.0 - 1) / level.qty.0;
    Qty(lots.max(1) * level.qty.0)
}

/// Available stock of an item per warehouse: one page for most items (a page holds 1,000
/// places).
fn available_by_warehouse(sku: &str) -> Result<std::collections::BTreeMap<String, Qty>, Error> {
    let mut totals = std::collections::BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = BALANCES.query().eq("item", sku).limit(1000).cursor(cursor.as_deref()).fetch()?;
        for b in &page.items {
            *totals.entry(b.value.warehouse.clone()).or_insert(Qty::ZERO) += b.value.available();
        }
        cursor = page.next;
        if cursor.is_none() {
            return Ok(totals);
        }
    }
}

/// Checks one item in each warehouse it has a reorder point for.
fn check_item(item: &Item) -> Result<(), Error> {
    let totals = available_by_warehouse(&item.sku)?;
    for (warehouse, level) in &item.reorder {
        let available = totals.get(warehouse).copied().unwrap_or(Qty::ZERO);
        let key = format!("{}|{warehouse}", item.sku);
        let stored = LEVELS.get(&key)?;
        let mut state = stored.as_ref().map(|l| l.value.clone()).unwrap_or_default();
        let low = available <= level.point;
        if low == state.low {
            continue;
        }
        let now = now_ms();
        if low {
            state.crossings += 1;
            let suggestion = Suggestion {
                id: format!("{key}|{}", state.crossings),
                item: item.sku.clone(),
                warehouse: warehouse.clone(),
                state: SuggestionState::Open,
                available,
                point: level.point,
                suggested: suggest(available, level),
                created_at: now,
                closed_at: None,
            };
            SUGGESTIONS.insert(&suggestion.id, &suggestion)?;
            keel_sdk::publish("inventory.stock.low", &suggestion.to_json())?;
        } else if let Some(open) = SUGGESTIONS.get(&format!("{key}|{}", state.crossings))?
            && open.value.state == SuggestionState::Open
        {
            let mut resolved = open.value;
            resolved.state = SuggestionState::Resolved;
            resolved.closed_at = Some(now);
            SUGGESTIONS.update(&resolved.id.clone(), &resolved, open.version)?;
        }
        state.low = low;
        LEVELS.upsert(&key, &state)?;
    }
    Ok(())
}

/// The `reorder-check` schedule: starts a task over the items with reorder points.
pub fn start_check() -> Result<(), Error> {
    TaskSpec::new(CHECK, "Check reorder points", &json!({ "cursor": null }))?.start()?;
    Ok(())
}

/// A chunk of the check.
pub fn check_chunk(job: &Job) -> Result<(), Error> {
    keel_sdk::task::walk(job, ITEMS.query().eq("has_reorder", true).limit(ITEMS_PER_CHUNK), |item| {
        check_item(&item.value)
    })
}

/// `GET /reorder-suggestions?state=&warehouse=&item=`.
pub fn list(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(50, 500)?;
    let mut query = SUGGESTIONS.query().limit(paging.limit).cursor(paging.cursor.as_deref());
    for field in ["state", "warehouse", "item"] {
        if let Some(value) = req.query(field) {
            query = query.eq(field, value);
        }
    }
    let page = query.fetch()?;
    let items: Vec<Value> = page.items.iter().map(|s| s.value.to_json()).collect();
    Response::page(&items, page.next.as_deref())
}

/// `POST /reorder-suggestions/{id}/dismiss`: no longer shown as open; the item is not
/// reported low again until its stock has gone back above the point.
pub fn dismiss(req: &Request) -> Result<Response, Error> {
    let id = req.param("id")?;
    let stored = SUGGESTIONS
        .get(id)?
        .ok_or_else(|| Error::not_found("unknown-suggestion", format!("there is no suggestion `{id}`")))?;
    let mut suggestion = stored.value;
    if suggestion.state != SuggestionState::Open {
        return Err(Error::conflict("suggestion-closed", format!("suggestion `{id}` is not open")));
    }
    suggestion.state = SuggestionState::Dismissed;
    suggestion.closed_at = Some(now_ms());
    SUGGESTIONS.update(id, &suggestion, stored.version)?;
    Response::json(200, &suggestion.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_smallest_multiple_that_clears_the_point() {
        let level = |point: i64, qty: i64| Reorder { point: Qty::units(point), qty: Qty::units(qty) };
        assert_eq!(suggest(Qty::units(10), &level(100, 50)), Qty::units(100));
        assert_eq!(suggest(Qty::units(15), &level(20, 50)), Qty::units(50));
        // Exactly at the point: one more unit is needed, so one lot.
        assert_eq!(suggest(Qty::units(20), &level(20, 12)), Qty::units(12));
        assert_eq!(suggest(Qty::ZERO, &level(24, 12)), Qty::units(36));
    }
}

//! The inventory department: items with units, lots and serials; warehouses with locations;
//! a stock ledger of receipts, issues, transfers and adjustments that never lets a place go
//! short, now or at any later time; reservations; and valuation by moving average or FIFO
//! that back-dated movements revalue exactly. Written against the public SDK only.
//!
//! - `master.rs`: items and locations;
//! - `journal.rs`: an item's ledger in time order, in chunks, and its valuation (pure);
//! - `stock.rs`: posting movements, balances, lots and serials, the stock reports;
//! - `reservations.rs`: holding stock for a reference until issued, released or expired;
//! - `counts.rs`: count sessions, posted as adjustments;
//! - `reorder.rs`: reorder points per warehouse, the check and its suggestions;
//! - `reports.rs`: valuation as of a time per item, warehouse or location; expiring lots;
//! - `imports.rs`: items and movements (opening stock) from CSV or JSON Lines.

pub mod counts;
pub mod imports;
pub mod journal;
pub mod master;
pub mod num;
pub mod reorder;
pub mod reports;
pub mod reservations;
pub mod stock;
pub mod time;

use journal::{Head, Journal};
use keel_sdk::{Collection, Error, ImportBatch, Job, Plugin, Router, RowProblem, export_plugin};
use serde::Deserialize;

/// One per item (`{sku}`): its journal's chunks and its valuation at the end.
pub const HEADS: Collection<Head> = Collection::new("heads");

/// The host's clock, ms.
pub fn now_ms() -> u64 {
    keel_sdk::services::now_ms()
}

struct Inventory;

impl Plugin for Inventory {
    fn router() -> Router {
        Router::new()
            .put("/items/{sku}", master::put_item)
            .get("/items/{sku}", master::get_item)
            .get("/items", master::list_items)
            .get("/items/{sku}/stock", stock::item_stock)
            .get("/items/{sku}/valuation", stock::item_valuation)
            .get("/items/{sku}/movements", stock::item_history)
            .post("/items/{sku}/revalue", stock::revalue_now)
            .put("/locations/{id}", master::put_location)
            .get("/locations/{id}", master::get_location)
            .get("/locations", master::list_locations)
            .post("/movements", stock::post_movement)
            .get("/movements", stock::list_movements)
            .get("/movements/{number}", stock::get_movement)
            .get("/stock", stock::list_stock)
            .post("/reservations", reservations::create)
            .get("/reservations", reservations::list)
            .get("/reservations/{number}", reservations::get)
            .post("/reservations/{number}/release", reservations::release)
            .post("/counts", counts::start)
            .get("/counts", counts::list)
            .get("/counts/{number}", counts::get)
            .post("/counts/{number}/lines", counts::record)
            .post("/counts/{number}/post", counts::post)
            .post("/counts/{number}/cancel", counts::cancel)
            .get("/reorder-suggestions", reorder::list)
            .post("/reorder-suggestions/{id}/dismiss", reorder::dismiss)
            .get("/reports/valuation", reports::valuation)
            .get("/reports/expiring", reports::expiring)
    }

    fn import_rows(batch: &ImportBatch) -> Result<Vec<RowProblem>, Error> {
        match batch.name.as_str() {
            "items" => imports::items(batch),
            "opening-stock" => imports::movements(batch, true),
            "movements" => imports::movements(batch, false),
            other => Err(Error::invalid("unknown-import", format!("inventory has no import `{other}`"))),
        }
    }

    fn run_job(job: &Job) -> Result<(), Error> {
        match job.name.as_str() {
            "revalue" => revalue(job),
            "expire-reservations" if job.scheduled => reservations::sweep(),
            reorder::CHECK if job.scheduled => reorder::start_check(),
            reorder::CHECK => reorder::check_chunk(job),
            other => Err(Error::invalid("unknown-job", format!("inventory runs no job `{other}`"))),
        }
    }
}

export_plugin!(Inventory);

#[derive(Deserialize)]
struct RevalueTask {
    item: String,
}

/// A chunk of an item's revaluation: works out costs from the earliest stale entry for
/// about [`stock::revalue_budget`] entries, and goes on until the journal is clean. The
/// stale point is kept in the item's head, committed with each chunk's costs, so a chunk
/// that is run again (after a crash) or a back-dated movement posted meanwhile (which moves
/// the stale point back) never leaves an entry unvalued.
fn revalue(job: &Job) -> Result<(), Error> {
    let task: RevalueTask = job.payload()?;
    let sku = task.item.as_str();
    let Some(head) = HEADS.get(sku)? else { return Ok(()) };
    let mut journal = Journal::new(head.value);
    let before = journal.head.dirty_from;
    let done = journal.revalue(stock::revalue_budget(), &mut stock::loader(sku))?;
    let valued = match (before, journal.head.dirty_from) {
        (Some(from), Some(to)) => journal.head.entries_after(from).saturating_sub(journal.head.entries_after(to)),
        _ => 0,
    };
    journal.head.revaluing_since = if done { None } else { Some(now_ms()) };
    journal.mark_head();
    stock::write_journal(sku, &journal)?;
    if !done {
        keel_sdk::task::advance(valued, Some(&serde_json::json!({ "item": sku })))?;
    }
    Ok(())
}

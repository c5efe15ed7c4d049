//! Posting movements: receipts, issues, transfers and adjustments become entries in their
//! items' journals and change the balances of the places they touch, in one unit of work.
//!
//! A movement is refused whole if any entry would leave a place (item, location, lot) short:
//! now (on-hand below what is reserved) or at any later point of its journal (a back-dated
//! issue). The check and the writes share the call's serializable unit of work, so two
//! issues of the last units cannot both land: the loser is run again on the new balance.

use crate::journal::{Chunk, Entry, Head, Journal, Key, Kind};
use crate::master::{ITEMS, Item, Removal, Tracking, unknown_item, usable_location, valid_code};
use crate::num::{Money, Qty};
use crate::reservations::{self, RESERVATIONS, Reservation};
use crate::{HEADS, now_ms, time};
use keel_sdk::{Collection, Error, Request, Response, Sequence, TaskSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::btree_map::Entry as Slot;
use std::collections::{BTreeMap, BTreeSet};

pub const BALANCES: Collection<Balance> = Collection::new("balances");
pub const LOTS: Collection<Lot> = Collection::new("lots");
pub const MOVEMENTS: Collection<Movement> = Collection::new("movements");
pub const JOURNAL: Collection<Chunk> = Collection::new("journal");
const MOVEMENT_NUMBERS: Sequence = Sequence::new("movement");

/// Journal chunks one page of an item's history reads at most.
const HISTORY_SCAN_CHUNKS: usize = 50;

/// Lines one movement may carry.
pub const MAX_LINES: usize = 200;
/// A back-dated movement with at most this many later entries of its item is revalued in
/// its own call; past it, by a `revalue` task.
pub const INLINE_REVALUE: u64 = 2_000;
/// Entries one chunk of a `revalue` task works through (the `revalue-chunk` setting).
pub fn revalue_budget() -> usize {
    keel_sdk::services::config("revalue-chunk").and_then(|v| v.parse().ok()).unwrap_or(20_000)
}
/// How far in the future an effective time may be (clocks differ a little).
const FUTURE_SLACK_MS: i64 = 60_000;
/// Nothing is dated before 2000-01-01.
const EARLIEST_MS: i64 = 946_684_800_000;

/// What one place (item, location, lot) holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub item: String,
    pub location: String,
    pub warehouse: String,
    /// The location's path, so a zone's stock is a prefix query.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    /// The lot's expiry (`YYYY-MM-DD`), for FEFO and the expiring report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<String>,
    /// When the lot first came in (ms), for FIFO picking.
    pub in_at: i64,
    pub on_hand: Qty,
    pub reserved: Qty,
    /// The latest effective time of any entry here: a movement dated earlier has later
    /// entries to respect.
    pub last_at: i64,
    /// How many entries have changed it: a count line remembers it, and one that no longer
    /// matches was counted before stock moved.
    #[serde(default)]
    pub moves: u64,
}

impl Balance {
    pub fn available(&self) -> Qty {
        self.on_hand - self.reserved
    }

    pub fn to_json(&self) -> Value {
        json!({
            "item": self.item,
            "location": self.location,
            "warehouse": self.warehouse,
            "lot": self.lot,
            "expiry": self.expiry,
            "on_hand": self.on_hand.to_string(),
            "reserved": self.reserved.to_string(),
            "available": self.available().to_string(),
        })
    }
}

pub fn balance_key(item: &str, location: &str, lot: Option<&str>) -> String {
    format!("{item}|{location}|{}", lot.unwrap_or(""))
}

/// A lot or serial number of an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    pub item: String,
    pub lot: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<String>,
    /// When it first came in (effective time, ms).
    pub first_at: i64,
    /// Serial numbers: where the unit is (none when not in stock) and the key of its last
    /// entry (a serial moves in time order only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Key>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MovementKind {
    Receipt,
    Issue,
    Transfer,
    Adjustment,
}

/// A posted movement, as recorded; its entries (and their current costs) are in the
/// journals, found by `seqs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    pub number: u64,
    pub kind: MovementKind,
    /// Effective time, RFC 3339 UTC (indexed) and in ms.
    pub at: String,
    pub at_ms: i64,
    pub actor: String,
    pub actor_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub recorded_at: u64,
    pub lines: Vec<PostedLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedLine {
    pub item: String,
    /// As entered, in `uom`.
    pub qty: Qty,
    pub uom: String,
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_cost: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<u64>,
    /// The journal entries this line made (seqs in the item's journal).
    pub seqs: Vec<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovementInput {
    pub kind: MovementKind,
    #[serde(default)]
    pub at: Option<String>,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    pub lines: Vec<LineInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineInput {
    pub item: String,
    pub qty: String,
    #[serde(default)]
    pub uom: Option<String>,
    pub location: String,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub lot: Option<String>,
    #[serde(default)]
    pub expiry: Option<String>,
    #[serde(default)]
    pub unit_cost: Option<String>,
    #[serde(default)]
    pub reservation: Option<u64>,
}

/// The documents one call works on, read once and written back at the end.
pub struct Posting {
    pub now: i64,
    items: BTreeMap<String, Item>,
    journals: BTreeMap<String, Journal>,
    balances: BTreeMap<String, Balance>,
    touched: BTreeSet<String>,
    lots: BTreeMap<String, Option<Lot>>,
    touched_lots: BTreeSet<String>,
    reservations: BTreeMap<u64, Reservation>,
    budget: Budget,
}

/// What one call may spend, kept well inside the platform's limits on a writing call (100
/// re-checked query pages, 1,000 writes, 8 MiB): a movement past it is refused whole with
/// `movement-too-large` (split it, or name the lots), never half done. An import's unit of
/// work is larger.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Query pages (lot picks).
    pub queries: u32,
    /// Journal entries posted (a picked lot is one; a transfer's two sides are two).
    pub entries: u32,
    /// Later entries revalued inline, over all the call's items; past it, a task does it.
    pub revalue: u64,
    /// Later entries read to check back-dated outflows (a long tail is read once per line).
    pub scan: u64,
    /// A bulk import: journals do not merge tails into chunks written before it.
    pub bulk: bool,
}

impl Budget {
    pub const CALL: Budget = Budget { queries: 80, entries: 300, revalue: INLINE_REVALUE, scan: 400_000, bulk: false };
    pub const IMPORT: Budget =
        Budget { queries: 50_000, entries: 100_000, revalue: 20_000, scan: 2_000_000, bulk: true };
}

fn too_large(what: &str) -> Error {
    Error::invalid(
        "movement-too-large",
        format!("this movement needs more {what} than one call may take: split it (or name the lots)"),
    )
}

pub fn chunk_key(item: &str, id: u32) -> String {
    format!("{item}/{id:08}")
}

pub fn loader(item: &str) -> impl FnMut(u32) -> Result<Chunk, Error> + '_ {
    move |id| JOURNAL.get(&chunk_key(item, id))?.map(|c| c.value).ok_or_else(|| crate::journal::moved(id))
}

fn line_field(index: usize, field: &str) -> String {
    format!("lines[{index}].{field}")
}

impl Posting {
    pub fn new() -> Posting {
        Posting::with_budget(Budget::CALL)
    }

    pub fn with_budget(budget: Budget) -> Posting {
        Posting {
            budget,
            now: now_ms() as i64,
            items: BTreeMap::new(),
            journals: BTreeMap::new(),
            balances: BTreeMap::new(),
            touched: BTreeSet::new(),
            lots: BTreeMap::new(),
            touched_lots: BTreeSet::new(),
            reservations: BTreeMap::new(),
        }
    }

    pub(crate) fn spend_query(&mut self) -> Result<(), Error> {
        self.budget.queries = self.budget.queries.checked_sub(1).ok_or_else(|| too_large("lot lookups"))?;
        Ok(())
    }

    pub fn item(&mut self, sku: &str) -> Result<&Item, Error> {
        if !self.items.contains_key(sku) {
            let item = ITEMS.get(sku)?.ok_or_else(|| unknown_item(sku))?.value;
            self.items.insert(sku.to_owned(), item);
        }
        Ok(&self.items[sku])
    }

    pub fn journal(&mut self, sku: &str) -> Result<&mut Journal, Error> {
        if !self.journals.contains_key(sku) {
            let method = self.item(sku)?.valuation;
            let head = HEADS.get(sku)?.map_or_else(|| Head::new(method), |h| h.value);
            let mut journal = Journal::new(head);
            journal.merge_unwritten = !self.budget.bulk;
            self.journals.insert(sku.to_owned(), journal);
        }
        Ok(self.journals.get_mut(sku).expect("just loaded"))
    }

    pub fn balance(&mut self, item: &str, location: &str, lot: Option<&str>) -> Result<&mut Balance, Error> {
        let key = balance_key(item, location, lot);
        if !self.balances.contains_key(&key) {
            let balance = match BALANCES.get(&key)? {
                Some(b) => b.value,
                None => {
                    let place = usable_location(location)?;
                    let (expiry, in_at) = match lot {
                        Some(lot) => self.lot(item, lot)?.map_or((None, 0), |l| (l.expiry.clone(), l.first_at)),
                        None => (None, 0),
                    };
                    Balance {
                        item: item.to_owned(),
                        location: location.to_owned(),
                        warehouse: place.warehouse,
                        path: place.path,
                        lot: lot.map(str::to_owned),
                        expiry,
                        in_at,
                        on_hand: Qty::ZERO,
                        reserved: Qty::ZERO,
                        last_at: i64::MIN,
                        moves: 0,
                    }
                }
            };
            self.balances.insert(key.clone(), balance);
        }
        Ok(self.balances.get_mut(&key).expect("just loaded"))
    }

    fn lot(&mut self, item: &str, lot: &str) -> Result<Option<&Lot>, Error> {
        let key = format!("{item}|{lot}");
        if !self.lots.contains_key(&key) {
            let stored = LOTS.get(&key)?.map(|l| l.value);
            self.lots.insert(key.clone(), stored);
        }
        Ok(self.lots[&key].as_ref())
    }

    fn set_lot(&mut self, lot: Lot) {
        let key = format!("{}|{}", lot.item, lot.lot);
        self.touched_lots.insert(key.clone());
        self.lots.insert(key, Some(lot));
    }

    pub fn reservation(&mut self, number: u64) -> Result<&mut Reservation, Error> {
        Ok(match self.reservations.entry(number) {
            Slot::Occupied(slot) => slot.into_mut(),
            Slot::Vacant(slot) => {
                let stored = RESERVATIONS.get(&reservations::key(number))?.ok_or_else(|| {
                    Error::invalid("unknown-reservation", format!("there is no reservation {number}"))
                })?;
                slot.insert(stored.value)
            }
        })
    }

    /// Places of `item` at `location` with stock free to take, in the item's removal order:
    /// FEFO by expiry then receipt, FIFO by receipt. Expired lots are not picked (name them
    /// to move them). Stock held by reservations that have expired is freed first if what is
    /// free is not enough.
    pub fn pick(
        &mut self,
        sku: &str,
        location: &str,
        want: Qty,
        on_day: i64,
    ) -> Result<Vec<(Option<String>, Qty)>, Error> {
        match self.pick_once(sku, location, want, on_day) {
            Err(e) if e.code() == "insufficient-stock" && reservations::release_expired(self, sku)? => {
                self.pick_once(sku, location, want, on_day)
            }
            other => other,
        }
    }

    fn pick_once(
        &mut self,
        sku: &str,
        location: &str,
        want: Qty,
        on_day: i64,
    ) -> Result<Vec<(Option<String>, Qty)>, Error> {
        let item = self.item(sku)?.clone();
        if item.tracking == Tracking::None {
            return Ok(vec![(None, want)]);
        }
        let today = time::format_date(on_day);
        let orders: &[&str] = match item.removal {
            Removal::Fefo => &["expiry", "in_at"],
            Removal::Fifo => &["in_at"],
        };
        let mut picks = Vec::new();
        let mut left = want;
        let mut seen = BTreeSet::new();
        'orders: for order in orders {
            let mut cursor: Option<String> = None;
            loop {
                self.spend_query()?;
                let mut query = BALANCES.query().eq("item", sku).eq("location", location).gt("on_hand", 0);
                if *order == "expiry" {
                    query = query.ge("expiry", today.as_str());
                }
                let page = query.order_by(order).limit(100).cursor(cursor.as_deref()).fetch()?;
                for found in page.items {
                    let candidate = found.value;
                    // FEFO's second pass (by receipt) is for the lots without an expiry.
                    if *order == "in_at" && item.removal == Removal::Fefo && candidate.expiry.is_some() {
                        continue;
                    }
                    if candidate.expiry.as_deref().is_some_and(|e| e < today.as_str())
                        || !seen.insert(found.key.clone())
                    {
                        continue;
                    }
                    // This call may have changed the place already: its own copy counts.
                    let lot = candidate.lot.clone();
                    self.balances.entry(found.key).or_insert(candidate);
                    let free = self.balance(sku, location, lot.as_deref())?.available();
                    if free.0 <= 0 {
                        continue;
                    }
                    let take = free.min(left);
                    picks.push((lot, take));
                    left -= take;
                    if left.0 == 0 {
                        break 'orders;
                    }
                }
                cursor = page.next;
                if cursor.is_none() {
                    break;
                }
            }
        }
        if left.0 > 0 {
            let free = want - left;
            return Err(insufficient(sku, location, None, left, &format!("{free} free to take now (unexpired)")));
        }
        Ok(picks)
    }

    /// Holds (or with a negative `q`, frees) reserved stock at a place.
    pub fn hold(&mut self, sku: &str, location: &str, lot: Option<&str>, q: Qty) -> Result<(), Error> {
        let balance = self.balance(sku, location, lot)?;
        balance.reserved += q;
        self.touched.insert(balance_key(sku, location, lot));
        Ok(())
    }

    /// Posts one entry: checks that its place is never short because of it, adds it to the
    /// journal and changes the balance. `releases` is what it takes out of a reservation (an
    /// issue against one). Returns its seq.
    #[allow(clippy::too_many_arguments)]
    pub fn post(
        &mut self,
        movement: u64,
        kind: Kind,
        t: i64,
        sku: &str,
        location: &str,
        lot: Option<&str>,
        q: Qty,
        value: Option<Money>,
        releases: Qty,
    ) -> Result<u64, Error> {
        let tracking = self.item(sku)?.tracking;
        self.budget.entries = self.budget.entries.checked_sub(1).ok_or_else(|| too_large("entries"))?;
        let seq = self.journal(sku)?.next_seq();
        let key = (t, seq);
        if tracking == Tracking::Serial {
            self.serial_move(sku, lot.expect("serials are named"), location, q, key)?;
        }
        if q.0 < 0 {
            // Short now: what is on hand after it would not cover what others reserved.
            let short_now = |b: &Balance| (b.reserved - releases) - (b.on_hand + q);
            let mut balance = self.balance(sku, location, lot)?.clone();
            if short_now(&balance).0 > 0 && balance.reserved > releases && reservations::release_expired(self, sku)? {
                balance = self.balance(sku, location, lot)?.clone();
            }
            let short = short_now(&balance);
            if short.0 > 0 {
                let reserved = balance.reserved - releases;
                let why = if reserved.0 > 0 {
                    format!("{} on hand, {reserved} of it reserved", balance.on_hand)
                } else {
                    format!("{} on hand", balance.on_hand)
                };
                return Err(insufficient(sku, location, lot, short, &why));
            }
            if t < balance.last_at {
                self.check_later(sku, location, lot, key, q, balance.on_hand)?;
            }
        }
        let entry = Entry {
            s: seq,
            t,
            m: movement,
            k: kind,
            l: location.to_owned(),
            o: lot.map(str::to_owned),
            q,
            u: value,
            c: Money::ZERO,
        };
        let journal = self.journal(sku)?;
        journal.add(entry, &mut loader(sku))?;
        let balance = self.balance(sku, location, lot)?;
        balance.on_hand += q;
        balance.reserved -= releases;
        balance.last_at = balance.last_at.max(t);
        balance.moves += 1;
        self.touched.insert(balance_key(sku, location, lot));
        Ok(seq)
    }

    /// A back-dated outflow: the place's balance just before it and after every later entry
    /// must stay at or above zero with it.
    fn check_later(
        &mut self,
        sku: &str,
        location: &str,
        lot: Option<&str>,
        key: Key,
        q: Qty,
        on_hand: Qty,
    ) -> Result<(), Error> {
        let tail = self.journal(sku)?.head.entries_after(key);
        self.budget.scan =
            self.budget.scan.checked_sub(tail).ok_or_else(|| too_large("history to check (it is dated far back)"))?;
        let later = self.journal(sku)?.later_in_bucket(key, location, lot, &mut loader(sku))?;
        let worst = crate::journal::shortfall(on_hand, &later, q);
        if let Some((short, at)) = worst {
            let why = match at {
                Some(e) => format!("the balance after movement {} at {} would go below zero", e.m, time::format(e.t)),
                None => format!("the balance at {} would go below zero", time::format(key.0)),
            };
            return Err(insufficient(sku, location, lot, short, &why));
        }
        Ok(())
    }

    fn serial_move(&mut self, sku: &str, serial: &str, location: &str, q: Qty, key: Key) -> Result<(), Error> {
        let current = self.lot(sku, serial)?.cloned();
        if let Some(last) = current.as_ref().and_then(|l| l.last)
            && last > key
        {
            return Err(Error::conflict(
                "serial-moved-later",
                format!(
                    "serial `{serial}` of `{sku}` moved at {}: its movements are posted in time order",
                    time::format(last.0)
                ),
            ));
        }
        let mut lot = current.unwrap_or(Lot {
            item: sku.to_owned(),
            lot: serial.to_owned(),
            expiry: None,
            first_at: key.0,
            at: None,
            last: None,
        });
        if q.0 > 0 {
            if let Some(at) = &lot.at {
                return Err(Error::conflict(
                    "serial-in-stock",
                    format!("serial `{serial}` of `{sku}` is already in stock at `{at}`"),
                ));
            }
            lot.at = Some(location.to_owned());
        } else {
            if lot.at.as_deref() != Some(location) {
                let where_ = lot.at.as_deref().map_or("not in stock".to_owned(), |at| format!("at `{at}`"));
                return Err(Error::conflict(
                    "serial-not-here",
                    format!("serial `{serial}` of `{sku}` is {where_}, not at `{location}`"),
                ));
            }
            lot.at = None;
        }
        lot.last = Some(key);
        self.set_lot(lot);
        Ok(())
    }

    /// Lots coming in: known ones keep their expiry, new ones are recorded.
    fn receive_lot(&mut self, sku: &str, lot: &str, expiry: Option<&str>, t: i64) -> Result<(), Error> {
        match self.lot(sku, lot)?.cloned() {
            Some(known) => {
                if expiry.is_some() && known.expiry.as_deref() != expiry {
                    return Err(Error::invalid(
                        "lot-expiry-mismatch",
                        format!("lot `{lot}` of `{sku}` expires {}", known.expiry.as_deref().unwrap_or("never")),
                    )
                    .at_field("expiry"));
                }
                if t < known.first_at {
                    let mut known = known;
                    known.first_at = t;
                    self.set_lot(known);
                }
            }
            None => self.set_lot(Lot {
                item: sku.to_owned(),
                lot: lot.to_owned(),
                expiry: expiry.map(str::to_owned),
                first_at: t,
                at: None,
                last: None,
            }),
        }
        Ok(())
    }

    /// Revalues what back-dated entries made stale (inline when short, else in a task) and
    /// writes every changed document. Returns the items whose revaluation is queued.
    pub fn finish(mut self) -> Result<Posted, Error> {
        let mut queued = Vec::new();
        let mut inline = self.budget.revalue;
        for (sku, journal) in &mut self.journals {
            if let Some(from) = journal.head.dirty_from {
                let tail = journal.head.entries_after(from);
                if tail <= inline {
                    inline -= tail;
                    journal.revalue(usize::MAX, &mut loader(sku))?;
                } else {
                    queue_revaluation(sku, journal, self.now as u64)?;
                    queued.push(sku.clone());
                }
            }
            write_journal(sku, journal)?;
        }
        for key in &self.touched {
            BALANCES.upsert(key, &self.balances[key])?;
        }
        for key in &self.touched_lots {
            if let Some(lot) = &self.lots[key] {
                LOTS.upsert(key, lot)?;
            }
        }
        for (number, reservation) in &self.reservations {
            RESERVATIONS.upsert(&reservations::key(*number), reservation)?;
        }
        Ok(Posted { journals: self.journals, queued })
    }
}

impl Default for Posting {
    fn default() -> Self {
        Posting::new()
    }
}

/// How long a revaluation task may go without progress before a posting that finds its item
/// still stale starts another (one cancelled or dead-lettered must not leave it stale
/// forever; two at once only repeat work, each from the head's stale point).
const REVALUE_STALL_MS: u64 = 10 * 60_000;

/// Queues a revaluation of the item unless one is running.
pub fn queue_revaluation(sku: &str, journal: &mut Journal, now: u64) -> Result<bool, Error> {
    let running = journal.head.revaluing_since.is_some_and(|since| now < since + REVALUE_STALL_MS);
    if running {
        return Ok(false);
    }
    journal.head.revaluing_since = Some(now);
    journal.mark_head();
    let total = journal.head.dirty_from.map_or(0, |from| journal.head.entries_after(from));
    TaskSpec::new("revalue", &format!("Revalue {sku}"), &json!({ "item": sku }))?.total(total).start()?;
    Ok(true)
}

/// `POST /items/{sku}/revalue`: starts the item's revaluation now if it is due and none is
/// running (e.g. after its task was cancelled).
pub fn revalue_now(req: &Request) -> Result<Response, Error> {
    let sku = req.param("sku")?;
    ITEMS.get(sku)?.ok_or_else(|| unknown_item(sku))?;
    let Some(head) = HEADS.get(sku)? else {
        return Response::json(200, &json!({ "item": sku, "revaluation_pending": false, "started": false }));
    };
    let mut journal = Journal::new(head.value);
    if journal.head.dirty_from.is_none() {
        return Response::json(200, &json!({ "item": sku, "revaluation_pending": false, "started": false }));
    }
    // Asked for explicitly: whatever ran before is taken as stalled.
    journal.head.revaluing_since = None;
    queue_revaluation(sku, &mut journal, now_ms())?;
    write_journal(sku, &journal)?;
    Response::json(202, &json!({ "item": sku, "revaluation_pending": true, "started": true }))
}

pub fn write_journal(sku: &str, journal: &Journal) -> Result<(), Error> {
    let (head, chunks) = journal.changes();
    for (id, chunk) in chunks {
        JOURNAL.upsert(&chunk_key(sku, id), chunk)?;
    }
    for id in journal.removed() {
        JOURNAL.delete(&chunk_key(sku, id), None)?;
    }
    if let Some(head) = head {
        HEADS.upsert(sku, head)?;
    }
    Ok(())
}

/// The journals after a posting, to read the entries' costs back.
pub struct Posted {
    journals: BTreeMap<String, Journal>,
    pub queued: Vec<String>,
}

impl Posted {
    pub fn entry(&mut self, sku: &str, key: Key) -> Result<Option<Entry>, Error> {
        match self.journals.get_mut(sku) {
            Some(journal) => journal.find(key, &mut loader(sku)),
            None => Ok(None),
        }
    }
}

pub fn insufficient(sku: &str, location: &str, lot: Option<&str>, short: Qty, why: &str) -> Error {
    let place = match lot {
        Some(lot) => format!("`{location}` (lot `{lot}`)"),
        None => format!("`{location}`"),
    };
    Error::conflict("insufficient-stock", format!("{short} of `{sku}` short at {place}: {why}"))
}

fn parse_at(text: Option<&str>, now: i64) -> Result<i64, Error> {
    let Some(text) = text else { return Ok(now) };
    let t = time::parse(text).ok_or_else(|| {
        Error::invalid("invalid-time", "`at` is an RFC 3339 time with an offset, e.g. 2026-03-10T09:30:00Z")
            .at_field("at")
    })?;
    if t > now + FUTURE_SLACK_MS {
        return Err(Error::invalid("future-movement", "a movement cannot be dated in the future").at_field("at"));
    }
    if t < EARLIEST_MS {
        return Err(Error::invalid("invalid-time", "a movement is dated 2000 or later").at_field("at"));
    }
    Ok(t)
}

fn optional_text(text: Option<String>, field: &str, max: usize) -> Result<Option<String>, Error> {
    match text.map(|t| t.trim().to_owned()) {
        Some(t) if t.is_empty() => Ok(None),
        Some(t) if t.chars().count() > max || t.chars().any(char::is_control) => {
            Err(Error::invalid("invalid-text", format!("`{field}` is at most {max} characters")).at_field(field))
        }
        other => Ok(other),
    }
}

/// `POST /movements`: posts a receipt, issue, transfer or adjustment of one or more lines,
/// all or nothing.
pub fn post_movement(req: &Request) -> Result<Response, Error> {
    let input: MovementInput = req.json()?;
    let mut posting = Posting::new();
    let movement = record(&mut posting, input, &req.caller.user_id, &req.caller.display_name)?;
    let mut posted = posting.finish()?;
    let queued = posted.queued.clone();
    let body = movement_json(&movement, &mut |sku, key| posted.entry(sku, key), &queued)?;
    MOVEMENTS.insert(&movement_key(movement.number), &movement)?;
    Response::json(201, &body)
}

pub fn movement_key(number: u64) -> String {
    format!("{number:012}")
}

/// Checks a movement and posts its lines into `posting`.
pub fn record(posting: &mut Posting, input: MovementInput, actor: &str, actor_name: &str) -> Result<Movement, Error> {
    if input.lines.is_empty() || input.lines.len() > MAX_LINES {
        return Err(Error::invalid("invalid-lines", format!("a movement has 1 to {MAX_LINES} lines")).at_field("lines"));
    }
    let mut movement = open_movement(posting, input.kind, input.at, input.reference, input.reason, actor, actor_name)?;
    for (index, line) in input.lines.into_iter().enumerate() {
        let posted = post_line(posting, movement.kind, movement.number, movement.at_ms, index, line)?;
        movement.lines.push(posted);
    }
    Ok(movement)
}

/// A movement's header, checked, with its number: lines are posted into it next.
pub fn open_movement(
    posting: &Posting,
    kind: MovementKind,
    at: Option<String>,
    reference: Option<String>,
    reason: Option<String>,
    actor: &str,
    actor_name: &str,
) -> Result<Movement, Error> {
    let t = parse_at(at.as_deref(), posting.now)?;
    let reference = optional_text(reference, "reference", 200)?;
    let reason = optional_text(reason, "reason", 500)?;
    if kind == MovementKind::Adjustment && reason.is_none() {
        return Err(Error::invalid("reason-required", "an adjustment says why").at_field("reason"));
    }
    Ok(Movement {
        number: MOVEMENT_NUMBERS.next()?,
        kind,
        at: time::format(t),
        at_ms: t,
        actor: actor.to_owned(),
        actor_name: actor_name.to_owned(),
        reference,
        reason,
        recorded_at: posting.now as u64,
        lines: Vec::new(),
    })
}

/// Checks and posts one line of a movement (`index` names its fields in errors).
pub fn post_line(
    posting: &mut Posting,
    kind: MovementKind,
    number: u64,
    t: i64,
    index: usize,
    line: LineInput,
) -> Result<PostedLine, Error> {
    let field = |name: &str| line_field(index, name);
    let sku = line.item.as_str();
    let item = match posting.item(sku) {
        Ok(item) => item.clone(),
        Err(e) if e.code() == "unknown-item" => {
            return Err(Error::invalid("unknown-item", e.detail()).at_field(field("item")));
        }
        Err(e) => return Err(e),
    };
    if !item.active && kind != MovementKind::Issue && kind != MovementKind::Adjustment {
        return Err(Error::invalid("inactive-item", format!("`{sku}` is not active")).at_field(field("item")));
    }
    let uom = line.uom.clone().unwrap_or_else(|| item.base_uom.clone());
    let factor = item
        .factor(&uom)
        .ok_or_else(|| Error::invalid("unknown-unit", format!("`{sku}` has no unit `{uom}`")).at_field(field("uom")))?;
    let entered = Qty::parse(&line.qty).ok_or_else(|| {
        Error::invalid("invalid-qty", "a quantity is a number with at most 3 decimals").at_field(field("qty"))
    })?;
    let base = entered.times_factor(factor).filter(|b| b.0.abs() <= crate::num::MAX_LINE_QTY.0).ok_or_else(|| {
        Error::invalid("invalid-qty", "a line moves at most 1,000,000,000 base units").at_field(field("qty"))
    })?;
    let signed_ok = match kind {
        MovementKind::Adjustment => base.0 != 0,
        _ => base.0 > 0,
    };
    if !signed_ok {
        let rule = if kind == MovementKind::Adjustment { "not zero" } else { "more than zero" };
        return Err(
            Error::invalid("invalid-qty", format!("the quantity is {rule} (in base units)")).at_field(field("qty"))
        );
    }
    if item.tracking == Tracking::Serial && base.0.abs() != Qty::units(1).0 {
        return Err(
            Error::invalid("invalid-qty", "a serial number is one unit: one line per serial").at_field(field("qty"))
        );
    }
    let unit_cost = match &line.unit_cost {
        None => None,
        Some(text) => match Money::parse(text) {
            Some(cost) if cost.0 >= 0 => Some(cost),
            _ => {
                return Err(Error::invalid("invalid-cost", "a unit cost is a number ≥ 0, 4 decimals at most")
                    .at_field(field("unit_cost")));
            }
        },
    };
    let inflow = kind == MovementKind::Receipt || (kind == MovementKind::Adjustment && base.0 > 0);
    if kind == MovementKind::Receipt && unit_cost.is_none() {
        return Err(Error::invalid("cost-required", "a receipt gives the unit cost").at_field(field("unit_cost")));
    }
    if unit_cost.is_some_and(|cost| {
        let value = i128::from(cost.0) * i128::from(entered.0.abs()) / 1000;
        value > i128::from(crate::num::MAX_LINE_VALUE.0)
    }) {
        return Err(
            Error::invalid("invalid-cost", "a line is worth at most 1,000,000,000,000").at_field(field("unit_cost"))
        );
    }
    if !inflow && unit_cost.is_some() {
        return Err(
            Error::invalid("unexpected-cost", "only what comes in takes a unit cost").at_field(field("unit_cost"))
        );
    }
    if let Some(lot) = &line.lot
        && !valid_code(lot)
    {
        return Err(Error::invalid("invalid-lot", "a lot or serial is 1-64 letters, digits, `-`, `_` or `.`")
            .at_field(field("lot")));
    }
    if item.tracking == Tracking::None && line.lot.is_some() {
        return Err(
            Error::invalid("untracked-item", format!("`{sku}` is not tracked by lot or serial")).at_field(field("lot"))
        );
    }
    if line.expiry.is_some() && (item.tracking != Tracking::Lot || !inflow) {
        return Err(
            Error::invalid("unexpected-expiry", "an expiry comes with a lot coming in").at_field(field("expiry"))
        );
    }
    if let Some(expiry) = &line.expiry
        && time::parse_date(expiry).is_none()
    {
        return Err(Error::invalid("invalid-date", "an expiry is a date, YYYY-MM-DD").at_field(field("expiry")));
    }
    let needs_lot = item.tracking == Tracking::Serial || (item.tracking == Tracking::Lot && inflow);
    if needs_lot && line.lot.is_none() {
        let what = if item.tracking == Tracking::Serial { "a serial number" } else { "a lot" };
        return Err(Error::invalid("lot-required", format!("`{sku}` is tracked: give {what}")).at_field(field("lot")));
    }
    let location = usable_location(&line.location).map_err(|e| e.at_field(field("location")))?;
    let to = match (kind, &line.to) {
        (MovementKind::Transfer, Some(to)) if *to == location.id => {
            return Err(Error::invalid("same-location", "a transfer goes to another location").at_field(field("to")));
        }
        (MovementKind::Transfer, Some(to)) => Some(usable_location(to).map_err(|e| e.at_field(field("to")))?),
        (MovementKind::Transfer, None) => {
            return Err(Error::invalid("to-required", "a transfer says where to").at_field(field("to")));
        }
        (_, Some(_)) => return Err(Error::invalid("unexpected-to", "only a transfer has `to`").at_field(field("to"))),
        (_, None) => None,
    };
    if line.reservation.is_some() && kind != MovementKind::Issue {
        return Err(Error::invalid("unexpected-reservation", "only an issue takes from a reservation")
            .at_field(field("reservation")));
    }
    let at_field = |e: Error| if e.field().is_none() { e.at_field(field("qty")) } else { e };
    let mut seqs = Vec::new();
    if inflow {
        let lot = line.lot.as_deref();
        if let Some(lot) = lot {
            posting.receive_lot(sku, lot, line.expiry.as_deref(), t).map_err(|e| e.at_field(field("expiry")))?;
        }
        let k = if kind == MovementKind::Receipt { Kind::Receipt } else { Kind::Adjustment };
        // The value in is the quantity as entered at the unit cost as entered (a box at the
        // box's price), exact whatever the unit.
        let value = unit_cost.map(|cost| cost.of(entered));
        seqs.push(posting.post(number, k, t, sku, &location.id, lot, base, value, Qty::ZERO).map_err(at_field)?);
    } else {
        // Which lots: the one named, the reservation's, or picked by the removal strategy.
        let want = Qty(base.0.abs());
        let picks: Vec<(Option<String>, Qty, Qty)> = match (line.reservation, &line.lot) {
            (Some(number), _) => reservations::take(posting, number, sku, &location.id, want, line.lot.as_deref())
                .map_err(|e| e.at_field(field("reservation")))?,
            (None, Some(lot)) => vec![(Some(lot.clone()), want, Qty::ZERO)],
            (None, None) => posting
                .pick(sku, &location.id, want, time::day_of(t))
                .map_err(at_field)?
                .into_iter()
                .map(|(lot, q)| (lot, q, Qty::ZERO))
                .collect(),
        };
        for (lot, q, releases) in picks {
            let lot = lot.as_deref();
            match &to {
                Some(to) => {
                    seqs.push(
                        posting
                            .post(number, Kind::TransferOut, t, sku, &location.id, lot, -q, None, releases)
                            .map_err(at_field)?,
                    );
                    seqs.push(
                        posting
                            .post(number, Kind::TransferIn, t, sku, &to.id, lot, q, None, Qty::ZERO)
                            .map_err(at_field)?,
                    );
                }
                None => {
                    let k = if kind == MovementKind::Issue { Kind::Issue } else { Kind::Adjustment };
                    seqs.push(
                        posting.post(number, k, t, sku, &location.id, lot, -q, None, releases).map_err(at_field)?,
                    );
                }
            }
        }
    }
    Ok(PostedLine {
        item: sku.to_owned(),
        qty: entered,
        uom,
        location: location.id,
        to: to.map(|l| l.id),
        lot: line.lot,
        unit_cost,
        reservation: line.reservation,
        seqs,
    })
}

/// Finds an item's journal entry by key.
pub type EntryLookup<'a> = dyn FnMut(&str, Key) -> Result<Option<Entry>, Error> + 'a;

/// A movement as the API shows it: each line with the entries it made and their costs.
pub fn movement_json(movement: &Movement, entry: &mut EntryLookup<'_>, pending: &[String]) -> Result<Value, Error> {
    let mut lines = Vec::new();
    for line in &movement.lines {
        let mut entries = Vec::new();
        let mut value = Money::ZERO;
        for seq in &line.seqs {
            let Some(e) = entry(&line.item, (movement.at_ms, *seq))? else { continue };
            value += e.c;
            entries.push(json!({
                "kind": e.k.name(),
                "location": e.l,
                "lot": e.o,
                "qty": e.q.to_string(),
                "value": e.c.to_string(),
            }));
        }
        let mut shown = json!({
            "item": line.item,
            "qty": line.qty.to_string(),
            "uom": line.uom,
            "location": line.location,
            "to": line.to,
            "lot": line.lot,
            "unit_cost": line.unit_cost.map(|c| c.to_string()),
            "reservation": line.reservation,
            "entries": entries,
            "value": value.to_string(),
        });
        if value.0 < 0 {
            shown["cost"] = json!((-value).to_string());
        }
        lines.push(shown);
    }
    let pending: Vec<&String> = movement
        .lines
        .iter()
        .map(|l| &l.item)
        .filter(|i| pending.contains(i))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(json!({
        "number": movement.number,
        "kind": movement.kind,
        "at": movement.at,
        "actor": movement.actor,
        "actor_name": movement.actor_name,
        "reference": movement.reference,
        "reason": movement.reason,
        "recorded_at": time::format(movement.recorded_at as i64),
        "lines": lines,
        "revaluation_pending": pending,
    }))
}

/// `GET /movements/{number}`, with each entry's current cost.
pub fn get_movement(req: &Request) -> Result<Response, Error> {
    let number: u64 =
        req.param("number")?.parse().map_err(|_| Error::not_found("unknown-movement", "there is no such movement"))?;
    let movement = MOVEMENTS
        .get(&movement_key(number))?
        .ok_or_else(|| Error::not_found("unknown-movement", format!("there is no movement {number}")))?
        .value;
    let mut journals: BTreeMap<String, Journal> = BTreeMap::new();
    let mut pending = Vec::new();
    for line in &movement.lines {
        if !journals.contains_key(&line.item) {
            let head = HEADS
                .get(&line.item)?
                .ok_or_else(|| Error::internal("journal-missing", "a posted item has no journal"))?
                .value;
            if head.dirty_from.is_some() {
                pending.push(line.item.clone());
            }
            journals.insert(line.item.clone(), Journal::new(head));
        }
    }
    let body = movement_json(
        &movement,
        &mut |sku, key| journals.get_mut(sku).expect("loaded above").find(key, &mut loader(sku)),
        &pending,
    )?;
    Response::json(200, &body)
}

/// `GET /movements?reference=&item=`: newest first.
pub fn list_movements(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(50, 500)?;
    let mut query = MOVEMENTS.query().order_by("at").descending().limit(paging.limit).cursor(paging.cursor.as_deref());
    if let Some(reference) = req.query("reference") {
        query = query.eq("reference", reference);
    }
    if let Some(kind) = req.query("kind") {
        query = query.eq("kind", kind);
    }
    let page = query.fetch()?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|m| {
            let m = &m.value;
            json!({
                "number": m.number,
                "kind": m.kind,
                "at": m.at,
                "reference": m.reference,
                "reason": m.reason,
                "actor": m.actor,
                "lines": m.lines.iter().map(|l| json!({ "item": l.item, "qty": l.qty.to_string(), "uom": l.uom, "location": l.location, "to": l.to, "lot": l.lot })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Response::page(&items, page.next.as_deref())
}

/// Whether any place under a location path holds stock.
pub fn holds_stock(path: &str) -> Result<bool, Error> {
    let inside = BALANCES.query().prefix("path", format!("{path}/")).gt("on_hand", 0).limit(1).fetch()?;
    let here = BALANCES.query().eq("path", path).gt("on_hand", 0).limit(1).fetch()?;
    Ok(!inside.items.is_empty() || !here.items.is_empty())
}

/// `GET /stock?item=&location=&warehouse=&lot=&all=`: on-hand, reserved and available per
/// place (places with nothing on hand only with `all=true`).
pub fn list_stock(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(100, 1000)?;
    let mut query = BALANCES.query().limit(paging.limit).cursor(paging.cursor.as_deref());
    let mut filtered = false;
    for field in ["item", "location", "warehouse", "lot"] {
        if let Some(value) = req.query(field) {
            query = query.eq(field, value);
            filtered = true;
        }
    }
    if !filtered {
        return Err(Error::invalid("filter-required", "say which stock: `item`, `location`, `warehouse` or `lot`"));
    }
    if req.query("all") != Some("true") {
        query = query.gt("on_hand", 0);
    }
    let page = query.fetch()?;
    let items: Vec<Value> = page.items.iter().map(|b| b.value.to_json()).collect();
    Response::page(&items, page.next.as_deref())
}

/// `GET /items/{sku}/stock`: the item's totals and its places.
pub fn item_stock(req: &Request) -> Result<Response, Error> {
    let sku = req.param("sku")?;
    let item = ITEMS.get(sku)?.ok_or_else(|| unknown_item(sku))?.value;
    let (mut on_hand, mut reserved, mut places) = (Qty::ZERO, Qty::ZERO, Vec::new());
    let mut cursor: Option<String> = None;
    loop {
        let page = BALANCES.query().eq("item", sku).gt("on_hand", 0).limit(1000).cursor(cursor.as_deref()).fetch()?;
        for b in &page.items {
            on_hand += b.value.on_hand;
            reserved += b.value.reserved;
            if places.len() < 1000 {
                places.push(b.value.to_json());
            }
        }
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    let head = HEADS.get(sku)?.map(|h| h.value);
    let (value, pending) = head.as_ref().map_or((Money::ZERO, false), |h| (h.end.value, h.dirty_from.is_some()));
    Response::json(
        200,
        &json!({
            "item": sku,
            "uom": item.base_uom,
            "on_hand": on_hand.to_string(),
            "reserved": reserved.to_string(),
            "available": (on_hand - reserved).to_string(),
            "value": value.to_string(),
            "revaluation_pending": pending,
            "places": places,
        }),
    )
}

/// `GET /items/{sku}/valuation?at=`: quantity and value of the item as of a time (now by
/// default), from its journal.
pub fn item_valuation(req: &Request) -> Result<Response, Error> {
    let sku = req.param("sku")?;
    ITEMS.get(sku)?.ok_or_else(|| unknown_item(sku))?;
    let at = match req.query("at") {
        Some(text) => time::parse(text)
            .ok_or_else(|| Error::invalid("invalid-time", "`at` is an RFC 3339 time").at_field("at"))?,
        None => i64::MAX,
    };
    let Some(head) = HEADS.get(sku)?.map(|h| h.value) else {
        return Response::json(
            200,
            &json!({ "item": sku, "qty": "0", "value": "0.00", "unit_cost": "0.00", "revaluation_pending": false }),
        );
    };
    let pending = head.dirty_from.is_some_and(|d| d.0 <= at);
    let mut journal = Journal::new(head);
    let state = journal.valuation_at((at, u64::MAX), &mut loader(sku))?;
    let layers: Vec<Value> =
        state.layers.iter().map(|l| json!({ "qty": l.q.to_string(), "value": l.v.to_string() })).collect();
    Response::json(
        200,
        &json!({
            "item": sku,
            "at": (at != i64::MAX).then(|| time::format(at)),
            "qty": state.qty.to_string(),
            "value": state.value.to_string(),
            "unit_cost": state.unit_cost().to_string(),
            "layers": layers,
            "revaluation_pending": pending,
        }),
    )
}

/// `GET /items/{sku}/movements?location=&lot=`: the item's journal in time order with the
/// running balance (of the item, or of the place filtered on) and running value.
pub fn item_history(req: &Request) -> Result<Response, Error> {
    let sku = req.param("sku")?;
    ITEMS.get(sku)?.ok_or_else(|| unknown_item(sku))?;
    let paging = req.paging(100, 1000)?;
    let location = req.query("location");
    let lot = req.query("lot");
    // The cursor carries the position and the running sums: `t.s.qty.value`.
    let (after, mut qty, mut value) = match paging.cursor.as_deref() {
        None => (None, Qty::ZERO, Money::ZERO),
        Some(cursor) => {
            let parts: Vec<&str> = cursor.split('.').collect();
            let parsed = (parts.len() == 4)
                .then(|| {
                    Some((
                        (parts[0].parse().ok()?, parts[1].parse().ok()?),
                        Qty(parts[2].parse().ok()?),
                        Money(parts[3].parse().ok()?),
                    ))
                })
                .flatten();
            let (key, q, v) = parsed.ok_or_else(|| {
                Error::invalid("invalid-cursor", "that cursor was not given by this list").at_field("cursor")
            })?;
            (Some(key), q, v)
        }
    };
    let Some(head) = HEADS.get(sku)?.map(|h| h.value) else { return Response::page::<Value>(&[], None) };
    let journal = Journal::new(head);
    let from = after.map_or(0, |key| journal.head.chunk_index(key));
    let ids: Vec<u32> = journal.head.chunks.iter().skip(from).map(|c| c.id).collect();
    let mut items = Vec::new();
    let mut next = None;
    // The last entry looked at: a filter that matches rarely ends a page after a bounded
    // scan, with a cursor from there (a short page with `next`, as lists may answer).
    let mut last = None;
    let scan = ids.len();
    'chunks: for (scanned, id) in ids.into_iter().enumerate() {
        if scanned == HISTORY_SCAN_CHUNKS && scanned < scan {
            if let Some((t, s)) = last {
                next = Some(format!("{t}.{s}.{}.{}", qty.0, value.0));
            }
            break;
        }
        let chunk = crate::journal::checked(&journal.head, id, &mut loader(sku))?;
        for e in &chunk.entries {
            if after.is_some_and(|a| e.key() <= a) {
                continue;
            }
            if items.len() == paging.limit as usize {
                let (t, s): Key = last.expect("a full page has a last entry");
                next = Some(format!("{t}.{s}.{}.{}", qty.0, value.0));
                break 'chunks;
            }
            last = Some(e.key());
            if location.is_some_and(|l| l != e.l) || lot.is_some_and(|l| Some(l) != e.o.as_deref()) {
                continue;
            }
            qty += e.q;
            value += e.c;
            items.push(json!({
                "movement": e.m,
                "seq": e.s,
                "at": time::format(e.t),
                "kind": e.k.name(),
                "location": e.l,
                "lot": e.o,
                "qty": e.q.to_string(),
                "value": e.c.to_string(),
                "balance": qty.to_string(),
                "stock_value": (location.is_none() && lot.is_none()).then(|| value.to_string()),
            }));
        }
    }
    Response::page(&items, next.as_deref())
}

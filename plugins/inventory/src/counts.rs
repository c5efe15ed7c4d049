//! Stock counts: a session counts a location (and the places inside it); each counted line
//! records what was found for an item and lot. Posting the session adjusts every counted place
//! by the difference, in one movement, and is refused if a place moved after it was counted
//! (a pick between counting and posting would otherwise be "found" or "lost" twice), unless it
//! is counted again.

use crate::master::{ITEMS, Tracking, unknown_item, usable_location, valid_code};
use crate::num::Qty;
use crate::stock::{self, BALANCES, MOVEMENTS, MovementInput, MovementKind, Posting, balance_key, movement_key};
use crate::{now_ms, time};
use keel_sdk::{Collection, Error, Request, Response, Sequence};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub const COUNTS: Collection<Count> = Collection::new("counts");
/// `{count}|{item}|{location}|{lot}`: one counted place.
pub const COUNT_LINES: Collection<CountLine> = Collection::new("count_lines");
const COUNT_NUMBERS: Sequence = Sequence::new("count");
/// Places one session may count: its posting is one movement of at most this many lines.
pub const MAX_COUNT_LINES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CountState {
    Open,
    Posted,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub number: u64,
    pub location: String,
    /// The location's path: what is counted is at it or inside it.
    pub path: String,
    pub state: CountState,
    pub started_at: u64,
    pub started_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub movement: Option<u64>,
    #[serde(default)]
    pub lines: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountLine {
    pub count: u64,
    pub item: String,
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    pub counted: Qty,
    pub counted_at: u64,
    /// The place's move count when it was counted (see `Balance::moves`).
    #[serde(default)]
    pub moves: u64,
    pub counted_by: String,
}

fn count_key(number: u64) -> String {
    format!("{number:012}")
}

fn line_key(count: u64, item: &str, location: &str, lot: Option<&str>) -> String {
    format!("{count:012}|{}", balance_key(item, location, lot))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartInput {
    location: String,
}

/// `POST /counts`: starts counting a location.
pub fn start(req: &Request) -> Result<Response, Error> {
    let input: StartInput = req.json()?;
    let location = usable_location(&input.location).map_err(|e| e.at_field("location"))?;
    let number = COUNT_NUMBERS.next()?;
    let count = Count {
        number,
        location: location.id,
        path: location.path,
        state: CountState::Open,
        started_at: now_ms(),
        started_by: req.caller.user_id.clone(),
        movement: None,
        lines: 0,
    };
    COUNTS.insert(&count_key(number), &count)?;
    Response::json(201, &count_json(&count, &[]))
}

fn load(req: &Request) -> Result<keel_sdk::Versioned<Count>, Error> {
    let number: u64 =
        req.param("number")?.parse().map_err(|_| Error::not_found("unknown-count", "there is no such count"))?;
    COUNTS
        .get(&count_key(number))?
        .ok_or_else(|| Error::not_found("unknown-count", format!("there is no count {number}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineInput {
    item: String,
    location: String,
    #[serde(default)]
    lot: Option<String>,
    counted: String,
    #[serde(default)]
    uom: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinesInput {
    lines: Vec<LineInput>,
}

/// `POST /counts/{number}/lines`: records what was found; a place counted again replaces
/// its earlier line (and its time).
pub fn record(req: &Request) -> Result<Response, Error> {
    let stored = load(req)?;
    let mut count = stored.value;
    if count.state != CountState::Open {
        return Err(Error::conflict("count-closed", format!("count {} is no longer open", count.number)));
    }
    let input: LinesInput = req.json()?;
    if input.lines.is_empty() || input.lines.len() > MAX_COUNT_LINES {
        return Err(
            Error::invalid("invalid-lines", format!("1 to {MAX_COUNT_LINES} lines at a time")).at_field("lines")
        );
    }
    let now = now_ms();
    for (index, line) in input.lines.into_iter().enumerate() {
        let field = |name: &str| format!("lines[{index}].{name}");
        let item = ITEMS
            .get(&line.item)?
            .ok_or_else(|| Error::invalid("unknown-item", unknown_item(&line.item).detail()).at_field(field("item")))?
            .value;
        let location = usable_location(&line.location).map_err(|e| e.at_field(field("location")))?;
        if location.path != count.path && !location.path.starts_with(&format!("{}/", count.path)) {
            return Err(Error::invalid(
                "outside-count",
                format!("`{}` is not in `{}`, the counted location", location.id, count.location),
            )
            .at_field(field("location")));
        }
        match (&line.lot, item.tracking) {
            (None, Tracking::None) => {}
            (Some(lot), Tracking::Lot | Tracking::Serial) if valid_code(lot) => {}
            (None, _) => {
                return Err(Error::invalid("lot-required", format!("`{}` is counted per lot or serial", item.sku))
                    .at_field(field("lot")));
            }
            (Some(_), _) => {
                return Err(
                    Error::invalid("invalid-lot", format!("`{}` takes no such lot", item.sku)).at_field(field("lot"))
                );
            }
        }
        let uom = line.uom.clone().unwrap_or_else(|| item.base_uom.clone());
        let factor = item.factor(&uom).ok_or_else(|| {
            Error::invalid("unknown-unit", format!("`{}` has no unit `{uom}`", item.sku)).at_field(field("uom"))
        })?;
        let counted =
            Qty::parse(&line.counted).and_then(|q| q.times_factor(factor)).filter(|q| q.0 >= 0).ok_or_else(|| {
                Error::invalid("invalid-qty", "a count is a number ≥ 0, 3 decimals at most").at_field(field("counted"))
            })?;
        if item.tracking == Tracking::Serial && counted.0 != 0 && counted != Qty::units(1) {
            return Err(
                Error::invalid("invalid-qty", "a serial number is counted as 0 or 1").at_field(field("counted"))
            );
        }
        let key = line_key(count.number, &item.sku, &location.id, line.lot.as_deref());
        let moves =
            BALANCES.get(&balance_key(&item.sku, &location.id, line.lot.as_deref()))?.map_or(0, |b| b.value.moves);
        let existed = COUNT_LINES.get(&key)?.is_some();
        if !existed {
            if count.lines as usize >= MAX_COUNT_LINES {
                return Err(Error::invalid(
                    "count-full",
                    format!("a count holds at most {MAX_COUNT_LINES} places: count the rest in another"),
                )
                .at_field("lines"));
            }
            count.lines += 1;
        }
        let counted_line = CountLine {
            count: count.number,
            item: item.sku,
            location: location.id,
            lot: line.lot,
            counted,
            counted_at: now,
            moves,
            counted_by: req.caller.user_id.clone(),
        };
        COUNT_LINES.upsert(&key, &counted_line)?;
    }
    COUNTS.update(&count_key(count.number), &count, stored.version)?;
    show(&count)
}

fn lines_of(count: u64) -> Result<Vec<CountLine>, Error> {
    let page = COUNT_LINES.query().eq("count", count).limit(MAX_COUNT_LINES as u32 + 1).fetch()?;
    Ok(page.items.into_iter().map(|l| l.value).collect())
}

fn count_json(count: &Count, lines: &[Value]) -> Value {
    json!({
        "number": count.number,
        "location": count.location,
        "state": count.state,
        "started_at": time::format(count.started_at as i64),
        "started_by": count.started_by,
        "movement": count.movement,
        "lines": lines,
    })
}

/// A count with each line's book quantity now and the difference.
fn show(count: &Count) -> Result<Response, Error> {
    let lines = lines_of(count.number)?;
    let keys: Vec<String> = lines.iter().map(|l| balance_key(&l.item, &l.location, l.lot.as_deref())).collect();
    let balances = BALANCES.get_many(&keys)?;
    let shown: Vec<Value> = lines
        .iter()
        .zip(balances)
        .map(|(line, balance)| {
            let (book, moves) = balance.map_or((Qty::ZERO, 0), |b| (b.value.on_hand, b.value.moves));
            json!({
                "item": line.item,
                "location": line.location,
                "lot": line.lot,
                "counted": line.counted.to_string(),
                "book": book.to_string(),
                "difference": (line.counted - book).to_string(),
                "counted_at": time::format(line.counted_at as i64),
                "moved_since_counted": moves != line.moves,
            })
        })
        .collect();
    Response::json(200, &count_json(count, &shown))
}

pub fn get(req: &Request) -> Result<Response, Error> {
    show(&load(req)?.value)
}

/// `POST /counts/{number}/post`: adjusts every counted place to what was found, as one
/// adjustment movement, or refuses naming the places that moved since they were counted.
pub fn post(req: &Request) -> Result<Response, Error> {
    let stored = load(req)?;
    let mut count = stored.value;
    if count.state != CountState::Open {
        return Err(Error::conflict("count-closed", format!("count {} is no longer open", count.number)));
    }
    let lines = lines_of(count.number)?;
    if lines.is_empty() {
        return Err(Error::conflict("nothing-counted", format!("count {} has no lines", count.number)));
    }
    let keys: Vec<String> = lines.iter().map(|l| balance_key(&l.item, &l.location, l.lot.as_deref())).collect();
    let balances = BALANCES.get_many(&keys)?;
    let mut moved = Vec::new();
    let mut adjust = Vec::new();
    for (line, balance) in lines.iter().zip(&balances) {
        let (book, moves) = balance.as_ref().map_or((Qty::ZERO, 0), |b| (b.value.on_hand, b.value.moves));
        if moves != line.moves {
            moved.push(format!(
                "`{}` at `{}`{}",
                line.item,
                line.location,
                line.lot.as_deref().map(|l| format!(" lot `{l}`")).unwrap_or_default()
            ));
            continue;
        }
        let difference = line.counted - book;
        if difference.0 != 0 {
            adjust.push(stock::LineInput {
                item: line.item.clone(),
                qty: difference.to_string(),
                uom: None,
                location: line.location.clone(),
                to: None,
                lot: line.lot.clone(),
                expiry: None,
                unit_cost: None,
                reservation: None,
            });
        }
    }
    if !moved.is_empty() {
        return Err(Error::conflict(
            "moved-since-counted",
            format!("stock moved after it was counted: count again {}", moved.join(", ")),
        ));
    }
    let movement = if adjust.is_empty() {
        None
    } else {
        let mut posting = Posting::new();
        let input = MovementInput {
            kind: MovementKind::Adjustment,
            at: None,
            reference: Some(format!("count {}", count.number)),
            reason: Some("stock count".into()),
            lines: adjust,
        };
        // An error names the place in its detail; the adjustment's line numbers mean nothing
        // to whoever posts the count.
        let movement = stock::record(&mut posting, input, &req.caller.user_id, &req.caller.display_name)
            .map_err(|e| Error::new(e.kind(), e.code(), e.detail()))?;
        posting.finish()?;
        MOVEMENTS.insert(&movement_key(movement.number), &movement)?;
        Some(movement.number)
    };
    count.state = CountState::Posted;
    count.movement = movement;
    COUNTS.update(&count_key(count.number), &count, stored.version)?;
    show(&count)
}

/// `POST /counts/{number}/cancel`.
pub fn cancel(req: &Request) -> Result<Response, Error> {
    let stored = load(req)?;
    let mut count = stored.value;
    if count.state != CountState::Open {
        return Err(Error::conflict("count-closed", format!("count {} is no longer open", count.number)));
    }
    count.state = CountState::Cancelled;
    COUNTS.update(&count_key(count.number), &count, stored.version)?;
    show(&count)
}

/// `GET /counts?state=&location=`.
pub fn list(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(50, 500)?;
    let mut query = COUNTS.query().limit(paging.limit).cursor(paging.cursor.as_deref());
    for field in ["state", "location"] {
        if let Some(value) = req.query(field) {
            query = query.eq(field, value);
        }
    }
    let page = query.fetch()?;
    let items: Vec<Value> = page.items.iter().map(|c| count_json(&c.value, &[])).collect();
    Response::page(&items, page.next.as_deref())
}

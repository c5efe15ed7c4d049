//! Bulk imports through the platform's import (a file of rows, all or none): items, and
//! stock movements (opening stock is a file of receipts). Every bad row is reported with its
//! line and field; one bad row saves nothing.

use crate::journal::Method;
use crate::master::{ItemInput, Removal, ReorderInput, Tracking, build_item, save_item};
use crate::stock::{
    Budget, LineInput, MOVEMENTS, Movement, MovementKind, Posting, movement_key, open_movement, post_line,
};
use keel_sdk::{Error, ImportBatch, ImportRow, RowProblem};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A row's fields as text (CSV cells are strings; JSON Lines may hold numbers or booleans),
/// absent and empty cells as `None`.
fn fields(row: &ImportRow) -> Result<Map<String, Value>, RowProblem> {
    match serde_json::from_str::<Value>(&row.fields) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(row.problem(None, "a row is an object of fields")),
    }
}

fn text(map: &Map<String, Value>, name: &str) -> Option<String> {
    match map.get(name)? {
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn known(row: &ImportRow, map: &Map<String, Value>, allowed: &[&str]) -> Result<(), RowProblem> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => {
            Err(row.problem(Some(unknown), format!("unknown column; the columns are {}", allowed.join(", "))))
        }
        None => Ok(()),
    }
}

fn required(row: &ImportRow, map: &Map<String, Value>, name: &str) -> Result<String, RowProblem> {
    text(map, name).ok_or_else(|| row.problem(Some(name), "required"))
}

const ITEM_COLUMNS: &[&str] =
    &["sku", "name", "category", "base_uom", "units", "tracking", "valuation", "removal", "active", "reorder"];

/// `units`: `box=12;case=144`. `reorder`: `WH1=20/50;WH2=5/10` (point/quantity per warehouse).
fn item_row(row: &ImportRow) -> Result<(), RowProblem> {
    let map = fields(row)?;
    known(row, &map, ITEM_COLUMNS)?;
    let sku = required(row, &map, "sku")?;
    let pairs = |name: &str| -> Result<Vec<(String, String)>, RowProblem> {
        let Some(list) = text(&map, name) else { return Ok(Vec::new()) };
        list.split(';')
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| row.problem(Some(name), format!("`{p}` is not name=value")))
            })
            .collect()
    };
    let units: BTreeMap<String, String> = pairs("units")?.into_iter().collect();
    let mut reorder = BTreeMap::new();
    for (warehouse, level) in pairs("reorder")? {
        let (point, qty) = level
            .split_once('/')
            .ok_or_else(|| row.problem(Some("reorder"), format!("`{level}` is not point/quantity")))?;
        reorder.insert(warehouse, ReorderInput { point: point.to_owned(), qty: qty.to_owned() });
    }
    // Each choice is checked on its own, so a bad one is reported under its own column.
    fn choice<T: serde::de::DeserializeOwned>(
        row: &ImportRow,
        map: &Map<String, Value>,
        name: &str,
        allowed: &str,
    ) -> Result<Option<T>, RowProblem> {
        text(map, name)
            .map(|v| {
                serde_json::from_value(Value::String(v.clone()))
                    .map_err(|_| row.problem(Some(name), format!("`{v}` is not one of {allowed}")))
            })
            .transpose()
    }
    let tracking = choice::<Tracking>(row, &map, "tracking", "none, lot, serial")?;
    let valuation = choice::<Method>(row, &map, "valuation", "average, fifo")?;
    let removal = choice::<Removal>(row, &map, "removal", "fifo, fefo")?;
    let active = match text(&map, "active").as_deref() {
        None | Some("true" | "yes" | "1") => true,
        Some("false" | "no" | "0") => false,
        Some(_) => return Err(row.problem(Some("active"), "true or false")),
    };
    let mut input = ItemInput {
        name: required(row, &map, "name")?,
        category: text(&map, "category"),
        base_uom: required(row, &map, "base_uom")?,
        units: BTreeMap::new(),
        tracking: tracking.unwrap_or(Tracking::None),
        valuation: valuation.unwrap_or(Method::Average),
        removal,
        active,
        reorder: BTreeMap::new(),
    };
    input.units = units;
    input.reorder = reorder;
    let item = build_item(&sku, input).map_err(|e| problem(row, &e))?;
    save_item(&item, None).map_err(|e| problem(row, &e))?;
    Ok(())
}

fn problem(row: &ImportRow, error: &Error) -> RowProblem {
    // The row's column: a line's field (`lines[0].qty`) without the line, a map's entry
    // (`units.box`) as the column holding the map.
    let field = error.field().map(|f| {
        let f = if f.starts_with("lines[") { f.split_once("].").map_or(f, |(_, rest)| rest) } else { f };
        f.split('.').next().unwrap_or(f).to_owned()
    });
    row.problem(field.as_deref(), error.detail())
}

pub fn items(batch: &ImportBatch) -> Result<Vec<RowProblem>, Error> {
    Ok(batch.rows.iter().filter_map(|row| item_row(row).err()).collect())
}

const MOVEMENT_COLUMNS: &[&str] =
    &["kind", "at", "reference", "reason", "item", "qty", "uom", "location", "to", "lot", "expiry", "unit_cost"];
const OPENING_COLUMNS: &[&str] = &["at", "reference", "item", "qty", "uom", "location", "lot", "expiry", "unit_cost"];
/// Rows of one movement in an import: consecutive rows with the same kind, time, reference and
/// reason are one movement, up to this many lines.
const IMPORT_LINES: usize = 500;

/// `opening-stock` (receipts) and `movements` (any kind): each row a line; consecutive rows
/// with the same kind, time, reference and reason make one movement.
pub fn movements(batch: &ImportBatch, opening: bool) -> Result<Vec<RowProblem>, Error> {
    let mut posting = Posting::with_budget(Budget::IMPORT);
    let mut problems = Vec::new();
    let mut done: Vec<Movement> = Vec::new();
    let mut open: Option<(Vec<Option<String>>, Movement)> = None;
    for row in &batch.rows {
        let parsed = (|| -> Result<(Vec<Option<String>>, MovementKind, LineInput), RowProblem> {
            let map = fields(row)?;
            known(row, &map, if opening { OPENING_COLUMNS } else { MOVEMENT_COLUMNS })?;
            let kind = match text(&map, "kind").as_deref() {
                None | Some("receipt") => MovementKind::Receipt,
                Some("issue") => MovementKind::Issue,
                Some("transfer") => MovementKind::Transfer,
                Some("adjustment") => MovementKind::Adjustment,
                Some(other) => {
                    return Err(
                        row.problem(Some("kind"), format!("`{other}` is not receipt, issue, transfer or adjustment"))
                    );
                }
            };
            let header = vec![text(&map, "kind"), text(&map, "at"), text(&map, "reference"), text(&map, "reason")];
            let line = LineInput {
                item: required(row, &map, "item")?,
                qty: required(row, &map, "qty")?,
                uom: text(&map, "uom"),
                location: required(row, &map, "location")?,
                to: text(&map, "to"),
                lot: text(&map, "lot"),
                expiry: text(&map, "expiry"),
                unit_cost: text(&map, "unit_cost"),
                reservation: None,
            };
            Ok((header, kind, line))
        })();
        let (header, kind, line) = match parsed {
            Ok(parsed) => parsed,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        let same = open.as_ref().is_some_and(|(h, m)| *h == header && m.lines.len() < IMPORT_LINES);
        if !same {
            if let Some((_, movement)) = open.take() {
                done.push(movement);
            }
            let reference = header[2].clone().or_else(|| opening.then(|| "opening stock".to_owned()));
            match open_movement(
                &posting,
                kind,
                header[1].clone(),
                reference,
                header[3].clone(),
                &batch.caller.user_id,
                &batch.caller.display_name,
            ) {
                Ok(movement) => open = Some((header, movement)),
                Err(e) => {
                    problems.push(problem(row, &e));
                    continue;
                }
            }
        }
        let (_, movement) = open.as_mut().expect("opened above");
        let index = movement.lines.len();
        match post_line(&mut posting, movement.kind, movement.number, movement.at_ms, index, line) {
            Ok(posted) => movement.lines.push(posted),
            Err(e) => problems.push(problem(row, &e)),
        }
    }
    if let Some((_, movement)) = open.take() {
        done.push(movement);
    }
    // Written even when a row has a problem (the import then saves nothing): the next batch
    // checks its rows against this one's, so a good receipt here is not reported missing there.
    let finished = posting.finish();
    if !problems.is_empty() {
        return Ok(problems);
    }
    finished?;
    for movement in done.iter().filter(|m| !m.lines.is_empty()) {
        MOVEMENTS.insert(&movement_key(movement.number), movement)?;
    }
    Ok(problems)
}

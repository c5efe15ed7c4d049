//! Master data: items (units, tracking, valuation, removal strategy, reorder levels) and
//! warehouses with their locations (a tree: warehouse / zone / bin).

use crate::journal::Method;
use crate::num::Qty;
use crate::{HEADS, now_ms};
use keel_sdk::{Collection, Error, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const ITEMS: Collection<Item> = Collection::new("items");
pub const LOCATIONS: Collection<Location> = Collection::new("locations");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tracking {
    None,
    /// Lots (batches), each with an optional expiry date.
    Lot,
    /// Serial numbers: one unit each, in one place at a time.
    Serial,
}

/// Which lots an issue that names none takes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Removal {
    /// First in, first out: the lot received earliest.
    Fifo,
    /// First expired, first out: the earliest expiry (lots without one last).
    Fefo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reorder {
    pub point: Qty,
    pub qty: Qty,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub base_uom: String,
    /// Other units and how many base units one holds (a box of 12).
    #[serde(default)]
    pub units: BTreeMap<String, Qty>,
    pub tracking: Tracking,
    pub valuation: Method,
    pub removal: Removal,
    pub active: bool,
    /// Per warehouse: the level at or below which stock is low, and how much to reorder.
    #[serde(default)]
    pub reorder: BTreeMap<String, Reorder>,
    /// Whether it has any reorder point (indexed: the reorder check walks these).
    #[serde(default)]
    pub has_reorder: bool,
    pub updated_at: u64,
}

impl Item {
    /// How many base units one `uom` holds.
    pub fn factor(&self, uom: &str) -> Option<Qty> {
        if uom == self.base_uom { Some(Qty::units(1)) } else { self.units.get(uom).copied() }
    }

    pub fn to_json(&self) -> Value {
        let units: BTreeMap<&String, String> = self.units.iter().map(|(u, f)| (u, f.to_string())).collect();
        let reorder: BTreeMap<&String, Value> = self
            .reorder
            .iter()
            .map(|(w, r)| (w, json!({ "point": r.point.to_string(), "qty": r.qty.to_string() })))
            .collect();
        json!({
            "sku": self.sku,
            "name": self.name,
            "category": self.category,
            "base_uom": self.base_uom,
            "units": units,
            "tracking": self.tracking,
            "valuation": self.valuation,
            "removal": self.removal,
            "active": self.active,
            "reorder": reorder,
        })
    }
}

/// What `PUT /items/{sku}` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    pub name: String,
    #[serde(default)]
    pub category: Option<String>,
    pub base_uom: String,
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    #[serde(default = "default_tracking")]
    pub tracking: Tracking,
    #[serde(default = "default_method")]
    pub valuation: Method,
    #[serde(default)]
    pub removal: Option<Removal>,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub reorder: BTreeMap<String, ReorderInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReorderInput {
    pub point: String,
    pub qty: String,
}

fn default_tracking() -> Tracking {
    Tracking::None
}
fn default_method() -> Method {
    Method::Average
}
fn yes() -> bool {
    true
}

/// SKUs, location ids, lots and units: letters, digits and `-_.`, 1-64 long (they are parts
/// of storage keys joined with `|` and `/`).
pub fn valid_code(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn name_ok(text: &str, max: usize) -> bool {
    !text.trim().is_empty() && text.chars().count() <= max && !text.chars().any(char::is_control)
}

/// Checks an item's input into an item (the SKU given by the path).
pub fn build_item(sku: &str, input: ItemInput) -> Result<Item, Error> {
    if !valid_code(sku) {
        return Err(Error::invalid("invalid-sku", "a SKU is 1-64 letters, digits, `-`, `_` or `.`").at_field("sku"));
    }
    if !name_ok(&input.name, 200) {
        return Err(Error::invalid("invalid-name", "a name is 1-200 characters").at_field("name"));
    }
    if input.category.as_deref().is_some_and(|c| !name_ok(c, 100)) {
        return Err(Error::invalid("invalid-category", "a category is 1-100 characters").at_field("category"));
    }
    if !valid_code(&input.base_uom) {
        return Err(
            Error::invalid("invalid-unit", "a unit is 1-64 letters, digits, `-`, `_` or `.`").at_field("base_uom")
        );
    }
    if input.units.len() > 20 {
        return Err(Error::invalid("too-many-units", "an item has at most 20 other units").at_field("units"));
    }
    let mut units = BTreeMap::new();
    for (uom, factor) in input.units {
        let field = format!("units.{uom}");
        if !valid_code(&uom) || uom == input.base_uom {
            return Err(Error::invalid("invalid-unit", format!("`{uom}` is not a unit name other than the base unit"))
                .at_field(field));
        }
        match Qty::parse(&factor) {
            Some(f) if f.0 > 0 => units.insert(uom, f),
            _ => {
                return Err(Error::invalid(
                    "invalid-factor",
                    format!("`{factor}` is not a positive number of base units (3 decimals at most)"),
                )
                .at_field(field));
            }
        };
    }
    if input.tracking == Tracking::Serial && !units.is_empty() {
        return Err(
            Error::invalid("invalid-unit", "a serial-tracked item is counted in single units only").at_field("units")
        );
    }
    let mut reorder = BTreeMap::new();
    for (warehouse, level) in input.reorder {
        let field = format!("reorder.{warehouse}");
        let (Some(point), Some(qty)) = (Qty::parse(&level.point), Qty::parse(&level.qty)) else {
            return Err(Error::invalid("invalid-reorder", "a reorder point and quantity are numbers").at_field(field));
        };
        if point.0 < 0 || qty.0 <= 0 {
            return Err(Error::invalid(
                "invalid-reorder",
                "a reorder point is at least 0 and the quantity more than 0",
            )
            .at_field(field));
        }
        match LOCATIONS.get(&warehouse)? {
            Some(l) if l.value.parent.is_none() => {}
            _ => {
                return Err(
                    Error::invalid("unknown-warehouse", format!("there is no warehouse `{warehouse}`")).at_field(field)
                );
            }
        }
        reorder.insert(warehouse, Reorder { point, qty });
    }
    let removal = input.removal.unwrap_or(if input.tracking == Tracking::None { Removal::Fifo } else { Removal::Fefo });
    Ok(Item {
        sku: sku.to_owned(),
        name: input.name.trim().to_owned(),
        category: input.category.map(|c| c.trim().to_owned()),
        base_uom: input.base_uom,
        units,
        tracking: input.tracking,
        valuation: input.valuation,
        removal,
        active: input.active,
        has_reorder: !reorder.is_empty(),
        reorder,
        updated_at: now_ms(),
    })
}

/// `PUT /items/{sku}`: creates or changes an item. What stock already depends on (the base
/// unit, tracking, valuation method, the factor of a unit) cannot change once it has moved.
pub fn put_item(req: &Request) -> Result<Response, Error> {
    let sku = req.param("sku")?;
    let item = build_item(sku, req.json()?)?;
    let (created, version) = save_item(&item, req.if_match()?)?;
    Ok(Response::json(if created { 201 } else { 200 }, &item.to_json())?.with_version(version))
}

/// Saves an item, unless it changes what its stock history depends on; whether it is new,
/// and its version.
pub fn save_item(item: &Item, if_match: Option<u64>) -> Result<(bool, u64), Error> {
    let sku = item.sku.as_str();
    let stored = ITEMS.get(sku)?;
    if let Some(current) = &stored
        && HEADS.get(sku)?.is_some()
    {
        let old = &current.value;
        let fixed = [
            ("base_uom", old.base_uom != item.base_uom),
            ("tracking", old.tracking != item.tracking),
            ("valuation", old.valuation != item.valuation),
            // A unit once used keeps its factor: dropping it and adding it back is a change.
            ("units", old.units.iter().any(|(u, f)| item.units.get(u) != Some(f))),
        ];
        if let Some((field, _)) = fixed.iter().find(|(_, changed)| *changed) {
            return Err(Error::conflict(
                "item-has-stock-history",
                format!("`{field}` of `{sku}` cannot change: stock of it has moved (make a new item)"),
            )
            .at_field(*field));
        }
    }
    let created = stored.is_none();
    let version = match (&stored, if_match) {
        (Some(current), Some(expected)) if current.version != expected => {
            return Err(Error::conflict("version-conflict", format!("`{sku}` is at version {}", current.version)));
        }
        (Some(current), _) => ITEMS.update(sku, item, current.version)?,
        (None, _) => ITEMS.insert(sku, item)?,
    };
    Ok((created, version))
}

pub fn get_item(req: &Request) -> Result<Response, Error> {
    let sku = req.param("sku")?;
    let item = ITEMS.get(sku)?.ok_or_else(|| unknown_item(sku))?;
    Ok(Response::json(200, &item.value.to_json())?.with_version(item.version))
}

pub fn list_items(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(50, 500)?;
    let mut query = ITEMS.query().limit(paging.limit).cursor(paging.cursor.as_deref());
    if let Some(category) = req.query("category") {
        query = query.eq("category", category);
    }
    if let Some(active) = req.query("active") {
        let active = match active {
            "true" => true,
            "false" => false,
            _ => return Err(Error::invalid("invalid-filter", "`active` is true or false").at_field("active")),
        };
        query = query.eq("active", active);
    }
    let page = query.fetch()?;
    let items: Vec<Value> = page.items.iter().map(|i| i.value.to_json()).collect();
    Response::page(&items, page.next.as_deref())
}

pub fn unknown_item(sku: &str) -> Error {
    Error::not_found("unknown-item", format!("there is no item `{sku}`"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LocationKind {
    Warehouse,
    Zone,
    Bin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub id: String,
    pub name: String,
    pub kind: LocationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The warehouse at the root of its tree (itself for a warehouse).
    pub warehouse: String,
    /// Ids from the warehouse down, joined by `/`: a subtree is a prefix.
    pub path: String,
    pub active: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationInput {
    name: String,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    kind: Option<LocationKind>,
    #[serde(default = "yes")]
    active: bool,
}

/// Locations deep in a tree: warehouse / zone / ... / bin.
const MAX_DEPTH: usize = 6;

/// `PUT /locations/{id}`: a warehouse (no parent) or a place inside one. The tree is fixed
/// once made (a location's parent does not change), so paths stay true.
pub fn put_location(req: &Request) -> Result<Response, Error> {
    let id = req.param("id")?;
    if !valid_code(id) {
        return Err(
            Error::invalid("invalid-location", "a location id is 1-64 letters, digits, `-`, `_` or `.`").at_field("id")
        );
    }
    let input: LocationInput = req.json()?;
    if !name_ok(&input.name, 200) {
        return Err(Error::invalid("invalid-name", "a name is 1-200 characters").at_field("name"));
    }
    let (warehouse, path, kind) = match &input.parent {
        None => {
            if input.kind.is_some_and(|k| k != LocationKind::Warehouse) {
                return Err(
                    Error::invalid("invalid-kind", "a location without a parent is a warehouse").at_field("kind")
                );
            }
            (id.to_owned(), id.to_owned(), LocationKind::Warehouse)
        }
        Some(parent) => {
            let parent = LOCATIONS
                .get(parent)?
                .ok_or_else(|| {
                    Error::invalid("unknown-location", format!("there is no location `{parent}`")).at_field("parent")
                })?
                .value;
            if parent.kind == LocationKind::Bin {
                return Err(Error::invalid(
                    "invalid-parent",
                    format!("`{}` is a bin: nothing goes inside it", parent.id),
                )
                .at_field("parent"));
            }
            if parent.path.split('/').count() >= MAX_DEPTH {
                return Err(
                    Error::invalid("too-deep", format!("locations are at most {MAX_DEPTH} deep")).at_field("parent")
                );
            }
            let kind = input.kind.unwrap_or(LocationKind::Bin);
            if kind == LocationKind::Warehouse {
                return Err(Error::invalid("invalid-kind", "a warehouse has no parent").at_field("kind"));
            }
            (parent.warehouse, format!("{}/{id}", parent.path), kind)
        }
    };
    let location = Location {
        id: id.to_owned(),
        name: input.name.trim().to_owned(),
        kind,
        parent: input.parent,
        warehouse,
        path,
        active: input.active,
    };
    let stored = LOCATIONS.get(id)?;
    let created = stored.is_none();
    if let Some(current) = &stored {
        if current.value.parent != location.parent || current.value.kind != location.kind {
            return Err(Error::conflict(
                "location-fixed",
                format!("`{id}` stays where it is in the tree: make a new location"),
            ));
        }
        if current.value.active && !location.active && crate::stock::holds_stock(&current.value.path)? {
            return Err(Error::conflict("location-holds-stock", format!("`{id}` holds stock: move it out first")));
        }
    }
    let version = LOCATIONS.upsert(id, &location)?;
    Ok(Response::json(if created { 201 } else { 200 }, &location)?.with_version(version))
}

pub fn get_location(req: &Request) -> Result<Response, Error> {
    let id = req.param("id")?;
    let location = LOCATIONS
        .get(id)?
        .ok_or_else(|| Error::not_found("unknown-location", format!("there is no location `{id}`")))?;
    Ok(Response::json(200, &location.value)?.with_version(location.version))
}

/// `GET /locations?warehouse=&under=`: in path order (`under`: the places inside a location).
pub fn list_locations(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(100, 1000)?;
    let mut query = LOCATIONS.query().order_by("path").limit(paging.limit).cursor(paging.cursor.as_deref());
    if let Some(warehouse) = req.query("warehouse") {
        query = query.eq("warehouse", warehouse);
    }
    if let Some(under) = req.query("under") {
        let parent = LOCATIONS.get(under)?.ok_or_else(|| {
            Error::invalid("unknown-location", format!("there is no location `{under}`")).at_field("under")
        })?;
        query = query.prefix("path", format!("{}/", parent.value.path));
    }
    let page = query.fetch()?;
    let items: Vec<&Location> = page.items.iter().map(|l| &l.value).collect();
    Response::page(&items, page.next.as_deref())
}

/// A location stock can be moved to or from.
pub fn usable_location(id: &str) -> Result<Location, Error> {
    match LOCATIONS.get(id)? {
        Some(l) if l.value.active => Ok(l.value),
        Some(_) => Err(Error::invalid("inactive-location", format!("location `{id}` is not active"))),
        None => Err(Error::invalid("unknown-location", format!("there is no location `{id}`"))),
    }
}

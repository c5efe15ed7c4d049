//! Bulk import: rows an admin or user uploads as JSON Lines or CSV to
//! `POST /v1/imports/{plugin}/{name}` (declared under `[[imports]]` in `plugin.toml`). The
//! host hands them to [`Plugin::import_rows`](crate::Plugin::import_rows) in batches; the
//! writes of every batch are committed together, and only if no row of any batch has a
//! problem. So validate each row, write the good ones, and report the bad ones: the uploader
//! gets every problem at once and nothing is saved until the file is right.
//!
//! ```no_run
//! use keel_sdk::{Collection, Error, ImportBatch, RowProblem};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Item { sku: String, name: String, unit_cost: String }
//! const ITEMS: Collection<Item> = Collection::new("items");
//!
//! fn import_rows(batch: &ImportBatch) -> Result<Vec<RowProblem>, Error> {
//!     let mut problems = Vec::new();
//!     for row in &batch.rows {
//!         let item: Item = match row.parse() {
//!             Ok(item) => item,
//!             Err(problem) => { problems.push(problem); continue }
//!         };
//!         if item.sku.is_empty() {
//!             problems.push(row.problem(Some("sku"), "must not be empty"));
//!             continue;
//!         }
//!         ITEMS.upsert(&item.sku.clone(), &item)?;
//!     }
//!     Ok(problems)
//! }
//! ```

use crate::bindings::exports::keel::platform::importer as wit;
use crate::http::Caller;
use serde::de::DeserializeOwned;

/// One row of an uploaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    /// Where it starts in the file, from 1 (a CSV's header is line 1).
    pub line: u32,
    /// The row as a JSON object: a JSON Lines row as written; a CSV row's cells by header
    /// name, as strings.
    pub fields: String,
}

/// What is wrong with a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    /// The row's line.
    pub line: u32,
    /// The field at fault, when one is.
    pub field: Option<String>,
    /// What is wrong, for the person fixing the file.
    pub reason: String,
}

/// A batch of rows of one import, and who uploaded them.
#[derive(Debug, Clone)]
pub struct ImportBatch {
    /// The import's name, as the manifest declares it.
    pub name: String,
    /// Who uploaded the file (their tenant, and which of this plugin's permissions they hold).
    pub caller: Caller,
    /// The rows, in file order.
    pub rows: Vec<ImportRow>,
}

impl ImportRow {
    /// The row decoded into `T`; a decoding error is this row's problem, naming the field when
    /// serde says which (`missing field`, `unknown field`, or a field of the wrong type).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, RowProblem> {
        let mut deserializer = serde_json::Deserializer::from_str(&self.fields);
        let mut track = serde_path_to_error::Track::new();
        let tracked = serde_path_to_error::Deserializer::new(&mut deserializer, &mut track);
        T::deserialize(tracked).map_err(|e| {
            let message = e.to_string();
            let field = crate::http::field_of(&track.path().to_string(), &message);
            let reason = message.split(" at line ").next().unwrap_or(&message).to_owned();
            RowProblem { line: self.line, field, reason }
        })
    }

    /// A problem with this row, at `field` if given.
    pub fn problem(&self, field: Option<&str>, reason: impl Into<String>) -> RowProblem {
        RowProblem { line: self.line, field: field.map(str::to_owned), reason: reason.into() }
    }

    /// The row's cells by column, for rows read cell by cell (CSV's are all text); a column
    /// not in `columns` is this row's problem, naming it and the columns there are.
    ///
    /// ```
    /// # use keel_sdk::ImportRow;
    /// let row = ImportRow { line: 2, fields: r#"{"name":" Acme ","tier":""}"#.into() };
    /// let cells = row.cells(&["name", "tier"]).unwrap();
    /// assert_eq!(cells.required("name").unwrap(), "Acme");
    /// assert_eq!(cells.text("tier"), None); // empty is absent
    /// assert!(row.cells(&["name"]).is_err()); // `tier` is not a column
    /// ```
    pub fn cells(&self, columns: &[&str]) -> Result<Cells<'_>, RowProblem> {
        let map = match serde_json::from_str::<serde_json::Value>(&self.fields) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err(self.problem(None, "a row is an object of fields")),
        };
        if let Some(unknown) = map.keys().find(|k| !columns.contains(&k.as_str())) {
            return Err(self.problem(Some(unknown), format!("unknown column; the columns are {}", columns.join(", "))));
        }
        Ok(Cells { row: self, map })
    }

    pub(crate) fn from_wit(row: wit::ImportRow) -> ImportRow {
        ImportRow { line: row.line, fields: row.fields }
    }
}

/// A row's cells: see [`ImportRow::cells`].
#[derive(Debug, Clone)]
pub struct Cells<'a> {
    row: &'a ImportRow,
    map: serde_json::Map<String, serde_json::Value>,
}

impl Cells<'_> {
    /// The cell as trimmed text; `None` when absent, null or blank. A JSON number or boolean
    /// is its JSON text.
    pub fn text(&self, column: &str) -> Option<String> {
        match self.map.get(column)? {
            serde_json::Value::String(s) if s.trim().is_empty() => None,
            serde_json::Value::String(s) => Some(s.trim().to_owned()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// The cell as trimmed text, or the row's problem `required` at that column.
    pub fn required(&self, column: &str) -> Result<String, RowProblem> {
        self.text(column).ok_or_else(|| self.row.problem(Some(column), "required"))
    }

    /// A list cell: `a@x.test; b@y.test` split at `;`, or a JSON Lines array; trimmed,
    /// blanks dropped.
    pub fn list(&self, column: &str) -> Vec<String> {
        let items: Vec<String> = match self.map.get(column) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            _ => self.text(column).map(|t| t.split(';').map(str::to_owned).collect()).unwrap_or_default(),
        };
        items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }

    /// A problem with this row at `column`.
    pub fn problem(&self, column: &str, reason: impl Into<String>) -> RowProblem {
        self.row.problem(Some(column), reason)
    }
}

impl RowProblem {
    pub(crate) fn into_wit(self) -> wit::RowProblem {
        wit::RowProblem { line: self.line, field: self.field, reason: self.reason }
    }
}

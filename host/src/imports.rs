//! Bulk import files: JSON Lines and CSV read into rows (a JSON object each, with the line it
//! starts on) and the problems of rows that cannot be read at all. What a row must contain
//! is the plugin's business; what a file is, is the host's.

use serde_json::{Map, Value};

/// The formats an import accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line; blank lines are skipped.
    JsonLines,
    /// RFC 4180: a header line naming the columns, then one record per line (quoted cells may
    /// hold commas, quotes as `""`, and line breaks). Cells are strings.
    Csv,
}

impl Format {
    /// The format a `Content-Type` names, if any.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/x-ndjson" | "application/jsonl" | "application/json-lines" | "application/x-jsonlines" => {
                Some(Format::JsonLines)
            }
            "text/csv" => Some(Format::Csv),
            _ => None,
        }
    }

    /// The format a `?format=` value names.
    pub fn from_name(name: &str) -> Option<Format> {
        match name {
            "jsonl" | "ndjson" => Some(Format::JsonLines),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// A row read from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The line it starts on, from 1.
    pub line: u32,
    /// A JSON object, as text.
    pub fields: String,
}

/// Why a row (or the file) cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// The line the row starts on (0: the file as a whole).
    pub line: u32,
    /// The field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub reason: String,
}

impl Problem {
    fn at(line: u32, reason: impl Into<String>) -> Problem {
        Problem { line, field: None, reason: reason.into() }
    }
}

/// How much of a file is kept: past these, rows and problems are only counted, so a hostile
/// file cannot make the host hold more than a bounded multiple of its own size.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_rows: usize,
    pub max_problems: usize,
    /// Bytes of the rows' JSON in all (a CSV header is repeated in every row).
    pub max_row_bytes: usize,
}

/// Most columns a CSV may have.
pub const MAX_COLUMNS: usize = 1_000;

/// A file read: the rows and problems kept, and how many there were in all.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub rows: Vec<Row>,
    pub problems: Vec<Problem>,
    pub rows_total: usize,
    pub problems_total: usize,
}

impl Parsed {
    fn row(&mut self, row: Row, limits: &ReadLimits, bytes: &mut usize) {
        self.rows_total += 1;
        if self.rows.len() >= limits.max_rows {
            return;
        }
        *bytes += row.fields.len();
        if *bytes > limits.max_row_bytes {
            if *bytes - row.fields.len() <= limits.max_row_bytes {
                self.problem(
                    Problem::at(row.line, format!("the rows come to more than {} bytes of JSON", limits.max_row_bytes)),
                    limits,
                );
            }
            return;
        }
        self.rows.push(row);
    }

    fn problem(&mut self, problem: Problem, limits: &ReadLimits) {
        self.problems_total += 1;
        if self.problems.len() < limits.max_problems {
            self.problems.push(problem);
        }
    }
}

/// Reads `text` as `format`: the rows, and the problems of what could not be read. A CSV
/// whose header cannot name the columns is one problem at line 1 and no rows.
pub fn read(format: Format, text: &str, limits: &ReadLimits) -> Parsed {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        Format::JsonLines => json_lines(text, limits),
        Format::Csv => csv(text, limits),
    }
}

fn json_lines(text: &str, limits: &ReadLimits) -> Parsed {
    let mut parsed = Parsed::default();
    let mut bytes = 0;
    for (i, line) in text.split('\n').enumerate() {
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let line = line.strip_suffix('\r').unwrap_or(line).trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(_)) => parsed.row(Row { line: number, fields: line.to_owned() }, limits, &mut bytes),
            Ok(other) => parsed
                .problem(Problem::at(number, format!("a row must be a JSON object, not {}", kind(&other))), limits),
            Err(e) => parsed.problem(Problem::at(number, format!("not JSON: {e}")), limits),
        }
    }
    parsed
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One CSV record: its first line and its cells, or why it is malformed.
type Record = (u32, Result<Vec<String>, String>);

/// Splits CSV text into records, following quotes across line breaks.
fn records(text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line: u32 = 1;
    while chars.peek().is_some() {
        let start = line;
        let mut cells = Vec::new();
        let mut cell = String::new();
        let mut error = None;
        loop {
            // One cell.
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        None => {
                            error.get_or_insert_with(|| "a quoted cell is not closed".to_owned());
                            break;
                        }
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            cell.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            cell.push(c);
                        }
                    }
                }
                // After the closing quote: a separator, the end of the line or of the text.
                match chars.peek() {
                    None | Some(',') | Some('\n') | Some('\r') => {}
                    Some(_) => {
                        error.get_or_insert_with(|| "text after a quoted cell's closing quote".to_owned());
                        while !matches!(chars.peek(), None | Some(',') | Some('\n')) {
                            chars.next();
                        }
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if matches!(c, ',' | '\n') {
                        break;
                    }
                    if c == '"' {
                        error
                            .get_or_insert_with(|| "a quote inside an unquoted cell (quote the whole cell)".to_owned());
                    }
                    cell.push(c);
                    chars.next();
                }
                if cell.ends_with('\r') && chars.peek() != Some(&',') {
                    cell.pop();
                }
            }
            if chars.peek() == Some(&'\r') {
                chars.next();
            }
            cells.push(std::mem::take(&mut cell));
            match chars.next() {
                Some(',') => continue,
                Some('\n') => {
                    line += 1;
                    break;
                }
                _ => break,
            }
        }
        out.push((start, error.map_or(Ok(cells), Err)));
    }
    out
}

fn csv(text: &str, limits: &ReadLimits) -> Parsed {
    let mut parsed = Parsed::default();
    let refused = |line, reason: String| Parsed {
        problems: vec![Problem::at(line, reason)],
        problems_total: 1,
        ..Parsed::default()
    };
    let mut records = records(text).into_iter();
    let header = match records.next() {
        None => return parsed,
        Some((line, Err(reason))) => return refused(line, format!("the header: {reason}")),
        Some((_, Ok(names))) => names,
    };
    if header.len() > MAX_COLUMNS {
        return refused(1, format!("the header has {} columns; at most {MAX_COLUMNS}", header.len()));
    }
    let names: Vec<String> = header.iter().map(|n| n.trim().to_owned()).collect();
    let mut seen = std::collections::HashSet::new();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return refused(1, format!("the header's column {} has no name", i + 1));
        }
        if !seen.insert(name) {
            return refused(1, format!("the header names `{name}` twice"));
        }
    }
    let mut bytes = 0;
    for (line, record) in records {
        match record {
            Err(reason) => parsed.problem(Problem::at(line, reason), limits),
            // A blank line.
            Ok(cells) if cells.len() == 1 && cells[0].trim().is_empty() => {}
            Ok(cells) if cells.len() != names.len() => parsed.problem(
                Problem::at(line, format!("{} cells; the header has {} columns", cells.len(), names.len())),
                limits,
            ),
            Ok(cells) => {
                let object: Map<String, Value> =
                    names.iter().cloned().zip(cells.into_iter().map(Value::String)).collect();
                parsed.row(Row { line, fields: Value::Object(object).to_string() }, limits, &mut bytes);
            }
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: ReadLimits = ReadLimits { max_rows: 1000, max_problems: 1000, max_row_bytes: 1 << 20 };

    fn read(format: Format, text: &str) -> (Vec<Row>, Vec<Problem>) {
        let parsed = super::read(format, text, &ROOMY);
        (parsed.rows, parsed.problems)
    }

    fn fields(rows: &[Row]) -> Vec<(u32, Value)> {
        rows.iter().map(|r| (r.line, serde_json::from_str(&r.fields).unwrap())).collect()
    }

    #[test]
    fn json_lines_take_objects_skip_blank_lines_and_name_the_bad_ones() {
        let text = "{\"a\":1}\r\n\n  \n[1,2]\n{\"b\":\"x\"}\n{oops\n\"text\"";
        let (rows, problems) = read(Format::JsonLines, text);
        assert_eq!(fields(&rows), [(1, serde_json::json!({"a":1})), (5, serde_json::json!({"b":"x"}))]);
        let lines: Vec<u32> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [4, 6, 7]);
        assert!(problems[0].reason.contains("an array"), "{problems:?}");
        assert!(problems[1].reason.starts_with("not JSON"), "{problems:?}");
    }

    #[test]
    fn csv_cells_follow_rfc_4180_quotes_and_line_breaks() {
        let text =
            "\u{feff}name,note,qty\r\nbolt,\"M6, zinc\",10\r\n\"nut \"\"wing\"\"\",\"two\nlines\",5\n\nwasher,,0";
        let (rows, problems) = read(Format::Csv, text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            fields(&rows),
            [
                (2, serde_json::json!({"name":"bolt","note":"M6, zinc","qty":"10"})),
                (3, serde_json::json!({"name":"nut \"wing\"","note":"two\nlines","qty":"5"})),
                // The quoted line break moved the line count on: the blank line is 5, this is 6.
                (6, serde_json::json!({"name":"washer","note":"","qty":"0"})),
            ]
        );
    }

    #[test]
    fn malformed_csv_records_are_problems_at_their_line_and_the_rest_is_read() {
        let text = "a,b\n1,2\n1,2,3\n\"open,4\n";
        let (rows, problems) = read(Format::Csv, text);
        assert_eq!(fields(&rows), [(2, serde_json::json!({"a":"1","b":"2"}))]);
        assert_eq!(problems.iter().map(|p| p.line).collect::<Vec<_>>(), [3, 4]);
        assert!(problems[0].reason.contains("3 cells"), "{problems:?}");
        assert!(problems[1].reason.contains("not closed"), "{problems:?}");
        let (_, problems) = read(Format::Csv, "a,\"x\"y\n1,2\n");
        assert!(problems[0].reason.starts_with("the header"), "{problems:?}");
        let (rows, problems) = read(Format::Csv, "a,a\n1,2\n");
        assert!(rows.is_empty() && problems[0].reason.contains("twice"), "{problems:?}");
        let (rows, problems) = read(Format::Csv, "a,,c\n1,2,3\n");
        assert!(rows.is_empty() && problems[0].reason.contains("column 2"), "{problems:?}");
        assert_eq!(read(Format::Csv, ""), (vec![], vec![]));
    }

    #[test]
    fn past_the_limits_rows_and_problems_are_counted_not_kept() {
        let limits = ReadLimits { max_rows: 2, max_problems: 1, max_row_bytes: 1 << 20 };
        let parsed = super::read(Format::JsonLines, "{}\n{}\n{}\n1\n2\n", &limits);
        assert_eq!((parsed.rows.len(), parsed.rows_total), (2, 3));
        assert_eq!((parsed.problems.len(), parsed.problems_total), (1, 2));
        // A header repeated in every row cannot blow a small file up: the rows' bytes are capped.
        let header = (0..900).map(|i| format!("column-{i:04}")).collect::<Vec<_>>().join(",");
        let text = format!("{header}\n{}", format!("{}\n", ",".repeat(899)).repeat(50));
        let limits = ReadLimits { max_rows: 1000, max_problems: 10, max_row_bytes: 100_000 };
        let parsed = super::read(Format::Csv, &text, &limits);
        assert!(parsed.rows.iter().map(|r| r.fields.len()).sum::<usize>() <= 100_000);
        assert!(parsed.problems[0].reason.contains("more than 100000 bytes"), "{:?}", parsed.problems);
        let too_wide = format!("{}\n", (0..1001).map(|i| format!("c{i}")).collect::<Vec<_>>().join(","));
        assert!(super::read(Format::Csv, &too_wide, &limits).problems[0].reason.contains("at most 1000"));
    }

    #[test]
    fn formats_are_named_by_content_type_or_by_name() {
        assert_eq!(Format::from_content_type("application/x-ndjson; charset=utf-8"), Some(Format::JsonLines));
        assert_eq!(Format::from_content_type("Text/CSV"), Some(Format::Csv));
        assert_eq!(Format::from_content_type("application/json"), None);
        assert_eq!(Format::from_name("csv"), Some(Format::Csv));
        assert_eq!(Format::from_name("xlsx"), None);
    }
}

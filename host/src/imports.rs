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

/// Reads `text` as `format`: the rows, and the problems of what could not be read. A CSV
/// whose header cannot name the columns is one problem at line 1 and no rows.
pub fn read(format: Format, text: &str) -> (Vec<Row>, Vec<Problem>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        Format::JsonLines => json_lines(text),
        Format::Csv => csv(text),
    }
}

fn json_lines(text: &str) -> (Vec<Row>, Vec<Problem>) {
    let (mut rows, mut problems) = (Vec::new(), Vec::new());
    for (i, line) in text.split('\n').enumerate() {
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let line = line.strip_suffix('\r').unwrap_or(line).trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(_)) => rows.push(Row { line: number, fields: line.to_owned() }),
            Ok(other) => {
                problems.push(Problem::at(number, format!("a row must be a JSON object, not {}", kind(&other))))
            }
            Err(e) => problems.push(Problem::at(number, format!("not JSON: {e}"))),
        }
    }
    (rows, problems)
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

fn csv(text: &str) -> (Vec<Row>, Vec<Problem>) {
    let mut records = records(text).into_iter();
    let header = match records.next() {
        None => return (Vec::new(), Vec::new()),
        Some((line, Err(reason))) => return (Vec::new(), vec![Problem::at(line, format!("the header: {reason}"))]),
        Some((_, Ok(names))) => names,
    };
    let names: Vec<String> = header.iter().map(|n| n.trim().to_owned()).collect();
    if let Some(bad) = names.iter().enumerate().find(|(i, n)| n.is_empty() || names[..*i].contains(n)) {
        let reason = if bad.1.is_empty() {
            format!("the header's column {} has no name", bad.0 + 1)
        } else {
            format!("the header names `{}` twice", bad.1)
        };
        return (Vec::new(), vec![Problem::at(1, reason)]);
    }
    let (mut rows, mut problems) = (Vec::new(), Vec::new());
    for (line, record) in records {
        match record {
            Err(reason) => problems.push(Problem::at(line, reason)),
            // A blank line.
            Ok(cells) if cells.len() == 1 && cells[0].trim().is_empty() => {}
            Ok(cells) if cells.len() != names.len() => problems
                .push(Problem::at(line, format!("{} cells; the header has {} columns", cells.len(), names.len()))),
            Ok(cells) => {
                let object: Map<String, Value> =
                    names.iter().cloned().zip(cells.into_iter().map(Value::String)).collect();
                rows.push(Row { line, fields: Value::Object(object).to_string() });
            }
        }
    }
    (rows, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn formats_are_named_by_content_type_or_by_name() {
        assert_eq!(Format::from_content_type("application/x-ndjson; charset=utf-8"), Some(Format::JsonLines));
        assert_eq!(Format::from_content_type("Text/CSV"), Some(Format::Csv));
        assert_eq!(Format::from_content_type("application/json"), None);
        assert_eq!(Format::from_name("csv"), Some(Format::Csv));
        assert_eq!(Format::from_name("xlsx"), None);
    }
}

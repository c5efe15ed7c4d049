//! Full-text search over a collection's declared fields: what text of a document is indexed,
//! how a plugin's query text becomes an FTS5 expression that can only ever be words, and the
//! cursor of a ranked page.
//!
//! Each (tenant, plugin, collection) has an FTS5 table of its own ([`table_name`], rowid = the
//! document's stable id, one column per searchable field): the ranking's statistics (how many
//! documents hold a word, their lengths) are then that collection's data in that tenant
//! only, so the order of one tenant's results says nothing about another's documents, and a
//! rare word is found without walking anyone else's rows. The join back to `documents` checks
//! the scope again on every row returned.

use base64::Engine as _;
use sha2::Digest as _;

/// Fields one collection may make searchable (PostgreSQL's four weight classes).
pub const MAX_SEARCH_FIELDS: usize = 4;
/// Text kept of one field, and of one document over all its fields.
const MAX_FIELD_BYTES: usize = 64 << 10;
const MAX_DOCUMENT_BYTES: usize = 128 << 10;
/// The shortest prefix a query may ask for (the index keeps 3-character prefixes).
pub const MIN_PREFIX_CHARS: usize = 3;

/// A searchable field: a dotted path into the document and the weight of a match in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchField {
    pub path: String,
    pub weight: u8,
}

/// The searchable fields of a collection, in manifest order (column `c0` is the first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchFields(pub Vec<SearchField>);

/// The indexed text of one document: one string per column.
pub type SearchText = [String; MAX_SEARCH_FIELDS];

impl SearchFields {
    /// The text of each field of `body`: a string as it is, a number or boolean in its JSON
    /// form, the scalars of an array one per line; objects, null and missing fields give
    /// nothing. Control characters become spaces; a field keeps at most 64 KiB and a document
    /// 128 KiB (cut at a character boundary).
    pub fn extract(&self, body: &serde_json::Value) -> SearchText {
        let mut out: SearchText = Default::default();
        let mut budget = MAX_DOCUMENT_BYTES;
        for (slot, field) in out.iter_mut().zip(&self.0) {
            let mut value = Some(body);
            for part in field.path.split('.') {
                value = value.and_then(|v| v.get(part));
            }
            let mut text = String::new();
            match value {
                Some(serde_json::Value::Array(items)) => {
                    for item in items {
                        if let Some(scalar) = scalar_text(item) {
                            if !text.is_empty() {
                                text.push('\n');
                            }
                            text.push_str(&scalar);
                        }
                    }
                }
                Some(v) => text = scalar_text(v).unwrap_or_default(),
                None => {}
            }
            let cap = MAX_FIELD_BYTES.min(budget);
            let text = clean(&text, cap);
            budget -= text.len();
            *slot = text;
        }
        out
    }

    /// The paths, for the index signature (weights act at query time only).
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|f| f.path.as_str()).collect()
    }

    /// The FTS5 ranking call for these fields on `table`.
    pub fn rank_sql(&self, table: &str) -> String {
        let mut weights = Vec::new();
        for i in 0..MAX_SEARCH_FIELDS {
            weights.push(self.0.get(i).map_or("0.0".to_owned(), |f| format!("{}.0", f.weight)));
        }
        format!("bm25({table}, {})", weights.join(", "))
    }
}

fn scalar_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `text` with control characters (newlines aside) as spaces, at most `cap` bytes.
fn clean(text: &str, cap: usize) -> String {
    let mut out = String::with_capacity(text.len().min(cap));
    for c in text.chars() {
        let c = if c.is_control() && c != '\n' { ' ' } else { c };
        if out.len() + c.len_utf8() > cap {
            break;
        }
        out.push(c);
    }
    out
}

/// The FTS5 table of one (tenant, plugin, collection): `search_` and hex digits only, so it
/// can be written into SQL.
pub fn table_name(tenant: &str, plugin: &str, collection: &str) -> String {
    let mut hash = sha2::Sha256::new();
    for part in [tenant, plugin, collection] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    format!("search_{}", &hex::encode(hash.finalize())[..32])
}

/// The statement that creates a collection's table: case and accents folded, no stemming
/// (tenants write in many languages), 3-character prefixes indexed.
pub fn create_table_sql(table: &str) -> String {
    format!(
        "CREATE VIRTUAL TABLE IF NOT EXISTS {table} USING fts5(c0, c1, c2, c3, \
         tokenize = 'unicode61 remove_diacritics 2', prefix = '3')"
    )
}

/// Bounds on query text.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub max_chars: usize,
    pub max_terms: usize,
    pub max_term_chars: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits { max_chars: 256, max_terms: 16, max_term_chars: 64 }
    }
}

/// One term of a query: a word or a phrase (several words in a row), optionally a prefix of
/// its last word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub text: String,
    pub prefix: bool,
}

/// Reads query text: words (all must occur), `"phrases"`, and `word*` prefixes of three
/// characters or more. Nothing else is syntax: any other punctuation is text, which the
/// tokenizer splits on as it does in documents.
pub fn parse_query(text: &str, limits: QueryLimits) -> Result<Vec<Term>, String> {
    let chars = text.chars().count();
    if chars > limits.max_chars {
        return Err(format!("the search is {chars} characters; at most {}", limits.max_chars));
    }
    let mut raw: Vec<(String, bool)> = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        rest = rest.trim_start();
        if let Some(inner) = rest.strip_prefix('"') {
            let (phrase, after) = match inner.find('"') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => (inner, ""),
            };
            // A `*` right after the closing quote makes the phrase's last word a prefix.
            let (prefix, after) = match after.strip_prefix('*') {
                Some(a) => (true, a),
                None => (false, after),
            };
            raw.push((phrase.to_owned(), prefix));
            rest = after;
        } else {
            let end = rest.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(rest.len());
            let word = &rest[..end];
            rest = &rest[end..];
            let (word, prefix) = match word.strip_suffix('*') {
                Some(w) => (w.trim_end_matches('*'), true),
                None => (word, false),
            };
            raw.push((word.to_owned(), prefix));
        }
    }
    let mut terms = Vec::new();
    for (text, prefix) in raw {
        // Only letters, digits and private-use characters are words (as the tokenizer has it);
        // the rest is what separates them.
        let words: Vec<&str> = text.split(|c: char| !is_word_char(c)).filter(|w| !w.is_empty()).collect();
        if words.is_empty() {
            continue;
        }
        let joined = words.join(" ");
        if joined.chars().count() > limits.max_term_chars {
            return Err(format!("a search term is at most {} characters", limits.max_term_chars));
        }
        if prefix && words.last().is_some_and(|w| w.chars().count() < MIN_PREFIX_CHARS) {
            return Err(format!("a prefix search (`word*`) needs at least {MIN_PREFIX_CHARS} letters"));
        }
        terms.push(Term { text: joined, prefix });
    }
    if terms.is_empty() {
        return Err("the search has no words".into());
    }
    if terms.len() > limits.max_terms {
        return Err(format!("the search has {} terms; at most {}", terms.len(), limits.max_terms));
    }
    Ok(terms)
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || ('\u{E000}'..='\u{F8FF}').contains(&c) || c >= '\u{F0000}'
}

/// `text` with every character that is not part of a word (by the query parser's rule)
/// turned into a space: what a backend whose own tokenizer splits words differently (e.g.
/// PostgreSQL's parser, which keeps `e-mail` or `a.b@c.d` whole) indexes, so that documents
/// and queries are cut into the same words.
pub fn words_only(text: &str) -> String {
    text.chars().map(|c| if is_word_char(c) { c } else { ' ' }).collect()
}

/// The PostgreSQL `to_tsquery` text of a search: every term ANDed, a phrase's words joined by
/// `<->`, each word single-quoted (quotes and backslashes escaped, though the parser leaves
/// only word characters), `:*` on a prefix. Read with the `keel_simple` configuration, which
/// folds each word as the documents' words were.
pub fn render_tsquery(terms: &[Term]) -> String {
    let quote = |w: &str| format!("'{}'", w.replace('\\', "\\\\").replace('\'', "''"));
    terms
        .iter()
        .map(|t| {
            let words: Vec<&str> = t.text.split_whitespace().collect();
            let mut rendered: Vec<String> = words.iter().map(|w| quote(w)).collect();
            if t.prefix
                && let Some(last) = rendered.last_mut()
            {
                last.push_str(":*");
            }
            let phrase = rendered.join(" <-> ");
            if words.len() > 1 { format!("({phrase})") } else { phrase }
        })
        .collect::<Vec<_>>()
        .join(" & ")
}

/// The FTS5 expression of a search: every term ANDed, each a double-quoted string (so it is
/// only ever text).
pub fn render_fts5(terms: &[Term]) -> String {
    let quoted: Vec<String> = terms
        .iter()
        .map(|t| {
            let q = format!("\"{}\"", t.text.replace('"', "\"\""));
            if t.prefix { format!("{q} *") } else { q }
        })
        .collect();
    quoted.join(" AND ")
}

/// The cursor of a ranked page: which query it belongs to, and how many matches came before.
/// Never a score or a document id: both depend on data the caller cannot see.
const SEARCH_CURSOR: &str = "s2.";
/// How far a search can be paged: a search box, not an export (that is what queries are for).
pub const MAX_OFFSET: u32 = 10_000;

/// A fingerprint of what a cursor may continue: the collection, the query, the ranking and
/// the conditions.
pub fn fingerprint(parts: &[&str]) -> [u8; 8] {
    let mut hash = sha2::Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    let digest = hash.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

pub fn encode_cursor(fingerprint: [u8; 8], offset: u32) -> String {
    let mut bytes = Vec::with_capacity(12);
    bytes.extend_from_slice(&fingerprint);
    bytes.extend_from_slice(&offset.to_be_bytes());
    format!("{SEARCH_CURSOR}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The matches a cursor skips, if it was made by a query with this fingerprint.
pub fn decode_cursor(cursor: &str, fingerprint: [u8; 8]) -> Option<u32> {
    let raw = cursor.strip_prefix(SEARCH_CURSOR)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw).ok()?;
    if bytes.len() != 12 || bytes[..8] != fingerprint {
        return None;
    }
    let offset = u32::from_be_bytes(bytes[8..12].try_into().ok()?);
    (1..=MAX_OFFSET).contains(&offset).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Vec<(String, bool)>, String> {
        parse_query(text, QueryLimits::default()).map(|t| t.into_iter().map(|t| (t.text, t.prefix)).collect())
    }

    fn words(list: &[&str]) -> Vec<(String, bool)> {
        list.iter().map(|w| ((*w).to_owned(), false)).collect()
    }

    #[test]
    fn words_phrases_and_prefixes_are_the_only_syntax() {
        assert_eq!(parse("refund printer").unwrap(), words(&["refund", "printer"]));
        assert_eq!(parse("  \"jane doe\"  refund ").unwrap(), words(&["jane doe", "refund"]));
        assert_eq!(parse("prin*").unwrap(), vec![("prin".to_owned(), true)]);
        assert_eq!(parse("\"jane doe\"*").unwrap(), vec![("jane doe".to_owned(), true)]);
        // An address is a phrase of its parts, as the tokenizer splits it in documents.
        assert_eq!(parse("jane.doe@acme.com").unwrap(), words(&["jane doe acme com"]));
        // Operators of FTS5 are words here.
        assert_eq!(parse("AND OR NOT").unwrap(), words(&["AND", "OR", "NOT"]));
        assert_eq!(parse("NEAR(a b)").unwrap(), words(&["NEAR a", "b"]));
        assert_eq!(parse("c0:x {scope}:k1 ^x -x").unwrap(), words(&["c0 x", "scope k1", "x", "x"]));
        assert_eq!(parse("\"unclosed phrase").unwrap(), words(&["unclosed phrase"]));
        assert_eq!(parse("Crème brûlée").unwrap(), words(&["Crème", "brûlée"]));
        assert_eq!(parse("nul\0byte").unwrap(), words(&["nul byte"]));
        // Private-use characters are word characters to the tokenizer, so they are here too.
        assert_eq!(parse("a\u{E000}b").unwrap(), words(&["a\u{E000}b"]));
    }

    #[test]
    fn queries_without_words_or_past_the_limits_are_refused() {
        for empty in ["", "   ", "\"", "\"\"\"\"", "*", "***", "()", "- ^ :", "🦀 🦀"] {
            assert_eq!(parse(empty), Err("the search has no words".into()), "{empty:?}");
        }
        assert!(parse("ab*").unwrap_err().contains("at least 3"));
        assert!(parse("\"jane d\"*").unwrap_err().contains("at least 3"));
        assert!(parse(&"x".repeat(257)).unwrap_err().contains("at most 256"));
        assert!(parse(&"w ".repeat(17)).unwrap_err().contains("17 terms"));
        assert!(parse(&"y".repeat(65)).unwrap_err().contains("at most 64"));
    }

    #[test]
    fn every_term_is_quoted_and_kept_to_the_field_columns() {
        let terms = parse_query("refund \"jane doe\" prin* say\"\"", QueryLimits::default()).unwrap();
        assert_eq!(render_fts5(&terms), "\"refund\" AND \"jane doe\" AND \"prin\" * AND \"say\"");
    }

    #[test]
    fn hostile_queries_are_valid_fts5_or_refused_never_an_error_of_the_engine() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch(&create_table_sql("document_search")).unwrap();
        db.execute_batch("INSERT INTO document_search (rowid, c0) VALUES (1, 'near and or not refund');").unwrap();
        let mut inputs: Vec<String> = [
            "\"",
            "\"\"\"\"",
            "*",
            "a*",
            "NEAR(",
            "AND OR NOT",
            "c0:x",
            "{scope}:k1",
            "^x",
            "-x",
            "x OR scope:kabc",
            "\"a\" * *",
            "(((",
            "a\"b\"c*",
            "é*",
            "***abc",
            "abc***",
            "\"abc\"**",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // A few thousand strings over an alphabet of punctuation and words.
        let alphabet = ["\"", "*", "(", ")", ":", "^", "-", "+", "{", "}", " ", "NEAR", "AND", "abc", "é", "c0", "\\"];
        let mut seed: u64 = 7;
        for _ in 0..5_000 {
            let mut s = String::new();
            for _ in 0..(seed % 12) {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                s.push_str(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            inputs.push(s);
        }
        let mut ran = 0;
        for input in &inputs {
            let Ok(terms) = parse_query(input, QueryLimits::default()) else { continue };
            let expr = render_fts5(&terms);
            let result: rusqlite::Result<Vec<i64>> = db
                .prepare("SELECT rowid FROM document_search WHERE document_search MATCH ?1")
                .and_then(|mut s| s.query_map([&expr], |r| r.get(0))?.collect());
            assert!(result.is_ok(), "{input:?} -> {expr}: {result:?}");
            ran += 1;
        }
        assert!(ran > 1_000, "only {ran} inputs had words");
        // The words of the row are found as words, whatever the operators around them.
        let terms = parse_query("NEAR( and OR", QueryLimits::default()).unwrap();
        let found: i64 = db
            .query_row(
                "SELECT count(*) FROM document_search WHERE document_search MATCH ?1",
                [render_fts5(&terms)],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(found, 1);
    }

    #[test]
    fn text_is_taken_from_paths_arrays_and_scalars_within_the_caps() {
        let fields = SearchFields(vec![
            SearchField { path: "subject".into(), weight: 4 },
            SearchField { path: "email.subject".into(), weight: 1 },
            SearchField { path: "emails".into(), weight: 1 },
            SearchField { path: "count".into(), weight: 1 },
        ]);
        let text = fields.extract(&json!({
            "subject": "Printer\u{7}jam", "email": { "subject": "Re: jam" },
            "emails": ["a@x.com", 7, { "no": 1 }, "b@y.org"], "count": 12
        }));
        assert_eq!(text, ["Printer jam".to_owned(), "Re: jam".into(), "a@x.com\n7\nb@y.org".into(), "12".into()]);
        let missing = fields.extract(&json!({ "subject": { "nested": "x" }, "email": "flat" }));
        assert_eq!(missing, SearchText::default());
        // Caps cut at a character boundary.
        let big = fields.extract(&json!({ "subject": "é".repeat(40_000), "emails": ["ü".repeat(40_000)] }));
        assert_eq!(big[0].len(), MAX_FIELD_BYTES);
        assert!(big[0].chars().all(|c| c == 'é'));
        assert_eq!(big[2].len(), MAX_DOCUMENT_BYTES - MAX_FIELD_BYTES);
    }

    #[test]
    fn cursors_belong_to_their_query() {
        let mine = fingerprint(&["cases", "q1"]);
        let cursor = encode_cursor(mine, 40);
        assert_eq!(decode_cursor(&cursor, mine), Some(40));
        assert_eq!(decode_cursor(&cursor, fingerprint(&["cases", "q2"])), None);
        assert_eq!(decode_cursor("s2.garbage", mine), None);
        assert_eq!(decode_cursor("k1.abc", mine), None);
        assert_eq!(decode_cursor(&encode_cursor(mine, 0), mine), None);
        assert_eq!(decode_cursor(&encode_cursor(mine, MAX_OFFSET + 1), mine), None);
    }

    #[test]
    fn table_names_differ_per_scope_and_are_identifiers() {
        let a = table_name("acme", "crm", "cases");
        assert_eq!(a.len(), "search_".len() + 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert_ne!(a, table_name("acme", "crm", "contacts"));
        assert_ne!(a, table_name("acm", "ecrm", "cases"));
        assert_ne!(a, table_name("globex", "crm", "cases"));
    }
}

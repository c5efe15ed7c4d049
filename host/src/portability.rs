//! One tenant's data of one plugin as a portable file, and that file read back into a
//! tenant (the same or another, on this platform or another).
//!
//! The file is JSON Lines: a header that says what it holds, the tenant's settings and
//! sequences, every document, and a trailer with the counts, so that a file cut short (a
//! dropped download, a full disk) is refused rather than half read:
//!
//! ```text
//! {"format":"keel-plugin-data","format-version":1,"tenant":"acme","plugin":"helpdesk","version":"1.2.0",...}
//! {"kind":"setting","name":"greeting","value":"Hello"}
//! {"kind":"sequence","name":"ticket-number","value":42}
//! {"kind":"document","collection":"tickets","key":"T-1","version":3,"body":{"title":"..."}}
//! {"kind":"end","documents":1,"settings":1,"sequences":1}
//! ```
//!
//! Rules:
//! - documents keep their bodies as stored (line breaks between JSON tokens become spaces,
//!   so each document stays on its line) and their versions;
//! - secret settings are never exported: the header names them (`secrets-omitted`) so the
//!   admin importing the file knows what to set again;
//! - an import goes into a tenant where the plugin is switched off and has stored nothing,
//!   and is all or nothing: it commits in batches, and if any line is refused (or the file
//!   ends early) what it had committed is removed again, leaving the tenant as before;
//! - the file's plugin version may not be newer than the installed one (its documents could
//!   hold what the installed version does not understand); an older one is read as it is,
//!   unless the installed version migrates that version's data (it would stay in the older
//!   shape, and no upgrade would migrate it): that file goes into a tenant on its own
//!   version, which then upgrades.

use crate::plugins::LoadedPlugin;
use crate::storage::{Background, Condition, DocumentStore, Read, Scope, StoreError, Write, WriteAudit, WriteOp};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::sync::Arc;

/// The header's `format`.
pub const FORMAT: &str = "keel-plugin-data";
/// The header's `format-version`: what this host writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Documents read per page while exporting.
const EXPORT_PAGE: u32 = 500;
/// Documents committed together while importing (fewer when they are large).
const IMPORT_BATCH: usize = 500;

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub format_version: u32,
    /// The tenant it was exported from.
    pub tenant: String,
    pub plugin: String,
    /// The plugin version that wrote the data.
    pub version: semver::Version,
    /// That version's artifact digest.
    pub digest: String,
    /// Milliseconds since the Unix epoch.
    pub exported_at: i64,
    /// Whether the plugin was switched on for the tenant when the export began: if it was,
    /// documents written during the export may or may not be in it (each one that is, is
    /// whole, as committed). Switch it off first for an export that is one moment's data.
    pub plugin_enabled: bool,
    /// The collections that held documents.
    pub collections: Vec<String>,
    /// Secret settings the tenant had set, by name; their values are not in the file.
    pub secrets_omitted: Vec<String>,
}

/// What an export or import held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counts {
    pub documents: u64,
    pub settings: u64,
    pub sequences: u64,
}

/// A line after the header, as read. One flat shape rather than a tagged enum: a document's
/// body is kept as the text it was written as, which serde's tagged enums cannot borrow.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine<'a> {
    kind: &'a str,
    name: Option<String>,
    value: Option<serde_json::Value>,
    collection: Option<String>,
    key: Option<String>,
    version: Option<u64>,
    #[serde(borrow)]
    body: Option<&'a RawValue>,
    documents: Option<u64>,
    settings: Option<u64>,
    sequences: Option<u64>,
}

/// Writes export lines.
pub mod lines {
    use super::*;

    pub fn header(header: &Header) -> String {
        let mut line = serde_json::to_string(header).expect("a header serializes");
        line.push('\n');
        line
    }

    pub fn setting(name: &str, value: &str) -> String {
        format!("{}\n", serde_json::json!({ "kind": "setting", "name": name, "value": value }))
    }

    pub fn sequence(name: &str, value: u64) -> String {
        format!("{}\n", serde_json::json!({ "kind": "sequence", "name": name, "value": value }))
    }

    /// A document's line, its body as stored. A stored body is valid JSON, so a line break in
    /// it can only be whitespace between tokens: it becomes a space and the line stays one.
    pub fn document(out: &mut String, collection: &str, key: &str, version: u64, body: &str) {
        use std::fmt::Write as _;
        let quoted = |s: &str| serde_json::to_string(s).expect("a string serializes");
        let _ = write!(
            out,
            "{{\"kind\":\"document\",\"collection\":{},\"key\":{},\"version\":{version},\"body\":",
            quoted(collection),
            quoted(key)
        );
        if body.contains(['\n', '\r']) {
            out.push_str(&body.replace(['\n', '\r'], " "));
        } else {
            out.push_str(body);
        }
        out.push_str("}\n");
    }

    pub fn end(counts: Counts) -> String {
        let Counts { documents, settings, sequences } = counts;
        format!("{{\"kind\":\"end\",\"documents\":{documents},\"settings\":{settings},\"sequences\":{sequences}}}\n")
    }
}

/// One scope's documents as export lines, a page at a time: collection by collection, in
/// key order.
pub struct DocumentPages {
    scope: Scope,
    collections: std::collections::VecDeque<String>,
    after: Option<crate::storage::Position>,
}

impl DocumentPages {
    pub fn new(scope: Scope, collections: Vec<String>) -> Self {
        DocumentPages { scope, collections: collections.into(), after: None }
    }

    /// The next page's lines and how many documents they hold; `None` after the last.
    pub async fn next(&mut self, store: &dyn DocumentStore) -> Result<Option<(String, u64)>, StoreError> {
        while let Some(collection) = self.collections.front() {
            let range = crate::storage::KeyRange {
                collection: collection.clone(),
                drive: None,
                residual: Vec::new(),
                after: self.after.take(),
                limit: EXPORT_PAGE,
                descending: false,
                max_bytes: 4 << 20,
                deadline: None,
            };
            let page = store.scan(&self.scope, &range).await?;
            let Some((last, _)) = page.last() else {
                self.collections.pop_front();
                continue;
            };
            self.after = Some(last.clone());
            let mut chunk = String::new();
            for (_, doc) in &page {
                lines::document(&mut chunk, collection, &doc.key, doc.version, &doc.body);
            }
            return Ok(Some((chunk, page.len() as u64)));
        }
        Ok(None)
    }
}

/// Why an import was refused. Whatever it had committed is removed again before the refusal
/// is answered.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {reason}")]
    Malformed { line: u64, reason: String },
    #[error("the file does not start with a `{FORMAT}` header ({0})")]
    NotAnExport(String),
    #[error("the file is format version {0}; this platform reads version {FORMAT_VERSION}")]
    UnsupportedVersion(u32),
    #[error("the file holds data of plugin `{found}`, not `{expected}`")]
    PluginMismatch { expected: String, found: String },
    #[error(
        "the file was written by version {exported} of `{plugin}`, newer than the installed {installed}; install that version first"
    )]
    NewerThanPlugin { plugin: String, exported: semver::Version, installed: semver::Version },
    #[error(
        "the file was written by version {exported} of `{plugin}`, whose data the installed {installed} migrates (`{from}`); import it into a tenant on {exported} and upgrade from there"
    )]
    NeedsMigration { plugin: String, exported: semver::Version, installed: semver::Version, from: String },
    #[error("line {line}: collection `{collection}` is not declared by the installed version")]
    UnknownCollection { line: u64, collection: String },
    #[error("line {line}: document `{collection}/{key}` {reason}")]
    InvalidDocument { line: u64, collection: String, key: String, reason: String },
    #[error("line {line}: document `{collection}/{key}` appears twice")]
    Duplicate { line: u64, collection: String, key: String },
    #[error("line {line}: {reason}")]
    InvalidSetting { line: u64, reason: String },
    #[error("line {line} is longer than {limit} bytes")]
    LineTooLong { line: u64, limit: usize },
    #[error("the file ends without its `end` line: it was cut short")]
    Truncated,
    #[error("the file's `end` line counts {declared} {what}, but it holds {found}: it was altered or cut")]
    CountMismatch { what: &'static str, declared: u64, found: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads an export into one tenant's scope, line by line. Create it with [`Importer::new`],
/// feed it every line with [`Importer::line`], then [`Importer::finish`]; on any error, if
/// [`Importer::wrote`], purge the scope (it held nothing before).
pub struct Importer {
    store: Arc<dyn DocumentStore>,
    scope: Scope,
    /// The installed version the data goes into.
    plugin: Arc<LoadedPlugin>,
    limits: crate::storage::StorageLimits,
    audit: WriteAudit,
    now_ms: i64,
    line: u64,
    header: Option<Header>,
    ended: Option<Counts>,
    found: Counts,
    batch: Vec<Write>,
    batch_bytes: usize,
    /// Keys of the batch: a duplicate within one commit would be two writes of one key.
    batch_keys: HashSet<(String, String)>,
    settings: Vec<(String, String)>,
    sequences: Vec<(String, u64)>,
    /// Whether anything was committed (and so must be removed on a refusal).
    wrote: bool,
}

impl Importer {
    /// An import into `tenant`'s data of `plugin`, as its installed version stores it.
    pub fn new(
        store: Arc<dyn DocumentStore>,
        tenant: &str,
        plugin: Arc<LoadedPlugin>,
        limits: crate::storage::StorageLimits,
        audit: WriteAudit,
        now_ms: i64,
    ) -> Self {
        Importer {
            store,
            scope: Scope { tenant: tenant.to_owned(), plugin: plugin.record.id.clone() },
            plugin,
            limits,
            audit,
            now_ms,
            line: 0,
            header: None,
            ended: None,
            found: Counts::default(),
            batch: Vec::new(),
            batch_bytes: 0,
            batch_keys: HashSet::new(),
            settings: Vec::new(),
            sequences: Vec::new(),
            wrote: false,
        }
    }

    /// The longest line accepted: a document at the size limit, with room for its key,
    /// collection and framing.
    pub fn max_line_bytes(limits: &crate::storage::StorageLimits) -> usize {
        limits.max_document_bytes + 6 * limits.max_key_bytes + 4096
    }

    /// The header, once read.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Lines read so far.
    pub fn lines_read(&self) -> u64 {
        self.line
    }

    /// Reads one line (without its line break). Blank lines are skipped.
    pub async fn line(&mut self, text: &str) -> Result<(), ImportError> {
        self.line += 1;
        let line = self.line;
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() {
            return Ok(());
        }
        let malformed = |reason: String| ImportError::Malformed { line, reason };
        if self.header.is_none() {
            let header: Header = serde_json::from_str(text).map_err(|e| ImportError::NotAnExport(e.to_string()))?;
            if header.format != FORMAT {
                return Err(ImportError::NotAnExport(format!("its format is `{}`", header.format)));
            }
            if header.format_version != FORMAT_VERSION {
                return Err(ImportError::UnsupportedVersion(header.format_version));
            }
            if header.plugin != self.plugin.record.manifest.id {
                return Err(ImportError::PluginMismatch {
                    expected: self.plugin.record.manifest.id.clone(),
                    found: header.plugin,
                });
            }
            let manifest = &self.plugin.record.manifest;
            if header.version > manifest.version {
                return Err(ImportError::NewerThanPlugin {
                    plugin: header.plugin,
                    exported: header.version,
                    installed: manifest.version.clone(),
                });
            }
            // Read as it is, data an installed migration would rewrite would be kept in the
            // older shape under the newer version, and no upgrade would ever migrate it.
            if let Some(migration) = manifest.migrations.iter().find(|m| m.covers(&header.version)) {
                return Err(ImportError::NeedsMigration {
                    plugin: header.plugin,
                    exported: header.version,
                    installed: manifest.version.clone(),
                    from: migration.from.to_string(),
                });
            }
            self.header = Some(header);
            return Ok(());
        }
        if self.ended.is_some() {
            return Err(malformed("nothing may follow the `end` line".into()));
        }
        let raw: RawLine = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        let missing = |field: &str| malformed(format!("a `{}` line needs `{field}`", raw.kind));
        match raw.kind {
            "document" => {
                let collection = raw.collection.clone().ok_or_else(|| missing("collection"))?;
                let key = raw.key.clone().ok_or_else(|| missing("key"))?;
                let version = raw.version.ok_or_else(|| missing("version"))?;
                let body = raw.body.ok_or_else(|| missing("body"))?.get();
                self.document(collection, key, version, body).await
            }
            "setting" => {
                let name = raw.name.ok_or_else(|| missing("name"))?;
                let Some(serde_json::Value::String(value)) = raw.value else {
                    return Err(malformed("a setting's `value` is its text, a string".into()));
                };
                self.check_setting(&name, &value)?;
                if self.settings.iter().any(|(n, _)| *n == name) {
                    return Err(ImportError::InvalidSetting {
                        line,
                        reason: format!("setting `{name}` appears twice"),
                    });
                }
                self.settings.push((name, value));
                self.found.settings += 1;
                Ok(())
            }
            "sequence" => {
                let name = raw.name.ok_or_else(|| missing("name"))?;
                let value = raw
                    .value
                    .as_ref()
                    .and_then(serde_json::Value::as_u64)
                    .filter(|v| *v >= 1)
                    .ok_or_else(|| malformed(format!("sequence `{name}` needs a `value` of at least 1")))?;
                if !crate::storage::valid_sequence_name(&name) {
                    return Err(malformed(format!("`{name}` is not a sequence name")));
                }
                if self.sequences.iter().any(|(n, _)| *n == name) {
                    return Err(malformed(format!("sequence `{name}` appears twice")));
                }
                self.sequences.push((name, value));
                self.found.sequences += 1;
                Ok(())
            }
            "end" => {
                let counts = Counts {
                    documents: raw.documents.ok_or_else(|| missing("documents"))?,
                    settings: raw.settings.ok_or_else(|| missing("settings"))?,
                    sequences: raw.sequences.ok_or_else(|| missing("sequences"))?,
                };
                self.ended = Some(counts);
                Ok(())
            }
            other => Err(malformed(format!("unknown line kind `{other}`"))),
        }
    }

    fn check_setting(&self, name: &str, value: &str) -> Result<(), ImportError> {
        let line = self.line;
        let spec = self.plugin.record.manifest.settings.iter().find(|s| s.name == name).ok_or_else(|| {
            ImportError::InvalidSetting { line, reason: format!("`{name}` is not a setting of the installed version") }
        })?;
        if spec.secret {
            return Err(ImportError::InvalidSetting {
                line,
                reason: format!("`{name}` is a secret: secrets are set by an admin, not imported"),
            });
        }
        if !spec.accepts_text(value) {
            return Err(ImportError::InvalidSetting {
                line,
                reason: format!("`{value}` is not a value setting `{name}` accepts"),
            });
        }
        Ok(())
    }

    async fn document(&mut self, collection: String, key: String, version: u64, body: &str) -> Result<(), ImportError> {
        let line = self.line;
        let Some(indexes) = self.plugin.collections.get(&collection) else {
            return Err(ImportError::UnknownCollection { line, collection });
        };
        let invalid = |reason: String| ImportError::InvalidDocument {
            line,
            collection: collection.clone(),
            key: key.clone(),
            reason,
        };
        if key.is_empty() || key.len() > self.limits.max_key_bytes || key.chars().any(char::is_control) {
            return Err(invalid(format!(
                "has an invalid key (1-{} bytes, no control characters)",
                self.limits.max_key_bytes
            )));
        }
        if version == 0 {
            return Err(invalid("has version 0; versions start at 1".into()));
        }
        if body.len() > self.limits.max_document_bytes {
            return Err(invalid(format!(
                "is {} bytes, over the {}-byte limit",
                body.len(),
                self.limits.max_document_bytes
            )));
        }
        let value: serde_json::Value = serde_json::from_str(body).map_err(|e| invalid(e.to_string()))?;
        let index = indexes.entries(&value).map_err(|(field, reason)| invalid(format!("field `{field}` {reason}")))?;
        let search = indexes.search.as_ref().map(|fields| fields.extract(&value));
        if !self.batch_keys.insert((collection.clone(), key.clone())) {
            return Err(ImportError::Duplicate { line, collection, key });
        }
        let size = key.len() + body.len();
        if !self.batch.is_empty()
            && (self.batch.len() >= IMPORT_BATCH.min(self.limits.max_writes_per_call)
                || self.batch_bytes + size > self.limits.max_commit_bytes)
        {
            self.flush().await?;
            self.batch_keys.insert((collection.clone(), key.clone()));
        }
        self.batch_bytes += size;
        self.batch.push(Write {
            collection,
            key,
            // Into a scope that held nothing: a key committed by an earlier batch is a duplicate.
            condition: Condition::Absent,
            version,
            op: WriteOp::Put { body: body.to_owned(), index, search },
        });
        self.found.documents += 1;
        Ok(())
    }

    /// Commits the documents read since the last commit.
    async fn flush(&mut self) -> Result<(), ImportError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let writes = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.batch_keys.clear();
        // The entries follow the installed version's index definitions; an install that
        // changes them meanwhile must not be undone by this commit.
        let written: std::collections::BTreeSet<&str> = writes.iter().map(|w| w.collection.as_str()).collect();
        let reads: Vec<Read> = written
            .into_iter()
            .filter_map(|c| {
                let indexes = self.plugin.collections.get(c)?;
                Some(Read::Indexes { collection: c.to_owned(), signature: indexes.signature() })
            })
            .collect();
        self.wrote = true;
        match self
            .store
            .commit_with(&self.scope, &writes, &reads, &Background::default(), self.now_ms, &self.audit)
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { collection, key, .. }) => {
                Err(ImportError::Duplicate { line: self.line, collection, key })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Commits what is left, checks the trailer, then sets the sequences. Returns what was
    /// read and the settings to apply (last, by the caller: they are not the store's).
    pub async fn finish(&mut self) -> Result<(Counts, Vec<(String, String)>), ImportError> {
        if self.header.is_none() {
            return Err(ImportError::NotAnExport("the file is empty".into()));
        }
        let Some(declared) = self.ended else { return Err(ImportError::Truncated) };
        for (what, declared, found) in [
            ("documents", declared.documents, self.found.documents),
            ("settings", declared.settings, self.found.settings),
            ("sequences", declared.sequences, self.found.sequences),
        ] {
            if declared != found {
                return Err(ImportError::CountMismatch { what, declared, found });
            }
        }
        self.flush().await?;
        for (name, value) in &self.sequences {
            self.wrote = true;
            self.store.next_in_sequence(&self.scope, name, Some(value - 1)).await?;
        }
        Ok((self.found, std::mem::take(&mut self.settings)))
    }

    /// Whether a refusal now must remove what was committed.
    pub fn wrote(&self) -> bool {
        self.wrote
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_stays_on_one_line_with_its_body_as_stored() {
        let mut out = String::new();
        // Pretty-printed JSON: its line breaks are whitespace between tokens.
        let body = "{\n  \"title\": \"a \\\"b\\\"\\nc\",\r\n  \"n\": 1\n}";
        lines::document(&mut out, "tickets", "T\"1", 7, body);
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        let line: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(line["key"], "T\"1");
        assert_eq!(line["version"], 7);
        assert_eq!(line["body"], serde_json::from_str::<serde_json::Value>(body).unwrap());
        // A compact body is kept byte for byte, key order included.
        let mut out = String::new();
        lines::document(&mut out, "c", "k", 1, r#"{"z":1,"a":[true,null]}"#);
        assert_eq!(
            out,
            "{\"kind\":\"document\",\"collection\":\"c\",\"key\":\"k\",\"version\":1,\"body\":{\"z\":1,\"a\":[true,null]}}\n"
        );
    }

    #[test]
    fn the_end_line_names_its_kind_first_and_counts_everything() {
        let end = lines::end(Counts { documents: 3, settings: 1, sequences: 2 });
        assert_eq!(end, "{\"kind\":\"end\",\"documents\":3,\"settings\":1,\"sequences\":2}\n");
    }
}

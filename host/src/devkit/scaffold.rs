//! `keel plugin new`: a plugin project that builds and passes its tests as written.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("plugin names are 2-32 characters of a-z, 0-9 and '-', starting with a letter")]
    InvalidName,
    #[error("{0} already exists")]
    Exists(PathBuf),
    #[error("the keel-sdk crate was not found at {0}; pass --sdk <path to keel's sdk/>")]
    NoSdk(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    (2..=32).contains(&name.len())
        && matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

/// Writes `parent/name/` with Cargo.toml, plugin.toml and src/lib.rs depending on the SDK at
/// `sdk`. Returns the project directory.
pub fn scaffold(parent: &Path, name: &str, sdk: &Path) -> Result<PathBuf, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::InvalidName);
    }
    if !sdk.join("Cargo.toml").is_file() {
        return Err(ScaffoldError::NoSdk(sdk.to_path_buf()));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let sdk = sdk.canonicalize().unwrap_or_else(|_| sdk.to_path_buf());
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        ("plugin.toml", plugin_toml(name)),
        ("src/lib.rs", lib_rs(name)),
        (".gitignore", "/target\n".to_owned()),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ScaffoldError::Write { path: parent.into(), source })?;
        }
        std::fs::write(&path, text).map_err(|source| ScaffoldError::Write { path, source })?;
    }
    Ok(dir)
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A project of its own, even when created inside another workspace.
[workspace]

[lib]
# cdylib: the WebAssembly component; rlib: native unit tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
keel-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = "debuginfo"
"#,
        sdk = sdk.display().to_string().replace('\\', "/"),
    )
}

fn plugin_toml(name: &str) -> String {
    format!(
        r##"# The manifest: what the host enforces for this plugin. See the Keel plugin guide.
id = "{name}"
version = "0.1.0"
name = "{name}"
description = "Notes, one per key."
capabilities = ["storage"]

[limits]
memory-mb = 16
timeout-ms = 1000

[permissions]
"{name}.note.read" = "Read notes"
"{name}.note.write" = "Write notes"

[[collections]]
name = "notes"

[[routes]]
method = "GET"
path = "/notes/{{key}}"
permission = "{name}.note.read"
summary = "Read a note"
params.key = {{ "$ref" = "#/schemas/Key" }}
output = {{ "$ref" = "#/schemas/StoredNote" }}

[[routes]]
method = "PUT"
path = "/notes/{{key}}"
permission = "{name}.note.write"
summary = "Write a note"
params.key = {{ "$ref" = "#/schemas/Key" }}
input = {{ "$ref" = "#/schemas/Note" }}
output = {{ "$ref" = "#/schemas/StoredNote" }}

# What the routes take and answer (JSON Schema): the host refuses a request that breaks
# them before the plugin runs, and lists them at GET /v1/plugins/{name}/openapi.json.
[schemas.Key]
type = "string"
minLength = 1
maxLength = 128

[schemas.Note]
type = "object"
additionalProperties = false
required = ["text"]
properties.text = {{ type = "string", minLength = 1, maxLength = 10000, pattern = '\S' }}

[schemas.StoredNote]
type = "object"
required = ["key", "text", "version"]
properties.key = {{ type = "string" }}
properties.text = {{ type = "string" }}
properties.version = {{ type = "integer", minimum = 1 }}
"##
    )
}

fn lib_rs(name: &str) -> String {
    format!(
        r#"//! The `{name}` plugin: notes stored by key.

use keel_sdk::{{export_plugin, Collection, Error, Plugin, Request, Response, Router}};
use serde::{{Deserialize, Serialize}};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {{
    pub text: String,
}}

const NOTES: Collection<Note> = Collection::new("notes");

/// The rule, kept pure so it is tested natively.
pub fn checked(note: Note) -> Result<Note, Error> {{
    let text = note.text.trim().to_owned();
    if text.is_empty() || text.len() > 10_000 {{
        return Err(Error::invalid("invalid-note", "`text` must be 1 to 10000 characters"));
    }}
    Ok(Note {{ text }})
}}

fn get_note(req: &Request) -> Result<Response, Error> {{
    let key = req.param("key")?;
    let note = NOTES.get(key)?.ok_or_else(|| Error::not_found("note-not-found", format!("no note `{{key}}`")))?;
    Response::json(200, &serde_json::json!({{ "key": key, "text": note.value.text, "version": note.version }}))
}}

fn put_note(req: &Request) -> Result<Response, Error> {{
    let key = req.param("key")?;
    let note = checked(req.json()?)?;
    let version = NOTES.upsert(key, &note)?;
    Response::json(200, &serde_json::json!({{ "key": key, "text": note.text, "version": version }}))
}}

struct Notes;

impl Plugin for Notes {{
    fn router() -> Router {{
        Router::new().get("/notes/{{key}}", get_note).put("/notes/{{key}}", put_note)
    }}
}}

export_plugin!(Notes);

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn notes_are_trimmed_and_empty_ones_refused() {{
        assert_eq!(checked(Note {{ text: "  hi ".into() }}).unwrap().text, "hi");
        assert_eq!(checked(Note {{ text: "   ".into() }}).unwrap_err().code(), "invalid-note");
    }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaffolded_manifest_describes_its_routes() {
        let manifest = crate::manifest::Manifest::parse(&plugin_toml("demo"), &crate::devkit::default_policy())
            .expect("the scaffold's manifest is valid");
        let contracts = manifest.contracts().expect("its contracts compile");
        assert!(contracts.iter().all(|c| c.output.is_some() && c.params.is_some()));
        let put = &contracts[1];
        let input = put.input.as_ref().expect("PUT takes a note");
        assert!(input.check(&serde_json::json!({"text": "hi"}), 20).is_empty());
        assert_eq!(input.check(&serde_json::json!({"text": "  "}), 20)[0].field, "text");
    }
}

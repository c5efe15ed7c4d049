//! The plugin artifact: one WebAssembly component file with the plugin's manifest embedded
//! as a top-level custom section. This module reads and writes that envelope; it does not
//! compile anything.

use sha2::{Digest, Sha256};
use wasmparser::{Encoding, Parser, Payload};

/// Name of the custom section that holds the manifest (TOML text).
pub const MANIFEST_SECTION: &str = "keel:manifest";

/// Why bytes are not a plugin artifact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    #[error("the upload is not a WebAssembly binary")]
    NotWasm,
    #[error("the upload is a core WebAssembly module, not a component; build it as a component (wasm32-wasip2)")]
    NotComponent,
    #[error("the component is malformed: {0}")]
    Malformed(String),
    #[error("the component has no `{MANIFEST_SECTION}` section; package it with `cargo xtask package`")]
    MissingManifest,
    #[error("the component has more than one `{MANIFEST_SECTION}` section")]
    DuplicateManifest,
    #[error("the `{MANIFEST_SECTION}` section is not UTF-8")]
    ManifestNotText,
}

/// Hex sha-256 of the artifact bytes: its identity.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks the envelope and returns the embedded manifest text.
pub fn manifest_text(bytes: &[u8]) -> Result<String, ArtifactError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(ArtifactError::NotWasm);
    }
    let mut depth = 0usize;
    let mut found: Option<String> = None;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| ArtifactError::Malformed(e.to_string()))? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == Encoding::Module {
                    return Err(ArtifactError::NotComponent);
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(reader) if depth == 1 && reader.name() == MANIFEST_SECTION => {
                if found.is_some() {
                    return Err(ArtifactError::DuplicateManifest);
                }
                let text = std::str::from_utf8(reader.data()).map_err(|_| ArtifactError::ManifestNotText)?;
                found = Some(text.to_owned());
            }
            _ => {}
        }
    }
    found.ok_or(ArtifactError::MissingManifest)
}

/// Returns `component` with `manifest` embedded (replacing any manifest already there).
pub fn embed_manifest(component: &[u8], manifest: &str) -> Result<Vec<u8>, ArtifactError> {
    match manifest_text(component) {
        Ok(_) => return Err(ArtifactError::DuplicateManifest),
        Err(ArtifactError::MissingManifest) => {}
        Err(e) => return Err(e),
    }
    let mut out = component.to_vec();
    let mut content = Vec::new();
    leb128(&mut content, MANIFEST_SECTION.len() as u64);
    content.extend_from_slice(MANIFEST_SECTION.as_bytes());
    content.extend_from_slice(manifest.as_bytes());
    out.push(0); // custom section id
    leb128(&mut out, content.len() as u64);
    out.extend_from_slice(&content);
    Ok(out)
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: magic, component-layer version.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\x00\x00\x00";

    #[test]
    fn embedded_manifest_round_trips() {
        let packaged = embed_manifest(EMPTY_COMPONENT, "id = \"x\"").unwrap();
        assert_eq!(manifest_text(&packaged).unwrap(), "id = \"x\"");
        assert_eq!(embed_manifest(&packaged, "again"), Err(ArtifactError::DuplicateManifest));
    }

    #[test]
    fn envelopes_are_told_apart() {
        assert_eq!(manifest_text(b"PK\x03\x04 a zip"), Err(ArtifactError::NotWasm));
        assert_eq!(manifest_text(EMPTY_MODULE), Err(ArtifactError::NotComponent));
        assert_eq!(manifest_text(EMPTY_COMPONENT), Err(ArtifactError::MissingManifest));
        assert!(matches!(manifest_text(b"\0asm\x0d\x00\x01\x00\x07\xff"), Err(ArtifactError::Malformed(_))));
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(digest(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}

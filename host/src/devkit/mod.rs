//! Plugin developer tools behind `keel plugin new` and `keel plugin build`: a scaffold that
//! builds and passes its tests untouched, and a build that checks an artifact exactly as the
//! server will at upload.

mod dev;
mod scaffold;

pub use dev::{DevError, DevOptions, dev};
pub use scaffold::{ScaffoldError, scaffold};

use crate::artifact;
use crate::clock::Clock;
use crate::config::LimitsConfig;
use crate::manifest::{LimitPolicy, Manifest, ManifestError};
use crate::runtime::{PrepareError, Runtime, RuntimeError, RuntimeSettings};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Heap a Rust plugin's linear memory starts with, beyond its stack and static data.
pub const INITIAL_HEAP_BYTES: u64 = 1 << 20;

/// The `cargo --config` every plugin is built with. `--config` arrays are joined with the
/// build's own, so it adds to the author's flags rather than replacing them (only
/// `RUSTFLAGS` in the environment overrides it).
///
/// Without it, wasm-ld ends a plugin's initial memory a few hundred bytes past its static
/// data: the first allocations of every call grow memory, and as each call is a fresh
/// instance, every call pays the grow and, when its slot is reset, the shrink (one
/// `mprotect` each, which in a multi-threaded server is a TLB shootdown on every core).
/// Memory that starts accessible costs nothing until it is touched.
pub fn wasm_build_config() -> String {
    format!(r#"target.{WASM_TARGET}.rustflags=["-C", "link-arg=--initial-heap={INITIAL_HEAP_BYTES}"]"#)
}

/// The server's default limits, which uploads are checked against.
pub fn default_policy() -> LimitPolicy {
    let l = LimitsConfig::default();
    LimitPolicy {
        max_memory_mb: l.max_memory_mb,
        max_timeout_ms: l.max_timeout_ms,
        default_memory_mb: l.default_memory_mb,
        default_timeout_ms: l.default_timeout_ms,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} has no [package] name")]
    NoPackageName { path: PathBuf },
    #[error("plugin.toml: {0}")]
    Manifest(#[from] ManifestError),
    #[error("`{command}` failed")]
    Command { command: String },
    #[error("the build produced no component at {0}")]
    NoComponent(PathBuf),
    #[error("the component would be refused at upload: {0}")]
    Refused(#[from] PrepareError),
    #[error("the component would be refused at upload: {0}")]
    Routes(#[from] crate::runtime::RouteCheckError),
    #[error(transparent)]
    Artifact(#[from] artifact::ArtifactError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Installs the wasm target with rustup when it is missing.
pub fn ensure_wasm_target() -> Result<(), BuildError> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == WASM_TARGET) => Ok(()),
        Ok(_) => run(Command::new("rustup").args(["target", "add", WASM_TARGET])),
        Err(_) => Ok(()), // no rustup: cargo will say whether the target exists
    }
}

fn run(command: &mut Command) -> Result<(), BuildError> {
    let shown = format!("{command:?}");
    match command.status() {
        Ok(s) if s.success() => Ok(()),
        _ => Err(BuildError::Command { command: shown }),
    }
}

/// Bytes between the end of a component's static data and the end of its initial linear
/// memory: the heap a call has before it must grow memory. `None` when the component has no
/// single linear memory (or does not parse). A component built by `keel plugin build` has at
/// least [`INITIAL_HEAP_BYTES`]. Assumes the stack comes first, as Rust's wasm targets lay it
/// out; a stack placed after the data would count as room.
pub fn initial_heap_room(component: &[u8]) -> Option<u64> {
    use wasmparser::{DataKind, Operator, Parser, Payload};
    let (mut initial, mut memories, mut data_end) = (0u64, 0, 0u64);
    for payload in Parser::new(0).parse_all(component) {
        match payload.ok()? {
            Payload::MemorySection(section) => {
                for memory in section {
                    initial = memory.ok()?.initial.checked_mul(65536)?;
                    memories += 1;
                }
            }
            Payload::DataSection(section) => {
                for segment in section {
                    let segment = segment.ok()?;
                    if let DataKind::Active { offset_expr, .. } = segment.kind
                        && let Ok(Operator::I32Const { value }) = offset_expr.get_operators_reader().read()
                    {
                        data_end = data_end.max(u64::from(value as u32) + segment.data.len() as u64);
                    }
                }
            }
            _ => {}
        }
    }
    (memories == 1).then(|| initial.saturating_sub(data_end))
}

/// A freshly built plugin: the bare component and its manifest.
pub struct Built {
    pub component: Vec<u8>,
    pub manifest_text: String,
    pub manifest: Manifest,
    /// The workspace target directory the build used.
    pub target_dir: PathBuf,
}

/// Builds the plugin crate in `dir` for wasm32-wasip2 (release) and reads its manifest.
pub fn build_component(dir: &Path) -> Result<Built, BuildError> {
    let manifest_path = dir.join("plugin.toml");
    let manifest_text = std::fs::read_to_string(&manifest_path)
        .map_err(|source| BuildError::Read { path: manifest_path.clone(), source })?;
    let policy = default_policy();
    let manifest = Manifest::parse(&manifest_text, &policy)?;
    let cargo_toml = dir.join("Cargo.toml");
    let cargo_text =
        std::fs::read_to_string(&cargo_toml).map_err(|source| BuildError::Read { path: cargo_toml.clone(), source })?;
    let package: toml::Value =
        toml::from_str(&cargo_text).map_err(|_| BuildError::NoPackageName { path: cargo_toml.clone() })?;
    let crate_name = package
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| BuildError::NoPackageName { path: cargo_toml.clone() })?
        .replace('-', "_");

    ensure_wasm_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .current_dir(dir)
        .args(["build", "--release", "--target", WASM_TARGET, "--config"])
        .arg(wasm_build_config()))?;
    let target_dir = target_dir(dir)?;
    let component_path = target_dir.join(WASM_TARGET).join("release").join(format!("{crate_name}.wasm"));
    let component = std::fs::read(&component_path).map_err(|_| BuildError::NoComponent(component_path.clone()))?;
    Ok(Built { component, manifest_text, manifest, target_dir })
}

/// Builds the plugin crate in `dir` for wasm32-wasip2, checks it like the server does, and
/// writes the uploadable artifact. Returns its path.
pub fn build(dir: &Path) -> Result<PathBuf, BuildError> {
    let built = build_component(dir)?;
    if let Some(room) = initial_heap_room(&built.component)
        && room < INITIAL_HEAP_BYTES
    {
        // The build's own settings were replaced (`RUSTFLAGS` in the environment wins).
        eprintln!(
            "warning: the component starts with {room} bytes of heap: every call will grow its memory \
             (RUSTFLAGS replaces the `--initial-heap` link setting keel plugin build adds)"
        );
    }
    let packaged = artifact::embed_manifest(&built.component, &built.manifest_text)?;
    check(&packaged, &built.manifest)?;
    let out = built.target_dir.join("keel").join(format!("{}-{}.wasm", built.manifest.id, built.manifest.version));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|source| BuildError::Write { path: parent.into(), source })?;
    }
    std::fs::write(&out, packaged).map_err(|source| BuildError::Write { path: out.clone(), source })?;
    Ok(out)
}

/// Where cargo puts the plugin's build output: its workspace's target directory (a plugin
/// may be a member of a larger workspace), as `cargo metadata` says.
/// Where cargo puts what it builds for the workspace of `dir` (`CARGO_TARGET_DIR` or the
/// build config when set, else `target/`).
pub fn target_dir(dir: &Path) -> Result<PathBuf, BuildError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(dir).args(["metadata", "--format-version", "1", "--no-deps"]);
    let shown = format!("{command:?}");
    let output = command.output().map_err(|_| BuildError::Command { command: shown.clone() })?;
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|_| BuildError::Command { command: shown.clone() })?;
    metadata["target_directory"].as_str().map(PathBuf::from).ok_or(BuildError::Command { command: shown })
}

/// Compiles, type-checks and compares the routes of the artifact with the server's own
/// runtime code. Blocking: call it outside async tasks (or from `spawn_blocking`).
pub fn check(artifact_bytes: &[u8], manifest: &Manifest) -> Result<(), BuildError> {
    let policy = default_policy();
    let runtime = Runtime::new(
        &RuntimeSettings::new(1, (policy.max_memory_mb as usize) << 20, None, 0),
        Arc::new(Clock::default()),
    )?;
    let prepared = runtime.prepare(&artifact::digest(artifact_bytes), artifact_bytes, manifest)?;
    let probe =
        runtime.check_routes(&prepared.pre, manifest, manifest.memory_bytes(&policy), manifest.timeout(&policy));
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(probe)?,
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BuildError::Runtime(RuntimeError::Engine(e.to_string())))?
            .block_on(probe)?,
    }
    Ok(())
}

#[cfg(test)]
mod heap_room_tests {
    use super::initial_heap_room;

    /// A core module: one memory of `pages` pages, one active data segment of `len` bytes at
    /// `offset` (a LEB128 of up to 3 bytes, as written).
    fn module(pages: u8, offset: &[u8], len: u8) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend([5, 3, 1, 0, pages]); // memory section: one memory, no maximum
        let segment: Vec<u8> = [&[0u8, 0x41][..], offset, &[0x0b, len], &vec![7u8; len as usize]].concat();
        m.extend([11, segment.len() as u8 + 1, 1]);
        m.extend(segment);
        m
    }

    #[test]
    fn room_is_the_initial_memory_past_the_static_data() {
        // Data at 65,536 (i32 LEB128 80 80 04), 10 bytes, in 2 pages: 65,526 bytes of room.
        assert_eq!(initial_heap_room(&module(2, &[0x80, 0x80, 0x04], 10)), Some(65_526));
        // The same data in 1 page ends past the memory: no room, not an underflow.
        assert_eq!(initial_heap_room(&module(1, &[0x80, 0x80, 0x04], 10)), Some(0));
        // No memory at all, and bytes that are not wasm: nothing to say.
        assert_eq!(initial_heap_room(b"\0asm\x01\0\0\0"), None);
        assert_eq!(initial_heap_room(b"not wasm"), None);
    }
}

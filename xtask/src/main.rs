//! Build helper. `cargo xtask <command>`:
//!
//! - `build-plugins`: builds every plugin in `plugins/` for `wasm32-wasip2` (installing the
//!   target if missing), validates its `plugin.toml`, and writes the artifact (component +
//!   embedded manifest) to `target/keel-plugins/{bundled,fixtures}/<id>.wasm`, and signs
//!   the bundled ones (`<id>.wasm.sig`) with the build's key, `target/keel-plugins/
//!   bundle-signing.key` (made on the first build; its public half in `bundle-signing.pub`);
//! - `package <component.wasm> <plugin.toml> <out.wasm>`: packages one component;
//! - `serve [args]`: builds the plugins, then runs `keel serve` with the bundled ones;
//! - `test [args]`: builds the plugins, then runs the whole test suite;
//! - `bench [--quick] [--only a..m] [--check]`: builds the plugins, then runs the benchmark
//!   table (release); `--check` exits non-zero when a ratio target is missed.

use anyhow::{Context, Result, bail};
use keel_host::{artifact, manifest};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Plugins built for wasm32-wasip2: (cargo package, source dir, shipped with the platform?).
const PLUGINS: &[(&str, &str, bool)] = &[
    ("keel-plugin-helpdesk", "plugins/helpdesk", true),
    ("keel-plugin-hr", "plugins/hr", true),
    ("keel-plugin-payroll", "plugins/payroll", true),
    ("keel-plugin-inventory", "plugins/inventory", true),
    ("keel-plugin-crm", "plugins/crm", true),
    ("keel-plugin-hostile", "plugins/fixtures/hostile", false),
    ("keel-plugin-off-world", "plugins/fixtures/off-world", false),
    ("keel-plugin-relay", "plugins/fixtures/relay", false),
    ("keel-plugin-directory", "plugins/fixtures/directory", false),
    ("keel-plugin-directory-alt", "plugins/fixtures/directory-alt", false),
    ("keel-plugin-roster", "plugins/fixtures/roster", false),
    ("keel-plugin-noisy", "plugins/fixtures/noisy", false),
    ("keel-plugin-directory-next", "plugins/fixtures/directory-next", false),
    ("keel-plugin-directory-broken", "plugins/fixtures/directory-broken", false),
    ("keel-plugin-directory-skewed", "plugins/fixtures/directory-skewed", false),
    ("keel-plugin-misfit-import", "plugins/fixtures/misfit-import", false),
    ("keel-plugin-misfit-signature", "plugins/fixtures/misfit-signature", false),
    ("keel-plugin-ledger", "plugins/fixtures/ledger", false),
    ("keel-plugin-batch", "plugins/fixtures/batch", false),
    ("keel-plugin-notebook", "plugins/fixtures/notebook", false),
];

/// Plugins in Python, built with componentize-py: (source dir, world file, world name).
const PYTHON_PLUGINS: &[(&str, &str, &str)] = &[("plugins/examples/python-notes", "notes.wit", "notes")];
/// The componentize-py release the Python plugins are built and tested with.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// Fixture components packaged a second time under another manifest (another plugin id), to
/// test several plugins built from one crate: (cargo package, manifest).
const REPACKAGED_FIXTURES: &[(&str, &str)] = &[
    ("keel-plugin-relay", "plugins/fixtures/relay/listener.toml"),
    ("keel-plugin-hostile", "plugins/fixtures/hostile/twin.toml"),
    ("keel-plugin-directory-skewed", "plugins/fixtures/directory-skewed/jobs.toml"),
];

const WASM_TARGET: &str = "wasm32-wasip2";
const WASM_PROFILE: &str = "wasm";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("build-plugins") => build_plugins(&root).map(|_| ()),
        Some("package") => {
            let [component, manifest, out] = &args[1..] else {
                bail!("usage: cargo xtask package <component.wasm> <plugin.toml> <out.wasm>")
            };
            package(Path::new(component), Path::new(manifest), Path::new(out))
        }
        Some("serve") if args.get(1).map(String::as_str) == Some("--postgres") => {
            // Two replicas on a throwaway PostgreSQL: the first installs the bundled plugins,
            // the second loads them from the database; both follow each other's changes.
            // Ctrl-C stops both, and the database is removed.
            build_plugins(&root)?;
            run(cargo().args(["build", "--quiet", "--package", "keel-host", "--bin", "keel"]))?;
            let bin = keel_host::devkit::target_dir(&root)?.join("debug/keel");
            run(Command::new(root.join("scripts/throwaway-postgres"))
                .args(["run", "--", "bash", "-c", REPLICA_PAIR])
                .env("KEEL_BIN", bin)
                .env("KEEL_BUNDLED", root.join("target/keel-plugins/bundled")))
        }
        Some("serve") => {
            build_plugins(&root)?;
            let bundled = root.join("target/keel-plugins/bundled");
            run(cargo()
                .args(["run", "--quiet", "--package", "keel-host", "--bin", "keel", "--", "serve", "--plugins-dir"])
                .arg(bundled)
                .args(&args[1..]))
        }
        Some("test") => {
            // The console's browser tests drive Debian's headless Chromium; as root this
            // installs it when missing, anyone else is told what to install.
            run(Command::new(root.join("scripts/browser-tools")).arg("check"))?;
            build_plugins(&root)?;
            let started = Instant::now();
            // The cluster tests run whole `keel` processes.
            run(cargo().args(["build", "--quiet", "--package", "keel-host", "--bin", "keel"]))?;
            let keel_bin = keel_host::devkit::target_dir(&root)?.join("debug/keel");
            // The PostgreSQL backend's tests need a server: a throwaway one for each pass,
            // unless the caller points at one (KEEL_TEST_PG_URL).
            let with_postgres = |test_args: &[&str], env: &[(&str, &str)]| {
                let mut command = if std::env::var_os("KEEL_TEST_PG_URL").is_some() {
                    cargo()
                } else {
                    let mut c = Command::new(root.join("scripts/throwaway-postgres"));
                    c.args(["run", "--"]).arg(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
                    c
                };
                run(command
                    .arg("test")
                    .args(test_args)
                    .args(&args[1..])
                    .envs(env.iter().copied())
                    .env("KEEL_BIN", &keel_bin))
            };
            // Every test, with the integration suite on the embedded SQLite default...
            with_postgres(&["--workspace"], &[])?;
            let sqlite = started.elapsed();
            // ...then the integration suite again, each test server on its own PostgreSQL
            // database (the cluster tests run on PostgreSQL in the first pass already).
            with_postgres(
                &["--package", "keel-tests", "--test", "platform", "--test", "noisy", "--test", "secrets"],
                &[("KEEL_TEST_DATABASE", "postgres")],
            )?;
            eprintln!(
                "xtask: tests took {:.1?} (workspace on SQLite {sqlite:.1?}, integration suite on PostgreSQL {:.1?})",
                started.elapsed(),
                started.elapsed() - sqlite
            );
            Ok(())
        }
        Some("bench") => {
            build_plugins(&root)?;
            run(cargo().args(["build", "--quiet", "--release", "--package", "keel-host", "--bin", "keel"]))?;
            let bin = keel_host::devkit::target_dir(&root)?.join("release/keel");
            run(cargo()
                .args(["run", "--quiet", "--release", "--package", "keel-bench", "--"])
                .args(&args[1..])
                .env("KEEL_BIN", bin))
        }
        _ => {
            eprintln!("usage: cargo xtask <build-plugins | package | serve [--postgres] | test | bench>");
            std::process::exit(2);
        }
    }
}

/// The pair `cargo xtask serve --postgres` runs, with `KEEL_TEST_PG_URL` set by
/// `scripts/throwaway-postgres run`.
const REPLICA_PAIR: &str = r#"
set -u
"$KEEL_BIN" serve --listen 127.0.0.1:8080 --data-dir .keel/replica-1 --plugins-dir "$KEEL_BUNDLED" \
    --database-url "$KEEL_TEST_PG_URL" &
# The second starts once the first answers (it has migrated the database by then).
for _ in $(seq 1 600); do
    (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break
    sleep 0.1
done
"$KEEL_BIN" serve --listen 127.0.0.1:8081 --data-dir .keel/replica-2 --database-url "$KEEL_TEST_PG_URL" &
echo "xtask: two replicas on $KEEL_TEST_PG_URL: http://127.0.0.1:8080 and http://127.0.0.1:8081 (Ctrl-C stops them)"
wait
"#;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == WASM_TARGET) => Ok(()),
        Ok(_) => {
            eprintln!("xtask: installing the {WASM_TARGET} target");
            run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
        }
        // Without rustup the toolchain must already have the target; cargo will say if not.
        Err(_) => Ok(()),
    }
}

/// Builds and packages every plugin; returns the artifacts written.
fn build_plugins(root: &Path) -> Result<Vec<PathBuf>> {
    ensure_wasm_target()?;
    let started = Instant::now();
    let mut build = cargo();
    build.args(["build", "--quiet", "--target", WASM_TARGET, "--profile", WASM_PROFILE, "--config"]);
    build.arg(keel_host::devkit::wasm_build_config());
    for (package, _, _) in PLUGINS {
        build.args(["--package", package]);
    }
    run(&mut build)?;
    // Artifacts always go to `target/keel-plugins` in the workspace, where the tests and the
    // server look; cargo's own output may be elsewhere (`CARGO_TARGET_DIR`).
    let out_root = root.join("target/keel-plugins");
    let cargo_target = keel_host::devkit::target_dir(root)?;
    let mut written = Vec::new();
    let component_of = |crate_name: &str| {
        cargo_target.join(format!("{WASM_TARGET}/{WASM_PROFILE}/{}.wasm", crate_name.replace('-', "_")))
    };
    let packages = PLUGINS
        .iter()
        .map(|(crate_name, dir, bundled)| (*crate_name, root.join(dir).join("plugin.toml"), *bundled))
        .chain(REPACKAGED_FIXTURES.iter().map(|(crate_name, manifest)| (*crate_name, root.join(manifest), false)));
    std::fs::create_dir_all(out_root.join("raw"))?;
    for (crate_name, manifest_path, bundled) in packages {
        let id = manifest_id(&manifest_path)?;
        let out = out_root.join(if bundled { "bundled" } else { "fixtures" }).join(format!("{id}.wasm"));
        package(&component_of(crate_name), &manifest_path, &out)?;
        if bundled {
            sign(&out, &bundle_key(&out_root)?)?;
        }
        // The bare components too, for tests that package them differently.
        let raw = out_root.join("raw").join(format!("{}.wasm", crate_name.replace('-', "_")));
        std::fs::copy(component_of(crate_name), &raw).with_context(|| format!("copying {}", raw.display()))?;
        written.push(out);
    }
    for (dir, world_file, world) in PYTHON_PLUGINS {
        written.push(build_python(root, dir, world_file, world, &out_root.join("examples"))?);
    }
    eprintln!("xtask: built {} plugins in {:.1?} into {}", written.len(), started.elapsed(), out_root.display());
    Ok(written)
}

/// The key bundled plugins are signed with: made on the first build, kept in `target/`
/// (a deployment that requires signatures trusts its public half, `bundle-signing.pub`).
fn bundle_key(out_root: &Path) -> Result<keel_host::signing::SecretKey> {
    let secret = out_root.join("bundle-signing.key");
    if let Ok(text) = std::fs::read_to_string(&secret) {
        return Ok(keel_host::signing::SecretKey::from_file_text(&text)?);
    }
    let key = keel_host::signing::SecretKey::generate().map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
    std::fs::create_dir_all(out_root)?;
    std::fs::write(&secret, key.to_file_text()).with_context(|| format!("writing {}", secret.display()))?;
    std::fs::write(out_root.join("bundle-signing.pub"), format!("{}\n", key.public()))?;
    eprintln!("xtask: made the bundle signing key {}", key.public());
    Ok(key)
}

/// Writes `<artifact>.sig`, as `keel plugin sign` does.
fn sign(artifact_path: &Path, key: &keel_host::signing::SecretKey) -> Result<()> {
    let bytes = std::fs::read(artifact_path).with_context(|| format!("reading {}", artifact_path.display()))?;
    let mut sig = artifact_path.as_os_str().to_owned();
    sig.push(".sig");
    std::fs::write(&sig, format!("{}\n", key.sign(&artifact::digest(&bytes))))
        .with_context(|| format!("writing {}", PathBuf::from(&sig).display()))
}

/// componentize-py in a virtual environment under `target/`, installed from PyPI if missing.
fn componentize_py(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/python-tools");
    let tool = venv.join("bin/componentize-py");
    let wanted = COMPONENTIZE_PY.trim_start_matches("componentize-py==");
    let installed = Command::new(&tool).arg("--version").output().ok().filter(|o| o.status.success());
    if installed.is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(wanted)) {
        return Ok(tool);
    }
    eprintln!("xtask: installing {COMPONENTIZE_PY} into {}", venv.display());
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", COMPONENTIZE_PY]))?;
    Ok(tool)
}

/// Builds a Python plugin: its world (a subset of keel:platform) with the platform package as
/// a dependency, componentized, then packaged with its manifest like any other plugin.
fn build_python(root: &Path, dir: &str, world_file: &str, world: &str, out_dir: &Path) -> Result<PathBuf> {
    let tool = componentize_py(root)?;
    let source = root.join(dir);
    let name = source.file_name().context("plugin dir name")?.to_string_lossy().into_owned();
    let wit = root.join("target/python-wit").join(&name);
    let _ = std::fs::remove_dir_all(&wit);
    std::fs::create_dir_all(wit.join("deps/platform"))?;
    std::fs::copy(source.join(world_file), wit.join(world_file))?;
    std::fs::copy(root.join("wit/platform.wit"), wit.join("deps/platform/platform.wit"))?;
    let component = root.join("target/python-wit").join(format!("{name}.wasm"));
    run(Command::new(&tool)
        .arg("-d")
        .arg(&wit)
        .args(["-w", world, "componentize", "-p"])
        .arg(&source)
        .arg("app")
        .arg("-o")
        .arg(&component))?;
    let id = manifest_id(&source.join("plugin.toml"))?;
    let out = out_dir.join(format!("{id}.wasm"));
    package(&component, &source.join("plugin.toml"), &out)?;
    Ok(out)
}

fn manifest_id(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: toml::Value = toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
    value
        .get("id")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no `id`", path.display()))
}

/// Validates the manifest exactly as the server will, then embeds it into the component.
fn package(component: &Path, manifest_path: &Path, out: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(manifest_path).with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let policy = default_policy();
    manifest::Manifest::parse(&text, &policy)
        .with_context(|| format!("{} is not a valid manifest", manifest_path.display()))?;
    let bytes = std::fs::read(component).with_context(|| format!("cannot read {}", component.display()))?;
    let packaged =
        artifact::embed_manifest(&bytes, &text).with_context(|| format!("cannot package {}", component.display()))?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, &packaged).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("xtask: {} ({} KiB)", out.display(), packaged.len() / 1024);
    Ok(())
}

fn default_policy() -> manifest::LimitPolicy {
    let limits = keel_host::config::LimitsConfig::default();
    manifest::LimitPolicy {
        max_memory_mb: limits.max_memory_mb,
        max_timeout_ms: limits.max_timeout_ms,
        default_memory_mb: limits.default_memory_mb,
        default_timeout_ms: limits.default_timeout_ms,
    }
}

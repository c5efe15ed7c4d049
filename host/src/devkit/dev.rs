//! `keel dev`: a local host serving the plugin in the current directory, rebuilt and reloaded
//! whenever its sources change.
//!
//! Each build is installed as a new pre-release of the manifest's version
//! (`0.1.0-dev.1`, `-dev.2`, ...), through the same registry upgrade an admin would use: the
//! new build serves the next request while requests already running finish on the old one
//! (they hold the old prepared component). A build that fails, or that the host would refuse,
//! is reported and the previous build keeps serving.

use super::{BuildError, build_component};
use crate::artifact;
use crate::config::Config;
use crate::server::Server;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How `keel dev` runs.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// The plugin's directory (with `Cargo.toml` and `plugin.toml`).
    pub dir: PathBuf,
    pub listen: SocketAddr,
    /// How often to look for changed sources.
    pub poll: Duration,
}

/// Files whose change triggers a rebuild: the crate's sources, manifests and WIT.
fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, (SystemTime, u64)> {
    let mut seen = BTreeMap::new();
    let mut stack = vec![dir.join("src"), dir.join("wit")];
    for file in ["Cargo.toml", "plugin.toml", "build.rs"] {
        if let Ok(meta) = std::fs::metadata(dir.join(file)) {
            seen.insert(dir.join(file), (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len()));
        }
    }
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => stack.push(path),
                Ok(meta) => {
                    seen.insert(path, (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len()));
                }
                Err(_) => {}
            }
        }
    }
    seen
}

/// The manifest with its version made the `n`th dev pre-release.
fn dev_manifest(text: &str, n: u32) -> Result<String, BuildError> {
    let mut table: toml::Table = toml::from_str(text)
        .map_err(|e| BuildError::Manifest(crate::manifest::ManifestError::Syntax(e.to_string())))?;
    let version = table.get("version").and_then(|v| v.as_str()).unwrap_or("0.0.0");
    let base = semver::Version::parse(version).map(|v| format!("{}.{}.{}", v.major, v.minor, v.patch));
    table.insert("version".into(), toml::Value::String(format!("{}-dev.{n}", base.unwrap_or_else(|_| "0.0.0".into()))));
    Ok(toml::to_string(&table).unwrap_or_else(|_| text.to_owned()))
}

/// Builds and installs build number `n`; returns the installed version.
async fn reload(server: &Server, dir: &Path, n: u32) -> Result<String, String> {
    let dir = dir.to_path_buf();
    let built = tokio::task::spawn_blocking(move || build_component(&dir))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let manifest = dev_manifest(&built.manifest_text, n).map_err(|e| e.to_string())?;
    let packaged = artifact::embed_manifest(&built.component, &manifest).map_err(|e| e.to_string())?;
    let (record, _) = server.state.registry.install(packaged, None).await.map_err(|e| e.to_string())?;
    // The default tenant runs each build as it lands.
    let (registry, tenancy) = (&server.state.registry, &server.state.tenancy);
    let tenant = crate::identity::DEFAULT_TENANT;
    match tenancy.version_of(tenant, &record.id) {
        None => crate::lifecycle::switch_on(registry, tenancy, tenant, &record.id).await.map(|_| ()),
        Some(_) => {
            tenancy.set_enabled(tenant, &record.id, true).await.map_err(|e| e.to_string())?;
            crate::lifecycle::move_tenant(&server.state.calls, tenant, &record.id, &record.version)
                .await
                .map(|_| ())
                .map_err(Into::into)
        }
    }
    .map_err(|e| e.to_string())?;
    Ok(format!("{} {}", record.id, record.version))
}

/// Why `keel dev` could not run.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("cannot use the plugin directory `{path}`: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Start(#[from] crate::server::StartError),
}

/// Runs until Ctrl-C: serves the plugin, rebuilding and reloading it on every change.
pub async fn dev(options: DevOptions) -> Result<(), DevError> {
    let dir = options.dir.canonicalize().map_err(|source| DevError::Dir { path: options.dir.clone(), source })?;
    let data_dir = dir.join("target").join("keel-dev");
    // A fresh host each time: a new admin token is printed and no old build lingers.
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut config = Config { data_dir, listen: options.listen, ..Config::default() };
    config.allow_clock_control = true;
    config.limits.rate_limit_per_second = 0;
    let server = Server::start(config).await?;
    let token = server.bootstrap_token.clone().unwrap_or_default();
    println!("keel dev: host on http://{}", server.addr);
    println!("keel dev: admin token {token}");

    let mut build = 1;
    let mut last = fingerprint(&dir);
    let started = Instant::now();
    match reload(&server, &dir, build).await {
        Ok(installed) => {
            println!("keel dev: serving {installed} (built in {} ms)", started.elapsed().as_millis());
        }
        Err(e) => println!("keel dev: build failed, fix it and save: {e}"),
    }
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(options.poll) => {}
        }
        let now = fingerprint(&dir);
        if now == last {
            continue;
        }
        last = now;
        build += 1;
        let started = Instant::now();
        match reload(&server, &dir, build).await {
            Ok(installed) => {
                println!("keel dev: reloaded {installed} in {} ms", started.elapsed().as_millis());
            }
            Err(e) => println!("keel dev: build {build} failed; still serving the previous one: {e}"),
        }
        // Edits made during the build are picked up on the next look.
    }
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_builds_are_increasing_pre_releases_of_the_manifest_version() {
        let text = "id = \"demo\"\nversion = \"1.2.3\"\nname = \"Demo\"\n";
        let first = dev_manifest(text, 1).unwrap();
        let second = dev_manifest(text, 2).unwrap();
        let version = |t: &str| {
            semver::Version::parse(toml::from_str::<toml::Table>(t).unwrap()["version"].as_str().unwrap()).unwrap()
        };
        assert_eq!(version(&first).to_string(), "1.2.3-dev.1");
        assert!(version(&second) > version(&first));
        assert!(first.contains("id = \"demo\""));
    }
}

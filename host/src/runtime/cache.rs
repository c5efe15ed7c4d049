//! Compiled components on disk, so a restart loads machine code instead of recompiling.
//!
//! Entries are keyed by the engine's compatibility hash (wasmtime version, engine settings,
//! CPU features) and the artifact digest: an entry is only ever read back by an engine that
//! could have written it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    pub fn new(root: &Path, engine: &Engine) -> std::io::Result<CompileCache> {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = root.join(format!("{:016x}", hasher.finish()));
        std::fs::create_dir_all(&dir)?;
        Ok(CompileCache { dir })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// The cached component, if there is a usable entry. A corrupt entry is removed.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `store` with an engine of the same compatibility
        // hash, in a directory only the host writes to.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(%digest, error = %e, "discarding unreadable compiled component");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes the compiled component atomically (write then rename).
    pub fn store(&self, digest: &str, component: &Component) {
        let result = component.serialize().map_err(|e| std::io::Error::other(e.to_string())).and_then(|bytes| {
            let tmp = self.dir.join(format!("{digest}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, self.path(digest))
        });
        if let Err(e) = result {
            tracing::warn!(%digest, error = %e, "could not cache compiled component; the next start recompiles it");
        }
    }
}

//! Precompiled components on disk, so a restart or a second `nimbus run`
//! never recompiles. An entry is keyed by everything its snapshot depends
//! on: the handler's bytes, the artifacts `init` may have read, the
//! environment, and the engine's compatibility hash (wasmtime version and
//! settings). Entries are written to a temporary file and renamed into
//! place, so a crash never leaves a torn entry; loading maps the file.
//! Beside each snapshot a deploy records what loading it measured, so that
//! deploying the same code and models again (10,000 copies of one model,
//! or a configuration change) loads nothing.

use super::LoadError;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A folder of precompiled components.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
}

impl ComponentCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ComponentCache { dir: dir.into() }
    }

    /// The user's default cache: `$NIMBUS_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/nimbus`, else `~/.cache/nimbus`.
    pub fn user_default() -> Self {
        let dir = std::env::var_os("NIMBUS_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(std::env::temp_dir)
                .join("nimbus")
        });
        ComponentCache::new(dir)
    }

    /// The key of a snapshot of the handler with digest `wasm` over
    /// artifacts with digest `artifacts` and environment `env`, on `engine`.
    pub fn key(engine: &Engine, wasm: &str, artifacts: &str, env: &[(String, String)]) -> String {
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut compat);
        let mut h = Sha256::new();
        h.update(wasm.as_bytes());
        h.update([0]);
        h.update(artifacts.as_bytes());
        for (k, v) in env {
            h.update(format!("{}={}\0", k.len(), k).as_bytes());
            h.update(format!("{}={}\0", v.len(), v).as_bytes());
        }
        h.update(compat.finish().to_le_bytes());
        hex::encode(h.finalize())
    }

    /// Where ONNX Runtime keeps optimized graphs of the artifact set with
    /// this digest.
    pub fn optimized_dir(&self, artifacts_digest: &str) -> PathBuf {
        self.dir.join("ort").join(artifacts_digest)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.cwasm"))
    }

    /// The cached component under `key`, if any.
    pub fn load(&self, engine: &Engine, key: &str) -> Option<Component> {
        let path = self.path(key);
        if !path.is_file() {
            return None;
        }
        // SAFETY: every file here is the output of
        // `Engine::precompile_component` for an engine with the same
        // compatibility hash (part of the key), renamed into place whole:
        // written by this cache, or (in a cluster, see `adopt`) by another
        // host of the cluster, fetched by the digest that host stored in
        // the version's record and checked against it before the rename.
        // Only hosts write records' snapshot digests; clients cannot.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable cache entry: {e}");
                None
            }
        }
    }

    /// The file of the compiled snapshot under `key`, if there is one.
    pub fn entry(&self, key: &str) -> Option<PathBuf> {
        Some(self.path(key)).filter(|p| p.is_file())
    }

    /// Takes the file at `from` (on the same filesystem), a snapshot
    /// another host of the cluster compiled, verified against the digest
    /// it recorded, as the entry under `key`.
    pub fn adopt(&self, key: &str, from: &Path) -> Result<(), LoadError> {
        let io = |e: std::io::Error| LoadError::Internal(format!("component cache {}: {e}", self.dir.display()));
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        std::fs::rename(from, self.path(key)).map_err(io)
    }

    /// Precompiles `wasm`, stores it under `key` and loads it back mapped.
    pub fn store(&self, engine: &Engine, key: &str, wasm: &[u8]) -> Result<Component, LoadError> {
        let bytes = engine.precompile_component(wasm).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        self.write(&self.path(key), &bytes)?;
        self.load(engine, key).ok_or_else(|| LoadError::Internal("cache entry unreadable after write".into()))
    }

    /// What a deploy found when it loaded the snapshot under `key`, if one did.
    pub fn validated(&self, key: &str) -> Option<Validated> {
        serde_json::from_slice(&std::fs::read(self.validated_path(key)).ok()?).ok()
    }

    /// Records that the snapshot under `key` loaded, with what it measured.
    pub fn mark_validated(&self, key: &str, validated: &Validated) -> Result<(), LoadError> {
        self.write(&self.validated_path(key), &serde_json::to_vec(validated).expect("serializes"))
    }

    fn validated_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// Writes `bytes` to a temporary file renamed to `path`, so a crash
    /// never leaves a torn entry.
    fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
        let io = |e: std::io::Error| LoadError::Internal(format!("component cache {}: {e}", self.dir.display()));
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io)?;
        std::io::Write::write_all(&mut tmp, bytes).map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

/// What loading a snapshot at deploy established: `init` succeeded and
/// every graph loaded in ONNX Runtime, each session holding `session_bytes`
/// (measured resident growth), and an instance of the snapshot fit a tier
/// of `memory_mb`. A deploy of the same handler, artifacts and environment
/// on that tier or a larger one trusts it instead of loading everything
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validated {
    /// Memory one session of every graph holds, together, in bytes.
    pub session_bytes: u64,
    /// The smallest tier an instance was made on.
    pub memory_mb: u32,
}

impl ComponentCache {
    /// Deletes compiled snapshots whose key is not in `keys` and optimized
    /// graphs of artifact sets not in `artifacts`; returns how many.
    pub fn retain(
        &self,
        keys: &std::collections::HashSet<String>,
        artifacts: &std::collections::HashSet<String>,
    ) -> usize {
        let stale = |dir: &Path, keep: &dyn Fn(&str) -> bool| {
            let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
            entries
                .flatten()
                .filter(|e| !keep(&e.file_name().to_string_lossy()))
                .filter(|e| {
                    let p = e.path();
                    if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) }.is_ok()
                })
                .count()
        };
        let snapshots = stale(&self.dir, &|name| name == "ort" || entry_key(name).is_none_or(|key| keys.contains(key)));
        snapshots + stale(&self.dir.join("ort"), &|name| artifacts.contains(name))
    }
}

/// The key of a cache entry's file name (a snapshot or its record).
fn entry_key(name: &str) -> Option<&str> {
    name.strip_suffix(".cwasm").or_else(|| name.strip_suffix(".json"))
}

/// A digest of every file under `dir` (relative names and contents).
pub fn digest_dir(dir: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for rel in files {
        let bytes = std::fs::read(dir.join(&rel))?;
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(hex::encode(h.finalize()))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_path_buf());
        }
    }
    Ok(())
}

//! The function registry: name -> the live version of each function.
//!
//! Contract: a deploy is validated fully (config in range, every blob
//! present, the component implements the world, `init` succeeds, every
//! `.onnx` loads in ONNX Runtime) before its record is written; only then
//! does the new version replace the old one, so a failed deploy leaves the
//! old version serving. Requests in flight on the old version finish on it.
//! On open, every stored function is loaded again from its blobs and the
//! precompiled-component cache, without recompiling.

mod config;
mod record;

pub use config::{DEFAULT_PAYLOAD_LIMIT, FunctionConfig, validate_name};
pub use record::{Artifact, Bundle, FunctionRecord};

use crate::runtime::{ComponentCache, Function, LoadError, Runtime};
use crate::store::{Digest, Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long an unreferenced blob survives by default, so uploads for a
/// deploy still in flight are not collected.
pub const DEFAULT_BLOB_GRACE: Duration = Duration::from_secs(3600);

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The name is not valid.
    #[error("{0}")]
    InvalidName(String),
    /// The bundle or its configuration is not valid.
    #[error("{0}")]
    InvalidBundle(String),
    /// No function has this name.
    #[error("function `{0}` does not exist")]
    NotFound(String),
    /// The handler or its models could not be made ready.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counters of one function version.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests received.
    pub invocations: AtomicU64,
    /// Requests answered with a 4xx status.
    pub errors_4xx: AtomicU64,
    /// Requests answered with a 5xx status.
    pub errors_5xx: AtomicU64,
}

/// A live function version.
pub struct Deployed {
    /// What is stored.
    pub record: FunctionRecord,
    /// The ready function.
    pub function: Arc<Function>,
    /// Request counters.
    pub counters: Counters,
}

/// Names to live functions, over the store.
pub struct Registry {
    store: Arc<Store>,
    runtime: Arc<Runtime>,
    cache: ComponentCache,
    live: RwLock<HashMap<String, Arc<Deployed>>>,
    deploys: tokio::sync::Mutex<()>,
    blob_grace: Duration,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Registry {
    /// Opens the registry and loads every stored function. A function that
    /// no longer loads is logged and skipped, not fatal.
    /// Unreferenced blobs younger than `blob_grace` are kept.
    pub async fn open(
        store: Arc<Store>,
        runtime: Arc<Runtime>,
        blob_grace: Duration,
    ) -> Result<Self, RegistryError> {
        let cache = ComponentCache::new(store.compiled_dir());
        let registry = Registry {
            store,
            runtime,
            cache,
            live: RwLock::default(),
            deploys: tokio::sync::Mutex::new(()),
            blob_grace,
        };
        for (name, bytes) in registry.store.records()? {
            let record: FunctionRecord = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(function = %name, "unreadable record, skipped: {e}");
                    continue;
                }
            };
            match registry.activate(record).await {
                Ok(_) => tracing::info!(function = %name, "restored"),
                Err(e) => tracing::error!(function = %name, "could not restore: {e}"),
            }
        }
        registry.collect_garbage();
        Ok(registry)
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The live version of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Deployed>> {
        self.live.read().expect("registry lock").get(name).cloned()
    }

    /// Every live function, sorted by name.
    pub fn list(&self) -> Vec<Arc<Deployed>> {
        let mut all: Vec<_> = self
            .live
            .read()
            .expect("registry lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        all
    }

    /// Creates or updates `name` from `bundle`; returns the new record.
    pub async fn deploy(
        &self,
        name: &str,
        mut bundle: Bundle,
    ) -> Result<FunctionRecord, RegistryError> {
        validate_name(name).map_err(RegistryError::InvalidName)?;
        bundle
            .config
            .validate()
            .map_err(RegistryError::InvalidBundle)?;
        let wasm_size = self
            .store
            .blobs
            .size(&bundle.wasm)
            .ok_or(StoreError::MissingBlob(bundle.wasm.clone()))?;
        bundle.artifacts.sort_by(|a, b| a.path.cmp(&b.path));
        let mut seen = HashSet::new();
        for a in &mut bundle.artifacts {
            record::validate_artifact_path(&a.path).map_err(RegistryError::InvalidBundle)?;
            if !seen.insert(a.path.clone()) {
                return Err(RegistryError::InvalidBundle(format!(
                    "artifact path `{}` appears twice",
                    a.path
                )));
            }
            a.size = self
                .store
                .blobs
                .size(&a.digest)
                .ok_or(StoreError::MissingBlob(a.digest.clone()))?;
        }
        let _serial = self.deploys.lock().await;
        let previous = self.get(name).map(|d| d.record.clone());
        let record = FunctionRecord {
            name: name.to_owned(),
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            wasm: bundle.wasm,
            wasm_size,
            artifacts_digest: record::artifacts_digest(&bundle.artifacts),
            artifacts: bundle.artifacts,
            config: bundle.config,
            created_at: previous.as_ref().map_or_else(now, |p| p.created_at),
            updated_at: now(),
        };
        let deployed = self.load(&record).await?;
        let bytes = serde_json::to_vec(&record).expect("records serialize");
        self.store.put_record(name, &bytes)?;
        self.live
            .write()
            .expect("registry lock")
            .insert(name.to_owned(), Arc::new(deployed));
        tracing::info!(function = name, version = record.version, "deployed");
        self.collect_garbage();
        Ok(record)
    }

    /// Deletes `name`; in-flight requests finish on the removed version.
    pub async fn delete(&self, name: &str) -> Result<(), RegistryError> {
        let _serial = self.deploys.lock().await;
        if !self.store.delete_record(name)? {
            return Err(RegistryError::NotFound(name.to_owned()));
        }
        self.live.write().expect("registry lock").remove(name);
        tracing::info!(function = name, "deleted");
        self.collect_garbage();
        Ok(())
    }

    async fn activate(&self, record: FunctionRecord) -> Result<(), RegistryError> {
        let deployed = self.load(&record).await?;
        self.live
            .write()
            .expect("registry lock")
            .insert(record.name.clone(), Arc::new(deployed));
        Ok(())
    }

    async fn load(&self, record: &FunctionRecord) -> Result<Deployed, RegistryError> {
        let files: Vec<(String, Digest)> = record
            .artifacts
            .iter()
            .map(|a| (a.path.clone(), a.digest.clone()))
            .collect();
        let dir = self
            .store
            .blobs
            .materialize(&record.artifacts_digest, &files)?;
        let wasm = std::fs::read(self.store.blobs.path(&record.wasm)).map_err(StoreError::from)?;
        let function = Function::load(
            &self.runtime,
            &record.name,
            &wasm,
            &dir,
            record.config.spec(),
            &self.cache,
        )
        .await?;
        Ok(Deployed {
            record: record.clone(),
            function: Arc::new(function),
            counters: Counters::default(),
        })
    }

    /// Removes blobs and artifact folders no stored record references
    /// (stored, not live: a function that failed to restore keeps its bytes).
    fn collect_garbage(&self) {
        let records = match self.store.records() {
            Ok(r) => r,
            Err(e) => return tracing::warn!("blob collection skipped: {e}"),
        };
        let mut keep = HashSet::new();
        for (_, bytes) in records {
            let Ok(r) = serde_json::from_slice::<FunctionRecord>(&bytes) else {
                return tracing::warn!("blob collection skipped: unreadable record");
            };
            keep.insert(r.wasm);
            keep.insert(r.artifacts_digest);
            keep.extend(r.artifacts.into_iter().map(|a| a.digest));
        }
        match self.store.blobs.retain(&keep, self.blob_grace) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "collected unreferenced blobs"),
            Err(e) => tracing::warn!("blob collection failed: {e}"),
        }
    }
}

impl Counters {
    /// Counts one answered request by its status code.
    pub fn record(&self, status: u16) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        match status {
            400..=499 => self.errors_4xx.fetch_add(1, Ordering::Relaxed),
            500..=599 => self.errors_5xx.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

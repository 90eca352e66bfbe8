//! The function registry: name -> the live version of each function.
//!
//! Contract: a deploy is validated fully (config in range, every blob
//! present, the component implements the world, `init` succeeds, every
//! `.onnx` loads in ONNX Runtime) before its record is written; only then
//! does the new version replace the old one, so a failed deploy leaves the
//! old version serving. Requests in flight on the old version finish on it.
//! Deploys of one name run one at a time; deploys of different names do not
//! wait for each other.
//!
//! On open, every stored function comes back at zero: nothing is loaded, so
//! the server serves at once, and a function's first request is an ordinary
//! cold start (from the precompiled-component cache, without recompiling).
//! Only functions with provisioned concurrency are loaded, after the port
//! is open ([`Registry::warm_provisioned`]), a few at a time.

mod config;
mod record;

pub use config::{DEFAULT_PAYLOAD_LIMIT, FunctionConfig, validate_name};
pub use record::{Artifact, Bundle, FunctionRecord};

use crate::pool::{Loader, Pool};
use crate::runtime::{ComponentCache, LoadError, Runtime, Source};
use crate::store::{Digest, Store, StoreError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// What the deploy would keep reserved does not fit the host.
    #[error("{0}")]
    OverCapacity(String),
    /// The handler or its models could not be made ready.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a deploy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Deployment {
    /// A new function.
    Created,
    /// A new version of an existing function.
    Updated,
    /// The live version already was this; nothing changed.
    Unchanged,
}

/// A live function version.
pub struct Deployed {
    /// What is stored.
    pub record: FunctionRecord,
    /// Its instances and metrics.
    pub pool: Arc<Pool>,
}

/// Names to live functions, over the store.
pub struct Registry {
    store: Arc<Store>,
    runtime: Arc<Runtime>,
    cache: ComponentCache,
    live: RwLock<BTreeMap<String, Arc<Deployed>>>,
    deploys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held from a deploy's last admission check until its record is live.
    admitting: Mutex<()>,
    options: Options,
}

/// Server-wide registry settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Unreferenced blobs younger than this are kept.
    pub blob_grace: Duration,
    /// Idle time before a function scales to zero, unless it sets its own.
    pub idle_timeout: Duration,
    /// Sum of memory tiers of loaded functions above which the least
    /// recently used idle ones are scaled to zero, in MB.
    pub memory_budget_mb: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            blob_grace: DEFAULT_BLOB_GRACE,
            idle_timeout: Duration::from_secs(300),
            memory_budget_mb: host_memory_mb() * 4 / 5,
        }
    }
}

/// The host's memory in MB (from /proc/meminfo; 16 GiB if unreadable).
pub fn host_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(16 << 10, |kb| kb >> 10)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Checks what a deploy asks for, before anything is read from the store:
/// the name, the configuration, and the artifact paths (relative, inside
/// the folder, each once, no file also used as a folder). Sorts the
/// artifacts by path, as records keep them.
pub fn validate_bundle(name: &str, bundle: &mut Bundle) -> Result<(), RegistryError> {
    validate_name(name).map_err(RegistryError::InvalidName)?;
    bundle.config.validate().map_err(RegistryError::InvalidBundle)?;
    bundle.artifacts.sort_by(|a, b| a.path.cmp(&b.path));
    let mut seen = HashSet::new();
    for a in &bundle.artifacts {
        record::validate_artifact_path(&a.path).map_err(RegistryError::InvalidBundle)?;
        if !seen.insert(a.path.as_str()) {
            return Err(RegistryError::InvalidBundle(format!("artifact path `{}` appears twice", a.path)));
        }
    }
    record::check_no_nesting(&bundle.artifacts).map_err(RegistryError::InvalidBundle)
}

/// Host-wide admission: provisioned instances are memory kept for a
/// function at all times, so the functions' provisioned concurrency times
/// their tier, together, must fit the memory budget (`name` counted with
/// `config` instead of what it has now). What is not provisioned is held
/// only while it runs, and is admitted per request against the same budget.
fn admit(
    live: &BTreeMap<String, Arc<Deployed>>,
    budget_mb: u64,
    name: &str,
    config: &FunctionConfig,
) -> Result<(), RegistryError> {
    let reserved = |c: &FunctionConfig| u64::from(c.provisioned_concurrency) * u64::from(c.memory_mb.mb());
    let others: u64 = live.values().filter(|d| d.record.name != name).map(|d| reserved(&d.record.config)).sum();
    let asked = reserved(config);
    if asked > 0 && others + asked > budget_mb {
        return Err(RegistryError::OverCapacity(format!(
            "provisioned concurrency would reserve {} MB on this host ({asked} MB for `{name}`, {others} MB for \
             other functions) but its memory budget is {budget_mb} MB; lower provisioned_concurrency or memory_mb, \
             or raise the server's --memory-budget-mb",
            others + asked
        )));
    }
    Ok(())
}

/// How often idle pools are checked for scaling down.
pub const REAP_EVERY: Duration = Duration::from_millis(250);

/// How many provisioned functions load at once after a restart.
const WARM_PARALLEL: usize = 2;

impl Registry {
    /// Opens the registry over `store`: every stored function is back, at
    /// zero. A record that cannot be read is logged and skipped.
    pub fn open(store: Arc<Store>, runtime: Arc<Runtime>, options: Options) -> Result<Self, RegistryError> {
        let cache = ComponentCache::new(store.compiled_dir());
        let registry = Registry {
            store,
            runtime,
            cache,
            live: RwLock::default(),
            deploys: Mutex::default(),
            admitting: Mutex::default(),
            options,
        };
        for (name, bytes) in registry.store.records()? {
            let record: FunctionRecord = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(function = %name, "unreadable record, skipped: {e}");
                    continue;
                }
            };
            // A function whose files are gone stays listed and answers a
            // 5xx naming why (in `describe`) until it is deployed again.
            let pool = match registry.pool(&record) {
                Ok(pool) => pool,
                Err(e) => {
                    tracing::error!(function = %name, "cannot be loaded any more: {e}");
                    let pool = registry.pool_over(&record, registry.store.blobs.artifact_dir(&record.artifacts_digest));
                    pool.mark_broken(e.to_string());
                    pool
                }
            };
            registry.live.write().expect("registry lock").insert(name, Arc::new(Deployed { record, pool }));
        }
        registry.collect_garbage();
        Ok(registry)
    }

    /// Loads the functions with provisioned concurrency, a few at a time;
    /// call it once the server is listening. Requests that arrive first
    /// load the function themselves, as any cold start.
    pub async fn warm_provisioned(&self) {
        use futures_util::StreamExt;
        let provisioned: Vec<Arc<Deployed>> = self.list().into_iter().filter(|d| d.pool.provisioned()).collect();
        futures_util::stream::iter(provisioned)
            .for_each_concurrent(WARM_PARALLEL, |d| async move {
                match d.pool.warm().await {
                    Ok(()) => tracing::info!(function = %d.record.name, "provisioned instances ready"),
                    Err(e) => tracing::error!(function = %d.record.name, "could not load: {e}"),
                }
            })
            .await;
    }

    /// The runtime functions run on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
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
        self.live.read().expect("registry lock").values().cloned().collect()
    }

    /// Up to `limit` live functions named after `after` (from the first
    /// without it), sorted by name, and whether more follow.
    pub fn page(&self, after: Option<&str>, limit: usize) -> (Vec<Arc<Deployed>>, bool) {
        use std::ops::Bound;
        let live = self.live.read().expect("registry lock");
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut rest = live.range::<str, _>((from, Bound::Unbounded)).map(|(_, d)| d.clone());
        let page: Vec<_> = rest.by_ref().take(limit).collect();
        (page, rest.next().is_some())
    }

    /// Creates or updates `name` from `bundle`; returns the live record and
    /// what happened. The same handler, artifacts and configuration as the
    /// live version change nothing (no new version, nothing reloaded).
    pub async fn deploy(&self, name: &str, mut bundle: Bundle) -> Result<(FunctionRecord, Deployment), RegistryError> {
        validate_bundle(name, &mut bundle)?;
        let wasm_size = self.store.blobs.size(&bundle.wasm).ok_or(StoreError::MissingBlob(bundle.wasm.clone()))?;
        for a in &mut bundle.artifacts {
            a.size = self.store.blobs.size(&a.digest).ok_or(StoreError::MissingBlob(a.digest.clone()))?;
        }
        let model_bytes: u64 = bundle.artifacts.iter().filter(|a| a.path.ends_with(".onnx")).map(|a| a.size).sum();
        config::check_fits(model_bytes, &bundle.config, config::Sized::Files).map_err(RegistryError::InvalidBundle)?;
        let serial = self.deploy_lock(name);
        let _serial = serial.lock().await;
        self.admit(name, &bundle.config)?;
        let previous = self.get(name).map(|d| d.record.clone());
        let artifacts_digest = record::artifacts_digest(&bundle.artifacts);
        if let Some(p) = previous
            .as_ref()
            .filter(|p| p.wasm == bundle.wasm && p.artifacts_digest == artifacts_digest && p.config == bundle.config)
        {
            return Ok((p.clone(), Deployment::Unchanged));
        }
        let record = FunctionRecord {
            name: name.to_owned(),
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            wasm: bundle.wasm,
            wasm_size,
            artifacts_digest,
            artifacts: bundle.artifacts,
            config: bundle.config,
            created_at: previous.as_ref().map_or_else(now, |p| p.created_at),
            updated_at: now(),
        };
        let deployed = self.load(&record).await?;
        // Admitted again where it takes effect, one deploy at a time: deploys
        // of other names may have been admitted meanwhile.
        let admitting = self.admitting.lock().unwrap_or_else(|p| p.into_inner());
        self.admit(name, &record.config)?;
        let bytes = serde_json::to_vec(&record).expect("records serialize");
        self.store.put_record(name, &bytes)?;
        self.live.write().expect("registry lock").insert(name.to_owned(), Arc::new(deployed));
        drop(admitting);
        tracing::info!(function = name, version = record.version, "deployed");
        // Only a replaced version leaves files behind (a created function's
        // uploads are its own); collecting reads every record.
        if previous.is_some() {
            self.collect_garbage();
            return Ok((record, Deployment::Updated));
        }
        Ok((record, Deployment::Created))
    }

    /// Deletes `name`; in-flight requests finish on the removed version.
    pub async fn delete(&self, name: &str) -> Result<(), RegistryError> {
        let serial = self.deploy_lock(name);
        let _serial = serial.lock().await;
        if !self.store.delete_record(name)? {
            return Err(RegistryError::NotFound(name.to_owned()));
        }
        self.live.write().expect("registry lock").remove(name);
        tracing::info!(function = name, "deleted");
        self.collect_garbage();
        Ok(())
    }

    /// Whether `config` for `name` fits the host (see [`admit`]).
    fn admit(&self, name: &str, config: &FunctionConfig) -> Result<(), RegistryError> {
        admit(&self.live.read().expect("registry lock"), self.options.memory_budget_mb, name, config)
    }

    /// The lock that serializes deploys and deletes of `name`. Locks of
    /// names no operation holds are dropped here, so the map stays small.
    fn deploy_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.deploys.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(name.to_owned()).or_default().clone()
    }

    /// Makes a new version ready to take traffic and checks what its
    /// sessions measured against the tier. The first deploy of a handler,
    /// artifacts and environment loads everything (`init`, every graph) and
    /// records what it measured; a later deploy of the same (another name,
    /// another configuration) on that tier or a larger one trusts that
    /// record and loads nothing unless it has provisioned instances, so it
    /// starts at zero. On a smaller tier it loads again (the snapshot may
    /// not fit).
    async fn load(&self, record: &FunctionRecord) -> Result<Deployed, RegistryError> {
        let pool = self.pool(record)?;
        let validated = match pool.measured().filter(|v| v.memory_mb <= record.config.memory_mb.mb()) {
            Some(v) => v,
            None => pool.validate().await?,
        };
        config::check_fits(validated.session_bytes, &record.config, config::Sized::Measured)
            .map_err(RegistryError::InvalidBundle)?;
        if pool.provisioned() {
            pool.warm().await?;
        }
        Ok(Deployed { record: record.clone(), pool })
    }

    /// A pool for `record`, with nothing loaded yet.
    fn pool(&self, record: &FunctionRecord) -> Result<Arc<Pool>, RegistryError> {
        let files: Vec<(String, Digest)> =
            record.artifacts.iter().map(|a| (a.path.clone(), a.digest.clone())).collect();
        let dir = self.store.blobs.materialize(&record.artifacts_digest, &files)?;
        Ok(self.pool_over(record, dir))
    }

    /// A pool for `record` whose artifacts are (or would be) at `dir`.
    fn pool_over(&self, record: &FunctionRecord, dir: std::path::PathBuf) -> Arc<Pool> {
        let source = Source {
            wasm: self.store.blobs.path(&record.wasm),
            wasm_digest: record.wasm.as_str().to_owned(),
            artifacts: dir,
            artifacts_digest: record.artifacts_digest.as_str().to_owned(),
        };
        let loader = Loader {
            runtime: self.runtime.clone(),
            name: record.name.clone(),
            source,
            spec: record.config.spec(),
            cache: self.cache.clone(),
        };
        Pool::new(loader, record.config.scaling(self.options.idle_timeout))
    }

    /// Removes blobs, artifact folders and compiled snapshots no stored
    /// record references (stored, not live: a function that failed to
    /// restore keeps its bytes).
    fn collect_garbage(&self) {
        let records = match self.store.records() {
            Ok(r) => r,
            Err(e) => return tracing::warn!("blob collection skipped: {e}"),
        };
        let mut keep = HashSet::new();
        let mut compiled = HashSet::new();
        for (_, bytes) in records {
            let Ok(r) = serde_json::from_slice::<FunctionRecord>(&bytes) else {
                return tracing::warn!("blob collection skipped: unreadable record");
            };
            let env = r.config.spec().env;
            compiled.insert(self.runtime.snapshot_key(r.wasm.as_str(), r.artifacts_digest.as_str(), &env));
            keep.insert(r.wasm);
            keep.insert(r.artifacts_digest);
            keep.extend(r.artifacts.into_iter().map(|a| a.digest));
        }
        let artifact_sets = keep.iter().map(|d| d.as_str().to_owned()).collect();
        let stale = self.cache.retain(&compiled, &artifact_sets);
        if stale > 0 {
            tracing::info!(removed = stale, "collected unused compiled snapshots");
        }
        match self.store.blobs.retain(&keep, self.options.blob_grace) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "collected unreferenced blobs"),
            Err(e) => tracing::warn!("blob collection failed: {e}"),
        }
    }

    /// Reaps every [`REAP_EVERY`] until the task is dropped.
    pub async fn reap_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REAP_EVERY);
        loop {
            tick.tick().await;
            let registry = self.clone();
            // Dropping sessions and instances can take a while; not on a worker.
            let _ = tokio::task::spawn_blocking(move || registry.reap()).await;
        }
    }

    /// Scales idle functions down (see [`Pool::reap`]), then, while the
    /// loaded functions' tiers add up past the memory budget, or the memory
    /// held and wanted (cold starts waiting for it) is past it, scales the
    /// least recently used idle ones to zero. Call it periodically.
    pub fn reap(&self) {
        let now = Instant::now();
        let pools: Vec<Arc<Pool>> = self.list().iter().map(|d| d.pool.clone()).collect();
        let mut released = false;
        for pool in &pools {
            released |= pool.reap(now);
        }
        let loaded = |p: &&Arc<Pool>| p.gauges().loaded;
        let mut used: u64 = pools.iter().filter(loaded).map(|p| u64::from(p.memory_mb())).sum();
        let mut by_age: Vec<&Arc<Pool>> = pools.iter().filter(loaded).collect();
        by_age.sort_by_key(|p| p.last_used());
        let memory = self.runtime.memory();
        for pool in by_age {
            if used <= self.options.memory_budget_mb && memory.shortfall() == 0 {
                break;
            }
            if pool.scale_to_zero() {
                used -= u64::from(pool.memory_mb());
                released = true;
            }
        }
        if released {
            crate::nn::release_freed_memory();
        }
    }
}

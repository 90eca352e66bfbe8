//! The function registry: name -> each function's immutable versions,
//! aliases, traffic split and canary (see `versions`), and a pool per
//! version.
//!
//! Contract: a deploy is validated fully (config in range, every blob
//! present, the component implements the world, `init` succeeds, every
//! `.onnx` loads in ONNX Runtime) before its version is written; only then
//! does `live` move to it, so a failed deploy leaves the old version
//! serving. Requests in flight finish on the version they started on.
//! Deploys and alias, traffic and rollback changes of one name run one at a
//! time, each one store write; those of different names do not wait for
//! each other. Versions past the retention count that nothing points at are
//! collected with their files; the others keep their compiled snapshots, so
//! a rollback uploads and compiles nothing.
//!
//! On open, every stored function comes back at zero: nothing is loaded, so
//! the server serves at once, and a function's first request is an ordinary
//! cold start (from the precompiled-component cache, without recompiling).
//! Only functions with provisioned concurrency are loaded, after the port
//! is open ([`Registry::warm_provisioned`]), a few at a time.

pub mod builtin;
mod canary;
mod config;
mod record;
mod versions;

pub use config::{DEFAULT_PAYLOAD_LIMIT, FunctionConfig, validate_name};
pub use record::{Artifact, Bundle, CANARY_MAX_SECONDS, CanarySpec, SharedSnapshot, Version};
pub use versions::{Canary, CanaryState, DEFAULT_KEEP, FunctionRecord, LIVE, MAX_SPLIT, Refused, Weight};

use crate::journal::{EventKind, Journals};
use crate::members::{HostInfo, Members};
use crate::nn::Signature;
use crate::pool::{Loader, Pool};
use crate::runtime::{ComponentCache, LoadError, Runtime, Source};
use crate::store::{Change, Digest, Expect, Manifest, Store, StoreError};
use canary::{Tally, Verdict};
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
    /// A version, alias or traffic change that cannot be made.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The handler or its models could not be made ready.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a deploy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Deployment {
    /// A new function.
    Created,
    /// A new version of an existing function.
    Updated,
    /// The live version already was this; nothing changed.
    Unchanged,
}

/// A function as it serves now: its document and a pool per version that
/// has served or may serve, with `live` traffic's routes resolved.
pub struct Deployed {
    /// What is stored.
    pub record: FunctionRecord,
    /// The store revision that wrote it.
    pub revision: u64,
    /// `live` traffic: (version, cumulative percent, pool), in split order.
    routes: Vec<(u64, u32, Arc<Pool>)>,
    /// Every version's pool made so far; shared by successive documents of
    /// the function, so a version keeps its warm instances across changes.
    pools: Arc<Pools>,
}

type Pools = Mutex<BTreeMap<u64, Arc<Pool>>>;

impl Deployed {
    /// The version and pool a plain request goes to: `live`, or a pick by
    /// weight over the split.
    pub fn pick(&self) -> (u64, &Arc<Pool>) {
        let (v, _, pool) = pick(&self.routes, |r| r.1);
        (*v, pool)
    }

    /// The pool of the version `live` names.
    pub fn live_pool(&self) -> &Arc<Pool> {
        let live = self.record.aliases[LIVE];
        self.routes.iter().find(|(v, _, _)| *v == live).map_or(&self.routes[0].2, |(_, _, p)| p)
    }

    /// Every version's pool that exists, by version.
    pub fn pools(&self) -> Vec<(u64, Arc<Pool>)> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(v, p)| (*v, p.clone())).collect()
    }
}

/// The route a request takes: one uniform draw in 0..100 against the
/// routes' cumulative percents (`upto`), none when there is one route.
/// Public so the benchmark can time exactly this.
pub fn pick<T>(routes: &[T], upto: impl Fn(&T) -> u32) -> &T {
    if routes.len() == 1 {
        return &routes[0];
    }
    let draw = fastrand::u32(0..100);
    routes.iter().find(|r| draw < upto(r)).unwrap_or(&routes[0])
}

/// Where an invocation asks to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `live`, split by weight.
    Live,
    /// One version.
    Version(u64),
    /// The version an alias names.
    Alias(String),
}

/// Names to functions, over the store.
pub struct Registry {
    store: Arc<Store>,
    runtime: Arc<Runtime>,
    cache: ComponentCache,
    live: RwLock<BTreeMap<String, Arc<Deployed>>>,
    deploys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held from a change's last admission check until its record is live.
    admitting: tokio::sync::Mutex<()>,
    /// The store revision every change up to which is installed (the
    /// following watch starts after it).
    applied: std::sync::atomic::AtomicU64,
    /// Running canaries' counts at the start of their window, by function.
    watches: Mutex<HashMap<String, Watch>>,
    /// The live hosts, for each one's share of max concurrency.
    members: Arc<Members>,
    /// Where logs and events go.
    journals: Arc<Journals>,
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
    /// Versions kept per function besides those an alias or split names.
    pub keep_versions: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            blob_grace: DEFAULT_BLOB_GRACE,
            idle_timeout: Duration::from_secs(300),
            memory_budget_mb: host_memory_mb() * 4 / 5,
            keep_versions: DEFAULT_KEEP,
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

/// What every request of `version` of `name` finds in its environment: the
/// function and version serving it, the most rows of a batched model run
/// when batching is on (so handlers pad to batchable shapes only then), and
/// (for the built-in handler) which inputs and outputs are `bool`, which
/// wasi-nn carries as `u8`.
fn request_env(name: &str, version: &Version) -> Vec<(String, String)> {
    let mut env = vec![
        ("NIMBUS_FUNCTION".to_owned(), name.to_owned()),
        ("NIMBUS_VERSION".to_owned(), version.version.to_string()),
    ];
    let ports = version.graphs.values().flat_map(|s| s.inputs.iter().chain(&s.outputs));
    let booleans: Vec<&str> = ports.filter(|p| p.datatype == "BOOL").map(|p| p.name.as_str()).collect();
    if !booleans.is_empty() {
        env.push(("NIMBUS_BOOL_TENSORS".to_owned(), booleans.join(",")));
    }
    if let Some(b) = &version.config.batching {
        env.push(("NIMBUS_MAX_BATCH_SIZE".to_owned(), b.max_batch_size.to_string()));
    }
    env
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Checks what a deploy asks for, before anything is read from the store:
/// the name, the configuration, the description and canary, and the
/// artifact paths (relative, inside the folder, each once, no file also
/// used as a folder). Sorts the artifacts by path, as records keep them.
pub fn validate_bundle(name: &str, bundle: &mut Bundle) -> Result<(), RegistryError> {
    validate_name(name).map_err(RegistryError::InvalidName)?;
    bundle.config.validate().map_err(RegistryError::InvalidBundle)?;
    if bundle.description.as_ref().is_some_and(|d| d.len() > record::DESCRIPTION_MAX) {
        return Err(RegistryError::InvalidBundle(format!(
            "description is longer than {} bytes",
            record::DESCRIPTION_MAX
        )));
    }
    if let Some(c) = bundle.canary {
        if !(1..=99).contains(&c.percent) || !(1..=CANARY_MAX_SECONDS).contains(&c.seconds) {
            return Err(RegistryError::InvalidBundle(format!(
                "a canary takes 1..99 percent for 1..{CANARY_MAX_SECONDS} seconds; got {} percent for {} s",
                c.percent, c.seconds
            )));
        }
        if !bundle.promote {
            return Err(RegistryError::InvalidBundle("a canary is promoted by its own rule; drop --no-promote".into()));
        }
    }
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

/// Memory a function keeps reserved: provisioned concurrency times tier,
/// over every version `live` traffic reaches (a split keeps each warm).
fn reserved_mb(record: &FunctionRecord) -> u64 {
    record
        .routes()
        .iter()
        .filter_map(|w| record.versions.get(&w.version))
        .map(|v| u64::from(v.config.provisioned_concurrency) * u64::from(v.config.memory_mb.mb()))
        .sum()
}

/// Host-wide admission: provisioned instances are memory kept for a
/// function at all times, so what every function reserves (see
/// [`reserved_mb`]), together, must fit the memory budget (`name` counted
/// as `record` instead of what it has now). What is not provisioned is held
/// only while it runs, and is admitted per request against the same budget.
fn admit(
    live: &BTreeMap<String, Arc<Deployed>>,
    budget_mb: u64,
    name: &str,
    record: &FunctionRecord,
) -> Result<(), RegistryError> {
    let others: u64 = live.values().filter(|d| d.record.name != name).map(|d| reserved_mb(&d.record)).sum();
    let asked = reserved_mb(record);
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

/// How often idle pools are checked for scaling down (and canaries judged).
pub const REAP_EVERY: Duration = Duration::from_millis(250);

/// How many provisioned functions load at once after a restart.
const WARM_PARALLEL: usize = 2;

/// What a version's pool has answered, for the canary rule.
fn tally(pool: Option<&Arc<Pool>>) -> Tally {
    pool.map_or_else(Tally::default, |p| {
        use std::sync::atomic::Ordering::Relaxed;
        Tally { requests: p.metrics.invocations.load(Relaxed), errors: p.metrics.errors_5xx.load(Relaxed) }
    })
}

/// Whether any version of the function is loaded on this host.
fn hot(d: &Deployed) -> bool {
    d.pools().iter().any(|(_, p)| p.gauges().loaded)
}

/// Loads, in the background, every version that takes `live` traffic and
/// is not loaded, if it keeps instances ready or if the function was `hot`
/// here (this host serves it: its next requests should not wait for a
/// version another host deployed to load).
fn warm_routed(d: &Deployed, hot: bool) {
    for (_, _, pool) in &d.routes {
        if (hot || pool.provisioned()) && !pool.gauges().loaded {
            let (pool, name) = (pool.clone(), d.record.name.clone());
            tokio::spawn(async move {
                if let Err(e) = pool.warm().await {
                    tracing::error!(function = %name, "could not load provisioned instances: {e}");
                }
            });
        }
    }
}

/// Counts at the start of a canary's window, as this process saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watch {
    started_at: u64,
    canary: Tally,
    baseline: Tally,
}

impl Registry {
    /// Opens the registry over `store`: every stored function is back, at
    /// zero. A record that cannot be read is logged and skipped.
    pub async fn open(
        store: Arc<Store>,
        runtime: Arc<Runtime>,
        members: Arc<Members>,
        journals: Arc<Journals>,
        options: Options,
    ) -> Result<Self, RegistryError> {
        let cache = ComponentCache::new(store.compiled_dir());
        let registry = Registry {
            store,
            runtime,
            cache,
            live: RwLock::default(),
            deploys: Mutex::default(),
            admitting: tokio::sync::Mutex::default(),
            applied: Default::default(),
            watches: Mutex::default(),
            members,
            journals,
            options,
        };
        let (records, at) = registry.store.records.list().await?;
        // Provisioned functions load once the port is open (warm_provisioned).
        for record in records {
            registry.apply(Change::Put(record), false);
        }
        registry.applied.store(at, std::sync::atomic::Ordering::Relaxed);
        registry.collect_garbage().await;
        Ok(registry)
    }

    /// Installs a change another host made (or this one, seen again): a
    /// document newer than the one installed replaces it, keeping the
    /// versions' pools; an older or equal one is ignored. With `warm`,
    /// provisioned versions it routes to load in the background.
    fn apply(&self, change: Change, warm: bool) {
        let mut live = self.live.write().expect("registry lock");
        match change {
            Change::Put(stored) => {
                let current = live.get(&stored.name);
                if current.is_some_and(|d| d.revision >= stored.revision) {
                    return;
                }
                let record = match FunctionRecord::from_stored(&stored.name, &stored.bytes) {
                    Ok(r) => r,
                    Err(e) => return tracing::error!(function = %stored.name, "unreadable record, skipped: {e}"),
                };
                let was_hot = current.is_some_and(|d| hot(d));
                let pools = current.map_or_else(Arc::default, |d| d.pools.clone());
                let deployed = self.install(record, pools, stored.revision);
                if warm {
                    warm_routed(&deployed, was_hot);
                }
                live.insert(stored.name, deployed);
            }
            Change::Delete { name, revision } => {
                if live.get(&name).is_some_and(|d| d.revision < revision) {
                    live.remove(&name);
                    tracing::info!(function = %name, "deleted on another host");
                }
            }
        }
    }

    /// Follows changes other hosts make to the shared records (etcd),
    /// installing each within moments; returns at once when this process
    /// is the only writer (sled). After a broken watch it lists everything
    /// again and starts over.
    pub async fn follow(self: Arc<Self>) {
        use futures_util::StreamExt;
        use std::sync::atomic::Ordering::Relaxed;
        loop {
            let from = self.applied.load(Relaxed);
            let mut changes = match self.store.records.watch(from).await {
                Ok(None) => return,
                Ok(Some(changes)) => changes,
                Err(e) => {
                    tracing::warn!("cannot follow the records, retrying: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(change) = changes.next().await {
                let change = match change {
                    Ok(change) => change,
                    Err(e) => {
                        tracing::warn!("following the records stopped, listing them again: {e}");
                        break;
                    }
                };
                let revision = match &change {
                    Change::Put(r) => r.revision,
                    Change::Delete { revision, .. } => *revision,
                };
                self.apply(change, true);
                self.applied.fetch_max(revision, Relaxed);
            }
            self.resync().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Lists every record and installs what changed (functions gone are
    /// removed), after a watch broke.
    async fn resync(&self) {
        let Ok((records, at)) = self.store.records.list().await else { return };
        let names: HashSet<String> = records.iter().map(|r| r.name.clone()).collect();
        for record in records {
            self.apply(Change::Put(record), true);
        }
        let gone: Vec<String> =
            self.list().iter().map(|d| d.record.name.clone()).filter(|n| !names.contains(n)).collect();
        for name in gone {
            self.apply(Change::Delete { name, revision: at }, false);
        }
        self.applied.fetch_max(at, std::sync::atomic::Ordering::Relaxed);
    }

    /// Loads the functions with provisioned concurrency, a few at a time;
    /// call it once the server is listening. Requests that arrive first
    /// load the function themselves, as any cold start.
    pub async fn warm_provisioned(&self) {
        use futures_util::StreamExt;
        let provisioned: Vec<(String, Arc<Pool>)> = self
            .list()
            .iter()
            .flat_map(|d| d.routes.iter().map(|(_, _, p)| (d.record.name.clone(), p.clone())))
            .filter(|(_, p)| p.provisioned())
            .collect();
        futures_util::stream::iter(provisioned)
            .for_each_concurrent(WARM_PARALLEL, |(name, pool)| async move {
                match pool.warm().await {
                    Ok(()) => tracing::info!(function = %name, "provisioned instances ready"),
                    Err(e) => tracing::error!(function = %name, "could not load: {e}"),
                }
            })
            .await;
    }

    /// The runtime functions run on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Where logs and events go.
    pub fn journals(&self) -> &Arc<Journals> {
        &self.journals
    }

    /// The live hosts.
    pub fn members(&self) -> &Arc<Members> {
        &self.members
    }

    /// What this host registers about itself: the membership's entry with
    /// the functions it has loaded now.
    pub fn about(&self) -> HostInfo {
        let mut me = self
            .members
            .hosts()
            .into_iter()
            .find(|h| h.id == self.members.me())
            .unwrap_or_else(|| HostInfo::this_host(self.members.me().to_owned(), self.options.memory_budget_mb));
        me.loaded = self.list().iter().filter(|d| hot(d)).map(|d| d.record.name.clone()).collect();
        me
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The function `name` as it serves now.
    pub fn get(&self, name: &str) -> Option<Arc<Deployed>> {
        self.live.read().expect("registry lock").get(name).cloned()
    }

    /// Every function, sorted by name.
    pub fn list(&self) -> Vec<Arc<Deployed>> {
        self.live.read().expect("registry lock").values().cloned().collect()
    }

    /// Up to `limit` functions named after `after` (from the first
    /// without it), sorted by name, and whether more follow.
    pub fn page(&self, after: Option<&str>, limit: usize) -> (Vec<Arc<Deployed>>, bool) {
        use std::ops::Bound;
        let live = self.live.read().expect("registry lock");
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut rest = live.range::<str, _>((from, Bound::Unbounded)).map(|(_, d)| d.clone());
        let page: Vec<_> = rest.by_ref().take(limit).collect();
        (page, rest.next().is_some())
    }

    /// The version and pool that serve a request to `d` asking for
    /// `target`. A version no split reaches gets its pool on first use.
    pub fn route(&self, d: &Deployed, target: &Target) -> Result<(u64, Arc<Pool>), RegistryError> {
        let version = match target {
            Target::Live => {
                let (v, pool) = d.pick();
                return Ok((v, pool.clone()));
            }
            Target::Version(v) => *v,
            Target::Alias(a) => d.record.alias(a)?,
        };
        let v = d.record.version(version)?;
        let mut pools = d.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = pools.get(&version) {
            return Ok((version, pool.clone()));
        }
        let pool = self.pool(&d.record.name, v);
        pool.set_provisioned(0);
        pools.insert(version, pool.clone());
        Ok((version, pool))
    }

    /// Deploys `bundle` as the next version of `name` (creating the
    /// function if needed); returns the function, the version the deploy
    /// stands for, and what happened. The same handler, artifacts and
    /// configuration as the live version make no new version and reload
    /// nothing. Unless told not to (or a canary is asked for), `live` moves
    /// to the new version.
    pub async fn deploy(
        &self,
        name: &str,
        mut bundle: Bundle,
    ) -> Result<(Arc<Deployed>, u64, Deployment), RegistryError> {
        validate_bundle(name, &mut bundle)?;
        let blobs = &self.store.blobs;
        let wasm = match bundle.wasm.take() {
            Some(wasm) => wasm,
            None => builtin::store(blobs).await.map_err(RegistryError::InvalidBundle)?,
        };
        let builtin = builtin::digest() == Some(&wasm);
        let wasm_size = blobs.size(&wasm).await?.ok_or(StoreError::MissingBlob(wasm.clone()))?;
        for a in &mut bundle.artifacts {
            a.size = blobs.size(&a.digest).await?.ok_or(StoreError::MissingBlob(a.digest.clone()))?;
        }
        let model_bytes: u64 = bundle.artifacts.iter().filter(|a| a.path.ends_with(".onnx")).map(|a| a.size).sum();
        config::check_fits(model_bytes, &bundle.config, config::Sized::Files).map_err(RegistryError::InvalidBundle)?;
        let serial = self.deploy_lock(name);
        let _serial = serial.lock().await;
        let current = self.get(name);
        let artifacts_digest = record::artifacts_digest(&bundle.artifacts);
        if let Some(d) = &current {
            let live = d.record.live();
            if live.wasm == wasm && live.artifacts_digest == artifacts_digest && live.config == bundle.config {
                let same = format!(
                    "deploy changed nothing: the same handler, artifacts and config as live version {}",
                    live.version
                );
                self.journals.event(name, Some(live.version), EventKind::Deployed, same);
                return Ok((d.clone(), live.version, Deployment::Unchanged));
            }
        } else if bundle.canary.is_some() {
            return Err(Refused::Invalid(format!("`{name}` has no live version to try a canary against")).into());
        }
        let graphs = self.read_graphs(&wasm, &artifacts_digest, &bundle.artifacts).await?;
        if builtin && graphs.len() != 1 {
            return Err(RegistryError::InvalidBundle(format!(
                "a model-only deploy serves exactly one graph (one .onnx at the top of the model folder); found {}: \
                 deploy each graph as its own function, or write a handler (`nimbus new`)",
                graphs.len()
            )));
        }
        if bundle.config.batching.is_some() {
            let refused = graphs.iter().find_map(|(g, s)| s.batch_refusal().map(|why| (g, why)));
            if let Some((graph, why)) = refused {
                return Err(RegistryError::InvalidBundle(format!(
                    "batching: graph `{graph}` cannot batch: {why}; export it with a dynamic first (batch) dimension, \
                     or deploy without batching"
                )));
            }
        }
        let version = Version {
            version: 0,
            wasm,
            wasm_size,
            artifacts_digest,
            artifacts: bundle.artifacts,
            config: bundle.config,
            deployed_at: now(),
            description: bundle.description,
            builtin,
            graphs,
            snapshot: None,
        };
        let (mut record, number) = match &current {
            None => (FunctionRecord::new(name, version), 1),
            Some(d) => {
                let mut record = d.record.clone();
                let number = record.add(version, bundle.promote && bundle.canary.is_none());
                if let Some(c) = bundle.canary {
                    record.start_canary(number, c.percent, now(), c.seconds)?;
                }
                (record, number)
            }
        };
        // Refused before anything loads when it cannot fit; admitted again
        // where it takes effect (commit), as other changes may land meanwhile.
        admit(&self.live.read().expect("registry lock"), self.options.memory_budget_mb, name, &record)?;
        let routed = record.routes().iter().any(|w| w.version == number);
        let pool = self.load(name, &record.versions[&number], routed).await?;
        record.versions.get_mut(&number).expect("just added").snapshot = self.share_snapshot(&pool).await;
        let dropped = record.retain(self.options.keep_versions);
        let pools = current.as_ref().map_or_else(Arc::default, |d| d.pools.clone());
        let expect = current.as_ref().map_or(Expect::Absent, |d| Expect::Revision(d.revision));
        let deployed = self.commit(record, pools, expect, Some((number, pool)), &dropped).await?;
        let v = &deployed.record.versions[&number];
        let mut said = format!(
            "version {number} deployed ({} MB, max concurrency {}); live is version {}",
            v.config.memory_mb, v.config.max_concurrency, deployed.record.aliases[LIVE]
        );
        if let Some(c) = deployed.record.running_canary().filter(|c| c.version == number) {
            said =
                format!("{said}; as a canary taking {}% of live traffic for {} s", c.percent, c.ends_at - c.started_at);
        }
        self.journals.event(name, Some(number), EventKind::Deployed, said);
        let deployment = if current.is_some() { Deployment::Updated } else { Deployment::Created };
        Ok((deployed, number, deployment))
    }

    /// Points `alias` of `name` at `version`.
    pub async fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<Arc<Deployed>, RegistryError> {
        let d = self.change(name, |r| r.set_alias(alias, version)).await?;
        self.journals.event(
            name,
            Some(version),
            EventKind::AliasSet,
            format!("alias `{alias}` points at version {version}"),
        );
        Ok(d)
    }

    /// Removes `alias` of `name`.
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<Arc<Deployed>, RegistryError> {
        let d = self.change(name, |r| r.delete_alias(alias)).await?;
        self.journals.event(name, None, EventKind::AliasDeleted, format!("alias `{alias}` removed"));
        Ok(d)
    }

    /// Splits `live` traffic of `name` over `weights`.
    pub async fn set_traffic(&self, name: &str, weights: &[Weight]) -> Result<Arc<Deployed>, RegistryError> {
        let d = self.change(name, |r| r.set_traffic(weights)).await?;
        let split: Vec<String> =
            d.record.routes().iter().map(|w| format!("version {} {}%", w.version, w.percent)).collect();
        self.journals.event(name, None, EventKind::TrafficSet, format!("live traffic split: {}", split.join(", ")));
        Ok(d)
    }

    /// Moves `live` of `name` back, to `to` or the previous kept version.
    /// Nothing is uploaded or compiled: the version's pool serves at once
    /// if it is loaded, else its next request is a cold start.
    pub async fn rollback(&self, name: &str, to: Option<u64>) -> Result<Arc<Deployed>, RegistryError> {
        let from = self.get(name).map(|d| d.record.aliases[LIVE]);
        let d = self.change(name, |r| r.rollback(to).map(drop)).await?;
        let now = d.record.aliases[LIVE];
        let said = match from {
            Some(from) if from != now => format!("live rolled back from version {from} to version {now}"),
            _ => format!("live stays at version {now}"),
        };
        self.journals.event(name, Some(now), EventKind::RolledBack, said);
        Ok(d)
    }

    /// Applies `edit` to the document of `name` under its deploy lock,
    /// then stores and installs the result (unless nothing changed).
    async fn change(
        &self,
        name: &str,
        edit: impl FnOnce(&mut FunctionRecord) -> Result<(), Refused>,
    ) -> Result<Arc<Deployed>, RegistryError> {
        let serial = self.deploy_lock(name);
        let _serial = serial.lock().await;
        let current = self.get(name).ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        let mut record = current.record.clone();
        edit(&mut record)?;
        if record == current.record {
            return Ok(current);
        }
        let dropped = record.retain(self.options.keep_versions);
        self.commit(record, current.pools.clone(), Expect::Revision(current.revision), None, &dropped).await
    }

    /// Admits, stores and installs `record` (with the pool of a version just
    /// loaded; `install` drops the pools of versions no longer kept), then
    /// collects the files of the `dropped` versions. Call it holding the
    /// function's deploy lock.
    async fn commit(
        &self,
        record: FunctionRecord,
        pools: Arc<Pools>,
        expect: Expect,
        loaded: Option<(u64, Arc<Pool>)>,
        dropped: &[u64],
    ) -> Result<Arc<Deployed>, RegistryError> {
        let name = record.name.clone();
        // Admitted where it takes effect, one change at a time: changes of
        // other names may have been admitted meanwhile.
        let admitting = self.admitting.lock().await;
        admit(&self.live.read().expect("registry lock"), self.options.memory_budget_mb, &name, &record)?;
        let bytes = serde_json::to_vec(&record).expect("records serialize");
        // Another host may have written meanwhile: then this change is
        // refused (409) and the caller reads again.
        let revision = self.store.records.put(&name, &bytes, expect).await?;
        pools.lock().unwrap_or_else(|p| p.into_inner()).extend(loaded);
        let deployed = self.install(record, pools, revision);
        self.live.write().expect("registry lock").insert(name.clone(), deployed.clone());
        drop(admitting);
        warm_routed(&deployed, hot(&deployed));
        if !dropped.is_empty() {
            tracing::info!(function = %name, versions = ?dropped, "versions past retention collected");
            self.collect_garbage().await;
        }
        Ok(deployed)
    }

    /// Resolves `record`'s routes over `pools` (making the pools a route
    /// needs, dropping those of versions no longer kept): routed versions
    /// keep their provisioned instances, the others none, so they scale to
    /// zero on their own.
    fn install(&self, record: FunctionRecord, pools: Arc<Pools>, revision: u64) -> Arc<Deployed> {
        let routes = record.routes();
        let mut map = pools.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|v, _| record.versions.contains_key(v));
        let mut resolved = Vec::with_capacity(routes.len());
        let mut upto = 0;
        for w in &routes {
            let v = &record.versions[&w.version];
            let pool = map.entry(w.version).or_insert_with(|| self.pool(&record.name, v)).clone();
            upto += u32::from(w.percent);
            resolved.push((w.version, upto, pool));
        }
        for (version, pool) in map.iter() {
            let routed = routes.iter().any(|w| w.version == *version);
            let v = record.versions.get(version);
            pool.set_provisioned(v.filter(|_| routed).map_or(0, |v| v.config.provisioned_concurrency));
        }
        drop(map);
        Arc::new(Deployed { record, revision, routes: resolved, pools })
    }

    /// Deletes `name` with every version; in-flight requests finish.
    pub async fn delete(&self, name: &str) -> Result<(), RegistryError> {
        let serial = self.deploy_lock(name);
        let _serial = serial.lock().await;
        let current = self.get(name).ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        self.store.records.delete(name, Expect::Revision(current.revision)).await?;
        self.live.write().expect("registry lock").remove(name);
        self.journals.event(name, None, EventKind::Deleted, "deleted with every version");
        self.collect_garbage().await;
        Ok(())
    }

    /// The lock that serializes deploys and changes of `name`. Locks of
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
    /// record and loads nothing unless it has provisioned instances that
    /// `routed` traffic will use, so it starts at zero. On a smaller tier
    /// it loads again (the snapshot may not fit).
    async fn load(&self, name: &str, version: &Version, routed: bool) -> Result<Arc<Pool>, RegistryError> {
        let pool = self.pool(name, version);
        if !routed {
            pool.set_provisioned(0);
        }
        let validated = match pool.measured().filter(|v| v.memory_mb <= version.config.memory_mb.mb()) {
            Some(v) => v,
            None => pool.validate().await?,
        };
        config::check_fits(validated.session_bytes, &version.config, config::Sized::Measured)
            .map_err(RegistryError::InvalidBundle)?;
        if pool.provisioned() {
            pool.warm().await?;
        }
        Ok(pool)
    }

    /// Each graph's signature, read from the artifact folder (made ready
    /// here), so that a model wasi-nn cannot serve is refused now rather
    /// than at its first request.
    async fn read_graphs(
        &self,
        wasm: &Digest,
        set: &Digest,
        artifacts: &[Artifact],
    ) -> Result<BTreeMap<String, Signature>, RegistryError> {
        let blobs = &self.store.blobs;
        let files = artifacts.iter().map(|a| (a.path.clone(), a.digest.clone())).collect();
        let manifest = Manifest { wasm: wasm.clone(), set: set.clone(), files, snapshot: None };
        let _pin = blobs.ready(&manifest).await?;
        let dir = blobs.artifact_dir(set);
        let graphs: Vec<String> = artifacts
            .iter()
            .filter_map(|a| a.path.strip_suffix(".onnx").filter(|stem| !stem.contains('/')))
            .map(str::to_owned)
            .collect();
        let read = move || {
            graphs
                .into_iter()
                .map(|g| {
                    let info = crate::nn::check_model(&dir.join(format!("{g}.onnx")), &dir)?;
                    Ok((g, info.signature))
                })
                .collect::<Result<BTreeMap<_, _>, crate::nn::CheckError>>()
        };
        let read = tokio::task::spawn_blocking(read).await.map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
        read.map_err(|e| RegistryError::InvalidBundle(e.to_string()))
    }

    /// In a cluster, puts the compiled snapshot of a version just loaded
    /// into the object store, so other hosts load it without compiling.
    async fn share_snapshot(&self, pool: &Pool) -> Option<SharedSnapshot> {
        let key = pool.snapshot_key();
        let path = self.cache.entry(&key)?;
        match self.store.blobs.publish(&path).await {
            Ok(digest) => Some(SharedSnapshot { key, digest: digest? }),
            Err(e) => {
                tracing::warn!("compiled snapshot not shared (each host compiles its own): {e}");
                None
            }
        }
    }

    /// A pool for `version` of `name`, with nothing loaded yet: its files
    /// are made ready (fetched in a cluster) by its first load.
    fn pool(&self, name: &str, version: &Version) -> Arc<Pool> {
        let blobs = &self.store.blobs;
        let source = Source {
            wasm: blobs.path(&version.wasm),
            wasm_digest: version.wasm.as_str().to_owned(),
            artifacts: blobs.artifact_dir(&version.artifacts_digest),
            artifacts_digest: version.artifacts_digest.as_str().to_owned(),
        };
        let manifest = Manifest {
            wasm: version.wasm.clone(),
            set: version.artifacts_digest.clone(),
            files: version.artifacts.iter().map(|a| (a.path.clone(), a.digest.clone())).collect(),
            snapshot: version.snapshot.as_ref().map(|s| (s.key.clone(), s.digest.clone())),
        };
        let mut spec = version.config.spec();
        spec.request_env = request_env(name, version);
        let loader = Loader {
            runtime: self.runtime.clone(),
            name: name.to_owned(),
            version: version.version,
            journals: self.journals.clone(),
            source,
            spec,
            cache: self.cache.clone(),
            files: Some((blobs.clone(), manifest)),
        };
        Pool::new(loader, version.config.scaling(self.options.idle_timeout), self.members.clone())
    }

    /// Removes blobs, artifact folders and compiled snapshots no retained
    /// version of a stored record references (stored, not live: a function
    /// that failed to restore keeps its bytes).
    async fn collect_garbage(&self) {
        let records = match self.store.records.list().await {
            Ok((records, _)) => records,
            Err(e) => return tracing::warn!("blob collection skipped: {e}"),
        };
        let mut keep = HashSet::new();
        let mut compiled = HashSet::new();
        for stored in records {
            let Ok(r) = FunctionRecord::from_stored(&stored.name, &stored.bytes) else {
                return tracing::warn!("blob collection skipped: unreadable record");
            };
            for v in r.versions.into_values() {
                let env = v.config.spec().env;
                compiled.insert(self.runtime.snapshot_key(v.wasm.as_str(), v.artifacts_digest.as_str(), &env));
                keep.insert(v.wasm);
                keep.insert(v.artifacts_digest);
                keep.extend(v.snapshot.map(|s| s.digest));
                keep.extend(v.artifacts.into_iter().map(|a| a.digest));
            }
        }
        let artifact_sets = keep.iter().map(|d| d.as_str().to_owned()).collect();
        let stale = self.cache.retain(&compiled, &artifact_sets);
        if stale > 0 {
            tracing::info!(removed = stale, "collected unused compiled snapshots");
        }
        match self.store.blobs.retain(&keep, self.options.blob_grace).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "collected unreferenced blobs"),
            Err(e) => tracing::warn!("blob collection failed: {e}"),
        }
    }

    /// Reaps and judges canaries every [`REAP_EVERY`] until the task is
    /// dropped.
    pub async fn reap_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REAP_EVERY);
        loop {
            tick.tick().await;
            let registry = self.clone();
            // Dropping sessions and instances can take a while; not on a worker.
            let _ = tokio::task::spawn_blocking(move || registry.reap()).await;
            self.judge_canaries().await;
        }
    }

    /// Every step of the pools' timelines: notes each loaded pool's
    /// instances, and tells throttles, timeouts and memory traps since the
    /// last step as events (one per kind and step: a burst is one line).
    pub async fn observe_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(crate::pool::STEP_S));
        loop {
            tick.tick().await;
            self.observe();
        }
    }

    fn observe(&self) {
        for d in self.list() {
            for (version, pool) in d.pools() {
                let g = pool.gauges();
                if g.loaded {
                    pool.metrics.timeline.instances(g.warm_instances, g.busy_instances);
                }
                let [throttles, timeouts, memory] = pool.metrics.unreported();
                let Some(config) = d.record.versions.get(&version).map(|v| &v.config) else { continue };
                let name = &d.record.name;
                let every = crate::pool::STEP_S;
                let told = [
                    (throttles, EventKind::Throttled, format!("at max concurrency {}", config.max_concurrency)),
                    (timeouts, EventKind::Timeouts, format!("ran past the timeout of {} s", config.timeout_s)),
                    (
                        memory,
                        EventKind::MemoryExceeded,
                        format!("trapped at the memory tier of {} MB", config.memory_mb),
                    ),
                ];
                for (n, kind, what) in told {
                    if n > 0 {
                        let plural = if n == 1 { "request" } else { "requests" };
                        self.journals.event(name, Some(version), kind, format!("{n} {plural} {what} (last {every} s)"));
                    }
                }
            }
        }
    }

    /// Promotes or rolls back every running canary the rule (see
    /// [`canary::judge`]) has an answer for. Counts start when this process
    /// first sees the canary: after a restart its window goes on, judged on
    /// what the new process answers. Times are whole seconds, so a window
    /// ends after at least its length (and at most a second more).
    pub async fn judge_canaries(&self) {
        let running: Vec<(Arc<Deployed>, Canary)> =
            self.list().into_iter().filter_map(|d| Some((d.clone(), d.record.running_canary()?.clone()))).collect();
        let mut decisions = Vec::new();
        {
            let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
            watches.retain(|name, _| running.iter().any(|(d, _)| &d.record.name == name));
            for (d, c) in &running {
                let pools = d.pools.lock().unwrap_or_else(|p| p.into_inner());
                let (canary, baseline) = (tally(pools.get(&c.version)), tally(pools.get(&c.baseline)));
                let fresh = Watch { started_at: c.started_at, canary, baseline };
                let watch = watches.entry(d.record.name.clone()).or_insert(fresh);
                if watch.started_at != c.started_at {
                    *watch = fresh;
                }
                let verdict =
                    canary::judge(canary.since(watch.canary), baseline.since(watch.baseline), now() > c.ends_at);
                if verdict != Verdict::Wait {
                    decisions.push((d.record.name.clone(), c.clone(), verdict));
                }
            }
        }
        for (name, c, verdict) in decisions {
            let (promote, reason) = match verdict {
                Verdict::Promote(r) => (true, r),
                Verdict::RollBack(r) => (false, r),
                Verdict::Wait => continue,
            };
            let decided = self
                .change(&name, |r| {
                    // Only the canary judged: an operator may have ended it meanwhile.
                    if r.running_canary() == Some(&c) {
                        r.decide_canary(promote, reason.clone());
                    }
                    Ok(())
                })
                .await;
            match decided {
                Ok(_) => {
                    let (kind, what) = match promote {
                        true => (EventKind::CanaryPromoted, "promoted"),
                        false => (EventKind::CanaryRolledBack, "rolled back"),
                    };
                    let said = format!("canary version {} {what}: {reason}", c.version);
                    self.journals.event(&name, Some(c.version), kind, said);
                }
                Err(e) => tracing::error!(function = %name, "canary decision not stored: {e}"),
            }
        }
    }

    /// Scales idle pools down (see [`Pool::reap`]), then, while the loaded
    /// pools' tiers add up past the memory budget, or the memory held and
    /// wanted (cold starts waiting for it) is past it, scales the least
    /// recently used idle ones to zero. Call it periodically.
    pub fn reap(&self) {
        let now = Instant::now();
        let pools: Vec<Arc<Pool>> = self.list().iter().flat_map(|d| d.pools()).map(|(_, p)| p).collect();
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

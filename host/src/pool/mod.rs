//! A function's instance pool: how requests get instances, how the pool
//! scales out with load and back to zero.
//!
//! Contract:
//! - at most `max_concurrency` requests run at once; a request over it
//!   waits up to `queue_timeout`, then is refused ([`PoolError::Throttled`],
//!   HTTP 429 with `Retry-After`);
//! - a request takes a ready instance (made from the post-`init` snapshot
//!   ahead of time) or makes one (a cold start); every instance serves one
//!   request and is dropped, so requests never share state;
//! - after a request, ready instances are refilled in the background up to
//!   the larger of provisioned concurrency and the peak concurrency seen
//!   (never past max concurrency, and never into the host's reserved
//!   instance slots, which stay free for other functions' requests);
//! - a function idle for `idle_timeout` with nothing provisioned drops its
//!   instances, its component and its ONNX Runtime sessions (scaled to
//!   zero); the next request brings it back (a cold start whose time is
//!   ModelSetupTime). With provisioned concurrency it shrinks to that many
//!   ready instances instead;
//! - a trap or timeout ends only its own instance.

mod metrics;
mod timeline;

pub use metrics::{Batches, Gauges, Histogram, Metrics, Percentiles, Series, render};
pub use timeline::{KEPT, STEP_S, Step, Timeline, step_of};

use crate::journal::{EventKind, Journals};
use crate::members::Members;
use crate::runtime::placement::{self, FrontSlot, Streak};
use crate::runtime::{
    ComponentCache, Function, FunctionSpec, Held, Instance, InvokeError, Invoked, LoadError, Output, Request, Retired,
    Runtime, Source, Start, Validated, serve,
};
use crate::store::{BlobStore, Manifest, Pin, StoreError};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How a pool scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scaling {
    /// Most requests at once.
    pub max_concurrency: u32,
    /// Ready instances kept at all times.
    pub provisioned: u32,
    /// How long a request over max concurrency waits for a slot.
    pub queue_timeout: Duration,
    /// Idle time after which the pool scales to zero (or to provisioned).
    pub idle_timeout: Duration,
}

/// A function's max concurrency as one host enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The function's max concurrency, for the whole cluster.
    pub max: u32,
    /// What this host admits of it.
    pub share: u32,
    /// Live hosts sharing it.
    pub hosts: u32,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.hosts {
            0 | 1 => write!(f, "{}", self.max),
            n => write!(f, "{} on this host, its share of {} across {n} live hosts", self.share, self.max),
        }
    }
}

/// The slots of this host's share, remade when the membership changes.
struct Permits {
    generation: u64,
    limit: Limit,
    slots: Arc<Semaphore>,
}

/// Why a pooled request failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every slot stayed busy for the whole queue timeout (or this host's
    /// share of the cluster's slots is none).
    #[error("function `{function}` is at its max concurrency ({limit}); retry after {retry_after_s} s")]
    Throttled {
        /// The function.
        function: String,
        /// Its max concurrency, and this host's share of it.
        limit: Limit,
        /// Suggested wait before retrying.
        retry_after_s: u64,
    },
    /// In a cluster, this host's share of the function's max concurrency is
    /// none (fewer slots than live hosts): another host serves it.
    #[error(
        "function `{function}` admits {} concurrent requests across {} live hosts and this host has no share \
         of them; another host serves it",
        limit.max,
        limit.hosts
    )]
    NoShare {
        /// The function.
        function: String,
        /// Its max concurrency, and this host's (empty) share of it.
        limit: Limit,
    },
    /// Coming up from zero failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The request itself failed.
    #[error(transparent)]
    Invoke(#[from] InvokeError),
}

/// Everything needed to (re)load the function.
pub struct Loader {
    /// The shared runtime.
    pub runtime: Arc<Runtime>,
    /// The function's name.
    pub name: String,
    /// The version this pool serves.
    pub version: u64,
    /// Where its events go.
    pub journals: Arc<Journals>,
    /// Its code and artifacts.
    pub source: Source,
    /// How it runs.
    pub spec: FunctionSpec,
    /// Where compiled snapshots are.
    pub cache: ComponentCache,
    /// The blobs `source` is made of and which it needs, fetched and
    /// verified before every load; `None` when the source's paths are a
    /// folder and file the caller keeps as they are.
    pub files: Option<(Arc<BlobStore>, Manifest)>,
}

impl Loader {
    /// The key of the function's snapshot in the cache.
    fn key(&self) -> String {
        self.runtime.snapshot_key(&self.source.wasm_digest, &self.source.artifacts_digest, &self.spec.env)
    }
}

/// How long a cold start waits for the host's memory (requests finishing,
/// idle functions scaled to zero by the reaper) before a 503.
const MEMORY_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Inner {
    function: Option<Arc<Function>>,
    /// The host memory the loaded function's sessions hold.
    held: Option<Held>,
    /// Keeps the function's files on disk while it is loaded.
    pin: Option<Pin>,
    ready: Vec<Instance>,
    busy: u32,
    /// Instances being made by refills right now (so that two refills
    /// running at once do not overshoot the target).
    making: u32,
    peak: u32,
    last_used: Option<Instant>,
    /// Why the last load failed, until one succeeds.
    load_error: Option<String>,
}

/// One function's instances.
pub struct Pool {
    loader: Loader,
    scaling: Scaling,
    /// Ready instances kept at all times: the configured provisioned
    /// concurrency while the version takes `live` traffic, else 0.
    provisioned: AtomicU32,
    inner: Mutex<Inner>,
    loading: tokio::sync::Mutex<()>,
    members: Arc<Members>,
    permits: Mutex<Permits>,
    /// Memory one session of every graph holds, as a deploy measured it
    /// (0 until known).
    session_bytes: AtomicU64,
    /// Whether requests have been short enough to run on the front.
    streak: Streak,
    /// What the pool measured.
    pub metrics: Metrics,
}

/// A request's outcome, with what its guest wrote.
pub struct Served {
    /// The answer, or why there is none.
    pub result: Result<Invoked, PoolError>,
    /// Whether it found no ready instance.
    pub cold: bool,
    /// The guest's stdout and stderr lines.
    pub output: Output,
}

impl Served {
    fn refused(e: PoolError) -> Self {
        Served { result: Err(e), cold: false, output: Output::default() }
    }
}

/// A request served by the runtime: its answer, what its guest wrote, and
/// what is left of its instance.
type Serving = (Result<Invoked, InvokeError>, Output, Option<Retired>);

/// What a request task that failed to finish (it panicked) served.
fn task_failed(e: &dyn std::fmt::Display) -> Serving {
    (Err(InvokeError::Internal(format!("request task: {e}"))), Output::default(), None)
}

/// Keeps the busy count honest on every path out of a request.
struct Busy(Arc<Pool>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.busy -= 1;
        inner.last_used = Some(Instant::now());
    }
}

impl Pool {
    /// A pool with nothing loaded: the first request (or [`Pool::warm`])
    /// loads the function.
    pub fn new(mut loader: Loader, scaling: Scaling, members: Arc<Members>) -> Arc<Self> {
        let limit = Limit { max: scaling.max_concurrency, share: scaling.max_concurrency, hosts: 1 };
        let permits = Permits { generation: 0, limit, slots: Arc::new(Semaphore::new(limit.share as usize)) };
        let metrics = Metrics::default();
        if let Some(batching) = &mut loader.spec.batching {
            batching.observer = crate::nn::Observer(Some(metrics.batches.clone()));
        }
        Arc::new(Pool {
            loader,
            scaling,
            provisioned: AtomicU32::new(scaling.provisioned),
            inner: Mutex::new(Inner::default()),
            loading: tokio::sync::Mutex::new(()),
            members,
            permits: Mutex::new(permits),
            session_bytes: AtomicU64::new(0),
            streak: Streak::default(),
            metrics,
        })
    }

    /// Loads the function as a deploy does, measuring the memory its
    /// sessions hold, records that beside its snapshot (see [`Pool::measured`])
    /// and keeps it loaded.
    pub async fn validate(self: &Arc<Self>) -> Result<Validated, LoadError> {
        let function = self.ensure_loaded(true).await?;
        let validated = Validated { session_bytes: function.session_bytes(), memory_mb: self.memory_mb() };
        self.loader.cache.mark_validated(&self.loader.key(), &validated)?;
        self.session_bytes.store(validated.session_bytes, Ordering::Relaxed);
        Ok(validated)
    }

    /// What a deploy of the same handler, artifacts and environment
    /// measured (on this or another pool, before a restart too), if one did.
    pub fn measured(&self) -> Option<Validated> {
        let validated = self.loader.cache.validated(&self.loader.key())?;
        self.session_bytes.store(validated.session_bytes, Ordering::Relaxed);
        Some(validated)
    }

    /// What one session of every graph holds, as a deploy measured it; 0 if
    /// none did.
    fn session_bytes(&self) -> u64 {
        match self.session_bytes.load(Ordering::Relaxed) {
            0 => self.measured().map_or(0, |v| v.session_bytes),
            known => known,
        }
    }

    /// Loads the function and fills the provisioned instances.
    pub async fn warm(self: &Arc<Self>) -> Result<(), LoadError> {
        self.ensure_loaded(false).await?;
        let refill = self.clone();
        let _ = self.loader.runtime.run(async move { refill.refill(None).await }).await;
        Ok(())
    }

    /// Whether the function keeps instances ready at all times.
    pub fn provisioned(&self) -> bool {
        self.provisioned_count() > 0
    }

    fn provisioned_count(&self) -> u32 {
        self.provisioned.load(Ordering::Relaxed)
    }

    /// Keeps `n` instances ready from now on (0 lets the pool scale to
    /// zero when idle).
    pub fn set_provisioned(&self, n: u32) {
        self.provisioned.store(n.min(self.scaling.max_concurrency), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The loaded function, loading it (a cold start from zero) if needed;
    /// with `measure`, as a deploy does (see [`Function::load_with`]).
    async fn ensure_loaded(&self, measure: bool) -> Result<Arc<Function>, LoadError> {
        if let Some(f) = self.lock().function.clone() {
            return Ok(f);
        }
        let _one_loader = self.loading.lock().await;
        {
            let inner = self.lock();
            if let Some(f) = inner.function.clone() {
                return Ok(f);
            }
        }
        let l = &self.loader;
        let pin = match &l.files {
            Some((blobs, manifest)) => Some(blobs.ready(manifest).await.map_err(|e| {
                let e = match e {
                    StoreError::ObjectStore(m) => LoadError::Unavailable(m),
                    e => LoadError::Artifacts(e.to_string()),
                };
                self.load_failed(&e);
                e
            })?),
            None => None,
        };
        if let Some((blobs, Manifest { snapshot: Some((key, digest)), .. })) = &l.files {
            self.adopt_snapshot(blobs, key, digest).await;
        }
        // A cold start waits for the memory its sessions will hold (known
        // from the deploy's measurement); a first load measures, then holds.
        let memory = l.runtime.memory();
        let expected = self.session_bytes() * l.spec.sessions as u64;
        let mut held = None;
        if expected > 0 {
            held = Some(memory.hold(expected, MEMORY_PATIENCE).await.ok_or(LoadError::AtCapacity)?);
        }
        let start = Instant::now();
        let loaded = Function::load_with(&l.runtime, &l.name, &l.source, l.spec.clone(), &l.cache, measure).await;
        let function = match loaded {
            Ok(f) => Arc::new(f),
            Err(e) => {
                self.load_failed(&e);
                return Err(e);
            }
        };
        self.metrics.model_setup.observe(start.elapsed());
        let held = held.unwrap_or_else(|| memory.charge(function.session_bytes() * l.spec.sessions as u64));
        let setup = format!("loaded in {} ms", start.elapsed().as_millis());
        l.journals.event(&l.name, Some(l.version), EventKind::Loaded, setup);
        let mut inner = self.lock();
        inner.function = Some(function.clone());
        inner.held = Some(held);
        inner.pin = pin;
        inner.load_error = None;
        // Loading counts as use: a fresh load is not the first to evict.
        inner.last_used = Some(Instant::now());
        Ok(function)
    }

    fn load_failed(&self, e: &LoadError) {
        let l = &self.loader;
        l.journals.event(&l.name, Some(l.version), EventKind::LoadFailed, format!("could not load: {e}"));
        self.lock().load_error = Some(e.to_string());
    }

    /// The key of the function's compiled snapshot on this host.
    pub fn snapshot_key(&self) -> String {
        self.loader.key()
    }

    /// Takes the compiled snapshot another host shared, if it was made for
    /// the same engine and this host has none, so this load compiles
    /// nothing. Any failure only means compiling here.
    async fn adopt_snapshot(&self, blobs: &Arc<BlobStore>, key: &str, digest: &crate::store::Digest) {
        let l = &self.loader;
        if key != l.key() || l.cache.entry(key).is_some() {
            return;
        }
        let adopted = match blobs.fetch(digest).await {
            Ok(path) => l.cache.adopt(key, &path),
            Err(e) => Err(LoadError::Internal(e.to_string())),
        };
        if let Err(e) = adopted {
            tracing::warn!(function = %l.name, "shared compiled snapshot not used, compiling here: {e}");
        }
    }

    /// Serves one request.
    pub async fn invoke(self: &Arc<Self>, request: Request) -> Served {
        let (limit, slots) = self.slots();
        if limit.share == 0 {
            self.throttled();
            return Served::refused(PoolError::NoShare { function: self.loader.name.clone(), limit });
        }
        let acquired = tokio::time::timeout(self.scaling.queue_timeout, slots.acquire_owned()).await;
        let Some(permit) = acquired.ok().and_then(Result::ok) else {
            self.throttled();
            let function = self.loader.name.clone();
            return Served::refused(PoolError::Throttled { function, limit, retry_after_s: 1 });
        };
        let (ready, alone) = {
            let mut inner = self.lock();
            inner.busy += 1;
            inner.peak = inner.peak.max(inner.busy);
            (inner.ready.pop(), inner.busy == 1)
        };
        let busy = Busy(self.clone());
        let cold = ready.is_none();
        let start = match ready {
            Some(instance) => Start::Warm(instance),
            None => {
                self.metrics.cold_starts.fetch_add(1, Ordering::Relaxed);
                self.metrics.timeline.cold_start();
                match self.ensure_loaded(false).await {
                    Ok(function) => Start::Cold(function),
                    Err(e) => return Served { result: Err(e.into()), cold, output: Output::default() },
                }
            }
        };
        let serving = async move {
            let served = serve(start, &request).await;
            drop(busy);
            drop(permit);
            served
        };
        let runtime = &self.loader.runtime;
        // Under concurrent load the hand-off costs no latency (the
        // executor is awake) and keeps guest code off the front: measured,
        // running there only pays for a request alone in its pool.
        let front = if alone && self.streak.earned() { runtime.front.try_take() } else { None };
        let (result, output) = match front {
            Some(slot) => self.invoke_here(serving, slot).await,
            None => self.invoke_on_executor(serving).await,
        };
        self.streak.served(result.as_ref().ok().map(|invoked| invoked.instantiate + invoked.handle));
        let result = result.map_err(PoolError::from);
        match &result {
            Err(PoolError::Invoke(InvokeError::Timeout(_))) => self.metrics.timeouts.fetch_add(1, Ordering::Relaxed),
            Err(PoolError::Invoke(InvokeError::MemoryExceeded(_))) => {
                self.metrics.memory_exceeded.fetch_add(1, Ordering::Relaxed)
            }
            _ => 0,
        };
        Served { result, cold, output }
    }

    /// Serves on the HTTP lane that received the request (see
    /// `runtime::placement`), moving to the guests' executor past the
    /// budget; the served instance is dropped and the next one made after
    /// the answer, off the request's path.
    async fn invoke_here(
        self: &Arc<Self>,
        serving: impl Future<Output = Serving> + Send + 'static,
        slot: FrontSlot<'_>,
    ) -> (Result<Invoked, InvokeError>, Output) {
        self.metrics.lane_runs.fetch_add(1, Ordering::Relaxed);
        let served = match placement::run_here(Box::pin(serving), placement::BUDGET).await {
            Ok(served) => served,
            Err(unfinished) => {
                self.metrics.lane_moves.fetch_add(1, Ordering::Relaxed);
                drop(slot);
                self.loader.runtime.run(unfinished).await.unwrap_or_else(|e| task_failed(&e))
            }
        };
        let (result, output, retired) = served;
        let pool = self.clone();
        tokio::spawn(async move { pool.refill(retired).await });
        (result, output)
    }

    /// Serves as one task on the guests' executor: it answers, frees the
    /// slot, and only then drops the served instance and pre-makes the
    /// next one, so that work is off the request's path.
    async fn invoke_on_executor(
        self: &Arc<Self>,
        serving: impl Future<Output = Serving> + Send + 'static,
    ) -> (Result<Invoked, InvokeError>, Output) {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let pool = self.clone();
        self.loader.runtime.spawn(async move {
            let (result, output, retired) = serving.await;
            let _ = answer.send((result, output));
            pool.refill(retired).await;
        });
        answered.await.unwrap_or_else(|e| {
            let (result, output, _) = task_failed(&e);
            (result, output)
        })
    }

    fn throttled(&self) {
        self.metrics.throttles.fetch_add(1, Ordering::Relaxed);
        self.metrics.timeline.throttled();
    }

    /// This host's limit and its slots, remade first if the membership
    /// changed (requests holding the old slots finish on them).
    fn slots(&self) -> (Limit, Arc<Semaphore>) {
        let generation = self.members.generation();
        let mut permits = self.permits.lock().unwrap_or_else(|p| p.into_inner());
        if permits.generation != generation {
            let (share, hosts) = self.members.share(&self.loader.name, self.scaling.max_concurrency);
            if share != permits.limit.share {
                permits.slots = Arc::new(Semaphore::new(share as usize));
            }
            permits.limit = Limit { max: self.scaling.max_concurrency, share, hosts };
            permits.generation = generation;
        }
        (permits.limit, permits.slots.clone())
    }

    /// Drops a served instance and makes ready instances up to the target.
    async fn refill(&self, retired: Option<Retired>) {
        drop(retired);
        loop {
            let function = {
                let mut inner = self.lock();
                let target = inner.peak.max(self.provisioned_count()).min(self.scaling.max_concurrency);
                let have = inner.ready.len() as u32 + inner.busy + inner.making;
                match inner.function.clone() {
                    Some(f) if have < target && self.loader.runtime.spare_slots() => {
                        inner.making += 1;
                        f
                    }
                    _ => return,
                }
            };
            let made = function.instance().await;
            let mut inner = self.lock();
            inner.making -= 1;
            // Scaled to zero (or reloaded) meanwhile: the instance is stale.
            let current = inner.function.as_ref().is_some_and(|f| Arc::ptr_eq(f, &function));
            match made {
                Ok(instance) if current => inner.ready.push(instance),
                Ok(_) => return,
                Err(e) => return tracing::warn!(function = %self.loader.name, "could not pre-make an instance: {e}"),
            }
        }
    }

    /// Scales down a pool idle for its idle timeout: to zero (instances,
    /// component and sessions dropped) when nothing is provisioned, else
    /// to the provisioned instances. Returns whether it scaled to zero.
    pub fn reap(&self, now: Instant) -> bool {
        {
            let mut inner = self.lock();
            let idle = inner.last_used.is_none_or(|t| now.duration_since(t) >= self.scaling.idle_timeout);
            if inner.busy > 0 || !idle || inner.function.is_none() {
                return false;
            }
            let provisioned = self.provisioned_count();
            if provisioned > 0 {
                inner.peak = provisioned;
                inner.ready.truncate(provisioned as usize);
                return false;
            }
        }
        self.scale_to_zero()
    }

    /// Scales to zero now if no request is running and nothing is
    /// provisioned (idle timeout or memory pressure); returns whether it did.
    pub fn scale_to_zero(&self) -> bool {
        let dropped = {
            let mut inner = self.lock();
            if inner.busy > 0 || self.provisioned() || inner.function.is_none() {
                return false;
            }
            inner.peak = 0;
            (std::mem::take(&mut inner.ready), inner.function.take(), inner.held.take(), inner.pin.take())
        };
        drop(dropped);
        let l = &self.loader;
        l.journals.event(&l.name, Some(l.version), EventKind::ScaledToZero, "scaled to zero");
        true
    }

    /// When the pool was last used (for least-recently-used eviction).
    pub fn last_used(&self) -> Option<Instant> {
        self.lock().last_used
    }

    /// The pool's state now.
    pub fn gauges(&self) -> Gauges {
        let inner = self.lock();
        let function = inner.function.as_ref();
        let measured = self.session_bytes.load(Ordering::Relaxed);
        Gauges {
            loaded: function.is_some(),
            warm_instances: inner.ready.len() as u32,
            busy_instances: inner.busy,
            sessions: function.map_or(0, |f| f.sessions() as u32),
            model_memory_bytes: function.map_or(0, |f| {
                let per_session = if measured > 0 { measured } else { f.session_bytes() };
                per_session * f.spec().sessions as u64
            }),
        }
    }

    /// Why the function could not load last time it tried, if it failed.
    pub fn load_error(&self) -> Option<String> {
        self.lock().load_error.clone()
    }

    /// The guest memory tier, in MB.
    pub fn memory_mb(&self) -> u32 {
        self.loader.spec.memory.mb()
    }
}

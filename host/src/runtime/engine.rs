//! The one wasmtime engine a process uses, its linkers, its epoch clock and
//! the executor guests run on.
//!
//! Guests (requests and `init`) run as async tasks on their own tokio
//! runtime, not on the lanes that serve HTTP: guest code yields at every
//! epoch tick, so many guests share that runtime's threads fairly, and a
//! busy function never delays the HTTP front or another function's
//! admission. The front hands each request over with one task spawn.
//!
//! Instances come from the pooling allocator: slots are reserved up front,
//! so instantiation maps a snapshot's memory image copy-on-write instead of
//! allocating. Where the address space is too small for the pool (some
//! containers cap virtual memory), the engine falls back to on-demand
//! allocation and says so in the log. A thread advances the epoch every
//! [`TICK`]; at each tick a running guest yields, and a timer around the
//! call ends it at its deadline.

use super::state::State;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Epoch granularity: the precision of timeouts.
pub const TICK: Duration = Duration::from_millis(10);

/// Bytes of each memory and table slot reset in place rather than returned
/// to the kernel when an instance ends, so the next instance in that slot
/// does not page-fault on what a request touched. With `pagemap_scan`
/// (Linux 6.7+) only the pages a request dirtied are reset.
const KEEP_RESIDENT: usize = 16 << 20;

/// Instance slots in the pool, shared by all functions, unless the server
/// is told otherwise ([`Runtime::with_instances`]).
pub const DEFAULT_INSTANCES: u32 = 1000;

/// Fewest and most instance slots a server may have: each slot reserves
/// its memory's address range (4 GiB plus guards), and a 47-bit address
/// space holds a few thousand.
pub const INSTANCES: std::ops::RangeInclusive<u32> = 16..=4000;

/// The share of slots (one in this many) that pre-made (warm) instances
/// never take: they are kept for requests and deploys of any function, so
/// one function's refills cannot leave another without an instance.
const RESERVED_SHARE: u32 = 10;

/// A wasmtime engine set up for Nimbus, with its linkers.
pub struct Runtime {
    pub(crate) engine: Engine,
    /// Imports for requests: async WASI, so a deadline can end a sleep.
    pub(crate) linker: Linker<State>,
    /// A second engine for snapshotting `init`: `init` runs once, so its
    /// code is compiled without optimization, which halves deploy time.
    pub(crate) init_engine: Engine,
    /// Imports for `init`, which wizer drives asynchronously.
    pub(crate) init_linker: Linker<State>,
    /// Instance slots in use.
    pub(crate) slots: Arc<Slots>,
    /// Memory all requests hold, against the host's limit.
    pub(crate) host_memory: Arc<super::limits::HostMemory>,
    /// HTTP lanes that may run short requests' guests (see `placement`).
    pub(crate) front: super::placement::FrontSlots,
    pooling: bool,
    _ticker: EpochTicker,
    executor: Executor,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("pooling", &self.pooling).finish()
    }
}

/// Engine settings; `instances` slots when pooled (`None`: on demand).
fn config(instances: Option<u32>) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    if let Some(instances) = instances {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances * 4)
            .total_memories(instances)
            .total_tables(instances * 4)
            .total_stacks(instances)
            .max_memories_per_component(2)
            .max_tables_per_component(8)
            .max_core_instances_per_component(16)
            .max_memory_size(4 << 30)
            .max_unused_warm_slots(100)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

impl Runtime {
    /// Builds the engine (pooled when possible) and starts its epoch clock.
    pub fn new() -> wasmtime::Result<Arc<Self>> {
        Self::with_instances(DEFAULT_INSTANCES)
    }

    /// As [`Runtime::new`], with `instances` slots (within [`INSTANCES`])
    /// for all functions' instances together.
    pub fn with_instances(instances: u32) -> wasmtime::Result<Arc<Self>> {
        let instances = instances.clamp(*INSTANCES.start(), *INSTANCES.end());
        let (engine, pooling) = match Engine::new(&config(Some(instances))) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!("pooling allocator unavailable ({e}); allocating instances on demand");
                (Engine::new(&config(None))?, false)
            }
        };
        let linker = linker_for(&engine)?;
        let mut init_config = config(None);
        init_config.cranelift_opt_level(wasmtime::OptLevel::None);
        let init_engine = Engine::new(&init_config)?;
        let init_linker = linker_for(&init_engine)?;
        let ticker = EpochTicker::start(vec![engine.clone(), init_engine.clone()]);
        let total = if pooling { instances } else { u32::MAX };
        let reserved = if pooling { (instances / RESERVED_SHARE).max(1) } else { 0 };
        Ok(Arc::new(Runtime {
            engine,
            linker,
            init_engine,
            init_linker,
            slots: Arc::new(Slots { used: AtomicU32::new(0), total, reserved }),
            host_memory: Arc::default(),
            // The front serves on a lane per core (`api::lanes`).
            front: super::placement::FrontSlots::new(super::limits::cores()),
            pooling,
            _ticker: ticker,
            executor: Executor::start()?,
        }))
    }

    /// Starts `task` on the guests' executor.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.executor.handle().spawn(task)
    }

    /// Runs `task` on the guests' executor and waits for it.
    pub async fn run<F>(&self, task: F) -> Result<F::Output, tokio::task::JoinError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn(task).await
    }

    /// The component-cache key of a snapshot of the handler with digest
    /// `source_wasm` over the artifact set `artifacts` with environment `env`.
    pub fn snapshot_key(&self, source_wasm: &str, artifacts: &str, env: &[(String, String)]) -> String {
        super::ComponentCache::key(&self.engine, source_wasm, artifacts, env)
    }

    /// Caps the memory all requests together may hold (guest memory and
    /// what the host keeps for them), in bytes; unlimited until set.
    pub fn limit_request_memory(&self, bytes: u64) {
        self.host_memory.set_limit(bytes);
    }

    /// What the host holds for functions: requests (guest memory and host
    /// side) and loaded functions' sessions, against the memory budget.
    pub fn memory(&self) -> &Arc<super::limits::HostMemory> {
        &self.host_memory
    }

    /// Whether a pre-made instance may take an instance slot now (it may
    /// not take the ones reserved for requests and deploys).
    pub fn spare_slots(&self) -> bool {
        self.slots.spare()
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// Instance slots in use and in all (`None` when not pooled).
    pub fn slots(&self) -> (u32, Option<u32>) {
        (self.slots.used.load(Ordering::Relaxed), self.pooling.then_some(self.slots.total))
    }
}

/// The imports every handler gets: async WASI and wasi-nn.
fn linker_for(engine: &Engine) -> wasmtime::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    super::bindings::Handler::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// The count of instance slots in use, against the pool's total.
#[derive(Debug)]
pub(crate) struct Slots {
    used: AtomicU32,
    total: u32,
    /// Slots only requests and deploys take.
    reserved: u32,
}

impl Slots {
    /// Counts one slot taken until the returned guard drops.
    pub(crate) fn take(self: &Arc<Self>) -> Slot {
        self.used.fetch_add(1, Ordering::Relaxed);
        Slot(self.clone())
    }

    /// Whether a pre-made instance may take a slot now.
    pub(crate) fn spare(&self) -> bool {
        self.used.load(Ordering::Relaxed).saturating_add(self.reserved) < self.total
    }
}

/// One instance slot in use.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The guests' own tokio runtime; shut down without waiting on drop.
struct Executor(Option<tokio::runtime::Runtime>);

impl Executor {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(super::limits::cores())
            .thread_name("nimbus-guest")
            .enable_all()
            .build()?;
        Ok(Executor(Some(runtime)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("executor runs until dropped").handle()
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Advances the engines' epochs every [`TICK`]; stops and joins on drop.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engines: Vec<Engine>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("nimbus-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engines.iter().for_each(Engine::increment_epoch);
                }
            })
            .expect("spawn epoch thread");
        EpochTicker { stop, thread: Some(thread) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! The one wasmtime engine a process uses, its linkers and its epoch clock.
//!
//! Instances come from the pooling allocator: slots are reserved up front,
//! so instantiation maps a snapshot's memory image copy-on-write instead of
//! allocating. Where the address space is too small for the pool (some
//! containers cap virtual memory), the engine falls back to on-demand
//! allocation and says so in the log. Timeouts use epoch interruption: a
//! thread ticks every [`TICK`], a store traps once its deadline passes.

use super::state::State;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Instance slots in the pool, shared by all functions.
const POOL_INSTANCES: u32 = 1000;

/// A wasmtime engine set up for Nimbus, with its linkers.
pub struct Runtime {
    pub(crate) engine: Engine,
    /// Imports for requests: synchronous WASI, called on blocking threads.
    pub(crate) linker: Linker<State>,
    /// A second engine for snapshotting `init`: `init` runs once, so its
    /// code is compiled without optimization, which halves deploy time.
    pub(crate) init_engine: Engine,
    /// Imports for `init`, which wizer drives asynchronously.
    pub(crate) init_linker: Linker<State>,
    pooling: bool,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("pooling", &self.pooling).finish()
    }
}

fn config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES)
            .total_tables(POOL_INSTANCES * 4)
            .total_stacks(POOL_INSTANCES)
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
        let (engine, pooling) = match Engine::new(&config(true)) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!("pooling allocator unavailable ({e}); allocating instances on demand");
                (Engine::new(&config(false))?, false)
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        super::bindings::Handler::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
        let mut init_config = config(false);
        init_config.cranelift_opt_level(wasmtime::OptLevel::None);
        let init_engine = Engine::new(&init_config)?;
        let mut init_linker = Linker::new(&init_engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut init_linker)?;
        super::bindings::Handler::add_to_linker::<State, HasSelf<State>>(&mut init_linker, |s| s)?;
        let ticker = EpochTicker::start(vec![engine.clone(), init_engine.clone()]);
        Ok(Arc::new(Runtime { engine, linker, init_engine, init_linker, pooling, _ticker: ticker }))
    }

    /// The component-cache key of a snapshot of the handler with digest
    /// `source_wasm` over the artifact set `artifacts` with environment `env`.
    pub fn snapshot_key(&self, source_wasm: &str, artifacts: &str, env: &[(String, String)]) -> String {
        super::ComponentCache::key(&self.engine, source_wasm, artifacts, env)
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooling(&self) -> bool {
        self.pooling
    }
}

/// Epoch deadline, in ticks, for a timeout.
pub(crate) fn ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / TICK.as_millis()).max(1) as u64 + 1
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

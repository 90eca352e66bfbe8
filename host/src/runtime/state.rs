//! What one store (one instance, one request) owns: its WASI context with
//! `/model` mounted read-only, its resource table, the function's graphs and
//! its memory budget (guest and host memory against the tier, and against
//! the host's memory for all requests). Guest stdout and stderr are
//! captured per store, so each line reaches the function's log tagged with
//! its request, and the tail of stderr can explain a trap.

use super::limits::{Budget, HostMemory, MemoryTier};
use crate::nn::Graphs;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Most bytes of stdout and of stderr kept from one request.
const LOG_CAPACITY: usize = 1 << 20;

/// Per-store host state.
pub struct State {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) graphs: Arc<Graphs>,
    pub(crate) budget: Budget,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
}

/// What a store is made from: shared by every instance of a function.
pub(crate) struct StoreSpec<'a> {
    pub artifacts: &'a Path,
    pub env: &'a [(String, String)],
    /// Added for requests only (see `FunctionSpec::request_env`).
    pub request_env: &'a [(String, String)],
    pub graphs: &'a Arc<Graphs>,
    pub memory: MemoryTier,
    pub host_memory: &'a Arc<HostMemory>,
}

impl State {
    pub(crate) fn new(spec: &StoreSpec<'_>) -> wasmtime::Result<Self> {
        let stdout = MemoryOutputPipe::new(LOG_CAPACITY);
        let stderr = MemoryOutputPipe::new(LOG_CAPACITY);
        let wasi = WasiCtxBuilder::new()
            .preopened_dir(spec.artifacts, "/model", FsPerms::ReadOnly)?
            .envs(spec.env)
            .envs(spec.request_env)
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_blocking_current_thread(true)
            .build();
        Ok(State {
            wasi,
            table: ResourceTable::new(),
            graphs: spec.graphs.clone(),
            budget: Budget::new(spec.memory, spec.host_memory.clone()),
            stdout,
            stderr,
        })
    }

    /// What the guest wrote, as lines.
    pub(crate) fn output(&self) -> Output {
        let lines = |bytes: &[u8]| -> Vec<String> {
            String::from_utf8_lossy(bytes).lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
        };
        Output { stdout: lines(&self.stdout.contents()), stderr: lines(&self.stderr.contents()) }
    }
}

/// The lines a guest wrote while serving one request (or running `init`).
#[derive(Debug, Default)]
pub struct Output {
    /// Its stdout.
    pub stdout: Vec<String>,
    /// Its stderr.
    pub stderr: Vec<String>,
}

impl Output {
    /// Sends the lines to the host's own log (where no journal keeps them:
    /// `nimbus run`, a deploy's `init`).
    pub(crate) fn log(&self, function: &str) {
        for line in &self.stdout {
            tracing::info!(target: "guest", function, "{line}");
        }
        for line in &self.stderr {
            tracing::warn!(target: "guest", function, "{line}");
        }
    }

    /// What stderr says about a failure: a Rust panic's message, else its
    /// last line.
    pub(crate) fn explanation(&self) -> Option<String> {
        let panic = self.stderr.iter().position(|l| l.contains(" panicked at "));
        match panic {
            Some(i) => self.stderr.get(i + 1).map(|m| format!("panicked: {m}")),
            None => self.stderr.last().cloned(),
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

//! A deployed function made ready to serve: its graphs loaded, its handler
//! snapshotted and precompiled, and an `InstancePre` that stamps out one
//! fresh instance per request.
//!
//! Contract: loading does all the slow work (ONNX Runtime sessions, `init`,
//! compilation, the first instantiation that sets up the memory image), so
//! that a request pays only for a new store and a pooled instantiation.
//! Loading and requests run on the guests' executor (see `engine`), never
//! on the caller's async workers.

use super::bindings::HandlerPre;
use super::cache::{ComponentCache, digest_dir};
use super::engine::Runtime;
use super::instance::{Instance, Retired};
use super::limits::MemoryTier;
use super::state::StoreSpec;
use super::state::{Output, State};
use super::{InvokeError, LoadError, Request, Response, snapshot};
use crate::nn::{Batching, GraphOptions, Graphs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a function runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    /// Memory tier: caps guest memory and sets the CPU share.
    pub memory: MemoryTier,
    /// Longest a request may run.
    pub timeout: Duration,
    /// Longest `init` may run.
    pub init_timeout: Duration,
    /// Environment variables the handler sees.
    pub env: Vec<(String, String)>,
    /// Variables only requests see (which function and version serves
    /// them), not `init`: the snapshot, keyed by `env`, stays the same
    /// across names and versions of the same handler.
    pub request_env: Vec<(String, String)>,
    /// ONNX Runtime sessions per graph (calls that may run at once).
    pub sessions: usize,
    /// Merge concurrent model runs into batches.
    pub batching: Option<Batching>,
}

impl Default for FunctionSpec {
    fn default() -> Self {
        FunctionSpec {
            memory: MemoryTier::DEFAULT,
            timeout: Duration::from_secs(60),
            init_timeout: super::limits::DEFAULT_INIT_TIMEOUT.duration(),
            env: Vec::new(),
            request_env: Vec::new(),
            sessions: 1,
            batching: None,
        }
    }
}

/// A function ready to serve requests.
pub struct Function {
    pub(crate) name: String,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) pre: HandlerPre<State>,
    pub(crate) graphs: Arc<Graphs>,
    pub(crate) spec: FunctionSpec,
    pub(crate) artifacts: PathBuf,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function").field("name", &self.name).field("spec", &self.spec).finish()
    }
}

impl Function {
    /// Loads a handler with its artifact folder: graphs, snapshot (or the
    /// cached precompiled one, found by the source's digests without reading
    /// the handler), instance template, first instantiation.
    pub async fn load(
        runtime: &Arc<Runtime>,
        name: &str,
        source: &Source,
        spec: FunctionSpec,
        cache: &ComponentCache,
    ) -> Result<Self, LoadError> {
        Self::load_with(runtime, name, source, spec, cache, false).await
    }

    /// Loads as [`Function::load`] does; with `measure`, also measures the
    /// memory each graph's session holds ([`Function::session_bytes`]), as
    /// deploys do to check it against the tier.
    pub async fn load_with(
        runtime: &Arc<Runtime>,
        name: &str,
        source: &Source,
        spec: FunctionSpec,
        cache: &ComponentCache,
        measure: bool,
    ) -> Result<Self, LoadError> {
        let load = Self::load_here(runtime.clone(), name.to_owned(), source.clone(), spec, cache.clone(), measure);
        runtime.run(load).await.map_err(|e| LoadError::Internal(format!("load task: {e}")))?
    }

    async fn load_here(
        runtime: Arc<Runtime>,
        name: String,
        source: Source,
        spec: FunctionSpec,
        cache: ComponentCache,
        measure: bool,
    ) -> Result<Self, LoadError> {
        let dir = source.artifacts.clone();
        let options = GraphOptions {
            threads: spec.memory.threads(),
            sessions: spec.sessions,
            optimized_dir: Some(cache.optimized_dir(&source.artifacts_digest)),
            measure,
            batching: spec.batching.clone(),
        };
        let graphs = tokio::task::spawn_blocking(move || Graphs::load_dir(&dir, &options))
            .await
            .map_err(|e| LoadError::Internal(e.to_string()))??;
        let graphs = Arc::new(graphs);
        let key = runtime.snapshot_key(&source.wasm_digest, &source.artifacts_digest, &spec.env);
        let component = match cache.load(&runtime.engine, &key) {
            Some(component) => component,
            None => {
                let wasm = std::fs::read(&source.wasm)
                    .map_err(|e| LoadError::Artifacts(format!("{}: {e}", source.wasm.display())))?;
                let store_spec = StoreSpec {
                    artifacts: &source.artifacts,
                    env: &spec.env,
                    request_env: &[],
                    graphs: &graphs,
                    memory: spec.memory,
                    host_memory: &runtime.host_memory,
                };
                let snapshot = snapshot::snapshot(&runtime, &name, &wasm, &store_spec, spec.init_timeout).await?;
                cache.store(&runtime.engine, &key, &snapshot)?
            }
        };
        let pre = runtime.linker.instantiate_pre(&component).map_err(|e| LoadError::NotAHandler(format!("{e:#}")))?;
        let pre = HandlerPre::new(pre).map_err(|e| LoadError::NotAHandler(format!("{e:#}")))?;
        let function =
            Arc::new(Function { name, runtime: runtime.clone(), pre, graphs, spec, artifacts: source.artifacts });
        drop(function.instance().await.map_err(|e| match e {
            InvokeError::AtCapacity => LoadError::AtCapacity,
            InvokeError::MemoryExceeded(m) => LoadError::Init(format!("the handler after `init` does not fit: {m}")),
            e => LoadError::Internal(e.to_string()),
        })?);
        Ok(Arc::into_inner(function).expect("no other reference yet"))
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The function's spec.
    pub fn spec(&self) -> &FunctionSpec {
        &self.spec
    }

    /// A fresh instance from the snapshot, ready for one request.
    pub async fn instance(self: &Arc<Self>) -> Result<Instance, InvokeError> {
        Instance::new(self.clone()).await
    }

    /// ONNX Runtime sessions this function holds.
    pub fn sessions(&self) -> usize {
        self.graphs.len() * self.spec.sessions
    }

    /// Memory one session of each graph holds together: measured if loaded
    /// with `measure`, else the model files' sizes.
    pub fn session_bytes(&self) -> u64 {
        self.graphs.model_bytes()
    }

    /// Serves one request in a fresh instance on the guests' executor, with
    /// its timings: the one way into a function for callers without a pool.
    pub async fn call(self: &Arc<Self>, request: Request) -> Result<Invoked, InvokeError> {
        let start = Start::Cold(self.clone());
        let self_name = self.name.clone();
        self.runtime
            .run(async move {
                let (result, output, _) = serve(start, &request).await;
                output.log(&self_name);
                result
            })
            .await
            .map_err(|e| InvokeError::Internal(format!("request task: {e}")))?
    }
}

/// What a request starts from.
pub enum Start {
    /// An instance made ahead of time.
    Warm(Instance),
    /// A loaded function to make an instance of (a cold start).
    Cold(Arc<Function>),
}

/// Serves `request` from `start`, timing both steps. Also returns what the
/// guest wrote and what is left of the instance, to be dropped off the
/// request's path. Call it on the guests' executor ([`Runtime::run`]).
pub async fn serve(start: Start, request: &Request) -> (Result<Invoked, InvokeError>, Output, Option<Retired>) {
    let begin = Instant::now();
    let instance = match start {
        Start::Warm(instance) => instance,
        Start::Cold(function) => match function.instance().await {
            Ok(instance) => instance,
            Err(e) => return (Err(e), Output::default(), None),
        },
    };
    let instantiate = begin.elapsed();
    let (response, output, retired) = instance.handle(request).await;
    let handle = begin.elapsed() - instantiate;
    (response.map(|response| Invoked { response, instantiate, handle }), output, Some(retired))
}

/// Where a function's code and artifacts come from, named by content so
/// a cached snapshot is found without reading or hashing the bytes.
#[derive(Debug, Clone)]
pub struct Source {
    /// The handler component.
    pub wasm: PathBuf,
    /// sha256 of the handler, hex.
    pub wasm_digest: String,
    /// The artifact folder (mounted at `/model`).
    pub artifacts: PathBuf,
    /// A digest of the artifact folder's names and contents.
    pub artifacts_digest: String,
}

impl Source {
    /// Hashes the handler and the artifact folder.
    pub fn hash(wasm: &Path, artifacts: &Path) -> Result<Self, LoadError> {
        let bytes = std::fs::read(wasm).map_err(|e| LoadError::Artifacts(format!("{}: {e}", wasm.display())))?;
        let artifacts_digest =
            digest_dir(artifacts).map_err(|e| LoadError::Artifacts(format!("{}: {e}", artifacts.display())))?;
        Ok(Source {
            wasm: wasm.to_path_buf(),
            wasm_digest: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
            artifacts: artifacts.to_path_buf(),
            artifacts_digest,
        })
    }
}

/// A served request and where its time went.
#[derive(Debug)]
pub struct Invoked {
    /// The handler's response.
    pub response: Response,
    /// Making the instance (store + pooled instantiation).
    pub instantiate: Duration,
    /// Running the handler, models included.
    pub handle: Duration,
}

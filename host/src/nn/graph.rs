//! Loaded graphs and the per-function set of them.
//!
//! `ort`'s `Session::run` takes `&mut self`, so one session serves one call
//! at a time. A graph keeps a small pool of sessions (sized by the caller
//! from the function's concurrency) and hands each call the first free one;
//! a call that finds none waits (asynchronously, holding no thread) until
//! one frees up. Only the first session is built before the graph is ready;
//! the others are built right after on a background thread, so a cold start
//! waits for one session, not all.
//!
//! A run holds a blocking thread only while it holds a session, so the
//! threads a function can occupy are bounded by its sessions. A run whose
//! caller goes away (its request timed out) is told to terminate: ONNX
//! Runtime checks the flag between kernels, so even a `Loop` of 2^50
//! iterations stops and gives its session and core back.

use super::batch::{Batcher, Batching};
use super::inline::{self, Estimate};
use super::tensor::OutputError;
use super::{ElementType, NnError, Tensor, alloc};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session, SessionInputValue};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How ONNX Runtime sessions are built for a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphOptions {
    /// Intra-op threads per session (the CPU share of the memory tier; a
    /// light graph, see `ModelInfo::light`, runs on one).
    pub threads: usize,
    /// Sessions per graph: how many calls may run on one graph at once.
    pub sessions: usize,
    /// Where optimized graphs are kept between loads (one folder per
    /// artifact set, on this host only: optimizations may be CPU-specific).
    pub optimized_dir: Option<std::path::PathBuf>,
    /// Measure the memory a session holds (at deploy, where the tier is
    /// checked; a cold start does not pay for it).
    pub measure: bool,
    /// Merge concurrent runs into batches (see `batch`).
    pub batching: Option<Batching>,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions { threads: 1, sessions: 1, optimized_dir: None, measure: false, batching: None }
    }
}

/// One input of a graph: its name, the element type that carries it and
/// its shape (`None` for a dynamic dimension).
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    ty: Option<ElementType>,
    /// A `bool` input, carried as `u8`.
    boolean: bool,
    shape: Vec<Option<u32>>,
}

impl Slot {
    fn describe(&self) -> String {
        let dims: Vec<String> =
            self.shape.iter().map(|d| d.map_or_else(|| "?".to_owned(), |d| d.to_string())).collect();
        let ty = self.ty.map_or_else(|| "unsupported type".to_owned(), |t| format!("{t:?}"));
        format!("`{}` {ty} [{}]", self.name, dims.join(", "))
    }

    fn accepts(&self, t: &Tensor) -> bool {
        self.ty == Some(t.ty)
            && self.shape.len() == t.dims.len()
            && self.shape.iter().zip(&t.dims).all(|(want, got)| want.is_none_or(|w| w == *got))
    }
}

/// A model loaded in ONNX Runtime, shared by every instance of a function.
pub struct Graph {
    name: String,
    /// Memory one session holds: the process's resident growth while the
    /// first was built (when measured), and at least the file's size.
    bytes: u64,
    inputs: Vec<Slot>,
    /// The first is always built; the others fill in in the background.
    sessions: Arc<[OnceLock<Mutex<Session>>]>,
    /// One permit per built session that no run holds.
    pub(super) free: Arc<Semaphore>,
    batcher: Option<Batcher>,
    /// How long runs take: short ones run inline (see `inline`).
    estimate: Estimate,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph").field("name", &self.name).field("sessions", &self.sessions.len()).finish()
    }
}

fn slot(name: &str, ty: &ort::value::ValueType) -> Slot {
    match ty {
        ort::value::ValueType::Tensor { ty, shape, .. } => Slot {
            name: name.to_owned(),
            ty: ElementType::carrying(*ty),
            boolean: *ty == ort::tensor::TensorElementType::Bool,
            shape: shape.iter().map(|&d| u32::try_from(d).ok()).collect(),
        },
        _ => Slot { name: name.to_owned(), ty: None, boolean: false, shape: Vec::new() },
    }
}

impl Graph {
    /// Loads `path` (inside the artifact folder `root`) as the graph
    /// `name`. ONNX files are untrusted input: the host checks every file
    /// ONNX Runtime opens: the artifact before it is opened, and the
    /// optimized graph ONNX Runtime writes from it before it is kept (a
    /// later load opens only that kept file, checked when written).
    pub fn load(name: &str, path: &Path, root: &Path, options: &GraphOptions) -> Result<Self, NnError> {
        super::init()?;
        let load_error = |e: ort::Error| NnError::Load { name: name.to_owned(), message: e.to_string() };
        // Graph optimization is most of a session's set-up time (for a
        // transformer, ~250 of ~290 ms here), so it is done once and its
        // result kept: later loads, e.g. after scale-to-zero, read the
        // optimized graph with optimization off. What the check of the
        // artifact found light is marked beside it (the optimized graph
        // holds fused operators, not what the user's graph computes).
        let optimized = options.optimized_dir.as_ref().map(|d| d.join(format!("{name}.onnx")));
        let light_mark = optimized.as_ref().map(|o| o.with_extension("light"));
        let kept = optimized.as_deref().filter(|o| o.is_file());
        let light = match kept {
            Some(_) => light_mark.as_deref().is_some_and(Path::is_file),
            None => check(name, path, root)?.light,
        };
        let threads = intra_threads(light, options.threads);
        let resident_before = options.measure.then(|| {
            super::release_freed_memory();
            resident_bytes()
        });
        let mut first = None;
        let (source, optimize) = match (kept, &optimized) {
            (Some(o), _) => (o, false),
            (None, Some(o)) => {
                let tmp = o.with_extension(format!("tmp{}", std::process::id()));
                let saved = o.parent().map(std::fs::create_dir_all).transpose().is_ok()
                    && build(threads, true, path, Some(&tmp)).map(|s| first = Some(s)).is_ok()
                    && checked(name, &tmp).is_ok()
                    && (!light || light_mark.as_deref().is_some_and(|m| std::fs::write(m, b"").is_ok()))
                    && std::fs::rename(&tmp, o).is_ok();
                if saved { (o.as_path(), false) } else { (path, true) }
            }
            (None, None) => (path, true),
        };
        let first = match first {
            Some(session) => session,
            None => build(threads, optimize, source, None).map_err(load_error)?,
        };
        let inputs = first.inputs.iter().map(|i| slot(&i.name, &i.input_type)).collect();
        let sessions: Arc<[OnceLock<Mutex<Session>>]> = (0..options.sessions.max(1)).map(|_| OnceLock::new()).collect();
        let _ = sessions[0].set(Mutex::new(first));
        let free = Arc::new(Semaphore::new(1));
        if sessions.len() > 1 {
            build_rest(name, sessions.clone(), free.clone(), threads, optimize, source.to_path_buf());
        }
        // Measured, not taken from the file: a 4.7 MB graph of 200k nodes
        // holds ~640 MB per session. Other threads' allocations meanwhile
        // add noise; freed temporaries are handed back first so they do
        // not count.
        let grown = resident_before.map_or(0, |before| {
            super::release_freed_memory();
            resident_bytes().saturating_sub(before)
        });
        let bytes = grown.max(std::fs::metadata(path).map_or(0, |m| m.len()));
        let batcher = options.batching.clone().map(Batcher::new);
        Ok(Graph { name: name.to_owned(), bytes, inputs, sessions, free, batcher, estimate: Estimate::default() })
    }

    /// The graph's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the graph: every declared input must be given once, with its
    /// element type and a shape that matches; returns all outputs by name.
    /// ONNX Runtime's allocations for the run (intermediates and outputs)
    /// and the copied outputs may each take at most `limit` bytes, else
    /// [`NnError::OutOfMemory`] (outputs are measured before they are
    /// copied). With batching, the run may be merged with concurrent ones.
    /// Dropping the future terminates the run (a batch: once all its
    /// callers have gone).
    pub async fn run(
        self: Arc<Self>,
        inputs: Vec<(String, Tensor)>,
        limit: u64,
    ) -> Result<Vec<(String, Tensor)>, NnError> {
        self.check(&inputs)?;
        match &self.batcher {
            Some(batcher) => batcher.run(&self, inputs, limit).await,
            None => self.run_alone(inputs, limit).await,
        }
    }

    /// Runs checked `inputs` on the first free session: inline when the
    /// graph's runs are short, else on a blocking thread.
    pub(super) async fn run_alone(
        self: Arc<Self>,
        inputs: Vec<(String, Tensor)>,
        limit: u64,
    ) -> Result<Vec<(String, Tensor)>, NnError> {
        let permit = self.free.clone().acquire_owned().await.map_err(|e| self.run_error(e.to_string()))?;
        if self.estimate.short()
            && let Some(result) = self.run_inline(&inputs, limit)
        {
            return result;
        }
        self.execute(inputs, limit, permit).await
    }

    /// Runs on this thread under the watchdog; `None` if the watchdog
    /// ended the run for taking longer than an inline run may.
    fn run_inline(&self, inputs: &[(String, Tensor)], limit: u64) -> Option<Result<Vec<(String, Tensor)>, NnError>> {
        let options = match RunOptions::new() {
            Ok(options) => Arc::new(options),
            Err(e) => return Some(Err(self.run_error(e.to_string()))),
        };
        let started = std::time::Instant::now();
        let watched = inline::Watched::start(options.clone());
        let result = self.run_blocking(inputs, &options, limit);
        drop(watched);
        let took = started.elapsed();
        self.estimate.record(took);
        if result.is_err() && took >= inline::BUDGET {
            tracing::debug!(graph = %self.name, ?took, "an inline run took too long; running it off the executor");
            return None;
        }
        Some(result)
    }

    /// Runs checked `inputs` on the session `permit` frees, on a blocking
    /// thread; dropping the future terminates the run.
    pub(super) async fn execute(
        self: Arc<Self>,
        inputs: Vec<(String, Tensor)>,
        limit: u64,
        permit: OwnedSemaphorePermit,
    ) -> Result<Vec<(String, Tensor)>, NnError> {
        let options = Arc::new(RunOptions::new().map_err(|e| self.run_error(e.to_string()))?);
        let watchdog = Terminate(Some(options.clone()));
        let graph = self.clone();
        let run = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let result = graph.run_blocking(&inputs, &options, limit);
            graph.estimate.record(started.elapsed());
            drop(permit);
            result
        });
        let result = run.await.map_err(|e| self.run_error(format!("run task: {e}")));
        watchdog.disarm();
        result?
    }

    fn run_blocking(
        &self,
        inputs: &[(String, Tensor)],
        options: &RunOptions,
        limit: u64,
    ) -> Result<Vec<(String, Tensor)>, NnError> {
        let boolean = |name: &str| self.inputs.iter().any(|s| s.boolean && s.name == name);
        let values = inputs
            .iter()
            .map(|(name, t)| {
                t.to_ort(boolean(name)).map(|v| (Cow::Borrowed(name.as_str()), SessionInputValue::from(v.into_dyn())))
            })
            .collect::<ort::Result<Vec<_>>>()
            .map_err(|e| self.run_error(e.to_string()))?;
        let out_of_memory = || NnError::OutOfMemory { graph: self.name.clone(), limit };
        let mut session = self.session();
        let scope = alloc::Scope::enter(usize::try_from(limit).unwrap_or(usize::MAX));
        let outputs = session
            .run_with_options(values, options)
            .map_err(|e| if scope.exceeded() { out_of_memory() } else { self.run_error(e.to_string()) })?;
        drop(scope);
        let mut left = limit;
        outputs
            .iter()
            .map(|(name, value)| match Tensor::from_ort(&value, &mut left) {
                Ok(t) => Ok((name.to_owned(), t)),
                Err(OutputError::Unsupported(m)) => Err(self.run_error(format!("output `{name}`: {m}"))),
                Err(OutputError::TooLarge) => Err(out_of_memory()),
            })
            .collect()
    }

    /// The first free session, so that under light load one session (its
    /// weights hot in cache, its threads awake) serves every call; the
    /// others serve only calls that overlap. The caller holds a permit of
    /// `free`, so one is free.
    fn session(&self) -> MutexGuard<'_, Session> {
        let built = || self.sessions.iter().filter_map(OnceLock::get);
        built().find_map(|s| s.try_lock().ok()).unwrap_or_else(|| {
            built().next().expect("the first session is always built").lock().unwrap_or_else(|p| p.into_inner())
        })
    }

    pub(super) fn run_error(&self, message: String) -> NnError {
        NnError::Run { graph: self.name.clone(), message }
    }

    fn invalid(&self, message: String) -> NnError {
        NnError::InvalidInput { graph: self.name.clone(), message }
    }

    fn check(&self, inputs: &[(String, Tensor)]) -> Result<(), NnError> {
        for (name, tensor) in inputs {
            let Some(slot) = self.inputs.iter().find(|s| &s.name == name) else {
                let names: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
                return Err(self.invalid(format!("no input `{name}`; inputs are {}", names.join(", "))));
            };
            let Some(expected) = tensor.expected_bytes() else {
                return Err(self.invalid(format!("input `{name}`: shape {:?} is too large", tensor.dims)));
            };
            if tensor.data.len() as u64 != expected {
                return Err(self.invalid(format!(
                    "input `{name}`: {:?} {:?} needs {expected} bytes, got {}",
                    tensor.ty,
                    tensor.dims,
                    tensor.data.len()
                )));
            }
            if !slot.accepts(tensor) {
                return Err(self.invalid(format!(
                    "input {} does not accept {:?} {:?}",
                    slot.describe(),
                    tensor.ty,
                    tensor.dims
                )));
            }
        }
        if let Some(missing) = self.inputs.iter().find(|s| !inputs.iter().any(|(n, _)| n == &s.name)) {
            return Err(self.invalid(format!("missing input {}", missing.describe())));
        }
        Ok(())
    }
}

/// Checks `file` (inside `root`) and that its nodes are within [`MAX_NODES`].
fn check(name: &str, file: &Path, root: &Path) -> Result<super::ModelInfo, NnError> {
    let info = super::check_model(file, root)?;
    if info.nodes > MAX_NODES {
        return Err(NnError::Load {
            name: name.to_owned(),
            message: format!("{} nodes (subgraphs included); a graph may have at most {MAX_NODES}", info.nodes),
        });
    }
    Ok(info)
}

/// Checks an optimized graph ONNX Runtime just wrote; one that fails is
/// removed, not kept (the artifact is loaded instead).
fn checked(name: &str, optimized: &Path) -> Result<(), NnError> {
    let root = optimized.parent().unwrap_or(Path::new("."));
    check(name, optimized, root).map(drop).inspect_err(|e| {
        tracing::warn!(graph = name, "not keeping the optimized graph: {e}");
        let _ = std::fs::remove_file(optimized);
    })
}

/// Intra-op threads for a graph's sessions: the tier's `threads`, or one
/// for a light graph (see `ModelInfo::light`). Measured on digits (a random
/// forest), one thread against two: +7% requests/s at one client, +10-35%
/// at sixteen.
pub fn intra_threads(light: bool, threads: usize) -> usize {
    if light { 1 } else { threads.max(1) }
}

/// One session of `file` with `threads` intra-op threads; with `save_to`,
/// ONNX Runtime writes the optimized graph there.
fn build(threads: usize, optimize: bool, file: &Path, save_to: Option<&Path>) -> ort::Result<Session> {
    let level = if optimize { GraphOptimizationLevel::Level3 } else { GraphOptimizationLevel::Disable };
    // ONNX Runtime's workers spin after each parallel section by default.
    // With many sessions on few cores (every function's, and several per
    // graph), spinning workers steal the cores the busy sessions need:
    // measured, vision's throughput at 4 to 16 clients went from ~60 to ~95
    // requests/s with spinning off.
    // Sessions allocate through `alloc`, so a run's memory can be limited.
    let mut b = Session::builder()?
        .with_optimization_level(level)?
        .with_intra_threads(threads)?
        .with_intra_op_spinning(false)?
        .with_env_allocators()?;
    if let Some(save_to) = save_to {
        b = b.with_optimized_model_path(save_to)?;
    }
    b.commit_from_file(file)
}

/// This process's resident memory, from `/proc/self/statm`.
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page
}

/// Terminates a run when dropped armed: its caller went away.
struct Terminate(Option<Arc<RunOptions>>);

impl Terminate {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Terminate {
    fn drop(&mut self) {
        if let Some(options) = self.0.take() {
            tracing::debug!("terminating an abandoned model run");
            let _ = options.terminate();
        }
    }
}

/// Fills the empty session slots on a background thread, adding a permit
/// for each; stops early if the graph is dropped meanwhile (scaled to zero).
fn build_rest(
    name: &str,
    slots: Arc<[OnceLock<Mutex<Session>>]>,
    free: Arc<Semaphore>,
    threads: usize,
    optimize: bool,
    file: PathBuf,
) {
    let name = name.to_owned();
    let spawned = std::thread::Builder::new().name("nimbus-sessions".into()).spawn(move || {
        for slot in slots.iter().skip(1) {
            if Arc::strong_count(&slots) == 1 {
                return;
            }
            match build(threads, optimize, &file, None) {
                Ok(session) => {
                    if slot.set(Mutex::new(session)).is_ok() {
                        free.add_permits(1);
                    }
                }
                Err(e) => return tracing::warn!(graph = %name, "could not build another session: {e}"),
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("could not start building sessions: {e}");
    }
}

/// Most graphs one function may load.
pub const MAX_GRAPHS: usize = 16;

/// Most nodes one graph may have. Real models have thousands (a BERT-base
/// export ~1,500); each node is kernel state in every session, so a graph
/// of hundreds of thousands takes hundreds of MB per session from a file of
/// a few MB.
pub const MAX_NODES: usize = 100_000;

/// The graphs of one function, by name.
#[derive(Debug, Default)]
pub struct Graphs(HashMap<String, Arc<Graph>>);

impl Graphs {
    /// Loads every `*.onnx` directly inside `dir`, named by file stem; at
    /// most [`MAX_GRAPHS`] of them (each is sessions and threads).
    pub fn load_dir(dir: &Path, options: &GraphOptions) -> Result<Self, NnError> {
        let entries = std::fs::read_dir(dir).map_err(|e| NnError::Load {
            name: "/model".into(),
            message: format!("cannot read the artifact folder: {e}"),
        })?;
        let files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "onnx") && p.is_file())
            .collect();
        if files.len() > MAX_GRAPHS {
            return Err(NnError::Load {
                name: "/model".into(),
                message: format!("{} graphs (.onnx files); a function may have at most {MAX_GRAPHS}", files.len()),
            });
        }
        let mut graphs = HashMap::new();
        for path in files {
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let graph = Graph::load(&name, &path, dir, options)?;
            graphs.insert(name, Arc::new(graph));
        }
        Ok(Graphs(graphs))
    }

    /// The graph called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Graph>> {
        self.0.get(name)
    }

    /// How many graphs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Memory one session of each graph holds: measured when loaded with
    /// [`GraphOptions::measure`], else the files' sizes.
    pub fn model_bytes(&self) -> u64 {
        self.0.values().map(|g| g.bytes).sum()
    }

    /// Graph names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.0.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> Arc<Graph> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/digits/model/digits.onnx");
        assert!(path.is_file(), "{} is missing: run `make build`", path.display());
        Arc::new(Graph::load("digits", &path, path.parent().unwrap(), &GraphOptions::default()).unwrap())
    }

    fn input(dims: &[u32], ty: ElementType, bytes: usize) -> Vec<(String, Tensor)> {
        vec![("input".to_owned(), Tensor { dims: dims.to_vec(), ty, data: vec![0; bytes] })]
    }

    fn run(graph: &Arc<Graph>, inputs: Vec<(String, Tensor)>, limit: u64) -> Result<Vec<(String, Tensor)>, NnError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(graph.clone().run(inputs, limit))
    }

    #[test]
    fn inputs_are_checked_against_the_signature() {
        let g = digits();
        let outputs = run(&g, input(&[2, 64], ElementType::F32, 2 * 64 * 4), 1 << 20).unwrap();
        let label = outputs.iter().find(|(n, _)| n == "label").expect("a label output");
        assert_eq!((label.1.ty, label.1.dims.as_slice()), (ElementType::I64, &[2][..]));

        let refused = |inputs: Vec<(String, Tensor)>, says: &str| match run(&g, inputs, 1 << 20) {
            Err(e @ NnError::InvalidInput { .. }) => assert!(e.to_string().contains(says), "{e}"),
            other => panic!("expected InvalidInput ({says}), got {other:?}"),
        };
        refused(input(&[1, 63], ElementType::F32, 63 * 4), "does not accept");
        refused(input(&[1, 64], ElementType::I64, 64 * 8), "does not accept");
        refused(input(&[1, 64], ElementType::F32, 7), "needs 256 bytes, got 7");
        refused(input(&[u32::MAX, u32::MAX, u32::MAX], ElementType::F32, 0), "too large");
        refused(vec![], "missing input");
        let mut extra = input(&[1, 64], ElementType::F32, 256);
        extra[0].0 = "other".into();
        refused(extra, "no input `other`");
    }

    #[test]
    fn the_watchdog_ends_an_inline_run_that_takes_too_long() {
        let g = digits();
        let options = Arc::new(RunOptions::new().unwrap());
        let watched = inline::Watched::start(options.clone());
        std::thread::sleep(inline::BUDGET * 3);
        let ended = g.run_blocking(&input(&[1, 64], ElementType::F32, 256), &options, 1 << 20);
        drop(watched);
        assert!(matches!(ended, Err(NnError::Run { .. })), "{ended:?}");
        let again = Arc::new(RunOptions::new().unwrap());
        assert!(g.run_blocking(&input(&[1, 64], ElementType::F32, 256), &again, 1 << 20).is_ok());
    }

    #[test]
    fn outputs_over_the_limit_are_refused() {
        let g = digits();
        let e = run(&g, input(&[1000, 64], ElementType::F32, 1000 * 64 * 4), 100).unwrap_err();
        assert!(matches!(e, NnError::OutOfMemory { limit: 100, .. }), "{e}");
        assert!(run(&g, input(&[1, 64], ElementType::F32, 256), 1 << 20).is_ok(), "the graph still serves");
    }
}

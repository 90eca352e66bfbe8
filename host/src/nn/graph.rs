//! Loaded graphs and the per-function set of them.
//!
//! `ort`'s `Session::run` takes `&mut self`, so one session serves one call
//! at a time. A graph keeps a small pool of sessions (sized by the caller
//! from the function's concurrency) and hands each call the first free one;
//! a call that finds none waits on the next in turn. Only the first session
//! is built before the graph is ready; the others are built right after on
//! a background thread, so a cold start waits for one session, not all.

use super::{ElementType, NnError, Tensor};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// How ONNX Runtime sessions are built for a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphOptions {
    /// Intra-op threads per session (the CPU share of the memory tier).
    pub threads: usize,
    /// Sessions per graph: how many calls may run on one graph at once.
    pub sessions: usize,
    /// Where optimized graphs are kept between loads (one folder per
    /// artifact set, on this host only: optimizations may be CPU-specific).
    pub optimized_dir: Option<std::path::PathBuf>,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions { threads: 1, sessions: 1, optimized_dir: None }
    }
}

/// One input or output of a graph: its name, element type and shape
/// (`None` for a dynamic dimension).
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    ty: Option<ElementType>,
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
    bytes: u64,
    inputs: Vec<Slot>,
    /// The first is always built; the others fill in in the background.
    sessions: Arc<[OnceLock<Mutex<Session>>]>,
    next: AtomicUsize,
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
            ty: ElementType::from_ort(*ty),
            shape: shape.iter().map(|&d| u32::try_from(d).ok()).collect(),
        },
        _ => Slot { name: name.to_owned(), ty: None, shape: Vec::new() },
    }
}

impl Graph {
    /// Loads `path` as the graph `name`.
    pub fn load(name: &str, path: &Path, options: &GraphOptions) -> Result<Self, NnError> {
        super::init()?;
        let load_error = |e: ort::Error| NnError::Load { name: name.to_owned(), message: e.to_string() };
        let threads = options.threads.max(1);
        // Graph optimization is most of a session's set-up time (for a
        // transformer, ~250 of ~290 ms here), so it is done once and its
        // result kept: later loads, e.g. after scale-to-zero, read the
        // optimized graph with optimization off.
        let optimized = options.optimized_dir.as_ref().map(|d| d.join(format!("{name}.onnx")));
        let mut first = None;
        let (source, optimize) = match &optimized {
            Some(o) if o.is_file() => (o.as_path(), false),
            Some(o) => {
                let tmp = o.with_extension(format!("tmp{}", std::process::id()));
                let saved = o.parent().map(std::fs::create_dir_all).transpose().is_ok()
                    && build(threads, true, path, Some(&tmp)).map(|s| first = Some(s)).is_ok()
                    && std::fs::rename(&tmp, o).is_ok();
                if saved { (o.as_path(), false) } else { (path, true) }
            }
            None => (path, true),
        };
        let first = match first {
            Some(session) => session,
            None => build(threads, optimize, source, None).map_err(load_error)?,
        };
        let inputs = first.inputs.iter().map(|i| slot(&i.name, &i.input_type)).collect();
        let sessions: Arc<[OnceLock<Mutex<Session>>]> = (0..options.sessions.max(1)).map(|_| OnceLock::new()).collect();
        let _ = sessions[0].set(Mutex::new(first));
        if sessions.len() > 1 {
            build_rest(name, sessions.clone(), threads, optimize, source.to_path_buf());
        }
        let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
        Ok(Graph { name: name.to_owned(), bytes, inputs, sessions, next: AtomicUsize::new(0) })
    }

    /// The graph's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the graph: every declared input must be given once, with its
    /// element type and a shape that matches; returns all outputs by name.
    pub fn run(&self, inputs: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>, NnError> {
        self.check(&inputs)?;
        let values = inputs
            .iter()
            .map(|(name, t)| t.to_ort().map(|v| (Cow::Borrowed(name.as_str()), SessionInputValue::from(v.into_dyn()))))
            .collect::<ort::Result<Vec<_>>>()
            .map_err(|e| self.run_error(e.to_string()))?;
        let mut session = self.session();
        let outputs = session.run(values).map_err(|e| self.run_error(e.to_string()))?;
        outputs
            .iter()
            .map(|(name, value)| Tensor::from_ort(&value).map(|t| (name.to_owned(), t)))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|m| self.run_error(m))
    }

    /// The first free session, so that under light load one session (its
    /// weights hot in cache, its threads awake) serves every call; the
    /// others serve only calls that overlap.
    fn session(&self) -> MutexGuard<'_, Session> {
        let built = || self.sessions.iter().filter_map(OnceLock::get);
        built().find_map(|s| s.try_lock().ok()).unwrap_or_else(|| {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % built().count();
            built().nth(n).expect("the first session is always built").lock().unwrap_or_else(|p| p.into_inner())
        })
    }

    fn run_error(&self, message: String) -> NnError {
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
            if tensor.data.len() as u64 != tensor.expected_bytes() {
                return Err(self.invalid(format!(
                    "input `{name}`: {:?} {:?} needs {} bytes, got {}",
                    tensor.ty,
                    tensor.dims,
                    tensor.expected_bytes(),
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

/// One session of `file` with `threads` intra-op threads; with `save_to`,
/// ONNX Runtime writes the optimized graph there.
fn build(threads: usize, optimize: bool, file: &Path, save_to: Option<&Path>) -> ort::Result<Session> {
    let level = if optimize { GraphOptimizationLevel::Level3 } else { GraphOptimizationLevel::Disable };
    // ONNX Runtime's workers spin after each parallel section by default.
    // With many sessions on few cores (every function's, and several per
    // graph), spinning workers steal the cores the busy sessions need:
    // measured, vision's throughput at 4 to 16 clients went from ~60 to ~95
    // requests/s with spinning off.
    let mut b = Session::builder()?
        .with_optimization_level(level)?
        .with_intra_threads(threads)?
        .with_intra_op_spinning(false)?;
    if let Some(save_to) = save_to {
        b = b.with_optimized_model_path(save_to)?;
    }
    b.commit_from_file(file)
}

/// Fills the empty session slots on a background thread; stops early if
/// the graph is dropped meanwhile (scaled to zero).
fn build_rest(name: &str, slots: Arc<[OnceLock<Mutex<Session>>]>, threads: usize, optimize: bool, file: PathBuf) {
    let name = name.to_owned();
    let spawned = std::thread::Builder::new().name("nimbus-sessions".into()).spawn(move || {
        for slot in slots.iter().skip(1) {
            if Arc::strong_count(&slots) == 1 {
                return;
            }
            match build(threads, optimize, &file, None) {
                Ok(session) => drop(slot.set(Mutex::new(session))),
                Err(e) => return tracing::warn!(graph = %name, "could not build another session: {e}"),
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("could not start building sessions: {e}");
    }
}

/// The graphs of one function, by name.
#[derive(Debug, Default)]
pub struct Graphs(HashMap<String, Arc<Graph>>);

impl Graphs {
    /// Loads every `*.onnx` directly inside `dir`, named by file stem.
    pub fn load_dir(dir: &Path, options: &GraphOptions) -> Result<Self, NnError> {
        let entries = std::fs::read_dir(dir).map_err(|e| NnError::Load {
            name: dir.display().to_string(),
            message: format!("cannot read artifact folder: {e}"),
        })?;
        let mut graphs = HashMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "onnx") && path.is_file() {
                let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let graph = Graph::load(&name, &path, options)?;
                graphs.insert(name, Arc::new(graph));
            }
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

    /// Total size of the model files (one session's worth).
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

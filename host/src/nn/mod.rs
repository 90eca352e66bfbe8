//! ONNX Runtime behind a small, typed surface: the only module that names
//! `ort`.
//!
//! Contract: [`Graphs::load_dir`] loads every `*.onnx` in a function's
//! artifact folder once, as a graph named by the file stem; [`Graph::run`]
//! checks inputs against the graph's signature (names, element types,
//! shapes) before ONNX Runtime sees them, so a wrong input is an
//! [`NnError::InvalidInput`] naming what was expected, never a panic. Graphs
//! are shared (`Arc`) by every instance of a function and are safe to run
//! from several threads at once.

mod alloc;
mod batch;
mod check;
mod graph;
mod inline;
mod library;
mod tensor;
mod zipmap;

pub use batch::{BatchObserver, Batching, Observer};
pub use check::{CheckError, Classes, ExternalProblem, ModelInfo, Port, Signature, check_model};
pub use graph::{Graph, GraphOptions, Graphs, MAX_GRAPHS, MAX_NODES, intra_threads};
pub use library::{init, library_path};
pub use tensor::{ElementType, Tensor};

/// Hands freed heap back to the OS. glibc keeps freed memory in its arenas
/// (ONNX Runtime sessions are hundreds of MB), so without this a host that
/// once loaded many functions stays that large, and resident-memory
/// measurements see garbage.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own
    // arenas to the OS; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Why a graph could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error("ONNX Runtime library: {0}")]
    Library(String),
    /// A model file could not be read or ONNX Runtime refused it.
    #[error("model `{name}`: {message}")]
    Load {
        /// The graph name (file stem).
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The host refused a model file before ONNX Runtime saw it.
    #[error(transparent)]
    Refused(#[from] CheckError),
    /// The inputs do not match the graph's signature.
    #[error("graph `{graph}`: {message}")]
    InvalidInput {
        /// The graph name.
        graph: String,
        /// What was expected and what arrived.
        message: String,
    },
    /// The run needed more memory than its caller has left in its tier.
    #[error("graph `{graph}` needs more than the {limit} bytes left in the memory tier")]
    OutOfMemory {
        /// The graph name.
        graph: String,
        /// What was left.
        limit: u64,
    },
    /// ONNX Runtime failed while running the graph.
    #[error("graph `{graph}` failed: {message}")]
    Run {
        /// The graph name.
        graph: String,
        /// ONNX Runtime's message.
        message: String,
    },
}

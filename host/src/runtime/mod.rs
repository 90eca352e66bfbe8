//! The WebAssembly side of Nimbus: the only module that names wasmtime.
//!
//! Flow: [`Runtime`] (engine, pooling allocator, linkers, epoch clock) ->
//! [`Function`] (a handler with its graphs, snapshotted after `init` and
//! precompiled) -> [`Instance`] (a fresh instance per request) -> the
//! wasi-nn host in `wasi_nn` -> [`crate::nn`].
//!
//! Errors are split by when they happen: [`LoadError`] at deploy (the
//! handler or its artifacts are unusable), [`InvokeError`] per request.

mod bindings;
mod cache;
mod engine;
mod function;
mod instance;
pub mod limits;
pub mod placement;
mod snapshot;
mod state;
mod wasi_nn;

pub use bindings::{Request, Response};
pub use cache::{ComponentCache, Validated, digest_dir};
pub use engine::{DEFAULT_INSTANCES, INSTANCES, Runtime};
pub use function::{Function, FunctionSpec, Invoked, Source, Start, serve};
pub use instance::{Instance, Retired};
pub use limits::{Held, HostMemory, MemoryExceeded, MemoryTier};
pub use state::Output;

use std::time::Duration;

/// Why a handler could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a usable WebAssembly component.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// A component, but not one that implements `nimbus:function/handler`.
    #[error("the component is not a Nimbus handler: {0}")]
    NotAHandler(String),
    /// The handler's `init` failed.
    #[error("init failed: {0}")]
    Init(String),
    /// The artifact folder could not be read.
    #[error("artifacts: {0}")]
    Artifacts(String),
    /// A model could not be loaded.
    #[error(transparent)]
    Model(#[from] crate::nn::NnError),
    /// The host's memory (or its instance slots) stayed in use for as long
    /// as a load could wait.
    #[error("the host is at capacity (memory or instance slots in use); retry shortly")]
    AtCapacity,
    /// The function's files could not be fetched (the object store is
    /// unreachable); a later load may succeed.
    #[error("its files cannot be fetched now: {0}")]
    Unavailable(String),
    /// A host-side failure (disk, threads).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The handler rejected the input.
    #[error("bad input: {0}")]
    BadInput(String),
    /// The handler does not read this content type.
    #[error("unsupported content type: {0}")]
    UnsupportedMediaType(String),
    /// The handler cannot produce any accepted type.
    #[error("not acceptable: {0}")]
    NotAcceptable(String),
    /// The handler reported a failure.
    #[error("handler failed: {0}")]
    Failed(String),
    /// The handler trapped (a panic, an out-of-bounds access, ...).
    #[error("handler trapped: {0}")]
    Trap(String),
    /// The handler ran past its timeout and was interrupted.
    #[error("handler timed out after {0:?}")]
    Timeout(Duration),
    /// The handler grew its memory past its tier.
    #[error("{0}")]
    MemoryExceeded(MemoryExceeded),
    /// Every instance slot of this host, or its memory for requests, is in
    /// use.
    #[error("this host is at capacity")]
    AtCapacity,
    /// A host-side failure.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A trap's message: the guest's last stderr line (a panic message, say)
/// when there is one, then wasmtime's description of the trap.
fn explain_trap(e: &wasmtime::Error, stderr: Option<String>) -> String {
    tracing::debug!("trap: {e:?}");
    let trap = e.downcast_ref::<wasmtime::Trap>().map(|t| t.to_string()).unwrap_or_else(|| format!("{e}"));
    match stderr {
        Some(line) => format!("{line} ({trap})"),
        None => trap,
    }
}

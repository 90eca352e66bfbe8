//! One request's instance: a new store (WASI context, resource table,
//! limiter, epoch deadline) and a pooled instantiation of the snapshot.
//!
//! Contract: an instance serves exactly one request and is then dropped, so
//! no state leaks from one request to the next; a trap, a timeout or a
//! memory overrun ends only this instance, and the function stays ready.

use super::bindings::{GuestError, Handler};
use super::engine::ticks;
use super::function::Function;
use super::state::{State, StoreSpec};
use super::{InvokeError, Request, Response, explain_trap};
use std::sync::Arc;
use wasmtime::Store;

/// A fresh, initialized instance of a function.
pub struct Instance {
    function: Arc<Function>,
    store: Store<State>,
    handler: Handler,
}

impl Instance {
    pub(crate) fn new(function: Arc<Function>) -> Result<Self, InvokeError> {
        let spec = StoreSpec {
            artifacts: &function.artifacts,
            env: &function.spec.env,
            graphs: &function.graphs,
            memory: function.spec.memory,
        };
        let state = State::new(&spec).map_err(|e| InvokeError::Internal(format!("{e:#}")))?;
        let mut store = Store::new(&function.runtime.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Instantiation runs no guest code (the snapshot's init already
        // ran); the request's deadline is set when it starts, in `handle`.
        store.set_epoch_deadline(ticks(function.spec.timeout));
        let handler = function.pre.instantiate(&mut store).map_err(|e| InvokeError::Internal(format!("{e:#}")))?;
        Ok(Instance { function, store, handler })
    }

    /// Serves the request; consumes the instance. Also returns what is
    /// left of it: drop that off the request's path, since dropping resets
    /// the memory slot the request dirtied.
    pub fn handle(mut self, request: &Request) -> (Result<Response, InvokeError>, Retired) {
        // A pre-made instance may have waited in the pool for longer than
        // the timeout: the clock starts with the request, not the instance.
        self.store.set_epoch_deadline(ticks(self.function.spec.timeout));
        let result = self.handler.call_handle(&mut self.store, request);
        let stderr = self.store.data().flush_logs(&self.function.name);
        let timeout = self.function.spec.timeout;
        let outcome = match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(GuestError::BadInput(m))) => Err(InvokeError::BadInput(m)),
            Ok(Err(GuestError::UnsupportedMediaType(m))) => Err(InvokeError::UnsupportedMediaType(m)),
            Ok(Err(GuestError::NotAcceptable(m))) => Err(InvokeError::NotAcceptable(m)),
            Ok(Err(GuestError::Failed(m))) => Err(InvokeError::Failed(m)),
            Err(e) => Err(InvokeError::from_trap(&e, stderr, timeout)),
        };
        (outcome, Retired(self.store))
    }
}

/// An instance that has served its request, waiting to be dropped.
pub struct Retired(#[allow(dead_code, reason = "held only to be dropped later")] Store<State>);

impl InvokeError {
    fn from_trap(e: &wasmtime::Error, stderr: Option<String>, timeout: std::time::Duration) -> Self {
        if let Some(m) = e.downcast_ref::<super::limits::MemoryExceeded>() {
            return InvokeError::MemoryExceeded(*m);
        }
        if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            return InvokeError::Timeout(timeout);
        }
        InvokeError::Trap(explain_trap(e, stderr))
    }
}

//! One request's instance: a new store (WASI context, resource table,
//! memory budget) and a pooled instantiation of the snapshot.
//!
//! Contract: an instance serves exactly one request and is then dropped, so
//! no state leaks from one request to the next; a trap, a timeout or a
//! memory overrun ends only this instance, and the function stays ready.
//!
//! The deadline covers everything the request causes. The handler runs as
//! an async call that yields at every epoch tick, so a timer can end it
//! wherever it is: in guest code, in a WASI sleep or poll (async WASI), or
//! in a model run (which is then told to terminate, see `nn::Graph::run`).

use super::bindings::{GuestError, Handler};
use super::engine::Slot;
use super::function::Function;
use super::state::{Output, State, StoreSpec};
use super::{InvokeError, Request, Response, explain_trap};
use std::sync::Arc;
use wasmtime::Store;

/// A fresh, initialized instance of a function.
pub struct Instance {
    function: Arc<Function>,
    store: Store<State>,
    handler: Handler,
    slot: Slot,
}

impl Instance {
    pub(crate) async fn new(function: Arc<Function>) -> Result<Self, InvokeError> {
        let spec = StoreSpec {
            artifacts: &function.artifacts,
            env: &function.spec.env,
            request_env: &function.spec.request_env,
            graphs: &function.graphs,
            memory: function.spec.memory,
            host_memory: &function.runtime.host_memory,
        };
        let state = State::new(&spec).map_err(|e| InvokeError::Internal(format!("{e:#}")))?;
        let mut store = Store::new(&function.runtime.engine, state);
        store.limiter(|s| &mut s.budget);
        // One call may copy as much as the tier holds (wasmtime's default
        // is 128 MiB); what is kept is charged to the budget.
        store.set_hostcall_fuel(function.spec.memory.guest_bytes());
        // Guest code yields to the executor at every tick; the request's
        // deadline is a timer around the whole call (see `handle`).
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let slot = function.runtime.slots.take();
        let handler = function.pre.instantiate_async(&mut store).await.map_err(|e| InvokeError::instantiate(&e))?;
        Ok(Instance { function, store, handler, slot })
    }

    /// Serves the request; consumes the instance. Also returns what the
    /// guest wrote, and what is left of the instance: drop that off the
    /// request's path, since dropping resets the memory slot the request
    /// dirtied.
    pub async fn handle(mut self, request: &Request) -> (Result<Response, InvokeError>, Output, Retired) {
        // A pre-made instance may have waited in the pool for longer than
        // the timeout: the clock starts with the request, not the instance.
        let timeout = self.function.spec.timeout;
        let result = tokio::time::timeout(timeout, self.handler.call_handle(&mut self.store, request)).await;
        let output = self.store.data().output();
        let outcome = match result {
            Err(_elapsed) => Err(InvokeError::Timeout(timeout)),
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(GuestError::BadInput(m)))) => Err(InvokeError::BadInput(m)),
            Ok(Ok(Err(GuestError::UnsupportedMediaType(m)))) => Err(InvokeError::UnsupportedMediaType(m)),
            Ok(Ok(Err(GuestError::NotAcceptable(m)))) => Err(InvokeError::NotAcceptable(m)),
            Ok(Ok(Err(GuestError::Failed(m)))) => Err(InvokeError::Failed(m)),
            Ok(Err(e)) => Err(InvokeError::from_trap(&e, output.explanation())),
        };
        (outcome, output, Retired { _store: self.store, _slot: self.slot })
    }
}

/// An instance that has served its request, waiting to be dropped. Fields
/// drop in order: the store frees its instance slot, then the count of
/// slots in use goes down.
pub struct Retired {
    _store: Store<State>,
    _slot: Slot,
}

impl InvokeError {
    fn from_trap(e: &wasmtime::Error, stderr: Option<String>) -> Self {
        if let Some(m) = e.downcast_ref::<super::limits::MemoryExceeded>() {
            return InvokeError::MemoryExceeded(*m);
        }
        if e.downcast_ref::<super::limits::HostMemoryFull>().is_some() {
            return InvokeError::AtCapacity;
        }
        InvokeError::Trap(explain_trap(e, stderr))
    }

    /// Instantiation fails for the host's reasons: every instance slot of
    /// the pooling allocator in use, or the host's memory for requests, is
    /// a capacity limit; anything else a bug.
    fn instantiate(e: &wasmtime::Error) -> Self {
        let message = format!("{e:#}");
        if message.contains("maximum concurrent") || e.downcast_ref::<super::limits::HostMemoryFull>().is_some() {
            InvokeError::AtCapacity
        } else if let Some(m) = e.downcast_ref::<super::limits::MemoryExceeded>() {
            // The snapshot's memory is larger than the tier.
            InvokeError::MemoryExceeded(*m)
        } else {
            InvokeError::Internal(message)
        }
    }
}

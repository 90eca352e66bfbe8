//! The wasi-nn host: the guest's graphs, execution contexts and tensors,
//! served by [`crate::nn`].
//!
//! Contract: `load-by-name` finds only the function's own graphs (the
//! `Arc<Graphs>` in the store); `load` from bytes is refused with
//! `security`, so a guest can never make the host parse model bytes. Every
//! guest mistake (unknown graph, wrong input) comes back as a wasi-nn error
//! whose `data` says what was wrong; traps are reserved for bad handles
//! and for the memory tier.
//!
//! Memory: every resource the guest holds here (tensors above all, and
//! model outputs before they are copied out of ONNX Runtime) is charged to
//! the store's [`super::limits::Budget`], so guest memory plus host memory
//! stays within the tier. An output that would not fit is refused before it
//! is copied; the request fails with `memory_exceeded`.

use super::bindings::wasi::nn::{errors, graph, inference, tensor};
use super::bindings::{ErrorCode, ExecutionTarget, GraphEncoding, TensorType};
use super::state::State;
use crate::nn::{ElementType, Graph, NnError, Tensor};
use std::sync::Arc;
use wasmtime::component::Resource;

/// What a table entry costs besides its payload.
const ENTRY_BYTES: usize = 256;

/// Host memory a resource holds on a guest's behalf.
trait Charged: Send + 'static {
    fn bytes(&self) -> usize;
}

impl Charged for Tensor {
    fn bytes(&self) -> usize {
        ENTRY_BYTES + self.data.len() + self.dims.len() * 4
    }
}

impl Charged for GraphHandle {
    fn bytes(&self) -> usize {
        ENTRY_BYTES
    }
}

impl Charged for ContextHandle {
    fn bytes(&self) -> usize {
        ENTRY_BYTES
    }
}

impl Charged for NnErrorHandle {
    fn bytes(&self) -> usize {
        ENTRY_BYTES + self.message.len()
    }
}

/// A graph the guest holds.
pub struct GraphHandle(Arc<Graph>);

/// An execution context: a graph ready to `compute`. Sessions live in the
/// graph, so a context is only a reference to it.
pub struct ContextHandle(Arc<Graph>);

/// A wasi-nn error the guest can inspect.
pub struct NnErrorHandle {
    code: ErrorCode,
    message: String,
}

type NnResult<T> = wasmtime::Result<Result<T, Resource<NnErrorHandle>>>;

impl State {
    fn nn_error<T>(&mut self, code: ErrorCode, message: String) -> NnResult<T> {
        tracing::debug!(?code, %message, "wasi-nn error returned to guest");
        Ok(Err(self.push(NnErrorHandle { code, message })?))
    }

    /// Puts `value` in the table, charging it to the tier (a trap if it
    /// does not fit).
    fn push<T: Charged>(&mut self, value: T) -> wasmtime::Result<Resource<T>> {
        self.budget.charge(value.bytes())?;
        Ok(self.table.push(value)?)
    }

    /// Takes `r` out of the table and refunds its charge.
    fn take<T: Charged>(&mut self, r: Resource<T>) -> wasmtime::Result<T> {
        let value = self.table.delete(r)?;
        self.budget.refund(value.bytes());
        Ok(value)
    }
}

fn to_element(t: TensorType) -> ElementType {
    match t {
        TensorType::Fp16 => ElementType::F16,
        TensorType::Fp32 => ElementType::F32,
        TensorType::Fp64 => ElementType::F64,
        TensorType::Bf16 => ElementType::BF16,
        TensorType::U8 => ElementType::U8,
        TensorType::I32 => ElementType::I32,
        TensorType::I64 => ElementType::I64,
    }
}

fn to_wit(t: ElementType) -> TensorType {
    match t {
        ElementType::F16 => TensorType::Fp16,
        ElementType::F32 => TensorType::Fp32,
        ElementType::F64 => TensorType::Fp64,
        ElementType::BF16 => TensorType::Bf16,
        ElementType::U8 => TensorType::U8,
        ElementType::I32 => TensorType::I32,
        ElementType::I64 => TensorType::I64,
    }
}

impl graph::Host for State {
    fn load(&mut self, _: Vec<Vec<u8>>, _: GraphEncoding, _: ExecutionTarget) -> NnResult<Resource<GraphHandle>> {
        self.nn_error(
            ErrorCode::Security,
            "loading a model from bytes is disabled: ship NAME.onnx in the function's artifacts and use load-by-name"
                .into(),
        )
    }

    fn load_by_name(&mut self, name: String) -> NnResult<Resource<GraphHandle>> {
        match self.graphs.get(&name) {
            Some(g) => {
                let handle = GraphHandle(g.clone());
                Ok(Ok(self.push(handle)?))
            }
            None => {
                let known = self.graphs.names().join(", ");
                self.nn_error(ErrorCode::NotFound, format!("no graph `{name}`; this function has: {known}"))
            }
        }
    }
}

impl graph::HostGraph for State {
    fn init_execution_context(&mut self, graph: Resource<GraphHandle>) -> NnResult<Resource<ContextHandle>> {
        let graph = self.table.get(&graph)?.0.clone();
        Ok(Ok(self.push(ContextHandle(graph))?))
    }

    fn drop(&mut self, graph: Resource<GraphHandle>) -> wasmtime::Result<()> {
        self.take(graph).map(drop)
    }
}

impl inference::Host for State {}

impl inference::HostGraphExecutionContext for State {
    async fn compute(
        &mut self,
        context: Resource<ContextHandle>,
        inputs: Vec<(String, Resource<Tensor>)>,
    ) -> NnResult<Vec<(String, Resource<Tensor>)>> {
        let graph = self.table.get(&context)?.0.clone();
        // Inputs leave the table but stay charged until the run is over:
        // they are still in host memory (and copied into ONNX Runtime).
        let inputs = inputs
            .into_iter()
            .map(|(name, t)| Ok((name, self.table.delete(t)?)))
            .collect::<wasmtime::Result<Vec<_>>>()?;
        let held: usize = inputs.iter().map(|(_, t)| t.bytes()).sum();
        let left = self.budget.left() as u64;
        let result = graph.run(inputs, left).await;
        self.budget.refund(held);
        match result {
            Ok(outputs) => {
                let outputs = outputs
                    .into_iter()
                    .map(|(name, t)| Ok((name, self.push(t)?)))
                    .collect::<wasmtime::Result<Vec<_>>>()?;
                Ok(Ok(outputs))
            }
            Err(NnError::OutOfMemory { limit, .. }) => {
                let asked = self.budget.used().saturating_add(usize::try_from(limit).unwrap_or(usize::MAX)) + 1;
                Err(self.budget.exceeded(asked).into())
            }
            Err(e @ NnError::InvalidInput { .. }) => self.nn_error(ErrorCode::InvalidArgument, e.to_string()),
            Err(e) => self.nn_error(ErrorCode::RuntimeError, e.to_string()),
        }
    }

    fn drop(&mut self, context: Resource<ContextHandle>) -> wasmtime::Result<()> {
        self.take(context).map(drop)
    }
}

impl tensor::Host for State {}

impl tensor::HostTensor for State {
    fn new(&mut self, dims: Vec<u32>, ty: TensorType, data: Vec<u8>) -> wasmtime::Result<Resource<Tensor>> {
        self.push(Tensor { dims, ty: to_element(ty), data })
    }

    fn dimensions(&mut self, t: Resource<Tensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&t)?.dims.clone())
    }

    fn ty(&mut self, t: Resource<Tensor>) -> wasmtime::Result<TensorType> {
        Ok(to_wit(self.table.get(&t)?.ty))
    }

    fn data(&mut self, t: Resource<Tensor>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&t)?.data.clone())
    }

    fn drop(&mut self, t: Resource<Tensor>) -> wasmtime::Result<()> {
        self.take(t).map(drop)
    }
}

impl errors::Host for State {}

impl errors::HostError for State {
    fn code(&mut self, e: Resource<NnErrorHandle>) -> wasmtime::Result<ErrorCode> {
        Ok(self.table.get(&e)?.code)
    }

    fn data(&mut self, e: Resource<NnErrorHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&e)?.message.clone())
    }

    fn drop(&mut self, e: Resource<NnErrorHandle>) -> wasmtime::Result<()> {
        self.take(e).map(drop)
    }
}

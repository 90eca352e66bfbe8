//! Host bindings for the `nimbus:function/handler` world, generated from
//! `wit/` (the same files the guest SDK reads). wasi-nn resources map onto
//! the host types in [`super::wasi_nn`]; every import may trap, but only
//! for host bugs (a bad resource handle), never for a guest's mistake.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "nimbus:function/handler",
    imports: { default: trappable },
    with: {
        "wasi:nn/graph.graph": super::wasi_nn::GraphHandle,
        "wasi:nn/inference.graph-execution-context": super::wasi_nn::ContextHandle,
        "wasi:nn/tensor.tensor": crate::nn::Tensor,
        "wasi:nn/errors.error": super::wasi_nn::NnErrorHandle,
    },
});

pub use self::nimbus::function::types::Error as GuestError;
pub use wasi::nn::errors::ErrorCode;
pub use wasi::nn::graph::{ExecutionTarget, GraphEncoding};
pub use wasi::nn::tensor::TensorType;

// The world `use`s its types interface, which makes it an (empty) import.
impl self::nimbus::function::types::Host for super::state::State {}

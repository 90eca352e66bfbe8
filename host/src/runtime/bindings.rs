//! Host bindings for the `nimbus:function/handler` world, generated from
//! `wit/` (the same files the guest SDK reads). wasi-nn resources map onto
//! the host types in [`super::wasi_nn`]; every import may trap, but only
//! for host bugs (a bad resource handle) or a limit the guest ran into
//! (its memory tier), never for a guest's mistake.
//!
//! The exports and `compute` are async: a request runs as a task whose
//! deadline can cancel it anywhere, in guest code (epoch yields), in a WASI
//! call (sleeps and polls are async WASI) or in a model run (the run runs
//! on a blocking thread and is told to terminate).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "nimbus:function/handler",
    imports: {
        "wasi:nn/inference.[method]graph-execution-context.compute": async | trappable,
        default: trappable,
    },
    exports: { default: async },
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

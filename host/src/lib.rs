//! Nimbus: serverless ML inference with WebAssembly handlers.
//!
//! The flow of one request, one module each: `runtime` (Wasm components,
//! snapshots, instances and their limits, the wasi-nn host) over `nn`
//! (ONNX Runtime). `cli` is the command line on top.

pub mod cli;
pub mod nn;
pub mod runtime;

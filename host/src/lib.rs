//! Nimbus: serverless ML inference with WebAssembly handlers.
//!
//! The flow of one request, one module each: `api` (HTTP) -> `registry`
//! (name -> live function) -> `pool` (concurrency, warm instances, scale
//! to zero) -> `runtime` (Wasm components, snapshots,
//! instances and their limits, the wasi-nn host) -> `nn` (ONNX Runtime).
//! `store` keeps records and blobs (on disk, or etcd and an object store
//! for a cluster); `members` says which hosts serve; `journal` keeps each
//! function's logs and events; `cli` is the command line.

pub mod api;
pub mod cli;
pub mod journal;
pub mod members;
pub mod nn;
pub mod pool;
pub mod registry;
pub mod runtime;
pub mod store;

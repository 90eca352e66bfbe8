//! # nimbus-sdk: write a Nimbus inference handler
//!
//! A handler is a Rust library compiled to a WebAssembly component
//! (`cargo build --target wasm32-wasip2`). It has two steps:
//!
//! - [`Handler::init`] runs once per deployed version, before any request:
//!   read artifacts under `/model`, build tokenizers, name the graphs it uses.
//!   The host snapshots the state it leaves, so requests start warm.
//! - [`Handler::handle`] serves one request: bytes plus content types in,
//!   bytes plus a content type out.
//!
//! Models are reached through wasi-nn by name: every `NAME.onnx` in the
//! function's artifact folder is a graph called `NAME`, loaded once by the host
//! on native ONNX Runtime and shared by all instances. The handler never reads
//! model bytes.
//!
//! Functions deployed with batching share model runs between concurrent
//! requests; [`batch`] helps requests agree on shapes so they can.
//!
//! Besides its own formats, a handler can speak the Open Inference Protocol
//! (KServe v2, Triton) with [`oip`], as the built-in handler of model-only
//! deploys does.
//!
//! ```no_run
//! use nimbus_sdk::{Handler, Model, Request, Response, Result, Tensor};
//!
//! struct Doubler {
//!     model: Model,
//! }
//!
//! impl Handler for Doubler {
//!     fn init() -> Result<Self> {
//!         Ok(Doubler { model: Model::load("double")? })
//!     }
//!
//!     fn handle(&self, request: Request) -> Result<Response> {
//!         let rows: Vec<Vec<f32>> = request.csv_rows()?;
//!         let flat: Vec<f32> = rows.concat();
//!         let input = Tensor::new(&[rows.len() as u32, 4], &flat)?;
//!         let outputs = self.model.run([("x", input)])?;
//!         let y = outputs.get::<f32>("y")?;
//!         Response::json(&y.data)
//!     }
//! }
//!
//! nimbus_sdk::export_handler!(Doubler);
//! ```
#![deny(missing_docs)]

pub mod batch;
mod body;
mod error;
mod model;
pub mod oip;
mod tensor;

pub use body::{CSV, JSON, JSON_LINES, Request, Response};
pub use error::{Error, Result};
pub use model::{Model, Outputs};
pub use tensor::{Element, ElementType, RawTensor, Tensor, TensorData};

/// What a handler implements; see the crate docs for a full example.
pub trait Handler: Sized + 'static {
    /// Builds the handler's shared state. Runs once per deployed version,
    /// before the state is snapshotted; an error fails the deploy.
    fn init() -> Result<Self>;

    /// Serves one request.
    fn handle(&self, request: Request) -> Result<Response>;
}

/// Exports a [`Handler`] type as the component's `init` and `handle`.
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        ::std::thread_local! {
            static __NIMBUS_HANDLER: ::std::cell::OnceCell<$handler> =
                const { ::std::cell::OnceCell::new() };
        }

        struct __NimbusExport;

        impl $crate::__private::Guest for __NimbusExport {
            fn init() -> ::std::result::Result<(), ::std::string::String> {
                let handler = <$handler as $crate::Handler>::init();
                $crate::__private::finish_init();
                let handler = handler.map_err(|e| e.to_string())?;
                __NIMBUS_HANDLER.with(|cell| {
                    cell.set(handler)
                        .map_err(|_| ::std::string::String::from("init ran twice"))
                })
            }

            fn handle(
                request: $crate::__private::RawRequest,
            ) -> ::std::result::Result<$crate::__private::RawResponse, $crate::__private::RawError>
            {
                __NIMBUS_HANDLER.with(|cell| match cell.get() {
                    Some(handler) => $crate::__private::handle(handler, request),
                    None => Err($crate::__private::not_initialized()),
                })
            }
        }

        $crate::__private::export_raw!(__NimbusExport with_types_in $crate::__private::bindings);
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::Guest;
    pub use crate::bindings::export_raw;
    pub use crate::bindings::nimbus::function::types::{
        Error as RawError, Request as RawRequest, Response as RawResponse,
    };

    pub mod bindings {
        pub use crate::bindings::*;
    }

    /// Drops host handles taken during `init` and forgets wasi-libc's cached
    /// preopens: a snapshot keeps linear memory but not host resources, so
    /// neither may survive into the instances made from it. Also forgets the
    /// environment `init` may have read: requests see variables `init` does
    /// not (`NIMBUS_FUNCTION`, `NIMBUS_VERSION`), and wasi-libc reads the
    /// environment only once.
    pub fn finish_init() {
        crate::model::forget_handles();
        #[cfg(target_os = "wasi")]
        {
            unsafe extern "C" {
                fn __wasilibc_reset_preopens();
                fn __wasilibc_deinitialize_environ();
            }
            // SAFETY: wasi-libc's own entry points; called when no file
            // descriptor from init is in use any more, and with no pointer
            // into the environment held (std copies what `env::var` returns).
            unsafe {
                __wasilibc_reset_preopens();
                __wasilibc_deinitialize_environ();
            }
        }
    }

    /// Runs the handler and lowers its result onto the WIT types.
    pub fn handle<H: crate::Handler>(handler: &H, request: RawRequest) -> Result<RawResponse, RawError> {
        handler.handle(crate::Request::from(request)).map(RawResponse::from).map_err(RawError::from)
    }

    /// The error for a `handle` call that arrives before `init` succeeded.
    pub fn not_initialized() -> RawError {
        RawError::Failed("handler was not initialized".into())
    }
}

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "nimbus:function/handler",
        pub_export_macro: true,
        export_macro_name: "export_raw",
        default_bindings_module: "nimbus_sdk::__private::bindings",
        generate_all,
    });
}

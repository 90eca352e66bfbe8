//! Pre-initialization: run the handler's `init` once, then snapshot the
//! instance with wizer so every request starts from initialized memory.
//!
//! The snapshot keeps linear memory and globals, not host resources; the
//! guest SDK drops its wasi-nn handles and wasi-libc's preopen cache at the
//! end of `init` so nothing dangles. What can go wrong here is what a
//! deploy reports: not a component, not a handler (exports or imports do
//! not fit the world), or `init` returning an error or trapping.

use super::LoadError;
use super::engine::Runtime;
use super::state::{State, StoreSpec};
use std::time::Duration;
use wasmtime::Store;
use wasmtime::component::Val;
use wasmtime_wizer::Wizer;

/// Checks the binary header: a component, not a core module or junk.
pub(crate) fn check_header(wasm: &[u8]) -> Result<(), LoadError> {
    match wasm.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(LoadError::Invalid(
            "this is a core Wasm module, not a component: build with `cargo build --target wasm32-wasip2`".into(),
        )),
        _ => Err(LoadError::Invalid("not a WebAssembly binary (bad magic number)".into())),
    }
}

/// Runs `init` and returns the snapshot component's bytes.
pub(crate) async fn snapshot(
    rt: &Runtime,
    function: &str,
    wasm: &[u8],
    spec: &StoreSpec<'_>,
    timeout: Duration,
) -> Result<Vec<u8>, LoadError> {
    check_header(wasm)?;
    let mut store = Store::new(&rt.init_engine, State::new(spec).map_err(|e| LoadError::Internal(format!("{e:#}")))?);
    store.limiter(|s| &mut s.budget);
    // Wizer reads the initialized memory back through the store; as with
    // requests, one call may copy as much as the tier holds (wasmtime's
    // default of 128 MiB made `init` keeping more than that fail).
    store.set_hostcall_fuel(spec.memory.guest_bytes());
    // As for requests: yield at every tick, and a timer ends it.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);

    let linker = &rt.init_linker;
    let mut link_error = None;
    let mut wizer = Wizer::new();
    wizer.init_func("init()").keep_init_func(true);
    let run = wizer.run_component(&mut store, wasm, async |store, component| {
        linker.instantiate_async(store, component).await.inspect_err(|e| link_error = Some(format!("{e:#}")))
    });
    let result = tokio::time::timeout(timeout, run).await;
    let output = store.data().output();
    output.log(function);
    let stderr = output.explanation();
    let Ok(result) = result else {
        return Err(LoadError::Init(format!("init ran past its limit of {} s (init_timeout_s)", timeout.as_secs())));
    };
    let (snapshot, results) = match result {
        Ok(ok) => ok,
        Err(e) => {
            let message = format!("{e:#}");
            return Err(if let Some(link) = link_error {
                LoadError::NotAHandler(link)
            } else if message.contains("export the function `init()`") {
                LoadError::NotAHandler("it exports no `init`: wrap the handler in `nimbus_sdk::export_handler!`".into())
            } else if message.contains("initialization function trapped") {
                LoadError::Init(super::explain_trap(&e, stderr))
            } else {
                LoadError::Invalid(message)
            });
        }
    };
    match results.first() {
        Some(Val::Result(Err(reason))) => {
            let reason = match reason.as_deref() {
                Some(Val::String(s)) => s.clone(),
                _ => "init returned an error".into(),
            };
            Err(LoadError::Init(reason))
        }
        Some(Val::Result(Ok(_))) => Ok(snapshot),
        _ => Err(LoadError::NotAHandler("`init` must have type `func() -> result<_, string>`".into())),
    }
}

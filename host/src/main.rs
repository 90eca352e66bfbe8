use clap::Parser;
use nimbus::cli::{Cli, LogFormat};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// How long exit waits for blocking work (a model run told to terminate,
/// a file write) before the process ends anyway.
const EXIT_GRACE: Duration = Duration::from_secs(2);

fn main() -> std::process::ExitCode {
    quiet_library_backtraces();
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("NIMBUS_LOG").unwrap_or_else(|_| EnvFilter::new("warn,guest=info"));
    let log = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log.json().flatten_event(true).with_current_span(false).init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli.run());
    // Dropping a runtime waits for every blocking task; a bounded wait
    // keeps a stuck one from holding the process after a SIGTERM.
    runtime.shutdown_timeout(EXIT_GRACE);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<nimbus::cli::ClientError>() {
                Some(c) => std::process::ExitCode::from(c.exit as u8),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}

/// Errors made inside libraries capture a stack trace when
/// `RUST_BACKTRACE` is set, and wasmtime makes one each time a store is
/// dropped: with `RUST_BACKTRACE=1` in a server's environment that trace
/// was 7% of the CPU a warm request costs. `RUST_LIB_BACKTRACE` governs
/// those captures alone (panics still follow `RUST_BACKTRACE`), so it is
/// off unless the environment says otherwise.
fn quiet_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: called first thing in `main`, before any other thread
        // exists that could read the environment.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}

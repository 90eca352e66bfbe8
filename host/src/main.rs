use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("NIMBUS_LOG").unwrap_or_else(|_| EnvFilter::new("warn,guest=info")))
        .with_writer(std::io::stderr)
        .init();
    match nimbus::cli::Cli::parse().run().await {
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

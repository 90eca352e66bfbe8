//! The `nimbus` command line: `run` and `serve` use the runtime directly;
//! the other commands are HTTP clients of a server.

mod client;
mod deploy;
mod manage;
mod run;
mod serve;

pub use client::{ClientError, Exit};

use clap::{Parser, Subcommand};

/// Serverless ML inference with WebAssembly handlers.
#[derive(Debug, Parser)]
#[command(name = "nimbus", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one request through a handler locally and print the response body.
    Run(run::RunArgs),
    /// Serve functions over HTTP.
    Serve(serve::ServeArgs),
    /// Create or update a function on a server.
    Deploy(deploy::DeployArgs),
    /// Invoke a function and print the response body.
    Invoke(manage::InvokeArgs),
    /// List functions.
    List(manage::ListArgs),
    /// Show a function's configuration, artifacts and counters.
    Describe(manage::NameArgs),
    /// Delete a function.
    Delete(manage::NameArgs),
}

impl Cli {
    /// Runs the chosen command.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(args) => run::run(args).await,
            Command::Serve(args) => serve::serve(args).await,
            Command::Deploy(args) => blocking(move || deploy::deploy(args)).await,
            Command::Invoke(args) => blocking(move || manage::invoke(args)).await,
            Command::List(args) => blocking(move || manage::list(args)).await,
            Command::Describe(args) => blocking(move || manage::describe(args)).await,
            Command::Delete(args) => blocking(move || manage::delete(args)).await,
        }
    }
}

/// Client commands block on HTTP (ureq); keep them off the async workers.
async fn blocking(f: impl FnOnce() -> anyhow::Result<()> + Send + 'static) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(f).await?
}

/// `--data TEXT` or `--data @FILE` (`@-` reads stdin).
pub(crate) fn read_data(data: &str) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    use std::io::Read;
    match data.strip_prefix('@') {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("reading stdin")?;
            Ok(buf)
        }
        Some(path) => std::fs::read(path).with_context(|| format!("reading --data file {path}")),
        None => Ok(data.as_bytes().to_vec()),
    }
}

/// `KEY=VALUE` for `--env`.
pub(crate) fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

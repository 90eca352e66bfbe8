//! The `nimbus` command line: `run` and `serve` use the runtime directly;
//! the other commands are HTTP clients of a server.

mod client;
mod deploy;
mod hosts;
mod logs;
mod manage;
mod new;
mod run;
mod serve;
mod versions;

pub use client::{ClientError, Exit};

use clap::{Parser, Subcommand};

/// Serverless ML inference with WebAssembly handlers.
#[derive(Debug, Parser)]
#[command(name = "nimbus", version, about)]
pub struct Cli {
    /// How Nimbus writes its own log to stderr: `text` for people, `json`
    /// (one object per line) for log collectors.
    #[arg(long, global = true, env = "NIMBUS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The format of the process's own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// A JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one request through a handler locally and print the response body.
    Run(run::RunArgs),
    /// Serve functions over HTTP.
    Serve(serve::ServeArgs),
    /// Write a new handler crate from a template (tabular, text, image).
    New(new::NewArgs),
    /// Create or update a function on a server.
    Deploy(deploy::DeployArgs),
    /// Invoke a function and print the response body.
    Invoke(manage::InvokeArgs),
    /// List functions.
    List(manage::ListArgs),
    /// Show a function's live version, aliases, traffic, canary and counters.
    Describe(manage::NameArgs),
    /// Delete a function and all its versions.
    Delete(manage::NameArgs),
    /// List a function's versions with their aliases and traffic weights.
    Versions(versions::VersionsArgs),
    /// Point an alias at a version (or delete it with --delete).
    Alias(versions::AliasArgs),
    /// Split `live` traffic over versions: `nimbus traffic NAME 3=90 4=10`.
    Traffic(versions::TrafficArgs),
    /// Move `live` back to the previous version (or --to VERSION), at once.
    Rollback(versions::RollbackArgs),
    /// Change configuration: a new version with the same files, nothing uploaded.
    Config(versions::ConfigCmdArgs),
    /// List the hosts serving now (one, or a cluster's live members).
    Hosts(hosts::HostsArgs),
    /// Print a function's log: a line per request and what its handler wrote (-f to follow).
    Logs(logs::LogsArgs),
    /// Print a function's events: deploys, rollbacks, canaries, cold starts, throttling, traps.
    Events(logs::EventsArgs),
}

impl Cli {
    /// Runs the chosen command.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(args) => run::run(args).await,
            Command::Serve(args) => serve::serve(args).await,
            Command::New(args) => new::new(args),
            Command::Deploy(args) => blocking(move || deploy::deploy(args)).await,
            Command::Invoke(args) => blocking(move || manage::invoke(args)).await,
            Command::List(args) => blocking(move || manage::list(args)).await,
            Command::Describe(args) => blocking(move || manage::describe(args)).await,
            Command::Delete(args) => blocking(move || manage::delete(args)).await,
            Command::Versions(args) => blocking(move || versions::versions(args)).await,
            Command::Alias(args) => blocking(move || versions::alias(args)).await,
            Command::Traffic(args) => blocking(move || versions::traffic(args)).await,
            Command::Rollback(args) => blocking(move || versions::rollback(args)).await,
            Command::Config(args) => blocking(move || versions::config(args)).await,
            Command::Hosts(args) => blocking(move || hosts::hosts(args)).await,
            Command::Logs(args) => blocking(move || logs::logs(args)).await,
            Command::Events(args) => blocking(move || logs::events(args)).await,
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

/// Seconds since the Unix epoch now.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// How long before `now` the Unix time `then` was, for people: `42 s ago`,
/// `5 min ago`, `3 h ago`, `2 d ago`.
pub(crate) fn ago(now: u64, then: u64) -> String {
    match now.saturating_sub(then) {
        s @ 0..60 => format!("{s} s ago"),
        s @ 60..3600 => format!("{} min ago", s / 60),
        s @ 3600..86400 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86400),
    }
}

/// A Unix time for people: the date and time in the reader's zone, then
/// how long ago: `2026-11-27 09:40 (3 min ago)`.
pub(crate) fn when(now: u64, then: u64) -> String {
    let date = i64::try_from(then)
        .ok()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default();
    format!("{date} ({})", ago(now, then))
}

/// A byte count for people: `512 B`, `156.63 KiB`, `5.74 MiB`.
pub(crate) fn size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// One line about a canary (`canary` from the API).
pub(crate) fn canary_line(c: &serde_json::Map<String, serde_json::Value>) -> String {
    let state = c["state"].as_str().unwrap_or("");
    let mut line =
        format!("canary: version {} on {}% against version {}: {state}", c["version"], c["percent"], c["baseline"]);
    if state == "running" {
        let left = c["ends_at"].as_u64().unwrap_or(0).saturating_sub(unix_now());
        line.push_str(&format!(", judged in {left} s"));
    }
    if let Some(reason) = c.get("reason").and_then(|r| r.as_str()) {
        line.push_str(&format!(" ({reason})"));
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_in_the_largest_whole_unit() {
        assert_eq!(super::ago(100, 58), "42 s ago");
        assert_eq!(super::ago(1000, 1000 - 300), "5 min ago");
        assert_eq!(super::ago(100_000, 100_000 - 3 * 3600 - 5), "3 h ago");
        assert_eq!(super::ago(10, 20), "0 s ago", "a clock behind the server's");
        assert!(super::when(1_800_000_000, 1_800_000_000 - 300).ends_with(" (5 min ago)"));
        assert_eq!(super::when(1_800_000_000, 1_800_000_000).len(), "2027-01-15 08:00 (0 s ago)".len());
        assert_eq!(super::size(6_291_456), "6.00 MiB");
    }
}

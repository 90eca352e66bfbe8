//! `nimbus versions`, `alias`, `traffic`, `rollback` and `config`: a
//! function's immutable versions and what points at them. Every change
//! prints the versions as the server has them afterwards.

use super::client::{Answer, Client, Connection};
use super::deploy::ConfigArgs;
use crate::registry::{Artifact, Bundle, FunctionConfig, Weight};
use crate::store::Digest;
use anyhow::Context;
use serde::Deserialize;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub(crate) struct VersionsArgs {
    /// The function.
    name: String,
    #[command(flatten)]
    connection: Connection,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn versions(args: VersionsArgs) -> anyhow::Result<()> {
    let answer = Client::new(&args.connection).get(&format!("/v1/functions/{}/versions", args.name))?;
    print(&answer, args.json)
}

#[derive(Debug, clap::Args)]
pub(crate) struct AliasArgs {
    /// The function.
    name: String,
    /// The alias (`live` is what plain invocations use).
    alias: String,
    /// The version it points at.
    #[arg(required_unless_present = "delete")]
    version: Option<u64>,
    /// Delete the alias instead.
    #[arg(long, conflicts_with = "version")]
    delete: bool,
    #[command(flatten)]
    connection: Connection,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn alias(args: AliasArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection);
    let path = format!("/v1/functions/{}/aliases/{}", args.name, args.alias);
    let answer = match args.version {
        Some(version) => client.put_json(&path, &serde_json::json!({ "version": version }))?,
        None => client.delete(&path)?,
    };
    print(&answer, args.json)
}

#[derive(Debug, clap::Args)]
pub(crate) struct TrafficArgs {
    /// The function.
    name: String,
    /// VERSION=PERCENT pairs adding up to 100, e.g. `3=90 4=10` (at most 4).
    #[arg(required = true, value_parser = parse_weight)]
    weights: Vec<Weight>,
    #[command(flatten)]
    connection: Connection,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_weight(s: &str) -> Result<Weight, String> {
    let bad = || format!("expected VERSION=PERCENT, like 3=90; got `{s}`");
    let (v, p) = s.split_once('=').ok_or_else(bad)?;
    Ok(Weight { version: v.trim().parse().map_err(|_| bad())?, percent: p.trim().parse().map_err(|_| bad())? })
}

pub(crate) fn traffic(args: TrafficArgs) -> anyhow::Result<()> {
    let answer = Client::new(&args.connection)
        .put_json(&format!("/v1/functions/{}/traffic", args.name), &serde_json::json!({ "weights": args.weights }))?;
    print(&answer, args.json)
}

#[derive(Debug, clap::Args)]
pub(crate) struct RollbackArgs {
    /// The function.
    name: String,
    /// The version to go back to (default: the newest kept one older than live).
    #[arg(long)]
    to: Option<u64>,
    #[command(flatten)]
    connection: Connection,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let answer = Client::new(&args.connection)
        .post_json(&format!("/v1/functions/{}/rollback", args.name), &serde_json::json!({ "to": args.to }))?;
    print(&answer, args.json)
}

#[derive(Debug, clap::Args)]
pub(crate) struct ConfigCmdArgs {
    /// The function.
    name: String,
    #[command(flatten)]
    config: ConfigArgs,
    /// What this version is (shown by `nimbus versions`).
    #[arg(long)]
    description: Option<String>,
    /// Keep `live` where it is; the new version answers `?version=N` only.
    #[arg(long)]
    no_promote: bool,
    #[command(flatten)]
    connection: Connection,
    /// Print the deploy's answer as JSON.
    #[arg(long)]
    json: bool,
}

/// The live version's files and configuration, as `describe` has them.
#[derive(Debug, Deserialize)]
struct LiveFiles {
    wasm: Digest,
    artifacts: Vec<Artifact>,
    config: FunctionConfig,
}

/// A new version with the live version's handler and artifacts (already on
/// the server: nothing is uploaded) and the configuration changed by flags.
pub(crate) fn config(args: ConfigCmdArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection);
    let answer = client.get(&format!("/v1/functions/{}", args.name))?;
    let live: LiveFiles = serde_json::from_slice(&answer.body).context("reading the live version")?;
    let mut config = live.config;
    args.config.apply(&mut config)?;
    let bundle = Bundle {
        wasm: Some(live.wasm),
        artifacts: live.artifacts,
        config,
        description: args.description,
        promote: !args.no_promote,
        canary: None,
    };
    super::deploy::send(&client, &args.name, &bundle, args.json)
}

/// Prints a versions answer: JSON as it came, or a table newest first.
fn print(answer: &Answer, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        out.write_all(&answer.body)?;
        return Ok(writeln!(out)?);
    }
    let v: serde_json::Value = serde_json::from_slice(&answer.body).context("reading the versions")?;
    writeln!(
        out,
        "{:>7}  {:<20} {:>7}  {:<14} {:>11}  {:<28} DESCRIPTION",
        "VERSION", "ALIASES", "TRAFFIC", "STATE", "INVOCATIONS", "DEPLOYED"
    )?;
    let now = super::unix_now();
    for version in v["versions"].as_array().into_iter().flatten() {
        let aliases: Vec<&str> =
            version["aliases"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
        let percent = version["percent"].as_u64().unwrap_or(0);
        writeln!(
            out,
            "{:>7}  {:<20} {:>7}  {:<14} {:>11}  {:<28} {}",
            version["version"].to_string(),
            if aliases.is_empty() { "-".into() } else { aliases.join(",") },
            if percent == 0 { "-".into() } else { format!("{percent}%") },
            version["state"].as_str().unwrap_or(""),
            version["invocations"].to_string(),
            super::when(now, version["deployed_at"].as_u64().unwrap_or(0)),
            version["description"].as_str().unwrap_or("")
        )?;
    }
    if let Some(c) = v["canary"].as_object() {
        writeln!(out, "{}", super::canary_line(c))?;
    }
    Ok(())
}

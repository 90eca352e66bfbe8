//! `nimbus hosts`: the hosts serving now (`GET /v1/hosts`).

use super::client::{Client, Connection};
use std::io::Write;

#[derive(Debug, clap::Args)]
pub(crate) struct HostsArgs {
    #[command(flatten)]
    connection: Connection,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `mb` megabytes for people: `512 MB`, `19.5 GB`.
fn memory(mb: u64) -> String {
    if mb < 10 << 10 { format!("{mb} MB") } else { format!("{:.1} GB", mb as f64 / 1024.0) }
}

pub(crate) fn hosts(args: HostsArgs) -> anyhow::Result<()> {
    let answer = Client::new(&args.connection).get("/v1/hosts")?;
    let view: serde_json::Value = serde_json::from_slice(&answer.body)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &view)?;
        writeln!(out)?;
        return Ok(());
    }
    let hosts = view["hosts"].as_array().cloned().unwrap_or_default();
    let now = super::unix_now();
    writeln!(out, "{:<32} {:>5} {:>9} {:>12}  LOADED", "HOST", "CORES", "MEMORY", "UP SINCE")?;
    for h in &hosts {
        let me = if h["id"] == view["me"] { " *" } else { "" };
        let loaded: Vec<&str> = h["loaded"].as_array().into_iter().flatten().filter_map(|f| f.as_str()).collect();
        writeln!(
            out,
            "{:<32} {:>5} {:>9} {:>12}  {}",
            format!("{}{me}", h["address"].as_str().unwrap_or("")),
            h["cores"].to_string(),
            memory(h["memory_mb"].as_u64().unwrap_or(0)),
            super::ago(now, h["started_at"].as_u64().unwrap_or(now)),
            if loaded.is_empty() { "-".to_owned() } else { loaded.join(", ") }
        )?;
    }
    let mode = if view["cluster"] == true { "cluster" } else { "single host" };
    writeln!(out, "{} live ({mode}); * answered", hosts.len())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_reads_in_megabytes_then_gigabytes() {
        assert_eq!(super::memory(1024), "1024 MB");
        assert_eq!(super::memory(19_660), "19.2 GB");
    }
}

//! `nimbus logs` and `nimbus events`: a function's log (followed with
//! `-f`, as `kubectl logs -f` or `spin logs` do) and its event history, in
//! the reader's local time, or as JSON lines for scripts.

use super::client::{Client, ClientError, Connection};
use anyhow::Context;
use serde_json::Value;
use std::io::{BufRead, Write};

#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    connection: Connection,
    /// The function.
    name: String,
    /// Keep printing new lines as they come (Ctrl-C to stop).
    #[arg(short, long)]
    follow: bool,
    /// Only lines from this long ago on (`30s`, `10m`, `2h`, `7d`), or an
    /// RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only the lines of this request (its `x-nimbus-request-id`).
    #[arg(long)]
    request: Option<String>,
    /// At most this many lines (the newest), before following.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print each line as a JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct EventsArgs {
    #[command(flatten)]
    connection: Connection,
    /// The function.
    name: String,
    /// Only events from this long ago on (`30s`, `10m`, `2h`, `7d`), or an
    /// RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// At most this many events (the newest).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print each event as a JSON object.
    #[arg(long)]
    json: bool,
}

/// `?since=&limit=` with values made safe for a URL.
fn query(since: Option<&str>, limit: usize) -> String {
    let mut q = format!("limit={limit}");
    if let Some(s) = since {
        q += "&since=";
        q += &s.replace('%', "%25").replace('+', "%2B").replace(' ', "%20");
    }
    q
}

/// An RFC 3339 time in the reader's time zone, to the millisecond.
fn local(time: &Value) -> String {
    let text = time.as_str().unwrap_or_default();
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        Err(_) => text.to_owned(),
    }
}

/// Microseconds for people: `850 µs`, `1.2 ms`, `1.50 s`.
pub(crate) fn latency(us: u64) -> String {
    match us {
        0..1000 => format!("{us} µs"),
        1000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// One log entry as a line for people.
fn entry_line(e: &Value, hosts: bool) -> String {
    let mut line = format!("{}  v{}  {}  ", local(&e["time"]), e["version"], e["request_id"].as_str().unwrap_or(""));
    match e["kind"].as_str() {
        Some("invocation") => {
            line += &format!(
                "{}  model {}  overhead {}  {} in, {} out",
                e["status"],
                latency(e["model_us"].as_u64().unwrap_or(0)),
                latency(e["overhead_us"].as_u64().unwrap_or(0)),
                indicatif::HumanBytes(e["bytes_in"].as_u64().unwrap_or(0)),
                indicatif::HumanBytes(e["bytes_out"].as_u64().unwrap_or(0)),
            );
            if e["cold"] == true {
                line += "  cold start";
            }
            if let Some(code) = e["error"].as_str() {
                line += &format!("  ({code})");
            }
        }
        Some(stream) => line += &format!("{stream}: {}", e["line"].as_str().unwrap_or("")),
        None => line += &e.to_string(),
    }
    if hosts {
        line += &format!("  @{}", e["host"].as_str().unwrap_or(""));
    }
    line
}

/// One event as a line for people.
fn event_line(e: &Value, hosts: bool) -> String {
    let version = e["version"].as_u64().map_or_else(|| "-".to_owned(), |v| format!("v{v}"));
    let mut line = format!(
        "{}  {:<18} {:<4} {}",
        local(&e["time"]),
        e["kind"].as_str().unwrap_or(""),
        version,
        e["message"].as_str().unwrap_or("")
    );
    if hosts {
        line += &format!("  @{}", e["host"].as_str().unwrap_or(""));
    }
    line
}

/// Whether the server is one of several hosts (then lines name theirs).
fn cluster(client: &Client) -> bool {
    let hosts = client.get("/v1/hosts").ok().and_then(|a| serde_json::from_slice::<Value>(&a.body).ok());
    hosts.is_some_and(|h| h["cluster"] == true)
}

fn print(out: &mut impl Write, record: &Value, json: bool, line: impl Fn(&Value) -> String) -> std::io::Result<()> {
    match json {
        true => writeln!(out, "{record}"),
        false => writeln!(out, "{}", line(record)),
    }
}

fn note_truncated(answer: &Value, shown: usize) {
    if answer["truncated"] == true {
        eprintln!("(the newest {shown} shown; older ones exist: --limit or --since for more)");
    }
    if let Some(missing) = answer["missing_hosts"].as_array() {
        eprintln!("(not answered by {} host(s): {})", missing.len(), Value::Array(missing.clone()));
    }
}

pub(crate) fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection);
    let hosts = !args.json && cluster(&client);
    let mut path = format!("/v1/functions/{}/logs?{}", args.name, query(args.since.as_deref(), args.limit));
    if let Some(r) = &args.request {
        path += &format!("&request={r}");
    }
    let line = |e: &Value| entry_line(e, hosts);
    let mut out = std::io::stdout().lock();
    if !args.follow {
        let answer: Value = serde_json::from_slice(&client.get(&path)?.body)?;
        let entries = answer["entries"].as_array().cloned().unwrap_or_default();
        for e in &entries {
            print(&mut out, e, args.json, line)?;
        }
        note_truncated(&answer, entries.len());
        return Ok(());
    }
    let stream = client.get_stream(&(path + "&follow=true"))?;
    for sse_line in stream.lines() {
        let sse_line = sse_line.context("reading the followed log")?;
        if let Some(data) = sse_line.strip_prefix("data: ").filter(|d| d.starts_with('{')) {
            let entry: Value = serde_json::from_str(data)?;
            print(&mut out, &entry, args.json, line)?;
            out.flush()?;
        }
    }
    Err(ClientError { message: "the server closed the log stream".into(), exit: super::Exit::Unreachable }.into())
}

pub(crate) fn events(args: EventsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection);
    let hosts = !args.json && cluster(&client);
    let path = format!("/v1/functions/{}/events?{}", args.name, query(args.since.as_deref(), args.limit));
    let answer: Value = serde_json::from_slice(&client.get(&path)?.body)?;
    let events = answer["events"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    for e in &events {
        print(&mut out, e, args.json, |e| event_line(e, hosts))?;
    }
    note_truncated(&answer, events.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_read_in_their_unit() {
        assert_eq!(latency(850), "850 µs");
        assert_eq!(latency(1234), "1.2 ms");
        assert_eq!(latency(1_500_000), "1.50 s");
    }

    #[test]
    fn an_invocation_reads_as_one_line() {
        let e = serde_json::json!({
            "time": "2026-11-26T22:13:23.123Z", "version": 2, "request_id": "ab12", "kind": "invocation",
            "status": 429, "model_us": 0, "overhead_us": 1500, "cold": false, "bytes_in": 40, "bytes_out": 2048,
            "error": "throttled", "host": "http://h:1"
        });
        let line = entry_line(&e, true);
        assert!(line.contains("v2  ab12  429  model 0 µs  overhead 1.5 ms  40 B in, 2.00 KiB out"), "{line}");
        assert!(line.ends_with("(throttled)  @http://h:1"), "{line}");
        assert_eq!(query(Some("2026-11-26T10:00:00+01:00"), 5), "limit=5&since=2026-11-26T10:00:00%2B01:00");
    }
}

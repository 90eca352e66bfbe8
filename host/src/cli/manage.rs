//! `nimbus invoke`, `list`, `describe`, `delete`: thin commands over the
//! HTTP API, human tables by default and `--json` for scripts.

use super::client::{Client, Connection};
use crate::api::PAGE_MAX;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub(crate) struct InvokeArgs {
    /// The function.
    name: String,
    /// The request body: TEXT, @FILE, or @- for stdin.
    #[arg(long)]
    data: String,
    /// The request's Content-Type.
    #[arg(long, default_value = "application/json")]
    content_type: String,
    /// The request's Accept.
    #[arg(long, default_value = "*/*")]
    accept: String,
    /// Serve it with this version (default: `live`, split by weight).
    #[arg(long, conflicts_with = "alias")]
    version: Option<u64>,
    /// Serve it with the version this alias names.
    #[arg(long)]
    alias: Option<String>,
    #[command(flatten)]
    connection: Connection,
    /// Print status, headers and body as JSON instead of the raw body.
    #[arg(long)]
    json: bool,
}

pub(crate) fn invoke(args: InvokeArgs) -> anyhow::Result<()> {
    let body = super::read_data(&args.data)?;
    let client = Client::new(&args.connection);
    let target = match (args.version, &args.alias) {
        (Some(v), _) => format!("?version={v}"),
        (None, Some(a)) => format!("?alias={a}"),
        (None, None) => String::new(),
    };
    let path = format!("/v1/functions/{}/invocations{target}", args.name);
    let answer = client.post(&path, &args.content_type, &args.accept, &body)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let header = |n: &str| answer.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let out = serde_json::json!({
            "status": answer.status,
            "content_type": header("content-type"),
            "request_id": header(crate::api::REQUEST_ID),
            "version": header(crate::api::VERSION).parse::<u64>().ok(),
            "model_latency_us": header(crate::api::MODEL_LATENCY).parse::<u64>().ok(),
            "overhead_latency_us": header(crate::api::OVERHEAD_LATENCY).parse::<u64>().ok(),
            "body": String::from_utf8_lossy(&answer.body),
        });
        writeln!(stdout, "{out}")?;
    } else {
        stdout.write_all(&answer.body)?;
        if !answer.body.ends_with(b"\n") {
            writeln!(stdout)?;
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    connection: Connection,
    /// Functions fetched per request (1..1000); every page is listed.
    #[arg(long, default_value_t = PAGE_MAX, value_parser = clap::value_parser!(u16).range(1..=i64::from(PAGE_MAX)))]
    page_size: u16,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn field<'a>(v: &'a serde_json::Value, path: &[&str]) -> &'a serde_json::Value {
    path.iter().fold(v, |v, k| &v[*k])
}

pub(crate) fn list(args: ListArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection);
    // The server pages; the listing follows every page. Names are letters,
    // digits and hyphens, so the cursor needs no escaping.
    let mut functions = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after.as_ref().map_or(String::new(), |a| format!("&after={a}"));
        let answer = client.get(&format!("/v1/functions?limit={}{cursor}", args.page_size))?;
        let mut page: serde_json::Value = serde_json::from_slice(&answer.body)?;
        functions.extend(page["functions"].as_array_mut().map(std::mem::take).unwrap_or_default());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    // One buffered writer: stdout alone flushes at every newline.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        serde_json::to_writer(&mut out, &serde_json::json!({ "functions": functions }))?;
        writeln!(out)?;
        return Ok(out.flush()?);
    }
    writeln!(
        out,
        "{:<24} {:>7} {:>8} {:>8} {:>12} {:>6} {:>6}",
        "NAME", "VERSION", "MEMORY", "MAXCONC", "INVOCATIONS", "4XX", "5XX"
    )?;
    for f in &functions {
        writeln!(
            out,
            "{:<24} {:>7} {:>8} {:>8} {:>12} {:>6} {:>6}",
            f["name"].as_str().unwrap_or(""),
            f["version"].to_string(),
            field(f, &["config", "memory_mb"]).to_string(),
            field(f, &["config", "max_concurrency"]).to_string(),
            f["invocations"].to_string(),
            f["errors_4xx"].to_string(),
            f["errors_5xx"].to_string()
        )?;
    }
    Ok(out.flush()?)
}

#[derive(Debug, clap::Args)]
pub(crate) struct NameArgs {
    /// The function.
    name: String,
    #[command(flatten)]
    connection: Connection,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn describe(args: NameArgs) -> anyhow::Result<()> {
    let answer = Client::new(&args.connection).get(&format!("/v1/functions/{}", args.name))?;
    if args.json {
        println!("{}", String::from_utf8_lossy(&answer.body));
        return Ok(());
    }
    let f: serde_json::Value = serde_json::from_slice(&answer.body)?;
    println!("name:             {}", f["name"].as_str().unwrap_or(""));
    println!("live version:     {} ({} kept; `nimbus versions` lists them)", f["version"], f["versions_kept"]);
    let aliases: Vec<String> =
        f["aliases"].as_object().into_iter().flatten().map(|(a, v)| format!("{a}={v}")).collect();
    println!("aliases:          {}", aliases.join(" "));
    let split: Vec<String> = f["traffic"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| format!("version {} {}%", w["version"], w["percent"]))
        .collect();
    println!("traffic:          {}", split.join(", "));
    if let Some(c) = f["canary"].as_object() {
        println!("{}", super::canary_line(c));
    }
    println!("state:            {}", f["state"].as_str().unwrap_or(""));
    let config = |key: &str| field(&f, &["config", key]).as_u64().unwrap_or(0);
    println!("memory:           {} MB", config("memory_mb"));
    println!("concurrency:      max {}, provisioned {}", config("max_concurrency"), config("provisioned_concurrency"));
    println!("timeout:          {} s", config("timeout_s"));
    println!("payload limit:    {}", super::size(config("payload_limit_bytes")));
    let batching = field(&f, &["config", "batching"]);
    if batching.is_object() {
        let rows = batching["max_batch_size"].as_u64().unwrap_or(0);
        let delay = super::logs::latency(batching["max_delay_us"].as_u64().unwrap_or(0));
        println!("batching:         up to {rows} rows per model run; a partial batch waits at most {delay}");
    } else {
        println!("batching:         off");
    }
    let short = |digest: &serde_json::Value| digest.as_str().unwrap_or("").chars().take(12).collect::<String>();
    let handler = if f["builtin"] == true {
        format!("built-in (model only; /v2/models/{}/infer)", args.name)
    } else {
        String::new()
    };
    println!("handler:          {} {} {handler}", short(&f["wasm"]), super::size(f["wasm_size"].as_u64().unwrap_or(0)));
    for a in f["artifacts"].as_array().into_iter().flatten() {
        println!(
            "artifact:         {} {} {}",
            a["path"].as_str().unwrap_or(""),
            super::size(a["size"].as_u64().unwrap_or(0)),
            short(&a["digest"])
        );
    }
    for (graph, s) in f["graphs"].as_object().into_iter().flatten() {
        let ports = |side: &str| -> Vec<String> {
            let port = |p: &serde_json::Value| {
                let dims: Vec<String> = p["shape"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| if d == -1 { "?".to_owned() } else { d.to_string() })
                    .collect();
                format!(
                    "{} {}[{}]",
                    p["name"].as_str().unwrap_or(""),
                    p["datatype"].as_str().unwrap_or(""),
                    dims.join(",")
                )
            };
            s[side].as_array().into_iter().flatten().map(port).collect()
        };
        println!("graph:            {graph}: {} -> {}", ports("inputs").join(", "), ports("outputs").join(", "));
    }
    println!(
        "invocations:      {} (4xx {}, 5xx {}, throttled {}, cold starts {})",
        f["invocations"], f["errors_4xx"], f["errors_5xx"], f["throttles"], f["cold_starts"]
    );
    let i = &f["instances"];
    println!(
        "instances:        {} warm, {} busy; {} sessions, {} of models",
        i["warm_instances"],
        i["busy_instances"],
        i["sessions"],
        super::size(i["model_memory_bytes"].as_u64().unwrap_or(0))
    );
    let l = &f["latency"];
    let us = |key: &str| super::logs::latency(l[key].as_u64().unwrap_or(0));
    println!(
        "latency:          model p50 {}, p99 {}; overhead p50 {}, p99 {} (last {} requests)",
        us("model_p50_us"),
        us("model_p99_us"),
        us("overhead_p50_us"),
        us("overhead_p99_us"),
        l["samples"]
    );
    let now = super::unix_now();
    println!("created:          {}", super::when(now, f["created_at"].as_u64().unwrap_or(0)));
    println!("live deployed:    {}", super::when(now, f["deployed_at"].as_u64().unwrap_or(0)));
    Ok(())
}

pub(crate) fn delete(args: NameArgs) -> anyhow::Result<()> {
    Client::new(&args.connection).delete(&format!("/v1/functions/{}", args.name))?;
    if args.json {
        println!("{}", serde_json::json!({ "deleted": args.name }));
    } else {
        println!("deleted `{}`", args.name);
    }
    Ok(())
}

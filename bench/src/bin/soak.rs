//! Soak: mixed load with hostile requests mixed in, for a long time, on
//! one real server. The claim it checks: hostile requests get their own
//! error (timeout, memory, trap) and nothing else changes: every other
//! request succeeds, nothing unexpected is answered, and the server's
//! memory stays flat. Under load RSS follows the large requests in flight
//! (up to a GB each), so flatness is read at quiet points: once a minute
//! the clients pause, the requests in flight finish, and RSS is read.
//!
//! Run with `make soak` (NIMBUS_SOAK_SECONDS, default 600; NIMBUS_SOAK_CLIENTS,
//! default 8). Writes docs/benchmarks/soak.md and soak.json.

use nimbus_bench::root;
use nimbus_bench::stats::Summary;
use nimbus_tests::{Server, hostile_model, wasm};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One kind of request: where it goes, what it sends, what must come back.
struct Kind {
    name: &'static str,
    function: &'static str,
    content_type: &'static str,
    body: String,
    status: u16,
    code: &'static str,
    weight: u32,
}

fn kinds() -> Vec<Kind> {
    let digits = std::fs::read_to_string(root().join("examples/digits/sample.csv")).unwrap();
    let row = digits.lines().next().unwrap().to_owned();
    let kind = |name, function, content_type, body: &str, status, code, weight| Kind {
        name,
        function,
        content_type,
        body: body.to_owned(),
        status,
        code,
        weight,
    };
    vec![
        kind("digits", "digits", "text/csv", &row, 200, "", 40),
        kind(
            "sentiment",
            "sentiment",
            "application/jsonlines",
            r#"{"features": ["I love this product!"]}"#,
            200,
            "",
            30,
        ),
        kind("wasi sleep past timeout", "h", "text/plain", "sleep:5000", 504, "timeout", 2),
        kind("cpu loop", "h", "text/plain", "loop", 504, "timeout", 2),
        kind("guest memory over tier", "h", "text/plain", "alloc:1500", 500, "memory_exceeded", 4),
        kind("host tensors over tier", "big", "text/plain", "tensors:20:100", 500, "memory_exceeded", 4),
        kind("trap", "h", "text/plain", "trap", 500, "handler_trapped", 4),
        kind("ConstantOfShape 40 GB", "cos", "text/plain", "cos:10000000000", 500, "memory_exceeded", 4),
        kind("endless Loop model", "spin", "text/plain", "spin", 504, "timeout", 2),
    ]
}

/// The kind whose share of the total weight holds `n`.
fn pick(kinds: &[Kind], mut n: u32) -> &Kind {
    for k in kinds {
        if n < k.weight {
            return k;
        }
        n -= k.weight;
    }
    kinds.last().expect("kinds")
}

#[derive(Default, Serialize)]
struct Tally {
    requests: u64,
    unexpected: u64,
    examples: Vec<String>,
    #[serde(skip)]
    latencies_ms: Vec<f64>,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Serialize)]
struct Report {
    seconds: u64,
    clients: usize,
    kinds: BTreeMap<&'static str, Tally>,
    rss_mib: Vec<(u64, u64)>,
    rss_after_warmup_mib: u64,
    rss_end_mib: u64,
    rss_max_mib: u64,
    /// (seconds, MiB) with no request in flight, once a minute.
    rss_quiet_mib: Vec<(u64, u64)>,
}

/// How often the clients pause so RSS can be read with nothing in flight.
const QUIET_EVERY: Duration = Duration::from_secs(60);

fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let seconds: u64 = env("NIMBUS_SOAK_SECONDS", 600);
    let clients: usize = env("NIMBUS_SOAK_CLIENTS", 8);
    wasm("hostile");
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(Server::start(dir.path(), &[]));
    server.deploy("digits", "digits", "digits", &["--memory", "1024"]);
    server.deploy("sentiment", "sentiment", "sentiment", &[]);
    server.deploy("h", "hostile", "digits", &["--memory", "1024", "--timeout", "2"]);
    // Copying a gigabyte of tensors takes longer than h's 2 s on a busy host.
    server.deploy("big", "hostile", "digits", &["--memory", "1024", "--timeout", "30"]);
    for (name, case, extra) in [("cos", "constant-of-shape", "1024"), ("spin", "loop-forever", "1024")] {
        let out = server.try_deploy(name, "hostile", &hostile_model(case), &["--memory", extra, "--timeout", "2"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    let kinds = Arc::new(kinds());
    let total: u32 = kinds.iter().map(|k| k.weight).sum();
    let tallies: Arc<Mutex<BTreeMap<&'static str, Tally>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // Clients hold a read guard per request; a quiet point takes the write
    // guard, so it waits for requests in flight and holds new ones back.
    let gate: Arc<std::sync::RwLock<()>> = Arc::default();
    let start = Instant::now();
    eprintln!("soak: {clients} clients for {seconds} s");
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (server, kinds, tallies, stop, gate) =
                (server.clone(), kinds.clone(), tallies.clone(), stop.clone(), gate.clone());
            std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let kind = pick(&kinds, (seed % u64::from(total)) as u32);
                    let open = gate.read().unwrap();
                    let began = Instant::now();
                    let path = format!("/v1/functions/{}/invocations", kind.function);
                    let a =
                        server.http("POST", &path, None, &[("content-type", kind.content_type)], kind.body.as_bytes());
                    let ms = began.elapsed().as_secs_f64() * 1e3;
                    drop(open);
                    let ok = a.status == kind.status && (kind.code.is_empty() || a.body.contains(kind.code));
                    let mut t = tallies.lock().unwrap();
                    let tally = t.entry(kind.name).or_default();
                    tally.requests += 1;
                    tally.latencies_ms.push(ms);
                    if !ok {
                        tally.unexpected += 1;
                        if tally.examples.len() < 5 {
                            tally.examples.push(format!(
                                "{} {}",
                                a.status,
                                a.body.chars().take(200).collect::<String>()
                            ));
                        }
                    }
                }
            })
        })
        .collect();
    let mut rss = Vec::new();
    let mut quiet = Vec::new();
    let mut next_quiet = QUIET_EVERY;
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        rss.push((start.elapsed().as_secs(), server.rss_mib()));
        if start.elapsed() >= next_quiet {
            let closed = gate.write().unwrap();
            std::thread::sleep(Duration::from_secs(1));
            quiet.push((start.elapsed().as_secs(), server.rss_mib()));
            drop(closed);
            next_quiet += QUIET_EVERY;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let mut kinds_out = std::mem::take(&mut *tallies.lock().unwrap());
    for t in kinds_out.values_mut() {
        let s = Summary::of(&t.latencies_ms);
        (t.p50_ms, t.p99_ms) = (s.median, s.p99);
    }
    let warm = seconds.min(60);
    let after_warmup = rss.iter().find(|(t, _)| *t >= warm).map_or(0, |r| r.1);
    let report = Report {
        seconds,
        clients,
        rss_after_warmup_mib: after_warmup,
        rss_end_mib: rss.last().map_or(0, |r| r.1),
        rss_max_mib: rss.iter().map(|r| r.1).max().unwrap_or(0),
        rss_mib: rss,
        rss_quiet_mib: quiet,
        kinds: kinds_out,
    };
    write(&report);
    let unexpected: u64 = report.kinds.values().map(|t| t.unexpected).sum();
    assert_eq!(unexpected, 0, "unexpected answers: see docs/benchmarks/soak.md");
    if let (Some(first), Some(last)) = (report.rss_quiet_mib.first(), report.rss_quiet_mib.last()) {
        let bound = (first.1 * 3 / 2).max(first.1 + 200);
        assert!(last.1 <= bound, "quiet RSS grew from {} to {} MiB: see docs/benchmarks/soak.md", first.1, last.1);
    }
}

fn write(r: &Report) {
    let out = root().join("docs/benchmarks");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("soak.json"), serde_json::to_string_pretty(r).unwrap()).unwrap();
    let mut md = format!(
        "# Soak: {} s, {} clients, hostile requests mixed in\n\n\
         | request | count | unexpected | p50 ms | p99 ms |\n|---|---|---|---|---|\n",
        r.seconds, r.clients
    );
    for (name, t) in &r.kinds {
        md.push_str(&format!("| {name} | {} | {} | {:.1} | {:.1} |\n", t.requests, t.unexpected, t.p50_ms, t.p99_ms));
    }
    md.push_str(&format!(
        "\nServer RSS: {} MiB after {} s of warm-up, {} MiB at the end, {} MiB at most.\n",
        r.rss_after_warmup_mib,
        r.seconds.min(60),
        r.rss_end_mib,
        r.rss_max_mib
    ));
    let quiet: Vec<String> = r.rss_quiet_mib.iter().map(|(t, m)| format!("{m} ({t} s)")).collect();
    md.push_str(&format!(
        "\nServer RSS with nothing in flight, once a minute (MiB): {}.\n",
        if quiet.is_empty() { "none (run under a minute)".to_owned() } else { quiet.join(", ") }
    ));
    for (name, t) in r.kinds.iter().filter(|(_, t)| !t.examples.is_empty()) {
        md.push_str(&format!("\nUnexpected answers to {name}: {:?}\n", t.examples));
    }
    std::fs::write(out.join("soak.md"), md).unwrap();
    println!("{}", std::fs::read_to_string(out.join("soak.md")).unwrap());
}

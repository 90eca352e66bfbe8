//! Many functions on one host: what 10,000 deployed functions cost while
//! they sit at zero, and how fast a restart serves again. The claims it
//! checks (issue 17): RSS at zero under 300 MB; restart to `/healthz` and to
//! a first successful invocation under 2 s; `nimbus list` of every function
//! under 1 s; first requests to 100 different functions at once all
//! answered, none with a 5xx.
//!
//! The functions are copies of digits. The first deploy loads and measures
//! it; the others reuse that (same handler, artifacts and environment), so
//! deploying 10,000 takes seconds, not the ~25 minutes of loading each.
//!
//! Run with `make bench-many` (NIMBUS_MANY_FUNCTIONS, default 10000;
//! NIMBUS_MANY_BURST, default 100). Writes docs/benchmarks/many.md and
//! many.json.

use nimbus_bench::rss::PeakRss;
use nimbus_bench::stats::Summary;
use nimbus_bench::{root, rss::rss_mib};
use nimbus_tests::{Server, nimbus_bin, wasm};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
struct Report {
    functions: usize,
    deploy_first_ms: f64,
    deploy_rest_s: f64,
    deploys_per_s: f64,
    rss_at_zero_mib: f64,
    list_json_ms: f64,
    list_table_ms: f64,
    restart_healthz_ms: f64,
    restart_first_invoke_ms: f64,
    rss_after_restart_mib: f64,
    burst: Burst,
}

#[derive(Debug, Serialize)]
struct Burst {
    functions: usize,
    statuses: BTreeMap<u16, usize>,
    latency_ms: Summary,
    max_ms: f64,
    peak_rss_mib: f64,
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn name(i: usize) -> String {
    format!("fn-{i:05}")
}

fn main() {
    let n = env("NIMBUS_MANY_FUNCTIONS", 10_000).max(2);
    let burst = env("NIMBUS_MANY_BURST", 100).min(n);
    wasm("digits");
    let data = tempfile::tempdir().unwrap();
    let flags = ["--idle-timeout", "2"];
    let mut server = Server::start(data.path(), &flags);

    let start = Instant::now();
    let out = server.deploy(&name(0), "digits", "digits", &["--max-concurrency", "1"]);
    assert!(out.status.success(), "first deploy: {}", String::from_utf8_lossy(&out.stderr));
    let deploy_first_ms = ms(start.elapsed());
    let bundle = bundle_of(&server, &name(0));
    let start = Instant::now();
    deploy_copies(&server, &bundle, 1..n);
    let deploy_rest_s = start.elapsed().as_secs_f64();
    eprintln!("{n} functions deployed ({:.1} s for {} copies)", deploy_rest_s, n - 1);

    let zero = Server::wait_until(Duration::from_secs(60), || state(&server, &name(0)) == "scaled-to-zero");
    assert!(zero, "the first function did not scale to zero");
    let rss_at_zero_mib = rss_mib(server.pid());
    let (list_json_ms, out) = timed(|| server.cli(&["list", "--json"]));
    assert_eq!(listed(&out), n, "`nimbus list --json` lists every function");
    let (list_table_ms, lines) = timed(|| {
        let out = server.cli(&["list"]);
        assert!(out.status.success());
        out.stdout.iter().filter(|&&b| b == b'\n').count()
    });
    assert_eq!(lines, n + 1, "`nimbus list` prints a header and every function");

    assert!(server.terminate(Duration::from_secs(30)).is_some(), "SIGTERM did not stop the server");
    let start = Instant::now();
    let server = Server::start(data.path(), &flags);
    let ok =
        Server::wait_until(Duration::from_secs(30), || server.http("GET", "/healthz", None, &[], b"").status == 200);
    assert!(ok, "no /healthz after restart");
    let restart_healthz_ms = ms(start.elapsed());
    let answer = server.invoke(&name(n / 2), "text/csv", &sample());
    assert_eq!(answer.status, 200, "first invocation after restart: {}", answer.body);
    let restart_first_invoke_ms = ms(start.elapsed());
    let rss_after_restart_mib = rss_mib(server.pid());

    let burst = first_requests(&server, n, burst);
    let report = Report {
        functions: n,
        deploy_first_ms,
        deploy_rest_s,
        deploys_per_s: (n - 1) as f64 / deploy_rest_s,
        rss_at_zero_mib,
        list_json_ms,
        list_table_ms,
        restart_healthz_ms,
        restart_first_invoke_ms,
        rss_after_restart_mib,
        burst,
    };
    write(&report);
    assert!(
        report.burst.statuses.keys().all(|&s| s == 200),
        "every first request is answered: {:?}",
        report.burst.statuses
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let start = Instant::now();
    let out = f();
    (ms(start.elapsed()), out)
}

fn sample() -> String {
    let csv = std::fs::read_to_string(root().join("examples/digits/sample.csv")).unwrap();
    csv.lines().next().unwrap().to_owned()
}

/// The deploy manifest of `name` as stored: its blobs are on the server,
/// so copies upload nothing.
fn bundle_of(server: &Server, name: &str) -> Vec<u8> {
    let record = server.http("GET", &format!("/v1/functions/{name}"), Some(&server.token), &[], b"").body;
    let r: serde_json::Value = serde_json::from_str(&record).unwrap();
    serde_json::to_vec(&serde_json::json!({"wasm": r["wasm"], "artifacts": r["artifacts"], "config": r["config"]}))
        .unwrap()
}

/// Deploys `bundle` under the names in `range`, from four clients.
fn deploy_copies(server: &Server, bundle: &[u8], range: std::ops::Range<usize>) {
    let clients = 4;
    std::thread::scope(|s| {
        for c in 0..clients {
            let range = range.clone();
            s.spawn(move || {
                for i in range.filter(|i| i % clients == c) {
                    let path = format!("/v1/functions/{}", name(i));
                    let headers = [("content-type", "application/json")];
                    let answer = server.http("PUT", &path, Some(&server.token), &headers, bundle);
                    assert!(answer.status < 300, "deploy {}: {}", name(i), answer.body);
                    if i % 1000 == 0 {
                        eprintln!("  {i} deployed");
                    }
                }
            });
        }
    });
}

fn state(server: &Server, name: &str) -> String {
    let body = server.http("GET", &format!("/v1/functions/{name}"), Some(&server.token), &[], b"").body;
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["state"].as_str().unwrap_or("").to_owned()
}

/// How many functions `nimbus list --json` printed.
fn listed(out: &std::process::Output) -> usize {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["functions"].as_array().map_or(0, Vec::len)
}

/// The first request to each of `count` different functions (spread over
/// all `n`), all at once: every one is a cold start.
fn first_requests(server: &Server, n: usize, count: usize) -> Burst {
    let body = sample();
    let peak = PeakRss::start(server.pid());
    let barrier = std::sync::Barrier::new(count);
    let answers: Vec<(u16, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..count)
            .map(|k| {
                let (barrier, body) = (&barrier, &body);
                s.spawn(move || {
                    let target = name(1 + k * (n - 1) / count);
                    barrier.wait();
                    let start = Instant::now();
                    let answer = server.invoke(&target, "text/csv", body);
                    if answer.status != 200 {
                        eprintln!("{target}: {} {}", answer.status, answer.body);
                    }
                    (answer.status, ms(start.elapsed()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let peak_rss_mib = peak.finish();
    let mut statuses = BTreeMap::new();
    for (status, _) in &answers {
        *statuses.entry(*status).or_default() += 1;
    }
    let latencies: Vec<f64> = answers.iter().map(|a| a.1).collect();
    Burst {
        functions: count,
        statuses,
        latency_ms: Summary::of(&latencies),
        max_ms: latencies.iter().copied().fold(0.0, f64::max),
        peak_rss_mib,
    }
}

fn write(r: &Report) {
    let out = root().join("docs/benchmarks");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("many.json"), serde_json::to_string_pretty(r).unwrap()).unwrap();
    let b = &r.burst;
    let statuses: Vec<String> = b.statuses.iter().map(|(s, c)| format!("{c} x {s}")).collect();
    let md = format!(
        "# {n} functions on one host\n\n\
         Copies of digits (`--max-concurrency 1`), server `--idle-timeout 2`, `{bin} serve` on loopback.\n\n\
         | measure | result | goal |\n|---|---|---|\n\
         | first deploy (loads and measures digits) | {:.0} ms | |\n\
         | {} more deploys of the same code and model (4 clients) | {:.1} s ({:.0} deploys/s) | |\n\
         | RSS with {n} functions at zero | {:.0} MiB | < 300 MiB |\n\
         | `nimbus list --json` ({n} functions, 1000 a page) | {:.0} ms | < 1 s |\n\
         | `nimbus list` (table) | {:.0} ms | < 1 s |\n\
         | restart (SIGTERM, start) to `/healthz` | {:.0} ms | < 2 s |\n\
         | restart to the first successful invocation | {:.0} ms | < 2 s |\n\
         | RSS after the restart | {:.0} MiB | |\n\
         | first requests to {} functions at once | {} | all 200 |\n\
         | their latency (cold starts, 2 cores) | p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms | |\n\
         | peak RSS during that burst | {:.0} MiB | |\n",
        r.deploy_first_ms,
        r.functions - 1,
        r.deploy_rest_s,
        r.deploys_per_s,
        r.rss_at_zero_mib,
        r.list_json_ms,
        r.list_table_ms,
        r.restart_healthz_ms,
        r.restart_first_invoke_ms,
        r.rss_after_restart_mib,
        b.functions,
        statuses.join(", "),
        b.latency_ms.median,
        b.latency_ms.p99,
        b.max_ms,
        b.peak_rss_mib,
        n = r.functions,
        bin = nimbus_bin().file_name().unwrap().to_string_lossy(),
    );
    std::fs::write(out.join("many.md"), &md).unwrap();
    println!("{md}");
}

//! Throughput in one run: dynamic batching on and off against native `ort`
//! and the Python server on the larger models, and the platform's own cost
//! per request on the small ones.
//!
//! - vision and sentiment at 1, 4, 16, 64 clients: native (in process, the
//!   floor), Python (one worker, as `compare`), Nimbus without batching and
//!   Nimbus with `--max-batch-size 16 --max-batch-delay-us 2000`;
//! - digits (a random forest behind its handler) and gbm (LightGBM exported
//!   by onnxmltools, a model-only deploy over the Open Inference Protocol)
//!   at 1 and 16 clients: native, Python with as many uvicorn workers as
//!   cores, Nimbus. Overhead = Nimbus p50 - native p50. Beside them the
//!   HTTP floor: oha getting Nimbus's `/healthz` (no work behind it), so
//!   what the platform adds beyond HTTP on this machine can be read off.
//!
//! Run with `make bench` (or `make bench-batching`). Knobs as `compare`:
//! NIMBUS_BENCH_SECONDS (3), NIMBUS_BENCH_REPEATS (3). Writes
//! docs/benchmarks/batching.md and batching.json.

use nimbus::runtime::FunctionSpec;
use nimbus_bench::load::{Run, oha_get, oha_run};
use nimbus_bench::native::Sessions;
use nimbus_bench::peers::{Nimbus, Python, invocations, post};
use nimbus_bench::root;
use nimbus_bench::stats::Summary;
use nimbus_bench::workload::Workload;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

const BATCHED: [&str; 4] = ["--max-batch-size", "16", "--max-batch-delay-us", "2000"];
const UNTHROTTLED: [&str; 4] = ["--max-concurrency", "64", "--queue-timeout-ms", "60000"];

fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One (model, peer, clients) cell and its repeated runs.
#[derive(Serialize)]
struct Cell {
    model: &'static str,
    peer: String,
    clients: usize,
    runs: Vec<Run>,
}

impl Cell {
    fn median(&self, f: fn(&Run) -> f64) -> f64 {
        Summary::of(&self.runs.iter().map(f).collect::<Vec<_>>()).median
    }
    fn rps(&self) -> f64 {
        self.median(|r| r.requests_per_s)
    }
    fn p50(&self) -> f64 {
        self.median(|r| r.p50_ms)
    }
    fn p99(&self) -> f64 {
        self.median(|r| r.p99_ms)
    }
    fn failed(&self) -> u64 {
        self.runs.iter().map(|r| r.failed).sum()
    }
}

#[derive(Serialize, Default)]
struct Results {
    seconds: f64,
    repeats: usize,
    cores: usize,
    cells: Vec<Cell>,
    /// (function, batches, callers) from /metrics after the runs.
    batches: Vec<(String, f64, f64)>,
}

/// Where a peer is reached, and how.
enum Peer<'a> {
    Native(&'a Sessions),
    Http(String),
    /// Gets a URL that answers without work.
    Floor(String),
}

fn main() {
    nimbus::nn::init().expect("ONNX Runtime: run `make build`");
    let seconds: f64 = env("NIMBUS_BENCH_SECONDS", 3.0);
    let repeats: usize = env("NIMBUS_BENCH_REPEATS", 3);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let duration = Duration::from_secs_f64(seconds);
    let mut results = Results { seconds, repeats, cores, ..Results::default() };
    let threads = FunctionSpec::default().memory.threads();
    let sessions = threads.min(cores);

    let data = tempfile::tempdir().unwrap();
    let nimbus = Nimbus::start(data.path(), &[]);
    let large = [Workload::named("vision"), Workload::named("sentiment")];
    for w in &large {
        nimbus.deploy(w.name, w.name, w.name, &UNTHROTTLED);
        let batched = format!("{}-batched", w.name);
        nimbus.deploy(&batched, w.name, w.name, &[&UNTHROTTLED[..], &BATCHED[..]].concat());
        for name in [w.name, batched.as_str()] {
            assert_eq!(post(&invocations(&nimbus, name), w).map(|a| a.0), Some(200), "{name} answers");
        }
    }
    for w in &large {
        eprintln!("== {}: batching on and off", w.name);
        let native = Sessions::new(w, threads, sessions);
        let python = Python::spawn(w, 1);
        python.ready(w, Duration::from_secs(120));
        let peers = [
            ("native", Peer::Native(&native)),
            ("python", Peer::Http(python.url.clone())),
            ("nimbus", Peer::Http(invocations(&nimbus, w.name))),
            ("nimbus batched", Peer::Http(invocations(&nimbus, &format!("{}-batched", w.name)))),
        ];
        results.cells.extend(cells(w, &peers, &[1, 4, 16, 64], duration, repeats));
        let name = format!("{}-batched", w.name);
        let batches = nimbus.metric("nimbus_batch_size_count", &name);
        results.batches.push((name.clone(), batches, nimbus.metric("nimbus_batch_size_sum", &name)));
    }

    let small = [Workload::named("digits"), Workload::named("gbm")];
    nimbus.deploy("digits", "digits", "digits", &UNTHROTTLED).status.success().then_some(()).expect("digits");
    let gbm = small[1].model_dir();
    let out = nimbus.cli(&[&["deploy", "gbm", "--model-dir", gbm.to_str().unwrap()][..], &UNTHROTTLED[..]].concat());
    assert!(out.status.success(), "deploy gbm: {}", String::from_utf8_lossy(&out.stderr));
    for w in &small {
        eprintln!("== {}: per-request cost", w.name);
        let url = match w.name {
            "gbm" => format!("{}/v2/models/gbm/infer", nimbus.url),
            name => invocations(&nimbus, name),
        };
        assert_eq!(post(&url, w).map(|a| a.0), Some(200), "{} answers", w.name);
        let native = Sessions::new(w, threads, sessions);
        let python = Python::spawn(w, cores);
        python.ready(w, Duration::from_secs(120));
        let peers = [
            ("native", Peer::Native(&native)),
            ("python", Peer::Http(python.url.clone())),
            ("nimbus", Peer::Http(url)),
            ("floor", Peer::Floor(format!("{}/healthz", nimbus.url))),
        ];
        results.cells.extend(cells(w, &peers, &[1, 16], duration, repeats));
    }
    drop(nimbus);

    let out = root().join("docs/benchmarks");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("batching.json"), serde_json::to_vec_pretty(&results).unwrap()).unwrap();
    let report = report(&results);
    std::fs::write(out.join("batching.md"), &report).unwrap();
    println!("{report}");
}

/// Every level, `repeats` times, the peers interleaved within each repeat
/// so that drift on a shared machine hits all of them alike.
fn cells(w: &Workload, peers: &[(&str, Peer)], levels: &[usize], duration: Duration, repeats: usize) -> Vec<Cell> {
    let body = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body.path(), &w.body).unwrap();
    let mut cells = Vec::new();
    for &clients in levels {
        let mut runs: Vec<Vec<Run>> = peers.iter().map(|_| Vec::new()).collect();
        for _ in 0..repeats {
            for ((_, peer), runs) in peers.iter().zip(&mut runs) {
                runs.push(match peer {
                    Peer::Native(sessions) => sessions.load(&w.body, clients, duration),
                    Peer::Http(url) => oha_run(url, w, clients, duration, body.path()),
                    Peer::Floor(url) => oha_get(url, clients, duration),
                });
            }
        }
        for ((peer, _), runs) in peers.iter().zip(runs) {
            cells.push(Cell { model: w.name, peer: (*peer).to_owned(), clients, runs });
        }
        eprintln!("   {clients} clients done");
    }
    cells
}

fn cell<'a>(r: &'a Results, model: &str, peer: &str, clients: usize) -> &'a Cell {
    r.cells.iter().find(|c| c.model == model && c.peer == peer && c.clients == clients).expect("every cell ran")
}

fn report(r: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{} s per load run, {} runs per cell, medians of the runs; {} cores; latency in ms.\n",
        r.seconds, r.repeats, r.cores
    );
    let _ = writeln!(md, "#### Batching on vs off (vision, sentiment)\n");
    let _ = writeln!(
        md,
        "| model | clients | native req/s | Python req/s | Nimbus off req/s (p50 / p99) | Nimbus batched req/s (p50 / p99) | batched / off req/s | batched / off p50 | batched / off p99 |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for model in ["vision", "sentiment"] {
        for clients in [1, 4, 16, 64] {
            let [native, python, off, on] =
                ["native", "python", "nimbus", "nimbus batched"].map(|p| cell(r, model, p, clients));
            let _ = writeln!(
                md,
                "| {model} | {clients} | {:.0} | {:.0} | {:.0} ({:.2} / {:.2}) | {:.0} ({:.2} / {:.2}) | {:.2}x | {:.2}x | {:.2}x |",
                native.rps(),
                python.rps(),
                off.rps(),
                off.p50(),
                off.p99(),
                on.rps(),
                on.p50(),
                on.p99(),
                on.rps() / off.rps(),
                on.p50() / off.p50(),
                on.p99() / off.p99(),
            );
        }
    }
    let _ = writeln!(md, "\nCallers per batched run over all levels (from `nimbus_batch_size`):\n");
    for (name, batches, callers) in &r.batches {
        let _ = writeln!(
            md,
            "- {name}: {callers:.0} calls in {batches:.0} runs, {:.2} per run",
            callers / batches.max(1.0)
        );
    }
    let _ = writeln!(md, "\n#### Per-request cost (digits, gbm; Python with {} uvicorn workers)\n", r.cores);
    let _ = writeln!(
        md,
        "| model | clients | native p50 | Python req/s (p50) | Nimbus req/s (p50 / p99) | HTTP floor req/s (p50) | Nimbus p50 − native p50 | of which beyond the floor | Nimbus / Python req/s |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for model in ["digits", "gbm"] {
        for clients in [1, 16] {
            let [native, python, nimbus, floor] =
                ["native", "python", "nimbus", "floor"].map(|p| cell(r, model, p, clients));
            let overhead = nimbus.p50() - native.p50();
            let _ = writeln!(
                md,
                "| {model} | {clients} | {:.3} | {:.0} ({:.2}) | {:.0} ({:.2} / {:.2}) | {:.0} ({:.3}) | {:.0} µs | {:.0} µs | {:.2}x |",
                native.p50(),
                python.rps(),
                python.p50(),
                nimbus.rps(),
                nimbus.p50(),
                nimbus.p99(),
                floor.rps(),
                floor.p50(),
                overhead * 1e3,
                (overhead - floor.p50()) * 1e3,
                nimbus.rps() / python.rps(),
            );
        }
    }
    let failed: u64 = r.cells.iter().map(Cell::failed).sum();
    let _ = writeln!(md, "\nFailed requests over all runs: {failed}.");
    md
}

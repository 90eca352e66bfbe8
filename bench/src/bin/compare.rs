//! Nimbus against what a user would pick instead, on the same models and
//! request bytes, in one run: native `ort` in process (the floor), the
//! Python model server (onnxruntime + FastAPI on uvicorn, one model per
//! process), and `nimbus serve`, both over loopback HTTP driven by `oha`.
//!
//! Run with `make bench`. Knobs: NIMBUS_BENCH_SECONDS (per load run, 3),
//! NIMBUS_BENCH_REPEATS (runs per cell, 3), NIMBUS_BENCH_FUNCTIONS
//! (deployed-function counts for the memory figure, "10,100,1000").
//! Writes docs/benchmarks/compare.md, compare.json and the PNG plots.

use nimbus::runtime::FunctionSpec;
use nimbus_bench::load::{Run, oha_run};
use nimbus_bench::native::Sessions;
use nimbus_bench::peers::{Nimbus, Python, invocations, post};
use nimbus_bench::plot::{self, Bar, Curve, Panel};
use nimbus_bench::root;
use nimbus_bench::rss::{PeakRss, rss_mib};
use nimbus_bench::stats::{Summary, ratio};
use nimbus_bench::workload::Workload;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const LEVELS: [usize; 4] = [1, 4, 16, 64];
const PEERS: [&str; 3] = ["native", "python", "nimbus"];

fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One (model, peer, concurrency) cell and its repeated runs.
#[derive(Serialize)]
struct Cell {
    model: &'static str,
    peer: &'static str,
    concurrency: usize,
    runs: Vec<Run>,
}

impl Cell {
    fn rps(&self) -> Summary {
        Summary::of(&self.runs.iter().map(|r| r.requests_per_s).collect::<Vec<_>>())
    }
    /// Fastest request of all runs, median of the runs' p50 and p99.
    fn latency(&self) -> Summary {
        let median = |f: fn(&Run) -> f64| Summary::of(&self.runs.iter().map(f).collect::<Vec<_>>()).median;
        Summary {
            min: self.runs.iter().map(|r| r.fastest_ms).fold(f64::MAX, f64::min),
            median: median(|r| r.p50_ms),
            p99: median(|r| r.p99_ms),
        }
    }
    fn failed(&self) -> u64 {
        self.runs.iter().map(|r| r.failed).sum()
    }
}

#[derive(Serialize, Default)]
struct Memory {
    /// Per model: the Python process idle after loading, and its peak under load (MiB).
    python: Vec<(&'static str, f64, f64)>,
    /// Nimbus with the examples deployed and warm, idle and peak under all loads (MiB).
    nimbus_idle: f64,
    nimbus_peak: f64,
    /// (N digits functions deployed, Nimbus RSS once they scaled to zero).
    nimbus_functions: Vec<(usize, f64)>,
    /// (N digits processes, measured total RSS) for Python.
    python_functions: Vec<(usize, f64)>,
}

#[derive(Serialize, Default)]
struct Results {
    seconds: f64,
    repeats: usize,
    cells: Vec<Cell>,
    cold: Vec<(&'static str, &'static str, Vec<f64>)>,
    memory: Memory,
}

fn main() {
    nimbus::nn::init().expect("ONNX Runtime: run `make build`");
    plot::init_fonts().expect("fonts for the plots");
    let seconds: f64 = env("NIMBUS_BENCH_SECONDS", 3.0);
    let repeats: usize = env("NIMBUS_BENCH_REPEATS", 3);
    let counts: Vec<usize> = env("NIMBUS_BENCH_FUNCTIONS", "10,100,1000".to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let workloads = Workload::all();
    let mut results = Results { seconds, repeats, ..Results::default() };

    let data = tempfile::tempdir().unwrap();
    let nimbus = Nimbus::start(data.path(), &[]);
    for w in &workloads {
        // Unthrottled, like the Python server: the figures are speed, not admission control.
        nimbus.deploy(w.name, w.name, w.name, &["--max-concurrency", "64", "--queue-timeout-ms", "60000"]);
        assert_eq!(post(&invocations(&nimbus, w.name), w).map(|a| a.0), Some(200), "{} answers", w.name);
    }
    results.memory.nimbus_idle = rss_mib(nimbus.pid());
    let nimbus_peak = PeakRss::start(nimbus.pid());
    // The sessions Nimbus gives a function of the default tier: same threads, same count.
    let threads = FunctionSpec::default().memory.threads();
    let sessions = threads.min(std::thread::available_parallelism().map_or(1, |n| n.get()));
    for w in &workloads {
        eprintln!("== {}: load runs", w.name);
        results.cells.extend(load_runs(w, &nimbus, threads, sessions, seconds, repeats, &mut results.memory));
    }
    results.memory.nimbus_peak = nimbus_peak.finish();

    for w in &workloads {
        eprintln!("== {}: cold starts", w.name);
        results.cold.push((w.name, "nimbus", nimbus_cold(&nimbus, w, 10)));
        results.cold.push((w.name, "python", python_cold(w, 5)));
    }
    drop(nimbus);

    eprintln!("== memory with many functions");
    results.memory.nimbus_functions = nimbus_functions(&counts);
    results.memory.python_functions = python_functions(&counts);

    let out = root().join("docs/benchmarks");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("compare.json"), serde_json::to_vec_pretty(&results).unwrap()).unwrap();
    plot::concurrency(&out.join("latency-vs-concurrency.png"), &panels(&results)).expect("plot");
    plot::cold_start(&out.join("cold-start.png"), &bars(&results)).expect("plot");
    let report = report(&results);
    std::fs::write(out.join("compare.md"), &report).unwrap();
    println!("{report}");
}

/// Every concurrency level, `repeats` times, the three peers interleaved
/// within each repeat so drift on a shared machine hits all of them alike.
fn load_runs(
    w: &Workload,
    nimbus: &Nimbus,
    threads: usize,
    sessions: usize,
    seconds: f64,
    repeats: usize,
    memory: &mut Memory,
) -> Vec<Cell> {
    let native = Sessions::new(w, threads, sessions);
    let python = Python::spawn(w, 1);
    python.ready(w, Duration::from_secs(120));
    let python_idle = rss_mib(python.pid());
    let python_peak = PeakRss::start(python.pid());
    let body = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body.path(), &w.body).unwrap();
    let nimbus_url = invocations(nimbus, w.name);
    let duration = Duration::from_secs_f64(seconds);
    let mut cells = Vec::new();
    for c in LEVELS {
        let mut runs: [Vec<Run>; 3] = Default::default();
        for _ in 0..repeats {
            runs[0].push(native.load(&w.body, c, duration));
            runs[1].push(oha_run(&python.url, w, c, duration, body.path()));
            runs[2].push(oha_run(&nimbus_url, w, c, duration, body.path()));
        }
        for (peer, runs) in PEERS.into_iter().zip(runs) {
            cells.push(Cell { model: w.name, peer, concurrency: c, runs });
        }
        eprintln!("   c={c} done");
    }
    memory.python.push((w.name, python_idle, python_peak.finish()));
    cells
}

/// Scale-to-zero -> first response: a copy of the function with a 1 s idle
/// timeout, invoked once it is back at zero (component, sessions and
/// instances all dropped), on a fresh connection.
fn nimbus_cold(nimbus: &Nimbus, w: &Workload, times: usize) -> Vec<f64> {
    let name = format!("{}-cold", w.name);
    nimbus.deploy(&name, w.name, w.name, &["--idle-timeout", "1"]);
    let url = invocations(nimbus, &name);
    (0..times)
        .map(|_| {
            let at_zero = Nimbus::wait_until(Duration::from_secs(30), || {
                let answer = nimbus.http("GET", &format!("/v1/functions/{name}"), Some(&nimbus.token), &[], b"");
                answer.body.contains("\"scaled-to-zero\"")
            });
            assert!(at_zero, "{name} did not scale to zero");
            let (status, took) = post(&url, w).expect("nimbus answers");
            assert_eq!(status, 200);
            took.as_secs_f64() * 1e3
        })
        .collect()
}

/// Process start -> first answer of a Python server.
fn python_cold(w: &Workload, times: usize) -> Vec<f64> {
    (0..times).map(|_| Python::spawn(w, 1).ready(w, Duration::from_secs(120)).as_secs_f64() * 1e3).collect()
}

/// RSS of one Nimbus server as digits copies are deployed, read once all
/// of them scaled to zero (what an idle host with N functions holds).
fn nimbus_functions(counts: &[usize]) -> Vec<(usize, f64)> {
    let data = tempfile::tempdir().unwrap();
    let nimbus = Nimbus::start(data.path(), &[]);
    let flags = ["--idle-timeout", "1", "--max-concurrency", "1"];
    nimbus.deploy("fn-0", "digits", "digits", &flags);
    let record = nimbus.http("GET", "/v1/functions/fn-0", Some(&nimbus.token), &[], b"").body;
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    let bundle =
        serde_json::json!({"wasm": record["wasm"], "artifacts": record["artifacts"], "config": record["config"]});
    let bundle = serde_json::to_vec(&bundle).unwrap();
    let mut deployed = 1;
    let mut out = Vec::new();
    for &n in counts {
        let start = Instant::now();
        for i in deployed..n {
            let answer = nimbus.http(
                "PUT",
                &format!("/v1/functions/fn-{i}"),
                Some(&nimbus.token),
                &[("content-type", "application/json")],
                &bundle,
            );
            assert!(answer.status < 300, "deploy fn-{i}: {}", answer.body);
        }
        eprintln!("   {n} functions deployed ({} in {:.1?})", n.saturating_sub(deployed), start.elapsed());
        deployed = deployed.max(n);
        let metrics = || nimbus.http("GET", "/metrics", Some(&nimbus.token), &[], b"").body;
        let zero = Nimbus::wait_until(Duration::from_secs(60), || {
            metrics().lines().filter(|l| l.starts_with("nimbus_loaded{")).all(|l| l.ends_with(" 0"))
        });
        assert!(zero, "functions did not scale to zero");
        out.push((n, rss_mib(nimbus.pid())));
    }
    out
}

/// Python's unit of deployment is a process (a container per endpoint):
/// N digits servers side by side, measured up to 10, projected beyond.
fn python_functions(counts: &[usize]) -> Vec<(usize, f64)> {
    let w = Workload::named("digits");
    let servers: Vec<Python> = (0..10).map(|_| Python::spawn(&w, 1)).collect();
    for s in &servers {
        s.ready(&w, Duration::from_secs(300));
    }
    let total: f64 = servers.iter().map(|s| rss_mib(s.pid())).sum();
    counts.iter().map(|&n| (n, total / servers.len() as f64 * n as f64)).collect()
}

fn cell<'a>(r: &'a Results, model: &str, peer: &str, c: usize) -> &'a Cell {
    r.cells.iter().find(|x| x.model == model && x.peer == peer && x.concurrency == c).expect("every cell ran")
}

fn panels(r: &Results) -> Vec<Panel> {
    let models: Vec<&str> = Workload::all().iter().map(|w| w.name).collect();
    models
        .into_iter()
        .map(|model| Panel {
            model: model.into(),
            curves: PEERS
                .iter()
                .map(|&peer| Curve {
                    peer: peer.into(),
                    points: LEVELS
                        .iter()
                        .map(|&c| {
                            let cell = cell(r, model, peer, c);
                            let l = cell.latency();
                            (c, l.median, l.p99, cell.rps().median)
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

fn bars(r: &Results) -> Vec<Bar> {
    r.cold
        .iter()
        .map(|(model, peer, v)| Bar { model: model.to_string(), peer: peer.to_string(), summary: Summary::of(v) })
        .collect()
}

fn f(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn mmp(s: Summary) -> String {
    format!("{} / {} / {}", f(s.min), f(s.median), f(s.p99))
}

/// The Markdown tables of docs/benchmarks/compare.md.
fn report(r: &Results) -> String {
    let mut s = String::new();
    let models: Vec<&str> = Workload::all().iter().map(|w| w.name).collect();
    let _ =
        writeln!(s, "{} s per load run, {} runs per cell; latency min / median / p99 in ms.\n", r.seconds, r.repeats);
    let _ = writeln!(s, "### Warm latency, one client\n");
    let _ = writeln!(
        s,
        "| model | native | Python | Nimbus | Nimbus − native (median) | Nimbus / native | Python / Nimbus |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for m in &models {
        let [n, p, x] = PEERS.map(|peer| cell(r, m, peer, 1).latency());
        let _ = writeln!(
            s,
            "| {m} | {} | {} | {} | {:.0} µs | {:.2}x | {:.2}x |",
            mmp(n),
            mmp(p),
            mmp(x),
            (x.median - n.median) * 1e3,
            ratio(&x, &n),
            ratio(&p, &x)
        );
    }
    let _ = writeln!(s, "\n### Throughput and tail latency by concurrency\n");
    let _ = writeln!(s, "Requests/s are the median of the runs; p99 in ms; failed = non-200 answers over all runs.\n");
    let _ = writeln!(
        s,
        "| model | clients | native req/s | Python req/s | Nimbus req/s | Nimbus / Python | Nimbus / native | p99 native | p99 Python | p99 Nimbus | failed (Py / Nimbus) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for m in &models {
        for c in LEVELS {
            let [n, p, x] = PEERS.map(|peer| cell(r, m, peer, c));
            let _ = writeln!(
                s,
                "| {m} | {c} | {} | {} | {} | {:.2}x | {:.2}x | {} | {} | {} | {} / {} |",
                f(n.rps().median),
                f(p.rps().median),
                f(x.rps().median),
                ratio(&x.rps(), &p.rps()),
                ratio(&x.rps(), &n.rps()),
                f(n.latency().p99),
                f(p.latency().p99),
                f(x.latency().p99),
                p.failed(),
                x.failed()
            );
        }
    }
    let _ = writeln!(s, "\n### Cold start (ms, min / median / p99)\n");
    let _ = writeln!(s, "Nimbus: scaled to zero -> first response. Python: process start -> first answer.\n");
    let _ = writeln!(s, "| model | Nimbus | Python | Python / Nimbus |");
    let _ = writeln!(s, "|---|---|---|---|");
    for m in &models {
        let get = |peer: &str| {
            r.cold.iter().find(|c| c.0 == *m && c.1 == peer).map(|c| Summary::of(&c.2)).unwrap_or_default()
        };
        let (x, p) = (get("nimbus"), get("python"));
        let _ = writeln!(s, "| {m} | {} | {} | {:.1}x |", mmp(x), mmp(p), ratio(&p, &x));
    }
    let mem = &r.memory;
    let _ = writeln!(s, "\n### Memory (RSS, MiB)\n");
    let _ = writeln!(s, "| what | Python | Nimbus |");
    let _ = writeln!(s, "|---|---|---|");
    let py_idle: f64 = mem.python.iter().map(|p| p.1).sum();
    let py_peak: f64 = mem.python.iter().map(|p| p.2).sum();
    let _ = writeln!(
        s,
        "| the 3 examples loaded, idle (Python: one process each, summed) | {} | {} |",
        f(py_idle),
        f(mem.nimbus_idle)
    );
    let _ = writeln!(
        s,
        "| peak under load (Python: sum of each process's peak) | {} | {} |",
        f(py_peak),
        f(mem.nimbus_peak)
    );
    for (p, x) in mem.python_functions.iter().zip(&mem.nimbus_functions) {
        let how = if p.0 <= 10 { "measured" } else { "projected from 10" };
        let _ = writeln!(
            s,
            "| {} digits functions deployed, idle (Python {how}; Nimbus scaled to zero) | {} | {} |",
            p.0,
            f(p.1),
            f(x.1)
        );
    }
    s
}

//! The vertical slice's costs, measured in one process and one run:
//! (a) a fresh instance from the pool (new store + pooled instantiation of
//! the snapshot), (b) a full handler call on each example model against the
//! same inference done natively with `ort`, as a ratio.
//!
//! Run with `make bench` (it builds the workspace, then runs
//! `target/release/slice`). Prints a Markdown table for docs/benchmarks.md.

use nimbus::runtime::{ComponentCache, Function, FunctionSpec, Runtime};
use nimbus_bench::native::Native;
use nimbus_bench::stats::Summary;
use nimbus_bench::workload::Workload;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Times `f` `n` times after `n / 10` warm-up calls; µs.
fn measure(n: usize, mut f: impl FnMut() -> Duration) -> Summary {
    for _ in 0..n / 10 {
        f();
    }
    Summary::of(&(0..n).map(|_| f().as_secs_f64() * 1e6).collect::<Vec<_>>())
}

fn timed(mut f: impl FnMut()) -> impl FnMut() -> Duration {
    move || {
        let start = Instant::now();
        f();
        start.elapsed()
    }
}

fn row(what: &str, s: &Summary) {
    println!("| {what} | {:.1} | {:.1} | {:.1} |", s.min, s.median, s.p99);
}

fn main() {
    nimbus::nn::init().expect("ONNX Runtime");
    let runtime = Runtime::new().expect("runtime");
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ComponentCache::new(cache_dir.path());
    let threads = FunctionSpec::default().memory.threads();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    println!("pooling allocator: {}, ONNX Runtime threads per session: {threads}\n", runtime.pooling());
    println!("| measurement | min µs | p50 µs | p99 µs |");
    println!("|---|---|---|---|");
    for w in Workload::all() {
        let source = w.source();
        let function = Arc::new(
            rt.block_on(Function::load(&runtime, w.name, &source, FunctionSpec::default(), &cache)).expect("load"),
        );
        let request = w.request();
        let n = if w.name == "digits" { 3_000 } else { 300 };
        row(
            &format!("{}: instantiate from pool", w.name),
            &measure(20_000, timed(|| drop(rt.block_on(function.instance()).unwrap()))),
        );
        let nimbus = measure(n, || {
            let instance = rt.block_on(function.instance()).unwrap();
            let start = Instant::now();
            let (response, _, retired) = rt.block_on(instance.handle(&request));
            let elapsed = start.elapsed();
            drop((response.unwrap(), retired));
            elapsed
        });
        let mut native = Native::new(&w, threads);
        let floor = measure(
            n,
            timed(|| {
                native.infer(&w.body);
            }),
        );
        row(&format!("{}: Nimbus handler call on a pre-made instance", w.name), &nimbus);
        row(&format!("{}: native ort, same bytes in", w.name), &floor);
        println!(
            "| {}: Nimbus / native (p50) | {:.2}x | overhead {:.1} µs | |",
            w.name,
            nimbus.median / floor.median,
            nimbus.median - floor.median
        );
    }
}

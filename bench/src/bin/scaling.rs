//! Serverless scaling costs, in process (no HTTP, so the figures are the
//! platform's own): (a) cold start from zero for each example, i.e. load
//! the precompiled snapshot + create ONNX Runtime sessions + instantiate +
//! serve one request, the path a request takes after scale-to-zero;
//! (b) a burst of `max_concurrency` requests on a pool at zero: time until
//! every one is answered.
//!
//! Run with `make bench` (it builds the workspace, then runs
//! `target/release/scaling`).

use nimbus::journal::{Journals, Limits};
use nimbus::members::{HostInfo, Members};
use nimbus::pool::{Loader, Pool, Scaling};
use nimbus::runtime::{ComponentCache, Function, FunctionSpec, Runtime};
use nimbus_bench::stats::Summary;
use nimbus_bench::workload::Workload;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    nimbus::nn::init().expect("ONNX Runtime");
    let runtime = Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().unwrap();
    let cache = ComponentCache::new(dir.path());
    println!(
        "| cold start (load snapshot + sessions + instantiate + first request) | min ms | p50 ms | p99 ms | of which setup p50 ms |"
    );
    println!("|---|---|---|---|---|");
    for w in Workload::all() {
        let (name, source) = (w.name, w.source());
        // The first load snapshots and compiles (a deploy); not a cold start.
        drop(Function::load(&runtime, name, &source, FunctionSpec::default(), &cache).await.unwrap());
        let (mut total, mut setup) = (Vec::new(), Vec::new());
        for _ in 0..30 {
            let start = Instant::now();
            let f = Arc::new(Function::load(&runtime, name, &source, FunctionSpec::default(), &cache).await.unwrap());
            setup.push(ms(start.elapsed()));
            f.call(w.request()).await.unwrap();
            total.push(ms(start.elapsed()));
        }
        let s = Summary::of(&total);
        println!("| {name} | {:.2} | {:.2} | {:.2} | {:.2} |", s.min, s.median, s.p99, Summary::of(&setup).median);
    }

    println!();
    let limits = Limits { max_bytes: 64 << 20, max_age: Duration::from_secs(3600) };
    let journals = Journals::open(dir.path(), "bench", limits).unwrap();
    println!("| burst from zero | concurrency | all answered ms | first answer ms |");
    println!("|---|---|---|---|");
    for w in Workload::all() {
        let max = 16u32;
        let loader = Loader {
            runtime: runtime.clone(),
            name: w.name.into(),
            version: 1,
            journals: journals.clone(),
            source: w.source(),
            spec: FunctionSpec { sessions: 2, ..FunctionSpec::default() },
            cache: cache.clone(),
            files: None,
        };
        let scaling = Scaling {
            max_concurrency: max,
            provisioned: 0,
            queue_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(1),
        };
        let members = Arc::new(Members::alone(HostInfo::this_host("bench".into(), 0)));
        let pool = Pool::new(loader, scaling, members);
        pool.warm().await.unwrap();
        assert!(pool.reap(Instant::now() + Duration::from_secs(2)), "pool at zero");
        let start = Instant::now();
        let tasks: Vec<_> = (0..max)
            .map(|_| {
                let (pool, request) = (pool.clone(), w.request());
                tokio::spawn(async move {
                    pool.invoke(request).await.result.unwrap();
                    ms(start.elapsed())
                })
            })
            .collect();
        let mut done = Vec::new();
        for t in tasks {
            done.push(t.await.unwrap());
        }
        let (first, last) = done.iter().fold((f64::MAX, 0f64), |(lo, hi), &d| (lo.min(d), hi.max(d)));
        println!("| {} | {max} | {last:.2} | {first:.2} |", w.name);
    }
}

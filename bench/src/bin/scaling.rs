//! Serverless scaling costs, in process (no HTTP, so the figures are the
//! platform's own): (a) cold start from zero for each example, i.e. load
//! the precompiled snapshot + create ONNX Runtime sessions + instantiate +
//! serve one request, the path a request takes after scale-to-zero;
//! (b) a burst of `max_concurrency` requests on a pool at zero: time until
//! every one is answered.
//!
//! Run with `make bench` (it builds the workspace, then runs
//! `target/release/scaling`).

use nimbus::pool::{Loader, Pool, Scaling};
use nimbus::runtime::{ComponentCache, Function, FunctionSpec, Request, Runtime, Source};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn source(name: &str) -> Source {
    let wasm = root().join(format!("examples/target/wasm32-wasip2/release/{name}.wasm"));
    Source::hash(&wasm, &root().join("examples").join(name).join("model")).expect("run `make build` first")
}

fn request(name: &str) -> Request {
    match name {
        "digits" => Request {
            content_type: "text/csv".into(),
            accept: "application/json".into(),
            body: std::fs::read_to_string(root().join("examples/digits/sample.csv"))
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .as_bytes()
                .to_vec(),
        },
        _ => Request {
            content_type: "application/jsonlines".into(),
            accept: "application/jsonlines".into(),
            body: b"{\"features\": [\"I love this product!\"]}\n".to_vec(),
        },
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort_unstable();
    (v[0], v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
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
    for name in ["digits", "sentiment"] {
        let source = source(name);
        // The first load snapshots and compiles (a deploy); not a cold start.
        drop(Function::load(&runtime, name, &source, FunctionSpec::default(), &cache).await.unwrap());
        let (mut total, mut setup) = (Vec::new(), Vec::new());
        for _ in 0..30 {
            let start = Instant::now();
            let f = Arc::new(Function::load(&runtime, name, &source, FunctionSpec::default(), &cache).await.unwrap());
            setup.push(start.elapsed());
            f.call(request(name)).await.unwrap();
            total.push(start.elapsed());
        }
        let (min, p50, p99) = stats(total);
        println!("| {name} | {} | {} | {} | {} |", ms(min), ms(p50), ms(p99), ms(stats(setup).1));
    }

    println!();
    println!("| burst from zero | concurrency | all answered ms | first answer ms |");
    println!("|---|---|---|---|");
    for (name, max) in [("digits", 16u32), ("sentiment", 16)] {
        let loader = Loader {
            runtime: runtime.clone(),
            name: name.into(),
            source: source(name),
            spec: FunctionSpec { sessions: 2, ..FunctionSpec::default() },
            cache: cache.clone(),
        };
        let scaling = Scaling {
            max_concurrency: max,
            provisioned: 0,
            queue_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(1),
        };
        let pool = Pool::start(loader, scaling).await.unwrap();
        assert!(pool.reap(Instant::now() + Duration::from_secs(2)), "pool at zero");
        let start = Instant::now();
        let tasks: Vec<_> = (0..max)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.invoke(request(name)).await.unwrap();
                    start.elapsed()
                })
            })
            .collect();
        let mut done = Vec::new();
        for t in tasks {
            done.push(t.await.unwrap());
        }
        let (first, _, _) = stats(done.clone());
        let all = done.into_iter().max().unwrap();
        println!("| {name} | {max} | {} | {} |", ms(all), ms(first));
    }
}

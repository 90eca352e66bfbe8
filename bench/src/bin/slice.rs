//! The vertical slice's costs, measured in one process and one run:
//! (a) a fresh instance from the pool (new store + pooled instantiation of
//! the snapshot), (b) a full handler call on the digits and sentiment
//! models against the same inference done natively with `ort`, as a ratio.
//!
//! Run with `make bench` (it builds the workspace, then runs
//! `target/release/slice`). Prints a Markdown table for docs/benchmarks.md.

use nimbus::runtime::{ComponentCache, Function, FunctionSpec, Request, Runtime, Source};
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SENTENCE: &str = "I love this product!";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Stats {
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

/// Times `f` `n` times after `n / 10` warm-up calls.
fn measure(n: usize, mut f: impl FnMut()) -> Stats {
    measure_timed(n, || {
        let start = Instant::now();
        f();
        start.elapsed()
    })
}

/// Like [`measure`], for a closure that times its own measured part.
fn measure_timed(n: usize, mut f: impl FnMut() -> Duration) -> Stats {
    for _ in 0..n / 10 {
        f();
    }
    let mut samples: Vec<Duration> = (0..n).map(|_| f()).collect();
    samples.sort_unstable();
    let total: Duration = samples.iter().sum();
    Stats { mean: total / n as u32, p50: samples[n / 2], p99: samples[n * 99 / 100] }
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn row(what: &str, s: &Stats) {
    println!("| {what} | {} | {} | {} |", us(s.mean), us(s.p50), us(s.p99));
}

fn native_session(path: &Path, threads: usize) -> Session {
    Session::builder()
        .and_then(|b| b.with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3))
        .and_then(|b| b.with_intra_threads(threads))
        .and_then(|b| b.commit_from_file(path))
        .expect("native session")
}

fn load(runtime: &Arc<Runtime>, name: &str, cache: &ComponentCache) -> Arc<Function> {
    let wasm = root().join(format!("examples/target/wasm32-wasip2/release/{name}.wasm"));
    let dir = root().join("examples").join(name).join("model");
    let source = Source::hash(&wasm, &dir).expect("run `make build` first");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    Arc::new(rt.block_on(Function::load(runtime, name, &source, FunctionSpec::default(), cache)).expect("load"))
}

fn native_digits(session: &mut Session, row: &[f32]) {
    let input = TensorRef::from_array_view(([1usize, 64], row)).unwrap();
    let out = session.run(ort::inputs!["input" => input]).unwrap();
    let labels = out["label"].try_extract_tensor::<i64>().unwrap().1;
    assert_eq!(labels.len(), 1);
}

fn native_sentiment(tokenizer: &tokenizers::Tokenizer, encoder: &mut Session, head: &mut Session) -> i64 {
    let enc = tokenizer.encode(SENTENCE, true).unwrap();
    let ids: Vec<i64> = enc.get_ids().iter().map(|&x| x.into()).collect();
    let mask: Vec<i64> = enc.get_attention_mask().iter().map(|&x| x.into()).collect();
    let types = vec![0i64; ids.len()];
    let shape = [1usize, ids.len()];
    let out = encoder
        .run(ort::inputs![
            "input_ids" => TensorRef::from_array_view((shape, ids.as_slice())).unwrap(),
            "attention_mask" => TensorRef::from_array_view((shape, mask.as_slice())).unwrap(),
            "token_type_ids" => TensorRef::from_array_view((shape, types.as_slice())).unwrap(),
        ])
        .unwrap();
    let hidden = out["last_hidden_state"].try_extract_tensor::<f32>().unwrap().1;
    let mut pooled = [0f32; 384];
    let count = mask.iter().filter(|&&m| m != 0).count() as f32;
    for token in hidden.chunks(384) {
        pooled.iter_mut().zip(token).for_each(|(p, t)| *p += t / count);
    }
    let norm = pooled.iter().map(|x| x * x).sum::<f32>().sqrt();
    pooled.iter_mut().for_each(|x| *x /= norm);
    let out =
        head.run(ort::inputs!["input" => TensorRef::from_array_view(([1usize, 384], &pooled[..])).unwrap()]).unwrap();
    out["label"].try_extract_tensor::<i64>().unwrap().1[0]
}

fn main() {
    nimbus::nn::init().expect("ONNX Runtime");
    let runtime = Runtime::new().expect("runtime");
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ComponentCache::new(cache_dir.path());
    let threads = FunctionSpec::default().memory.threads();
    let digits = load(&runtime, "digits", &cache);
    let sentiment = load(&runtime, "sentiment", &cache);

    let csv = std::fs::read_to_string(root().join("examples/digits/sample.csv")).unwrap();
    let first_row = csv.lines().next().unwrap().to_owned();
    let pixels: Vec<f32> = first_row.split(',').map(|v| v.parse().unwrap()).collect();
    let digits_request =
        Request { content_type: "text/csv".into(), accept: "application/json".into(), body: first_row.into_bytes() };
    let sentiment_request = Request {
        content_type: "application/jsonlines".into(),
        accept: "application/jsonlines".into(),
        body: format!("{{\"features\": [\"{SENTENCE}\"]}}\n").into_bytes(),
    };

    let model = |name: &str, file: &str| root().join("examples").join(name).join("model").join(file);
    let mut native_forest = native_session(&model("digits", "digits.onnx"), threads);
    let mut encoder = native_session(&model("sentiment", "encoder.onnx"), threads);
    let mut head = native_session(&model("sentiment", "head.onnx"), threads);
    // The same tokenizer settings as the handler (no fixed-length padding).
    let mut tokenizer = tokenizers::Tokenizer::from_file(model("sentiment", "tokenizer.json")).unwrap();
    tokenizer.with_padding(Some(tokenizers::PaddingParams::default()));
    tokenizer.with_truncation(Some(tokenizers::TruncationParams { max_length: 256, ..Default::default() })).unwrap();
    assert_eq!(native_sentiment(&tokenizer, &mut encoder, &mut head), 1);

    println!("pooling allocator: {}, ONNX Runtime threads per session: {threads}\n", runtime.pooling());
    println!("| measurement | mean µs | p50 µs | p99 µs |");
    println!("|---|---|---|---|");
    let instantiate = measure(20_000, || drop(digits.instance().unwrap()));
    row("instantiate digits from pool (store + WASI + wasi-nn ctx + instance)", &instantiate);
    row("instantiate sentiment from pool", &measure(20_000, || drop(sentiment.instance().unwrap())));

    let wasm_digits = measure(3_000, || drop(digits.invoke(&digits_request).unwrap()));
    let native_d = measure(3_000, || native_digits(&mut native_forest, &pixels));
    row("digits: Nimbus handler call (CSV in, JSON out)", &wasm_digits);
    let ready = |f: &Arc<Function>, r: &Request| {
        let instance = f.instance().unwrap();
        let start = Instant::now();
        let (response, retired) = instance.handle(r);
        let elapsed = start.elapsed();
        drop((response.unwrap(), retired));
        elapsed
    };
    row(
        "digits: Nimbus handler call on a pre-made instance (warm pool)",
        &measure_timed(3_000, || ready(&digits, &digits_request)),
    );
    row("digits: native ort (same row, same model)", &native_d);

    let wasm_sent = measure(1_000, || drop(sentiment.invoke(&sentiment_request).unwrap()));
    let native_s = measure(1_000, || assert_eq!(native_sentiment(&tokenizer, &mut encoder, &mut head), 1));
    row("sentiment: Nimbus handler call (JSON line in, JSON line out)", &wasm_sent);
    row("sentiment: native Rust (tokenize + encoder + pool + head)", &native_s);

    let ratio = |a: &Stats, b: &Stats| a.p50.as_secs_f64() / b.p50.as_secs_f64();
    println!();
    println!(
        "digits p50 ratio Nimbus/native: {:.3} (overhead {} µs)",
        ratio(&wasm_digits, &native_d),
        us(wasm_digits.p50.saturating_sub(native_d.p50))
    );
    println!(
        "sentiment p50 ratio Nimbus/native: {:.3} (overhead {} µs)",
        ratio(&wasm_sent, &native_s),
        us(wasm_sent.p50.saturating_sub(native_s.p50))
    );
}

//! The floor: the same inference as each example handler, from the same
//! request bytes (CSV parse, tokenization, JPEG decode included), run with
//! `ort` in this process. No HTTP, no sandbox; whatever a peer adds on top
//! of this is its overhead.

use crate::load::{Run, from_latencies};
use crate::workload::Workload;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

const DIM: usize = 384;
const SIDE: u32 = 224;
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// One model's sessions, ready to answer a request body.
pub enum Native {
    Digits(Session),
    Sentiment { tokenizer: Box<tokenizers::Tokenizer>, encoder: Session, head: Session },
    Vision(Session),
    Gbm(Session),
}

/// A session set as Nimbus sets its sessions (host/src/nn/graph.rs), so
/// the floor differs from Nimbus by the platform only.
fn session(path: &Path, threads: usize) -> Session {
    let light = nimbus::nn::check_model(path, path.parent().unwrap_or(Path::new("."))).is_ok_and(|i| i.light);
    Session::builder()
        .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::Level3))
        .and_then(|b| b.with_intra_threads(nimbus::nn::intra_threads(light, threads)))
        .and_then(|b| b.with_intra_op_spinning(false))
        .and_then(|b| b.commit_from_file(path))
        .unwrap_or_else(|e| panic!("{}: {e} (run `make build`)", path.display()))
}

impl Native {
    /// Sessions for `workload`'s model with `threads` intra-op threads each.
    pub fn new(workload: &Workload, threads: usize) -> Native {
        let dir = workload.model_dir();
        match workload.name {
            "digits" => Native::Digits(session(&dir.join("digits.onnx"), threads)),
            "sentiment" => {
                // The handler's tokenizer settings: pad to the longest, truncate at 256.
                let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer");
                tokenizer.with_padding(Some(tokenizers::PaddingParams::default()));
                tokenizer
                    .with_truncation(Some(tokenizers::TruncationParams { max_length: 256, ..Default::default() }))
                    .expect("truncation");
                Native::Sentiment {
                    tokenizer: Box::new(tokenizer),
                    encoder: session(&dir.join("encoder.onnx"), threads),
                    head: session(&dir.join("head.onnx"), threads),
                }
            }
            "vision" => Native::Vision(session(&dir.join("mobilenet_v2.onnx"), threads)),
            "gbm" => Native::Gbm(session(&dir.join("model.onnx"), threads)),
            other => panic!("no native model for {other}"),
        }
    }

    /// Answers one request body; returns the predicted label (to check the
    /// work was done, and to compare with the handlers' answers).
    pub fn infer(&mut self, body: &[u8]) -> i64 {
        match self {
            Native::Digits(forest) => {
                let row: Vec<f32> =
                    std::str::from_utf8(body).unwrap().trim().split(',').map(|v| v.trim().parse().unwrap()).collect();
                let out =
                    forest.run(ort::inputs!["input" => TensorRef::from_array_view(([1usize, 64], &row[..])).unwrap()]);
                out.unwrap()["label"].try_extract_tensor::<i64>().unwrap().1[0]
            }
            Native::Sentiment { tokenizer, encoder, head } => {
                let line: serde_json::Value = serde_json::from_slice(body).unwrap();
                let sentence = line["features"][0].as_str().unwrap();
                let enc = tokenizer.encode(sentence, true).unwrap();
                let ids: Vec<i64> = enc.get_ids().iter().map(|&x| x.into()).collect();
                let mask: Vec<i64> = enc.get_attention_mask().iter().map(|&x| x.into()).collect();
                let types = vec![0i64; ids.len()];
                let shape = [1usize, ids.len()];
                let out = encoder
                    .run(ort::inputs![
                        "input_ids" => TensorRef::from_array_view((shape, &ids[..])).unwrap(),
                        "attention_mask" => TensorRef::from_array_view((shape, &mask[..])).unwrap(),
                        "token_type_ids" => TensorRef::from_array_view((shape, &types[..])).unwrap(),
                    ])
                    .unwrap();
                let hidden = out["last_hidden_state"].try_extract_tensor::<f32>().unwrap().1;
                let pooled = mean_pool(hidden, &mask);
                let out = head
                    .run(ort::inputs!["input" => TensorRef::from_array_view(([1usize, DIM], &pooled[..])).unwrap()])
                    .unwrap();
                out["label"].try_extract_tensor::<i64>().unwrap().1[0]
            }
            Native::Gbm(model) => {
                let request: serde_json::Value = serde_json::from_slice(body).unwrap();
                let input = &request["inputs"][0];
                let row: Vec<f32> =
                    input["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
                let out = model
                    .run(ort::inputs!["input" => TensorRef::from_array_view(([1usize, row.len()], &row[..])).unwrap()]);
                out.unwrap()["label"].try_extract_tensor::<i64>().unwrap().1[0]
            }
            Native::Vision(net) => {
                let pixels = image_tensor(body);
                let shape = [1usize, 3, SIDE as usize, SIDE as usize];
                let out = net.run(ort::inputs!["input" => TensorRef::from_array_view((shape, &pixels[..])).unwrap()]);
                let probabilities = out.unwrap()["probabilities"].try_extract_tensor::<f32>().unwrap().1.to_vec();
                top5(&probabilities)[0].0 as i64
            }
        }
    }
}

/// Mean over unmasked tokens, then L2-normalized (sentence-transformers).
fn mean_pool(hidden: &[f32], mask: &[i64]) -> Vec<f32> {
    let mut pooled = vec![0f32; DIM];
    let count = mask.iter().filter(|&&m| m != 0).count() as f32;
    for (token, _) in hidden.chunks(DIM).zip(mask).filter(|(_, m)| **m != 0) {
        pooled.iter_mut().zip(token).for_each(|(p, t)| *p += t / count);
    }
    let norm = pooled.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    pooled.iter_mut().for_each(|x| *x /= norm);
    pooled
}

/// JPEG/PNG -> RGB 224x224 -> ImageNet-normalized NCHW, as the handler does.
fn image_tensor(body: &[u8]) -> Vec<f32> {
    let mut rgb = image::load_from_memory(body).expect("image").to_rgb8();
    if rgb.dimensions() != (SIDE, SIDE) {
        rgb = image::imageops::resize(&rgb, SIDE, SIDE, image::imageops::FilterType::Triangle);
    }
    let plane = (SIDE * SIDE) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (px[c] as f32 / 255.0 - MEAN[c]) / STD[c];
        }
    }
    out
}

fn top5(probabilities: &[f32]) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probabilities.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(5);
    ranked
}

/// A model's [`Native`] sessions shared by concurrent callers, as Nimbus
/// shares a graph's sessions between instances.
pub struct Sessions {
    free: Mutex<Vec<Native>>,
    returned: Condvar,
}

impl Sessions {
    pub fn new(workload: &Workload, threads: usize, count: usize) -> Sessions {
        let free = (0..count).map(|_| Native::new(workload, threads)).collect();
        Sessions { free: Mutex::new(free), returned: Condvar::new() }
    }

    /// `concurrency` threads answering `body` for `duration`; a call's
    /// latency includes waiting for a free session.
    pub fn load(&self, body: &[u8], concurrency: usize, duration: Duration) -> Run {
        let start = Instant::now();
        let latencies: Vec<f64> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..concurrency)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        while start.elapsed() < duration {
                            let t = Instant::now();
                            let mut native = self.take();
                            native.infer(body);
                            self.free.lock().unwrap().push(native);
                            self.returned.notify_one();
                            mine.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                        mine
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
        });
        from_latencies(&latencies, start.elapsed())
    }

    fn take(&self) -> Native {
        let mut free = self.free.lock().unwrap();
        loop {
            match free.pop() {
                Some(n) => return n,
                None => free = self.returned.wait(free).unwrap(),
            }
        }
    }
}

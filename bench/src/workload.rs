//! The requests every peer answers: the same bytes, content type and accept
//! header for native, Python and Nimbus, taken from the examples' samples so
//! a benchmark measures exactly what a user would send.

use crate::root;
use nimbus::runtime::{Request, Source};
use std::path::PathBuf;

/// One model and the request that exercises it.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The example's name: its folder under `examples/`, its function name.
    pub name: &'static str,
    pub content_type: &'static str,
    pub accept: &'static str,
    pub body: Vec<u8>,
}

impl Workload {
    /// digits (one CSV row), sentiment (one JSON line), vision (one 224x224 JPEG).
    pub fn all() -> Vec<Workload> {
        ["digits", "sentiment", "vision"].into_iter().map(Workload::named).collect()
    }

    pub fn named(name: &'static str) -> Workload {
        let sample = |file: &str| std::fs::read(root().join("examples").join(name).join(file));
        let (content_type, accept, body) = match name {
            "digits" => {
                let csv = sample("sample.csv").expect("examples/digits/sample.csv");
                let first = csv.split(|&b| b == b'\n').next().unwrap_or_default().to_vec();
                ("text/csv", "application/json", first)
            }
            "sentiment" => (
                "application/jsonlines",
                "application/jsonlines",
                b"{\"features\": [\"I love this product!\"]}\n".to_vec(),
            ),
            "vision" => ("image/jpeg", "application/json", sample("sample.jpg").expect("examples/vision/sample.jpg")),
            // One row of the exported LightGBM model's sample, as an Open
            // Inference Protocol JSON request (a model-only deploy).
            "gbm" => {
                let case = root().join(".build/exported/lightgbm/case.json");
                let case: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&case).expect("run `make build`")).expect("case.json");
                let input = &case["inputs"][0];
                let width = input["shape"][1].as_u64().expect("[rows, features]");
                let row: Vec<&serde_json::Value> =
                    input["data"].as_array().expect("data").iter().take(width as usize).collect();
                let request = serde_json::json!({"inputs": [{
                    "name": input["name"], "datatype": "FP32", "shape": [1, width], "data": row,
                }]});
                ("application/json", "application/json", serde_json::to_vec(&request).unwrap())
            }
            other => panic!("no workload named {other}"),
        };
        Workload { name, content_type, accept, body }
    }

    /// The example's artifact folder (gbm: the exported model `make build` makes).
    pub fn model_dir(&self) -> PathBuf {
        match self.name {
            "gbm" => root().join(".build/exported/lightgbm"),
            name => nimbus_tests::model_dir(name),
        }
    }

    /// The example's handler and artifacts, as `make build` left them.
    pub fn source(&self) -> Source {
        let wasm = root().join(format!("examples/target/wasm32-wasip2/release/{}.wasm", self.name));
        Source::hash(&wasm, &self.model_dir()).expect("run `make build` first")
    }

    /// The request for an in-process call.
    pub fn request(&self) -> Request {
        Request { content_type: self.content_type.into(), accept: self.accept.into(), body: self.body.clone() }
    }
}

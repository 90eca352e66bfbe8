//! Model-only deploys and the Open Inference Protocol, against a real
//! server: models exported the way users export them (skl2onnx with its
//! ZipMap, LightGBM through onnxmltools, torch.onnx with dynamic axes, weights
//! in an external data file, bool and float16 tensors) deployed without a
//! handler and called by the real `tritonclient` from PyPI; the models
//! wasi-nn cannot serve refused at deploy with what to do.

use nimbus_tests::{Server, model_dir, root, wasm};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;

fn start() -> (tempfile::TempDir, Server) {
    wasm("digits"); // builds the guests (and the built-in handler) once
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    (dir, server)
}

/// The artifact folder of an exported model made by `make build`
/// (scripts/make_exported.py), or the committed torch export.
fn exported(case: &str) -> PathBuf {
    let dir = match case {
        "torch" => root().join("tests/fixtures/torch"),
        _ => root().join(".build/exported").join(case),
    };
    assert!(dir.join("model.onnx").is_file(), "{} is missing: run `make build`", dir.display());
    dir
}

/// A folder holding only `case`'s model and its data file, if any (the
/// fixture folders also hold case.json).
fn model_only(case: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(exported(case)).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("model.onnx") {
            std::fs::copy(entry.path(), tmp.path().join(&name)).unwrap();
        }
    }
    let path = tmp.path().to_path_buf();
    (tmp, path)
}

/// `nimbus deploy NAME --model-dir DIR --json` without a handler.
fn deploy_model(s: &Server, name: &str, dir: &std::path::Path) -> std::process::Output {
    s.cli(&["deploy", name, "--model-dir", dir.to_str().unwrap(), "--json"])
}

fn deployed(s: &Server, name: &str, dir: &std::path::Path) {
    let out = deploy_model(s, name, dir);
    assert!(out.status.success(), "deploy {name}: {}", String::from_utf8_lossy(&out.stderr));
}

fn call(s: &Server, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let bytes = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    let a = s.http(method, path, Some(&s.token), &[("content-type", "application/json")], &bytes);
    (a.status, serde_json::from_str(&a.body).unwrap_or_else(|_| panic!("{path}: not JSON: {}", a.body)))
}

fn case(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(exported(name).join("case.json")).unwrap()).unwrap()
}

/// Runs tests/oip/client.py (tritonclient) against `model` with `case`.
fn triton_client(s: &Server, model: &str, case: &str) {
    let python = root().join(".build/venv/bin/python");
    assert!(python.is_file(), "{} is missing: run `make test` (it installs tritonclient)", python.display());
    let out = Command::new(python)
        .arg(root().join("tests/oip/client.py"))
        .args(["--url", s.url.trim_start_matches("http://"), "--token", &s.token, "--model", model, "--case"])
        .arg(exported(case).join("case.json"))
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tritonclient on {case}: {summary}\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_model_only_deploy_speaks_the_open_inference_protocol() {
    let (_dir, s) = start();
    deployed(&s, "digits", &model_dir("digits"));
    let (status, d) = call(&s, "GET", "/v1/functions/digits", &Value::Null);
    assert_eq!(status, 200);
    assert_eq!(d["builtin"], true, "{d}");

    assert_eq!(call(&s, "GET", "/v2/health/live", &Value::Null), (200, json!({"live": true})));
    assert_eq!(call(&s, "GET", "/v2/health/ready", &Value::Null), (200, json!({"ready": true})));
    let (_, server) = call(&s, "GET", "/v2", &Value::Null);
    assert_eq!(server["extensions"], json!(["binary_tensor_data"]));
    assert_eq!(
        call(&s, "GET", "/v2/models/digits/ready", &Value::Null),
        (200, json!({"name": "digits", "ready": true}))
    );

    let (status, meta) = call(&s, "GET", "/v2/models/digits", &Value::Null);
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["platform"], "onnxruntime_onnx");
    assert_eq!(meta["inputs"], json!([{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]));
    let outputs: Vec<(&str, &str)> = meta["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap(), o["datatype"].as_str().unwrap()))
        .collect();
    assert_eq!(outputs, [("label", "INT64"), ("probabilities", "FP32")]);

    // The first row of the example's sample is a 0; the second a 1.
    let sample = std::fs::read_to_string(root().join("examples/digits/sample.csv")).unwrap();
    let rows: Vec<f32> =
        sample.lines().take(2).flat_map(|l| l.split(',').map(|v| v.trim().parse::<f32>().unwrap())).collect();
    let request = json!({
        "id": "r-1",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": rows}],
        "outputs": [{"name": "label"}],
    });
    let (status, answer) = call(&s, "POST", "/v2/models/digits/infer", &request);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_name"], "digits");
    assert_eq!(answer["model_version"], "1");
    assert_eq!(answer["id"], "r-1");
    assert_eq!(answer["outputs"], json!([{"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 1]}]));
    // The same request through this API's invocations route.
    let a = s.invoke("digits", "application/json", &request.to_string());
    assert_eq!(a.status, 200, "{}", a.body);

    // The binary-data extension: the JSON part, then the input's bytes.
    let header = json!({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "parameters": {"binary_data_size": 512}}],
        "outputs": [{"name": "label", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(rows.iter().flat_map(|v| v.to_le_bytes()));
    let length = header.len().to_string();
    let a = s.http(
        "POST",
        "/v2/models/digits/infer",
        Some(&s.token),
        &[("inference-header-content-length", &length)],
        &body,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let json_length: usize = a.header("inference-header-content-length").parse().expect("a JSON length");
    let (head, _) = a.body.split_at(json_length);
    let head: Value = serde_json::from_str(head).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 16, "{head}");

    // Errors come in the protocol's shape, and say what is wrong.
    let refused = |path: &str, body: &Value, status: u16, says: &str| {
        let (got, answer) = call(&s, "POST", path, body);
        assert_eq!(got, status, "{path}: {answer}");
        let message = answer["error"].as_str().unwrap_or_else(|| panic!("not an OIP error: {answer}"));
        assert!(message.contains(says), "{path}: {message}");
    };
    refused("/v2/models/nope/infer", &request, 404, "does not exist");
    let mut wrong = request.clone();
    wrong["inputs"][0]["name"] = json!("pixels");
    refused("/v2/models/digits/infer", &wrong, 400, "pixels");
    let mut short = request.clone();
    short["inputs"][0]["data"] = json!([1.0, 2.0]);
    refused("/v2/models/digits/infer", &short, 400, "128");
    refused("/v2/models/digits/versions/9/infer", &request, 404, "9");
    // A function with a handler of its own is not served by the protocol.
    s.deploy("custom", "digits", "digits", &[]);
    refused("/v2/models/custom/infer", &request, 400, "model-only");
}

#[test]
fn exported_models_serve_as_they_are_through_tritonclient() {
    let (_dir, s) = start();
    for case in ["zipmap", "torch", "boolfp16", "external"] {
        let (_tmp, dir) = model_only(case);
        deployed(&s, case, &dir);
        triton_client(&s, case, case);
    }
    // skl2onnx's ZipMap: a [batch, classes] tensor, its classes listed.
    let (_, meta) = call(&s, "GET", "/v2/models/zipmap", &Value::Null);
    let probabilities = meta["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "output_probability").unwrap();
    assert_eq!(probabilities["datatype"], "FP32");
    assert_eq!(probabilities["shape"], json!([-1, 3]));
    assert_eq!(probabilities["classes"], json!([0, 1, 2]));
    // bool travels as bool for clients.
    let (_, meta) = call(&s, "GET", "/v2/models/boolfp16", &Value::Null);
    assert_eq!(meta["inputs"][1]["datatype"], "BOOL", "{meta}");
    assert_eq!(meta["outputs"][0]["datatype"], "FP16", "{meta}");
    // torch.onnx's dynamic batch axis.
    let (_, meta) = call(&s, "GET", "/v2/models/torch", &Value::Null);
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 8]), "{meta}");
}

#[test]
fn lightgbm_through_onnxmltools_answers_its_classes() {
    let (_dir, s) = start();
    let (_tmp, dir) = model_only("lightgbm");
    deployed(&s, "gbm", &dir);
    let case = case("lightgbm");
    let request = json!({ "inputs": case["inputs"] });
    let (status, answer) = call(&s, "POST", "/v2/models/gbm/infer", &request);
    assert_eq!(status, 200, "{answer}");
    for want in case["outputs"].as_array().unwrap() {
        let got = answer["outputs"].as_array().unwrap().iter().find(|o| o["name"] == want["name"]).unwrap();
        assert_eq!(got["shape"], want["shape"], "{}", want["name"]);
        let close = got["data"].as_array().unwrap().iter().zip(want["data"].as_array().unwrap()).all(|(g, w)| {
            (g.as_f64().unwrap() - w.as_f64().unwrap()).abs() <= 1e-4 * w.as_f64().unwrap().abs().max(1.0)
        });
        assert!(close, "{}: {} vs {}", want["name"], got["data"], want["data"]);
    }
}

#[test]
fn models_wasi_nn_cannot_serve_are_refused_at_deploy() {
    let (_dir, s) = start();
    let says = |case: &str, name: &str, what: &[&str]| {
        let (_tmp, dir) = model_only(case);
        let out = deploy_model(&s, name, &dir);
        assert!(!out.status.success(), "{case} deployed");
        let err = String::from_utf8_lossy(&out.stderr);
        for w in what {
            assert!(err.contains(w), "{case}: {err}");
        }
        let a = s.http("GET", &format!("/v1/functions/{name}"), Some(&s.token), &[], b"");
        assert_eq!(a.status, 404, "{case} left a function behind: {}", a.body);
    };
    let refused_input = case("strings")["refused_input"].as_str().unwrap().to_owned();
    says("strings", "strings", &[&format!("input `{refused_input}`"), "string tensor"]);
    let refused_output = case("strlabels")["refused_output"].as_str().unwrap().to_owned();
    says("strlabels", "labels", &[&format!("output `{refused_output}`"), "nocl"]);

    // The same models with a handler of their own: still refused at deploy.
    let (_tmp, dir) = model_only("strings");
    let out = s.try_deploy("h", "hostile", &dir, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("string tensor"));

    // A model-only deploy serves one graph.
    let two = tempfile::tempdir().unwrap();
    for case in ["zipmap", "torch"] {
        std::fs::copy(exported(case).join("model.onnx"), two.path().join(format!("{case}.onnx"))).unwrap();
    }
    let out = deploy_model(&s, "two", two.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exactly one graph"));

    // External data must sit beside the model: without its data file the
    // deploy says so.
    let (_tmp, dir) = model_only("external");
    std::fs::remove_file(dir.join("model.onnx.data")).unwrap();
    let out = deploy_model(&s, "external", &dir);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("model.onnx.data"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn with_an_invoke_token_the_protocol_asks_for_it_but_health_does_not() {
    wasm("digits");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--invoke-token", "secret-invoke"]);
    deployed(&s, "digits", &model_dir("digits"));
    let a = s.http("GET", "/v2/models/digits", None, &[], b"");
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(serde_json::from_str::<Value>(&a.body).unwrap()["error"].is_string(), "{}", a.body);
    let a = s.http("GET", "/v2/models/digits", Some("secret-invoke"), &[], b"");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(s.http("GET", "/v2/health/live", None, &[], b"").status, 200);
    assert_eq!(s.http("GET", "/v2/health/ready", None, &[], b"").status, 200);
}

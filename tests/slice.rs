//! The vertical slice end to end: real handlers built from `examples/`,
//! real ONNX models, the host library; and every way a handler or its input
//! can be wrong, each with a clear error and the function still serving.

use nimbus::runtime::{FunctionSpec, InvokeError, LoadError, MemoryTier};
use nimbus_tests::{load, request, wasm};
use std::time::Duration;

fn body(r: &nimbus::runtime::Response) -> String {
    String::from_utf8(r.body.clone()).expect("utf-8 body")
}

#[tokio::test(flavor = "multi_thread")]
async fn digits_classifies_bundled_images() {
    let f = load("digits", "digits", FunctionSpec::default()).await;
    let csv = std::fs::read_to_string(nimbus_tests::root().join("examples/digits/sample.csv")).unwrap();
    let r = f.call(request("text/csv", &csv)).await.unwrap().response;
    assert_eq!(r.content_type, "application/json");
    let labels: Vec<String> =
        body(&r).split("\"predicted_label\":").skip(1).map(|s| s.split(',').next().unwrap().to_owned()).collect();
    assert_eq!(labels, ["0", "1", "2", "3", "4"], "{}", body(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn digits_answers_json_lines_when_asked() {
    let f = load("digits", "digits", FunctionSpec::default()).await;
    let csv = std::fs::read_to_string(nimbus_tests::root().join("examples/digits/sample.csv")).unwrap();
    let mut req = request("text/csv", &csv);
    req.accept = "application/jsonlines".into();
    let r = f.call(req).await.unwrap().response;
    assert_eq!(r.content_type, "application/jsonlines");
    assert_eq!(body(&r).lines().count(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn sentiment_tells_love_from_hate() {
    let f = load("sentiment", "sentiment", FunctionSpec::default()).await;
    let input = "{\"features\": [\"I love this product!\"]}\n{\"features\": [\"I hate this product.\"]}\n";
    let r = f.call(request("application/jsonlines", input)).await.unwrap().response;
    assert_eq!(r.content_type, "application/jsonlines");
    let lines: Vec<String> = body(&r).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{}", body(&r));
    assert!(lines[0].contains("\"predicted_label\":1,"), "{}", lines[0]);
    assert!(lines[1].contains("\"predicted_label\":-1,"), "{}", lines[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sentiment_negotiates_content_types() {
    let f = load("sentiment", "sentiment", FunctionSpec::default()).await;
    let one = r#"{"features": ["I love this product!"]}"#;
    let mut req = request("application/json", one);
    req.accept = "application/json".into();
    let r = f.call(req).await.unwrap().response;
    assert_eq!(r.content_type, "application/json");
    assert!(body(&r).starts_with("[{\"predicted_label\":1"), "{}", body(&r));

    let err = f.call(request("text/csv", "a,b")).await.unwrap_err();
    assert!(matches!(&err, InvokeError::UnsupportedMediaType(m) if m.contains("application/jsonlines")), "{err}");

    let mut req = request("application/json", one);
    req.accept = "text/html".into();
    let err = f.call(req).await.unwrap_err();
    assert!(matches!(err, InvokeError::NotAcceptable(_)), "{err}");

    let err = f.call(request("application/json", "{\"features\": ")).await.unwrap_err();
    assert!(matches!(&err, InvokeError::BadInput(m) if m.contains("invalid JSON")), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn digits_rejects_bad_rows_with_reasons() {
    let f = load("digits", "digits", FunctionSpec::default()).await;
    let err = f.call(request("text/csv", "1,2,x")).await.unwrap_err();
    assert!(matches!(&err, InvokeError::BadInput(m) if m.contains("row 1, column 3: `x` is not a number")), "{err}");
    let err = f.call(request("text/csv", &vec!["1"; 63].join(","))).await.unwrap_err();
    assert!(matches!(&err, InvokeError::BadInput(m) if m.contains("has 63 values; expected 64")), "{err}");
}

async fn load_error(wasm_bytes: &[u8], model: &str) -> LoadError {
    nimbus_tests::load_bytes("bad", wasm_bytes, model, FunctionSpec::default()).await.expect_err("load must fail")
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_wasm_is_refused() {
    let err = load_error(b"definitely not wasm", "digits").await;
    assert!(matches!(&err, LoadError::Invalid(m) if m.contains("bad magic")), "{err}");
    let err = load_error(b"\0asm\x01\0\0\0", "digits").await;
    assert!(matches!(&err, LoadError::Invalid(m) if m.contains("core Wasm module")), "{err}");
    let mut truncated = wasm("digits");
    truncated.truncate(truncated.len() / 2);
    let err = load_error(&truncated, "digits").await;
    assert!(matches!(err, LoadError::Invalid(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_outside_the_world_is_refused() {
    let err = load_error(&wasm("plain"), "digits").await;
    assert!(matches!(&err, LoadError::NotAHandler(m) if m.contains("export_handler")), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn init_failure_fails_the_load() {
    // The sentiment handler reads /model/tokenizer.json in init; digits has none.
    let err = load_error(&wasm("sentiment"), "digits").await;
    assert!(matches!(&err, LoadError::Init(m) if m.contains("No such file") || m.contains("tokenizer")), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_graph_and_wrong_shape_are_clear() {
    let f = load("hostile", "digits", FunctionSpec::default()).await;
    let err = f.call(request("text/plain", "graph:nope")).await.unwrap_err();
    assert!(
        matches!(&err, InvokeError::Failed(m) if m.contains("no graph `nope`; this function has: digits")),
        "{err}"
    );
    let err = f.call(request("text/plain", "shape")).await.unwrap_err();
    assert!(
        matches!(&err, InvokeError::BadInput(m) if m.contains("`input` F32 [?, 64] does not accept F32 [1, 3]")),
        "{err}"
    );
    let err = f.call(request("text/plain", "bytes")).await.unwrap_err();
    assert!(matches!(&err, InvokeError::Failed(m) if m.contains("Security") && m.contains("load-by-name")), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_over_the_tier_is_stopped_and_the_function_survives() {
    let spec = FunctionSpec { memory: MemoryTier::new(1024).unwrap(), ..FunctionSpec::default() };
    let f = load("hostile", "digits", spec).await;
    let r = f.call(request("text/plain", "alloc:256")).await.unwrap().response;
    assert_eq!(body(&r), (256 << 20).to_string());
    let err = f.call(request("text/plain", "alloc:1500")).await.unwrap_err();
    assert!(matches!(&err, InvokeError::MemoryExceeded(m) if m.tier_mb == 1024), "{err}");
    assert!(err.to_string().contains("memory limit of 1024 MB exceeded"), "{err}");
    // Tensors held by the host count too.
    let err = f.call(request("text/plain", "tensors:20:100")).await.unwrap_err();
    assert!(matches!(&err, InvokeError::MemoryExceeded(m) if m.tier_mb == 1024), "{err:?}");
    assert_eq!(body(&f.call(request("text/plain", "echo")).await.unwrap().response), "echo");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_ends_one_request_only() {
    let f = load("hostile", "digits", FunctionSpec::default()).await;
    let err = f.call(request("text/plain", "trap")).await.unwrap_err();
    assert!(matches!(&err, InvokeError::Trap(m) if m.contains("hostile guest asked to trap")), "{err}");
    assert_eq!(body(&f.call(request("text/plain", "echo")).await.unwrap().response), "echo");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_times_out_and_the_function_survives() {
    let spec = FunctionSpec { timeout: Duration::from_secs(1), ..FunctionSpec::default() };
    let f = load("hostile", "digits", spec).await;
    let err = f.call(request("text/plain", "loop")).await.unwrap_err();
    assert!(matches!(err, InvokeError::Timeout(d) if d == Duration::from_secs(1)), "{err}");
    assert_eq!(body(&f.call(request("text/plain", "echo")).await.unwrap().response), "echo");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_waited_longer_than_the_timeout_still_serves() {
    let spec = FunctionSpec { timeout: Duration::from_secs(1), ..FunctionSpec::default() };
    let f = load("hostile", "digits", spec).await;
    let instance = f.instance().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (response, _, _retired) = instance.handle(&request("text/plain", "echo")).await;
    assert_eq!(body(&response.unwrap()), "echo");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_gets_a_fresh_instance() {
    let f = load("hostile", "digits", FunctionSpec::default()).await;
    for _ in 0..3 {
        assert_eq!(body(&f.call(request("text/plain", "count")).await.unwrap().response), "1");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_reaches_the_handler() {
    let spec = FunctionSpec { env: vec![("GREETING".into(), "hello".into())], ..FunctionSpec::default() };
    let f = load("hostile", "digits", spec).await;
    assert_eq!(body(&f.call(request("text/plain", "env:GREETING")).await.unwrap().response), "hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_tiers_are_validated() {
    assert!(MemoryTier::new(1024).is_ok());
    assert!(MemoryTier::new(6144).is_ok());
    for bad in [0, 512, 1500, 7168] {
        let err = MemoryTier::new(bad).unwrap_err();
        assert!(err.to_string().contains("1024, 2048"), "{err}");
    }
}

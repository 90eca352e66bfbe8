//! The vision example end to end: a real server, the MobileNetV2 handler
//! deployed with the CLI, images posted over HTTP.

use nimbus_tests::{Answer, Server, root, wasm};

fn post(s: &Server, content_type: &str, body: &[u8]) -> Answer {
    s.http("POST", "/v1/functions/vision/invocations", None, &[("content-type", content_type)], body)
}

/// Checks a successful answer: five classes, probabilities in (0, 1], most likely first.
fn assert_top_five(a: &Answer) {
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), "application/json");
    let classes: Vec<serde_json::Value> = serde_json::from_str(&a.body).unwrap();
    let top: Vec<(i64, f64)> =
        classes.iter().map(|c| (c["label"].as_i64().unwrap(), c["probability"].as_f64().unwrap())).collect();
    assert_eq!(top.len(), 5, "{}", a.body);
    assert!(top.iter().all(|&(label, p)| (0..1000).contains(&label) && p > 0.0 && p <= 1.0), "{}", a.body);
    assert!(top.windows(2).all(|w| w[0].1 >= w[1].1), "not sorted: {}", a.body);
}

#[test]
fn classifies_jpeg_and_png_and_refuses_the_rest() {
    wasm("vision"); // builds the guests once
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("vision", "vision", "vision", &[]);
    let sample = |ext: &str| std::fs::read(root().join("examples/vision").join(format!("sample.{ext}"))).unwrap();

    assert_top_five(&post(&s, "image/jpeg", &sample("jpg"))); // 224x224: no resize
    assert_top_five(&post(&s, "image/png", &sample("png"))); // 128x85: resized

    let a = post(&s, "image/jpeg", b"these bytes are not an image");
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("\"code\":\"bad_input\"") && a.body.contains("image/jpeg"), "{}", a.body);
    let a = post(&s, "text/plain", b"a picture of a cat");
    assert_eq!(a.status, 415, "{}", a.body);
    assert!(a.body.contains("image/png"), "{}", a.body);
}

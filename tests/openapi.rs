//! The OpenAPI document (`GET /v1/openapi.json`) against the real server:
//! schemathesis (PyPI, pinned in `tests/openapi/requirements.txt`, which
//! `make test` installs into the project's venv) generates requests from the
//! document, valid and invalid, sends them to a server with a function
//! deployed, and checks every answer: no 5xx, and status, content type and
//! body as the document says. `tests/openapi/hooks.py` points most of the
//! requests at the deployed functions (one with a handler of its own, one
//! model-only, which `/v2` serves) and asks for logs without following.
//! `SCHEMATHESIS` overrides where schemathesis is.

use nimbus_tests::{Server, model_dir, root, wasm};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// No 5xx; every status, content type, header and body as documented.
const CHECKS: [&str; 5] = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
];

#[test]
fn every_answer_is_what_the_openapi_document_says() {
    let schemathesis = std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".build/venv/bin/schemathesis"));
    assert!(
        schemathesis.is_file(),
        "{} is missing: `make test` installs it (tests/openapi/requirements.txt)",
        schemathesis.display()
    );
    wasm("digits"); // builds the guests (and the built-in handler) once
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    s.deploy("digits", "digits", "digits", &[]);
    let model = model_dir("digits");
    let out = s.cli(&["deploy", "model", "--model-dir", model.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "deploy model: {}", String::from_utf8_lossy(&out.stderr));
    // Something in their logs, events and charts.
    let rows = std::fs::read_to_string(root().join("examples/digits/sample.csv")).unwrap();
    for _ in 0..3 {
        assert_eq!(s.invoke("digits", "text/csv", &rows).status, 200);
    }
    let row: Vec<f32> = rows.lines().next().unwrap().split(',').map(|v| v.trim().parse().unwrap()).collect();
    let infer = serde_json::json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": row}]});
    let answer = s.http("POST", "/v2/models/model/infer", None, &[], infer.to_string().as_bytes());
    assert_eq!(answer.status, 200, "{}", answer.body);

    // The document is public, OpenAPI 3.1, and names the token scheme.
    let doc = s.http("GET", "/v1/openapi.json", None, &[], b"");
    assert_eq!((doc.status, doc.header("content-type")), (200, "application/json"), "{}", doc.body);
    let doc: serde_json::Value = serde_json::from_str(&doc.body).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for path in ["/v1/functions/{name}/invocations", "/v1/functions/{name}/logs", "/v2/models/{name}/infer"] {
        assert!(doc["paths"][path].is_object(), "{path} is not in the document");
    }

    // A followed log is a stream that ends when the client leaves:
    // schemathesis reads each for its request timeout, so the hooks keep
    // most generated requests from following. Its head, checked here:
    let head = followed_log_head(&s, "digits");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("event: live"), "{head}");

    let start = Instant::now();
    let status = Command::new(&schemathesis)
        .arg("run")
        .arg(format!("{}/v1/openapi.json", s.url))
        .args(["--header", &format!("Authorization: Bearer {}", s.token)])
        .arg("--checks")
        .arg(CHECKS.join(","))
        // A followed log is read until the request timeout.
        .args(["--max-examples", "25", "--workers", "1", "--request-timeout", "10"])
        .args(["--generation-database", "none", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", root().join("tests/openapi/hooks.py"))
        .env("NIMBUS_OPENAPI_FUNCTIONS", "digits,model")
        .current_dir(dir.path())
        .status()
        .expect("run schemathesis");
    eprintln!("schemathesis took {:.0?}", start.elapsed());
    assert!(status.success(), "schemathesis found answers the document does not describe (its report is above)");
}

/// The head of `GET /v1/functions/{name}/logs?follow=true`: the answer's
/// headers and events up to `live`, read for at most 10 s.
fn followed_log_head(s: &Server, name: &str) -> String {
    let address = s.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!(
        "GET /v1/functions/{name}/logs?follow=true HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\n\r\n",
        s.token
    );
    stream.write_all(request.as_bytes()).unwrap();
    let (mut head, mut buf) = (Vec::new(), [0u8; 4096]);
    while !String::from_utf8_lossy(&head).contains("event: live") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

//! `nimbus serve` end to end: a real server process on loopback, the real
//! CLI deploying real handlers and models, real HTTP.

use nimbus_tests::{Server, model_dir, wasm};
use std::time::Duration;

fn digits_row() -> String {
    std::fs::read_to_string(nimbus_tests::root().join("examples/digits/sample.csv"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

fn start() -> (tempfile::TempDir, Server) {
    wasm("digits"); // builds the guests once
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    (dir, server)
}

#[test]
fn deploy_invoke_update_delete() {
    let (_dir, s) = start();
    let out = s.deploy("fn-1", "digits", "digits", &[]);
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["version"], 1);

    let a = s.invoke("fn-1", "text/csv", &digits_row());
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.starts_with("[{\"predicted_label\":0"), "{}", a.body);
    assert_eq!(a.header("content-type"), "application/json");
    assert_eq!(a.header("x-nimbus-function-version"), "1");
    assert_eq!(a.header("x-nimbus-request-id").len(), 24);
    assert!(a.header("x-nimbus-model-latency-us").parse::<u64>().is_ok());
    assert!(a.header("x-nimbus-overhead-latency-us").parse::<u64>().is_ok());

    // Update: a different handler under the same name.
    s.deploy("fn-1", "hostile", "digits", &["--env", "WHO=v2"]);
    let a = s.invoke("fn-1", "text/plain", "env:WHO");
    assert_eq!((a.status, a.body.as_str()), (200, "v2"));
    assert_eq!(a.header("x-nimbus-function-version"), "2");

    let d = s.http("GET", "/v1/functions/fn-1", Some(&s.token), &[], b"");
    let d: serde_json::Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(d["version"], 2);
    assert_eq!(d["config"]["env"]["WHO"], "v2");
    assert_eq!(d["artifacts"][0]["path"], "digits.onnx");
    assert_eq!(d["invocations"], 2, "counted over both versions");

    let list = s.cli(&["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["functions"].as_array().unwrap().len(), 1);

    assert!(s.cli(&["delete", "fn-1"]).status.success());
    let a = s.invoke("fn-1", "text/plain", "echo");
    assert_eq!(a.status, 404);
    assert!(a.body.contains("\"code\":\"not_found\""), "{}", a.body);
    let again = s.cli(&["delete", "fn-1"]);
    assert_eq!(again.status.code(), Some(1), "a refused request exits 1");
}

/// A second deploy of the same handler, models and environment (another
/// name, another configuration) trusts what the first measured: it loads
/// nothing and starts at zero. Listing pages through every function.
#[test]
fn copies_start_at_zero_and_the_list_pages() {
    let (_dir, s) = start();
    s.deploy("a-0", "digits", "digits", &[]);
    let first: serde_json::Value =
        serde_json::from_str(&s.http("GET", "/v1/functions/a-0", Some(&s.token), &[], b"").body).unwrap();
    assert_eq!(first["state"], "warm", "a first deploy loads and measures the function");
    assert!(first["instances"]["model_memory_bytes"].as_u64().unwrap() > 0);
    for i in 1..=4 {
        s.deploy(&format!("a-{i}"), "digits", "digits", &["--memory", "3072"]);
    }
    let copy: serde_json::Value =
        serde_json::from_str(&s.http("GET", "/v1/functions/a-3", Some(&s.token), &[], b"").body).unwrap();
    assert_eq!(copy["state"], "scaled-to-zero", "{copy}");
    let a = s.invoke("a-3", "text/csv", &digits_row());
    assert_eq!(a.status, 200, "{}", a.body);
    let measured = s.metric("nimbus_model_memory_bytes", "a-3");
    assert!(measured > 0.0, "a copy reports what the first deploy measured");

    let page = |query: &str| -> serde_json::Value {
        let a = s.http("GET", &format!("/v1/functions{query}"), Some(&s.token), &[], b"");
        assert_eq!(a.status, 200, "{}", a.body);
        serde_json::from_str(&a.body).unwrap()
    };
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_owned()).collect()
    };
    let p1 = page("?limit=2");
    assert_eq!((names(&p1), p1["next"].as_str()), (vec!["a-0".to_owned(), "a-1".to_owned()], Some("a-1")));
    let p3 = page("?limit=2&after=a-3");
    assert_eq!(names(&p3), ["a-4"]);
    assert!(p3.get("next").is_none(), "the last page has no cursor: {p3}");
    for bad in ["?limit=0", "?limit=1001", "?limit=x", "?page=2"] {
        let a = s.http("GET", &format!("/v1/functions{bad}"), Some(&s.token), &[], b"");
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
    }
    let all = s.cli(&["list", "--json", "--page-size", "2"]);
    let all: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(names(&all), ["a-0", "a-1", "a-2", "a-3", "a-4"]);
}

#[test]
fn every_status_code_from_a_real_request() {
    let (_dir, s) = start();
    s.deploy("digits", "digits", "digits", &["--payload-limit", "1000"]);
    s.deploy("hostile", "hostile", "digits", &["--timeout", "1", "--memory", "1024"]);

    let status = |a: nimbus_tests::Answer, code: &str| {
        assert!(a.body.contains(&format!("\"code\":\"{code}\"")), "{}", a.body);
        a.status
    };
    assert_eq!(status(s.invoke("digits", "text/csv", "1,2,x"), "bad_input"), 400);
    assert_eq!(status(s.invoke("nobody", "text/csv", "1"), "not_found"), 404);
    assert_eq!(status(s.invoke("digits", "text/csv", &"1,".repeat(600)), "payload_too_large"), 413);
    assert_eq!(status(s.invoke("digits", "application/json", "{}"), "unsupported_media_type"), 415);
    let a = s.http(
        "POST",
        "/v1/functions/digits/invocations",
        None,
        &[("content-type", "text/csv"), ("accept", "text/html")],
        digits_row().as_bytes(),
    );
    assert_eq!(status(a, "not_acceptable"), 406);
    assert_eq!(status(s.invoke("hostile", "text/plain", "trap"), "handler_trapped"), 500);
    assert_eq!(status(s.invoke("hostile", "text/plain", "alloc:1500"), "memory_exceeded"), 500);
    assert_eq!(status(s.invoke("hostile", "text/plain", "loop"), "timeout"), 504);
    // ... and the function still serves.
    assert_eq!(s.invoke("hostile", "text/plain", "echo").body, "echo");

    let metrics = s.http("GET", "/metrics", Some(&s.token), &[], b"").body;
    assert!(metrics.contains("nimbus_invocation_5xx_errors_total{function=\"hostile\",version=\"1\"} 3"), "{metrics}");
    assert!(metrics.contains("nimbus_invocation_4xx_errors_total{function=\"digits\",version=\"1\"} 4"), "{metrics}");
}

#[test]
fn auth_is_required_where_it_should_be() {
    let (_dir, s) = start();
    for (method, path) in [
        ("GET", "/v1/functions"),
        ("GET", "/v1/functions/x"),
        ("DELETE", "/v1/functions/x"),
        ("PUT", "/v1/functions/x"),
    ] {
        for token in [None, Some("wrong")] {
            let a = s.http(method, path, token, &[], b"{}");
            assert_eq!(a.status, 401, "{method} {path} with {token:?}");
            assert!(a.body.contains("unauthorized"), "{}", a.body);
        }
    }
    let out = std::process::Command::new(nimbus_tests::nimbus_bin())
        .args(["list", "--server", &s.url, "--token", "wrong"])
        .env_remove("NIMBUS_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Bearer"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn invoke_token_guards_invocations_when_set() {
    wasm("digits");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--invoke-token", "let-me-in"]);
    s.deploy("digits", "digits", "digits", &[]);
    assert_eq!(s.invoke("digits", "text/csv", &digits_row()).status, 401);
    let path = "/v1/functions/digits/invocations";
    let with = |t: &str| s.http("POST", path, Some(t), &[("content-type", "text/csv")], digits_row().as_bytes()).status;
    assert_eq!(with("let-me-in"), 200);
    assert_eq!(with(&s.token.clone()), 200);
    assert_eq!(with("nope"), 401);

    // Without a token, a function that exists and one that does not look
    // the same, and neither is counted.
    let exists = s.invoke("digits", "text/csv", "1");
    let absent = s.invoke("nobody", "text/csv", "1");
    assert_eq!((exists.status, absent.status), (401, 401));
    assert_eq!(exists.body, absent.body);
    assert_eq!(exists.header("x-nimbus-function-version"), "");
    let metrics = s.http("GET", "/metrics", Some(&s.token), &[], b"").body;
    assert!(metrics.contains("nimbus_invocation_4xx_errors_total{function=\"digits\",version=\"1\"} 0"), "{metrics}");
}

#[test]
fn metrics_need_a_token_unless_opened() {
    wasm("digits");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--metrics-token", "scraper"]);
    s.deploy("secret-name", "digits", "digits", &[]);
    for token in [None, Some("wrong")] {
        let a = s.http("GET", "/metrics", token, &[], b"");
        assert_eq!(a.status, 401, "{token:?}");
        assert!(!a.body.contains("secret-name"), "{}", a.body);
    }
    for token in ["scraper", s.token.as_str()] {
        let a = s.http("GET", "/metrics", Some(token), &[], b"");
        assert_eq!(a.status, 200);
        assert!(a.body.contains("secret-name"), "{}", a.body);
    }
    drop(s);
    let dir = tempfile::tempdir().unwrap();
    let open = Server::start(dir.path(), &["--metrics-open"]);
    assert_eq!(open.http("GET", "/metrics", None, &[], b"").status, 200);
}

#[test]
fn bad_deploys_are_refused_and_the_old_version_keeps_serving() {
    let (_dir, s) = start();
    s.deploy("f", "digits", "digits", &[]);
    let refused = |args: &[&str]| {
        let mut all = vec!["deploy", "f", "--json"];
        all.extend_from_slice(args);
        let out = s.cli(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), b"not wasm at all").unwrap();
    let digits_dir = model_dir("digits");
    let e = refused(&["--wasm", junk.path().to_str().unwrap(), "--model-dir", digits_dir.to_str().unwrap()]);
    assert!(e.contains("invalid_component") && e.contains("bad magic"), "{e}");
    let plain = nimbus_tests::root().join("examples/target/wasm32-wasip2/release/plain.wasm");
    let e = refused(&["--wasm", plain.to_str().unwrap(), "--model-dir", digits_dir.to_str().unwrap()]);
    assert!(e.contains("not_a_handler"), "{e}");
    let sentiment = nimbus_tests::root().join("examples/target/wasm32-wasip2/release/sentiment.wasm");
    let e = refused(&["--wasm", sentiment.to_str().unwrap(), "--model-dir", digits_dir.to_str().unwrap()]);
    assert!(e.contains("init_failed"), "{e}");
    let e = s.cli(&[
        "deploy",
        "f",
        "--wasm",
        plain.to_str().unwrap(),
        "--model-dir",
        digits_dir.to_str().unwrap(),
        "--memory",
        "1000",
    ]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("memory must be one of"), "refused before upload");
    let a = s.http("PUT", "/v1/functions/Bad_Name", Some(&s.token), &[], b"{\"wasm\":\"00\"}");
    assert_eq!(a.status, 400);

    let a = s.invoke("f", "text/csv", &digits_row());
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-nimbus-function-version"), "1");
}

#[test]
fn restart_serves_every_function_without_recompiling() {
    let (_dir, s) = start();
    s.deploy("digits", "digits", "digits", &[]);
    s.deploy("sentiment", "sentiment", "sentiment", &[]);
    let compiled = |s: &Server| std::fs::read_dir(s.data_dir.join("compiled")).unwrap().count();
    let before = compiled(&s);
    let s = s.kill_and_restart();
    assert_eq!(compiled(&s), before, "nothing recompiled");
    let a = s.invoke("sentiment", "application/jsonlines", "{\"features\": [\"I love this product!\"]}");
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("\"predicted_label\":1"), "{}", a.body);
    assert_eq!(s.invoke("digits", "text/csv", &digits_row()).status, 200);
}

#[test]
fn a_crash_mid_deploy_leaves_old_or_new_whole() {
    let (_dir, mut s) = start();
    s.deploy("f", "digits", "digits", &[]);
    // Replace it with the sentiment handler (seconds of snapshotting and
    // compiling) and kill the server with SIGKILL while that runs.
    let wasm = nimbus_tests::root().join("examples/target/wasm32-wasip2/release/sentiment.wasm");
    let model = model_dir("sentiment");
    let deploy = std::process::Command::new(nimbus_tests::nimbus_bin())
        .args(["deploy", "f", "--wasm", wasm.to_str().unwrap(), "--model-dir", model.to_str().unwrap()])
        .env("NIMBUS_SERVER", &s.url)
        .env("NIMBUS_TOKEN", &s.token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the big model is uploaded, then crash mid-deploy.
    let blobs = s.data_dir.join("blobs/sha256");
    assert!(Server::wait_until(Duration::from_secs(60), || std::fs::read_dir(&blobs).unwrap().count() >= 5));
    std::thread::sleep(Duration::from_millis(300));
    s.kill();
    let mut deploy = deploy;
    let _ = deploy.wait();
    let s = s.kill_and_restart();
    let d = s.http("GET", "/v1/functions/f", Some(&s.token), &[], b"");
    let d: serde_json::Value = serde_json::from_str(&d.body).unwrap();
    match d["version"].as_u64() {
        Some(1) => assert_eq!(s.invoke("f", "text/csv", &digits_row()).status, 200),
        Some(2) => {
            let a = s.invoke("f", "application/jsonlines", "{\"features\": [\"I love this product!\"]}");
            assert_eq!(a.status, 200, "{}", a.body);
        }
        v => panic!("function is neither old nor new: {v:?} {d}"),
    }
}

#[test]
fn unreferenced_blobs_are_collected() {
    wasm("digits");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--blob-grace", "0"]);
    s.deploy("a", "digits", "digits", &[]);
    s.deploy("b", "hostile", "digits", &[]);
    let blobs = |s: &Server| std::fs::read_dir(s.data_dir.join("blobs/sha256")).unwrap().count();
    assert_eq!(blobs(&s), 3, "digits.wasm, hostile.wasm, digits.onnx shared");
    assert!(s.cli(&["delete", "a"]).status.success());
    assert_eq!(blobs(&s), 2, "digits.wasm collected, the shared model kept");
    assert!(s.cli(&["delete", "b"]).status.success());
    assert_eq!(blobs(&s), 0);
    let compiled: Vec<_> = std::fs::read_dir(s.data_dir.join("compiled"))
        .unwrap()
        .chain(std::fs::read_dir(s.data_dir.join("compiled/ort")).unwrap())
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "ort")
        .collect();
    assert!(compiled.is_empty(), "compiled snapshots and optimized graphs are collected too: {compiled:?}");
}

#[test]
fn deploy_reads_nimbus_toml() {
    let (_dir, s) = start();
    let out = std::process::Command::new(nimbus_tests::nimbus_bin())
        .args(["deploy", "--json"])
        .current_dir(nimbus_tests::root().join("examples/digits"))
        .env("NIMBUS_SERVER", &s.url)
        .env("NIMBUS_TOKEN", &s.token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["name"], "digits");
    assert_eq!(record["config"]["memory_mb"], 1024);
    assert_eq!(record["config"]["timeout_s"], 30);
    assert_eq!(s.invoke("digits", "text/csv", &digits_row()).status, 200);
}

#[test]
fn deploy_errors_say_what_is_wrong_before_any_upload() {
    let (_dir, s) = start();
    let wasm = nimbus_tests::root().join("examples/target/wasm32-wasip2/release/digits.wasm");
    let model = model_dir("digits");
    let deploy = |server: &str, token: Option<&str>| {
        let mut cmd = std::process::Command::new(nimbus_tests::nimbus_bin());
        cmd.args(["deploy", "f", "--wasm", wasm.to_str().unwrap(), "--model-dir", model.to_str().unwrap()])
            .args(["--server", server])
            .env_remove("NIMBUS_TOKEN");
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for token in [None, Some("wrong")] {
        let (code, err) = deploy(&s.url, token);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("needs `Authorization: Bearer <token>`; pass --token or set NIMBUS_TOKEN"), "{err}");
    }
    let blobs = std::fs::read_dir(s.data_dir.join("blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 0, "nothing was uploaded");
    let (code, err) = deploy("http://127.0.0.1:9", Some(&s.token));
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("cannot reach the server"), "{err}");
}

#[test]
fn early_answers_reach_a_client_that_is_still_sending() {
    wasm("digits");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--invoke-token", "let-me-in"]);
    s.deploy("digits", "digits", "digits", &["--payload-limit", "1000"]);
    let big = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(big.path(), vec![b'1'; 10 << 20]).unwrap();
    let curl = |token: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-X", "POST", "-H", "content-type: text/csv", "-H", "transfer-encoding: chunked"])
            .args(["-H", &format!("authorization: Bearer {token}"), "--data-binary"])
            .arg(format!("@{}", big.path().display()))
            .arg(format!("{}/v1/functions/digits/invocations", s.url))
            .args(["-w", "\n%{http_code}"])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let too_large = curl("let-me-in");
    assert!(too_large.ends_with("\n413") && too_large.contains("payload_too_large"), "{too_large}");
    let refused = curl("wrong");
    assert!(refused.ends_with("\n401") && refused.contains("unauthorized"), "{refused}");
    // The CLI, which writes its whole body before reading, sees them too.
    let data = format!("@{}", big.path().display());
    let cli = |token: &str| {
        let out = std::process::Command::new(nimbus_tests::nimbus_bin())
            .args(["invoke", "digits", "--content-type", "text/csv", "--data", &data, "--server", &s.url])
            .args(["--token", token])
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = cli("let-me-in");
    assert!(code == Some(1) && err.contains("413 payload_too_large"), "{err}");
    let (code, err) = cli("wrong");
    assert!(code == Some(1) && err.contains("401 unauthorized"), "{err}");
    assert_eq!(s.invoke("digits", "text/csv", "1").status, 401, "the server still serves");
}

#[test]
fn a_bundle_with_a_file_used_as_a_folder_is_a_bad_request() {
    let (_dir, s) = start();
    let put = |bytes: &[u8]| {
        let digest = nimbus::store::Digest::of(bytes);
        let a = s.http("PUT", &format!("/v1/blobs/{}", digest.as_str()), Some(&s.token), &[], bytes);
        assert_eq!(a.status, 201, "{}", a.body);
        digest
    };
    let wasm = put(&wasm("digits"));
    let model = put(&std::fs::read(model_dir("digits").join("digits.onnx")).unwrap());
    let bundle = serde_json::json!({
        "wasm": wasm.as_str(),
        "artifacts": [{"path": "a", "digest": model.as_str()}, {"path": "a/b.onnx", "digest": model.as_str()}],
    });
    let a = s.http("PUT", "/v1/functions/f", Some(&s.token), &[], bundle.to_string().as_bytes());
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("`a` is a file"), "{}", a.body);
}

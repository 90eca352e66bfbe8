//! Restarts: functions come back at zero (nothing loaded until asked),
//! provisioned ones are warm again without a request, a function that
//! cannot load any more fails alone with a reason, and deploying what is
//! already live changes nothing.

use nimbus_tests::{Server, wasm};
use std::time::Duration;

fn digits_row() -> String {
    let sample = std::fs::read_to_string(nimbus_tests::root().join("examples/digits/sample.csv")).unwrap();
    sample.lines().next().unwrap().to_owned()
}

fn start() -> (tempfile::TempDir, Server) {
    wasm("digits");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    (dir, server)
}

fn describe(s: &Server, name: &str) -> serde_json::Value {
    serde_json::from_str(&s.http("GET", &format!("/v1/functions/{name}"), Some(&s.token), &[], b"").body).unwrap()
}

#[test]
fn a_restart_brings_functions_back_at_zero_and_provisioned_ones_warm() {
    let (_dir, s) = start();
    let empty = s.rss_mib();
    for name in ["a", "b", "c"] {
        s.deploy(name, "digits", "digits", &[]);
    }
    s.deploy("p", "hostile", "digits", &["--provisioned", "1"]);
    let s = s.kill_and_restart();
    for name in ["a", "b", "c"] {
        assert_eq!(s.metric("nimbus_loaded", name), 0.0, "{name} was loaded at start");
        assert_eq!(describe(&s, name)["state"], "scaled-to-zero");
    }
    assert!(
        Server::wait_until(Duration::from_secs(20), || s.metric("nimbus_warm_instances", "p") == 1.0),
        "the provisioned function is warm again without a request"
    );
    assert!(s.rss_mib() < empty + 150, "{} MiB at zero against {empty} MiB empty", s.rss_mib());
    let a = s.invoke("a", "text/csv", &digits_row());
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(s.metric("nimbus_cold_starts_total", "a"), 1.0);
    assert_eq!(s.metric("nimbus_loaded", "b"), 0.0, "only what was asked for loads");
}

#[test]
fn a_function_that_cannot_load_fails_alone_and_says_why() {
    let (_dir, s) = start();
    s.deploy("fine", "digits", "digits", &[]);
    let out = s.deploy("broken", "hostile", "digits", &[]);
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let wasm = record["wasm"].as_str().unwrap().to_owned();
    let out = s.deploy("lost", "hostile", "sentiment", &[]);
    let lost: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = s.data_dir.clone();
    let mut s = s;
    s.kill();
    // Another's artifacts are gone, folder and blob.
    std::fs::remove_dir_all(data.join("artifacts").join(lost["artifacts_digest"].as_str().unwrap())).unwrap();
    std::fs::remove_file(data.join("blobs/sha256").join(lost["artifacts"][0]["digest"].as_str().unwrap())).unwrap();
    // The handler's blob is gone, and with it every compiled snapshot
    // (a lost cache is recompiled on first use, not at start).
    std::fs::remove_file(data.join("blobs/sha256").join(&wasm)).unwrap();
    std::fs::remove_dir_all(data.join("compiled")).unwrap();
    let s = Server::start(&data, &[]);
    assert_eq!(s.invoke("fine", "text/csv", &digits_row()).status, 200);
    let a = s.invoke("broken", "text/plain", "echo");
    assert_eq!(a.status, 500, "{}", a.body);
    assert!(a.body.contains("cold_start_failed") && !a.body.contains(data.to_str().unwrap()), "{}", a.body);
    let why = describe(&s, "broken")["load_error"].as_str().unwrap_or_default().to_owned();
    assert!(why.contains(&format!("blob sha256:{wasm} has not been uploaded")), "{why}");
    let a = s.invoke("lost", "text/plain", "echo");
    assert_eq!((a.status, a.body.contains("cold_start_failed")), (500, true), "{}", a.body);
    let why = describe(&s, "lost")["load_error"].as_str().unwrap_or_default().to_owned();
    assert!(why.contains("has not been uploaded"), "{why}");
    assert_eq!(s.invoke("fine", "text/csv", &digits_row()).status, 200, "the other still serves");
}

#[test]
fn deploying_what_is_live_changes_nothing() {
    let (_dir, s) = start();
    let first: serde_json::Value = serde_json::from_slice(&s.deploy("f", "digits", "digits", &[]).stdout).unwrap();
    assert_eq!((first["version"].as_u64(), first["deployment"].as_str()), (Some(1), Some("created")));
    let again: serde_json::Value = serde_json::from_slice(&s.deploy("f", "digits", "digits", &[]).stdout).unwrap();
    assert_eq!((again["version"].as_u64(), again["deployment"].as_str()), (Some(1), Some("unchanged")));
    let changed: serde_json::Value =
        serde_json::from_slice(&s.deploy("f", "digits", "digits", &["--memory", "1024"]).stdout).unwrap();
    assert_eq!((changed["version"].as_u64(), changed["deployment"].as_str()), (Some(2), Some("updated")));
    let human = s.cli(&[
        "deploy",
        "f",
        "--wasm",
        &format!("{}", nimbus_tests::root().join("examples/target/wasm32-wasip2/release/digits.wasm").display()),
        "--model-dir",
        nimbus_tests::model_dir("digits").to_str().unwrap(),
        "--memory",
        "1024",
    ]);
    assert!(
        String::from_utf8_lossy(&human.stdout).starts_with("unchanged `f` version 2"),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );
}

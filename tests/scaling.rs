//! Serverless scaling with a real server: instances ramp up to max
//! concurrency and no further, the next request is throttled, provisioned
//! instances exist before any request, idle functions scale to zero (their
//! sessions dropped) and come back on the next request as a cold start, and
//! every step shows in /metrics.

use nimbus_tests::{Server, wasm};
use std::time::{Duration, Instant};

fn start(extra: &[&str]) -> (tempfile::TempDir, Server) {
    wasm("digits");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), extra);
    (dir, server)
}

fn describe(s: &Server, name: &str) -> serde_json::Value {
    serde_json::from_str(&s.http("GET", &format!("/v1/functions/{name}"), Some(&s.token), &[], b"").body).unwrap()
}

#[test]
fn concurrency_ramps_to_max_then_throttles() {
    let (_dir, s) = start(&[]);
    s.deploy("h", "hostile", "digits", &["--max-concurrency", "2", "--queue-timeout-ms", "300"]);
    assert_eq!(s.metric("nimbus_busy_instances", "h"), 0.0);
    let s = std::sync::Arc::new(s);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || s.invoke("h", "text/plain", "sleep:2000"))
        })
        .collect();
    assert!(Server::wait_until(Duration::from_secs(10), || s.metric("nimbus_busy_instances", "h") == 2.0));
    let start = Instant::now();
    let third = s.invoke("h", "text/plain", "echo");
    assert_eq!(third.status, 429, "{}", third.body);
    assert!(start.elapsed() >= Duration::from_millis(250), "waited for a slot first");
    assert_eq!(third.header("retry-after"), "1");
    assert!(third.body.contains("\"code\":\"throttled\""), "{}", third.body);
    assert_eq!(s.metric("nimbus_busy_instances", "h"), 2.0, "no instance beyond max");
    for t in slow {
        let a = t.join().unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "slept"));
    }
    assert_eq!(s.metric("nimbus_throttles_total", "h"), 1.0);
    assert_eq!(s.metric("nimbus_cold_starts_total", "h"), 2.0, "both found no ready instance");
    // After the burst the pool keeps the peak's worth of instances ready...
    assert!(Server::wait_until(Duration::from_secs(5), || s.metric("nimbus_warm_instances", "h") == 2.0));
    // ...so the next requests start warm.
    assert_eq!(s.invoke("h", "text/plain", "echo").status, 200);
    assert_eq!(s.metric("nimbus_cold_starts_total", "h"), 2.0);
    assert_eq!(s.metric("nimbus_invocations_total", "h"), 4.0);
}

#[test]
fn provisioned_instances_exist_before_the_first_request() {
    let (_dir, s) = start(&["--idle-timeout", "1"]);
    s.deploy("d", "digits", "digits", &["--provisioned", "3", "--max-concurrency", "5"]);
    let d = describe(&s, "d");
    assert_eq!(d["instances"]["warm_instances"], 3, "{d}");
    assert_eq!(d["invocations"], 0);
    // Idle past the timeout: provisioned instances stay.
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(s.metric("nimbus_loaded", "d"), 1.0);
    assert_eq!(s.metric("nimbus_warm_instances", "d"), 3.0);
    let row = std::fs::read_to_string(nimbus_tests::root().join("examples/digits/sample.csv")).unwrap();
    assert_eq!(s.invoke("d", "text/csv", row.lines().next().unwrap()).status, 200);
    assert_eq!(s.metric("nimbus_cold_starts_total", "d"), 0.0);
}

#[test]
fn idle_functions_scale_to_zero_and_come_back() {
    let (_dir, s) = start(&[]);
    s.deploy("sent", "sentiment", "sentiment", &["--idle-timeout", "1"]);
    let body = "{\"features\": [\"I love this product!\"]}";
    assert_eq!(s.invoke("sent", "application/jsonlines", body).status, 200);
    assert_eq!(s.metric("nimbus_loaded", "sent"), 1.0);
    assert!(s.metric("nimbus_sessions", "sent") >= 2.0, "encoder and head");
    assert!(s.metric("nimbus_model_memory_bytes", "sent") > 20e6);

    assert!(Server::wait_until(Duration::from_secs(10), || s.metric("nimbus_loaded", "sent") == 0.0));
    assert_eq!(s.metric("nimbus_sessions", "sent"), 0.0, "sessions dropped");
    assert_eq!(s.metric("nimbus_warm_instances", "sent"), 0.0);
    assert_eq!(s.metric("nimbus_model_memory_bytes", "sent"), 0.0);
    assert_eq!(describe(&s, "sent")["state"], "scaled-to-zero");
    let cold_before = s.metric("nimbus_cold_starts_total", "sent");
    let setups_before = s.metric("nimbus_model_setup_seconds_count", "sent");

    let a = s.invoke("sent", "application/jsonlines", body);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("\"predicted_label\":1"), "{}", a.body);
    assert_eq!(s.metric("nimbus_cold_starts_total", "sent"), cold_before + 1.0);
    assert_eq!(s.metric("nimbus_model_setup_seconds_count", "sent"), setups_before + 1.0);
    assert_eq!(s.metric("nimbus_loaded", "sent"), 1.0);
    let d = describe(&s, "sent");
    assert_eq!(d["state"], "warm");
    assert!(d["latency"]["samples"].as_u64().unwrap() >= 2, "{d}");
}

#[test]
fn a_looping_handler_times_out_and_the_pool_stays_healthy() {
    let (_dir, s) = start(&[]);
    s.deploy("h", "hostile", "digits", &["--timeout", "1", "--max-concurrency", "1"]);
    let a = s.invoke("h", "text/plain", "loop");
    assert_eq!(a.status, 504, "{}", a.body);
    assert_eq!(s.metric("nimbus_busy_instances", "h"), 0.0, "the slot is free again");
    assert_eq!(s.invoke("h", "text/plain", "echo").body, "echo");
    assert_eq!(s.metric("nimbus_invocation_5xx_errors_total", "h"), 1.0);
    assert!(s.metric("nimbus_model_latency_seconds_count", "h") >= 1.0);
}

#[test]
fn the_memory_budget_scales_least_recently_used_functions_to_zero() {
    // Budget for one 2048 MB function: loading a second evicts the first.
    let (_dir, s) = start(&["--memory-budget-mb", "3000"]);
    s.deploy("a", "hostile", "digits", &[]);
    s.deploy("b", "hostile", "digits", &[]);
    // A copy of `a`'s code and model deploys at zero; a request loads it.
    assert_eq!(s.metric("nimbus_loaded", "b"), 0.0);
    assert_eq!(s.invoke("b", "text/plain", "echo").status, 200);
    assert!(Server::wait_until(Duration::from_secs(5), || s.metric("nimbus_loaded", "a") == 0.0));
    assert_eq!(s.metric("nimbus_loaded", "b"), 1.0, "the most recently used stays");
    assert_eq!(s.invoke("a", "text/plain", "echo").status, 200, "and comes back when called");
    assert!(Server::wait_until(Duration::from_secs(5), || s.metric("nimbus_loaded", "b") == 0.0));
}

#[test]
fn provisioned_memory_must_fit_the_host() {
    // A 4096 MB budget: two 2048 MB instances kept warm fill it.
    let (_dir, s) = start(&["--memory-budget-mb", "4096"]);
    s.deploy("a", "hostile", "digits", &["--provisioned", "1", "--memory", "2048"]);
    let refused = s.try_deploy("b", "hostile", &nimbus_tests::model_dir("digits"), &["--provisioned", "2"]);
    assert_eq!(refused.status.code(), Some(1));
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(
        e.contains("over_capacity") && e.contains("would reserve 6144 MB") && e.contains("--memory-budget-mb"),
        "{e}"
    );
    s.deploy("b", "hostile", "digits", &["--provisioned", "1"]);
    // Raising `a` past what is left is refused too; `a` keeps serving as it was.
    let refused = s.try_deploy("a", "hostile", &nimbus_tests::model_dir("digits"), &["--provisioned", "2"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("over_capacity"));
    assert_eq!(describe(&s, "a")["config"]["provisioned_concurrency"], 1);
    assert_eq!(s.invoke("a", "text/plain", "echo").status, 200);
}

/// `nimbus_held_memory_bytes`: requests' and loaded sessions' memory.
fn held(s: &Server) -> u64 {
    let text = s.http("GET", "/metrics", Some(&s.token), &[], b"").body;
    text.lines().find_map(|l| l.strip_prefix("nimbus_held_memory_bytes ")).unwrap().parse().unwrap()
}

#[test]
fn cold_starts_wait_for_memory_instead_of_going_over_it() {
    let (dir, s) = start(&[]);
    let one = ["--max-concurrency", "1"];
    s.deploy("f-0", "hostile", "digits", &one);
    let sessions = describe(&s, "f-0")["instances"]["model_memory_bytes"].as_u64().unwrap();
    for i in 1..6 {
        s.deploy(&format!("f-{i}"), "hostile", "digits", &one);
    }
    // What one request's instance holds, read while one sleeps.
    let s = std::sync::Arc::new(s);
    let sleeper = {
        let s = s.clone();
        std::thread::spawn(move || s.invoke("f-0", "text/plain", "sleep:1000").status)
    };
    std::thread::sleep(Duration::from_millis(500));
    let during = held(&s);
    assert_eq!(sleeper.join().unwrap(), 200);
    let instance = during.saturating_sub(held(&s));
    // Room for two loaded copies and their requests, not for three.
    let budget_mb = (2 * sessions + 3 * instance).div_ceil(1 << 20) + 8;
    let mut s = std::sync::Arc::into_inner(s).unwrap();
    s.terminate(Duration::from_secs(30));
    let budget = budget_mb.to_string();
    let s = std::sync::Arc::new(Server::start(dir.path(), &["--memory-budget-mb", &budget]));
    let watch = {
        let s = s.clone();
        std::thread::spawn(move || (0..100).map(|_| (held(&s), std::thread::sleep(Duration::from_millis(30))).0).max())
    };
    let burst: Vec<_> = (0..6)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || s.invoke(&format!("f-{i}"), "text/plain", "sleep:300"))
        })
        .collect();
    for t in burst {
        let a = t.join().unwrap();
        assert_eq!(a.status, 200, "every first request is answered, some after waiting: {}", a.body);
    }
    let most = watch.join().unwrap().unwrap();
    assert!(most <= budget_mb << 20, "held {most} bytes, over the budget of {budget_mb} MB");
    assert!(most > (2 * sessions), "two functions were loaded at once ({most} bytes held at most)");
}

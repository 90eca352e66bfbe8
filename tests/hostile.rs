//! Hostile functions against a real server: each case is something a user
//! can upload, and each test asserts containment: the right status, the
//! server alive and serving another function at once, its memory back under
//! a bound, and nothing about the host leaked.
//!
//! Hostile models are generated at test time by `tests/hostile_models.py`
//! (from the pinned `onnx` package in the project's venv).

use nimbus_tests::{Answer, Server, hostile_model, root, wasm};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn digits_row() -> String {
    let sample = std::fs::read_to_string(root().join("examples/digits/sample.csv")).unwrap();
    sample.lines().next().unwrap().to_owned()
}

fn start(extra: &[&str]) -> (tempfile::TempDir, Server) {
    wasm("hostile"); // builds the guests once
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), extra);
    (dir, server)
}

fn code(a: &Answer) -> String {
    serde_json::from_str::<serde_json::Value>(&a.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(String::from))
        .unwrap_or_default()
}

/// The other function still answers, and promptly: containment, not a
/// benchmark (a server that is stuck takes tens of seconds).
fn others_still_served(s: &Server) {
    let start = Instant::now();
    let a = s.invoke("bystander", "text/csv", &digits_row());
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(start.elapsed() < Duration::from_secs(3), "a bystander took {:?}", start.elapsed());
}

#[test]
fn a_sleep_in_wasi_ends_at_the_deadline() {
    let (_dir, s) = start(&[]);
    s.deploy("bystander", "digits", "digits", &[]);
    s.deploy("h", "hostile", "digits", &["--timeout", "2"]);
    let start = Instant::now();
    let a = s.invoke("h", "text/plain", "sleep:10000");
    let took = start.elapsed();
    assert_eq!((a.status, code(&a).as_str()), (504, "timeout"), "{}", a.body);
    assert!(took < Duration::from_millis(3500), "answered after {took:?}");
    assert_eq!(s.invoke("h", "text/plain", "echo").body, "echo");
    others_still_served(&s);
}

#[test]
fn host_side_tensors_count_against_the_tier() {
    let (_dir, s) = start(&[]);
    s.deploy("bystander", "digits", "digits", &[]);
    s.deploy("h", "hostile", "digits", &["--memory", "1024"]);
    let before = s.rss_mib();
    let a = s.invoke("h", "text/plain", "tensors:20:100");
    assert_eq!((a.status, code(&a).as_str()), (500, "memory_exceeded"), "{}", a.body);
    assert!(a.body.contains("1024 MB"), "{}", a.body);
    let a = s.invoke("h", "text/plain", "tensors:2:100");
    assert_eq!((a.status, a.body.as_str()), (200, "2"), "within the tier is fine");
    others_still_served(&s);
    assert!(s.rss_mib() < before + 1200, "server grew from {before} to {} MiB", s.rss_mib());
}

#[test]
fn many_sleeping_requests_do_not_starve_other_functions() {
    let (_dir, s) = start(&[]);
    s.deploy("bystander", "digits", "digits", &[]);
    for f in ["a", "b", "c"] {
        s.deploy(f, "hostile", "digits", &["--max-concurrency", "200", "--timeout", "10"]);
    }
    let s = Arc::new(s);
    let sleepers: Vec<_> = (0..450)
        .map(|i| {
            let s = s.clone();
            let f = ["a", "b", "c"][i % 3];
            std::thread::spawn(move || s.invoke(f, "text/plain", "sleep:4000").status)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    others_still_served(&s);
    for t in sleepers {
        assert_eq!(t.join().unwrap(), 200);
    }
}

/// A host-wide gauge from `/metrics`.
fn gauge(s: &Server, name: &str) -> f64 {
    let text = s.http("GET", "/metrics", Some(&s.token), &[], b"").body;
    let line = text.lines().find_map(|l| l.strip_prefix(&format!("{name} ")));
    line.unwrap_or_else(|| panic!("no {name} in metrics")).parse().unwrap()
}

/// `count` requests at once, spread over `functions`; their answers.
fn burst(s: &Arc<Server>, functions: &[&'static str], count: usize, body: &'static str) -> Vec<Answer> {
    let threads: Vec<_> = (0..count)
        .map(|i| {
            let (s, f) = (s.clone(), functions[i % functions.len()]);
            std::thread::spawn(move || s.invoke(f, "text/plain", body))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn bursts_leave_instance_slots_for_other_functions() {
    // 40 instance slots, 4 of them kept for requests and deploys.
    let (_dir, s) = start(&["--max-instances", "40"]);
    s.deploy("bystander", "digits", "digits", &[]);
    let functions = ["a", "b", "c", "d", "e"];
    for f in functions {
        s.deploy(f, "hostile", "digits", &["--max-concurrency", "20", "--timeout", "10"]);
    }
    let s = Arc::new(s);
    // Bursts of 7 on each: every one fits, and afterwards each function
    // pre-makes instances for its peak, but never into the kept slots.
    let answers = burst(&s, &functions, 35, "sleep:1500");
    assert!(answers.iter().all(|a| a.status == 200), "{:?}", answers.iter().map(|a| &a.body).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(gauge(&s, "nimbus_instance_slots_total"), 40.0);
    let used = gauge(&s, "nimbus_instance_slots_used");
    assert!((30.0..=36.0).contains(&used), "pre-made instances stop short of the kept slots: {used} in use");
    others_still_served(&s);
    let late = s.try_deploy("late", "hostile", &root().join("examples/digits/model"), &["--env", "NEW=1"]);
    assert!(late.status.success(), "a new deploy finds a slot: {}", String::from_utf8_lossy(&late.stderr));

    // More requests at once than there are slots: the extra ones are told
    // the host is at capacity (503), never a 500, and nothing stays stuck.
    let answers = burst(&s, &functions, 60, "sleep:1500");
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(!refused.is_empty(), "60 sleepers cannot all fit in 40 slots");
    for a in &refused {
        assert_eq!((a.status, code(a).as_str()), (503, "at_capacity"), "{}", a.body);
    }
    others_still_served(&s);
}

/// A deploy that reuses an earlier one's measurement must not skip what
/// depends on the tier: the memory `init` left in the snapshot.
#[test]
fn a_copy_on_a_smaller_tier_is_checked_again() {
    let (_dir, s) = start(&[]);
    let models = root().join("examples/digits/model");
    let keep = ["--env", "HOSTILE_INIT=keep:1200"];
    let on = |tier: &'static str| [keep[0], keep[1], "--memory", tier];
    let big = s.try_deploy("big", "hostile", &models, &on("2048"));
    assert!(big.status.success(), "{}", String::from_utf8_lossy(&big.stderr));
    let small = s.try_deploy("small", "hostile", &models, &on("1024"));
    assert_eq!(small.status.code(), Some(1), "refused, as the first deploy on 1024 MB would be");
    let e = String::from_utf8_lossy(&small.stderr);
    assert!(e.contains("init_failed") && e.contains("1024 MB"), "{e}");
    assert_eq!(s.http("GET", "/v1/functions/small", Some(&s.token), &[], b"").status, 404, "nothing deployed");
    let larger = s.try_deploy("larger", "hostile", &models, &on("3072"));
    assert!(larger.status.success(), "{}", String::from_utf8_lossy(&larger.stderr));
    assert_eq!(s.invoke("larger", "text/plain", "echo").status, 200);
}

#[test]
fn init_is_bounded_and_deploys_of_other_names_do_not_wait() {
    let (_dir, s) = start(&[]);
    s.deploy("bystander", "digits", "digits", &[]);
    s.deploy("doomed", "digits", "digits", &[]);
    let s = Arc::new(s);
    let looping = {
        let s = s.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let out = s.try_deploy(
                "looper",
                "hostile",
                &nimbus_tests::model_dir("digits"),
                &["--env", "HOSTILE_INIT=loop", "--init-timeout", "15"],
            );
            (out, start.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    s.deploy("other", "hostile", "digits", &[]);
    assert!(s.cli(&["delete", "doomed"]).status.success());
    // Well before the looping init's 15 s are up (a deploy compiles, so
    // allow for a busy machine).
    assert!(start.elapsed() < Duration::from_secs(10), "a deploy and a delete waited {:?}", start.elapsed());
    others_still_served(&s);

    let (out, took) = looping.join().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("init ran past its limit of 15 s"), "{err}");
    assert!(took < Duration::from_secs(25), "took {took:?}");

    let sleeping = s.try_deploy(
        "sleeper",
        "hostile",
        &nimbus_tests::model_dir("digits"),
        &["--env", "HOSTILE_INIT=sleep:30000", "--init-timeout", "2"],
    );
    assert!(String::from_utf8_lossy(&sleeping.stderr).contains("init ran past its limit of 2 s"));
    assert_eq!(s.invoke("looper", "text/plain", "echo").status, 404, "a failed deploy leaves nothing");
}

#[test]
fn a_model_that_allocates_from_its_input_cannot_take_the_host_down() {
    let (_dir, s) = start(&[]);
    s.deploy("bystander", "digits", "digits", &[]);
    let model = hostile_model("constant-of-shape");
    let out = s.try_deploy("h", "hostile", &model, &["--memory", "1024"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a = s.invoke("h", "text/plain", "cos:1000");
    assert_eq!((a.status, a.body.as_str()), (200, "1000"));
    let before = s.rss_mib();
    for n in ["10000000000", "300000000"] {
        let a = s.invoke("h", "text/plain", &format!("cos:{n}"));
        assert_eq!((a.status, code(&a).as_str()), (500, "memory_exceeded"), "cos:{n}: {}", a.body);
    }
    others_still_served(&s);
    assert!(s.rss_mib() < before + 1200, "server grew from {before} to {} MiB", s.rss_mib());
}

/// A function whose requests were short runs them on the HTTP lane that
/// received them (runtime::placement); once one turns hostile it moves to
/// the guests' executor at its first yield, ends at its deadline like any
/// other, and the front keeps serving meanwhile.
#[test]
fn a_short_function_turned_hostile_leaves_the_front_free() {
    let (_dir, s) = start(&[]);
    s.deploy("bystander", "digits", "digits", &[]);
    s.deploy("h", "hostile", "digits", &["--timeout", "2"]);
    for _ in 0..40 {
        assert_eq!(s.invoke("h", "text/plain", "echo").body, "echo"); // earns the front
    }
    assert!(s.metric("nimbus_lane_runs_total", "h") >= 20.0, "short requests alone run on their lane");
    let s = Arc::new(s);
    let hostile: Vec<_> = ["loop", "sleep:10000"]
        .into_iter()
        .map(|command| {
            let s = s.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                (s.invoke("h", "text/plain", command), start.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let start = Instant::now();
        assert_eq!(s.http("GET", "/healthz", None, &[], b"").status, 200);
        assert!(start.elapsed() < Duration::from_secs(1), "healthz took {:?}", start.elapsed());
        others_still_served(&s);
    }
    for h in hostile {
        let (a, took) = h.join().unwrap();
        assert_eq!((a.status, code(&a).as_str()), (504, "timeout"), "{}", a.body);
        assert!(took < Duration::from_millis(3500), "answered after {took:?}");
    }
    assert_eq!(s.invoke("h", "text/plain", "echo").body, "echo");
    // Earned again, a loop alone starts on the lane and is moved off it.
    for _ in 0..20 {
        s.invoke("h", "text/plain", "echo");
    }
    let moved = s.metric("nimbus_lane_moves_total", "h");
    assert_eq!(s.invoke("h", "text/plain", "loop").status, 504);
    assert_eq!(s.metric("nimbus_lane_moves_total", "h"), moved + 1.0, "the loop left its lane");
}

#[test]
fn an_endless_model_run_is_terminated_at_the_deadline() {
    let (_dir, mut s) = start(&[]);
    s.deploy("bystander", "digits", "digits", &[]);
    let out = s.try_deploy("h", "hostile", &hostile_model("loop-forever"), &["--timeout", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let start = Instant::now();
    let a = s.invoke("h", "text/plain", "spin");
    assert_eq!((a.status, code(&a).as_str()), (504, "timeout"), "{}", a.body);
    assert!(start.elapsed() < Duration::from_millis(3500), "answered after {:?}", start.elapsed());
    others_still_served(&s);

    // The run stopped: the server is idle again (a spinning run would use
    // a core, ~100 ticks a second).
    std::thread::sleep(Duration::from_millis(500));
    let ticks = s.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    assert!(s.cpu_ticks() - ticks < 30, "still busy: {} ticks in 1 s", s.cpu_ticks() - ticks);

    // Start another endless run, then delete the function and stop the
    // server under it: both are prompt.
    let url = format!("{}/v1/functions/h/invocations", s.url);
    let spinner = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        agent.post(&url).content_type("text/plain").send("spin").map(|r| r.status().as_u16())
    });
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    assert!(s.cli(&["delete", "h"]).status.success());
    assert!(start.elapsed() < Duration::from_secs(2), "delete took {:?}", start.elapsed());
    let exit = s.terminate(Duration::from_secs(10));
    assert!(exit.is_some(), "SIGTERM did not stop the server");
    let _ = spinner.join();
}

#[test]
fn model_files_that_reach_outside_their_folder_are_refused() {
    let (_dir, s) = start(&[]);
    s.deploy("bystander", "digits", "digits", &[]);
    // (`ext-symlink` cannot reach a server through the CLI, which uploads
    // what a symlink points to as a plain file; the checker's own test
    // covers it.)
    for case in ["ext-abs", "ext-dotdot", "ext-memaddr", "ext-constant", "ext-subgraph", "ext-sparse"] {
        let out = s.try_deploy(case, "hostile", &hostile_model(case), &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case} was accepted");
        assert!(err.contains("external data"), "{case}: {err}");
        for leak in ["root:", "test-admin-token", s.data_dir.to_str().unwrap()] {
            assert!(!err.contains(leak), "{case} leaked {leak}: {err}");
        }
    }
    let out = s.try_deploy("custom", "hostile", &hostile_model("custom-op"), &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("custom operators are not supported"));
    let out = s.try_deploy("fine", "hostile", &hostile_model("good-external"), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    others_still_served(&s);
}

#[test]
fn graphs_are_limited_by_count_and_measured_size() {
    let (_dir, s) = start(&[]);
    s.deploy("bystander", "digits", "digits", &[]);
    let out = s.try_deploy("many", "hostile", &hostile_model("many-graphs"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("graphs") && err.contains("at most"), "{err}");
    let out = s.try_deploy("big", "hostile", &hostile_model("many-nodes"), &["--memory", "1024"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a 200k-node graph was accepted");
    assert!(err.contains("nodes"), "{err}");
    others_still_served(&s);
}

#[test]
fn the_data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, s) = start(&[]);
    s.deploy("bystander", "digits", "digits", &[]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.data_dir), 0o700);
    for entry in std::fs::read_dir(&s.data_dir).unwrap().flatten() {
        if entry.path().is_dir() {
            assert_eq!(mode(&entry.path()), 0o700, "{}", entry.path().display());
        }
    }
}

#[test]
fn the_checker_sees_every_place_external_data_can_hide() {
    use nimbus::nn::{CheckError, ExternalProblem::*, check_model};
    let check = |case: &str, file: &str| {
        let root = hostile_model(case);
        check_model(&root.join(file), &root)
    };
    for (case, expected, place) in [
        ("ext-abs", Absolute, "(initializer in graph `g`)"),
        ("ext-dotdot", ParentDir, "(initializer in graph `g`)"),
        ("ext-symlink", OutsideRoot, "(initializer in graph `g`)"),
        ("ext-memaddr", MemoryAddress, "(initializer in graph `g`)"),
        ("ext-constant", Absolute, "(attribute `value` of node `c` (Constant) in graph `g`)"),
        ("ext-subgraph", Absolute, "in graph `then` in attribute `then_branch` of node `if` (If) in graph `g`)"),
        ("ext-sparse", Absolute, "(sparse initializer in graph `g`)"),
    ] {
        let e = check(case, "model.onnx").unwrap_err();
        assert!(matches!(&e, CheckError::ExternalData { problem, .. } if **problem == expected), "{case}: {e}");
        assert!(e.to_string().contains(place), "{case}: {e}");
        let root = hostile_model(case);
        assert!(!e.to_string().contains(root.to_str().unwrap()), "{case}: server path in {e}");
    }
    let e = check("custom-op", "model.onnx").unwrap_err();
    assert!(matches!(&e, CheckError::CustomOp { op, domain, .. } if op == "EvilOp" && domain == "evil.custom"), "{e}");
    // What only runs long or large is left to deadlines and memory limits.
    assert_eq!(check("constant-of-shape", "model.onnx").unwrap().nodes, 1);
    assert_eq!(check("loop-forever", "model.onnx").unwrap().nodes, 4);
    assert_eq!(check("many-nodes", "model.onnx").unwrap().nodes, 200_000);
    assert_eq!(check("good-external", "model.onnx").unwrap().external_bytes, 16);
}

//! Seeing what runs, against a real server: each request's record and its
//! guest's lines in the function's log (read, filtered, followed, kept
//! across a restart, bounded on disk), the event history, the timeline
//! behind the console's charts, and the server's own log as JSON.

use nimbus_tests::{Server, wasm};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn start(extra: &[&str]) -> (tempfile::TempDir, Server) {
    wasm("hostile"); // builds the guests once
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), extra);
    (dir, server)
}

fn get(s: &Server, path: &str) -> Value {
    let a = s.http("GET", path, Some(&s.token), &[], b"");
    assert_eq!(a.status, 200, "{path}: {}", a.body);
    serde_json::from_str(&a.body).unwrap()
}

/// Waits for `path` to answer something `ready` accepts; returns it.
fn poll(s: &Server, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let found = Server::wait_until(Duration::from_secs(10), || {
        last = get(s, path);
        ready(&last)
    });
    assert!(found, "{path} never showed it: {last}");
    last
}

fn entries(v: &Value, key: &str) -> Vec<Value> {
    v[key].as_array().cloned().unwrap_or_default()
}

#[test]
fn each_request_leaves_its_record_and_its_guest_lines_tagged_with_its_id() {
    let (_dir, s) = start(&[]);
    s.deploy("h", "hostile", "digits", &[]);
    let said = s.invoke("h", "text/plain", "say:hello log");
    assert_eq!(said.status, 200, "{}", said.body);
    let id = said.header("x-nimbus-request-id").to_owned();
    let refused = s.invoke("h", "text/plain", "no such command");
    assert_eq!(refused.status, 400);

    let path = format!("/v1/functions/h/logs?request={id}");
    let mine = poll(&s, &path, |v| entries(v, "entries").len() == 3);
    let lines: Vec<(String, String)> = entries(&mine, "entries")
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["line"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(
        lines,
        [
            ("stdout".into(), "hello log".into()),
            ("stderr".into(), "to stderr: hello log".into()),
            ("invocation".into(), String::new())
        ]
    );
    let record = &entries(&mine, "entries")[2];
    assert_eq!((record["status"].as_u64(), record["version"].as_u64()), (Some(200), Some(1)));
    assert_eq!((record["bytes_in"].as_u64(), record["bytes_out"].as_u64()), (Some(13), Some(4)));
    assert_eq!(record["cold"], true, "the first request after a deploy's load finds no instance ready");
    assert!(record["model_us"].as_u64().unwrap() > 0 && record["overhead_us"].as_u64().is_some());
    assert_eq!(record["host"].as_str(), Some(s.url.as_str()));

    // Records are written asynchronously (the writer gathers them for a few ms).
    let all = poll(&s, "/v1/functions/h/logs?limit=1", |v| {
        v["truncated"] == true && entries(v, "entries").first().is_some_and(|e| e["status"] == 400)
    });
    let last = &entries(&all, "entries")[0];
    assert_eq!((last["status"].as_u64(), last["error"].as_str()), (Some(400), Some("bad_input")), "{last}");
    assert!(entries(&get(&s, "/v1/functions/h/logs?since=1m"), "entries").len() >= 4);
    assert!(entries(&get(&s, "/v1/functions/h/logs?since=2099-01-01T00:00:00Z"), "entries").is_empty());

    let cli = s.cli(&["logs", "h", "--request", &id]);
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert!(text.contains(&format!("v1  {id}  stdout: hello log")), "{text}");
    assert!(text.contains(&format!("v1  {id}  200  model ")), "{text}");
    let json = s.cli(&["logs", "h", "--json", "--limit", "2"]);
    let parsed: Vec<Value> =
        String::from_utf8_lossy(&json.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(parsed.len(), 2);

    for (path, code) in [
        ("/v1/functions/h/logs?since=yesterday", 400),
        ("/v1/functions/h/logs?limit=0", 400),
        ("/v1/functions/h/logs?request=../x", 400),
        ("/v1/functions/h/logs?colour=red", 400),
        ("/v1/functions/nope/logs", 404),
    ] {
        let a = s.http("GET", path, Some(&s.token), &[], b"");
        assert_eq!(a.status, code, "{path}: {}", a.body);
        assert!(a.body.contains("\"message\""), "{path}: {}", a.body);
    }
    assert_eq!(s.http("GET", "/v1/functions/h/logs", None, &[], b"").status, 401);
}

#[test]
fn a_followed_log_streams_new_requests_as_they_are_served() {
    let (_dir, s) = start(&[]);
    s.deploy("h", "hostile", "digits", &[]);
    s.invoke("h", "text/plain", "say:before");
    let mut follow = Command::new(nimbus_tests::nimbus_bin())
        .args(["logs", "h", "-f", "--limit", "1"])
        .env("NIMBUS_SERVER", &s.url)
        .env("NIMBUS_TOKEN", &s.token)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let backlog = rx.recv_timeout(Duration::from_secs(10)).expect("the backlog");
    assert!(backlog.contains("  200  model "), "the newest record first: {backlog}");
    let id = s.invoke("h", "text/plain", "say:after").header("x-nimbus-request-id").to_owned();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains(&id) && l.contains("stdout: after")) {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("not followed: {seen:?}"));
        seen.push(line);
    }
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn logs_and_events_survive_a_restart_and_stay_under_their_size() {
    let (dir, s) = start(&["--log-max-mb", "1"]);
    s.deploy("h", "hostile", "digits", &[]);
    let big = "x".repeat(100_000);
    let mut last = String::new();
    for _ in 0..20 {
        let a = s.invoke("h", "text/plain", &format!("say:{big}"));
        assert_eq!(a.status, 200);
        last = a.header("x-nimbus-request-id").to_owned();
    }
    poll(&s, &format!("/v1/functions/h/logs?request={last}"), |v| entries(v, "entries").len() == 3);
    let s = s.kill_and_restart();
    let kept = get(&s, &format!("/v1/functions/h/logs?request={last}"));
    assert_eq!(entries(&kept, "entries").len(), 3, "the newest request's lines outlive a crash");
    let line = entries(&kept, "entries")[0]["line"].as_str().unwrap().to_owned();
    assert!(line.len() < 17_000 && line.ends_with(" [cut: 100000 bytes]"), "a long line is cut: {} bytes", line.len());
    let events = get(&s, "/v1/functions/h/events");
    assert!(entries(&events, "events").iter().any(|e| e["kind"] == "deployed"), "{events}");
    let on_disk: u64 =
        std::fs::read_dir(dir.path().join("logs/h")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    // The limit, plus the segment being written.
    assert!(on_disk <= (1 << 20) + (128 << 10), "{on_disk} bytes of logs kept for a 1 MB limit");
}

#[test]
fn events_tell_deploys_rollbacks_cold_starts_timeouts_and_throttling() {
    let (_dir, s) = start(&[]);
    let config = ["--timeout", "1", "--max-concurrency", "1", "--queue-timeout-ms", "100"];
    s.deploy("h", "hostile", "digits", &config);
    s.deploy("h", "hostile", "digits", &[&config[..], &["--memory", "3072"]].concat());
    let rollback = s.cli(&["rollback", "h"]);
    assert!(rollback.status.success(), "{}", String::from_utf8_lossy(&rollback.stderr));
    let slow = std::thread::scope(|scope| {
        let slow = scope.spawn(|| s.invoke("h", "text/plain", "sleep:3000"));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(s.invoke("h", "text/plain", "echo").status, 429, "one at a time");
        slow.join().unwrap()
    });
    assert_eq!(slow.status, 504);
    let events = poll(&s, "/v1/functions/h/events", |v| {
        let kinds: Vec<String> =
            entries(v, "events").iter().filter_map(|e| Some(e["kind"].as_str()?.to_owned())).collect();
        ["deployed", "rolled_back", "loaded", "timeouts", "throttled"].iter().all(|k| kinds.iter().any(|x| x == k))
    });
    let messages: Vec<String> =
        entries(&events, "events").iter().map(|e| e["message"].as_str().unwrap().to_owned()).collect();
    assert!(messages.iter().any(|m| m == "live rolled back from version 2 to version 1"), "{messages:?}");
    assert!(messages.iter().any(|m| m.starts_with("1 request ran past the timeout of 1 s")), "{messages:?}");
    assert!(messages.iter().any(|m| m.starts_with("1 request at max concurrency 1")), "{messages:?}");

    let cli = s.cli(&["events", "h"]);
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(text.contains("rolled_back") && text.contains("v1   live rolled back from version 2"), "{text}");
}

#[test]
fn the_timeline_counts_requests_for_the_charts() {
    let (_dir, s) = start(&[]);
    s.deploy("h", "hostile", "digits", &[]);
    for _ in 0..3 {
        assert_eq!(s.invoke("h", "text/plain", "echo").status, 200);
    }
    assert_eq!(s.invoke("h", "text/plain", "nonsense").status, 400);
    let stats = get(&s, "/v1/functions/h/stats?minutes=2");
    let points = entries(&stats, "points");
    assert_eq!(points.len(), 24, "a point per 5 s step");
    let sum = |field: &str| points.iter().map(|p| p[field].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("invocations"), sum("errors_4xx")), (4, 1));
    assert!(points.iter().any(|p| p["model_p50_us"].as_u64().is_some_and(|us| us > 0)), "{stats}");
    let summary = get(&s, "/v1/stats?minutes=5");
    let h = &summary["functions"]["h"];
    assert_eq!((h["invocations"].as_u64(), h["state"].as_str()), (Some(4), Some("warm")), "{summary}");
    assert_eq!(s.http("GET", "/v1/functions/h/stats?minutes=31", Some(&s.token), &[], b"").status, 400);
}

#[test]
fn the_server_log_can_be_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--log-format", "json"]);
    s.deploy("d", "digits", "digits", &[]);
    let lines = s.log_lines();
    let json: Vec<Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        json.iter().any(|l| l["level"] == "INFO" && l["message"].as_str().is_some_and(|m| m.starts_with("version 1 deployed"))),
        "{lines:#?}"
    );
    let other: Vec<&String> = lines
        .iter()
        .filter(|l| serde_json::from_str::<Value>(l).is_err() && !l.starts_with("nimbus listening"))
        .collect();
    assert!(other.is_empty(), "lines that are not JSON: {other:#?}");
}

#[test]
fn events_tell_memory_traps_and_scaling_to_zero() {
    let (_dir, s) = start(&[]);
    s.deploy("h", "hostile", "digits", &["--memory", "1024", "--idle-timeout", "1"]);
    let a = s.invoke("h", "text/plain", "alloc:2000");
    assert_eq!(a.status, 500, "{}", a.body);
    let events = poll(&s, "/v1/functions/h/events", |v| {
        let kinds: Vec<String> =
            entries(v, "events").iter().filter_map(|e| Some(e["kind"].as_str()?.to_owned())).collect();
        kinds.iter().any(|k| k == "memory_exceeded") && kinds.iter().any(|k| k == "scaled_to_zero")
    });
    let trap = entries(&events, "events").into_iter().find(|e| e["kind"] == "memory_exceeded").unwrap();
    assert_eq!(trap["message"].as_str(), Some("1 request trapped at the memory tier of 1024 MB (last 5 s)"), "{trap}");
    assert_eq!(trap["version"].as_u64(), Some(1));
}

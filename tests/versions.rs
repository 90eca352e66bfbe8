//! Versions, aliases, rollback, traffic splits and canaries against a real
//! server: every version is a real deploy of the hostile test guest (over
//! the digits model), told apart by an environment variable it echoes.

use nimbus_tests::{Answer, Server, wasm};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn start(extra: &[&str]) -> (tempfile::TempDir, Server) {
    wasm("hostile");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), extra);
    (dir, server)
}

/// Deploys a version of `name` whose handler answers `env:WHO` with `who`.
fn deploy(s: &Server, name: &str, who: &str, extra: &[&str]) -> serde_json::Value {
    let env = format!("WHO={who}");
    let mut args = vec!["--env", env.as_str()];
    args.extend_from_slice(extra);
    let out = s.deploy(name, "hostile", "digits", &args);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Asks `name` who it is, with an optional query and headers.
fn who(s: &Server, name: &str, query: &str, headers: &[(&str, &str)]) -> Answer {
    let mut all = vec![("content-type", "text/plain")];
    all.extend_from_slice(headers);
    s.http("POST", &format!("/v1/functions/{name}/invocations{query}"), None, &all, b"env:WHO")
}

fn version_of(a: &Answer) -> u64 {
    a.header("x-nimbus-function-version").parse().unwrap()
}

fn get(s: &Server, path: &str) -> serde_json::Value {
    serde_json::from_str(&s.http("GET", path, Some(&s.token), &[], b"").body).unwrap()
}

fn versions(s: &Server, name: &str) -> serde_json::Value {
    get(s, &format!("/v1/functions/{name}/versions"))
}

/// Runs the CLI; panics with its stderr unless it succeeds.
fn cli(s: &Server, args: &[&str]) -> String {
    let out = s.cli(args);
    assert!(out.status.success(), "nimbus {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn versions_answer_side_by_side_through_aliases_and_roll_back() {
    let (_dir, s) = start(&[]);
    assert_eq!(deploy(&s, "f", "one", &["--description", "first"])["version"], 1);
    let second = deploy(&s, "f", "two", &[]);
    assert_eq!((second["version"].as_u64(), second["live"].as_u64()), (Some(2), Some(2)));

    let live = who(&s, "f", "", &[]);
    assert_eq!((live.status, live.body.as_str(), version_of(&live)), (200, "two", 2));
    let old = who(&s, "f", "?version=1", &[]);
    assert_eq!((old.body.as_str(), version_of(&old)), ("one", 1));
    cli(&s, &["alias", "f", "stable", "1"]);
    assert_eq!(who(&s, "f", "?alias=stable", &[]).body, "one");
    assert_eq!(who(&s, "f", "?alias=live", &[]).body, "two");
    for (query, status, code) in [
        ("?version=9", 404, "version_not_found"),
        ("?alias=nope", 404, "alias_not_found"),
        ("?version=1&alias=stable", 400, "bad_request"),
        ("?version=x", 400, "bad_request"),
    ] {
        let a = who(&s, "f", query, &[]);
        assert_eq!(a.status, status, "{query}: {}", a.body);
        assert!(a.body.contains(code), "{query}: {}", a.body);
    }

    // A configuration change is a version with the same files.
    let out = cli(&s, &["config", "f", "--memory", "2048", "--env", "WHO=three", "--no-promote", "--json"]);
    let third: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((third["version"].as_u64(), third["live"].as_u64()), (Some(3), Some(2)));
    assert_eq!(third["wasm"], second["wasm"]);
    assert_eq!(third["config"]["memory_mb"], 2048);
    assert_eq!(who(&s, "f", "?version=3", &[]).body, "three");

    let listed = versions(&s, "f");
    let numbers: Vec<u64> =
        listed["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(numbers, vec![3, 2, 1], "newest first");
    assert_eq!(listed["versions"][2]["description"], "first");
    assert_eq!(listed["versions"][2]["aliases"], serde_json::json!(["stable"]));
    assert_eq!(listed["versions"][1]["percent"], 100);
    let table = cli(&s, &["versions", "f"]);
    assert!(table.contains("live") && table.contains("stable") && table.contains("first"), "{table}");

    let back = cli(&s, &["rollback", "f", "--json"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&back).unwrap()["live"], 1);
    assert_eq!(who(&s, "f", "", &[]).body, "one");
    cli(&s, &["rollback", "f", "--to", "3"]);
    assert_eq!(who(&s, "f", "", &[]).body, "three");

    for (args, says) in [
        (vec!["rollback", "f", "--to", "7"], "version 7 does not exist"),
        (vec!["alias", "f", "live", "--delete"], "cannot be deleted"),
        (vec!["alias", "f", "12", "1"], "is a number"),
        (vec!["traffic", "f", "1=50", "2=60"], "add up to 110"),
        (vec!["traffic", "f", "1=20", "2=20", "3=20", "4=20", "5=20"], "1 to 4 versions"),
    ] {
        let out = s.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(who(&s, "f", "", &[]).body, "three", "refused changes change nothing");
}

#[test]
fn a_rollback_under_load_fails_no_request() {
    let (_dir, s) = start(&[]);
    deploy(&s, "f", "one", &[]);
    deploy(&s, "f", "two", &[]);
    let s = Arc::new(s);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (s, stop, failed) = (s.clone(), stop.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let a = who(&s, "f", "", &[]);
                    if a.status != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("failed: {} {}", a.status, a.body);
                    }
                    seen.push(a.body);
                }
                seen
            })
        })
        .collect();
    for to in ["1", "2", "1"] {
        std::thread::sleep(Duration::from_millis(400));
        cli(&s, &["rollback", "f", "--to", to]);
        // Once the rollback has answered, new requests get the version it named.
        let after = who(&s, "f", "", &[]);
        assert_eq!(version_of(&after).to_string(), to);
    }
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "of {} requests", seen.len());
    assert!(seen.iter().any(|b| b == "one") && seen.iter().any(|b| b == "two"));
}

#[test]
fn a_split_lands_near_its_weights_and_a_pinned_version_wins() {
    let (_dir, s) = start(&[]);
    deploy(&s, "f", "one", &[]);
    deploy(&s, "f", "two", &[]);
    let split = cli(&s, &["traffic", "f", "1=90", "2=10", "--json"]);
    let split: serde_json::Value = serde_json::from_str(&split).unwrap();
    assert_eq!(split["live"], 1, "live names the largest share");
    let s = Arc::new(s);
    let counts: Vec<BTreeMap<u64, u32>> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut counts = BTreeMap::new();
                for _ in 0..500 {
                    let a = who(&s, "f", "", &[]);
                    assert_eq!(a.status, 200, "{}", a.body);
                    assert_eq!(a.body, if version_of(&a) == 1 { "one" } else { "two" });
                    *counts.entry(version_of(&a)).or_insert(0) += 1;
                }
                counts
            })
        })
        .map(|t| t.join().unwrap())
        .collect();
    let second: u32 = counts.iter().filter_map(|c| c.get(&2)).sum();
    // 2,000 draws at 10%: the standard deviation is 0.67 points.
    assert!((160..=240).contains(&second), "version 2 served {second} of 2000");
    for _ in 0..50 {
        let pinned = who(&s, "f", "", &[("x-nimbus-target-version", "2")]);
        assert_eq!((pinned.status, version_of(&pinned)), (200, 2));
    }
    let bad = who(&s, "f", "", &[("x-nimbus-target-version", "two")]);
    assert_eq!(bad.status, 400, "{}", bad.body);
    // The malformed pin is refused before a version is picked: not counted.
    assert_eq!(s.metric("nimbus_invocations_total", "f"), 2050.0);
    let text = s.http("GET", "/metrics", Some(&s.token), &[], b"").body;
    let v2 =
        text.lines().find_map(|l| l.strip_prefix("nimbus_invocations_total{function=\"f\",version=\"2\"} ")).unwrap();
    assert_eq!(v2.parse::<u32>().unwrap(), second + 50);
}

/// Sends `who` requests to `name` until `done` holds of its description
/// (at most `limit` requests); returns the description.
fn drive(s: &Server, name: &str, limit: u32, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    for _ in 0..limit {
        who(s, name, "", &[]);
        let d = get(s, &format!("/v1/functions/{name}"));
        if done(&d) {
            return d;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{name}: not done after {limit} requests: {}", get(s, &format!("/v1/functions/{name}")));
}

#[test]
fn a_failing_canary_is_rolled_back_and_a_healthy_one_promoted() {
    let (_dir, s) = start(&[]);
    deploy(&s, "f", "one", &[]);
    let canary = deploy(&s, "f", "broken", &["--env", "HOSTILE_HANDLE=trap", "--canary", "50", "--canary-for", "600"]);
    assert_eq!((canary["version"].as_u64(), canary["live"].as_u64()), (Some(2), Some(1)));
    assert_eq!(canary["canary"]["state"], "running");
    let d = drive(&s, "f", 400, |d| d["canary"]["state"] != "running");
    assert_eq!(d["canary"]["state"], "rolled-back", "{d}");
    assert!(d["canary"]["reason"].as_str().unwrap().contains("error rate"), "{d}");
    assert_eq!((d["version"].as_u64(), d["traffic"].as_array().unwrap().len()), (Some(1), 1));
    let shown = cli(&s, &["describe", "f"]);
    assert!(shown.contains("rolled-back"), "{shown}");
    for _ in 0..20 {
        assert_eq!(who(&s, "f", "", &[]).body, "one", "all traffic is back on version 1");
    }

    let started = Instant::now();
    deploy(&s, "f", "three", &["--canary", "20", "--canary-for", "2"]);
    let d = drive(&s, "f", 400, |d| d["canary"]["state"] != "running");
    assert_eq!(d["canary"]["state"], "promoted", "{d}");
    assert!(started.elapsed() >= Duration::from_secs(2), "promoted only when its window ended");
    assert_eq!(d["version"], 3);
    assert_eq!(who(&s, "f", "", &[]).body, "three");

    // Each step is in the function's event history (written asynchronously).
    let mut told: Vec<(String, String)> = Vec::new();
    Server::wait_until(Duration::from_secs(5), || {
        let events = get(&s, "/v1/functions/f/events");
        told = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["message"].as_str().unwrap().to_owned()))
            .collect();
        told.iter().any(|(k, _)| k == "canary_promoted")
    });
    let said = |kind: &str, start: &str| told.iter().any(|(k, m)| k == kind && m.starts_with(start));
    assert!(
        said("deployed", "version 2 deployed (2048 MB, max concurrency 20); live is version 1; as a canary taking 50%"),
        "{told:?}"
    );
    assert!(said("canary_rolled_back", "canary version 2 rolled back: "), "{told:?}");
    assert!(said("canary_promoted", "canary version 3 promoted: "), "{told:?}");
}

#[test]
fn a_restart_keeps_versions_aliases_weights_and_a_running_canary() {
    let (_dir, s) = start(&[]);
    deploy(&s, "f", "one", &[]);
    deploy(&s, "f", "two", &[]);
    cli(&s, &["alias", "f", "stable", "1"]);
    deploy(&s, "f", "three", &["--canary", "30", "--canary-for", "600"]);
    deploy(&s, "g", "one", &[]);
    deploy(&s, "g", "two", &[]);
    cli(&s, &["traffic", "g", "1=70", "2=30"]);
    let strip = |mut v: serde_json::Value| {
        for version in v["versions"].as_array_mut().unwrap() {
            for counter in ["state", "invocations", "errors_5xx"] {
                version.as_object_mut().unwrap().remove(counter);
            }
        }
        v
    };
    let before = (strip(versions(&s, "f")), strip(versions(&s, "g")));
    assert_eq!(before.0["canary"]["state"], "running");
    let s = s.kill_and_restart();
    assert_eq!((strip(versions(&s, "f")), strip(versions(&s, "g"))), before);
    assert_eq!(who(&s, "f", "?alias=stable", &[]).body, "one");
    assert_eq!(who(&s, "f", "", &[("x-nimbus-target-version", "3")]).body, "three");

    // kill -9 while `live` moves back and forth: the document after the
    // restart is one of the two states, whole.
    let (url, token) = (s.url.clone(), s.token.clone());
    let flipping = std::thread::spawn(move || {
        for i in 0.. {
            let args: &[&str] = if i % 2 == 0 { &["traffic", "g", "1=70", "2=30"] } else { &["traffic", "g", "2=100"] };
            let out = std::process::Command::new(nimbus_tests::nimbus_bin())
                .args(args)
                .env("NIMBUS_SERVER", &url)
                .env("NIMBUS_TOKEN", &token)
                .output()
                .unwrap();
            if !out.status.success() {
                return i;
            }
        }
        unreachable!()
    });
    std::thread::sleep(Duration::from_millis(700));
    let mut s = s;
    s.kill();
    assert!(flipping.join().unwrap() > 1, "some changes were made before the kill");
    let s = s.kill_and_restart();
    let g = versions(&s, "g");
    let state = (g["live"].as_u64().unwrap(), g["traffic"].clone());
    let split = serde_json::json!([{"version": 1, "percent": 70}, {"version": 2, "percent": 30}]);
    let whole = serde_json::json!([{"version": 2, "percent": 100}]);
    assert!(state == (1, split) || state == (2, whole), "{g}");
}

#[test]
fn retention_collects_exactly_the_versions_nothing_points_at() {
    let (_dir, s) = start(&["--keep-versions", "2", "--blob-grace", "0"]);
    deploy(&s, "f", "one", &[]);
    cli(&s, &["alias", "f", "old", "1"]);
    // Version 2 has files of its own: the sentiment artifacts.
    let out = s.try_deploy("f", "hostile", &nimbus_tests::model_dir("sentiment"), &["--env", "WHO=two"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let own: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let own_blobs: Vec<String> =
        own["artifacts"].as_array().unwrap().iter().map(|a| a["digest"].as_str().unwrap().to_owned()).collect();
    let blob = |d: &str| s.data_dir.join("blobs/sha256").join(d);
    assert!(own_blobs.iter().all(|d| blob(d).exists()));
    for who in ["three", "four", "five"] {
        deploy(&s, "f", who, &[]);
    }
    let kept: Vec<u64> =
        versions(&s, "f")["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(kept, vec![5, 4, 1], "the 2 newest and the one `old` names");
    assert_eq!(who(&s, "f", "?version=2", &[]).status, 404);
    assert_eq!(who(&s, "f", "?alias=old", &[]).body, "one");
    assert!(own_blobs.iter().all(|d| !blob(d).exists()), "version 2's own artifacts were collected");
    let snapshots = std::fs::read_dir(s.data_dir.join("compiled"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "cwasm"))
        .count();
    assert_eq!(snapshots, 3, "one compiled snapshot per kept version (each has its own environment)");
}

#[test]
fn two_deploys_at_once_end_as_two_versions() {
    let (_dir, s) = start(&[]);
    deploy(&s, "f", "one", &[]);
    let s = Arc::new(s);
    let numbers: Vec<u64> = ["a", "b"]
        .map(|who| {
            let s = s.clone();
            std::thread::spawn(move || deploy(&s, "f", who, &[])["version"].as_u64().unwrap())
        })
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let mut sorted = numbers.clone();
    sorted.sort();
    assert_eq!(sorted, vec![2, 3], "{numbers:?}");
    let live = who(&s, "f", "", &[]);
    let expected = if numbers[0] == 3 { "a" } else { "b" };
    assert_eq!(live.body, expected, "live is the version deployed last");
}

//! Hosts sharing their records through a real etcd: a change made through
//! any host is served by the others within a second; two hosts' deploys of
//! one function never interleave; with etcd down, hosts keep serving and
//! refuse changes with a 503 until it is back.
//!
//! The hosts share one data directory for blobs here; the object store
//! that replaces it is the next step of the cluster work.

use nimbus_tests::{Answer, Etcd, Server, wasm};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// etcd and two hosts over it.
fn cluster() -> (tempfile::TempDir, Etcd, Server, Server) {
    wasm("hostile");
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(dir.path(), &["--etcd", &etcd.endpoint]);
    let b = Server::start(dir.path(), &["--etcd", &etcd.endpoint]);
    (dir, etcd, a, b)
}

fn deploy(s: &Server, name: &str, who: &str) -> std::process::Output {
    let env = format!("WHO={who}");
    s.try_deploy(name, "hostile", &nimbus_tests::model_dir("digits"), &["--env", &env])
}

fn who(s: &Server, name: &str) -> Answer {
    s.invoke(name, "text/plain", "env:WHO")
}

/// How long until `s` answers `name` with `body` (panics after 5 s).
fn until_served(s: &Server, name: &str, body: &str) -> Duration {
    let start = Instant::now();
    let served = Server::wait_until(Duration::from_secs(5), || who(s, name).body == body);
    assert!(served, "{} never answered `{body}`: {}", s.url, who(s, name).body);
    start.elapsed()
}

#[test]
fn a_change_through_one_host_is_served_by_the_other_within_a_second() {
    let (_dir, _etcd, a, b) = cluster();
    assert!(deploy(&a, "f", "one").status.success());
    assert!(until_served(&b, "f", "one") < Duration::from_secs(1));
    assert!(deploy(&b, "f", "two").status.success());
    assert!(until_served(&a, "f", "two") < Duration::from_secs(1));
    assert_eq!(who(&a, "f").header("x-nimbus-function-version"), "2");

    let out = a.cli(&["rollback", "f"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(until_served(&b, "f", "one") < Duration::from_secs(1));

    let out = b.cli(&["delete", "f"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(Server::wait_until(Duration::from_secs(1), || who(&a, "f").status == 404), "deleted everywhere");
}

#[test]
fn deploys_through_two_hosts_at_once_never_interleave() {
    let (_dir, _etcd, a, b) = cluster();
    assert!(deploy(&a, "f", "zero").status.success());
    until_served(&b, "f", "zero");
    let (a, b) = (Arc::new(a), Arc::new(b));
    let outcomes: Vec<(bool, String)> = [(a.clone(), "from-a"), (b.clone(), "from-b")]
        .map(|(s, who)| {
            std::thread::spawn(move || {
                let out = deploy(&s, "f", who);
                (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
            })
        })
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    for (ok, err) in &outcomes {
        assert!(*ok || err.contains("409 conflict"), "a deploy failed for another reason: {err}");
    }
    let made = outcomes.iter().filter(|(ok, _)| *ok).count() as u64;
    assert!(made >= 1);
    // Both hosts end with the same versions, numbered without gaps.
    let versions = |s: &Server| -> Vec<u64> {
        let v = s.http("GET", "/v1/functions/f/versions", Some(&s.token), &[], b"").body;
        let v: serde_json::Value = serde_json::from_str(&v).unwrap();
        v["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect()
    };
    let expected: Vec<u64> = (1..=1 + made).rev().collect();
    assert!(Server::wait_until(Duration::from_secs(2), || versions(&a) == expected && versions(&b) == expected));
}

#[test]
fn with_etcd_down_hosts_serve_and_refuse_changes_until_it_is_back() {
    let (_dir, mut etcd, a, b) = cluster();
    assert!(deploy(&a, "f", "one").status.success());
    until_served(&b, "f", "one");
    etcd.stop();
    for s in [&a, &b] {
        let answer = who(s, "f");
        assert_eq!((answer.status, answer.body.as_str()), (200, "one"), "{} keeps serving", s.url);
    }
    let refused = deploy(&a, "f", "two");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("503 records_unavailable"), "{err}");
    assert_eq!(who(&a, "f").body, "one", "the refused deploy changed nothing");

    etcd.resume();
    let deployed = Server::wait_until(Duration::from_secs(20), || deploy(&a, "f", "two").status.success());
    assert!(deployed, "deploys work again once etcd is back");
    until_served(&b, "f", "two");
}

/// HAProxy with the shipped configuration in front of `hosts`.
struct Front {
    child: std::process::Child,
    url: String,
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn front(hosts: &[&Server]) -> Front {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = std::process::Command::new("haproxy");
    cmd.arg("-f").arg(nimbus_tests::root().join("deploy/haproxy/haproxy.cfg")).arg("-db");
    cmd.env("NIMBUS_FRONT", format!("127.0.0.1:{port}"));
    for (i, h) in hosts.iter().enumerate() {
        cmd.env(format!("NIMBUS_HOST_{}", i + 1), h.url.trim_start_matches("http://"));
    }
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("haproxy is not installed: `make test` installs Debian's haproxy");
    Front { child, url: format!("http://127.0.0.1:{port}") }
}

fn post(url: &str, name: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    match agent
        .post(format!("{url}/v1/functions/{name}/invocations"))
        .header("content-type", "text/plain")
        .send("env:WHO")
    {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[test]
fn haproxy_keeps_a_function_on_one_host_and_retries_around_a_dead_one() {
    wasm("hostile");
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<Server> = (0..3).map(|_| Server::start(dir.path(), &["--etcd", &etcd.endpoint])).collect();
    assert!(deploy(&hosts[0], "f", "one").status.success());
    for h in &hosts {
        until_served(h, "f", "one");
    }
    let front = front(&hosts.iter().collect::<Vec<_>>());
    assert!(Server::wait_until(Duration::from_secs(10), || post(&front.url, "f").0 == 200), "HAProxy never answered");
    let before: Vec<f64> = hosts.iter().map(|h| h.metric("nimbus_invocations_total", "f")).collect();
    for _ in 0..20 {
        assert_eq!(post(&front.url, "f"), (200, "one".to_owned()));
    }
    let served: Vec<f64> =
        hosts.iter().zip(&before).map(|(h, b)| h.metric("nimbus_invocations_total", "f") - b).collect();
    let home = served.iter().position(|&n| n == 20.0).unwrap_or_else(|| panic!("spread over hosts: {served:?}"));

    // Steady load through HAProxy; the function's host dies under it.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop) = (front.url.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    answers.push(post(&url, "f"));
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    let mut hosts = hosts;
    hosts[home].kill();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers: Vec<(u16, String)> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let failed: Vec<&(u16, String)> = answers.iter().filter(|a| a.0 != 200).collect();
    assert!(failed.is_empty(), "{} of {} failed: {:?}", failed.len(), answers.len(), &failed[..failed.len().min(5)]);
    assert!(answers.len() > 50, "{} answers", answers.len());
}

//! A cluster on this machine: a real etcd (records), a real Garage (the
//! S3-compatible object store, blobs) and Nimbus hosts that share nothing
//! else, each with its own data directory, HAProxy in front.
//!
//! A change made through any host is served by the others within a second;
//! two hosts' deploys of one function never interleave; a host with an
//! empty or corrupted cache fetches what it needs; with etcd down, hosts
//! keep serving and refuse changes with a 503 until it is back; with the
//! object store down, hosts serve what they have and refuse (with a 503
//! that says why) what needs the store, until it is back; a host that
//! dies under load costs no request through HAProxy; live hosts are listed
//! and share each function's max concurrency.

use nimbus_tests::{Answer, Cluster, Server, wasm};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// etcd, Garage and `n` hosts running the hostile guest.
fn cluster(n: usize) -> Cluster {
    wasm("hostile");
    Cluster::start(n)
}

fn deploy(s: &Server, name: &str, who: &str) -> std::process::Output {
    let env = format!("WHO={who}");
    s.try_deploy(name, "hostile", &nimbus_tests::model_dir("digits"), &["--env", &env])
}

fn who(s: &Server, name: &str) -> Answer {
    s.invoke(name, "text/plain", "env:WHO")
}

/// How long until `s` answers `name` with `body` (panics after 10 s).
fn until_served(s: &Server, name: &str, body: &str) -> Duration {
    let start = Instant::now();
    let served = Server::wait_until(Duration::from_secs(10), || who(s, name).body == body);
    assert!(served, "{} never answered `{body}`: {}", s.url, who(s, name).body);
    start.elapsed()
}

#[test]
fn a_change_through_one_host_is_served_by_the_others_within_a_second() {
    let c = cluster(3);
    let [one, two, three] = &c.hosts[..] else { unreachable!() };
    assert!(deploy(one, "f", "one").status.success());
    // The others have nothing on disk yet: each fetches from the object store.
    for h in [two, three] {
        until_served(h, "f", "one");
    }
    assert!(deploy(three, "f", "two").status.success());
    let took = until_served(two, "f", "two");
    assert!(took < Duration::from_secs(1), "host 2 served version 2 after {took:?}");
    assert_eq!(who(one, "f").header("x-nimbus-function-version"), "2");

    let out = one.cli(&["rollback", "f"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(until_served(three, "f", "one") < Duration::from_secs(1));

    let out = two.cli(&["delete", "f"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for h in [one, three] {
        assert!(Server::wait_until(Duration::from_secs(1), || who(h, "f").status == 404), "deleted everywhere");
    }
}

#[test]
fn deploys_through_two_hosts_at_once_never_interleave() {
    let mut c = cluster(2);
    let (b, a) = (c.hosts.pop().unwrap(), c.hosts.pop().unwrap());
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
    let mut c = cluster(2);
    let (a, b, etcd) = (&c.hosts[0], &c.hosts[1], &mut c.etcd);
    assert!(deploy(a, "f", "one").status.success());
    until_served(b, "f", "one");
    etcd.stop();
    for s in [a, b] {
        let answer = who(s, "f");
        assert_eq!((answer.status, answer.body.as_str()), (200, "one"), "{} keeps serving", s.url);
    }
    let refused = deploy(a, "f", "two");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("503 records_unavailable"), "{err}");
    assert_eq!(who(a, "f").body, "one", "the refused deploy changed nothing");

    etcd.resume();
    let deployed = Server::wait_until(Duration::from_secs(20), || deploy(a, "f", "two").status.success());
    assert!(deployed, "deploys work again once etcd is back");
    until_served(b, "f", "two");
}

#[test]
fn with_the_object_store_down_hosts_serve_what_they_have_and_refuse_what_needs_it() {
    let mut c = cluster(2);
    assert!(deploy(&c.hosts[0], "f", "one").status.success());
    until_served(&c.hosts[1], "f", "one");
    c.garage.stop();
    for s in &c.hosts {
        let answer = who(s, "f");
        assert_eq!((answer.status, answer.body.as_str()), (200, "one"), "{} serves what it has", s.url);
    }

    // A deploy with a file the store lacks is refused (not hung on
    // retries), saying why, and changes nothing.
    let model = nimbus_tests::model_dir_with_new_file("digits");
    let deploy_two = |s: &Server| s.try_deploy("f", "hostile", model.path(), &["--env", "WHO=two"]);
    let started = Instant::now();
    let refused = deploy_two(&c.hosts[0]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("object store cannot be reached"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "refused after {:?}", started.elapsed());
    assert_eq!(who(&c.hosts[0], "f").body, "one", "the refused deploy changed nothing");

    // A host that joins now has nothing to run: a 503 that says why.
    let joined = c.host();
    let started = Instant::now();
    let answer = who(&joined, "f");
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body.contains("objects_unavailable"), "{}", answer.body);
    assert_eq!(answer.header("retry-after"), "1");
    assert!(started.elapsed() < Duration::from_secs(30), "answered after {:?}", started.elapsed());

    c.garage.resume();
    let served = Server::wait_until(Duration::from_secs(30), || who(&joined, "f").body == "one");
    assert!(served, "the joined host serves once the store is back: {}", who(&joined, "f").body);
    let deployed = Server::wait_until(Duration::from_secs(30), || deploy_two(&c.hosts[0]).status.success());
    assert!(deployed, "deploys work again once the store is back");
    until_served(&c.hosts[1], "f", "two");
    until_served(&joined, "f", "two");
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
    let port = nimbus_tests::free_port();
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
    let mut c = cluster(3);
    assert!(deploy(&c.hosts[0], "f", "one").status.success());
    let front = front(&c.hosts.iter().collect::<Vec<_>>());
    assert!(Server::wait_until(Duration::from_secs(10), || post(&front.url, "f").0 == 200), "HAProxy never answered");
    // Through HAProxy and through every host directly: the same answer.
    for h in &c.hosts {
        assert_eq!((who(h, "f").status, who(h, "f").body), (200, "one".to_owned()), "{}", h.url);
    }
    let before: Vec<f64> = c.hosts.iter().map(|h| h.metric("nimbus_invocations_total", "f")).collect();
    for _ in 0..20 {
        assert_eq!(post(&front.url, "f"), (200, "one".to_owned()));
    }
    let served: Vec<f64> =
        c.hosts.iter().zip(&before).map(|(h, b)| h.metric("nimbus_invocations_total", "f") - b).collect();
    // Affinity, bounded: a request that finds the home host's previous
    // connection not yet closed may spill (hash-balance-factor); on a busy
    // machine a few do (3 of 20 seen in CI), never most.
    let home = served.iter().position(|&n| n >= 15.0).unwrap_or_else(|| panic!("spread over hosts: {served:?}"));

    // Steady load through HAProxy; the function's host dies under it (kill -9).
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
    c.hosts[home].kill();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers: Vec<(u16, String)> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let failed: Vec<&(u16, String)> = answers.iter().filter(|a| a.0 != 200).collect();
    assert!(failed.is_empty(), "{} of {} failed: {:?}", failed.len(), answers.len(), &failed[..failed.len().min(5)]);
    assert!(answers.len() > 50, "{} answers", answers.len());

    // The lost host comes back with an empty cache and serves again.
    let back = c.host();
    until_served(&back, "f", "one");
}

#[test]
fn a_corrupted_cached_artifact_is_detected_and_fetched_again() {
    let mut c = cluster(2);
    assert!(deploy(&c.hosts[0], "f", "one").status.success());
    until_served(&c.hosts[1], "f", "one");
    let model = std::fs::read(nimbus_tests::model_dir("digits").join("digits.onnx")).unwrap();
    let blobs = c.hosts[1].data_dir.join("blobs/sha256");
    let cached = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::read(p).is_ok_and(|b| b == model))
        .expect("host 2 cached the model");
    let mut bytes = model.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&cached, &bytes).unwrap();

    // After a crash, the host checks what it loads against its digest.
    let host = c.hosts.pop().unwrap().kill_and_restart();
    assert_eq!((who(&host, "f").status, who(&host, "f").body), (200, "one".to_owned()));
    assert_eq!(std::fs::read(&cached).unwrap(), model, "fetched again from the object store");
}

#[test]
fn live_hosts_are_listed_and_share_max_concurrency() {
    let mut c = cluster(3);
    let listed = |s: &Server| -> Vec<String> {
        let out = s.cli(&["hosts", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["hosts"].as_array().unwrap().iter().map(|h| h["address"].as_str().unwrap().to_owned()).collect()
    };
    for h in &c.hosts {
        assert!(Server::wait_until(Duration::from_secs(5), || listed(h).len() == 3), "{:?}", listed(h));
    }
    let mut sorted: Vec<String> = c.hosts.iter().map(|h| h.url.clone()).collect();
    sorted.sort();
    assert_eq!(listed(&c.hosts[2]), sorted);
    let table = c.hosts[0].cli(&["hosts"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("3 live (cluster)"));

    // Max concurrency 2 over 3 hosts: shares 1, 1 and 0; the host with none
    // says so in a 503, which HAProxy retries on another host.
    let out = c.hosts[0].try_deploy("f", "hostile", &nimbus_tests::model_dir("digits"), &["--max-concurrency", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answers: Vec<Answer> = c.hosts.iter().map(|h| h.invoke("f", "text/plain", "env:WHO")).collect();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    assert_eq!(refused.len(), 1, "{:?}", answers.iter().map(|a| (a.status, &a.body)).collect::<Vec<_>>());
    assert_eq!(refused[0].status, 503);
    assert!(refused[0].body.contains("no_share_here") && refused[0].body.contains("across 3 live hosts"));
    let front = front(&c.hosts.iter().collect::<Vec<_>>());
    assert!(Server::wait_until(Duration::from_secs(10), || post(&front.url, "f").0 == 200), "HAProxy never answered");
    for _ in 0..10 {
        assert_eq!(post(&front.url, "f").0, 200, "through HAProxy every request finds a host with a share");
    }
    drop(front);

    // A crashed host drops out within the lease's TTL; the shares follow.
    c.hosts[2].kill();
    let gone = Server::wait_until(Duration::from_secs(8), || listed(&c.hosts[0]).len() == 2);
    assert!(gone, "still listed: {:?}", listed(&c.hosts[0]));
    for h in &c.hosts[..2] {
        let served =
            Server::wait_until(Duration::from_secs(3), || h.invoke("f", "text/plain", "env:WHO").status == 200);
        assert!(served, "{} has a share of its own", h.url);
    }
}

#[test]
fn logs_events_and_charts_cover_every_host() {
    let c = cluster(3);
    let [one, two, three] = &c.hosts[..] else { unreachable!() };
    assert!(deploy(one, "f", "one").status.success());
    until_served(two, "f", "one");
    let ids: Vec<String> = [one, two]
        .iter()
        .map(|h| h.invoke("f", "text/plain", "say:hi").header("x-nimbus-request-id").to_owned())
        .collect();
    let get = |path: &str| -> serde_json::Value {
        let a = three.http("GET", path, Some(&three.token), &[], b"");
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        serde_json::from_str(&a.body).unwrap()
    };
    // Asked of host 3, which served none of them: each host's records, by time.
    for (id, host) in ids.iter().zip([one, two]) {
        let path = format!("/v1/functions/f/logs?request={id}");
        let mut answer = serde_json::Value::Null;
        let found = Server::wait_until(Duration::from_secs(10), || {
            answer = get(&path);
            answer["entries"].as_array().is_some_and(|e| e.len() == 3)
        });
        assert!(found, "{answer}");
        assert!(answer["entries"].as_array().unwrap().iter().all(|e| e["host"] == host.url.as_str()), "{answer}");
    }
    let events = get("/v1/functions/f/events");
    let loaded_on: std::collections::BTreeSet<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "loaded")
        .filter_map(|e| e["host"].as_str())
        .collect();
    assert!(loaded_on.contains(one.url.as_str()) && loaded_on.contains(two.url.as_str()), "{events}");
    let stats = get("/v1/functions/f/stats?minutes=1");
    let served: u64 = stats["points"].as_array().unwrap().iter().map(|p| p["invocations"].as_u64().unwrap()).sum();
    assert!(served >= 3, "the until_served polls and both requests: {stats}");
    assert_eq!(stats["hosts"], 3, "{stats}");
    let summary = get("/v1/stats?minutes=1");
    assert_eq!(summary["functions"]["f"]["invocations"].as_u64(), Some(served), "{summary}");

    // A log followed through host 3 shows a request host 1 serves.
    let mut follow = std::process::Command::new(nimbus_tests::nimbus_bin())
        .args(["logs", "f", "-f", "--limit", "1", "--json"])
        .env("NIMBUS_SERVER", &three.url)
        .env("NIMBUS_TOKEN", &three.token)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("the backlog");
    let id = one.invoke("f", "text/plain", "say:followed").header("x-nimbus-request-id").to_owned();
    let seen = Server::wait_until(Duration::from_secs(10), || {
        rx.try_iter().any(|l| l.contains(&id) && l.contains(one.url.as_str()) && l.contains("\"stdout\""))
    });
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen, "host 1's request never reached the log followed through host 3");
}

//! A real `nimbus serve` process on a loopback port, and the real `nimbus`
//! CLI to deploy to it. Tests talk HTTP to it with ureq.

use super::root;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `nimbus` binary, built by `make build` (`cargo build --workspace`).
pub fn nimbus_bin() -> PathBuf {
    let path = root().join("target/release/nimbus");
    assert!(path.is_file(), "{} is missing: run `make build` first", path.display());
    path
}

/// A running server.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its admin token.
    pub token: String,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    log: Arc<Mutex<Vec<String>>>,
}

/// An HTTP answer.
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: ureq::http::HeaderMap,
    /// Body as text.
    pub body: String,
}

impl Answer {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

impl Server {
    /// Starts a server on `data_dir` with extra `serve` flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// Starts a server as [`Server::start`] does, with `env` set too.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(String, String)]) -> Server {
        let token = "test-admin-token".to_owned();
        let mut child = Command::new(nimbus_bin())
            .args(["serve", "--addr", "127.0.0.1:0", "--admin-token", &token, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("NIMBUS_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nimbus serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                }
                eprintln!("[server] {line}");
                kept.lock().unwrap().push(line);
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(120)).expect("server did not start listening");
        Server {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            token,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env.to_vec(),
            log,
        }
    }

    /// What the server wrote to stderr so far, a line each.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Stops the server with SIGKILL and starts it again on the same data.
    pub fn kill_and_restart(mut self) -> Server {
        self.kill();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        Server::start_with_env(&self.data_dir.clone(), &extra, &self.env)
    }

    /// The server's process id (benchmarks read its memory use).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, no cleanup (a crash).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs the CLI against this server with the admin token.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(nimbus_bin())
            .args(args)
            .env("NIMBUS_SERVER", &self.url)
            .env("NIMBUS_TOKEN", &self.token)
            .output()
            .expect("run nimbus")
    }

    /// `nimbus deploy NAME --wasm <guest> --model-dir <example model>`
    /// plus `extra` flags; panics with the CLI's stderr on failure.
    pub fn deploy(&self, name: &str, guest: &str, model: &str, extra: &[&str]) -> Output {
        let out = self.try_deploy(name, guest, &super::model_dir(model), extra);
        assert!(out.status.success(), "deploy {name} failed: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// `nimbus deploy NAME --wasm <guest> --model-dir DIR --json` plus
    /// `extra` flags, whatever the outcome.
    pub fn try_deploy(&self, name: &str, guest: &str, model_dir: &Path, extra: &[&str]) -> Output {
        let wasm = root().join(format!("examples/target/wasm32-wasip2/release/{guest}.wasm"));
        let mut args = vec![
            "deploy",
            name,
            "--wasm",
            wasm.to_str().unwrap(),
            "--model-dir",
            model_dir.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        self.cli(&args)
    }

    /// The value of `family{function="f",version=...}` in /metrics, summed
    /// over the function's versions.
    pub fn metric(&self, family: &str, function: &str) -> f64 {
        let text = self.http("GET", "/metrics", Some(&self.token), &[], b"").body;
        let prefix = format!("{family}{{function=\"{function}\",version=");
        let values: Vec<f64> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|rest| rest.rsplit_once(' ').expect("a value").1.parse().unwrap())
            .collect();
        assert!(!values.is_empty(), "no {prefix}...}} in metrics:\n{text}");
        values.iter().sum()
    }

    /// The server's resident memory in MiB.
    pub fn rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        kib / 1024
    }

    /// CPU time the server has used, user and system, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the parenthesized command name; utime and stime are
        // the 14th and 15th fields of the whole line.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        field(11) + field(12)
    }

    /// Sends SIGTERM; returns how long the process took to exit, or `None`
    /// if it was still running after `limit` (then it is killed).
    pub fn terminate(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        while start.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// An HTTP request; `token` adds a bearer token.
    pub fn http(&self, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut req = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut response = agent.run(req.body(body.to_vec()).expect("request")).expect("HTTP request");
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Answer { status: response.status().as_u16(), headers: response.headers().clone(), body }
    }

    /// `POST /v1/functions/{name}/invocations` without a token.
    pub fn invoke(&self, name: &str, content_type: &str, body: &str) -> Answer {
        self.http(
            "POST",
            &format!("/v1/functions/{name}/invocations"),
            None,
            &[("content-type", content_type)],
            body.as_bytes(),
        )
    }

    /// Waits until `check` holds or `timeout` passes.
    pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if check() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

//! The servers a benchmark talks to over loopback: Nimbus (`nimbus serve`,
//! the same process the end-to-end tests start) and the Python model server
//! a SageMaker user writes today (`bench/python/server.py`: onnxruntime
//! behind FastAPI on uvicorn, one model per process like a container).

use crate::root;
use crate::workload::Workload;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use nimbus_tests::Server as Nimbus;

/// `{nimbus}/v1/functions/{name}/invocations`
pub fn invocations(nimbus: &Nimbus, name: &str) -> String {
    format!("{}/v1/functions/{name}/invocations", nimbus.url)
}

/// A Python model server process serving one example.
pub struct Python {
    child: Child,
    /// `http://127.0.0.1:PORT/invocations`
    pub url: String,
    started: Instant,
}

impl Python {
    /// Starts the server for `workload` with `workers` uvicorn workers; it
    /// answers once its model is loaded (see [`Python::ready`]).
    pub fn spawn(workload: &Workload, workers: usize) -> Python {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let started = Instant::now();
        let child = Command::new(root().join(".build/venv/bin/python"))
            .arg(root().join("bench/python/server.py"))
            .args(["--function", workload.name, "--port", &port.to_string(), "--workers", &workers.to_string()])
            .arg("--model-dir")
            .arg(workload.model_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the Python server: `make bench` installs bench/python/requirements.txt");
        Python { child, url: format!("http://127.0.0.1:{port}/invocations"), started }
    }

    /// Waits for the first successful answer to `workload`; the time from
    /// process start to that answer (what a cold container costs).
    pub fn ready(&self, workload: &Workload, timeout: Duration) -> Duration {
        while self.started.elapsed() < timeout {
            if post(&self.url, workload).is_some_and(|(status, _)| status == 200) {
                return self.started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the Python server for {} did not answer within {timeout:?}", workload.name)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a fresh connection: status and time to the whole answer,
/// or `None` if nothing listens yet.
pub fn post(url: &str, workload: &Workload) -> Option<(u16, Duration)> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let start = Instant::now();
    let mut response = agent
        .post(url)
        .header("content-type", workload.content_type)
        .header("accept", workload.accept)
        .send(&workload.body[..])
        .ok()?;
    response.body_mut().read_to_vec().ok()?;
    Some((response.status().as_u16(), start.elapsed()))
}

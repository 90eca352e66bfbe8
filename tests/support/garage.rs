//! A real Garage (the S3-compatible distributed object store, installed
//! from crates.io by `make services`) as one node on free loopback ports,
//! with a bucket and a key made at start, for cluster tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Garage node, running unless stopped.
pub struct Garage {
    child: Option<Child>,
    config: PathBuf,
    s3_port: u16,
    _dir: tempfile::TempDir,
    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// `s3://BUCKET`.
    pub url: String,
    /// Access key id and secret.
    pub keys: (String, String),
}

/// Where `make services` puts the binary (outside the repository, so a
/// later CI run on the same machine finds it); `garage` on PATH otherwise.
pub fn garage_bin() -> PathBuf {
    let cached = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/nimbus/tools/bin/garage"));
    cached.filter(|p| p.is_file()).unwrap_or_else(|| PathBuf::from("garage"))
}

impl Garage {
    /// Starts a single node with a default bucket and waits until it answers.
    pub fn start() -> Garage {
        let dir = tempfile::tempdir().expect("temp dir");
        let (s3, rpc) = (super::free_port(), super::free_port());
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n",
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
                secret = "7".repeat(64),
            ),
        )
        .expect("garage config");
        let keys = (format!("GK{}", "1".repeat(24)), "2".repeat(64));
        let (endpoint, url) = (format!("http://127.0.0.1:{s3}"), "s3://nimbus".into());
        let mut garage = Garage { child: None, config, s3_port: s3, _dir: dir, endpoint, url, keys };
        garage.resume();
        garage
    }

    /// Starts the node again on its data (after [`Garage::stop`]) and waits
    /// until it answers.
    pub fn resume(&mut self) {
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &self.keys.0)
            .env("GARAGE_DEFAULT_SECRET_KEY", &self.keys.1)
            .env("GARAGE_DEFAULT_BUCKET", "nimbus")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("garage is not installed: `make services` builds it from crates.io");
        self.child = Some(child);
        // Up when its S3 port takes connections.
        let port = self.s3_port;
        let up = super::Server::wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "garage did not come up on port {port}");
    }

    /// Kills the node (its data stays for [`Garage::resume`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The flags and environment a Nimbus host needs to use this store.
    pub fn host_args(&self) -> Vec<String> {
        vec!["--object-store".into(), self.url.clone(), "--s3-endpoint".into(), self.endpoint.clone()]
    }

    /// Environment for a Nimbus host: the keys and region.
    pub fn host_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.keys.0.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.keys.1.clone()),
            ("AWS_REGION".into(), "garage".into()),
        ]
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

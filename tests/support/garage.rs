//! A real Garage (the S3-compatible distributed object store, installed
//! from crates.io by `make services`) as one node on free loopback ports,
//! with a bucket and a key made at start, for cluster tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running Garage node.
pub struct Garage {
    child: Child,
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
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(&config)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &keys.0)
            .env("GARAGE_DEFAULT_SECRET_KEY", &keys.1)
            .env("GARAGE_DEFAULT_BUCKET", "nimbus")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("garage is not installed: `make services` builds it from crates.io");
        let garage =
            Garage { child, _dir: dir, endpoint: format!("http://127.0.0.1:{s3}"), url: "s3://nimbus".into(), keys };
        // Up when the bucket answers a signed-or-not request with anything.
        let up = super::Server::wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", s3)).is_ok()
        });
        assert!(up, "garage did not come up on port {s3}");
        garage
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

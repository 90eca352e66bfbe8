//! A real etcd (Debian's `etcd-server`, installed by `make test`) on free
//! loopback ports, with its own data directory, for cluster tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running (or stopped) etcd.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Etcd {
        let (client_port, peer_port) = (super::free_port(), super::free_port());
        let mut etcd = Etcd {
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            client_port,
            peer_port,
            endpoint: format!("http://127.0.0.1:{client_port}"),
        };
        etcd.resume();
        etcd
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts it again on the same data after [`Etcd::stop`].
    pub fn resume(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let child = Command::new("etcd")
            .args(["--name", "nimbus-test", "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("nimbus-test={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is not installed: `make test` installs Debian's etcd-server");
        self.child = Some(child);
        let up = super::Server::wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_ok()
        });
        assert!(up, "etcd did not come up on port {}", self.client_port);
    }

    /// Stops it (SIGKILL), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

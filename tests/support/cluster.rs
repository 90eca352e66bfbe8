//! A cluster on this machine: a real etcd (records), a real Garage (the
//! S3-compatible object store, blobs) and Nimbus hosts that share nothing
//! else, each with its own data directory.

use super::{Etcd, Garage, Server};

/// etcd, Garage and hosts over them. Fields drop in order: the hosts stop
/// before the services they use, and their data directories go last.
pub struct Cluster {
    /// The hosts, in start order.
    pub hosts: Vec<Server>,
    /// The records.
    pub etcd: Etcd,
    /// The blobs.
    pub garage: Garage,
    dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// etcd, Garage and `n` hosts. Build the guests the hosts will run
    /// first ([`super::wasm`]).
    pub fn start(n: usize) -> Cluster {
        let mut cluster = Cluster { hosts: Vec::new(), etcd: Etcd::start(), garage: Garage::start(), dirs: Vec::new() };
        for _ in 0..n {
            let host = cluster.host();
            cluster.hosts.push(host);
        }
        cluster
    }

    /// One more host, on a fresh (empty) data directory the cluster keeps;
    /// the caller owns the host.
    pub fn host(&mut self) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args = vec!["--etcd".to_owned(), self.etcd.endpoint.clone()];
        args.extend(self.garage.host_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let host = Server::start_with_env(dir.path(), &args, &self.garage.host_env());
        self.dirs.push(dir);
        host
    }
}

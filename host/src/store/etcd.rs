//! Records in etcd (the `etcd-client` crate), for hosts that share them.
//! A record is the key `/nimbus/functions/<name>`; its revision is etcd's
//! mod revision, and every write is a transaction comparing it, so two
//! hosts' deploys of one function cannot interleave. A watch from the
//! revision a listing was taken at delivers every later change in order.
//! Host entries (under leases) and shared settings live beside them.

use super::StoreError;
use super::records::{Change, Changes, Expect, Record};
use etcd_client::{Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};
use std::time::Duration;

const PREFIX: &str = "/nimbus/functions/";

/// A connection to an etcd cluster.
pub struct Etcd {
    client: etcd_client::Client,
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn revision(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

impl Etcd {
    /// Connects to the endpoints (`host:port` or `http://host:port`) and
    /// checks that one answers.
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        let client = etcd_client::Client::connect(endpoints, Some(options)).await.map_err(unavailable)?;
        let etcd = Etcd { client };
        // The channel connects lazily: ask something, so a wrong address
        // fails at start, not at the first deploy.
        etcd.client
            .kv_client()
            .get("/nimbus/", Some(GetOptions::new().with_keys_only().with_limit(1)))
            .await
            .map_err(unavailable)?;
        Ok(etcd)
    }

    pub(super) async fn list(&self) -> Result<(Vec<Record>, u64), StoreError> {
        let got =
            self.client.kv_client().get(PREFIX, Some(GetOptions::new().with_prefix())).await.map_err(unavailable)?;
        let records = got
            .kvs()
            .iter()
            .map(|kv| Record {
                name: String::from_utf8_lossy(&kv.key()[PREFIX.len()..]).into_owned(),
                bytes: kv.value().to_vec(),
                revision: revision(kv.mod_revision()),
            })
            .collect();
        let at = got.header().map_or(0, |h| revision(h.revision()));
        Ok((records, at))
    }

    fn condition(key: &str, expect: Expect) -> Compare {
        match expect {
            Expect::Absent => Compare::version(key, CompareOp::Equal, 0),
            Expect::Revision(r) => Compare::mod_revision(key, CompareOp::Equal, r as i64),
        }
    }

    /// Runs `op` on `key` if it is as `expect` says; the revision written.
    async fn guarded(&self, name: &str, key: String, op: TxnOp, expect: Expect) -> Result<u64, StoreError> {
        let txn = Txn::new().when([Self::condition(&key, expect)]).and_then([op]).or_else([TxnOp::get(key, None)]);
        let done = self.client.kv_client().txn(txn).await.map_err(unavailable)?;
        if done.succeeded() {
            return Ok(done.header().map_or(0, |h| revision(h.revision())));
        }
        let found = done.op_responses().into_iter().find_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| revision(kv.mod_revision())),
            _ => None,
        });
        Err(StoreError::Conflict { name: name.to_owned(), expected: expect, found })
    }

    pub(super) async fn put(&self, name: &str, bytes: &[u8], expect: Expect) -> Result<u64, StoreError> {
        let key = format!("{PREFIX}{name}");
        self.guarded(name, key.clone(), TxnOp::put(key, bytes, None), expect).await
    }

    pub(super) async fn delete(&self, name: &str, expect: Expect) -> Result<(), StoreError> {
        let key = format!("{PREFIX}{name}");
        self.guarded(name, key.clone(), TxnOp::delete(key, None), expect).await.map(drop)
    }

    pub(super) async fn watch(&self, after: u64) -> Result<Changes, StoreError> {
        let options = WatchOptions::new().with_prefix().with_start_revision(after as i64 + 1);
        let mut stream = self.client.watch_client().watch(PREFIX, Some(options)).await.map_err(unavailable)?;
        let changes = async_stream(move |tx| async move {
            loop {
                let message = match stream.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => return,
                    Err(e) => return drop(tx.send(Err(unavailable(e))).await),
                };
                if message.compact_revision() > 0 || message.canceled() {
                    let why = format!("watch ended (compacted to {})", message.compact_revision());
                    return drop(tx.send(Err(StoreError::Unavailable(why))).await);
                }
                for event in message.events() {
                    let Some(kv) = event.kv() else { continue };
                    let name = String::from_utf8_lossy(&kv.key()[PREFIX.len()..]).into_owned();
                    let change = match event.event_type() {
                        EventType::Put => Change::Put(Record {
                            name,
                            bytes: kv.value().to_vec(),
                            revision: revision(kv.mod_revision()),
                        }),
                        EventType::Delete => Change::Delete { name, revision: revision(kv.mod_revision()) },
                    };
                    if tx.send(Ok(change)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(changes)
    }
}

/// A lease this process keeps alive; keys put under it vanish when it
/// lapses.
pub struct Lease {
    id: i64,
    keeper: etcd_client::LeaseKeeper,
    answers: etcd_client::LeaseKeepAliveStream,
}

impl Lease {
    /// The lease's id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Renews the lease; fails once it has lapsed (then take a new one).
    pub async fn renew(&mut self) -> Result<(), StoreError> {
        self.keeper.keep_alive().await.map_err(unavailable)?;
        match self.answers.message().await.map_err(unavailable)? {
            Some(answer) if answer.ttl() > 0 => Ok(()),
            _ => Err(StoreError::Unavailable(format!("lease {:x} lapsed", self.id))),
        }
    }
}

/// Keys beside the function records: leases, host entries, shared settings.
impl Etcd {
    /// A new lease of `ttl`, kept alive by [`Lease::renew`].
    pub async fn lease(&self, ttl: Duration) -> Result<Lease, StoreError> {
        let mut leases = self.client.lease_client();
        let granted = leases.grant(ttl.as_secs() as i64, None).await.map_err(unavailable)?;
        let (keeper, answers) = leases.keep_alive(granted.id()).await.map_err(unavailable)?;
        Ok(Lease { id: granted.id(), keeper, answers })
    }

    /// Puts `key` under `lease`.
    pub async fn put_leased(&self, key: &str, value: &[u8], lease: i64) -> Result<(), StoreError> {
        let options = etcd_client::PutOptions::new().with_lease(lease);
        self.client.kv_client().put(key, value, Some(options)).await.map(drop).map_err(unavailable)
    }

    /// Every key under `prefix`, with its value.
    pub async fn list_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let got =
            self.client.kv_client().get(prefix, Some(GetOptions::new().with_prefix())).await.map_err(unavailable)?;
        Ok(got.kvs().iter().map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec())).collect())
    }

    /// Deletes `key`.
    pub async fn delete_key(&self, key: &str) -> Result<(), StoreError> {
        self.client.kv_client().delete(key, None).await.map(drop).map_err(unavailable)
    }

    /// The value of `key`, set to `made` first if absent (one transaction,
    /// so every host ends up with the first writer's value).
    pub async fn value_or_insert(&self, key: &str, made: &[u8]) -> Result<Vec<u8>, StoreError> {
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, made, None)])
            .or_else([TxnOp::get(key, None)]);
        let done = self.client.kv_client().txn(txn).await.map_err(unavailable)?;
        if done.succeeded() {
            return Ok(made.to_vec());
        }
        done.op_responses()
            .into_iter()
            .find_map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .ok_or_else(|| StoreError::Unavailable(format!("{key} vanished while read")))
    }
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(feed: F) -> Changes
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Change, StoreError>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(feed(tx));
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

#[cfg(test)]
mod tests {
    use super::super::records::{Records, tests::keeps_the_contract};
    use super::*;
    use futures_util::StreamExt;

    /// A real etcd on a free loopback port, stopped on drop.
    pub struct Server {
        child: std::process::Child,
        _dir: tempfile::TempDir,
        pub endpoint: String,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    pub fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = std::process::Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path())
            .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcd is not installed: `make test` installs Debian's etcd-server");
        Server { child, _dir: dir, endpoint }
    }

    async fn connected(server: &Server) -> Etcd {
        for _ in 0..100 {
            if let Ok(etcd) = Etcd::connect(std::slice::from_ref(&server.endpoint)).await {
                return etcd;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd did not come up at {}", server.endpoint);
    }

    #[tokio::test]
    async fn etcd_keeps_the_contract_and_a_watch_sees_every_change() {
        let server = start();
        let records = Records::Etcd(Box::new(connected(&server).await));
        let (_, at) = records.list().await.unwrap();
        let mut changes = records.watch(at).await.unwrap().expect("etcd has a watch");
        keeps_the_contract(&records).await;
        let mut seen = Vec::new();
        while seen.len() < 4 {
            match tokio::time::timeout(Duration::from_secs(5), changes.next()).await {
                Ok(Some(Ok(Change::Put(r)))) => {
                    seen.push(format!("put {} {}", r.name, String::from_utf8_lossy(&r.bytes)))
                }
                Ok(Some(Ok(Change::Delete { name, .. }))) => seen.push(format!("delete {name}")),
                other => panic!("watch: {other:?} after {seen:?}"),
            }
        }
        assert_eq!(seen, ["put a one", "put a two", "put b bee", "delete a"]);
    }

    #[tokio::test]
    async fn an_unreachable_etcd_is_an_error_at_connect() {
        let closed = format!("http://127.0.0.1:{}", free_port());
        assert!(matches!(Etcd::connect(&[closed]).await, Err(StoreError::Unavailable(_))));
    }
}

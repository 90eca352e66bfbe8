//! Which hosts serve now, and what each one's share of a function's max
//! concurrency is.
//!
//! In a cluster every host registers itself in etcd under a lease it keeps
//! alive (`/nimbus/hosts/<id>`: address, cores, memory, loaded functions).
//! A host that crashes stops renewing, and etcd drops its entry when the
//! lease's TTL runs out; one that stops cleanly revokes it at once. Every
//! host reads the list every second.
//!
//! Max concurrency is a limit for the whole cluster, enforced without any
//! per-request coordination: each host admits its share of it. With N live
//! hosts a function's `max` is split into N shares that add up to exactly
//! `max` (`max / N`, and one more for `max % N` of them, chosen by a hash
//! of the name so that the extra ones fall on different hosts for
//! different functions). A host past its share answers 429 `throttled`
//! naming the share; a host whose share is 0 (max below N) answers at once
//! with 503 `no_share_here`, which the front (HAProxy) retries on another
//! host. When a host joins or leaves, the shares change for new requests; those already
//! running finish under the old ones. If etcd cannot be reached, the last
//! list read stays in force.

use crate::store::{Etcd, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a host says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostInfo {
    /// Unique among live hosts (the advertised address by default).
    pub id: String,
    /// Where clients and the front reach it.
    pub address: String,
    /// CPU cores it has.
    pub cores: u32,
    /// Its memory budget for functions, in MB.
    pub memory_mb: u64,
    /// Unix seconds it started at.
    pub started_at: u64,
    /// Functions with a version loaded here now.
    pub loaded: Vec<String>,
}

impl HostInfo {
    /// This host, reached at `address`, with `memory_mb` for functions and
    /// nothing loaded yet.
    pub fn this_host(address: String, memory_mb: u64) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let started_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        HostInfo { id: address.clone(), address, cores, memory_mb, started_at, loaded: Vec::new() }
    }
}

/// The live hosts as last read, sorted by id, and which one this is.
#[derive(Debug)]
pub struct Members {
    me: String,
    hosts: RwLock<Vec<HostInfo>>,
    /// Bumped whenever `hosts` changes, so pools recompute their share
    /// only then.
    generation: AtomicU64,
}

/// How long a crashed host stays listed at most.
pub const LEASE_TTL: Duration = Duration::from_secs(5);

/// How often the list is read (and this host's entry refreshed).
const READ_EVERY: Duration = Duration::from_secs(1);

const PREFIX: &str = "/nimbus/hosts/";

/// Host `rank`'s share of `max` among `hosts`: shares add up to `max`.
pub fn share_of(max: u32, hosts: u32, rank: u32) -> u32 {
    let hosts = hosts.max(1);
    max / hosts + u32::from(rank % hosts < max % hosts)
}

/// A stable hash of a name (FNV-1a), the same on every host.
fn spread(name: &str) -> u32 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (hash >> 32) as u32 ^ hash as u32
}

impl Members {
    /// A host on its own (or one that has not read the list yet).
    pub fn alone(me: HostInfo) -> Self {
        Members { me: me.id.clone(), hosts: RwLock::new(vec![me]), generation: AtomicU64::new(1) }
    }

    /// This host's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The live hosts, sorted by id.
    pub fn hosts(&self) -> Vec<HostInfo> {
        self.hosts.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes whenever the list does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// This host's share of `max` concurrent requests of `name`, and how
    /// many live hosts share it.
    pub fn share(&self, name: &str, max: u32) -> (u32, u32) {
        let hosts = self.hosts.read().unwrap_or_else(|p| p.into_inner());
        let n = hosts.len().max(1) as u32;
        // Not listed (its lease lapsed while etcd was away): counts as one more.
        let (n, position) = match hosts.iter().position(|h| h.id == self.me) {
            Some(p) => (n, p as u32),
            None => (n + 1, n),
        };
        (share_of(max, n, position.wrapping_add(spread(name)) % n), n)
    }

    fn set(&self, mut hosts: Vec<HostInfo>) {
        hosts.sort_by(|a, b| a.id.cmp(&b.id));
        let mut current = self.hosts.write().unwrap_or_else(|p| p.into_inner());
        let ids = |l: &[HostInfo]| l.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
        if ids(&current) != ids(&hosts) {
            tracing::info!(hosts = ?ids(&hosts), "cluster membership changed");
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        *current = hosts;
    }

    /// Keeps this host registered under a lease and the list fresh, until
    /// the task is dropped; `about` says what to register (called every
    /// second, so the loaded functions stay current). Survives etcd going
    /// away and coming back (a new lease then).
    pub async fn keep(&self, etcd: &Etcd, about: impl Fn() -> HostInfo) {
        let key = format!("{PREFIX}{}", self.me);
        loop {
            if let Err(e) = self.registered(etcd, &key, &about).await {
                tracing::warn!("cluster membership: {e}; registering again");
            }
            tokio::time::sleep(READ_EVERY).await;
        }
    }

    /// One lease's life: register, then renew and read until something fails.
    async fn registered(&self, etcd: &Etcd, key: &str, about: &impl Fn() -> HostInfo) -> Result<(), StoreError> {
        let mut lease = etcd.lease(LEASE_TTL).await?;
        let mut said = about();
        etcd.put_leased(key, &serde_json::to_vec(&said).expect("serializes"), lease.id()).await?;
        let mut tick = tokio::time::interval(READ_EVERY);
        loop {
            tick.tick().await;
            lease.renew().await?;
            let now = about();
            if now != said {
                etcd.put_leased(key, &serde_json::to_vec(&now).expect("serializes"), lease.id()).await?;
                said = now;
            }
            let hosts = etcd.list_prefix(PREFIX).await?;
            self.set(hosts.iter().filter_map(|(_, v)| serde_json::from_slice(v).ok()).collect());
        }
    }

    /// Leaves the cluster at once (on a clean stop).
    pub async fn leave(&self, etcd: &Etcd) {
        if let Err(e) = etcd.delete_key(&format!("{PREFIX}{}", self.me)).await {
            tracing::warn!("could not leave the cluster cleanly (it drops out within {LEASE_TTL:?}): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str) -> HostInfo {
        HostInfo { id: id.into(), address: id.into(), cores: 2, memory_mb: 1024, started_at: 0, loaded: vec![] }
    }

    #[test]
    fn shares_add_up_to_max_concurrency() {
        for max in 0..40 {
            for n in 1..6 {
                let total: u32 = (0..n).map(|r| share_of(max, n, r)).sum();
                assert_eq!(total, max, "max {max} over {n} hosts");
            }
        }
    }

    #[test]
    fn every_host_computes_the_same_split() {
        let ids = ["a:1", "b:1", "c:1"];
        let views: Vec<Members> = ids.iter().map(|me| Members::alone(host(me))).collect();
        for m in &views {
            m.set(ids.iter().rev().map(|id| host(id)).collect());
        }
        for name in ["digits", "vision", "x"] {
            let total: u32 = views.iter().map(|m| m.share(name, 4).0).sum();
            assert_eq!(total, 4, "{name}");
            assert!(views.iter().all(|m| m.share(name, 4).1 == 3));
        }
        // One extra slot lands on different hosts for different names.
        let extra = |name: &str| views.iter().position(|m| m.share(name, 1).0 == 1).unwrap();
        let spots: std::collections::HashSet<usize> = (0..30).map(|i| extra(&format!("f{i}"))).collect();
        assert!(spots.len() > 1, "{spots:?}");
    }

    #[test]
    fn a_host_missing_from_the_list_takes_a_share_of_its_own() {
        let m = Members::alone(host("a"));
        assert_eq!(m.share("f", 8), (8, 1));
        let before = m.generation();
        m.set(vec![host("b"), host("c")]);
        assert!(m.generation() > before);
        assert_eq!(m.share("f", 9), (3, 3));
    }
}

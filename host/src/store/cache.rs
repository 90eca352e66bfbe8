//! What the blob store knows about its local files beyond the files
//! themselves: which were verified against their digest (and are unchanged
//! since), which a loaded function uses (pinned), when each was last used,
//! and, in a cluster, the bound past which the least recently used
//! unpinned ones are evicted (the object store keeps every blob; a host's
//! disk is only a cache of it).
//!
//! A file is verified by hashing it once per process; afterwards its
//! inode, size and modification time vouch for it. Bytes rewritten in place
//! change the time, so they are hashed again before anything loads them.

use super::Digest;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What a file looked like when it last hashed to its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: (i64, i64),
    digest: Digest,
}

#[derive(Default)]
struct State {
    /// By (device, inode).
    verified: HashMap<(u64, u64), Stamp>,
    pins: HashMap<Digest, usize>,
    used: HashMap<Digest, SystemTime>,
}

/// Verification stamps, pins and last use of local blobs and artifact folders.
#[derive(Clone, Default)]
pub(super) struct Cache {
    state: Arc<Mutex<State>>,
}

/// Keeps blobs and artifact folders from eviction while it lives (a
/// function loaded from them may still read them).
pub struct Pin {
    state: Arc<Mutex<State>>,
    digests: Vec<Digest>,
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pin").field("digests", &self.digests).finish()
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for d in &self.digests {
            if let Some(n) = state.pins.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    state.pins.remove(d);
                }
            }
        }
    }
}

/// What eviction may remove: an artifact folder, or a blob no folder links.
struct Candidate {
    path: PathBuf,
    digest: Digest,
    used: SystemTime,
}

/// sha256 of the file at `path`.
pub(super) fn hash_file(path: &Path) -> std::io::Result<Digest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(Digest::of_hash(hasher.finalize().as_slice()))
}

fn stamp_of(meta: &std::fs::Metadata, digest: &Digest) -> ((u64, u64), Stamp) {
    let stamp = Stamp { len: meta.len(), modified: (meta.mtime(), meta.mtime_nsec()), digest: digest.clone() };
    ((meta.dev(), meta.ino()), stamp)
}

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pins `digests` until the returned guard drops, and marks them used now.
    pub(super) fn pin(&self, digests: Vec<Digest>) -> Pin {
        let mut state = self.lock();
        let now = SystemTime::now();
        for d in &digests {
            *state.pins.entry(d.clone()).or_default() += 1;
            state.used.insert(d.clone(), now);
        }
        Pin { state: self.state.clone(), digests }
    }

    /// Whether the file at `path` holds exactly the bytes of `digest`: `Ok(None)`
    /// when it does, `Ok(Some(actual))` when it does not. Hashes it unless
    /// it is unchanged since it last verified. Blocking.
    pub(super) fn verify(&self, path: &Path, digest: &Digest) -> std::io::Result<Option<Digest>> {
        let meta = std::fs::metadata(path)?;
        let (id, stamp) = stamp_of(&meta, digest);
        if self.lock().verified.get(&id) == Some(&stamp) {
            return Ok(None);
        }
        let actual = hash_file(path)?;
        if &actual != digest {
            self.lock().verified.remove(&id);
            return Ok(Some(actual));
        }
        // Stamped as it was before hashing: a write meanwhile shows next time.
        self.lock().verified.insert(id, stamp);
        Ok(None)
    }

    /// Records that the file at `path` was just written from bytes that
    /// hashed to `digest`.
    pub(super) fn vouch(&self, path: &Path, digest: &Digest) {
        if let Ok(meta) = std::fs::metadata(path) {
            let (id, stamp) = stamp_of(&meta, digest);
            self.lock().verified.insert(id, stamp);
        }
    }

    /// Removes the least recently used unpinned artifact folders and
    /// unlinked blobs until the blobs in `blobs` take at most `limit` bytes.
    /// Returns what it removed. Blocking.
    pub(super) fn evict(&self, blobs: &Path, artifacts: &Path, limit: u64) -> Vec<Digest> {
        let mut removed = Vec::new();
        loop {
            let (total, mut candidates) = self.survey(blobs, artifacts);
            if total <= limit {
                return removed;
            }
            candidates.sort_by_key(|c| c.used);
            let Some(victim) = candidates.into_iter().next() else {
                tracing::warn!(total, limit, "blob cache over its bound, but every blob is in use");
                return removed;
            };
            let gone = if victim.path.is_dir() {
                std::fs::remove_dir_all(&victim.path)
            } else {
                std::fs::remove_file(&victim.path)
            };
            if let Err(e) = gone {
                tracing::warn!(path = %victim.path.display(), "cannot evict: {e}");
                return removed;
            }
            self.lock().used.remove(&victim.digest);
            removed.push(victim.digest);
        }
    }

    /// The bytes blobs take, and what could be evicted.
    fn survey(&self, blobs: &Path, artifacts: &Path) -> (u64, Vec<Candidate>) {
        let state = self.lock();
        let mut total = 0;
        let mut candidates = Vec::new();
        let mut consider = |path: PathBuf, meta: &std::fs::Metadata| {
            let Some(Ok(digest)) = path.file_name().and_then(|n| n.to_str()).map(Digest::parse) else { return };
            if state.pins.contains_key(&digest) {
                return;
            }
            let used =
                state.used.get(&digest).copied().or_else(|| meta.modified().ok()).unwrap_or(SystemTime::UNIX_EPOCH);
            candidates.push(Candidate { path, digest, used });
        };
        for entry in std::fs::read_dir(blobs).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            total += meta.len();
            // Linked into a folder: evicted with the folder.
            if meta.nlink() == 1 {
                consider(entry.path(), &meta);
            }
        }
        for entry in std::fs::read_dir(artifacts).into_iter().flatten().flatten() {
            if let Ok(meta) = entry.metadata() {
                consider(entry.path(), &meta);
            }
        }
        (total, candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_is_remembered_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"model bytes").unwrap();
        let digest = Digest::of(b"model bytes");
        let cache = Cache::default();
        assert_eq!(cache.verify(&path, &digest).unwrap(), None);
        assert_eq!(cache.verify(&path, &digest).unwrap(), None, "stamped");
        // Rewritten in place, same length: the new time gives it away.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&path, b"MODEL bytes").unwrap();
        assert_eq!(cache.verify(&path, &digest).unwrap(), Some(Digest::of(b"MODEL bytes")));
    }

    #[test]
    fn eviction_takes_the_least_recently_used_and_spares_pinned_and_linked() {
        let dir = tempfile::tempdir().unwrap();
        let (blobs, artifacts) = (dir.path().join("blobs"), dir.path().join("artifacts"));
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::create_dir_all(&artifacts).unwrap();
        let cache = Cache::default();
        let mut digests = Vec::new();
        for i in 0..4u8 {
            let bytes = vec![i; 100];
            let d = Digest::of(&bytes);
            std::fs::write(blobs.join(d.as_str()), &bytes).unwrap();
            drop(cache.pin(vec![d.clone()]));
            digests.push(d);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Blob 1 is linked into a folder (named by a set digest).
        let set = Digest::of(b"set");
        std::fs::create_dir(artifacts.join(set.as_str())).unwrap();
        std::fs::hard_link(blobs.join(digests[1].as_str()), artifacts.join(set.as_str()).join("m.onnx")).unwrap();
        drop(cache.pin(vec![set.clone()]));
        let _pinned = cache.pin(vec![digests[0].clone()]);

        let removed = cache.evict(&blobs, &artifacts, 250);
        assert_eq!(removed, vec![digests[2].clone(), digests[3].clone()], "oldest unpinned loose blobs first");

        let removed = cache.evict(&blobs, &artifacts, 100);
        assert_eq!(removed, vec![set, digests[1].clone()], "the folder, then its blob unlinked");
        assert!(blobs.join(digests[0].as_str()).is_file(), "pinned stays");
    }
}

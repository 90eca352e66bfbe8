//! Content-addressed blobs: `blobs/sha256/<hex>`, immutable once written.
//! On one host they are the only copy; in a cluster they are a cache of
//! the object store's (see `remote`), fetched on first use, verified, and
//! bounded (see `cache`).
//!
//! An upload streams into `uploads/`, hashing as it goes; only bytes that
//! hash to the digest they were sent under are synced and renamed into
//! place. Artifact folders are materialized as hard links into
//! `artifacts/<digest>/`, built in a temporary folder and renamed whole, so
//! a handler's `/model` never shows a half-written folder.

use super::cache::{Cache, Pin};
use super::{Remote, StoreError};
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A sha256 digest, as 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Parses a digest; accepts an optional `sha256:` prefix.
    pub fn parse(s: &str) -> Result<Self, String> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s).to_ascii_lowercase();
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Digest(hex))
        } else {
            Err(format!("`{s}` is not a sha256 digest (64 hex characters)"))
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(hex::encode(Sha256::digest(bytes)))
    }

    /// The digest whose raw sha256 bytes are `hash`.
    pub(super) fn of_hash(hash: &[u8]) -> Self {
        Digest(hex::encode(hash))
    }

    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

/// In the API: what [`Digest::parse`] accepts; answers carry the bare hex.
impl utoipa::PartialSchema for Digest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^(sha256:)?[0-9a-fA-F]{64}$"))
            .description(Some("A sha256 digest: 64 hex characters (answers: lowercase, no prefix)"))
            .into()
    }
}

impl utoipa::ToSchema for Digest {}

/// The largest blob: an upload past it is refused, and so is a fetch from
/// the object store (whatever it sends, at most this much reaches disk).
pub const BLOB_LIMIT: u64 = 8 << 30;

/// What a function version needs on local disk before it loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The handler component.
    pub wasm: Digest,
    /// The artifact set (names the folder).
    pub set: Digest,
    /// The set's files: path relative to the folder, blob.
    pub files: Vec<(String, Digest)>,
    /// A compiled snapshot another host shared: its key and blob.
    pub snapshot: Option<(String, Digest)>,
}

impl Manifest {
    fn digests(&self) -> Vec<Digest> {
        let mut all = vec![self.wasm.clone(), self.set.clone()];
        all.extend(self.files.iter().map(|(_, d)| d.clone()));
        all
    }
}

/// Blobs, uploads in progress and materialized artifact folders; in a
/// cluster, a bounded cache of the object store's blobs.
pub struct BlobStore {
    blobs: PathBuf,
    uploads: PathBuf,
    artifacts: PathBuf,
    remote: Option<Remote>,
    /// Local bytes past which unused blobs are evicted (cluster only).
    limit: u64,
    cache: Cache,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Io(std::io::Error::other(e)))
}

impl BlobStore {
    pub(super) fn open(root: &Path, remote: Option<Remote>, limit: u64) -> Result<Self, StoreError> {
        let store = BlobStore {
            blobs: root.join("blobs/sha256"),
            uploads: root.join("uploads"),
            artifacts: root.join("artifacts"),
            remote,
            limit,
            cache: Cache::default(),
        };
        for dir in [&store.blobs, &store.uploads, &store.artifacts] {
            std::fs::create_dir_all(dir)?;
        }
        // Uploads and folder builds cut short by a crash are never valid.
        for entry in std::fs::read_dir(&store.uploads)?.flatten() {
            let _ = std::fs::remove_file(entry.path()).or_else(|_| std::fs::remove_dir_all(entry.path()));
        }
        Ok(store)
    }

    /// The object store behind this one, in a cluster.
    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    /// Where the blob lives locally (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.as_str())
    }

    /// The blob's size, if stored: in a cluster, if the object store has
    /// it (a local copy alone is not enough for other hosts).
    pub async fn size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match &self.remote {
            Some(remote) => remote.size(digest).await,
            None => Ok(std::fs::metadata(self.path(digest)).ok().map(|m| m.len())),
        }
    }

    /// Stores a stream of chunks under `expected`, at most `limit` bytes,
    /// here and in the object store. Returns the size.
    pub async fn put_stream<S, E>(&self, expected: &Digest, chunks: S, limit: u64) -> Result<u64, StoreError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let size = self.write_local(expected, chunks, limit).await?;
        if let Some(remote) = &self.remote {
            remote.upload(expected, &self.path(expected)).await?;
        }
        Ok(size)
    }

    /// Writes a stream into the local blob `expected` if its bytes hash to it.
    async fn write_local<S, E>(&self, expected: &Digest, mut chunks: S, limit: u64) -> Result<u64, StoreError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let tmp = tempfile::NamedTempFile::new_in(&self.uploads)?;
        let (file, tmp_path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| StoreError::Upload(e.to_string()))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(StoreError::TooLarge(limit));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        let actual = Digest(hex::encode(hasher.finalize()));
        if &actual != expected {
            return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
        }
        file.sync_all().await?;
        drop(file);
        let path = self.path(expected);
        tmp_path.persist(&path).map_err(|e| StoreError::Io(e.error))?;
        sync_dir(&self.blobs)?;
        self.cache.vouch(&path, expected);
        Ok(size)
    }

    /// Where the artifact folder named `digest` is (whether or not it exists).
    pub fn artifact_dir(&self, digest: &Digest) -> PathBuf {
        self.artifacts.join(digest.as_str())
    }

    /// Makes everything `manifest` names ready on local disk, verified
    /// against its digests: the handler blob and the artifact folder.
    /// Missing blobs are fetched from the object store; corrupted ones are
    /// removed and fetched again (without an object store, they are
    /// reported). The files stay until the returned pin drops.
    pub async fn ready(self: &Arc<Self>, manifest: &Manifest) -> Result<Pin, StoreError> {
        let pin = self.cache.pin(manifest.digests());
        let dir = self.artifact_dir(&manifest.set);
        if dir.is_dir() {
            for (rel, digest) in &manifest.files {
                if let Some(actual) = self.check(dir.join(rel), digest).await? {
                    tracing::warn!(file = %rel, expected = %digest, %actual, "corrupted artifact file, fetching it again");
                    std::fs::remove_dir_all(&dir)?;
                    break;
                }
            }
        }
        let mut fetched = false;
        if !dir.is_dir() {
            for (_, digest) in &manifest.files {
                fetched |= self.ensure(digest).await?;
            }
            self.materialize(&manifest.set, &manifest.files)?;
        }
        fetched |= self.ensure(&manifest.wasm).await?;
        if fetched && self.remote.is_some() {
            let (this, limit) = (self.clone(), self.limit);
            let evicted = blocking(move || this.cache.evict(&this.blobs, &this.artifacts, limit)).await?;
            if !evicted.is_empty() {
                tracing::info!(evicted = evicted.len(), "blob cache trimmed to its bound");
            }
        }
        Ok(pin)
    }

    /// The local path of the blob, fetched (and verified) first if needed.
    pub async fn fetch(self: &Arc<Self>, digest: &Digest) -> Result<PathBuf, StoreError> {
        self.ensure(digest).await?;
        Ok(self.path(digest))
    }

    /// Copies the file at `path` into the object store as a blob (unless
    /// it is there); returns its digest. Without an object store, nothing.
    pub async fn publish(&self, path: &Path) -> Result<Option<Digest>, StoreError> {
        let Some(remote) = &self.remote else { return Ok(None) };
        let file = path.to_path_buf();
        let digest = blocking(move || super::cache::hash_file(&file)).await??;
        if remote.size(&digest).await?.is_none() {
            remote.upload(&digest, path).await?;
        }
        Ok(Some(digest))
    }

    /// `Some(actual digest)` when the file does not hash to `digest`.
    async fn check(self: &Arc<Self>, path: PathBuf, digest: &Digest) -> Result<Option<Digest>, StoreError> {
        let (this, expected) = (self.clone(), digest.clone());
        match blocking(move || this.cache.verify(&path, &expected)).await? {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(Digest::of(b""))),
            verified => Ok(verified?),
        }
    }

    /// Makes the blob present and verified locally; whether it was fetched.
    async fn ensure(self: &Arc<Self>, digest: &Digest) -> Result<bool, StoreError> {
        let path = self.path(digest);
        if path.is_file() {
            match self.check(path.clone(), digest).await? {
                None => return Ok(false),
                Some(actual) => {
                    tracing::warn!(blob = %digest, %actual, "corrupted blob removed");
                    std::fs::remove_file(&path)?;
                    if self.remote.is_none() {
                        return Err(StoreError::Corrupted { digest: digest.clone(), actual });
                    }
                }
            }
        }
        let Some(remote) = &self.remote else { return Err(StoreError::MissingBlob(digest.clone())) };
        let started = std::time::Instant::now();
        let size = self.write_local(digest, remote.get(digest).await?, BLOB_LIMIT).await?;
        tracing::info!(blob = %digest, size, fetch_ms = started.elapsed().as_millis() as u64, "fetched from the object store");
        Ok(true)
    }

    /// The folder holding `files` (relative path, blob) as hard links,
    /// named by `digest`; built once, then reused.
    fn materialize(&self, digest: &Digest, files: &[(String, Digest)]) -> Result<PathBuf, StoreError> {
        let dir = self.artifact_dir(digest);
        if dir.is_dir() {
            return Ok(dir);
        }
        let staging = tempfile::Builder::new().prefix("artifacts-").tempdir_in(&self.uploads)?;
        for (rel, blob) in files {
            let source = self.path(blob);
            if !source.is_file() {
                return Err(StoreError::MissingBlob(blob.clone()));
            }
            let target = staging.path().join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::hard_link(&source, &target).or_else(|_| std::fs::copy(&source, &target).map(drop))?;
        }
        let staged = staging.keep();
        match std::fs::rename(&staged, &dir) {
            Ok(()) => Ok(dir),
            // Another load of the same artifacts won the race: same content.
            Err(_) if dir.is_dir() => {
                let _ = std::fs::remove_dir_all(&staged);
                Ok(dir)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes local blobs and artifact folders not in `keep`, except those
    /// younger than `grace` (an upload for a deploy still in flight); in a
    /// cluster, the object store's too. Returns how many were removed.
    pub async fn retain(&self, keep: &HashSet<Digest>, grace: Duration) -> Result<usize, StoreError> {
        let mut removed = 0;
        if let Some(remote) = &self.remote {
            for (digest, age) in remote.list().await? {
                if !keep.contains(&digest) && age >= grace {
                    remote.delete(&digest).await?;
                    removed += 1;
                }
            }
        }
        let now = SystemTime::now();
        for dir in [&self.blobs, &self.artifacts] {
            for entry in std::fs::read_dir(dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let referenced = Digest::parse(&name).is_ok_and(|d| keep.contains(&d));
                let young = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() < grace);
                if referenced || young {
                    continue;
                }
                let path = entry.path();
                let gone = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
                if gone.is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RemoteOptions;

    fn chunks(parts: &[&[u8]]) -> impl futures_util::Stream<Item = Result<bytes::Bytes, String>> + Unpin {
        futures_util::stream::iter(parts.iter().map(|p| Ok(bytes::Bytes::copy_from_slice(p))).collect::<Vec<_>>())
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    fn put(store: &BlobStore, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        block_on(store.put_stream(&digest, chunks(&[bytes]), 1 << 20)).unwrap();
        digest
    }

    /// A store over `root` whose object store is the folder `bucket`.
    fn clustered(root: &Path, bucket: &Path, limit: u64) -> Arc<BlobStore> {
        let options = RemoteOptions { url: format!("file://{}", bucket.display()), ..Default::default() };
        Arc::new(BlobStore::open(root, Some(Remote::open(&options).unwrap()), limit).unwrap())
    }

    fn manifest(wasm: &Digest, files: &[(&str, &Digest)]) -> Manifest {
        let files: Vec<(String, Digest)> = files.iter().map(|(p, d)| (p.to_string(), (*d).clone())).collect();
        let set = Digest::of(format!("{files:?}").as_bytes());
        Manifest { wasm: wasm.clone(), set, files, snapshot: None }
    }

    #[test]
    fn uploads_are_kept_only_under_their_own_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None, 0).unwrap();
        let digest = Digest::of(b"hello world");
        assert_eq!(block_on(store.put_stream(&digest, chunks(&[b"hello ", b"world"]), 100)).unwrap(), 11);
        assert_eq!(std::fs::read(store.path(&digest)).unwrap(), b"hello world");
        assert_eq!(block_on(store.size(&digest)).unwrap(), Some(11));

        let wrong = block_on(store.put_stream(&Digest::of(b"x"), chunks(&[b"y"]), 100)).unwrap_err();
        assert!(matches!(wrong, StoreError::DigestMismatch { .. }), "{wrong}");
        assert_eq!(block_on(store.size(&Digest::of(b"x"))).unwrap(), None);

        let big = block_on(store.put_stream(&Digest::of(b"0123456789"), chunks(&[b"01234", b"56789"]), 8));
        assert!(matches!(big, Err(StoreError::TooLarge(8))));
        assert_eq!(std::fs::read_dir(&store.uploads).unwrap().count(), 0, "failed uploads leave nothing");
    }

    #[test]
    fn ready_links_artifacts_and_collection_keeps_what_is_referenced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(dir.path(), None, 0).unwrap());
        let (wasm, model, labels) = (put(&store, b"wasm"), put(&store, b"model"), put(&store, b"labels"));
        let m = manifest(&wasm, &[("m.onnx", &model), ("sub/labels.txt", &labels)]);
        drop(block_on(store.ready(&m)).unwrap());
        let folder = store.artifact_dir(&m.set);
        assert_eq!(std::fs::read(folder.join("sub/labels.txt")).unwrap(), b"labels");

        let absent = manifest(&wasm, &[("x", &Digest::of(b"absent"))]);
        assert!(matches!(block_on(store.ready(&absent)), Err(StoreError::MissingBlob(_))));

        let keep: HashSet<Digest> = [wasm.clone(), model.clone(), m.set.clone()].into();
        assert_eq!(block_on(store.retain(&keep, Duration::ZERO)).unwrap(), 1, "only the labels blob goes");
        assert!(store.path(&model).is_file() && !store.path(&labels).is_file());
        assert!(folder.is_dir());
    }

    #[test]
    fn a_corrupted_blob_is_refused_on_one_host() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(dir.path(), None, 0).unwrap());
        let (wasm, model) = (put(&store, b"wasm"), put(&store, b"model"));
        let m = manifest(&wasm, &[("m.onnx", &model)]);
        drop(block_on(store.ready(&m)).unwrap());
        std::thread::sleep(Duration::from_millis(10));
        std::fs::write(store.path(&model), b"MODEL").unwrap();
        let refused = block_on(store.ready(&m)).unwrap_err();
        assert!(matches!(&refused, StoreError::Corrupted { digest, .. } if digest == &model), "{refused}");
    }

    #[test]
    fn bytes_from_the_object_store_that_do_not_match_their_digest_are_refused() {
        let (bucket, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let digest = Digest::of(b"the model");
        let forged = bucket.path().join("blobs/sha256");
        std::fs::create_dir_all(&forged).unwrap();
        std::fs::write(forged.join(digest.as_str()), b"something else").unwrap();
        let host = clustered(dir.path(), bucket.path(), u64::MAX);
        let refused = block_on(host.fetch(&digest)).unwrap_err();
        assert!(matches!(refused, StoreError::DigestMismatch { .. }), "{refused}");
        assert!(!host.path(&digest).exists(), "nothing kept");
    }

    #[test]
    fn a_cluster_host_fetches_verifies_and_evicts() {
        let (bucket, uploader, reader) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let up = clustered(uploader.path(), bucket.path(), u64::MAX);
        let (wasm, a, b) = (put(&up, b"wasm"), put(&up, &[1; 1000]), put(&up, &[2; 1000]));

        // Another host has none of it: fetched on first use.
        let host = clustered(reader.path(), bucket.path(), 1500);
        assert_eq!(block_on(host.size(&a)).unwrap(), Some(1000), "sizes come from the object store");
        let first = manifest(&wasm, &[("a.onnx", &a)]);
        let pin = block_on(host.ready(&first)).unwrap();
        assert_eq!(std::fs::read(host.artifact_dir(&first.set).join("a.onnx")).unwrap(), vec![1; 1000]);

        // Corrupted in place: detected by its digest, fetched again.
        drop(pin);
        std::thread::sleep(Duration::from_millis(10));
        std::fs::write(host.path(&a), vec![9; 1000]).unwrap();
        let pin = block_on(host.ready(&first)).unwrap();
        assert_eq!(std::fs::read(host.artifact_dir(&first.set).join("a.onnx")).unwrap(), vec![1; 1000]);

        // Over the bound: what no loaded function pins goes, least recent first.
        drop(pin);
        let second = manifest(&wasm, &[("b.onnx", &b)]);
        let pin = block_on(host.ready(&second)).unwrap();
        assert!(!host.artifact_dir(&first.set).exists() && !host.path(&a).exists(), "evicted");
        assert!(host.path(&b).is_file() && host.path(&wasm).is_file(), "in use");

        // Nothing in the object store is lost: it comes back when asked for.
        drop(pin);
        drop(block_on(host.ready(&first)).unwrap());
        assert!(host.path(&a).is_file());
    }
}

//! Content-addressed blobs: `blobs/sha256/<hex>`, immutable once written.
//!
//! An upload streams into `uploads/`, hashing as it goes; only bytes that
//! hash to the digest they were sent under are synced and renamed into
//! place. Artifact folders are materialized as hard links into
//! `artifacts/<digest>/`, built in a temporary folder and renamed whole, so
//! a handler's `/model` never shows a half-written folder.

use super::StoreError;
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
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

/// Blobs, uploads in progress and materialized artifact folders.
pub struct BlobStore {
    blobs: PathBuf,
    uploads: PathBuf,
    artifacts: PathBuf,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl BlobStore {
    pub(super) fn open(root: &Path) -> Result<Self, StoreError> {
        let store = BlobStore {
            blobs: root.join("blobs/sha256"),
            uploads: root.join("uploads"),
            artifacts: root.join("artifacts"),
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

    /// Where the blob lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.as_str())
    }

    /// Whether the blob is stored.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The blob's size, if stored.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        std::fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// Stores a stream of chunks under `expected`, at most `limit` bytes.
    /// Returns the size. Idempotent: an existing blob is left as it is.
    pub async fn put_stream<S, E>(&self, expected: &Digest, mut chunks: S, limit: u64) -> Result<u64, StoreError>
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
        tmp_path.persist(self.path(expected)).map_err(|e| StoreError::Io(e.error))?;
        sync_dir(&self.blobs)?;
        Ok(size)
    }

    /// Stores bytes already in memory; returns their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        if !self.contains(&digest) {
            let mut tmp = tempfile::NamedTempFile::new_in(&self.uploads)?;
            std::io::Write::write_all(&mut tmp, bytes)?;
            tmp.as_file().sync_all()?;
            tmp.persist(self.path(&digest)).map_err(|e| StoreError::Io(e.error))?;
            sync_dir(&self.blobs)?;
        }
        Ok(digest)
    }

    /// Where the artifact folder named `digest` is (whether or not it exists).
    pub fn artifact_dir(&self, digest: &Digest) -> PathBuf {
        self.artifacts.join(digest.as_str())
    }

    /// The folder holding `files` (relative path, blob) as hard links,
    /// named by `digest`; built once, then reused.
    pub fn materialize(&self, digest: &Digest, files: &[(String, Digest)]) -> Result<PathBuf, StoreError> {
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
            // Another deploy of the same artifacts won the race: same content.
            Err(_) if dir.is_dir() => {
                let _ = std::fs::remove_dir_all(&staged);
                Ok(dir)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes blobs and artifact folders not in `keep`, except those
    /// younger than `grace` (an upload for a deploy still in flight).
    /// Returns how many were removed.
    pub fn retain(&self, keep: &HashSet<Digest>, grace: Duration) -> Result<usize, StoreError> {
        let now = SystemTime::now();
        let mut removed = 0;
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

    fn chunks(parts: &[&'static [u8]]) -> impl futures_util::Stream<Item = Result<bytes::Bytes, String>> + Unpin {
        futures_util::stream::iter(parts.iter().map(|p| Ok(bytes::Bytes::from_static(p))).collect::<Vec<_>>())
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn uploads_are_kept_only_under_their_own_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = Digest::of(b"hello world");
        assert_eq!(block_on(store.put_stream(&digest, chunks(&[b"hello ", b"world"]), 100)).unwrap(), 11);
        assert_eq!(std::fs::read(store.path(&digest)).unwrap(), b"hello world");

        let wrong = block_on(store.put_stream(&Digest::of(b"x"), chunks(&[b"y"]), 100)).unwrap_err();
        assert!(matches!(wrong, StoreError::DigestMismatch { .. }), "{wrong}");
        assert!(!store.contains(&Digest::of(b"x")));

        let big = block_on(store.put_stream(&Digest::of(b"0123456789"), chunks(&[b"01234", b"56789"]), 8));
        assert!(matches!(big, Err(StoreError::TooLarge(8))));
        assert_eq!(std::fs::read_dir(&store.uploads).unwrap().count(), 0, "failed uploads leave nothing");
    }

    #[test]
    fn artifact_folders_link_blobs_and_collection_keeps_what_is_referenced() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let model = store.put_bytes(b"model").unwrap();
        let labels = store.put_bytes(b"labels").unwrap();
        let files = vec![("m.onnx".to_owned(), model.clone()), ("sub/labels.txt".to_owned(), labels.clone())];
        let set = Digest::of(b"set");
        let folder = store.materialize(&set, &files).unwrap();
        assert_eq!(std::fs::read(folder.join("sub/labels.txt")).unwrap(), b"labels");
        assert_eq!(store.materialize(&set, &files).unwrap(), folder, "built once");

        let missing = store.materialize(&Digest::of(b"other"), &[("x".into(), Digest::of(b"absent"))]);
        assert!(matches!(missing, Err(StoreError::MissingBlob(_))));

        let keep: HashSet<Digest> = [model.clone(), set.clone()].into();
        assert_eq!(store.retain(&keep, Duration::ZERO).unwrap(), 1, "only the labels blob goes");
        assert!(store.contains(&model) && !store.contains(&labels));
        assert!(folder.is_dir());
    }

    #[test]
    fn digests_parse_strictly() {
        let hex = "a".repeat(64);
        assert_eq!(Digest::parse(&format!("sha256:{hex}")).unwrap().as_str(), hex);
        assert_eq!(Digest::parse(&hex.to_uppercase()).unwrap().as_str(), hex);
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(65), "../../etc/passwd"] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }
}

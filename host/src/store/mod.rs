//! Durable state: function records (sled embedded, or etcd for a cluster)
//! and a content-addressed blob store on disk for handler and artifact
//! bytes. The only module that names sled or etcd.
//!
//! Contract: a record is written only after every blob it names is on disk
//! and synced, and a record write is one durable, revision-checked write,
//! so a crash at any point leaves each function either at its old version
//! or its new one, whole. Records are opaque JSON to this module; the
//! registry owns their meaning.

mod blobs;
mod cache;
mod etcd;
mod records;
mod remote;

pub use blobs::{BLOB_LIMIT, BlobStore, Digest, Manifest};
pub use cache::Pin;
pub use etcd::{Etcd, Lease};
pub use records::{Change, Changes, Expect, Record, Records};
pub use remote::{Remote, RemoteOptions};

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Creates `dir` (and its parents) if needed and makes it 0700.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Disk I/O failed.
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The metadata database failed.
    #[error("metadata database: {0}")]
    Db(#[from] sled::Error),
    /// Uploaded bytes do not hash to the digest they were sent under.
    #[error("uploaded bytes hash to {actual}, not {expected}")]
    DigestMismatch {
        /// The digest named in the request.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A blob named by a deploy is not in the store.
    #[error("blob {0} has not been uploaded")]
    MissingBlob(Digest),
    /// A stored blob no longer hashes to its digest (it was removed).
    #[error("blob {digest} on disk hashes to {actual}: it was corrupted and is removed; deploy the function again")]
    Corrupted {
        /// The blob.
        digest: Digest,
        /// What its bytes hash to.
        actual: Digest,
    },
    /// Someone else wrote the record since it was read.
    #[error("`{name}` was changed meanwhile (expected {expected:?}, found revision {found:?}); read it again")]
    Conflict {
        /// The record.
        name: String,
        /// What the write expected.
        expected: Expect,
        /// The revision found, if any record was.
        found: Option<u64>,
    },
    /// The shared records (etcd) cannot be reached.
    #[error("the record store is unavailable: {0}")]
    Unavailable(String),
    /// The object store cannot be reached (or refused the request).
    #[error("the object store is unavailable: {0}")]
    ObjectStore(String),
    /// An upload exceeded the size limit.
    #[error("upload is larger than {0} bytes")]
    TooLarge(u64),
    /// The upload stream broke.
    #[error("upload interrupted: {0}")]
    Upload(String),
}

/// The data directory (blobs, materialized artifact folders, the
/// precompiled-component cache) and the records, wherever they live.
pub struct Store {
    /// Function records.
    pub records: Records,
    /// Content-addressed bytes.
    pub blobs: Arc<BlobStore>,
    root: PathBuf,
}

impl Store {
    /// Opens (or creates) the store in `root`, records in sled there. The
    /// data directory and its folders are private to the server's user
    /// (0700): they hold the admin token and every function's code and models.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        private_dir(root)?;
        let records = Records::Sled(records::Sled::open(sled::open(root.join("meta"))?)?);
        Self::shared(root, records, None)
    }

    /// Opens the store in `root` as one host of a cluster: records kept by
    /// `records` (etcd), blobs by `remote` when given, with at most
    /// `cache_bytes` of them on local disk.
    pub fn shared(root: &Path, records: Records, remote: Option<(Remote, u64)>) -> Result<Self, StoreError> {
        private_dir(root)?;
        private_dir(&root.join("compiled"))?;
        let (remote, limit) = remote.map_or((None, u64::MAX), |(r, limit)| (Some(r), limit));
        let blobs = BlobStore::open(root, remote, limit)?;
        for entry in std::fs::read_dir(root)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                private_dir(&entry.path())?;
            }
        }
        Ok(Store { records, blobs: Arc::new(blobs), root: root.to_path_buf() })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where precompiled components are cached.
    pub fn compiled_dir(&self) -> PathBuf {
        self.root.join("compiled")
    }
}

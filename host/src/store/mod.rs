//! Durable state, embedded: sled for function records, a content-addressed
//! blob store on disk for handler and artifact bytes. The only module that
//! names sled.
//!
//! Contract: a record is written only after every blob it names is on disk
//! and synced, and a record write is one flushed sled insert, so a crash at
//! any point leaves each function either at its old version or its new one,
//! whole. Records are opaque JSON to this module; the registry owns their
//! meaning.

mod blobs;

pub use blobs::{BlobStore, Digest};

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    /// An upload exceeded the size limit.
    #[error("upload is larger than {0} bytes")]
    TooLarge(u64),
    /// The upload stream broke.
    #[error("upload interrupted: {0}")]
    Upload(String),
}

/// The data directory: records, blobs, materialized artifact folders and
/// the precompiled-component cache.
pub struct Store {
    records: sled::Tree,
    db: sled::Db,
    /// Content-addressed bytes.
    pub blobs: BlobStore,
    root: PathBuf,
}

impl Store {
    /// Opens (or creates) the store in `root`. The data directory and its
    /// folders are private to the server's user (0700): they hold the admin
    /// token and every function's code and models.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        private_dir(root)?;
        private_dir(&root.join("compiled"))?;
        let db = sled::open(root.join("meta"))?;
        let records = db.open_tree("functions")?;
        let blobs = BlobStore::open(root)?;
        for entry in std::fs::read_dir(root)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                private_dir(&entry.path())?;
            }
        }
        Ok(Store { records, db, blobs, root: root.to_path_buf() })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where precompiled components are cached.
    pub fn compiled_dir(&self) -> PathBuf {
        self.root.join("compiled")
    }

    /// Writes the record for `name` and waits until it is durable.
    pub fn put_record(&self, name: &str, record: &[u8]) -> Result<(), StoreError> {
        self.records.insert(name, record)?;
        self.db.flush()?;
        Ok(())
    }

    /// Removes the record for `name`; returns whether it existed.
    pub fn delete_record(&self, name: &str) -> Result<bool, StoreError> {
        let existed = self.records.remove(name)?.is_some();
        self.db.flush()?;
        Ok(existed)
    }

    /// Every record, by name.
    pub fn records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.records
            .iter()
            .map(|item| {
                let (k, v) = item?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }
}

//! The object store a cluster keeps every blob in, by digest
//! (`blobs/sha256/<hex>`), so no host holds bytes another host needs.
//!
//! Any S3-compatible store serves (Garage, MinIO, S3 itself), through the
//! `object_store` crate: `s3://BUCKET` with the endpoint, region and keys
//! from the standard `AWS_*` variables, path-style addressing unless
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` says otherwise. Large blobs go up in
//! multipart parts, streamed from the verified local copy; nothing is held
//! whole in memory.

use super::{Digest, StoreError};
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, RetryConfig};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A blob bucket in an S3-compatible object store.
#[derive(Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    url: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

/// Where and how to reach the bucket, besides what `AWS_*` variables say.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// `s3://BUCKET`.
    pub url: String,
    /// The S3 endpoint (e.g. `http://127.0.0.1:3900`); plain http is allowed
    /// when the endpoint says so.
    pub endpoint: Option<String>,
    /// The region the store expects in signatures.
    pub region: Option<String>,
}

/// Blob uploads stream in parts of this size (S3's minimum is 5 MiB).
const PART: usize = 8 << 20;

/// How a failed request is retried: enough for a blip (a node restarting,
/// a dropped connection), short enough that a deploy or a cold start with
/// the store down is answered `objects_unavailable` at once. The crate's
/// default retries ten times with backoff up to 15 s, for up to three
/// minutes: with Garage stopped, tests/cluster.rs's refused deploy and
/// refused cold start took 21 s in all with it, 5 s with this.
fn retry() -> RetryConfig {
    let backoff =
        BackoffConfig { init_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(2), base: 2.0 };
    RetryConfig { backoff, max_retries: 4, retry_timeout: Duration::from_secs(10) }
}

fn unavailable(e: object_store::Error) -> StoreError {
    StoreError::ObjectStore(e.to_string())
}

fn key(digest: &Digest) -> Key {
    Key::from(format!("blobs/sha256/{}", digest.as_str()))
}

impl Remote {
    /// Opens the bucket named by `options.url` (`s3://BUCKET`, or
    /// `file:///PATH` for a folder every host mounts). Nothing is contacted yet.
    pub fn open(options: &RemoteOptions) -> Result<Self, StoreError> {
        if let Some(path) = options.url.strip_prefix("file://") {
            let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                .map_err(|e| StoreError::ObjectStore(format!("{}: {e}", options.url)))?;
            return Ok(Remote { store: Arc::new(store), url: options.url.clone() });
        }
        // reqwest is built without a default TLS provider (no aws-lc-rs):
        // ring serves. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env().with_url(&options.url).with_retry(retry());
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        }
        let store = builder.build().map_err(|e| StoreError::ObjectStore(format!("{}: {e}", options.url)))?;
        Ok(Remote { store: Arc::new(store), url: options.url.clone() })
    }

    /// The bucket's URL, for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The blob's size, if the bucket has it.
    pub async fn size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match self.store.head(&key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Uploads the file at `path` as `digest` (already verified).
    pub async fn upload(&self, digest: &Digest, path: &std::path::Path) -> Result<(), StoreError> {
        use tokio::io::AsyncWriteExt;
        let mut file = tokio::fs::File::open(path).await?;
        let mut writer = object_store::buffered::BufWriter::with_capacity(self.store.clone(), key(digest), PART);
        let copied = tokio::io::copy(&mut file, &mut writer).await;
        let done = match copied {
            Ok(_) => writer.shutdown().await,
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            let _ = writer.abort().await;
            return Err(StoreError::ObjectStore(format!("uploading {digest}: {e}")));
        }
        Ok(())
    }

    /// The blob's bytes as a stream, or [`StoreError::MissingBlob`].
    pub async fn get(
        &self,
        digest: &Digest,
    ) -> Result<impl futures_util::Stream<Item = Result<bytes::Bytes, object_store::Error>> + Unpin, StoreError> {
        match self.store.get(&key(digest)).await {
            Ok(got) => Ok(got.into_stream()),
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::MissingBlob(digest.clone())),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Every blob in the bucket with its age.
    pub async fn list(&self) -> Result<Vec<(Digest, Duration)>, StoreError> {
        let now = SystemTime::now();
        let mut listing = self.store.list(Some(&Key::from("blobs/sha256")));
        let mut blobs = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(unavailable)?;
            let Some(Ok(digest)) = meta.location.filename().map(Digest::parse) else { continue };
            let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(meta.last_modified.timestamp().max(0) as u64);
            blobs.push((digest, now.duration_since(modified).unwrap_or_default()));
        }
        Ok(blobs)
    }

    /// Deletes the blob (gone already is fine).
    pub async fn delete(&self, digest: &Digest) -> Result<(), StoreError> {
        match self.store.delete(&key(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

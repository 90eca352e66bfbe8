//! The handler a model-only deploy runs (`nimbus deploy --model-dir` with
//! no `--wasm`): `builtin/`, written with the guest SDK and compiled into this
//! binary by `build.rs`. It serves the folder's one graph as it is, tensors
//! in and out, in the Open Inference Protocol's request and response shapes,
//! inside the same sandbox, pools and limits as any handler.
//!
//! A deploy stores its bytes as an ordinary blob, so the version is as
//! immutable as any other: a later Nimbus with a newer built-in handler
//! leaves deployed versions on the one they were made with.

use crate::store::{BlobStore, Digest, StoreError};
use std::sync::OnceLock;

static BYTES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/builtin.wasm"));

/// The built-in handler's digest, if this build has one.
pub fn digest() -> Option<&'static Digest> {
    static DIGEST: OnceLock<Option<Digest>> = OnceLock::new();
    DIGEST.get_or_init(|| (!BYTES.is_empty()).then(|| Digest::of(BYTES))).as_ref()
}

/// Makes sure the blob store holds the built-in handler; returns its digest.
pub async fn store(blobs: &BlobStore) -> Result<Digest, String> {
    let digest = digest()
        .ok_or("this nimbus was built without its built-in handler (run `make build`): deploy with --wasm")?
        .clone();
    let missing = blobs.size(&digest).await.map_err(|e| e.to_string())?.is_none();
    if missing {
        let chunks = futures_util::stream::iter([Ok::<_, StoreError>(bytes::Bytes::from_static(BYTES))]);
        blobs.put_stream(&digest, chunks, BYTES.len() as u64).await.map_err(|e| e.to_string())?;
    }
    Ok(digest)
}

//! What the registry persists per function, and the bundle manifest a
//! deploy sends. Blobs are named by digest; the record is the resolved,
//! durable description the server reads on restart.

use super::config::FunctionConfig;
use crate::store::Digest;
use serde::{Deserialize, Serialize};

/// One artifact file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Path relative to `/model` (forward slashes, no `..`).
    pub path: String,
    /// Blob digest.
    pub digest: Digest,
    /// Size in bytes (filled by the server).
    #[serde(default)]
    pub size: u64,
}

/// A deploy: the handler and artifacts (already uploaded as blobs) plus
/// configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The handler component's blob.
    pub wasm: Digest,
    /// The artifact folder's files.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// Serverless configuration; defaults apply to missing fields.
    #[serde(default)]
    pub config: FunctionConfig,
}

/// A deployed function version, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// The function's name.
    pub name: String,
    /// Increases by one with each successful deploy.
    pub version: u64,
    /// The handler's blob.
    pub wasm: Digest,
    /// Size of the handler in bytes.
    pub wasm_size: u64,
    /// Artifact files, sorted by path.
    pub artifacts: Vec<Artifact>,
    /// Digest of the artifact set (names the materialized folder).
    pub artifacts_digest: Digest,
    /// Configuration.
    pub config: FunctionConfig,
    /// Unix seconds of the first deploy.
    pub created_at: u64,
    /// Unix seconds of this version's deploy.
    pub updated_at: u64,
}

/// Checks an artifact path: relative, no `..`, no empty segments.
pub fn validate_artifact_path(path: &str) -> Result<(), String> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && !path.contains('\\')
        && !path.contains('\0');
    if ok { Ok(()) } else { Err(format!("artifact path `{path}` must be relative, without `..` or empty segments")) }
}

/// The digest of an artifact set: its sorted (path, digest) pairs.
pub fn artifacts_digest(artifacts: &[Artifact]) -> Digest {
    let mut listing = String::new();
    for a in artifacts {
        listing.push_str(&format!("{}\0{}\n", a.path, a.digest.as_str()));
    }
    Digest::of(listing.as_bytes())
}

//! What the registry persists per function, and the bundle manifest a
//! deploy sends. Blobs are named by digest; the record is the resolved,
//! durable description the server reads on restart.

use super::config::FunctionConfig;
use crate::nn::Signature;
use crate::store::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One artifact file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The handler component's blob; none for a model-only deploy, which
    /// runs the built-in handler.
    #[serde(default)]
    pub wasm: Option<Digest>,
    /// The artifact folder's files.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// Serverless configuration; defaults apply to missing fields.
    #[serde(default)]
    pub config: FunctionConfig,
    /// What this version is, in the deployer's words.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether `live` moves to the new version (default: yes).
    #[serde(default = "yes")]
    pub promote: bool,
    /// Try the new version on part of `live` traffic first.
    #[serde(default)]
    pub canary: Option<CanarySpec>,
}

fn yes() -> bool {
    true
}

/// `--canary P --canary-for S`: P percent of traffic for S seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    /// Percent of `live` requests, 1..99.
    pub percent: u8,
    /// Seconds before a healthy canary is promoted, 1..86400.
    pub seconds: u64,
}

/// Longest a canary may run: a day.
pub const CANARY_MAX_SECONDS: u64 = 86_400;
/// Longest description kept.
pub const DESCRIPTION_MAX: usize = 1024;

/// One immutable version of a function, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Version {
    /// Its number: the function's deploys count up from 1.
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
    /// Unix seconds of this version's deploy.
    pub deployed_at: u64,
    /// What it is, in the deployer's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether the handler is the built-in one (a model-only deploy): such
    /// versions speak the Open Inference Protocol.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub builtin: bool,
    /// Each graph's inputs and outputs, by graph name, read at deploy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub graphs: BTreeMap<String, Signature>,
    /// In a cluster: the compiled snapshot the deploying host made, so
    /// hosts with the same engine load it instead of compiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SharedSnapshot>,
}

/// A compiled snapshot in the object store: valid for hosts whose snapshot
/// key for the version is `key` (same handler, artifacts, environment and
/// engine), its bytes the blob `digest` (checked before they are mapped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SharedSnapshot {
    /// The snapshot key (see `ComponentCache::key`).
    pub key: String,
    /// The compiled bytes' blob.
    pub digest: Digest,
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

/// Checks that no artifact is also a folder of another (`a` and `a/b`):
/// both cannot exist in one folder.
pub fn check_no_nesting(sorted: &[Artifact]) -> Result<(), String> {
    for (i, a) in sorted.iter().enumerate() {
        let folder = format!("{}/", a.path);
        if let Some(b) = sorted[i + 1..].iter().find(|b| b.path.starts_with(&folder)) {
            return Err(format!("artifact `{}` is a file, so `{}` cannot be inside it", a.path, b.path));
        }
    }
    Ok(())
}

/// The digest of an artifact set: its sorted (path, digest) pairs.
pub fn artifacts_digest(artifacts: &[Artifact]) -> Digest {
    let mut listing = String::new();
    for a in artifacts {
        listing.push_str(&format!("{}\0{}\n", a.path, a.digest.as_str()));
    }
    Digest::of(listing.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(path: &str) -> Artifact {
        Artifact { path: path.into(), digest: Digest::of(path.as_bytes()), size: 0 }
    }

    #[test]
    fn artifact_paths_stay_inside_the_folder() {
        for good in ["a.onnx", "sub/b.txt", "x..y"] {
            assert!(validate_artifact_path(good).is_ok(), "{good}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\b", "a\0b"] {
            assert!(validate_artifact_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_file_cannot_also_be_a_folder() {
        let ok = [artifact("a"), artifact("ab/c")];
        assert!(check_no_nesting(&ok).is_ok());
        let clash = [artifact("a"), artifact("a/b.onnx")];
        let err = check_no_nesting(&clash).unwrap_err();
        assert!(err.contains("`a` is a file"), "{err}");
    }
}

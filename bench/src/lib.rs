//! The benchmark harness: what `make bench` runs to put Nimbus next to the
//! alternatives a user would pick instead, on the same models and bytes.
//! Each module is one part of that comparison; the binaries in `src/bin`
//! put them together.

pub mod load;
pub mod native;
pub mod peers;
pub mod plot;
pub mod rss;
pub mod stats;
pub mod workload;

use std::path::PathBuf;

/// The repository root (benchmarks read the examples' models and samples).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

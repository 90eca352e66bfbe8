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

/// The repository root, as the end-to-end tests find it.
pub use nimbus_tests::root;

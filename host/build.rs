//! Builds what the host embeds besides Rust:
//! - the one C++ function it needs: throwing `std::bad_alloc` into ONNX
//!   Runtime when a model run is over its memory (see `src/nn/alloc.rs`);
//! - the web console (`console/dist`, made by `make console`) as a table of
//!   files compiled into the binary, so `/console` needs nothing at run
//!   time. Without a build the table is empty and `/console` says how to
//!   make one.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=src/nn/refuse.cc");
    cc::Build::new().cpp(true).file("src/nn/refuse.cc").compile("nimbus_refuse");
    embed_console();
}

fn embed_console() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let dist = manifest.join("../console/dist");
    // A folder: cargo reruns this when anything under it changes.
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    walk(&dist, &mut files);
    files.sort();
    let mut table = String::from("&[\n");
    for path in &files {
        let name = path.strip_prefix(&dist).expect("under dist").to_string_lossy().replace('\\', "/");
        table += &format!("    ({name:?}, include_bytes!({:?})),\n", path.display().to_string());
    }
    table += "]\n";
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("console.rs");
    std::fs::write(out, table).expect("writing the console table");
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}

//! Builds what the host embeds besides Rust:
//! - the one C++ function it needs: throwing `std::bad_alloc` into ONNX
//!   Runtime when a model run is over its memory (see `src/nn/alloc.rs`);
//! - the web console (`console/dist`, made by `make console`) as a table of
//!   files compiled into the binary, so `/console` needs nothing at run
//!   time. Without a build the table is empty and `/console` says how to
//!   make one;
//! - the built-in handler that model-only deploys run;
//! - `nimbus new`'s templates.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=src/nn/refuse.cc");
    cc::Build::new().cpp(true).file("src/nn/refuse.cc").compile("nimbus_refuse");
    embed_console();
    embed_builtin();
    embed_templates();
}

/// `nimbus new`'s templates: `templates/<template>/<path>` as a table of
/// (template, path, bytes).
fn embed_templates() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("templates");
    embed_table(&root, "templates.rs", |relative, path| {
        let (template, name) = relative.split_once('/').expect("templates/<template>/<file>");
        format!("({template:?}, {name:?}, include_bytes!({path:?}))")
    });
}

/// The built-in handler (`builtin/`, built by `make wasm`), copied where
/// `include_bytes!` finds it; without a build it is empty and model-only
/// deploys say how to make one.
fn embed_builtin() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let wasm = manifest.join("../examples/target/wasm32-wasip2/release/builtin.wasm");
    println!("cargo:rerun-if-changed={}", wasm.display());
    let bytes = std::fs::read(&wasm).unwrap_or_default();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("builtin.wasm");
    std::fs::write(out, bytes).expect("writing the built-in handler");
}

fn embed_console() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let dist = manifest.join("../console/dist");
    embed_table(&dist, "console.rs", |name, path| format!("({name:?}, include_bytes!({path:?}))"));
}

/// Writes `OUT_DIR/<out>`: a slice expression with `row(path relative to
/// root, full path)` for every file under `root` (a folder: cargo reruns
/// this when anything under it changes).
fn embed_table(root: &Path, out: &str, row: impl Fn(&str, &str) -> String) {
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    walk(root, &mut files);
    files.sort();
    let mut table = String::from("&[\n");
    for path in &files {
        let relative = path.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/");
        table += &format!("    {},\n", row(&relative, &path.display().to_string()));
    }
    table += "]\n";
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join(out);
    std::fs::write(out, table).expect("writing an embedded table");
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

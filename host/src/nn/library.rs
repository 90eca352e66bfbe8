//! Finding and loading the ONNX Runtime shared library (`ort`'s
//! `load-dynamic`). Nothing is downloaded: the library comes from the
//! `onnxruntime` wheel on PyPI, which `make build` unpacks into
//! `.build/onnxruntime/`. The first of these that exists wins:
//! `$NIMBUS_ORT_LIB`, `$ORT_DYLIB_PATH`, `libonnxruntime.so` beside the
//! running executable, then the project's `.build/onnxruntime/`.

use super::NnError;
use std::path::PathBuf;
use std::sync::OnceLock;

const FILE_NAME: &str = "libonnxruntime.so";

/// Where the ONNX Runtime library is expected, in search order.
fn candidates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ["NIMBUS_ORT_LIB", "ORT_DYLIB_PATH"]
        .iter()
        .filter_map(|var| std::env::var_os(var).map(PathBuf::from))
        .collect();
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(PathBuf::from)) {
        out.push(dir.join(FILE_NAME));
    }
    out.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.build/onnxruntime").join(FILE_NAME));
    out
}

/// The library that [`init`] loads.
pub fn library_path() -> Result<PathBuf, NnError> {
    let candidates = candidates();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        NnError::Library(format!(
            "not found (looked at {}); run `make build` or set NIMBUS_ORT_LIB",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Loads ONNX Runtime once per process; later calls return the first result.
pub fn init() -> Result<(), NnError> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = library_path().map_err(|e| e.to_string())?;
            tracing::debug!(path = %path.display(), "loading ONNX Runtime");
            ort::init_from(path.display().to_string())
                .with_name("nimbus")
                .commit()
                .map(drop)
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .clone()
        .map_err(NnError::Library)
}

//! Finding and loading the ONNX Runtime shared library (`ort`'s
//! `load-dynamic`). Nothing is downloaded: the library comes from the
//! `onnxruntime` wheel on PyPI, which `make build` unpacks into
//! `.build/onnxruntime/`. The first of these that exists wins:
//! `$NIMBUS_ORT_LIB`, `$ORT_DYLIB_PATH`, `libonnxruntime.so` beside the
//! running executable, then the project's `.build/onnxruntime/`.
//!
//! A library older than [`MIN_VERSION`] is refused with the reason before
//! anything runs on it: what older versions accept differs (1.23 followed
//! external-data paths out of a model's folder), and the project tests
//! only this one and newer.

use super::NnError;
use std::path::PathBuf;
use std::sync::OnceLock;

const FILE_NAME: &str = "libonnxruntime.so";

/// The oldest ONNX Runtime the host runs on: the version `make build`
/// installs and the tests run against.
pub const MIN_VERSION: (u32, u32) = (1, 32);

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
            let version = version_of(&path)?;
            if parse_version(&version).is_none_or(|v| v < MIN_VERSION) {
                return Err(format!(
                    "{} is ONNX Runtime {version}; Nimbus needs {}.{} or newer (run `make build`, or point \
                     NIMBUS_ORT_LIB at a newer libonnxruntime.so)",
                    path.display(),
                    MIN_VERSION.0,
                    MIN_VERSION.1
                ));
            }
            tracing::debug!(path = %path.display(), %version, "loading ONNX Runtime");
            ort::init_from(path.display().to_string())
                .with_name("nimbus")
                .commit()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            super::alloc::register().map_err(|e| format!("registering the allocator: {e}"))
        })
        .clone()
        .map_err(NnError::Library)
}

/// Reads the library's version string without initializing it.
fn version_of(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: dlopen/dlsym on a path we were given; `OrtGetApiBase` has
    // this signature in every ONNX Runtime release, and the version string
    // it points to is static. The handle stays open (ort opens the same
    // library again, sharing it).
    unsafe {
        let handle = libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            let why = std::ffi::CStr::from_ptr(libc::dlerror()).to_string_lossy().into_owned();
            return Err(format!("{}: {why}", path.display()));
        }
        let symbol = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        if symbol.is_null() {
            return Err(format!("{} is not ONNX Runtime (no OrtGetApiBase)", path.display()));
        }
        let get_base: unsafe extern "C" fn() -> *const ort::sys::OrtApiBase = std::mem::transmute(symbol);
        let base = get_base();
        if base.is_null() {
            return Err(format!("{}: OrtGetApiBase returned nothing", path.display()));
        }
        Ok(std::ffi::CStr::from_ptr(((*base).GetVersionString)()).to_string_lossy().into_owned())
    }
}

/// `1.32.0` -> (1, 32).
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(parse_version("1.32.0"), Some((1, 32)));
        assert!(parse_version("1.23.2").unwrap() < MIN_VERSION);
        assert!(parse_version("1.40.1").unwrap() >= MIN_VERSION);
        assert!(parse_version("2.0").unwrap() >= MIN_VERSION);
        assert_eq!(parse_version("junk"), None);
    }

    #[test]
    fn the_installed_library_is_new_enough() {
        let path = library_path().expect("run `make build` first");
        let version = version_of(&path).unwrap();
        assert!(parse_version(&version).unwrap() >= MIN_VERSION, "{version}");
        let not_ort = version_of(std::path::Path::new("libc.so.6")).unwrap_err();
        assert!(not_ort.contains("not ONNX Runtime"), "{not_ort}");
    }
}

//! What every end-to-end test needs: the guests built from `examples/` and
//! `tests/guests/` (built once per test process, with cargo, for
//! wasm32-wasip2), the example artifact folders made by `make build`, and
//! one shared runtime (each runtime reserves a pool of instance slots).

mod cluster;
mod etcd;
mod garage;
mod server;

pub use cluster::Cluster;
pub use etcd::Etcd;
pub use garage::{Garage, garage_bin};
pub use server::{Answer, Server, nimbus_bin};

use nimbus::runtime::{ComponentCache, Function, FunctionSpec, LoadError, Request, Runtime, Source};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

/// A loopback port free now (for services a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The bytes of guest `name` (an example or a test guest), built if needed.
pub fn wasm(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(root().join("examples/Cargo.toml"))
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("run cargo to build the guests");
        assert!(status.success(), "building the guests failed");
    });
    let path = root().join("examples/target/wasm32-wasip2/release").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The artifact folder of example `name`, made by `make build`.
pub fn model_dir(name: &str) -> PathBuf {
    let dir = root().join("examples").join(name).join("model");
    assert!(dir.is_dir(), "{} is missing: run `make build` first", dir.display());
    dir
}

/// A copy of example `name`'s artifact folder plus one file made for this
/// run, so that deploying it sends exactly one blob no server has seen.
pub fn model_dir_with_new_file(name: &str) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("temp dir");
    for file in std::fs::read_dir(model_dir(name)).expect("the model folder").flatten() {
        std::fs::copy(file.path(), copy.path().join(file.file_name())).expect("copy a model file");
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    std::fs::write(copy.path().join("notes.txt"), format!("made for a test run at {stamp}\n")).expect("notes.txt");
    copy
}

/// The artifact folder of one hostile model case (see
/// `tests/hostile_models.py`), all generated once per process with the
/// project's venv.
pub fn hostile_model(case: &str) -> PathBuf {
    static MADE: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = MADE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let python = root().join(".build/venv/bin/python");
        assert!(python.is_file(), "{} is missing: run `make build`", python.display());
        let status = Command::new(python)
            .arg(root().join("tests/hostile_models.py"))
            .arg(dir.path())
            .status()
            .expect("run tests/hostile_models.py");
        assert!(status.success(), "generating the hostile models failed");
        dir
    });
    let path = dir.path().join(case);
    assert!(path.is_dir(), "no hostile model case {case}");
    path
}

/// The runtime shared by this test process.
pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new().expect("runtime")).clone()
}

/// A component cache private to this test process.
pub fn cache() -> ComponentCache {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    ComponentCache::new(DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path())
}

/// Loads `wasm` bytes over the artifacts of example `model`.
pub async fn load_bytes(name: &str, wasm: &[u8], model: &str, spec: FunctionSpec) -> Result<Function, LoadError> {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), wasm).expect("write wasm");
    let source = Source::hash(file.path(), &model_dir(model))?;
    Function::load(&runtime(), name, &source, spec, &cache()).await
}

/// Loads guest `wasm_name` over the artifacts of example `model`.
pub async fn load(wasm_name: &str, model: &str, spec: FunctionSpec) -> Arc<Function> {
    let f = load_bytes(wasm_name, &wasm(wasm_name), model, spec)
        .await
        .unwrap_or_else(|e| panic!("loading {wasm_name}: {e}"));
    Arc::new(f)
}

/// A request with the given content type and body, accepting anything.
pub fn request(content_type: &str, body: &str) -> Request {
    Request { content_type: content_type.into(), accept: "*/*".into(), body: body.as_bytes().to_vec() }
}

//! The host's ONNX check on arbitrary bytes: an error or a model summary,
//! never a panic, a hang or a read outside the folder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("model.onnx");
    std::fs::write(&file, data).expect("write model");
    if let Ok(info) = nimbus::nn::check_model(&file, dir.path()) {
        for f in &info.external_files {
            assert!(f.is_relative() && !f.starts_with(".."), "{}", f.display());
        }
    }
});

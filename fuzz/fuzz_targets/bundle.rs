//! A deploy's bundle manifest, as a client sends it: JSON in, checked
//! without a panic, and a bundle that passes has only safe artifact paths.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nimbus::registry::{Bundle, validate_bundle};

fuzz_target!(|data: &[u8]| {
    let Ok(mut bundle) = serde_json::from_slice::<Bundle>(data) else { return };
    if validate_bundle("f", &mut bundle).is_ok() {
        for a in &bundle.artifacts {
            assert!(!a.path.starts_with('/') && !a.path.split('/').any(|s| s == ".." || s.is_empty()), "{}", a.path);
        }
        let _ = bundle.config.spec();
    }
});

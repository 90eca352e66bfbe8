//! Builds the one C++ function the host needs: throwing `std::bad_alloc`
//! into ONNX Runtime when a model run is over its memory (see
//! `src/nn/alloc.rs`).

fn main() {
    println!("cargo:rerun-if-changed=src/nn/refuse.cc");
    cc::Build::new().cpp(true).file("src/nn/refuse.cc").compile("nimbus_refuse");
}

//! Tensor shapes as a guest declares them: element and byte counts are
//! checked arithmetic, so any shape gives a size or `None`, never a wrap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nimbus::nn::{ElementType, Tensor};

fuzz_target!(|data: &[u8]| {
    let Some((&ty, dims)) = data.split_first() else { return };
    let dims: Vec<u32> = dims.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let ty = ElementType::ALL[usize::from(ty) % ElementType::ALL.len()];
    let t = Tensor { dims: dims.clone(), ty, data: Vec::new() };
    // The true size, and whether any running product passes u64 (then a
    // size may be refused even if a later zero dimension makes it empty).
    let mut product = 1u128;
    let mut passed_u64 = false;
    for &d in &dims {
        product = product.saturating_mul(u128::from(d));
        passed_u64 |= product > u128::from(u64::MAX);
    }
    let bytes = product.saturating_mul(ty.size() as u128);
    match t.expected_bytes() {
        Some(b) => assert_eq!(u128::from(b), bytes, "{dims:?} {ty:?}"),
        None => assert!(passed_u64 || bytes > u128::from(u64::MAX), "{dims:?} {ty:?}"),
    }
});

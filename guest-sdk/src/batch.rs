//! Making requests batchable. When a function is deployed with batching,
//! the host merges concurrent model runs whose inputs agree on every
//! dimension but the first. Token sequences rarely agree: a sentence of 9
//! tokens and one of 11 cannot share a run. Padding each to one of a few
//! lengths ([`length`]) makes most requests agree, at the price of a few
//! masked positions; [`pad_rows`] does the padding.
//!
//! The host tells requests whether batching is on ([`max_batch_size`]), so
//! a handler pads only when padding buys a shared run.

/// The environment variable with the most rows per batched run, set for
/// requests of functions deployed with batching.
pub const MAX_BATCH_SIZE_ENV: &str = "NIMBUS_MAX_BATCH_SIZE";

/// Sequence lengths to pad to: each at most 1.5x the one before, so padding
/// costs at most half again the tokens.
pub const LENGTHS: [usize; 14] = [8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024];

/// The most rows one batched run of this function takes, when batching is
/// on (see the module docs).
pub fn max_batch_size() -> Option<u32> {
    std::env::var(MAX_BATCH_SIZE_ENV).ok()?.parse().ok()
}

/// The first of `lengths` (ascending) that holds `len`; `len` itself when
/// none does.
pub fn length(len: usize, lengths: &[usize]) -> usize {
    lengths.iter().copied().find(|&l| l >= len).unwrap_or(len)
}

/// `data`, rows of `width` elements, with each row padded with `pad` to
/// `to` elements (`to` at least `width`).
pub fn pad_rows<T: Copy>(data: &[T], width: usize, to: usize, pad: T) -> Vec<T> {
    assert!(to >= width && width > 0, "pad_rows: cannot pad rows of {width} to {to}");
    let mut out = Vec::with_capacity(data.len() / width * to);
    for row in data.chunks(width) {
        out.extend_from_slice(row);
        out.resize(out.len() + to - row.len(), pad);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_up_to_the_next_bucket() {
        assert_eq!(length(1, &LENGTHS), 8);
        assert_eq!(length(9, &LENGTHS), 16);
        assert_eq!(length(16, &LENGTHS), 16);
        assert_eq!(length(2000, &LENGTHS), 2000, "past the last bucket: as it is");
    }

    #[test]
    fn rows_are_padded_each_to_the_length() {
        assert_eq!(pad_rows(&[1, 2, 3, 4], 2, 3, 0), [1, 2, 0, 3, 4, 0]);
        assert_eq!(pad_rows(&[1, 2], 2, 2, 0), [1, 2]);
    }
}

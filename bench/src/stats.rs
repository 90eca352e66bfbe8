//! Summaries of repeated runs: every figure is reported as min / median /
//! p99 over samples, so one noisy run on a shared 2-core machine neither
//! hides nor invents a difference.

use serde::Serialize;

/// min / median / p99 of a set of samples, in the samples' unit.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub p99: f64,
}

impl Summary {
    /// Panics on an empty set: every benchmark takes at least one sample.
    pub fn of(samples: &[f64]) -> Summary {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Summary { min: v[0], median: at(0.5), p99: at(0.99) }
    }
}

/// `a / b` of medians, the one number a comparison row shows.
pub fn ratio(a: &Summary, b: &Summary) -> f64 {
    a.median / b.median
}

//! A pool's recent history in fixed steps, for the console's charts: what
//! Prometheus would give a user who runs one, kept here so that `nimbus
//! serve` alone answers "what happened in the last half hour". Steps are
//! sums and histograms, so steps of several versions or hosts merge into
//! one exactly, and percentiles are taken after merging.
//!
//! Memory: only steps with activity are kept (an idle function costs
//! nothing), each a few hundred bytes, for [`KEPT`].

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// Seconds per step.
pub const STEP_S: u64 = 5;
/// How far back steps are kept.
pub const KEPT: Duration = Duration::from_secs(30 * 60);

/// Latency buckets: the first starts at [`FLOOR_US`], each is √2 wider
/// than the one before (an estimate within ±19%); 48 reach past 100 s.
const BUCKETS: usize = 48;
const FLOOR_US: f64 = 10.0;

fn bucket(us: u64) -> usize {
    let ratio = (us as f64 / FLOOR_US).max(1.0);
    ((ratio.log2() * 2.0) as usize).min(BUCKETS - 1)
}

/// A latency histogram (counts per bucket; trailing empty ones left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Hist(Vec<u32>);

impl Hist {
    fn observe(&mut self, us: u64) {
        let i = bucket(us);
        if self.0.len() <= i {
            self.0.resize(i + 1, 0);
        }
        self.0[i] += 1;
    }

    fn merge(&mut self, other: &Hist) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    /// The `q` quantile in microseconds (the bucket's geometric middle);
    /// `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.0.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &c) in self.0.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some((FLOOR_US * 2f64.powf((i as f64 + 0.5) / 2.0)).round() as u64);
            }
        }
        None
    }
}

/// One step: what happened in it, and the instances at its busiest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Step {
    /// Unix seconds at the step's start.
    pub t: u64,
    /// Requests answered.
    pub invocations: u64,
    /// Of them, answered with a 4xx status.
    pub errors_4xx: u64,
    /// Of them, answered with a 5xx status.
    pub errors_5xx: u64,
    /// Requests refused at max concurrency.
    pub throttles: u64,
    /// Requests that found no ready instance.
    pub cold_starts: u64,
    /// Ready instances (the most seen in the step).
    pub warm: u32,
    /// Instances serving requests (the most seen in the step).
    pub busy: u32,
    /// Model latency of served requests.
    pub model: Hist,
    /// Overhead latency of served requests.
    pub overhead: Hist,
}

impl Step {
    /// Adds another pool's (or host's) step of the same time.
    pub fn merge(&mut self, o: &Step) {
        self.invocations += o.invocations;
        self.errors_4xx += o.errors_4xx;
        self.errors_5xx += o.errors_5xx;
        self.throttles += o.throttles;
        self.cold_starts += o.cold_starts;
        self.warm += o.warm;
        self.busy += o.busy;
        self.model.merge(&o.model);
        self.overhead.merge(&o.overhead);
    }
}

/// A pool's steps, newest last.
#[derive(Debug, Default)]
pub struct Timeline {
    steps: Mutex<VecDeque<Step>>,
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The start of the step holding unix second `s`.
pub fn step_of(s: u64) -> u64 {
    s - s % STEP_S
}

impl Timeline {
    fn with_current(&self, change: impl FnOnce(&mut Step)) {
        let t = step_of(now_s());
        let mut steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        if steps.back().is_none_or(|s| s.t < t) {
            let oldest = t.saturating_sub(KEPT.as_secs());
            while steps.front().is_some_and(|s| s.t < oldest) {
                steps.pop_front();
            }
            steps.push_back(Step { t, ..Step::default() });
        }
        change(steps.back_mut().expect("pushed above"));
    }

    /// Counts an answer: its status and, when served, its latencies.
    pub fn answered(&self, status: u16, latency: Option<(Duration, Duration)>) {
        self.with_current(|s| {
            s.invocations += 1;
            match status {
                400..=499 => s.errors_4xx += 1,
                500..=599 => s.errors_5xx += 1,
                _ => {}
            }
            if let Some((model, overhead)) = latency {
                s.model.observe(model.as_micros() as u64);
                s.overhead.observe(overhead.as_micros() as u64);
            }
        });
    }

    /// Counts a request refused at max concurrency.
    pub fn throttled(&self) {
        self.with_current(|s| s.throttles += 1);
    }

    /// Counts a request that found no ready instance.
    pub fn cold_start(&self) {
        self.with_current(|s| s.cold_starts += 1);
    }

    /// Notes the instances now (the step keeps the most seen).
    pub fn instances(&self, warm: u32, busy: u32) {
        self.with_current(|s| {
            s.warm = s.warm.max(warm);
            s.busy = s.busy.max(busy);
        });
    }

    /// Steps starting at or after unix second `since`.
    pub fn since(&self, since: u64) -> Vec<Step> {
        let steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        steps.iter().filter(|s| s.t >= since).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_within_a_bucket_of_the_truth() {
        let mut h = Hist::default();
        for us in 1..=1000u64 {
            h.observe(us * 100);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p99 = h.quantile(0.99).unwrap() as f64;
        assert!((p50 / 50_000.0 - 1.0).abs() < 0.2, "p50 {p50}");
        assert!((p99 / 99_000.0 - 1.0).abs() < 0.2, "p99 {p99}");
        assert_eq!(Hist::default().quantile(0.5), None);
    }

    #[test]
    fn steps_merge_counts_and_histograms() {
        let t = Timeline::default();
        t.answered(200, Some((Duration::from_millis(1), Duration::from_micros(100))));
        t.answered(429, None);
        t.throttled();
        let mut a = t.since(0).pop().unwrap();
        let b = a.clone();
        a.merge(&b);
        assert_eq!((a.invocations, a.errors_4xx, a.throttles), (4, 2, 2));
        assert_eq!(a.model.quantile(0.5), b.model.quantile(0.5));
        assert_eq!(a.model.0.iter().sum::<u32>(), 2);
    }
}

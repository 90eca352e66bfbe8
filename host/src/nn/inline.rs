//! Short model runs on the caller's thread. Handing a run to a blocking
//! thread and back costs two thread wake-ups, which on a small model (a
//! forest of 200 trees runs in ~20 us) is most of a warm request's
//! latency. A graph whose recent runs were short runs inline on the
//! executor thread, as guest code does between epoch ticks.
//!
//! Containment: an inline run cannot be abandoned by dropping its future,
//! so the watchdog thread terminates any inline run older than [`BUDGET`];
//! the caller then runs it again on a blocking thread, where its request's
//! deadline applies, and the graph's run-time estimate moves off inline.
//! The watchdog sleeps while no inline run was seen for a while, so an idle
//! host has no extra wake-ups.

use ort::session::RunOptions;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Longest an inline run may take before it is terminated (and run
/// again off the executor).
pub(super) const BUDGET: Duration = Duration::from_millis(20);
/// Graphs whose estimated run time is below this run inline.
const SHORT: Duration = Duration::from_millis(1);
/// How often the watchdog looks, while inline runs happen.
const LOOK: Duration = Duration::from_millis(5);
/// How long the watchdog keeps looking after the last inline run.
const IDLE: Duration = Duration::from_secs(1);

/// A graph's estimate of its run time: an exponentially weighted moving
/// average, in microseconds. Starts high, so a graph's first run is not
/// inline.
pub(super) struct Estimate(AtomicU64);

impl Default for Estimate {
    fn default() -> Self {
        Estimate(AtomicU64::new(u64::MAX))
    }
}

impl Estimate {
    /// Whether the next run should be inline.
    pub(super) fn short(&self) -> bool {
        self.0.load(Ordering::Relaxed) < SHORT.as_micros() as u64
    }

    /// Adds one run's time (1/8 weight; the first sets it).
    pub(super) fn record(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128 - 1) as u64;
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == u64::MAX { us } else { old - old / 8 + us / 8 };
        self.0.store(new, Ordering::Relaxed);
    }
}

/// The inline runs in progress, and the thread that watches them.
#[derive(Default)]
struct Watchdog {
    state: Mutex<Runs>,
    wake: Condvar,
}

#[derive(Default)]
struct Runs {
    runs: Vec<(u64, Instant, Arc<RunOptions>)>,
    next_id: u64,
    last_seen: Option<Instant>,
    sleeping: bool,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let dog: &'static Watchdog = Box::leak(Box::default());
        let spawned = std::thread::Builder::new().name("nimbus-nn-watch".into()).spawn(move || dog.watch());
        if let Err(e) = spawned {
            tracing::warn!("no watchdog for inline model runs: {e}");
        }
        dog
    })
}

impl Watchdog {
    fn watch(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            for (_, started, options) in &state.runs {
                if now - *started > BUDGET {
                    let _ = options.terminate();
                }
            }
            let idle = state.runs.is_empty() && state.last_seen.is_none_or(|t| now - t > IDLE);
            state.sleeping = idle;
            state = if idle {
                self.wake.wait(state).unwrap_or_else(|p| p.into_inner())
            } else {
                self.wake.wait_timeout(state, LOOK).unwrap_or_else(|p| p.into_inner()).0
            };
        }
    }
}

/// Watches one inline run while it lives.
pub(super) struct Watched(u64);

impl Watched {
    pub(super) fn start(options: Arc<RunOptions>) -> Self {
        let dog = watchdog();
        let mut state = dog.state.lock().unwrap_or_else(|p| p.into_inner());
        let id = state.next_id;
        state.next_id += 1;
        state.runs.push((id, Instant::now(), options));
        state.last_seen = Some(Instant::now());
        if state.sleeping {
            state.sleeping = false;
            dog.wake.notify_one();
        }
        Watched(id)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut state = watchdog().state.lock().unwrap_or_else(|p| p.into_inner());
        state.runs.retain(|(id, ..)| *id != self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_runs_inline_once_its_runs_are_known_to_be_short() {
        let e = Estimate::default();
        assert!(!e.short(), "the first run is not inline");
        e.record(Duration::from_micros(30));
        assert!(e.short());
        for _ in 0..20 {
            e.record(Duration::from_millis(30));
        }
        assert!(!e.short(), "long runs move the graph off inline");
    }
}

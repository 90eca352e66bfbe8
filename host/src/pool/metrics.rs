//! Per-function counters and latency histograms, lock-free on the request
//! path, rendered in Prometheus text format. Names follow SageMaker's
//! CloudWatch metrics where one exists (ModelLatency, OverheadLatency,
//! ModelSetupTime).

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of latency buckets, in seconds.
const SECONDS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

/// Upper bounds of batch-size buckets, in callers.
const CALLERS: [f64; 16] =
    [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// How many recent latencies `describe` computes percentiles over.
const RECENT: usize = 1024;

/// A Prometheus histogram with fixed buckets (of seconds unless made
/// with [`Histogram::of_callers`]).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64; 16],
    counts: [AtomicU64; 16],
    count: AtomicU64,
    /// The sum of observations, in millionths.
    sum_millionths: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            bounds: &SECONDS,
            counts: Default::default(),
            count: AtomicU64::new(0),
            sum_millionths: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// A histogram of how many callers a batch merged.
    pub fn of_callers() -> Self {
        Histogram { bounds: &CALLERS, ..Default::default() }
    }

    /// Records one latency.
    pub fn observe(&self, d: Duration) {
        self.record(d.as_secs_f64());
    }

    /// Records one value.
    pub fn record(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_millionths.fetch_add((v * 1e6) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_millionths.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Everything measured about one function.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests received (throttled ones included).
    pub invocations: AtomicU64,
    /// Answers with a 4xx status.
    pub errors_4xx: AtomicU64,
    /// Answers with a 5xx status.
    pub errors_5xx: AtomicU64,
    /// Requests refused with 429 after waiting for a slot.
    pub throttles: AtomicU64,
    /// Requests that found no ready instance.
    pub cold_starts: AtomicU64,
    /// Requests ended at their timeout.
    pub timeouts: AtomicU64,
    /// Requests ended for growing past their memory tier.
    pub memory_exceeded: AtomicU64,
    /// Requests whose guest started on the HTTP lane that received them
    /// (short and alone, see `runtime::placement`).
    pub lane_runs: AtomicU64,
    /// Of those, requests moved to the guests' executor past the budget.
    pub lane_moves: AtomicU64,
    /// Time inside the handler.
    pub model_latency: Histogram,
    /// Time around it: queueing, instance, body, auth.
    pub overhead_latency: Histogram,
    /// Time to bring the function up from zero (sessions, component, instance).
    pub model_setup: Histogram,
    /// What batching did (the function's graphs report to it).
    pub batches: Arc<Batches>,
    recent: Mutex<VecDeque<(u32, u32)>>,
    /// The last half hour, step by step (the console's charts).
    pub timeline: super::Timeline,
    /// Throttles, timeouts and memory traps already told as events.
    reported: Mutex<[u64; 3]>,
}

/// The batches a function's graphs ran.
#[derive(Debug)]
pub struct Batches {
    /// Callers merged into each run.
    pub callers: Histogram,
    /// Time each caller waited between queueing and its run's start.
    pub wait: Histogram,
}

impl Default for Batches {
    fn default() -> Self {
        Batches { callers: Histogram::of_callers(), wait: Histogram::default() }
    }
}

impl crate::nn::BatchObserver for Batches {
    fn batch(&self, callers: usize, waited: &mut dyn Iterator<Item = Duration>) {
        self.callers.record(callers as f64);
        waited.for_each(|w| self.wait.observe(w));
    }
}

/// Recent latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Percentiles {
    /// Samples the figures are taken over.
    pub samples: usize,
    /// Model latency p50.
    pub model_p50_us: u32,
    /// Model latency p99.
    pub model_p99_us: u32,
    /// Overhead latency p50.
    pub overhead_p50_us: u32,
    /// Overhead latency p99.
    pub overhead_p99_us: u32,
}

impl Metrics {
    /// Throttles, timeouts and memory traps since the last call.
    pub fn unreported(&self) -> [u64; 3] {
        let now = [&self.throttles, &self.timeouts, &self.memory_exceeded].map(|c| c.load(Ordering::Relaxed));
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        let new = [0, 1, 2].map(|i| now[i] - reported[i]);
        *reported = now;
        new
    }

    /// Counts one answer by its status, with its latencies (model,
    /// overhead) when it was served.
    pub fn record(&self, status: u16, latency: Option<(Duration, Duration)>) {
        self.record_status(status);
        if let Some((model, overhead)) = latency {
            self.record_latency(model, overhead);
        }
        self.timeline.answered(status, latency);
    }

    /// Counts one answer by its status.
    fn record_status(&self, status: u16) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        match status {
            400..=499 => self.errors_4xx.fetch_add(1, Ordering::Relaxed),
            500..=599 => self.errors_5xx.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// Records the latencies of one served request.
    fn record_latency(&self, model: Duration, overhead: Duration) {
        self.model_latency.observe(model);
        self.overhead_latency.observe(overhead);
        let mut recent = self.recent.lock().expect("metrics lock");
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back((model.as_micros() as u32, overhead.as_micros() as u32));
    }

    /// Percentiles over the last requests.
    pub fn percentiles(&self) -> Percentiles {
        let recent = self.recent.lock().expect("metrics lock");
        if recent.is_empty() {
            return Percentiles::default();
        }
        let pick = |mut v: Vec<u32>, q: f64| {
            v.sort_unstable();
            v[((v.len() - 1) as f64 * q).round() as usize]
        };
        let model: Vec<u32> = recent.iter().map(|r| r.0).collect();
        let overhead: Vec<u32> = recent.iter().map(|r| r.1).collect();
        Percentiles {
            samples: recent.len(),
            model_p50_us: pick(model.clone(), 0.5),
            model_p99_us: pick(model, 0.99),
            overhead_p50_us: pick(overhead.clone(), 0.5),
            overhead_p99_us: pick(overhead, 0.99),
        }
    }
}

/// Instantaneous state of one function's pool.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Gauges {
    /// Whether sessions and component are loaded (0 when scaled to zero).
    pub loaded: bool,
    /// Pre-made instances waiting for a request.
    pub warm_instances: u32,
    /// Instances serving a request now.
    pub busy_instances: u32,
    /// ONNX Runtime sessions held.
    pub sessions: u32,
    /// Bytes of models held in sessions (an estimate of their memory).
    pub model_memory_bytes: u64,
}

impl Gauges {
    /// Two pools' state together (a function's versions).
    pub fn plus(self, other: Gauges) -> Gauges {
        Gauges {
            loaded: self.loaded || other.loaded,
            warm_instances: self.warm_instances + other.warm_instances,
            busy_instances: self.busy_instances + other.busy_instances,
            sessions: self.sessions + other.sessions,
            model_memory_bytes: self.model_memory_bytes + other.model_memory_bytes,
        }
    }
}

/// One pool's series in [`render`]: its labels, counters and state.
pub struct Series<'a> {
    /// The function's name.
    pub function: &'a str,
    /// The version the pool serves.
    pub version: u64,
    /// Its counters and histograms.
    pub metrics: &'a Metrics,
    /// Its state now.
    pub gauges: Gauges,
}

type Counter = fn(&Metrics) -> &AtomicU64;
type Gauge = fn(&Gauges) -> u64;
type Hist = fn(&Metrics) -> &Histogram;

/// Renders every pool's metrics, labelled by function and version, grouped
/// by family as the Prometheus text format requires.
pub fn render(series: &[Series]) -> String {
    let mut out = String::new();
    let labels: Vec<String> =
        series.iter().map(|s| format!("function=\"{}\",version=\"{}\"", s.function, s.version)).collect();
    let rows: Vec<(&str, &Metrics, Gauges)> =
        series.iter().zip(&labels).map(|(s, l)| (l.as_str(), s.metrics, s.gauges)).collect();
    let counters: [(&str, &str, Counter); 9] = [
        ("nimbus_invocations_total", "Requests received.", |m| &m.invocations),
        ("nimbus_invocation_4xx_errors_total", "Requests answered with a 4xx status.", |m| &m.errors_4xx),
        ("nimbus_invocation_5xx_errors_total", "Requests answered with a 5xx status.", |m| &m.errors_5xx),
        ("nimbus_throttles_total", "Requests refused with 429 at max concurrency.", |m| &m.throttles),
        ("nimbus_cold_starts_total", "Requests that found no ready instance.", |m| &m.cold_starts),
        ("nimbus_timeouts_total", "Requests ended at their timeout.", |m| &m.timeouts),
        ("nimbus_memory_exceeded_total", "Requests ended for growing past their memory tier.", |m| &m.memory_exceeded),
        ("nimbus_lane_runs_total", "Requests whose guest started on the HTTP lane that received them.", |m| {
            &m.lane_runs
        }),
        ("nimbus_lane_moves_total", "Requests moved from an HTTP lane to the guests' executor past the budget.", |m| {
            &m.lane_moves
        }),
    ];
    for (name, help, read) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (l, m, _) in &rows {
            let _ = writeln!(out, "{name}{{{l}}} {}", read(m).load(Ordering::Relaxed));
        }
    }
    let gauges: [(&str, &str, Gauge); 5] = [
        ("nimbus_loaded", "1 when the function's sessions are loaded, 0 when scaled to zero.", |g| g.loaded.into()),
        ("nimbus_warm_instances", "Instances ready for a request.", |g| g.warm_instances.into()),
        ("nimbus_busy_instances", "Instances serving a request.", |g| g.busy_instances.into()),
        ("nimbus_sessions", "ONNX Runtime sessions held.", |g| g.sessions.into()),
        ("nimbus_model_memory_bytes", "Bytes of models held in sessions.", |g| g.model_memory_bytes),
    ];
    for (name, help, read) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (l, _, g) in &rows {
            let _ = writeln!(out, "{name}{{{l}}} {}", read(g));
        }
    }
    let histograms: [(&str, &str, Hist); 5] = [
        ("nimbus_model_latency_seconds", "Time inside the handler (SageMaker ModelLatency).", |m| &m.model_latency),
        ("nimbus_overhead_latency_seconds", "Time around the handler (SageMaker OverheadLatency).", |m| {
            &m.overhead_latency
        }),
        ("nimbus_model_setup_seconds", "Time to come up from zero (SageMaker ModelSetupTime).", |m| &m.model_setup),
        ("nimbus_batch_size", "Callers merged into one model run (functions with batching).", |m| &m.batches.callers),
        ("nimbus_batch_wait_seconds", "Time a batched model call waited for its run to start.", |m| &m.batches.wait),
    ];
    for (name, help, read) in histograms {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        // Batch series only for functions that batched: most do not.
        let batch = name.starts_with("nimbus_batch");
        for (l, m, _) in rows.iter().filter(|(_, m, _)| !batch || read(m).count() > 0) {
            read(m).render(&mut out, name, l);
        }
    }
    out
}

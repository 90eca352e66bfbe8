//! Load runs: `oha` (a real HTTP load generator, installed from crates.io by
//! `make bench`) against a server on loopback, bounded in time, one
//! connection per concurrent client. The same [`Run`] comes from the native
//! in-process loop, so all peers land in one table.

use crate::stats::Summary;
use crate::workload::Workload;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What one bounded load run measured. Latencies in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Run {
    pub requests_per_s: f64,
    pub fastest_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Answers with status 200.
    pub ok: u64,
    /// Anything else: non-200 statuses and transport errors.
    pub failed: u64,
}

/// The `oha` binary: `.build/tools/bin/oha` (where `make bench` installs
/// it), else whatever `oha` is on `PATH`.
pub fn oha() -> PathBuf {
    let local = crate::root().join(".build/tools/bin/oha");
    if local.is_file() { local } else { PathBuf::from("oha") }
}

/// Runs `oha` for `duration` at `concurrency` against `url`, posting the
/// workload's body.
pub fn oha_run(url: &str, workload: &Workload, concurrency: usize, duration: Duration, body: &Path) -> Run {
    let mut oha = oha_command(concurrency, duration);
    oha.args(["-m", "POST", "-T", workload.content_type, "-H", &format!("accept: {}", workload.accept)]);
    oha_report(oha.arg("-D").arg(body).arg(url))
}

/// Runs `oha` for `duration` at `concurrency`, getting `url`: the HTTP
/// floor, when `url` answers without work.
pub fn oha_get(url: &str, concurrency: usize, duration: Duration) -> Run {
    oha_report(oha_command(concurrency, duration).arg(url))
}

fn oha_command(concurrency: usize, duration: Duration) -> Command {
    let mut oha = Command::new(oha());
    oha.args(["--no-tui", "--output-format", "json", "-c", &concurrency.to_string()]);
    oha.args(["-z", &format!("{}ms", duration.as_millis())]);
    oha
}

fn oha_report(oha: &mut Command) -> Run {
    let out = oha.output().expect("run oha: `make bench` installs it into .build/tools");
    assert!(out.status.success(), "oha failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: Report = serde_json::from_slice(&out.stdout).expect("oha's JSON report");
    report.into_run()
}

/// The parts of oha's JSON report we read (times in seconds).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    summary: ReportSummary,
    latency_percentiles: Percentiles,
    status_code_distribution: std::collections::BTreeMap<String, u64>,
    error_distribution: std::collections::BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportSummary {
    /// Seconds the run took.
    total: f64,
    fastest: Option<f64>,
}

#[derive(Deserialize)]
struct Percentiles {
    p50: Option<f64>,
    p99: Option<f64>,
}

impl Report {
    fn into_run(self) -> Run {
        let ok = self.status_code_distribution.get("200").copied().unwrap_or(0);
        // Requests still in flight when the time is up are cut, not failed.
        let errors = self.error_distribution.iter().filter(|(e, _)| !e.contains("deadline")).map(|(_, n)| n);
        let all: u64 = self.status_code_distribution.values().sum::<u64>() + errors.sum::<u64>();
        let ms = |s: Option<f64>| s.unwrap_or(f64::NAN) * 1e3;
        Run {
            // oha's own rate counts every request; only successes are throughput.
            requests_per_s: ok as f64 / self.summary.total,
            fastest_ms: ms(self.summary.fastest),
            p50_ms: ms(self.latency_percentiles.p50),
            p99_ms: ms(self.latency_percentiles.p99),
            ok,
            failed: all - ok,
        }
    }
}

/// A [`Run`] from latencies measured in process over `elapsed`.
pub fn from_latencies(latencies_ms: &[f64], elapsed: Duration) -> Run {
    let s = Summary::of(latencies_ms);
    Run {
        requests_per_s: latencies_ms.len() as f64 / elapsed.as_secs_f64(),
        fastest_ms: s.min,
        p50_ms: s.median,
        p99_ms: s.p99,
        ok: latencies_ms.len() as u64,
        failed: 0,
    }
}

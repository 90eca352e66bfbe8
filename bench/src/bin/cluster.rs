//! What a cluster costs and gives (issue 13, item 6), all on loopback: etcd,
//! Garage and Nimbus hosts with a data directory each, running digits.
//!
//! - Deploy to first answer on another host: from the moment `nimbus
//!   deploy` through host A returns until host B first answers 200 from the
//!   new version (`x-nimbus-function-version`), polled every 5 ms; once
//!   where B has the function loaded (it warms the new version in the
//!   background when it sees the record), once for a new function on a
//!   fresh host B (its first answer fetches the blobs and the compiled
//!   snapshot host A shared).
//! - Cold start on a host that fetches from the object store (a new host,
//!   empty data directory) against one whose blobs and compiled snapshot
//!   are cached (the same host restarted on its data, at zero).
//! - Hosts taking load: requests/s with 1, 2 and 3 hosts under oha, with
//!   the CPU each host and the load generator used. This machine has 2
//!   cores for all of it, so added hosts cannot add throughput here; the
//!   report says so and shows the cores are saturated.
//!
//! Run with `make bench-cluster` (also part of `make bench`); it needs etcd
//! and Garage (`make services`) and oha. Writes docs/benchmarks/cluster.md
//! and cluster.json; progress goes to stderr.

use nimbus_bench::load::{Run, oha_run};
use nimbus_bench::root;
use nimbus_bench::stats::Summary;
use nimbus_bench::workload::Workload;
use nimbus_tests::{Cluster, Server, wasm};
use serde::Serialize;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
struct Report {
    /// Cores on this machine, shared by every process of the cluster.
    cores: usize,
    /// Deploys through host A of a new version of a function host B has loaded.
    loaded: FirstAnswers,
    /// Deploys through host A of a new function, each to a fresh host B.
    fresh_host: FirstAnswers,
    cold_start: ColdStarts,
    clients_per_host: usize,
    load_run_s: f64,
    /// Interleaved: every round runs 1, 2 and 3 hosts.
    scale_out: Vec<ScaleRun>,
}

/// Deploys through host A, in ms.
#[derive(Debug, Serialize)]
struct FirstAnswers {
    samples: usize,
    /// The deploy CLI call.
    deploy_call_ms: Summary,
    /// From the deploy call's return to host B's first 200 from the new version.
    first_answer_ms: Summary,
}

/// A host's first request to a function at zero, in ms.
#[derive(Debug, Serialize)]
struct ColdStarts {
    samples: usize,
    /// On a new host with an empty data directory: fetch, compile, load.
    fetched_ms: Summary,
    /// On the same host restarted on its data: blobs and snapshot cached.
    cached_ms: Summary,
    /// Fetched minus cached, per host.
    fetch_cost_ms: Summary,
}

/// One load run against the first `hosts` hosts at once.
#[derive(Debug, Serialize)]
struct ScaleRun {
    round: usize,
    hosts: usize,
    clients: usize,
    /// Successful requests/s, summed over the hosts.
    requests_per_s: f64,
    /// One oha run per loaded host.
    per_host: Vec<Run>,
    /// CPU cores each host of the cluster used during the run (idle ones too).
    host_cores: Vec<f64>,
    /// CPU cores the oha processes used.
    load_generator_cores: f64,
    wall_s: f64,
}

const HOSTS: usize = 3;
const SAMPLES: usize = 5;
const COLD_SAMPLES: usize = 3;
const ROUNDS: usize = 3;
const CLIENTS_PER_HOST: usize = 4;
const LOAD_RUN: Duration = Duration::from_secs(4);
const POLL: Duration = Duration::from_millis(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A deploy through a host: the version it made, how long the CLI took and
/// when it returned.
struct Deploy {
    version: u64,
    call: Duration,
    returned: Instant,
}

/// Deploys digits as `name` through `host`, with `extra` flags.
fn deploy(host: &Server, name: &str, extra: &[&str]) -> Deploy {
    let start = Instant::now();
    let out = host.deploy(name, "digits", "digits", extra);
    let returned = Instant::now();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the deploy's JSON answer");
    let version = answer["version"].as_u64().expect("a version in the deploy's answer");
    Deploy { version, call: returned - start, returned }
}

/// Polls `host` every 5 ms until it answers `name` with 200 from `version`;
/// the time from `since`.
fn first_answer(host: &Server, name: &str, version: u64, row: &str, since: Instant) -> Duration {
    let want = version.to_string();
    loop {
        let a = host.invoke(name, "text/csv", row);
        if a.status == 200 && a.header("x-nimbus-function-version") == want {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < ANSWER_TIMEOUT,
            "{} never answered {name} version {version}; last: {} {}",
            host.url,
            a.status,
            a.body
        );
        std::thread::sleep(POLL);
    }
}

fn first_answers(samples: &[(Duration, Duration)]) -> FirstAnswers {
    FirstAnswers {
        samples: samples.len(),
        deploy_call_ms: Summary::of(&samples.iter().map(|s| ms(s.0)).collect::<Vec<_>>()),
        first_answer_ms: Summary::of(&samples.iter().map(|s| ms(s.1)).collect::<Vec<_>>()),
    }
}

/// Clock ticks per second, the unit of /proc CPU times.
fn ticks_per_s() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU time, user and system, of this process's children that have been
/// waited for (the oha runs), in clock ticks.
fn children_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesized command name: cutime and cstime are
    // the 16th and 17th fields of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace().skip(13).take(2).filter_map(|f| f.parse::<u64>().ok()).sum()
}

/// oha against the first `n` of `hosts` at once, `CLIENTS_PER_HOST` each.
fn scale_run(hosts: &[Server], n: usize, round: usize, digits: &Workload, body: &Path, hz: f64) -> ScaleRun {
    let before: Vec<u64> = hosts.iter().map(Server::cpu_ticks).collect();
    let oha_before = children_ticks();
    let start = Instant::now();
    let per_host: Vec<Run> = std::thread::scope(|s| {
        let runs: Vec<_> = hosts[..n]
            .iter()
            .map(|h| {
                let url = format!("{}/v1/functions/load/invocations", h.url);
                s.spawn(move || oha_run(&url, digits, CLIENTS_PER_HOST, LOAD_RUN, body))
            })
            .collect();
        runs.into_iter().map(|r| r.join().expect("an oha run")).collect()
    });
    let wall_s = start.elapsed().as_secs_f64();
    let cores = |ticks: u64| ticks as f64 / hz / wall_s;
    ScaleRun {
        round,
        hosts: n,
        clients: n * CLIENTS_PER_HOST,
        requests_per_s: per_host.iter().map(|r| r.requests_per_s).sum(),
        per_host,
        host_cores: hosts.iter().zip(&before).map(|(h, &b)| cores(h.cpu_ticks().saturating_sub(b))).collect(),
        load_generator_cores: cores(children_ticks().saturating_sub(oha_before)),
        wall_s,
    }
}

fn main() {
    wasm("digits");
    let digits = Workload::named("digits");
    let row = std::str::from_utf8(&digits.body).expect("a CSV row");
    let hz = ticks_per_s();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    eprintln!("cluster: starting etcd, Garage and {HOSTS} hosts");
    let mut cluster = Cluster::start(HOSTS);

    // 3. Hosts taking load, first, while every host listed is alive.
    eprintln!("cluster: load runs, 1..={HOSTS} hosts x {CLIENTS_PER_HOST} clients, {ROUNDS} rounds");
    let load = deploy(&cluster.hosts[0], "load", &[]);
    for h in &cluster.hosts {
        first_answer(h, "load", load.version, row, Instant::now());
    }
    let body = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(body.path(), &digits.body).expect("write the body");
    let mut scale_out = Vec::new();
    for round in 1..=ROUNDS {
        for n in 1..=HOSTS {
            let run = scale_run(&cluster.hosts, n, round, &digits, body.path(), hz);
            eprintln!(
                "cluster: round {round}, {n} hosts: {:.0} req/s, host cores {:.2?}, oha {:.2} cores",
                run.requests_per_s, run.host_cores, run.load_generator_cores
            );
            scale_out.push(run);
        }
    }

    // 1. Deploy to first answer on host B, which has the function loaded.
    eprintln!("cluster: deploy through host A, first answer on host B (loaded), {SAMPLES} samples");
    let (a, b) = (&cluster.hosts[0], &cluster.hosts[1]);
    let first = deploy(a, "f", &["--env", "V=0"]);
    first_answer(b, "f", first.version, row, first.returned);
    let loaded: Vec<(Duration, Duration)> = (1..=SAMPLES)
        .map(|i| {
            // A new environment makes a new version (and a new snapshot).
            let d = deploy(a, "f", &["--env", &format!("V={i}")]);
            let took = first_answer(b, "f", d.version, row, d.returned);
            eprintln!("cluster: version {} answered on host B {:.1} ms after the deploy", d.version, ms(took));
            (d.call, took)
        })
        .collect();

    // 1. The same for a new function, each time on a fresh host B.
    eprintln!("cluster: deploy through host A, first answer on a fresh host B, {SAMPLES} samples");
    let fresh: Vec<(Duration, Duration)> = (1..=SAMPLES)
        .map(|i| {
            let b = cluster.host();
            let name = format!("new{i}");
            let d = deploy(&cluster.hosts[0], &name, &[]);
            let took = first_answer(&b, &name, d.version, row, d.returned);
            eprintln!("cluster: {name} answered on a fresh host {:.1} ms after the deploy", ms(took));
            (d.call, took)
        })
        .collect();

    // 2. Cold starts with and without fetching, on the same hosts.
    eprintln!("cluster: cold starts, fetched then cached, {COLD_SAMPLES} hosts");
    let cold = deploy(&cluster.hosts[0], "cold", &[]);
    let (mut fetched, mut cached) = (Vec::new(), Vec::new());
    for _ in 0..COLD_SAMPLES {
        let host = cluster.host();
        let f = ms(first_answer(&host, "cold", cold.version, row, Instant::now()));
        // SIGKILL and start again on the same data: at zero, nothing to fetch.
        let host = host.kill_and_restart();
        let c = ms(first_answer(&host, "cold", cold.version, row, Instant::now()));
        eprintln!("cluster: cold start {f:.1} ms fetched, {c:.1} ms cached");
        fetched.push(f);
        cached.push(c);
    }
    let fetch_cost: Vec<f64> = fetched.iter().zip(&cached).map(|(f, c)| f - c).collect();

    let report = Report {
        cores,
        loaded: first_answers(&loaded),
        fresh_host: first_answers(&fresh),
        cold_start: ColdStarts {
            samples: COLD_SAMPLES,
            fetched_ms: Summary::of(&fetched),
            cached_ms: Summary::of(&cached),
            fetch_cost_ms: Summary::of(&fetch_cost),
        },
        clients_per_host: CLIENTS_PER_HOST,
        load_run_s: LOAD_RUN.as_secs_f64(),
        scale_out,
    };
    write(&report);
}

fn write(r: &Report) {
    let out = root().join("docs/benchmarks");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("cluster.json"), serde_json::to_string_pretty(r).unwrap()).unwrap();
    // With at most 50 samples, a Summary's p99 is the largest sample.
    let s = |x: &Summary| format!("{:.1} / {:.1} / {:.1}", x.min, x.median, x.p99);
    let mut md = format!(
        "# Cluster: deploy to first answer, cold starts, added hosts\n\n`make bench-cluster` \
         (bench/src/bin/cluster.rs): etcd, Garage and Nimbus hosts with a data directory each, all on \
         loopback on one machine with {} cores, running digits. Times in ms as min / median / max.\n\n\
         ## Deploy through host A, first answer on host B\n\nFrom the return of `nimbus deploy` through A \
         until B first answers 200 from the new version (`x-nimbus-function-version`), B polled every 5 ms.\n\n\
         | host B | samples | deploy call | deploy returned to B's first answer |\n|---|---|---|---|\n",
        r.cores
    );
    for (label, x) in [
        ("has the function loaded: warms the new version in the background", &r.loaded),
        ("fresh, new function: fetches the blobs and the shared compiled snapshot, loads", &r.fresh_host),
    ] {
        md.push_str(&format!("| {label} | {} | {} | {} |\n", x.samples, s(&x.deploy_call_ms), s(&x.first_answer_ms)));
    }
    md.push_str(
        "\nEach new version of the loaded function has a new environment (`--env V=i`), so its snapshot is \
         new (the environment is part of its key): A compiles it at deploy and shares it through the object \
         store; B fetches that compiled snapshot (the blobs it has) and loads. A fresh B is started (empty data directory) before each deploy of a new name.\n\n\
         ## Cold start, with and without fetching from the object store\n\n\
         | a host's first request to digits at zero | samples | ms |\n|---|---|---|\n",
    );
    let c = &r.cold_start;
    md.push_str(&format!(
        "| new host, empty data directory: fetch blobs and shared snapshot, load | {} | {} |\n\
         | the same host restarted on its data: blobs and snapshot cached | {} | {} |\n\
         | difference, per host: what fetching adds | {} | {} |\n\n\
         The restarted host was killed (SIGKILL) and started on the same data directory; its first request \
         still hashes the cached blobs once (a new process trusts no file it has not verified).\n",
        c.samples,
        s(&c.fetched_ms),
        c.samples,
        s(&c.cached_ms),
        c.samples,
        s(&c.fetch_cost_ms)
    ));
    md.push_str(&format!(
        "\n## Added hosts taking load\n\noha, {} clients per host, one oha process per host, all at once, \
         {:.0} s per run; rounds interleave 1, 2 and 3 hosts. Cores: CPU time during the run over its wall \
         time, for each of the {} hosts (idle ones too) and for the oha processes.\n\n\
         | round | hosts | clients | req/s | req/s per host | failed | cores per host | cores oha | cores in all |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        r.clients_per_host,
        r.load_run_s,
        r.scale_out.first().map_or(0, |x| x.host_cores.len())
    ));
    let total_cores = |x: &ScaleRun| x.host_cores.iter().sum::<f64>() + x.load_generator_cores;
    for x in &r.scale_out {
        let per_host: Vec<String> = x.per_host.iter().map(|p| format!("{:.0}", p.requests_per_s)).collect();
        let host_cores: Vec<String> = x.host_cores.iter().map(|c| format!("{c:.2}")).collect();
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {:.2} | {:.2} |\n",
            x.round,
            x.hosts,
            x.clients,
            x.requests_per_s,
            per_host.join(" / "),
            x.per_host.iter().map(|p| p.failed).sum::<u64>(),
            host_cores.join(" / "),
            x.load_generator_cores,
            total_cores(x)
        ));
    }
    let hosts = r.scale_out.iter().map(|x| x.hosts).max().unwrap_or(1);
    let with = |n: usize| r.scale_out.iter().filter(move |x| x.hosts == n);
    let median = |v: Vec<f64>| Summary::of(&v).median;
    let rps: Vec<f64> = (1..=hosts).map(|n| median(with(n).map(|x| x.requests_per_s).collect())).collect();
    let used: Vec<f64> = (1..=hosts).map(|n| median(with(n).map(total_cores).collect())).collect();
    let one_host = median(with(1).map(|x| x.host_cores[0]).collect());
    let join = |v: &[f64], places: usize| v.iter().map(|x| format!("{x:.places$}")).collect::<Vec<_>>().join(" / ");
    let gain = rps[hosts - 1] / rps[0];
    let verdict = if gain < 1.1 {
        format!("**Added hosts do not add throughput on this machine: {gain:.2}x from 1 to {hosts} hosts.**")
    } else {
        format!(
            "**Added hosts gave {gain:.2}x from 1 to {hosts} hosts here, only by putting to work cores one host \
             left idle; past that they cannot add throughput on this machine.**"
        )
    };
    let (cores, clients, whole) = (r.cores, r.clients_per_host, used[0]);
    md.push_str(&format!(
        "\nMedians over the rounds, for 1 to {hosts} hosts: {} req/s, using {} of the machine's {cores} cores.\n\n\
         {verdict} Every process here (etcd, Garage, each host, oha) shares the same {cores} cores. One host \
         with {clients} clients used {one_host:.2} cores itself, and the run as a whole {whole:.2} ({:.0}% of the \
         machine). A second or third host only splits those cores, and brings its own instances, ONNX Runtime \
         sessions and threads to schedule, so throughput stays flat or drops. What an added host brings is its \
         own cores: where each host runs on cores of its own (separate machines, or a machine with more cores \
         per host), each serves about what one host serves here, and throughput grows with the hosts until the \
         front or the clients saturate. That follows from these numbers; it is not measured here.\n",
        join(&rps, 0),
        join(&used, 2),
        whole / cores as f64 * 100.0
    ));
    std::fs::write(out.join("cluster.md"), &md).unwrap();
    print!("{md}");
}

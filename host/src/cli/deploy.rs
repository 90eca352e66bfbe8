//! `nimbus deploy`: hash the handler and every artifact, upload the blobs
//! the server lacks (with a progress bar), then send the bundle. Arguments
//! come from flags or from `nimbus.toml` in the current folder (flags win),
//! as `spin deploy` reads `spin.toml`.

use super::client::{Client, Connection};
use crate::registry::{Artifact, Bundle, CANARY_MAX_SECONDS, CanarySpec, FunctionConfig};
use crate::runtime::MemoryTier;
use crate::runtime::limits::{InitTimeout, Timeout};
use crate::store::Digest;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub(crate) struct DeployArgs {
    /// Function name (default: `name` in nimbus.toml).
    name: Option<String>,
    /// The handler component. Without one (here or in nimbus.toml), the
    /// server's built-in handler serves the folder's graph as it is, over
    /// the Open Inference Protocol (/v2/models/NAME/infer).
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// The artifact folder (mounted at /model).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArgs,
    /// What this version is (shown by `nimbus versions`).
    #[arg(long)]
    description: Option<String>,
    /// Keep `live` where it is; the new version answers `?version=N` only.
    #[arg(long, conflicts_with = "canary")]
    no_promote: bool,
    /// Send this percent (1..99) of `live` traffic to the new version first;
    /// promoted after --canary-for seconds unless its error rate is clearly
    /// worse, then rolled back on its own.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=99))]
    canary: Option<u8>,
    /// Seconds a canary runs before it is promoted.
    #[arg(long, default_value_t = 300, requires = "canary",
          value_parser = clap::value_parser!(u64).range(1..=CANARY_MAX_SECONDS))]
    canary_for: u64,
    /// The manifest to read, if present.
    #[arg(long, default_value = "nimbus.toml")]
    manifest: PathBuf,
    #[command(flatten)]
    connection: Connection,
    /// Print the deployed record as JSON.
    #[arg(long)]
    json: bool,
}

/// `nimbus.toml`: the authored description of a function.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: Option<String>,
    wasm: Option<PathBuf>,
    model_dir: Option<PathBuf>,
    #[serde(default)]
    config: FunctionConfig,
}

struct Blob {
    path: PathBuf,
    digest: Digest,
    size: u64,
}

fn hash_file(path: &Path) -> anyhow::Result<Blob> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let digest = Digest::parse(&hex::encode(hasher.finalize())).expect("sha256 is a digest");
    Ok(Blob { path: path.to_path_buf(), digest, size })
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root)?.to_string_lossy().replace('\\', "/");
            out.push((rel, path));
        }
    }
    Ok(())
}

pub(crate) fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let manifest: Manifest = match std::fs::read_to_string(&args.manifest) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", args.manifest.display()))?,
        Err(_) => Manifest::default(),
    };
    let base = args.manifest.parent().unwrap_or(Path::new("."));
    let from_manifest = |p: Option<PathBuf>| p.map(|p| base.join(p));
    let name = args.name.or(manifest.name).context("no function name: pass NAME or set `name` in nimbus.toml")?;
    let wasm = args.wasm.or(from_manifest(manifest.wasm));
    let model_dir = args
        .model_dir
        .or(from_manifest(manifest.model_dir))
        .context("no artifacts: pass --model-dir or set `model_dir` in nimbus.toml")?;
    let mut config = manifest.config;
    args.config.apply(&mut config)?;

    let mut blobs = wasm.as_deref().map(hash_file).transpose()?.into_iter().collect::<Vec<_>>();
    let wasm = blobs.first().map(|b| b.digest.clone());
    if wasm.is_none() && !args.json {
        println!("no --wasm: the built-in handler serves the model (Open Inference Protocol at /v2/models/{name})");
    }
    let mut files = Vec::new();
    walk(&model_dir, &model_dir, &mut files)?;
    files.sort();
    let mut artifacts = Vec::new();
    for (rel, path) in files {
        let blob = hash_file(&path)?;
        artifacts.push(Artifact { path: rel, digest: blob.digest.clone(), size: blob.size });
        blobs.push(blob);
    }

    let client = Client::new(&args.connection);
    upload(&client, &blobs, args.json)?;
    let bundle = Bundle {
        wasm,
        artifacts,
        config,
        description: args.description,
        promote: !args.no_promote,
        canary: args.canary.map(|percent| CanarySpec { percent, seconds: args.canary_for }),
    };
    send(&client, &name, &bundle, args.json)
}

/// Sends `bundle` as the next version of `name` and reports the answer.
pub(crate) fn send(client: &Client, name: &str, bundle: &Bundle, json: bool) -> anyhow::Result<()> {
    let answer = client.put_json(&format!("/v1/functions/{name}"), bundle)?;
    if json {
        println!("{}", String::from_utf8_lossy(&answer.body));
        return Ok(());
    }
    let d: serde_json::Value = serde_json::from_slice(&answer.body).context("reading the deploy answer")?;
    let verb = d["deployment"].as_str().unwrap_or("deployed");
    println!(
        "{verb} `{name}` version {} ({} MB, max concurrency {}); live is version {}",
        d["version"], d["config"]["memory_mb"], d["config"]["max_concurrency"], d["live"]
    );
    if let Some(c) = d["canary"].as_object().filter(|c| c["state"] == "running" && c["version"] == d["version"]) {
        println!(
            "canary: version {} takes {}% of traffic until it is judged against version {} (`nimbus describe {name}`)",
            c["version"], c["percent"], c["baseline"]
        );
    }
    Ok(())
}

/// Configuration flags, shared by `deploy` and `config`; each one given
/// overrides the value it starts from.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    /// Memory tier in MB (1024..6144, step 1024).
    #[arg(long)]
    memory: Option<MemoryTier>,
    /// Most requests at once (1..200).
    #[arg(long)]
    max_concurrency: Option<u32>,
    /// Instances kept warm (0..max concurrency).
    #[arg(long)]
    provisioned: Option<u32>,
    /// Request timeout in seconds (1..60).
    #[arg(long)]
    timeout: Option<Timeout>,
    /// Largest request body in bytes.
    #[arg(long)]
    payload_limit: Option<u64>,
    /// Idle seconds before scaling to zero (default: the server's).
    #[arg(long)]
    idle_timeout: Option<u64>,
    /// Milliseconds a request over max concurrency waits before a 429.
    #[arg(long)]
    queue_timeout_ms: Option<u64>,
    /// Seconds `init` may run (1..300).
    #[arg(long)]
    init_timeout: Option<InitTimeout>,
    /// Environment variable for the handler (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = super::parse_env)]
    env: Vec<(String, String)>,
    /// Batch concurrent model runs, at most this many rows each (2..1024).
    #[arg(long, value_name = "ROWS")]
    max_batch_size: Option<u32>,
    /// Longest a partial batch waits for company, in microseconds (0..100000).
    #[arg(long, value_name = "US")]
    max_batch_delay_us: Option<u64>,
    /// Turn batching off.
    #[arg(long, conflicts_with_all = ["max_batch_size", "max_batch_delay_us"])]
    no_batching: bool,
}

impl ConfigArgs {
    /// Overrides `config` with the flags given, then checks it.
    pub(crate) fn apply(self, config: &mut FunctionConfig) -> anyhow::Result<()> {
        config.memory_mb = self.memory.unwrap_or(config.memory_mb);
        config.max_concurrency = self.max_concurrency.unwrap_or(config.max_concurrency);
        config.provisioned_concurrency = self.provisioned.unwrap_or(config.provisioned_concurrency);
        config.timeout_s = self.timeout.unwrap_or(config.timeout_s);
        config.payload_limit_bytes = self.payload_limit.unwrap_or(config.payload_limit_bytes);
        config.idle_timeout_s = self.idle_timeout.or(config.idle_timeout_s);
        config.queue_timeout_ms = self.queue_timeout_ms.unwrap_or(config.queue_timeout_ms);
        config.init_timeout_s = self.init_timeout.unwrap_or(config.init_timeout_s);
        config.env.extend(self.env);
        if self.max_batch_size.is_some() || self.max_batch_delay_us.is_some() {
            let batching = config.batching.get_or_insert_with(Default::default);
            batching.max_batch_size = self.max_batch_size.unwrap_or(batching.max_batch_size);
            batching.max_delay_us = self.max_batch_delay_us.unwrap_or(batching.max_delay_us);
        }
        if self.no_batching {
            config.batching = None;
        }
        config.validate().map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// Uploads the blobs the server does not have, with one progress bar.
fn upload(client: &Client, blobs: &[Blob], quiet: bool) -> anyhow::Result<()> {
    // The first of these calls also checks the token, before any upload.
    let mut missing = Vec::new();
    for b in blobs {
        if !client.exists(&format!("/v1/blobs/{}", b.digest.as_str()))?
            && !missing.iter().any(|m: &&Blob| m.digest == b.digest)
        {
            missing.push(b);
        }
    }
    let total: u64 = missing.iter().map(|b| b.size).sum();
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .expect("valid template"),
    );
    for b in missing {
        bar.set_message(b.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        let file = std::fs::File::open(&b.path).with_context(|| format!("opening {}", b.path.display()))?;
        let mut reader = bar.wrap_read(file);
        client.put_reader(&format!("/v1/blobs/{}", b.digest.as_str()), b.size, &mut reader)?;
    }
    bar.finish_and_clear();
    Ok(())
}

//! `nimbus deploy`: hash the handler and every artifact, upload the blobs
//! the server lacks (with a progress bar), then send the bundle. Arguments
//! come from flags or from `nimbus.toml` in the current folder (flags win),
//! as `spin deploy` reads `spin.toml`.

use super::client::{Client, Connection};
use crate::registry::{Artifact, Bundle, FunctionConfig, FunctionRecord};
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
    /// The handler component.
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// The artifact folder (mounted at /model).
    #[arg(long)]
    model_dir: Option<PathBuf>,
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
    let wasm =
        args.wasm.or(from_manifest(manifest.wasm)).context("no handler: pass --wasm or set `wasm` in nimbus.toml")?;
    let model_dir = args
        .model_dir
        .or(from_manifest(manifest.model_dir))
        .context("no artifacts: pass --model-dir or set `model_dir` in nimbus.toml")?;
    let mut config = manifest.config;
    config.memory_mb = args.memory.unwrap_or(config.memory_mb);
    config.max_concurrency = args.max_concurrency.unwrap_or(config.max_concurrency);
    config.provisioned_concurrency = args.provisioned.unwrap_or(config.provisioned_concurrency);
    config.timeout_s = args.timeout.unwrap_or(config.timeout_s);
    config.payload_limit_bytes = args.payload_limit.unwrap_or(config.payload_limit_bytes);
    config.idle_timeout_s = args.idle_timeout.or(config.idle_timeout_s);
    config.queue_timeout_ms = args.queue_timeout_ms.unwrap_or(config.queue_timeout_ms);
    config.init_timeout_s = args.init_timeout.unwrap_or(config.init_timeout_s);
    config.env.extend(args.env);
    config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;

    let wasm_blob = hash_file(&wasm)?;
    let mut files = Vec::new();
    walk(&model_dir, &model_dir, &mut files)?;
    files.sort();
    let mut artifacts = Vec::new();
    let mut blobs = vec![wasm_blob];
    for (rel, path) in files {
        let blob = hash_file(&path)?;
        artifacts.push(Artifact { path: rel, digest: blob.digest.clone(), size: blob.size });
        blobs.push(blob);
    }

    let client = Client::new(&args.connection);
    upload(&client, &blobs, args.json)?;
    let bundle = Bundle { wasm: blobs[0].digest.clone(), artifacts, config };
    let answer = client.put_json(&format!("/v1/functions/{name}"), &bundle)?;
    let record: FunctionRecord = serde_json::from_slice(&answer.body).context("reading the deploy answer")?;
    if args.json {
        println!("{}", String::from_utf8_lossy(&answer.body));
    } else {
        let verb = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v["deployment"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "deployed".into());
        println!(
            "{verb} `{}` version {} ({} MB, max concurrency {})",
            record.name,
            record.version,
            record.config.memory_mb.mb(),
            record.config.max_concurrency
        );
    }
    Ok(())
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

//! `nimbus run`: one request through a handler, locally, no server. The
//! snapshot and compiled code are cached, so the second run of the same
//! handler and artifacts starts in milliseconds.

use crate::runtime::limits::Timeout;
use crate::runtime::{ComponentCache, Function, FunctionSpec, MemoryTier, Request, Runtime, Source};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The handler component (.wasm).
    wasm: PathBuf,
    /// The artifact folder, mounted read-only at /model.
    #[arg(long)]
    model_dir: PathBuf,
    /// Memory tier in MB (1024..6144, step 1024).
    #[arg(long, default_value_t = MemoryTier::DEFAULT)]
    memory: MemoryTier,
    /// Request timeout in seconds (1..60).
    #[arg(long, default_value_t = Timeout::max())]
    timeout: Timeout,
    /// The request's Content-Type.
    #[arg(long, default_value = "application/json")]
    content_type: String,
    /// The request's Accept.
    #[arg(long, default_value = "*/*")]
    accept: String,
    /// The request body: TEXT, @FILE, or @- for stdin.
    #[arg(long)]
    data: String,
    /// Environment variable for the handler (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = super::parse_env)]
    env: Vec<(String, String)>,
    /// Where compiled snapshots are cached.
    #[arg(long, env = "NIMBUS_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let source = Source::hash(&args.wasm, &args.model_dir)?;
    let spec = FunctionSpec {
        memory: args.memory,
        timeout: args.timeout.duration(),
        env: args.env,
        ..FunctionSpec::default()
    };
    let cache = args.cache_dir.map(ComponentCache::new).unwrap_or_else(ComponentCache::user_default);
    let runtime = Runtime::new().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let name = args.wasm.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let function = Function::load(&runtime, &name, &source, spec, &cache).await?;
    let request = Request { content_type: args.content_type, accept: args.accept, body: super::read_data(&args.data)? };
    let response = std::sync::Arc::new(function).call(request).await?.response;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&response.body)?;
    if !response.body.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    Ok(())
}

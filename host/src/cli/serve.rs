//! `nimbus serve`: the HTTP server over an embedded store.

use crate::api::{self, App, Tokens};
use crate::registry::{Options, Registry};
use crate::runtime::Runtime;
use crate::store::Store;
use anyhow::Context;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "NIMBUS_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Where functions, blobs and compiled code are kept.
    #[arg(long, env = "NIMBUS_DATA_DIR", default_value = ".nimbus")]
    data_dir: PathBuf,
    /// Admin token (deploy, delete, list). Default: generated on first
    /// start and kept in DATA_DIR/admin-token (mode 0600).
    #[arg(long, env = "NIMBUS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Require this token (or the admin token) to invoke functions.
    #[arg(long, env = "NIMBUS_INVOKE_TOKEN", hide_env_values = true)]
    invoke_token: Option<String>,
    /// Seconds an unreferenced blob is kept before collection (covers
    /// uploads of a deploy still in flight).
    #[arg(long, default_value_t = crate::registry::DEFAULT_BLOB_GRACE.as_secs())]
    blob_grace: u64,
    /// Seconds a function may sit idle before it scales to zero, unless its
    /// config sets `idle_timeout_s`.
    #[arg(long, default_value_t = 300)]
    idle_timeout: u64,
    /// Memory budget in MB across loaded functions (sum of their tiers);
    /// past it, least recently used idle functions scale to zero. Default:
    /// 80% of the host's memory.
    #[arg(long)]
    memory_budget_mb: Option<u64>,
}

/// The admin token: given, stored, or made now and stored.
fn admin_token(data_dir: &Path, given: Option<String>) -> anyhow::Result<String> {
    if let Some(token) = given {
        return Ok(token);
    }
    let path = data_dir.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token = hex::encode(bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{token}")?;
    file.sync_all()?;
    eprintln!("generated an admin token in {}", path.display());
    Ok(token)
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = Store::open(&args.data_dir).with_context(|| format!("opening data dir {}", args.data_dir.display()))?;
    let tokens = Tokens { admin: admin_token(&args.data_dir, args.admin_token)?, invoke: args.invoke_token };
    crate::nn::init()?;
    let runtime = Runtime::new().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let defaults = Options::default();
    let options = Options {
        blob_grace: Duration::from_secs(args.blob_grace),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        memory_budget_mb: args.memory_budget_mb.unwrap_or(defaults.memory_budget_mb),
    };
    let registry = Registry::open(Arc::new(store), runtime, options).await?;
    let listener = tokio::net::TcpListener::bind(args.addr).await.with_context(|| format!("binding {}", args.addr))?;
    let functions = registry.list().len();
    tracing::info!(addr = %args.addr, functions, "serving");
    eprintln!("nimbus listening on http://{} ({functions} functions)", listener.local_addr()?);
    api::serve(listener, App::new(registry, tokens)).await?;
    Ok(())
}

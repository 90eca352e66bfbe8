//! `nimbus serve`: the HTTP server over an embedded store.

use crate::api::{self, App, Tokens};
use crate::journal::{Journals, Limits};
use crate::members::{HostInfo, Members};
use crate::registry::{DEFAULT_KEEP, Options, Registry};
use crate::runtime::Runtime;
use crate::runtime::{DEFAULT_INSTANCES, INSTANCES};
use crate::store::{Etcd, Records, Remote, RemoteOptions, Store};
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
    /// Keep function records in etcd (`host:port` or `http://host:port`,
    /// comma-separated), shared with the other hosts that name it: every
    /// host serves a change made through any of them. Default: sled in the
    /// data directory (one host).
    #[arg(long, env = "NIMBUS_ETCD", value_delimiter = ',')]
    etcd: Option<Vec<String>>,
    /// Keep handler and artifact blobs in this object store, shared with
    /// the other hosts (`s3://BUCKET`; or `file:///PATH` on a filesystem
    /// every host mounts). Endpoint, region and keys come from the standard
    /// `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`) or the flags below;
    /// addressing is path-style. Needs --etcd. The data directory then
    /// only caches blobs (see --blob-cache-mb).
    #[arg(long, env = "NIMBUS_OBJECT_STORE", requires = "etcd")]
    object_store: Option<String>,
    /// The object store's endpoint (overrides `AWS_ENDPOINT_URL`), e.g.
    /// `http://127.0.0.1:3900` for a local Garage.
    #[arg(long, requires = "object_store")]
    s3_endpoint: Option<String>,
    /// The object store's region (overrides `AWS_REGION`).
    #[arg(long, requires = "object_store")]
    s3_region: Option<String>,
    /// Most MB of fetched blobs kept on this host's disk; past it, those of
    /// the least recently used functions not loaded now are evicted.
    #[arg(long, env = "NIMBUS_BLOB_CACHE_MB", default_value_t = 20 << 10)]
    blob_cache_mb: u64,
    /// The URL other hosts, the front and clients reach this host at (its
    /// id in `nimbus hosts`). Default: http:// and --addr.
    #[arg(long, env = "NIMBUS_ADVERTISE")]
    advertise: Option<String>,
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
    /// Accept this token (besides the admin token) for GET /metrics.
    #[arg(long, env = "NIMBUS_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Serve GET /metrics without a token (only on a trusted network: it
    /// names every function).
    #[arg(long)]
    metrics_open: bool,
    /// Seconds an unreferenced blob is kept before collection (covers
    /// uploads of a deploy still in flight).
    #[arg(long, default_value_t = crate::registry::DEFAULT_BLOB_GRACE.as_secs())]
    blob_grace: u64,
    /// Seconds a function may sit idle before it scales to zero, unless its
    /// config sets `idle_timeout_s`.
    #[arg(long, default_value_t = 300)]
    idle_timeout: u64,
    /// Memory budget in MB across loaded functions (sum of their tiers);
    /// past it, least recently used idle functions scale to zero. Requests
    /// together (guest memory and what the host holds for them) are held
    /// to it too: past it they get 503 `at_capacity`. Default: 80% of the
    /// host's memory.
    #[arg(long, env = "NIMBUS_MEMORY_BUDGET_MB")]
    memory_budget_mb: Option<u64>,
    /// Versions kept per function (the newest), besides every version an
    /// alias, a traffic split or a running canary names; older ones are
    /// collected with their files.
    #[arg(long, default_value_t = DEFAULT_KEEP as u16, value_parser = clap::value_parser!(u16).range(1..=1000))]
    keep_versions: u16,
    /// Most MB of logs kept per function (and as much again of events);
    /// the oldest go first.
    #[arg(long, env = "NIMBUS_LOG_MAX_MB", default_value_t = 64)]
    log_max_mb: u64,
    /// Age past which logs and events go (`7d`, `12h`).
    #[arg(long, env = "NIMBUS_LOG_MAX_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    log_max_age: Duration,
    /// Most connections served at once; past it a new one gets 503.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Seconds a client has to send a request's head.
    #[arg(long, default_value_t = 10)]
    header_timeout: u64,
    /// Seconds requests in flight get to finish after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout: u64,
    /// Instance slots for all functions together (each request and each
    /// pre-made instance takes one); a tenth are kept for requests and
    /// deploys, never filled by pre-made instances.
    #[arg(long, default_value_t = DEFAULT_INSTANCES,
          value_parser = clap::value_parser!(u32).range(*INSTANCES.start() as i64..=*INSTANCES.end() as i64))]
    max_instances: u32,
}

/// A new random token.
fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The cluster's admin token, kept in etcd: the first host to start makes
/// it, every other host reads it. Print it with `etcdctl get
/// /nimbus/settings/admin-token --print-value-only` (or pass
/// --admin-token to every host instead).
async fn shared_admin_token(etcd: &Etcd) -> anyhow::Result<String> {
    let made = new_token()?;
    let token =
        etcd.value_or_insert(ADMIN_TOKEN_KEY, made.as_bytes()).await.context("reading the admin token in etcd")?;
    if token == made.as_bytes() {
        eprintln!("generated the cluster's admin token in etcd ({ADMIN_TOKEN_KEY})");
    }
    String::from_utf8(token).context("the admin token in etcd is not text")
}

/// Where a cluster keeps its admin token.
const ADMIN_TOKEN_KEY: &str = "/nimbus/settings/admin-token";

/// The admin token of a single host: stored, or made now and stored.
fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    let token = new_token()?;
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
    let remote = match &args.object_store {
        Some(url) => {
            let options =
                RemoteOptions { url: url.clone(), endpoint: args.s3_endpoint.clone(), region: args.s3_region.clone() };
            Some((Remote::open(&options)?, args.blob_cache_mb << 20))
        }
        None => None,
    };
    let opened = match &args.etcd {
        Some(endpoints) => {
            let etcd =
                Etcd::connect(endpoints).await.with_context(|| format!("connecting to etcd at {endpoints:?}"))?;
            Store::shared(&args.data_dir, Records::Etcd(Box::new(etcd)), remote)
        }
        None => Store::open(&args.data_dir),
    };
    let store = opened.with_context(|| format!("opening data dir {}", args.data_dir.display()))?;
    let admin = match (args.admin_token, store.records.etcd()) {
        (Some(token), _) => token,
        (None, Some(etcd)) => shared_admin_token(etcd).await?,
        (None, None) => admin_token(&args.data_dir)?,
    };
    let tokens =
        Tokens { admin, invoke: args.invoke_token, metrics: args.metrics_token, metrics_open: args.metrics_open };
    crate::nn::init()?;
    let runtime = Runtime::with_instances(args.max_instances).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let defaults = Options::default();
    let options = Options {
        blob_grace: Duration::from_secs(args.blob_grace),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        memory_budget_mb: args.memory_budget_mb.unwrap_or(defaults.memory_budget_mb),
        keep_versions: args.keep_versions.into(),
    };
    runtime.limit_request_memory(options.memory_budget_mb << 20);
    // Bound first: the port chosen (with :0) is this host's default address.
    let listener = tokio::net::TcpListener::bind(args.addr).await.with_context(|| format!("binding {}", args.addr))?;
    let advertise = args.advertise.unwrap_or_else(|| format!("http://{}", listener.local_addr().unwrap_or(args.addr)));
    let limits = Limits { max_bytes: args.log_max_mb.max(1) << 20, max_age: args.log_max_age };
    let journals = Journals::open(&args.data_dir, &advertise, limits).context("opening the logs")?;
    let members = Arc::new(Members::alone(HostInfo::this_host(advertise, options.memory_budget_mb)));
    let registry = Arc::new(Registry::open(Arc::new(store), runtime, members, journals, options).await?);
    let functions = registry.list().len();
    tracing::info!(addr = %args.addr, functions, "serving");
    eprintln!("nimbus listening on http://{} ({functions} functions)", listener.local_addr()?);
    let reaper = tokio::spawn(registry.clone().reap_forever());
    let follower = tokio::spawn(registry.clone().follow());
    let observer = tokio::spawn(registry.clone().observe_forever());
    let membership = tokio::spawn({
        let registry = registry.clone();
        async move {
            if let Some(etcd) = registry.store().records.etcd() {
                registry.members().keep(etcd, || registry.about()).await;
            }
        }
    });
    let warm = registry.clone();
    tokio::spawn(async move { warm.warm_provisioned().await });
    raise_open_file_limit();
    let limits = api::front::Limits {
        max_connections: args.max_connections.max(1),
        header_read_timeout: Duration::from_secs(args.header_timeout.max(1)),
        drain_timeout: Duration::from_secs(args.shutdown_timeout),
        ..api::front::Limits::default()
    };
    api::serve(listener, App::new(registry.clone(), tokens), limits).await?;
    reaper.abort();
    follower.abort();
    observer.abort();
    membership.abort();
    if let Some(etcd) = registry.store().records.etcd() {
        registry.members().leave(etcd).await;
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard one: every connection
/// is a descriptor, and the default soft limit (1024) is below the front's
/// connection limit.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::warn!("could not raise the open-file limit");
            }
        }
    }
}

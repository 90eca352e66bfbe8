//! A function's resource limits, checked when they are set, and the store
//! limiter that enforces the memory tier inside the guest.
//!
//! Tiers follow SageMaker Serverless: 1024 to 6144 MB in steps of 1024,
//! default 2048. A wasm32 guest can address at most 4 GiB, so its linear
//! memory is capped at min(tier, 4 GiB); the tier also sets the function's
//! CPU share (ONNX Runtime threads), one core per GiB up to the host's cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why a limit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The memory tier is not one of 1024, 2048, ..., 6144.
    #[error("memory must be one of 1024, 2048, 3072, 4096, 5120, 6144 MB; got {0}")]
    Memory(u32),
    /// A number of seconds is zero or over its maximum.
    #[error("{what} must be between 1 and {max} seconds; got {got}")]
    Seconds {
        /// What the seconds bound (`timeout`, `init timeout`).
        what: &'static str,
        /// Largest allowed, in seconds.
        max: u64,
        /// What was asked, in seconds.
        got: u64,
    },
}

/// A memory tier in MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct MemoryTier(u32);

impl MemoryTier {
    /// The smallest tier.
    pub const MIN: u32 = 1024;
    /// The largest tier.
    pub const MAX: u32 = 6144;
    /// The default tier.
    pub const DEFAULT: MemoryTier = MemoryTier(2048);

    /// A tier of `mb` megabytes, if it is a valid one.
    pub fn new(mb: u32) -> Result<Self, LimitError> {
        if (Self::MIN..=Self::MAX).contains(&mb) && mb.is_multiple_of(1024) {
            Ok(MemoryTier(mb))
        } else {
            Err(LimitError::Memory(mb))
        }
    }

    /// Megabytes.
    pub fn mb(self) -> u32 {
        self.0
    }

    /// The most linear memory one guest instance may have, in bytes.
    pub fn guest_bytes(self) -> usize {
        (u64::from(self.0) << 20).min(4 << 30) as usize
    }

    /// ONNX Runtime intra-op threads: one per GiB, at most the host's cores.
    pub fn threads(self) -> usize {
        (self.0 as usize / 1024).clamp(1, cores())
    }
}

impl Default for MemoryTier {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u32> for MemoryTier {
    type Error = LimitError;
    fn try_from(mb: u32) -> Result<Self, LimitError> {
        MemoryTier::new(mb)
    }
}

impl std::fmt::Display for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for MemoryTier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mb = s.parse::<u32>().map_err(|e| format!("{s:?} is not a number of MB: {e}"))?;
        MemoryTier::new(mb).map_err(|e| e.to_string())
    }
}

impl From<MemoryTier> for u32 {
    fn from(t: MemoryTier) -> u32 {
        t.0
    }
}

/// In the API: the tiers [`MemoryTier::new`] accepts.
impl utoipa::PartialSchema for MemoryTier {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let tiers = (Self::MIN..=Self::MAX).step_by(1024).map(serde_json::Value::from);
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .enum_values(Some(tiers))
            .description(Some("Memory tier in MB"))
            .into()
    }
}

impl utoipa::ToSchema for MemoryTier {}

/// The cores this process may use, read once: the standard library reads
/// cgroup files on every call, and every function's spec asks.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// What a [`Seconds`] bounds: its name in errors and its largest value.
pub trait SecondsLimit: Copy + std::fmt::Debug + Eq {
    /// The name errors use.
    const WHAT: &'static str;
    /// The largest allowed value, in seconds.
    const MAX: u64;
}

/// A request's timeout: at most 60 s, as in SageMaker Serverless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimit;

impl SecondsLimit for RequestLimit {
    const WHAT: &'static str = "timeout";
    const MAX: u64 = 60;
}

/// How long `init` may run: reading artifacts and building tokenizers
/// takes seconds; minutes is a bug or hostile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitLimit;

impl SecondsLimit for InitLimit {
    const WHAT: &'static str = "init timeout";
    const MAX: u64 = 300;
}

/// A whole number of seconds from 1 to `L::MAX`; checked when made, read
/// from JSON or TOML, or parsed from a flag, so no other value exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "u64", into = "u64", bound = "")]
pub struct Seconds<L: SecondsLimit>(u64, std::marker::PhantomData<L>);

/// A request's timeout.
pub type Timeout = Seconds<RequestLimit>;
/// How long `init` may run.
pub type InitTimeout = Seconds<InitLimit>;

impl<L: SecondsLimit> Seconds<L> {
    /// `seconds`, if from 1 to `L::MAX`.
    pub fn new(seconds: u64) -> Result<Self, LimitError> {
        if (1..=L::MAX).contains(&seconds) {
            Ok(Seconds(seconds, std::marker::PhantomData))
        } else {
            Err(LimitError::Seconds { what: L::WHAT, max: L::MAX, got: seconds })
        }
    }

    /// The largest value.
    pub fn max() -> Self {
        Seconds(L::MAX, std::marker::PhantomData)
    }

    /// Whole seconds.
    pub fn secs(self) -> u64 {
        self.0
    }

    /// As a duration.
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl<L: SecondsLimit> TryFrom<u64> for Seconds<L> {
    type Error = LimitError;
    fn try_from(seconds: u64) -> Result<Self, LimitError> {
        Seconds::new(seconds)
    }
}

impl<L: SecondsLimit> From<Seconds<L>> for u64 {
    fn from(s: Seconds<L>) -> u64 {
        s.0
    }
}

/// In the API: whole seconds from 1 to `L::MAX` (inlined where used: each
/// limit has its own range).
impl<L: SecondsLimit> utoipa::PartialSchema for Seconds<L> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .minimum(Some(1))
            .maximum(Some(L::MAX))
            .into()
    }
}

impl<L: SecondsLimit> utoipa::ToSchema for Seconds<L> {}

impl<L: SecondsLimit> std::fmt::Display for Seconds<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<L: SecondsLimit> std::str::FromStr for Seconds<L> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n = s.parse::<u64>().map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
        Seconds::new(n).map_err(|e| e.to_string())
    }
}

/// How long `init` may run unless configured.
pub const DEFAULT_INIT_TIMEOUT: InitTimeout = Seconds(120, std::marker::PhantomData);

/// The trap raised when a guest grows its memory past its tier.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("memory limit of {tier_mb} MB exceeded (asked for {asked_mb} MB)")]
pub struct MemoryExceeded {
    /// The tier.
    pub tier_mb: u32,
    /// The size the guest tried to grow to.
    pub asked_mb: u64,
}

/// The memory the host holds for functions, against a limit: every store
/// (each request is held to its tier) and every loaded function's sessions
/// (as measured at deploy), so that many requests or many cold starts at
/// once cannot make the host run out either.
#[derive(Debug)]
pub struct HostMemory {
    used: AtomicU64,
    limit: AtomicU64,
    /// What loads waiting for memory ask for (the reaper frees that much).
    wanted: AtomicU64,
}

impl Default for HostMemory {
    fn default() -> Self {
        HostMemory { used: AtomicU64::new(0), limit: AtomicU64::new(u64::MAX), wanted: AtomicU64::new(0) }
    }
}

/// Memory held until dropped.
#[derive(Debug)]
pub struct Held {
    all: Arc<HostMemory>,
    bytes: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.all.give_back(self.bytes);
    }
}

/// How often a load waiting for memory looks again.
const MEMORY_POLL: Duration = Duration::from_millis(20);

impl HostMemory {
    pub(crate) fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    /// Takes `bytes` if they fit under the limit.
    fn take(&self, bytes: u64) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| used.checked_add(bytes).filter(|&n| n <= limit))
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// How many bytes held and wanted together are over the limit: what
    /// scaling idle functions to zero should free.
    pub fn shortfall(&self) -> u64 {
        let asked = self.used().saturating_add(self.wanted.load(Ordering::Relaxed));
        asked.saturating_sub(self.limit.load(Ordering::Relaxed))
    }

    /// Holds `bytes` whether or not they fit: for memory already in use
    /// (a load whose size was only known once done). Past the limit, idle
    /// functions are scaled to zero until it fits again.
    pub fn charge(self: &Arc<Self>, bytes: u64) -> Held {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        Held { all: self.clone(), bytes }
    }

    /// Holds `bytes`, waiting up to `patience` for them to be free (requests
    /// finish, idle functions are scaled to zero); `None` if they never were.
    pub async fn hold(self: &Arc<Self>, bytes: u64, patience: Duration) -> Option<Held> {
        let held = || self.take(bytes).then(|| Held { all: self.clone(), bytes });
        if let Some(h) = held() {
            return Some(h);
        }
        // Counted as wanted while waiting, also if the caller goes away.
        struct Wanting<'a>(&'a AtomicU64, u64);
        impl Drop for Wanting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(self.1, Ordering::Relaxed);
            }
        }
        self.wanted.fetch_add(bytes, Ordering::Relaxed);
        let _wanting = Wanting(&self.wanted, bytes);
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            tokio::time::sleep(MEMORY_POLL).await;
            if let Some(h) = held() {
                return Some(h);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
        }
    }
}

/// The trap raised when the host's memory for requests is all in use.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the host's memory for requests is in use; retry shortly")]
pub struct HostMemoryFull;

/// One store's memory, guest and host side, held to its tier.
///
/// The guest's linear memory and what the host keeps on its behalf
/// (wasi-nn tensors and model outputs, resource-table entries) are charged
/// to one budget: together they may not pass the tier. Charges are
/// checked before the host copies anything, so an oversized output is
/// refused instead of allocated.
pub(crate) struct Budget {
    tier: MemoryTier,
    guest: usize,
    host: usize,
    all: Arc<HostMemory>,
}

impl Budget {
    pub(crate) fn new(tier: MemoryTier, all: Arc<HostMemory>) -> Self {
        Budget { tier, guest: 0, host: 0, all }
    }

    fn limit(&self) -> usize {
        (u64::from(self.tier.mb()) << 20) as usize
    }

    /// The error for asking for `asked` bytes in all.
    pub(crate) fn exceeded(&self, asked: usize) -> MemoryExceeded {
        MemoryExceeded { tier_mb: self.tier.mb(), asked_mb: (asked >> 20) as u64 }
    }

    /// Bytes the host may still hold for this store.
    pub(crate) fn left(&self) -> usize {
        self.limit().saturating_sub(self.guest + self.host)
    }

    /// Bytes in use, guest and host.
    pub(crate) fn used(&self) -> usize {
        self.guest.saturating_add(self.host)
    }

    /// Charges `bytes` of host memory, or refuses if they do not fit the
    /// tier ([`MemoryExceeded`]) or the host ([`HostMemoryFull`]).
    pub(crate) fn charge(&mut self, bytes: usize) -> wasmtime::Result<()> {
        let total = self.guest.saturating_add(self.host).saturating_add(bytes);
        if total > self.limit() {
            return Err(self.exceeded(total).into());
        }
        if !self.all.take(bytes as u64) {
            return Err(HostMemoryFull.into());
        }
        self.host += bytes;
        Ok(())
    }

    /// Gives back what [`Budget::charge`] took.
    pub(crate) fn refund(&mut self, bytes: usize) {
        let bytes = bytes.min(self.host);
        self.host -= bytes;
        self.all.give_back(bytes as u64);
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.all.give_back((self.guest + self.host) as u64);
    }
}

impl wasmtime::ResourceLimiter for Budget {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.tier.guest_bytes() || desired.saturating_add(self.host) > self.limit() {
            return Err(self.exceeded(desired.saturating_add(self.host)).into());
        }
        if !self.all.take(desired.saturating_sub(self.guest) as u64) {
            return Err(HostMemoryFull.into());
        }
        self.guest = desired;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn guest_and_host_share_the_tier() {
        let mut b = Budget::new(MemoryTier::new(1024).unwrap(), Arc::default());
        assert!(b.memory_growing(0, 600 << 20, None).unwrap());
        b.charge(300 << 20).unwrap();
        let e = b.charge(200 << 20).unwrap_err();
        let e = e.downcast_ref::<MemoryExceeded>().unwrap();
        assert_eq!((e.tier_mb, e.asked_mb), (1024, 1100));
        assert!(b.memory_growing(600 << 20, 800 << 20, None).is_err(), "host bytes count against growth");
        b.refund(300 << 20);
        assert!(b.memory_growing(600 << 20, 800 << 20, None).unwrap());
        assert_eq!(b.left(), 224 << 20);
    }

    #[test]
    fn charges_saturate_instead_of_wrapping() {
        let mut b = Budget::new(MemoryTier::new(1024).unwrap(), Arc::default());
        assert!(b.charge(usize::MAX).is_err());
        assert_eq!(b.left(), 1 << 30);
    }

    #[test]
    fn all_stores_share_the_host_limit_and_give_back_on_drop() {
        let all = Arc::new(HostMemory::default());
        all.set_limit(1500 << 20);
        let tier = MemoryTier::new(1024).unwrap();
        let mut a = Budget::new(tier, all.clone());
        let mut b = Budget::new(tier, all.clone());
        assert!(a.memory_growing(0, 900 << 20, None).unwrap());
        let full = b.memory_growing(0, 900 << 20, None).unwrap_err();
        assert!(full.downcast_ref::<HostMemoryFull>().is_some(), "{full}");
        b.charge(500 << 20).unwrap();
        assert!(b.charge(200 << 20).unwrap_err().downcast_ref::<HostMemoryFull>().is_some());
        assert_eq!(all.used(), 1400 << 20);
        drop(a);
        assert_eq!(all.used(), 500 << 20);
        b.refund(500 << 20);
        drop(b);
        assert_eq!(all.used(), 0);
    }

    #[test]
    fn tiers_are_checked() {
        assert!(MemoryTier::new(1024).is_ok() && MemoryTier::new(6144).is_ok());
        for bad in [0, 512, 1000, 7168] {
            assert_eq!(MemoryTier::new(bad), Err(LimitError::Memory(bad)));
        }
        assert!(Timeout::new(0).is_err() && Timeout::new(61).is_err() && Timeout::new(60).is_ok());
        assert!(InitTimeout::new(301).is_err() && InitTimeout::new(300).is_ok());
        assert_eq!("3072".parse::<MemoryTier>().map(MemoryTier::mb), Ok(3072));
        assert!("3000".parse::<MemoryTier>().unwrap_err().contains("got 3000"));
        assert!("x".parse::<Timeout>().unwrap_err().contains("not a number of seconds"));
    }
}

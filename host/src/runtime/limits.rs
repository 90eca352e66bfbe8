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
    /// The timeout is zero or over the maximum.
    #[error("timeout must be between 1 and {max} seconds; got {got}")]
    Timeout {
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
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (self.0 as usize / 1024).clamp(1, cores)
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

impl From<MemoryTier> for u32 {
    fn from(t: MemoryTier) -> u32 {
        t.0
    }
}

/// Largest timeout, as in SageMaker Serverless.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Checks a timeout in seconds.
pub fn timeout(seconds: u64) -> Result<Duration, LimitError> {
    seconds_in(seconds, MAX_TIMEOUT)
}

/// How long `init` may run unless configured: reading artifacts and
/// building tokenizers takes seconds; minutes is a bug or hostile.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest `init` timeout.
pub const MAX_INIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Checks an `init` timeout in seconds.
pub fn init_timeout(seconds: u64) -> Result<Duration, LimitError> {
    seconds_in(seconds, MAX_INIT_TIMEOUT)
}

fn seconds_in(seconds: u64, max: Duration) -> Result<Duration, LimitError> {
    if (1..=max.as_secs()).contains(&seconds) {
        Ok(Duration::from_secs(seconds))
    } else {
        Err(LimitError::Timeout { max: max.as_secs(), got: seconds })
    }
}

/// The trap raised when a guest grows its memory past its tier.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("memory limit of {tier_mb} MB exceeded (asked for {asked_mb} MB)")]
pub struct MemoryExceeded {
    /// The tier.
    pub tier_mb: u32,
    /// The size the guest tried to grow to.
    pub asked_mb: u64,
}

/// The memory every store of the host holds together, against a limit:
/// each request is held to its tier, and all of them to what the host can
/// give, so many requests at once cannot make it run out either.
#[derive(Debug)]
pub struct HostMemory {
    used: AtomicU64,
    limit: AtomicU64,
}

impl Default for HostMemory {
    fn default() -> Self {
        HostMemory { used: AtomicU64::new(0), limit: AtomicU64::new(u64::MAX) }
    }
}

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
        assert!(timeout(0).is_err() && timeout(61).is_err() && timeout(60).is_ok());
    }
}

//! A function's resource limits, checked when they are set, and the store
//! limiter that enforces the memory tier inside the guest.
//!
//! Tiers follow SageMaker Serverless: 1024 to 6144 MB in steps of 1024,
//! default 2048. A wasm32 guest can address at most 4 GiB, so its linear
//! memory is capped at min(tier, 4 GiB); the tier also sets the function's
//! CPU share (ONNX Runtime threads), one core per GiB up to the host's cores.

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
    if (1..=MAX_TIMEOUT.as_secs()).contains(&seconds) {
        Ok(Duration::from_secs(seconds))
    } else {
        Err(LimitError::Timeout { max: MAX_TIMEOUT.as_secs(), got: seconds })
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

/// Enforces the tier on one store.
pub(crate) struct Limiter {
    tier: MemoryTier,
}

impl Limiter {
    pub(crate) fn new(tier: MemoryTier) -> Self {
        Limiter { tier }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.tier.guest_bytes() {
            return Err(MemoryExceeded { tier_mb: self.tier.mb(), asked_mb: (desired >> 20) as u64 }.into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

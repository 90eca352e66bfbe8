//! A function's serverless configuration, with SageMaker's ranges. Values
//! arrive from users (JSON or `nimbus.toml`), so every check names the
//! field, the allowed range and what was sent.

use crate::nn::{Batching, Observer};
use crate::pool::Scaling;
use crate::runtime::FunctionSpec;
use crate::runtime::limits::{self, InitTimeout, MemoryTier, Timeout};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest payload a function may accept (SageMaker Serverless: 6 MB).
pub const DEFAULT_PAYLOAD_LIMIT: u64 = 6 << 20;
/// Largest payload limit one may configure.
pub const MAX_PAYLOAD_LIMIT: u64 = 64 << 20;

/// A function's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionConfig {
    /// Memory tier in MB: 1024..6144 in steps of 1024.
    pub memory_mb: MemoryTier,
    /// Most requests served at once: 1..200.
    pub max_concurrency: u32,
    /// Instances kept ready at all times: 0..max_concurrency.
    pub provisioned_concurrency: u32,
    /// Longest a request may run, in seconds: 1..60.
    #[schema(inline)]
    pub timeout_s: Timeout,
    /// Largest request body, in bytes.
    pub payload_limit_bytes: u64,
    /// Environment variables the handler sees.
    pub env: BTreeMap<String, String>,
    /// Idle seconds before scaling to zero (server default when absent).
    pub idle_timeout_s: Option<u64>,
    /// Milliseconds a request over max concurrency waits before a 429.
    pub queue_timeout_ms: u64,
    /// Longest `init` may run at deploy (or after a lost snapshot), in
    /// seconds: 1..300.
    #[schema(inline)]
    pub init_timeout_s: InitTimeout,
    /// Merge concurrent model runs of one graph into batches (off when
    /// absent).
    pub batching: Option<BatchConfig>,
}

/// Dynamic batching: concurrent `compute` calls on one graph whose inputs
/// agree on every dimension but the first run as one, each caller getting
/// back its own rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most rows (first-dimension entries) in one run: 2..1024.
    pub max_batch_size: u32,
    /// Longest a partial batch waits for company, in microseconds (only
    /// while another run of the graph is in flight): 0..100000.
    pub max_delay_us: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_batch_size: 16, max_delay_us: 2000 }
    }
}

impl BatchConfig {
    fn validate(&self) -> Result<(), String> {
        if !(2..=1024).contains(&self.max_batch_size) {
            return Err(format!("batching.max_batch_size must be between 2 and 1024; got {}", self.max_batch_size));
        }
        if self.max_delay_us > 100_000 {
            return Err(format!("batching.max_delay_us must be at most 100000; got {}", self.max_delay_us));
        }
        Ok(())
    }
}

impl Default for FunctionConfig {
    fn default() -> Self {
        FunctionConfig {
            memory_mb: MemoryTier::DEFAULT,
            max_concurrency: 20,
            provisioned_concurrency: 0,
            timeout_s: Timeout::max(),
            payload_limit_bytes: DEFAULT_PAYLOAD_LIMIT,
            env: BTreeMap::new(),
            idle_timeout_s: None,
            queue_timeout_ms: 1000,
            init_timeout_s: limits::DEFAULT_INIT_TIMEOUT,
            batching: None,
        }
    }
}

impl FunctionConfig {
    /// Checks the fields whose types cannot (ranges of numbers, fields
    /// that depend on each other); the error says which and why.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=200).contains(&self.max_concurrency) {
            return Err(format!("max_concurrency must be between 1 and 200; got {}", self.max_concurrency));
        }
        if self.provisioned_concurrency > self.max_concurrency {
            return Err(format!(
                "provisioned_concurrency ({}) cannot exceed max_concurrency ({})",
                self.provisioned_concurrency, self.max_concurrency
            ));
        }
        if !(1..=MAX_PAYLOAD_LIMIT).contains(&self.payload_limit_bytes) {
            return Err(format!(
                "payload_limit_bytes must be between 1 and {MAX_PAYLOAD_LIMIT}; got {}",
                self.payload_limit_bytes
            ));
        }
        if self.idle_timeout_s == Some(0) {
            return Err("idle_timeout_s must be at least 1".into());
        }
        if self.queue_timeout_ms > 60_000 {
            return Err(format!("queue_timeout_ms must be at most 60000; got {}", self.queue_timeout_ms));
        }
        if let Some(key) = self.env.keys().find(|k| k.is_empty() || k.contains('=') || k.contains('\0')) {
            return Err(format!("env: `{key}` is not a valid variable name"));
        }
        if let Some(key) = self.env.keys().find(|k| k.starts_with("NIMBUS_")) {
            return Err(format!("env: `{key}`: names starting with NIMBUS_ are set by Nimbus itself"));
        }
        self.batching.as_ref().map_or(Ok(()), BatchConfig::validate)
    }

    /// The runtime's view of this configuration (after [`Self::validate`]).
    /// ONNX Runtime sessions per graph are capped at the host's cores: more
    /// only adds memory, since each session already uses the tier's threads.
    pub fn spec(&self) -> FunctionSpec {
        FunctionSpec {
            memory: self.memory_mb,
            timeout: self.timeout_s.duration(),
            init_timeout: self.init_timeout_s.duration(),
            env: self.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            request_env: Vec::new(),
            sessions: (self.max_concurrency as usize).min(limits::cores()),
            batching: self.batching.map(|b| Batching {
                max_rows: b.max_batch_size,
                max_delay: Duration::from_micros(b.max_delay_us),
                observer: Observer::default(),
            }),
        }
    }
}

impl FunctionConfig {
    /// How the function's pool scales; `idle_default` when unset.
    pub fn scaling(&self, idle_default: Duration) -> Scaling {
        Scaling {
            max_concurrency: self.max_concurrency,
            provisioned: self.provisioned_concurrency,
            queue_timeout: Duration::from_millis(self.queue_timeout_ms),
            idle_timeout: self.idle_timeout_s.map_or(idle_default, Duration::from_secs),
        }
    }
}

/// How a session's size was found.
#[derive(Debug, Clone, Copy)]
pub enum Sized {
    /// From the `.onnx` files, before loading (a lower bound).
    Files,
    /// Measured while the first session of each graph was built.
    Measured,
}

/// Checks that the models fit the memory tier: each graph is held by
/// every one of its sessions.
pub fn check_fits(model_bytes: u64, config: &FunctionConfig, sized: Sized) -> Result<(), String> {
    let sessions = config.spec().sessions as u64;
    let need = model_bytes * sessions;
    let tier = u64::from(config.memory_mb.mb()) << 20;
    if need > tier {
        return Err(format!(
            "the models need {} MB ({} MB {} x {sessions} sessions) but the memory tier is {} MB; \
             choose a larger memory_mb or a lower max_concurrency",
            need >> 20,
            model_bytes >> 20,
            match sized {
                Sized::Files => "of .onnx files",
                Sized::Measured => "measured per session",
            },
            config.memory_mb.mb()
        ));
    }
    Ok(())
}

/// Checks a function name: 1-63 letters, digits and hyphens, starting and
/// ending with a letter or digit (SageMaker's endpoint-name rule).
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid function name: use 1-63 letters, digits and hyphens, not starting or ending with a hyphen"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_sagemaker() {
        for good in ["a", "digits", "my-model-2", &"x".repeat(63)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "a_b", "a.b", "ü", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn models_must_fit_the_tier() {
        let config =
            FunctionConfig { memory_mb: MemoryTier::new(1024).unwrap(), max_concurrency: 1, ..Default::default() };
        assert!(check_fits(900 << 20, &config, Sized::Files).is_ok());
        let err = check_fits(1100 << 20, &config, Sized::Measured).unwrap_err();
        assert!(err.contains("measured per session"), "{err}");
        assert!(err.contains("need 1100 MB") && err.contains("memory tier is 1024 MB"), "{err}");
    }

    #[test]
    fn config_ranges_are_checked() {
        assert!(FunctionConfig::default().validate().is_ok());
        let bad = [
            FunctionConfig { max_concurrency: 0, ..Default::default() },
            FunctionConfig { max_concurrency: 201, ..Default::default() },
            FunctionConfig { provisioned_concurrency: 21, ..Default::default() },
            FunctionConfig { payload_limit_bytes: 0, ..Default::default() },
            FunctionConfig { batching: Some(BatchConfig { max_batch_size: 1, max_delay_us: 0 }), ..Default::default() },
            FunctionConfig {
                batching: Some(BatchConfig { max_batch_size: 16, max_delay_us: 100_001 }),
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn typed_fields_refuse_bad_values_when_read() {
        let read = |json: &str| serde_json::from_str::<FunctionConfig>(json).map_err(|e| e.to_string());
        let config = read(r#"{"memory_mb": 3072, "timeout_s": 5, "init_timeout_s": 300}"#).unwrap();
        assert_eq!(config.batching, None, "batching is opt-in");
        let batched = read(r#"{"batching": {"max_batch_size": 8}}"#).unwrap().batching.unwrap();
        assert_eq!((batched.max_batch_size, batched.max_delay_us), (8, 2000));
        assert_eq!((config.memory_mb.mb(), config.timeout_s.secs(), config.init_timeout_s.secs()), (3072, 5, 300));
        for (json, says) in [
            (r#"{"memory_mb": 1000}"#, "memory must be one of"),
            (r#"{"timeout_s": 0}"#, "timeout must be between 1 and 60 seconds; got 0"),
            (r#"{"timeout_s": 61}"#, "got 61"),
            (r#"{"init_timeout_s": 301}"#, "init timeout must be between 1 and 300 seconds"),
        ] {
            let e = read(json).unwrap_err();
            assert!(e.contains(says), "{json}: {e}");
        }
        let back = serde_json::to_value(FunctionConfig::default()).unwrap();
        assert_eq!((back["memory_mb"].as_u64(), back["timeout_s"].as_u64()), (Some(2048), Some(60)));
    }
}

//! What a journal keeps: one invocation's record, a line its guest wrote,
//! or an event in a function's life. Times are wall-clock milliseconds,
//! written as RFC 3339 in UTC so that files and answers read the same.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub i64);

impl Millis {
    /// The time now.
    pub fn now() -> Self {
        Millis(chrono::Utc::now().timestamp_millis())
    }

    /// RFC 3339 in UTC with milliseconds, like `2026-11-26T22:13:23.123Z`.
    pub fn rfc3339(self) -> String {
        chrono::DateTime::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// A time as an API caller writes it: RFC 3339, or a duration ago
    /// (`30s`, `10m`, `2h`, `7d`).
    pub fn parse(s: &str, now: Millis) -> Result<Self, String> {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(Millis(t.timestamp_millis()));
        }
        match humantime::parse_duration(s) {
            Ok(ago) => Ok(Millis(now.0 - ago.as_millis().min(i64::MAX as u128) as i64)),
            Err(_) => Err(format!("`{s}` is neither an RFC 3339 time (2026-11-26T10:00:00Z) nor a duration ago (10m)")),
        }
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

/// In the API: RFC 3339 in UTC with milliseconds.
impl utoipa::PartialSchema for Millis {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .examples(["2026-11-26T22:13:23.123Z"])
            .into()
    }
}

impl utoipa::ToSchema for Millis {}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        chrono::DateTime::parse_from_rfc3339(&s).map(|t| Millis(t.timestamp_millis())).map_err(serde::de::Error::custom)
    }
}

/// What every kept record starts with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Head {
    /// When it happened.
    pub time: Millis,
    /// The host it happened on (its advertised address); filled in when
    /// read, not stored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// The function.
    pub function: String,
    /// The function version concerned, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// One line of a function's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    /// When, where, which function.
    #[serde(flatten)]
    pub head: Head,
    /// The request it belongs to.
    pub request_id: String,
    /// What it says.
    #[serde(flatten)]
    pub body: Body,
}

/// What a log line says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[schema(as = LogLine)]
pub enum Body {
    /// The request's outcome, one per request.
    Invocation(Invocation),
    /// A line the guest wrote to stdout.
    Stdout {
        /// The line, without its newline.
        line: String,
    },
    /// A line the guest wrote to stderr.
    Stderr {
        /// The line, without its newline.
        line: String,
    },
}

/// How one request went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invocation {
    /// The HTTP status answered.
    pub status: u16,
    /// Microseconds inside the handler.
    pub model_us: u64,
    /// Microseconds around it.
    pub overhead_us: u64,
    /// Whether the request found no ready instance.
    pub cold: bool,
    /// Bytes of the request body.
    pub bytes_in: u64,
    /// Bytes of the answer body.
    pub bytes_out: u64,
    /// The error code, when the status is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Something that happened to a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// When, where, which function and version.
    #[serde(flatten)]
    pub head: Head,
    /// What kind of thing.
    pub kind: EventKind,
    /// It, in a sentence.
    pub message: String,
}

/// The kinds of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A deploy made a version (or changed nothing).
    Deployed,
    /// An alias was set or moved.
    AliasSet,
    /// An alias was removed.
    AliasDeleted,
    /// `live` traffic was split anew.
    TrafficSet,
    /// `live` was rolled back.
    RolledBack,
    /// A canary took its share of traffic.
    CanaryStarted,
    /// A canary became `live`.
    CanaryPromoted,
    /// A canary was rolled back.
    CanaryRolledBack,
    /// A version came up from zero (a cold start).
    Loaded,
    /// A version could not come up.
    LoadFailed,
    /// A version scaled to zero.
    ScaledToZero,
    /// Requests were refused at max concurrency.
    Throttled,
    /// Requests ran past the timeout.
    Timeouts,
    /// Requests trapped at the memory tier.
    MemoryExceeded,
    /// The function was deleted.
    Deleted,
}

/// A record a journal keeps: it names its function and its time.
pub trait Record: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static {
    /// Its head.
    fn head(&self) -> &Head;
    /// Its head, to fill in the host.
    fn head_mut(&mut self) -> &mut Head;
    /// About how many bytes it holds (what a queue of them costs).
    fn weight(&self) -> usize;
}

/// What a record costs besides its text: its head and fields.
const OVERHEAD: usize = 256;

impl Record for Entry {
    fn head(&self) -> &Head {
        &self.head
    }
    fn head_mut(&mut self) -> &mut Head {
        &mut self.head
    }
    fn weight(&self) -> usize {
        let line = match &self.body {
            Body::Stdout { line } | Body::Stderr { line } => line.len(),
            Body::Invocation(_) => 0,
        };
        OVERHEAD + line
    }
}

impl Record for Event {
    fn head(&self) -> &Head {
        &self.head
    }
    fn head_mut(&mut self) -> &mut Head {
        &mut self.head
    }
    fn weight(&self) -> usize {
        OVERHEAD + self.message.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written() {
        let e = Entry {
            head: Head { time: Millis(1_764_195_203_123), host: String::new(), function: "f".into(), version: Some(2) },
            request_id: "ab".into(),
            body: Body::Invocation(Invocation {
                status: 200,
                model_us: 5,
                overhead_us: 6,
                cold: true,
                bytes_in: 1,
                bytes_out: 2,
                error: None,
            }),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains(r#""time":"2025-11-26T22:13:23.123Z""#), "{text}");
        assert!(text.contains(r#""kind":"invocation""#), "{text}");
        assert!(!text.contains("host"), "the host is not stored: {text}");
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), e);
    }

    #[test]
    fn times_parse_as_instants_or_durations_ago() {
        let now = Millis(1_000_000_000);
        assert_eq!(Millis::parse("10m", now).unwrap(), Millis(1_000_000_000 - 600_000));
        assert_eq!(Millis::parse("1970-01-01T00:00:01Z", now).unwrap(), Millis(1000));
        assert!(Millis::parse("yesterday", now).unwrap_err().contains("RFC 3339"));
    }
}

//! Asking the other hosts of a cluster: each keeps its own logs, events and
//! timelines (they are about what ran there), so a view of the whole
//! cluster is gathered when asked for, from every live host at once, with
//! `local=true` so that a host answers for itself only. A host that does
//! not answer in time is named in the answer, never waited for.

use super::App;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// How long a host has to answer a gathering request.
const PATIENCE: Duration = Duration::from_secs(3);

/// What the other hosts answered.
pub(super) struct Gathered<T> {
    /// Their answers.
    pub answers: Vec<T>,
    /// The hosts that did not answer.
    pub missing: Vec<String>,
}

/// An HTTP client for the other hosts.
pub struct Peers {
    client: reqwest::Client,
}

impl Peers {
    /// A client (TLS on ring, as for the object store).
    pub fn new() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Peers { client: reqwest::Client::builder().connect_timeout(PATIENCE).build().expect("an HTTP client") }
    }
}

impl Default for Peers {
    fn default() -> Self {
        Self::new()
    }
}

/// The other live hosts' addresses.
fn others(app: &App) -> Vec<String> {
    let members = app.registry.members();
    members.hosts().into_iter().filter(|h| h.id != members.me()).map(|h| h.address).collect()
}

fn get(app: &App, address: &str, path: &str) -> reqwest::RequestBuilder {
    app.peers.client.get(format!("{}{path}", address.trim_end_matches('/'))).bearer_auth(&app.tokens.admin)
}

/// `GET path` (with `local=true` in it) on every other host, as JSON.
pub(super) async fn gather<T: DeserializeOwned>(app: &App, path: &str) -> Gathered<T> {
    let asks = others(app).into_iter().map(|address| async move {
        let answer = async {
            let response = get(app, &address, path).timeout(PATIENCE).send().await?.error_for_status()?;
            response.bytes().await
        };
        let parsed = answer
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<T>(&b).map_err(|e| format!("unreadable answer: {e}")));
        parsed.map_err(|e| {
            tracing::warn!(host = %address, "no answer for {path}: {e}");
            address
        })
    });
    let mut gathered = Gathered { answers: Vec::new(), missing: Vec::new() };
    for answer in futures_util::future::join_all(asks).await {
        match answer {
            Ok(a) => gathered.answers.push(a),
            Err(address) => gathered.missing.push(address),
        }
    }
    gathered
}

/// One server-sent event: its name (empty for plain data) and its data.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SseEvent {
    pub name: String,
    pub data: String,
}

/// `GET path` (a following request) on every other host: each answer's
/// events, as they come. Hosts that cannot be reached are named.
pub(super) async fn follow(
    app: &App,
    path: &str,
) -> (Vec<impl Stream<Item = SseEvent> + Send + Unpin + 'static>, Vec<String>) {
    let asks = others(app).into_iter().map(|address| async move {
        match get(app, &address, path).send().await.and_then(|r| r.error_for_status()) {
            Ok(response) => Ok(Box::pin(events(response.bytes_stream()))),
            Err(e) => {
                tracing::warn!(host = %address, "cannot follow {path}: {e}");
                Err(address)
            }
        }
    });
    let (mut streams, mut missing) = (Vec::new(), Vec::new());
    for answer in futures_util::future::join_all(asks).await {
        match answer {
            Ok(s) => streams.push(s),
            Err(address) => missing.push(address),
        }
    }
    (streams, missing)
}

/// Parses a byte stream of server-sent events (`event:` and `data:` lines,
/// a blank line ending each; comments skipped). Ends with the stream.
fn events<E>(bytes: impl Stream<Item = Result<Bytes, E>> + Send + 'static) -> impl Stream<Item = SseEvent> + Send {
    let state = (Box::pin(bytes), Vec::<u8>::new(), SseEvent { name: String::new(), data: String::new() });
    futures_util::stream::unfold(state, |(mut bytes, mut buffer, mut event)| async move {
        loop {
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if !event.data.is_empty() || !event.name.is_empty() {
                        let done = std::mem::replace(&mut event, SseEvent { name: String::new(), data: String::new() });
                        return Some((done, (bytes, buffer, event)));
                    }
                } else if let Some(name) = line.strip_prefix("event:") {
                    event.name = name.trim_start().to_owned();
                } else if let Some(data) = line.strip_prefix("data:") {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(data.strip_prefix(' ').unwrap_or(data));
                }
            }
            match bytes.next().await {
                Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_parse_across_chunk_boundaries() {
        let chunks = [": keep-alive\n\nda", "ta: {\"a\":1}\n\nevent: live\ndata: \n", "\ndata: x\ndata: y\n\n"];
        let stream = futures_util::stream::iter(chunks.map(|c| Ok::<_, std::io::Error>(Bytes::from(c))));
        let got: Vec<SseEvent> = events(stream).collect().await;
        let want = [("", "{\"a\":1}"), ("live", ""), ("", "x\ny")]
            .map(|(n, d)| SseEvent { name: n.into(), data: d.into() })
            .to_vec();
        assert_eq!(got, want);
    }
}

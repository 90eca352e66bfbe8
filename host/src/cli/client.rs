//! The HTTP client the CLI commands share: base URL, token, and turning
//! the server's JSON errors into messages and exit codes scripts can trust.

use std::io::Read;
use std::time::Duration;

/// Bodies larger than this ask the server before they are sent.
const EXPECT_CONTINUE_OVER: usize = 1 << 20;

/// Exit codes of client commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The server answered with an error (4xx/5xx); the message says why.
    Refused = 1,
    /// The server could not be reached.
    Unreachable = 3,
}

/// A failed client command: the message and its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    /// What to tell the user.
    pub message: String,
    /// How the process exits.
    pub exit: Exit,
}

/// `--server` and `--token`, shared by every client command.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Connection {
    /// The Nimbus server.
    #[arg(long, env = "NIMBUS_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// Bearer token (admin for deploy/list/describe/delete).
    #[arg(long, env = "NIMBUS_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

/// A connected client.
pub(crate) struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// A successful answer.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Client {
    pub(crate) fn new(c: &Connection) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        Client { base: c.server.trim_end_matches('/').to_owned(), token: c.token.clone(), agent }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    fn finish(&self, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Answer, ClientError> {
        let mut response = result.map_err(|e| ClientError {
            message: format!(
                "cannot reach the server at {}: {e}; is `nimbus serve` running? (--server or NIMBUS_SERVER)",
                self.base
            ),
            exit: Exit::Unreachable,
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        response
            .body_mut()
            .as_reader()
            .read_to_end(&mut body)
            .map_err(|e| ClientError { message: format!("reading the answer: {e}"), exit: Exit::Unreachable })?;
        if status >= 400 {
            let parsed: Option<(String, String)> =
                serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| {
                    let e = v.get("error")?;
                    Some((e.get("code")?.as_str()?.to_owned(), e.get("message")?.as_str()?.to_owned()))
                });
            let message = match parsed {
                Some((code, message)) => format!("{message} ({status} {code})"),
                None => format!("the server answered {status}: {}", String::from_utf8_lossy(&body)),
            };
            return Err(ClientError { message, exit: Exit::Refused });
        }
        Ok(Answer { status, headers, body })
    }

    pub(crate) fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.finish(self.auth(self.agent.get(self.url(path))).call())
    }

    /// `GET path` whose answer is read as it comes (a followed log): no
    /// overall timeout; the server's keep-alives show it is there.
    pub(crate) fn get_stream(&self, path: &str) -> Result<impl std::io::BufRead + use<>, ClientError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        match self.auth(agent.get(self.url(path))).call() {
            Ok(response) if response.status().as_u16() < 400 => {
                Ok(std::io::BufReader::new(response.into_body().into_reader()))
            }
            other => Err(self.finish(other).err().unwrap_or_else(|| ClientError {
                message: "the server did not stream an answer".into(),
                exit: Exit::Refused,
            })),
        }
    }

    /// Whether `path` exists (200) or not (404); any other refusal (a
    /// missing or wrong token, say) is an error. A HEAD answer has no body
    /// to carry the server's message: refusals are explained from their
    /// status, as the route documents them.
    pub(crate) fn exists(&self, path: &str) -> Result<bool, ClientError> {
        let status = match self.auth(self.agent.head(self.url(path))).call() {
            Ok(response) => response.status().as_u16(),
            unreachable => return self.finish(unreachable).map(|_| false),
        };
        let message = match status {
            200 => return Ok(true),
            404 => return Ok(false),
            _ if status < 400 => return Ok(false),
            401 => "this operation needs `Authorization: Bearer <token>`; pass --token or set NIMBUS_TOKEN \
                    (401 unauthorized)"
                .to_owned(),
            503 => format!(
                "the server cannot check `{path}` now: its object store cannot be reached (or it is at its \
                 connection limit); what is deployed keeps serving, retry shortly (503)"
            ),
            _ => format!("the server refused `HEAD {path}` ({status}); its log says why"),
        };
        Err(ClientError { message, exit: Exit::Refused })
    }

    pub(crate) fn delete(&self, path: &str) -> Result<Answer, ClientError> {
        self.finish(self.auth(self.agent.delete(self.url(path))).call())
    }

    pub(crate) fn put_json(&self, path: &str, body: &impl serde::Serialize) -> Result<Answer, ClientError> {
        self.finish(self.auth(self.agent.put(self.url(path))).send_json(body))
    }

    pub(crate) fn post_json(&self, path: &str, body: &impl serde::Serialize) -> Result<Answer, ClientError> {
        self.finish(self.auth(self.agent.post(self.url(path))).send_json(body))
    }

    /// Streams `len` bytes up. `Expect: 100-continue` lets the server
    /// refuse before the body is sent, so a refusal costs no upload and the
    /// client reads the server's answer instead of a broken pipe.
    pub(crate) fn put_reader(&self, path: &str, len: u64, reader: &mut dyn Read) -> Result<Answer, ClientError> {
        let req = self
            .auth(self.agent.put(self.url(path)))
            .header("content-length", len.to_string())
            .header("expect", "100-continue");
        self.finish(req.send(ureq::SendBody::from_reader(reader)))
    }

    pub(crate) fn post(
        &self,
        path: &str,
        content_type: &str,
        accept: &str,
        body: &[u8],
    ) -> Result<Answer, ClientError> {
        let mut req =
            self.auth(self.agent.post(self.url(path))).header("content-type", content_type).header("accept", accept);
        // A large body waits for the server's go-ahead, as uploads do.
        if body.len() > EXPECT_CONTINUE_OVER {
            req = req.header("expect", "100-continue");
        }
        self.finish(req.send(body))
    }
}

//! The HTTP front: accepts TCP connections and serves a `Router` over
//! HTTP/1.1 with the limits `axum::serve` lacks (it has no timer at all).
//!
//! A hostile-user review of plain `axum::serve` found: half-sent request
//! heads held open indefinitely, trickled bodies held forever, ~20k idle
//! connections exhausting file descriptors (so `/healthz` stopped answering),
//! SIGTERM waiting forever for requests in flight, and early answers (401,
//! 404, 413, 415 before the body is read) turned into "connection reset" for
//! clients still uploading. What [`serve`] promises instead, per [`Limits`]:
//!
//! - a request head must be complete within `header_read_timeout` of its
//!   first byte (of the accept, for a connection's first request), else the
//!   connection is closed without an answer;
//! - a request body must arrive in full within `body_timeout` of its head
//!   (plus one second per `body_min_rate` bytes received, so big uploads at
//!   a decent rate pass), else the answer is 408 JSON and the connection
//!   closes;
//! - a keep-alive connection idle for `keep_alive_idle` is closed;
//! - at most `max_connections` are served; past that a new connection gets a
//!   canned 503 JSON (`Retry-After: 1`, `Connection: close`) from a small,
//!   separate pool of slots, so connections already open keep working;
//! - a connection that ends with request bytes possibly unread gets a
//!   lingering close: FIN after the answer, then up to `linger_max_bytes`
//!   read and discarded for at most `linger_timeout`, so the client reads the
//!   answer instead of a reset (a close with unread data sends RST);
//! - once `shutdown` resolves: no new accepts, idle connections close, busy
//!   ones finish their current request; [`serve`] returns when all are done
//!   or after `drain_timeout`, cutting off (and logging) the rest;
//! - connections are served on lanes, a single-threaded runtime per core
//!   (see `api::lanes`); accepting, 503 answers and draining stay here;
//! - socket and accept errors are logged, never panics; accept errors such as
//!   EMFILE are retried after a short pause instead of spinning.
//!
//! HTTP/1.1 only: HTTP/2 would need hyper's h2 stack (not compiled into the
//! host today), clients here (curl, ureq) speak HTTP/1.1 over plain TCP, and
//! the timers and lingering below are HTTP/1 semantics. No HTTP upgrades.
//! This module does not change process limits: the host should raise
//! RLIMIT_NOFILE (soft to hard) at start; [`serve`] warns when it is too low.

use super::lanes::Lanes;
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep, sleep, sleep_until, timeout};
use tower::ServiceExt;

/// Limits of the HTTP front.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time for a complete request head, from its first byte (from the accept
    /// for a connection's first request). Bounds slowloris heads and silent
    /// connections. Expiry closes the connection without an answer.
    pub header_read_timeout: Duration,
    /// Time for the whole request body, from the moment its head was read;
    /// the clock runs while a handler waits on the body. Bounds trickled
    /// uploads; expiry answers 408 JSON and closes the connection.
    pub body_timeout: Duration,
    /// Bytes per second that earn a body one more second: the deadline is
    /// `body_timeout + received / body_min_rate`, so an upload faster than
    /// this never times out (blobs go up to 8 GiB) while a trickle slower
    /// than it is still cut. 0: the whole body within `body_timeout`.
    pub body_min_rate: u64,
    /// Connections served at once; each holds one file descriptor until its
    /// lingering close ends. Keep it well under RLIMIT_NOFILE (plus 64 slots
    /// for 503 answers, plus the store's files) so accept never hits EMFILE.
    pub max_connections: usize,
    /// A keep-alive connection with no request for this long is closed.
    /// Bounds idle connections parked to exhaust `max_connections`.
    pub keep_alive_idle: Duration,
    /// After the shutdown signal, how long requests in flight may finish.
    pub drain_timeout: Duration,
    /// Lingering close: longest wait for the client's FIN after ours.
    /// Bounds how long a closing connection keeps its descriptor.
    pub linger_timeout: Duration,
    /// Lingering close: most request bytes read and discarded. Costs
    /// bandwidth only (one 16 KiB buffer); a client still sending past it
    /// gets a reset. Default: the largest invoke payload (64 MiB).
    pub linger_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            body_min_rate: 256 << 10,
            max_connections: 4096,
            keep_alive_idle: Duration::from_secs(75),
            drain_timeout: Duration::from_secs(30),
            linger_timeout: Duration::from_secs(2),
            linger_max_bytes: 64 << 20,
        }
    }
}

/// Errors the front makes (seen by handlers reading a body).
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    /// The request body did not arrive in full within `body_timeout`.
    #[error("request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
}

/// Concurrent 503 answers past `max_connections`; beyond, sockets just close.
const REJECT_SLOTS: usize = 64;
/// How long a 503 answer (write and lingering close) may take.
const REJECT_TIME: Duration = Duration::from_millis(500);
/// Pause after an accept error such as EMFILE.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Descriptors assumed in use besides connections, for the RLIMIT check.
const FD_HEADROOM: u64 = 256;

/// Serves `router` on `listener` under `limits` until `shutdown` resolves,
/// then drains (see the module doc). Accept errors are retried, so this
/// returns `Ok` once drained.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    warn_on_fd_limit(&limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections.min(Semaphore::MAX_PERMITS)));
    let reject_slots = Arc::new(Semaphore::new(REJECT_SLOTS));
    let limits = Arc::new(limits);
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let lanes = Lanes::start(crate::runtime::limits::cores())?;
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "connection task failed");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    if let Ok(permit) = permits.clone().try_acquire_owned() {
                        let (lane, on_lane) = lanes.pick();
                        let (router, limits, stopped) = (router.clone(), limits.clone(), stopped.clone());
                        // Registered again with the lane's own reactor, so
                        // its readiness wakes no other thread.
                        let stream = stream.into_std();
                        tasks.spawn_on(async move {
                            match stream.and_then(TcpStream::from_std) {
                                Ok(stream) => connection(stream, permit, router, limits, stopped).await,
                                Err(e) => tracing::warn!(error = %e, "could not move a connection to its lane"),
                            }
                            drop(on_lane);
                        }, lane);
                    } else if let Ok(slot) = reject_slots.clone().try_acquire_owned() {
                        tracing::debug!("at max_connections; answering 503");
                        tasks.spawn(reject(stream, slot));
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying shortly");
                    tokio::select! { () = &mut shutdown => break, () = sleep(ACCEPT_BACKOFF) => {} }
                }
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let open = tasks.len();
    tracing::info!(connections = open, "shutting down: draining connections");
    if timeout(limits.drain_timeout, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(cut_off = tasks.len(), "drain timeout reached; cutting off connections");
        tasks.shutdown().await;
    }
    Ok(())
}

/// One connection, from accept to close; holds its permit throughout.
async fn connection(
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    router: Router,
    limits: Arc<Limits>,
    mut stop: watch::Receiver<bool>,
) {
    let now = Instant::now();
    let conn = Arc::new(Conn(Mutex::new(State {
        in_flight: 0,
        body_unread: false,
        head_since: Some(now),
        head_bytes: false,
        idle_since: now,
        reader: None,
    })));
    let io = Io {
        stream,
        conn: conn.clone(),
        timer: Box::pin(sleep_until(after(now, limits.header_read_timeout))),
        limits: limits.clone(),
        eof: false,
    };
    let svc = Svc { router, conn: conn.clone(), limits: limits.clone() };
    // No hyper timer: its header_read_timeout also bounds keep-alive idle
    // time (it starts when hyper awaits the next head), so `Io` times both.
    let mut http = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), svc);
    let mut stopping = false;
    let ended = loop {
        tokio::select! {
            ended = poll_fn(|cx| http.poll_without_shutdown(cx)) => break ended,
            _ = stop.wait_for(|s| *s), if !stopping => stopping = true,
        }
        if conn.lock().is_clean_idle() {
            return; // shutting down: an idle connection just closes
        }
        Pin::new(&mut http).graceful_shutdown();
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
    let io = http.into_parts().io.into_inner();
    let linger = !io.eof && !conn.lock().is_clean_idle();
    close(io.stream, linger.then_some((limits.linger_max_bytes, limits.linger_timeout))).await;
}

/// Sends FIN after what was written, then, if `linger` is set, reads and
/// discards up to its bytes until the client's FIN or its time is up.
async fn close(mut stream: TcpStream, linger: Option<(u64, Duration)>) {
    let _ = stream.shutdown().await;
    let Some((mut left, time)) = linger else { return };
    let mut buf = vec![0; 16 << 10];
    let _ = timeout(time, async {
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
    })
    .await;
}

/// The answer past `max_connections`, bounded in time.
async fn reject(mut stream: TcpStream, _slot: OwnedSemaphorePermit) {
    let body = error_json("too_many_connections", "the server is at its connection limit; retry shortly");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = timeout(REJECT_TIME, async {
        if stream.write_all(answer.as_bytes()).await.is_ok() {
            close(stream, Some((64 << 10, REJECT_TIME))).await;
        }
    })
    .await;
}

fn error_json(code: &str, message: &str) -> String {
    format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#)
}

/// `t + d`, saturating far in the future instead of panicking.
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or_else(|| t + Duration::from_secs(86_400 * 365 * 30))
}

fn warn_on_fd_limit(limits: &Limits) {
    let soft = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        line.trim_start_matches("Max open files").split_whitespace().next()?.parse::<u64>().ok()
    });
    let needed = (limits.max_connections + REJECT_SLOTS) as u64 + FD_HEADROOM;
    if let Some(soft) = soft.filter(|&soft| soft < needed) {
        tracing::warn!(
            soft,
            needed,
            "RLIMIT_NOFILE is below max_connections plus headroom; raise it or lower max_connections"
        );
    }
}

/// What a connection's reader, service and bodies share.
struct Conn(Mutex<State>);

struct State {
    /// Requests whose answer is not fully written yet.
    in_flight: usize,
    /// The last request's body was not read to its end.
    body_unread: bool,
    /// When the head being read began (the accept, for the first one).
    head_since: Option<Instant>,
    /// Bytes of a head were read since the last request.
    head_bytes: bool,
    /// When the last answer was written.
    idle_since: Instant,
    /// Who to wake when the read deadline changes.
    reader: Option<Waker>,
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// Nothing of a request pending: closing now loses nothing.
    fn is_clean_idle(&self) -> bool {
        self.in_flight == 0 && !self.body_unread && !self.head_bytes
    }
}

/// Marks a request in flight from its head until its answer is written.
struct Busy(Arc<Conn>);

impl Busy {
    fn start(conn: Arc<Conn>, has_body: bool) -> Self {
        let mut s = conn.lock();
        s.in_flight += 1;
        s.body_unread = has_body;
        s.head_since = None;
        s.head_bytes = false;
        drop(s);
        Busy(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let reader = {
            let mut s = self.0.lock();
            s.in_flight = s.in_flight.saturating_sub(1);
            s.idle_since = Instant::now();
            s.reader.take()
        };
        // The reader may be parked with no deadline; let it arm the idle one.
        if let Some(w) = reader {
            w.wake();
        }
    }
}

/// The socket, timing the wait for request heads (idle and header timeouts).
struct Io {
    stream: TcpStream,
    conn: Arc<Conn>,
    timer: Pin<Box<Sleep>>,
    limits: Arc<Limits>,
    eof: bool,
}

impl AsyncRead for Io {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let deadline = {
            let mut s = this.conn.lock();
            if !s.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.reader = Some(cx.waker().clone());
            }
            match s.head_since {
                _ if s.in_flight > 0 => None,
                Some(t) => Some(after(t, this.limits.header_read_timeout)),
                None => Some(after(s.idle_since, this.limits.keep_alive_idle)),
            }
        };
        if let Some(deadline) = deadline {
            if this.timer.deadline() != deadline {
                this.timer.as_mut().reset(deadline);
            }
            if this.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle or request head timeout")));
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() == before {
            this.eof = true;
        } else if deadline.is_some() {
            let mut s = this.conn.lock();
            if s.in_flight == 0 {
                s.head_bytes = true;
                s.head_since.get_or_insert_with(Instant::now);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Io {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The router behind the body deadline, tracking requests in flight.
#[derive(Clone)]
struct Svc {
    router: Router,
    conn: Arc<Conn>,
    limits: Arc<Limits>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Svc {
    type Response = Response<Answer>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = Busy::start(self.conn.clone(), !req.body().is_end_stream());
        let timed_out = Arc::new(AtomicBool::new(false));
        let (limit, min_rate) = (self.limits.body_timeout, self.limits.body_min_rate);
        let req = if req.body().is_end_stream() {
            req.map(Body::new)
        } else {
            let start = Instant::now();
            let timer = Box::pin(sleep_until(after(start, limit)));
            let (conn, flag) = (self.conn.clone(), timed_out.clone());
            req.map(|inner| {
                Body::new(Deadline { inner, start, timer, limit, min_rate, received: 0, timed_out: flag, conn })
            })
        };
        let router = self.router.clone();
        Box::pin(async move {
            let mut handler = pin!(router.oneshot(req));
            // A handler that hangs on after its body timed out is dropped.
            let answer = poll_fn(|cx| match handler.as_mut().poll(cx) {
                Poll::Ready(Ok(answer)) => Poll::Ready(Some(answer)),
                Poll::Pending if timed_out.load(Ordering::Acquire) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await;
            let answer = match answer {
                Some(answer) if !timed_out.load(Ordering::Acquire) => answer,
                _ => {
                    let message = format!("the request body did not arrive in time ({}s)", limit.as_secs_f64());
                    let mut r = Response::new(Body::from(error_json("request_timeout", &message)));
                    *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
                    let headers = r.headers_mut();
                    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                    r
                }
            };
            Ok(answer.map(|inner| Answer { inner, _busy: busy }))
        })
    }
}

/// A request body that fails with [`FrontError::BodyTimeout`] at its deadline.
struct Deadline {
    inner: Incoming,
    start: Instant,
    timer: Pin<Box<Sleep>>,
    limit: Duration,
    min_rate: u64,
    received: u64,
    timed_out: Arc<AtomicBool>,
    conn: Arc<Conn>,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(frame) => {
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    this.received += data.map_or(0, |d| d.len() as u64);
                }
                if frame.is_none() || this.inner.is_end_stream() {
                    this.conn.lock().body_unread = false;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            // At the timer, move it to the deadline earned so far, if later.
            Poll::Pending => loop {
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let earned = match this.min_rate {
                    0 => Duration::ZERO,
                    rate => Duration::try_from_secs_f64(this.received as f64 / rate as f64).unwrap_or(Duration::MAX),
                };
                let deadline = after(after(this.start, this.limit), earned);
                if deadline <= this.timer.deadline() {
                    this.timed_out.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(FrontError::BodyTimeout(this.limit).into())));
                }
                this.timer.as_mut().reset(deadline);
            },
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body holding its request's [`Busy`] mark until written.
struct Answer {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

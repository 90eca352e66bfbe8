//! The front over real sockets on 127.0.0.1, with short limits.

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use nimbus::api::front::{Limits, serve};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const BOUND: Duration = Duration::from_secs(20);

fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(500),
        body_min_rate: 1 << 20,
        max_connections: 8,
        keep_alive_idle: Duration::from_millis(400),
        drain_timeout: Duration::from_secs(1),
        linger_timeout: Duration::from_secs(2),
        linger_max_bytes: 64 << 20,
    }
}

fn json_error(status: StatusCode, code: &str) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (status, [("content-type", "application/json")], format!(r#"{{"error":{{"code":"{code}","message":"no"}}}}"#))
}

fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/echo",
            post(|body: Body| async move {
                match axum::body::to_bytes(body, usize::MAX).await {
                    Ok(b) => (StatusCode::OK, b.len().to_string()),
                    Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
                }
            }),
        )
        .route("/too-large", post(|| async { json_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large") }))
        .route("/blob", put(|| async { json_error(StatusCode::UNAUTHORIZED, "unauthorized") }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        )
        .route("/stuck", get(std::future::pending::<&'static str>))
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(limits: Limits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, router(), limits, async {
            let _ = stopped.await;
        }));
        Server { addr, stop: Some(stop), task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// Signals shutdown; resolves to how long `serve` took to return.
    fn shut_down(&mut self) -> impl Future<Output = Duration> + '_ {
        let _ = self.stop.take().unwrap().send(());
        let start = Instant::now();
        async move {
            (&mut self.task).await.unwrap().unwrap();
            start.elapsed()
        }
    }
}

/// A parsed answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Reads one answer (content-length framed) off `s`.
async fn read_answer(s: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Answer> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = head[9..12].parse().unwrap();
    Ok(Answer { status, head, body: String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned() })
}

/// Time until the peer closes `s` (EOF or reset), reading and discarding.
async fn time_to_close(s: &mut (impl AsyncRead + Unpin)) -> Duration {
    let start = Instant::now();
    let mut chunk = [0u8; 1024];
    while let Ok(n) = s.read(&mut chunk).await {
        if n == 0 {
            break;
        }
    }
    start.elapsed()
}

async fn get_healthz(s: &mut TcpStream) -> Answer {
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    read_answer(s).await.unwrap()
}

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f).await.expect("test took too long")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_head_is_closed_after_header_read_timeout() {
    bounded(async {
        let server = Server::start(limits()).await;
        // Half a head, then silence.
        let mut s = server.connect().await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let t = time_to_close(&mut s).await;
        assert!(t >= Duration::from_millis(250) && t < Duration::from_millis(1200), "closed after {t:?}");
        // A head trickled a byte every 50 ms is cut at the same deadline.
        let (mut rd, mut wr) = server.connect().await.into_split();
        let start = Instant::now();
        let trickle = tokio::spawn(async move {
            for b in b"GET /healthz HTTP/1.1\r\nhost: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" {
                if wr.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        time_to_close(&mut rd).await;
        let t = start.elapsed();
        assert!(t >= Duration::from_millis(250) && t < Duration::from_millis(1200), "closed after {t:?}");
        trickle.abort();
        // After a request, a next head is timed from its first byte, not idle.
        let mut s = server.connect().await;
        assert_eq!(get_healthz(&mut s).await.status, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        let t = time_to_close(&mut s).await;
        assert!(t >= Duration::from_millis(250) && t < Duration::from_millis(1200), "closed after {t:?}");
        // A connection that never says anything is closed too.
        let mut s = server.connect().await;
        let t = time_to_close(&mut s).await;
        assert!(t >= Duration::from_millis(250) && t < Duration::from_millis(1200), "closed after {t:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_body_gets_408() {
    bounded(async {
        let server = Server::start(limits()).await;
        let s = server.connect().await;
        let (mut rd, mut wr) = s.into_split();
        wr.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n").await.unwrap();
        let start = Instant::now();
        let trickle = tokio::spawn(async move {
            for _ in 0..100 {
                if wr.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let answer = read_answer(&mut rd).await.unwrap();
        let t = start.elapsed();
        assert_eq!(answer.status, 408, "{answer:?}");
        assert!(answer.body.contains(r#""code":"request_timeout""#), "{answer:?}");
        assert!(answer.head.contains("connection: close"), "{answer:?}");
        assert!(t >= Duration::from_millis(450) && t < Duration::from_millis(1200), "answered after {t:?}");
        // The connection is freed: FIN right after the answer.
        let t = time_to_close(&mut rd).await;
        assert!(t < Duration::from_millis(300), "closed {t:?} after the answer");
        trickle.abort();
    })
    .await;
}

/// Sends 2 MiB in 64 KiB pieces every 20 ms (~3 MiB/s, ~650 ms in all).
async fn steady_upload(server: &Server) -> Answer {
    let mut s = server.connect().await;
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2097152\r\n\r\n").await.unwrap();
    for _ in 0..32 {
        if s.write_all(&[7u8; 64 << 10]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    read_answer(&mut s).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_longer_than_body_timeout_passes_above_min_rate() {
    bounded(async {
        let server = Server::start(limits()).await;
        let answer = steady_upload(&server).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "2097152"));
        // With no min rate the whole body must arrive within body_timeout.
        let server = Server::start(Limits { body_min_rate: 0, ..limits() }).await;
        assert_eq!(steady_upload(&server).await.status, 408);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_new_ones_get_503_and_open_ones_still_serve() {
    bounded(async {
        let server = Server::start(Limits { keep_alive_idle: Duration::from_secs(10), ..limits() }).await;
        let mut open = Vec::new();
        for _ in 0..8 {
            let mut s = server.connect().await;
            assert_eq!(get_healthz(&mut s).await.status, 200);
            open.push(s);
        }
        let mut extra = server.connect().await;
        extra.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let answer = read_answer(&mut extra).await.unwrap();
        assert_eq!(answer.status, 503, "{answer:?}");
        assert_eq!(answer.body, r#"{"error":{"code":"too_many_connections","message":"the server is at its connection limit; retry shortly"}}"#);
        assert!(answer.head.contains("retry-after: 1\r\n") && answer.head.contains("connection: close\r\n"));
        assert!(time_to_close(&mut extra).await < Duration::from_millis(300));
        // Open keep-alive connections still answer /healthz.
        for s in &mut open {
            assert_eq!(get_healthz(s).await.status, 200);
        }
        // Closing one frees its slot at once.
        drop(open.pop());
        let mut served = false;
        for _ in 0..20 {
            let mut s = server.connect().await;
            if get_healthz(&mut s).await.status == 200 {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(served);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed_after_keep_alive_idle() {
    bounded(async {
        // A header timeout shorter than the idle one: idle is timed apart.
        let server = Server::start(Limits { header_read_timeout: Duration::from_millis(150), ..limits() }).await;
        let mut s = server.connect().await;
        assert_eq!(get_healthz(&mut s).await.status, 200);
        // Requests within the idle time keep the connection.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            assert_eq!(get_healthz(&mut s).await.status, 200);
        }
        let t = time_to_close(&mut s).await;
        assert!(t >= Duration::from_millis(350) && t < Duration::from_millis(900), "closed after {t:?}");
    })
    .await;
}

fn curl(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_413_reaches_curl_streaming_10_mb() {
    bounded(async {
        let server = Server::start(limits()).await;
        let file = std::env::temp_dir().join(format!("front-test-{}.bin", std::process::id()));
        std::fs::write(&file, vec![7u8; 10 << 20]).unwrap();
        let url = server.url("/too-large");
        let data = format!("@{}", file.display());
        let (plain, expect) = tokio::task::spawn_blocking(move || {
            // `Expect:` off: curl streams the body at once (the hostile case).
            let plain = curl(&["-H", "Expect:", "--data-binary", &data, &url]);
            let expect = curl(&["--data-binary", &data, &url]);
            (plain, expect)
        })
        .await
        .unwrap();
        let _ = std::fs::remove_file(&file);
        for (stdout, stderr) in [plain, expect] {
            assert!(stdout.ends_with("\n413"), "stdout {stdout:?} stderr {stderr:?}");
            assert!(stdout.contains(r#""code":"payload_too_large""#), "stdout {stdout:?} stderr {stderr:?}");
            assert!(stderr.is_empty(), "stderr {stderr:?}");
        }
    })
    .await;
}

fn ureq_put(url: &str, body: &[u8], expect_100: bool) -> Result<(u16, String), ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = agent.put(url);
    if expect_100 {
        req = req.header("expect", "100-continue");
    }
    let mut answer = req.send(body)?;
    let status = answer.status().as_u16();
    Ok((status, answer.body_mut().read_to_string()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_401_reaches_ureq_putting_50_mb() {
    bounded(async {
        let server = Server::start(limits()).await;
        let url = server.url("/blob");
        let (plain, expect) = tokio::task::spawn_blocking(move || {
            let body = vec![7u8; 50 << 20];
            (ureq_put(&url, &body, false), ureq_put(&url, &body, true))
        })
        .await
        .unwrap();
        for answer in [plain, expect] {
            let (status, body) = answer.expect("ureq sees the answer");
            assert_eq!(status, 401);
            assert!(body.contains(r#""code":"unauthorized""#), "{body}");
        }
    })
    .await;
}

/// The control: without lingering (as with `axum::serve`), the same PUT
/// fails on the client; this is what the lingering close fixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_lingering_ureq_sees_a_reset() {
    bounded(async {
        let server = Server::start(Limits { linger_timeout: Duration::ZERO, ..limits() }).await;
        let url = server.url("/blob");
        let (plain, expect) = tokio::task::spawn_blocking(move || {
            let body = vec![7u8; 50 << 20];
            (ureq_put(&url, &body, false), ureq_put(&url, &body, true))
        })
        .await
        .unwrap();
        let err = plain.expect_err("a reset without lingering");
        eprintln!("ureq without lingering: {err:?} / {err}");
        assert!(matches!(&err, ureq::Error::Io(e) if matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)));
        // `Expect: 100-continue` needs no lingering: the body is never sent.
        assert_eq!(expect.expect("answer with Expect").0, 401);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_off_a_stuck_request_at_drain_timeout() {
    bounded(async {
        let mut server = Server::start(limits()).await;
        let mut s = server.connect().await;
        s.write_all(b"GET /stuck HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let took = server.shut_down().await;
        assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(1500), "serve took {took:?}");
        assert!(read_answer(&mut s).await.is_err(), "the stuck request is cut off");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_300_ms_request_and_not_for_idle_ones() {
    bounded(async {
        let mut server = Server::start(Limits { keep_alive_idle: Duration::from_secs(10), ..limits() }).await;
        let mut idle = server.connect().await;
        assert_eq!(get_healthz(&mut idle).await.status, 200);
        let _silent = server.connect().await;
        let mut s = server.connect().await;
        let start = Instant::now();
        s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let addr = server.addr;
        let took = server.shut_down().await;
        let answer = read_answer(&mut s).await.unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, "done"));
        assert!(answer.head.contains("connection: close"), "{answer:?}");
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(took >= Duration::from_millis(200) && took < Duration::from_millis(600), "serve took {took:?}");
        assert!(time_to_close(&mut idle).await < Duration::from_millis(100));
        assert!(TcpStream::connect(addr).await.is_err(), "no accepts after shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_traffic_is_unaffected() {
    bounded(async {
        let server = Server::start(limits()).await;
        // Keep-alive with bodies read in full, and two pipelined requests.
        let mut s = server.connect().await;
        for _ in 0..2 {
            s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello").await.unwrap();
            assert_eq!(read_answer(&mut s).await.unwrap().body, "5");
        }
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /slow HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        assert_eq!(read_answer(&mut s).await.unwrap().body, "ok");
        assert_eq!(read_answer(&mut s).await.unwrap().body, "done");
        // A handler slower than the header and idle timeouts is not cut.
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        assert_eq!(read_answer(&mut s).await.unwrap().body, "done");
        // `Expect: 100-continue` uploads that the handler reads get 100 then 200.
        let url = server.url("/echo");
        let answer = tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let mut answer = agent.post(&url).header("expect", "100-continue").send(&vec![7u8; 5 << 20][..]).unwrap();
            (answer.status().as_u16(), answer.body_mut().read_to_string().unwrap())
        })
        .await
        .unwrap();
        assert_eq!(answer, (200, (5 << 20).to_string()));
    })
    .await;
}

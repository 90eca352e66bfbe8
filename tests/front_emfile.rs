//! Accept under EMFILE: retried after a pause (no busy loop), and the server
//! recovers once descriptors free up. Its own test binary: it lowers this
//! process's RLIMIT_NOFILE (with util-linux `prlimit`).

use axum::Router;
use axum::routing::get;
use nimbus::api::front::{Limits, serve};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// User plus system CPU time of this process, in clock ticks.
fn cpu_ticks(stat: &mut std::fs::File) -> u64 {
    use std::io::{Read, Seek};
    let mut text = String::new();
    stat.rewind().unwrap();
    stat.read_to_string(&mut text).unwrap();
    let fields: Vec<&str> = text.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

async fn healthz(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_survives_emfile() {
    let test = async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits { max_connections: 1000, keep_alive_idle: Duration::from_secs(30), ..Limits::default() };
        let router = Router::new().route("/healthz", get(|| async { "ok" }));
        // 80 connections wait in the backlog; then leave the server 10 fds.
        let mut clients = Vec::new();
        for _ in 0..80 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut stat = std::fs::File::open("/proc/self/stat").unwrap();
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count();
        let pid = std::process::id().to_string();
        let nofile = format!("--nofile={}:", open + 10);
        let status = std::process::Command::new("prlimit").args(["--pid", &pid, &nofile]).status().unwrap();
        assert!(status.success());
        tokio::spawn(serve(listener, router, limits, std::future::pending()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = cpu_ticks(&mut stat);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let spent = cpu_ticks(&mut stat) - before;
        assert!(spent < 20, "{spent} ticks of CPU in 1 s at EMFILE: the accept loop spins");
        // Free descriptors: the server accepts again.
        clients.truncate(clients.len() / 2);
        let mut answer = Err(std::io::ErrorKind::Other.into());
        for _ in 0..40 {
            answer = healthz(addr).await;
            if answer.as_ref().is_ok_and(|a| a.starts_with("HTTP/1.1 200")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(answer.as_ref().is_ok_and(|a| a.ends_with("ok")), "{answer:?}");
        eprintln!("{open} fds open before; {spent} ticks of CPU in 1 s at EMFILE");
    };
    tokio::time::timeout(Duration::from_secs(20), test).await.expect("bounded");
}

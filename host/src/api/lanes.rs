//! Where HTTP connections are served: on lanes, one single-threaded tokio
//! runtime per core, each connection on one lane from accept to close.
//!
//! Why: on a work-stealing runtime a request's steps go to whichever worker
//! is free, and each hand-over is a thread wake-up. On the VMs measured a
//! cross-CPU wake-up costs tens of microseconds: at one client, the second
//! worker's wake-ups were ~40 us of a ~195 us answer. On a lane the socket,
//! the handler, a short guest run (`runtime::placement`) and the refill
//! after it all happen on one thread. Measured on digits, 2 cores: one
//! client p50 195 -> 155 us; 4, 16 and 64 clients within run-to-run noise.
//!
//! What is given up is stealing: a task that hogs its lane delays that
//! lane's other connections. Handlers do not compute inline (loads run on
//! the guests' executor, model checks and runs on blocking threads), and
//! guest code runs on a lane only within `runtime::placement`'s budget, on
//! at most all lanes but one. A new connection goes to the lane with the
//! fewest open ones.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The lanes; dropping them ends their threads (and what still runs there).
pub(super) struct Lanes {
    lanes: Vec<Lane>,
    _stop: Vec<oneshot::Sender<()>>,
}

struct Lane {
    handle: Handle,
    open: Arc<AtomicUsize>,
}

/// A connection's place on its lane, given back when dropped.
pub(super) struct OnLane(Arc<AtomicUsize>);

impl Drop for OnLane {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lanes {
    /// Starts `count` lanes (at least one), each on a thread of its own.
    pub fn start(count: usize) -> io::Result<Self> {
        let (mut lanes, mut stop) = (Vec::new(), Vec::new());
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (stopper, stopped) = oneshot::channel::<()>();
            lanes.push(Lane { handle: runtime.handle().clone(), open: Arc::default() });
            stop.push(stopper);
            std::thread::Builder::new().name(format!("nimbus-http-{i}")).spawn(move || {
                let _ = runtime.block_on(stopped);
                // Blocking work a handler started is not waited for (as
                // the process's own runtime bounds it at exit).
                runtime.shutdown_background();
            })?;
        }
        Ok(Lanes { lanes, _stop: stop })
    }

    /// The lane with the fewest open connections, and a place on it.
    pub fn pick(&self) -> (&Handle, OnLane) {
        let lane = self.lanes.iter().min_by_key(|l| l.open.load(Ordering::Relaxed)).expect("at least one lane");
        lane.open.fetch_add(1, Ordering::Relaxed);
        (&lane.handle, OnLane(lane.open.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn thread_of(handle: &Handle) -> String {
        let (tx, rx) = mpsc::channel();
        handle.spawn(async move { tx.send(std::thread::current().name().unwrap_or_default().to_owned()) });
        rx.recv().unwrap()
    }

    #[test]
    fn connections_go_to_the_emptiest_lane_and_stay_on_its_thread() {
        let lanes = Lanes::start(2).unwrap();
        let (first, on_first) = lanes.pick();
        let (second, on_second) = lanes.pick();
        let (a, b) = (thread_of(first), thread_of(second));
        assert!(a.starts_with("nimbus-http-") && b.starts_with("nimbus-http-") && a != b, "{a} {b}");
        assert_eq!(thread_of(first), a, "a lane is one thread");
        drop(on_second);
        assert_eq!(thread_of(lanes.pick().0), b, "the lane a connection left is the emptiest");
        drop(on_first);
    }

    #[test]
    fn lanes_end_with_their_owner() {
        let lanes = Lanes::start(1).unwrap();
        let (handle, _on) = lanes.pick();
        let handle = handle.clone();
        let (tx, rx) = mpsc::channel::<()>();
        handle.spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await
        });
        drop(lanes);
        // The lane's runtime drops its tasks, and with them the sender.
        let ended = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(ended, Err(mpsc::RecvTimeoutError::Disconnected));
    }
}

//! Where a request's guest runs: on the HTTP lane (`api::lanes`) that
//! received the request, or on the guests' executor.
//!
//! Why: the executor is a runtime of its own so that guest code cannot
//! delay the HTTP front, but handing a request to it and the answer back
//! costs two thread wake-ups, which on a small model is most of what the
//! platform adds to a call (docs/benchmarks/profile.md). A function whose
//! recent requests were all short gets its requests run where they
//! arrived, and a request that runs long there moves to the executor:
//!
//! - a function earns this with [`STREAK`] requests in a row each served
//!   within [`BUDGET`]; one request over it (or failed) loses it until a
//!   new streak is earned;
//! - fewer requests than the front has lanes run there at once, so at
//!   least one lane is always free of guest code (a lane does not steal:
//!   its other connections wait while a guest runs on it, at most the
//!   budget and a tick);
//! - a request past [`BUDGET`] moves to the executor at its next suspension
//!   point. Guest code yields at every epoch tick, and a model run longer
//!   than the inline limit is already on a blocking thread, so the worst a
//!   function can do to a lane is about one tick (10 ms; 20 ms if
//!   a short model run turns long, see `nn::inline`) per earned streak.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

/// Longest a request may run on a lane before it moves.
pub const BUDGET: Duration = Duration::from_millis(1);

/// Requests in a row within [`BUDGET`] that earn a function the front.
pub const STREAK: u32 = 16;

/// A function's record of short requests.
#[derive(Debug, Default)]
pub struct Streak(AtomicU32);

impl Streak {
    /// Whether the function's requests may start on the front.
    pub fn earned(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= STREAK
    }

    /// Counts a served request: within `BUDGET` extends the streak,
    /// anything else ends it.
    pub fn served(&self, took: Option<Duration>) {
        match took {
            Some(t) if t <= BUDGET => {
                let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_add(1)));
            }
            _ => self.0.store(0, Ordering::Relaxed),
        }
    }
}

/// The lanes that may run guest code now: one fewer than the front has
/// (none on a front of one lane).
#[derive(Debug)]
pub struct FrontSlots {
    used: AtomicUsize,
    total: usize,
}

impl FrontSlots {
    /// Slots for a front of `workers` lanes.
    pub fn new(workers: usize) -> Self {
        FrontSlots { used: AtomicUsize::new(0), total: workers.saturating_sub(1) }
    }

    /// A slot, if one is free, held until the guard drops.
    pub fn try_take(&self) -> Option<FrontSlot<'_>> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.total).then_some(n + 1))
            .ok()
            .map(|_| FrontSlot(self))
    }
}

/// A lane running guest code.
pub struct FrontSlot<'a>(&'a FrontSlots);

impl Drop for FrontSlot<'_> {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Polls `task` here until it finishes or runs past `budget`; past it,
/// returns the task, unfinished, to be moved.
pub async fn run_here<F: Future + Unpin>(mut task: F, budget: Duration) -> Result<F::Output, F> {
    let started = Instant::now();
    let finished = poll_fn(|cx| match pin!(&mut task).poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending if started.elapsed() > budget => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    })
    .await;
    finished.ok_or(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_is_earned_by_short_requests_and_lost_by_one_long_or_failed() {
        let streak = Streak::default();
        for _ in 0..STREAK - 1 {
            streak.served(Some(Duration::from_micros(50)));
        }
        assert!(!streak.earned());
        streak.served(Some(BUDGET));
        assert!(streak.earned());
        streak.served(Some(BUDGET + Duration::from_micros(1)));
        assert!(!streak.earned());
        (0..STREAK).for_each(|_| streak.served(Some(Duration::ZERO)));
        streak.served(None);
        assert!(!streak.earned());
    }

    #[test]
    fn one_front_worker_always_stays_free() {
        let slots = FrontSlots::new(2);
        let held = slots.try_take().expect("one of two");
        assert!(slots.try_take().is_none());
        drop(held);
        assert!(slots.try_take().is_some());
        assert!(FrontSlots::new(1).try_take().is_none(), "a front of one worker runs no guest code");
    }

    #[tokio::test]
    async fn a_task_past_its_budget_comes_back_unfinished() {
        let quick = Box::pin(async { 7 });
        assert_eq!(run_here(quick, BUDGET).await.ok(), Some(7));
        // Busy past the budget between yields, as guest code between epoch
        // ticks.
        let slow = Box::pin(async {
            for _ in 0..4 {
                std::thread::sleep(BUDGET);
                tokio::task::yield_now().await;
            }
            8
        });
        let Err(moved) = run_here(slow, BUDGET).await else { panic!("ran past its budget and was not moved") };
        assert_eq!(moved.await, 8, "the task goes on where it is moved");
    }
}

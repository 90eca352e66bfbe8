//! Per-function journals on disk: the invocation log (a record per request
//! and the lines its guest wrote) and the event history. What users read
//! after the fact has to survive a restart and stay bounded, and writing it
//! must never slow a request down.
//!
//! A request hands its record to a bounded queue and goes on (past the
//! bound, records are dropped and counted, never waited for). One thread
//! per journal appends them, a batch at a time, to the function's current
//! segment (`<root>/<function>/<first ms>.jsonl`, a JSON object per line),
//! flushes, and only then tells followers. Segments past the function's
//! size limit (oldest first) or older than the age limit are deleted.
//! A read first waits (briefly) for the writer to have handled every record
//! queued before it began: a client that got its response then asks for
//! the logs finds its request there. A reader that follows takes the
//! writer's gate to subscribe and read the backlog at one point in the
//! stream: nothing is missed or seen twice.

mod record;

pub use record::{Body, Entry, Event, EventKind, Head, Invocation, Millis, Record};

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast;

/// Records waiting to be written; past it a record is dropped.
const QUEUE: usize = 1 << 16;
/// Bytes of records waiting to be written (by [`Record::weight`]); past it
/// a record is dropped. Guests choose how long their lines are.
const QUEUE_BYTES: u64 = 64 << 20;
/// Records one write handles before it flushes and tells followers.
const BATCH: usize = 4096;
/// How long the writer gathers records after a write: under load, records
/// then queue without waking it (a wake-up per request is a futex call and
/// a context switch on the request's path), and followers see them at most
/// this much later.
const LINGER: Duration = Duration::from_millis(10);
/// How often segments are checked for age.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Most segments held open at once (one per recently active function).
const OPEN_MAX: usize = 256;
/// Longest a read waits for the writer to catch up with what was queued
/// before it (a stalled disk must not hang readers).
const CATCH_UP: Duration = Duration::from_secs(1);
/// Most records one read returns.
pub const LIMIT_MAX: usize = 10_000;

/// How much a journal keeps of each function.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes on disk per function; the oldest segments go first.
    pub max_bytes: u64,
    /// Age past which a segment goes (by its last write).
    pub max_age: Duration,
}

/// Which records a read returns.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only records at or after this time.
    pub since: Option<Millis>,
    /// At most this many: the newest ones, oldest first.
    pub limit: usize,
}

/// Records read: oldest first.
#[derive(Debug)]
pub struct Page<T> {
    /// The records.
    pub records: Vec<T>,
    /// Whether older matching records were left out for the limit.
    pub truncated: bool,
}

/// A host's journals: the invocation log and the event history.
pub struct Journals {
    /// Invocation records and guest output.
    pub logs: Journal<Entry>,
    /// What happened to functions.
    pub events: Journal<Event>,
}

impl Journals {
    /// Opens `logs/` and `events/` under `data_dir`, their records read
    /// back as coming from `host`.
    pub fn open(data_dir: &Path, host: &str, limits: Limits) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Journals {
            logs: Journal::open(&data_dir.join("logs"), host, limits)?,
            events: Journal::open(&data_dir.join("events"), host, limits)?,
        }))
    }

    /// Records an event, and logs it.
    pub fn event(&self, function: &str, version: Option<u64>, kind: EventKind, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(function, version, ?kind, "{message}");
        let head = Head { time: Millis::now(), host: String::new(), function: function.to_owned(), version };
        self.events.append(Event { head, kind, message });
    }
}

/// One kind of record, kept per function.
pub struct Journal<T: Record> {
    inner: Arc<Inner<T>>,
    queue: SyncSender<T>,
}

struct Inner<T> {
    root: PathBuf,
    host: String,
    live: broadcast::Sender<T>,
    /// Records the writer has handled (written or lost). Held while a
    /// batch is written and announced, and while a follower subscribes and
    /// reads.
    gate: Mutex<u64>,
    /// Told after each batch.
    wrote: Condvar,
    /// Records taken into the queue.
    accepted: AtomicU64,
    /// Weight of the records in the queue.
    queued: AtomicU64,
    dropped: AtomicU64,
}

impl<T: Record> Journal<T> {
    /// Opens (makes) the journal at `root`, its records read back as
    /// coming from `host`, and starts its writer thread (which ends when
    /// the journal is dropped).
    pub fn open(root: &Path, host: &str, limits: Limits) -> std::io::Result<Self> {
        private_dir(root)?;
        let (queue, pending) = std::sync::mpsc::sync_channel(QUEUE);
        let inner = Arc::new(Inner {
            root: root.to_path_buf(),
            host: host.to_owned(),
            live: broadcast::channel(QUEUE / 16).0,
            gate: Mutex::new(0),
            wrote: Condvar::new(),
            accepted: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let writer = Writer { inner: inner.clone(), limits, open: HashMap::new(), sizes: HashMap::new() };
        std::thread::Builder::new().name("nimbus-journal".into()).spawn(move || writer.run(pending))?;
        Ok(Journal { inner, queue })
    }

    /// Keeps a record; never waits (a full queue, by count or by bytes,
    /// drops it and counts it).
    pub fn append(&self, record: T) {
        let weight = record.weight() as u64;
        let queued = &self.inner.queued;
        if queued.fetch_add(weight, Ordering::Relaxed) + weight > QUEUE_BYTES {
            queued.fetch_sub(weight, Ordering::Relaxed);
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.queue.try_send(record) {
            Ok(()) => {
                self.inner.accepted.fetch_add(1, Ordering::Release);
            }
            Err(e) => {
                queued.fetch_sub(weight, Ordering::Relaxed);
                if let TrySendError::Full(_) = e {
                    self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Records dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// The function's records matching `query` and `keep`.
    pub async fn read(
        &self,
        function: &str,
        query: Query,
        keep: impl Fn(&T) -> bool + Send + 'static,
    ) -> std::io::Result<Page<T>> {
        let (inner, function) = (self.inner.clone(), function.to_owned());
        let queued = inner.accepted.load(Ordering::Acquire);
        blocking(move || {
            drop(inner.caught_up(queued));
            inner.read(&function, &query, &keep)
        })
        .await
    }

    /// What [`Journal::read`] returns, and every record written after it.
    pub async fn follow(
        &self,
        function: &str,
        query: Query,
        keep: impl Fn(&T) -> bool + Send + 'static,
    ) -> std::io::Result<(Page<T>, broadcast::Receiver<T>)> {
        let (inner, function) = (self.inner.clone(), function.to_owned());
        let queued = inner.accepted.load(Ordering::Acquire);
        blocking(move || {
            let _gate = inner.caught_up(queued);
            let live = inner.live.subscribe();
            Ok((inner.read(&function, &query, &keep)?, live))
        })
        .await
    }

    /// The host records are read back as coming from.
    pub fn host(&self) -> &str {
        &self.inner.host
    }
}

async fn blocking<R: Send + 'static>(work: impl FnOnce() -> std::io::Result<R> + Send + 'static) -> std::io::Result<R> {
    tokio::task::spawn_blocking(work).await.map_err(std::io::Error::other)?
}

/// Logs hold what handlers wrote: only the server's user reads them.
fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// A function's segments, oldest first, with their first times.
fn segments(dir: &Path) -> Vec<(i64, PathBuf)> {
    let Ok(read) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(i64, PathBuf)> = read
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let start = path.file_name()?.to_str()?.strip_suffix(".jsonl")?.parse().ok()?;
            Some((start, path))
        })
        .collect();
    found.sort();
    found
}

impl<T: Record> Inner<T> {
    /// The gate, once the writer has handled `queued` records (or after
    /// [`CATCH_UP`]).
    fn caught_up(&self, queued: u64) -> MutexGuard<'_, u64> {
        let gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        match self.wrote.wait_timeout_while(gate, CATCH_UP, |handled| *handled < queued) {
            Ok((gate, _)) => gate,
            Err(p) => p.into_inner().0,
        }
    }

    fn read(&self, function: &str, query: &Query, keep: &dyn Fn(&T) -> bool) -> std::io::Result<Page<T>> {
        let since = query.since.unwrap_or(Millis(i64::MIN));
        let limit = query.limit.clamp(1, LIMIT_MAX);
        let all = segments(&self.root.join(function));
        // A segment holds records from its start to the next one's.
        let first = all.iter().rposition(|(start, _)| *start <= since.0).unwrap_or(0);
        let mut records = VecDeque::with_capacity(limit.min(1024));
        let mut truncated = false;
        for (_, path) in &all[first..] {
            let file = match File::open(path) {
                Ok(f) => f,
                // Deleted for age or size meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in BufReader::new(file).lines() {
                // A torn last line (a crash mid-write) is skipped.
                let Ok(record) = serde_json::from_str::<T>(&line?) else { continue };
                if record.head().time < since || !keep(&record) {
                    continue;
                }
                if records.len() == limit {
                    records.pop_front();
                    truncated = true;
                }
                records.push_back(record);
            }
        }
        let mut records: Vec<T> = records.into();
        records.sort_by_key(|r| r.head().time);
        for r in &mut records {
            r.head_mut().host.clone_from(&self.host);
        }
        Ok(Page { records, truncated })
    }
}

/// The writer thread's state.
struct Writer<T> {
    inner: Arc<Inner<T>>,
    limits: Limits,
    /// The segment being written, by function.
    open: HashMap<String, Segment>,
    /// Bytes on disk, by function (known once the function is written).
    sizes: HashMap<String, u64>,
}

struct Segment {
    file: BufWriter<File>,
    bytes: u64,
}

impl<T: Record> Writer<T> {
    fn run(mut self, pending: Receiver<T>) {
        let mut swept = SystemTime::now();
        loop {
            match pending.recv_timeout(SWEEP_EVERY) {
                Ok(first) => {
                    let batch: Vec<T> = std::iter::once(first).chain(pending.try_iter().take(BATCH - 1)).collect();
                    let full = batch.len() == BATCH;
                    self.write(batch);
                    if !full {
                        std::thread::sleep(LINGER);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if swept.elapsed().unwrap_or_default() >= SWEEP_EVERY {
                self.sweep();
                swept = SystemTime::now();
            }
        }
    }

    /// Writes a batch, flushes it, then tells followers.
    fn write(&mut self, batch: Vec<T>) {
        let inner = self.inner.clone();
        let mut gate = inner.gate.lock().unwrap_or_else(|p| p.into_inner());
        let handled = batch.len() as u64;
        let mut touched = Vec::new();
        for record in &batch {
            let function = record.head().function.clone();
            let Ok(mut line) = serde_json::to_vec(record) else { continue };
            line.push(b'\n');
            if let Err(e) = self.append(&function, &line) {
                tracing::warn!(%function, "journal write failed, record lost: {e}");
                self.open.remove(&function);
                continue;
            }
            if !touched.contains(&function) {
                touched.push(function);
            }
        }
        for function in &touched {
            if let Some(Err(e)) = self.open.get_mut(function).map(|s| s.file.flush()) {
                tracing::warn!(%function, "journal flush failed: {e}");
                self.open.remove(function);
            }
        }
        let weight: u64 = batch.iter().map(|r| r.weight() as u64).sum();
        for record in batch {
            let _ = inner.live.send(record);
        }
        *gate += handled;
        drop(gate);
        inner.wrote.notify_all();
        inner.queued.fetch_sub(weight, Ordering::Relaxed);
        for function in touched {
            self.trim(&function);
        }
    }

    fn segment_bytes(&self) -> u64 {
        (self.limits.max_bytes / 8).max(64 << 10)
    }

    fn append(&mut self, function: &str, line: &[u8]) -> std::io::Result<()> {
        let full = self.open.get(function).is_some_and(|s| s.bytes >= self.segment_bytes());
        if full || !self.open.contains_key(function) {
            if self.open.len() >= OPEN_MAX {
                self.open.clear();
            }
            let dir = self.inner.root.join(function);
            let existing = segments(&dir);
            if !self.sizes.contains_key(function) {
                let known = existing.iter().filter_map(|(_, p)| p.metadata().ok()).map(|m| m.len()).sum();
                self.sizes.insert(function.to_owned(), known);
            }
            private_dir(&dir)?;
            // A new segment starts after the last one, even within a millisecond.
            let last = existing.last().map_or(i64::MIN, |(s, _)| *s);
            let start = Millis::now().0.max(last + 1);
            let path = dir.join(format!("{start:013}.jsonl"));
            let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
            self.open.insert(function.to_owned(), Segment { file: BufWriter::with_capacity(64 << 10, file), bytes: 0 });
        }
        let segment = self.open.get_mut(function).expect("opened above");
        segment.file.write_all(line)?;
        segment.bytes += line.len() as u64;
        *self.sizes.entry(function.to_owned()).or_default() += line.len() as u64;
        Ok(())
    }

    /// Deletes the function's oldest segments while it is over its size.
    fn trim(&mut self, function: &str) {
        let Some(&size) = self.sizes.get(function) else { return };
        if size <= self.limits.max_bytes {
            return;
        }
        let mut size = size;
        let all = segments(&self.inner.root.join(function));
        // The newest segment is the one being written: it stays.
        for (_, path) in &all[..all.len().saturating_sub(1)] {
            if size <= self.limits.max_bytes {
                break;
            }
            let bytes = path.metadata().map_or(0, |m| m.len());
            if std::fs::remove_file(path).is_ok() {
                size -= bytes.min(size);
            }
        }
        self.sizes.insert(function.to_owned(), size);
    }

    /// Deletes every segment last written before the age limit.
    fn sweep(&mut self) {
        let Some(cutoff) = SystemTime::now().checked_sub(self.limits.max_age) else { return };
        let Ok(functions) = std::fs::read_dir(&self.inner.root) else { return };
        for dir in functions.flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            let all = segments(&dir.path());
            for (i, (_, path)) in all.iter().enumerate() {
                let modified = path.metadata().and_then(|m| m.modified());
                if modified.is_ok_and(|m| m < cutoff) {
                    if i + 1 == all.len() {
                        self.open.remove(&name);
                    }
                    let _ = std::fs::remove_file(path);
                }
            }
            // Sizes are counted again on the next write.
            self.sizes.remove(&name);
            let _ = std::fs::remove_dir(dir.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(function: &str, time: i64, message: &str) -> Event {
        Event {
            head: Head { time: Millis(time), host: String::new(), function: function.into(), version: Some(1) },
            kind: EventKind::Deployed,
            message: message.into(),
        }
    }

    fn limits(max_bytes: u64) -> Limits {
        Limits { max_bytes, max_age: Duration::from_secs(3600) }
    }

    async fn all<T: Record>(j: &Journal<T>, function: &str) -> Vec<T> {
        j.read(function, Query { since: None, limit: LIMIT_MAX }, |_| true).await.unwrap().records
    }

    #[tokio::test]
    async fn records_survive_a_reopen_newest_kept_under_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let now = Millis::now().0;
        {
            let j = Journal::open(dir.path(), "h1", limits(1 << 20)).unwrap();
            for i in 0..10 {
                j.append(event("f", now + i, &format!("m{i}")));
            }
            j.append(event("g", now, "other"));
            assert_eq!(all(&j, "f").await.len(), 10, "a read sees what was queued before it");
        }
        let j = Journal::<Event>::open(dir.path(), "h2", limits(1 << 20)).unwrap();
        let page = j.read("f", Query { since: Some(Millis(now + 3)), limit: 4 }, |_| true).await.unwrap();
        let messages: Vec<&str> = page.records.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["m6", "m7", "m8", "m9"]);
        assert!(page.truncated);
        assert_eq!(page.records[0].head.host, "h2");
        let filtered = j.read("f", Query { since: None, limit: 100 }, |e| e.message == "m2").await.unwrap();
        assert_eq!(filtered.records.len(), 1);
    }

    #[tokio::test]
    async fn the_oldest_segments_go_past_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), "h", limits(256 << 10)).unwrap();
        let now = Millis::now().0;
        let long = "x".repeat(1000);
        for i in 0..1000 {
            j.append(event("f", now + i, &format!("{i} {long}")));
            if i % 100 == 99 {
                all(&j, "f").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let records = all(&j, "f").await;
        let on_disk: u64 = segments(&dir.path().join("f")).iter().map(|(_, p)| p.metadata().unwrap().len()).sum();
        assert!(on_disk <= (256 << 10) + (64 << 10), "{on_disk} bytes kept");
        assert!(records.last().unwrap().message.starts_with("999 "), "the newest stays");
        assert!(!records.first().unwrap().message.starts_with("0 "), "the oldest went");
    }

    #[tokio::test]
    async fn records_past_the_queue_bytes_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), "h", limits(1 << 20)).unwrap();
        let now = Millis::now().0;
        j.append(event("f", now, &"x".repeat(QUEUE_BYTES as usize)));
        assert_eq!(j.dropped(), 1);
        j.append(event("f", now + 1, "small"));
        let kept = all(&j, "f").await;
        assert_eq!(kept.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["small"]);
    }

    #[tokio::test]
    async fn a_follower_sees_the_backlog_then_each_new_record_once() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), "h", limits(1 << 20)).unwrap();
        let now = Millis::now().0;
        j.append(event("f", now, "before"));
        let (page, mut live) = j.follow("f", Query { since: None, limit: 10 }, |_| true).await.unwrap();
        assert_eq!(page.records.len(), 1);
        j.append(event("f", now + 1, "after"));
        let next = tokio::time::timeout(Duration::from_secs(5), live.recv()).await.unwrap().unwrap();
        assert_eq!(next.message, "after");
    }
}

//! Dynamic batching: concurrent runs of one graph whose inputs agree on
//! every dimension but the first are merged along it into one ONNX Runtime
//! run, and each caller gets back exactly its own rows.
//!
//! Why: a run has a fixed cost (thread wake-ups, weights streamed through
//! the caches, per-kernel set-up) that a batch pays once, and a larger
//! first dimension lets matrix kernels work on wider blocks. Under load
//! that is most of what a run costs.
//!
//! Adaptive, as BentoML's batcher: callers queue, and whenever a session is
//! free the dispatcher takes the oldest caller and every queued caller of
//! the same shape, up to `max_rows` rows. A lone caller is never held back:
//! a partial batch waits for company only while another run of the graph
//! is in flight (so more callers are on their way), and then at most
//! `max_delay` after its oldest caller arrived.
//!
//! Isolation: each caller's inputs are checked alone before they queue; a
//! merged run that fails (a value one caller sent, the memory of the
//! batch) is run again one caller at a time, so only the culprit fails. A
//! caller that goes away (its request timed out) leaves the queue, and a
//! running batch is terminated only once every one of its callers has gone.
//! Rows must be independent of each other, as a batch dimension means.
//!
//! Merging pays only where a run has a fixed cost to share, and only up to
//! a size: a transformer over short sequences gains at every size; on this
//! project's 2-core machine MobileNetV2 gains at two images (~20%) and loses
//! beyond four, where merged callers only wait for each other's rows. So the
//! dispatcher measures the time per row of its runs by size (1, 2, 3-4,
//! 5-8, ... rows) and lets batches grow to a size only while each doubling
//! made rows at least a tenth cheaper; one batch in [`PROBE`] may take twice
//! that, so the next size up stays measured and the limit follows the load.
//! (A single limit of "merge or not" oscillated on vision: pairs paid, so
//! everything queued merged, which did not; a sixth of its callers then
//! waited ~14 runs, doubling p99.)

use super::{ElementType, Graph, NnError, Tensor};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc, oneshot};

/// How a graph batches.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Batching {
    /// Most rows (first-dimension entries) in one run.
    pub max_rows: u32,
    /// Longest a partial batch is held for company.
    pub max_delay: Duration,
    /// Told about every batch.
    pub observer: Observer,
}

/// What is told about batches: the function's metrics.
pub trait BatchObserver: Send + Sync {
    /// A run of `callers` merged callers, each of which waited `waited`
    /// between queueing and the run's start.
    fn batch(&self, callers: usize, waited: &mut dyn Iterator<Item = Duration>);
}

/// A [`BatchObserver`], or none; equal only to itself (so specs holding
/// one still compare).
#[derive(Clone, Default)]
pub struct Observer(pub Option<Arc<dyn BatchObserver>>);

impl PartialEq for Observer {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        }
    }
}

impl Eq for Observer {}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Observer(..)" } else { "Observer(none)" })
    }
}

type Outputs = Vec<(String, Tensor)>;
type Answer = oneshot::Sender<Result<Outputs, NnError>>;

/// What a batch's inputs must agree on: each input's name, element type and
/// dimensions after the first.
#[derive(Debug, PartialEq, Eq)]
struct Shape(Vec<(String, ElementType, Vec<u32>)>);

/// The shape and rows of `inputs`, if they can join a batch: every input
/// has a first dimension, the same one, of at least one row.
fn shape_of(inputs: &[(String, Tensor)]) -> Option<(Shape, u32)> {
    let rows = *inputs.first()?.1.dims.first()?;
    let mut shape = Vec::with_capacity(inputs.len());
    for (name, t) in inputs {
        let (&first, rest) = t.dims.split_first()?;
        if first != rows {
            return None;
        }
        shape.push((name.clone(), t.ty, rest.to_vec()));
    }
    shape.sort_by(|a, b| a.0.cmp(&b.0));
    (rows > 0).then_some((Shape(shape), rows))
}

/// A caller in the queue.
struct Waiting {
    inputs: Vec<(String, Tensor)>,
    shape: Shape,
    rows: u32,
    limit: u64,
    arrived: Instant,
    answer: Answer,
}

/// One batch in this many may take twice the current limit.
const PROBE: u64 = 16;

/// Sizes measured: 1, 2, 3-4, 5-8, ... up to 1024 rows (`Batching`'s most).
const SIZES: usize = 11;

/// The size class of a run of `rows` rows: the power of two at or above it.
fn size_of(rows: u32) -> usize {
    (rows.max(1) - 1).checked_ilog2().map_or(0, |log| log as usize + 1).min(SIZES - 1)
}

/// Runs of the graph in flight, a wake-up when one ends, and what runs cost.
#[derive(Default)]
struct Flight {
    running: AtomicUsize,
    ended: Notify,
    /// Moving averages of nanoseconds per row, by size class (0 until
    /// measured).
    per_row: [AtomicU64; SIZES],
    batches: AtomicU64,
}

impl Flight {
    /// Most rows the next batch may take: the largest size every doubling
    /// up to which made rows at least a tenth cheaper; twice that on a probe.
    fn limit(&self) -> u32 {
        let cost = |size: usize| self.per_row[size].load(Ordering::Relaxed);
        let paid = (1..SIZES).find(|&size| {
            let (below, here) = (cost(size - 1), cost(size));
            below == 0 || here == 0 || here.saturating_mul(10) >= below.saturating_mul(9)
        });
        let best = paid.map_or(SIZES - 1, |size| size - 1);
        let probe = self.batches.fetch_add(1, Ordering::Relaxed).is_multiple_of(PROBE);
        1 << (best + usize::from(probe)).min(SIZES - 1)
    }

    /// Adds a run of `rows` rows that took `took`.
    fn ran(&self, rows: u32, took: Duration) {
        let per_row = (took.as_nanos() / u128::from(rows.max(1))).min(u128::from(u64::MAX / 2)) as u64;
        let average = &self.per_row[size_of(rows)];
        let old = average.load(Ordering::Relaxed);
        average.store(if old == 0 { per_row } else { old - old / 8 + per_row / 8 }, Ordering::Relaxed);
    }
}

/// Counts a run in flight while it lives.
struct Running(Arc<Flight>);

impl Running {
    fn start(flight: &Arc<Flight>) -> Self {
        flight.running.fetch_add(1, Ordering::SeqCst);
        Running(flight.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.ended.notify_one();
    }
}

/// A graph's queue of callers and its dispatcher, started on first use.
pub(super) struct Batcher {
    batching: Batching,
    queue: mpsc::UnboundedSender<Waiting>,
    /// Taken by the dispatcher when it starts.
    arrivals: Mutex<Option<mpsc::UnboundedReceiver<Waiting>>>,
    /// Where the dispatcher runs: the runtime the graph was loaded from
    /// (the guests' executor), not wherever its first caller runs (which
    /// may be an HTTP lane, see `runtime::placement`): merging callers'
    /// tensors is work a lane must not do.
    home: Option<tokio::runtime::Handle>,
}

impl Batcher {
    pub(super) fn new(batching: Batching) -> Self {
        let (queue, arrivals) = mpsc::unbounded_channel();
        let home = tokio::runtime::Handle::try_current().ok();
        Batcher { batching, queue, arrivals: Mutex::new(Some(arrivals)), home }
    }

    /// Runs `inputs` (already checked against the graph) in a batch, or
    /// alone when they cannot join one (no common first dimension, or more
    /// rows than a batch holds).
    pub(super) async fn run(&self, graph: &Arc<Graph>, inputs: Outputs, limit: u64) -> Result<Outputs, NnError> {
        let Some((shape, rows)) = shape_of(&inputs).filter(|(_, rows)| *rows <= self.batching.max_rows) else {
            return graph.clone().run_alone(inputs, limit).await;
        };
        let arrivals = self.arrivals.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(arrivals) = arrivals {
            let dispatcher = Dispatcher {
                graph: Arc::downgrade(graph),
                arrivals,
                batching: self.batching.clone(),
                flight: Arc::default(),
                queue: VecDeque::new(),
            };
            match &self.home {
                Some(home) => drop(home.spawn(dispatcher.serve())),
                None => drop(tokio::spawn(dispatcher.serve())),
            }
        }
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting { inputs, shape, rows, limit, arrived: Instant::now(), answer };
        self.queue.send(waiting).map_err(|_| graph.run_error("the batch queue is closed".into()))?;
        answered.await.map_err(|_| graph.run_error("the batch was dropped".into()))?
    }
}

/// Forms batches and starts their runs; ends when its graph is dropped.
struct Dispatcher {
    graph: Weak<Graph>,
    arrivals: mpsc::UnboundedReceiver<Waiting>,
    batching: Batching,
    flight: Arc<Flight>,
    queue: VecDeque<Waiting>,
}

impl Dispatcher {
    async fn serve(mut self) {
        while let Some(()) = self.next().await {}
    }

    /// Forms and starts one batch; `None` once the graph is gone.
    async fn next(&mut self) -> Option<()> {
        if self.queue.is_empty() {
            let first = self.arrivals.recv().await?;
            self.queue.push_back(first);
        }
        let free = self.graph.upgrade()?.free.clone();
        let permit = loop {
            tokio::select! {
                biased;
                permit = free.clone().acquire_owned() => break permit.ok()?,
                waiting = self.arrivals.recv() => self.queue.push_back(waiting?),
            }
        };
        let limit = self.flight.limit().min(self.batching.max_rows);
        self.hold_for_company(limit).await?;
        self.queue.retain(|w| !w.answer.is_closed());
        if self.queue.is_empty() {
            return Some(());
        }
        let batch = self.take(limit);
        let graph = self.graph.upgrade()?;
        if let Some(observer) = &self.batching.observer.0 {
            let now = Instant::now();
            observer.batch(batch.len(), &mut batch.iter().map(|w| now - w.arrived));
        }
        tokio::spawn(run(graph, batch, permit, Running::start(&self.flight)));
        Some(())
    }

    /// Takes arrivals in while the batch has fewer than `limit` rows,
    /// another run is in flight and the oldest caller has waited less than
    /// `max_delay` (holding a free session for company a batch would not
    /// take only idles the session).
    async fn hold_for_company(&mut self, limit: u32) -> Option<()> {
        while let Ok(waiting) = self.arrivals.try_recv() {
            self.queue.push_back(waiting);
        }
        let deadline = tokio::time::Instant::from_std(self.queue.front()?.arrived + self.batching.max_delay);
        loop {
            let ended = self.flight.ended.notified();
            let running = self.flight.running.load(Ordering::SeqCst) > 0;
            if !running || self.rows_like_first() >= limit || tokio::time::Instant::now() >= deadline {
                return Some(());
            }
            tokio::select! {
                waiting = self.arrivals.recv() => self.queue.push_back(waiting?),
                () = ended => {}
                () = tokio::time::sleep_until(deadline) => return Some(()),
            }
        }
    }

    /// Rows queued with the oldest caller's shape.
    fn rows_like_first(&self) -> u32 {
        let Some(first) = self.queue.front() else { return 0 };
        self.queue.iter().filter(|w| w.shape == first.shape).map(|w| w.rows).fold(0, u32::saturating_add)
    }

    /// The oldest caller and the queued callers of its shape that fit in
    /// `limit` rows.
    fn take(&mut self, limit: u32) -> Vec<Waiting> {
        let first = self.queue.pop_front().expect("a caller is queued");
        let mut rows = first.rows;
        let mut batch = vec![first];
        let mut i = 0;
        while i < self.queue.len() && rows < limit {
            let w = &self.queue[i];
            if w.shape == batch[0].shape && rows + w.rows <= limit {
                rows += w.rows;
                batch.extend(self.queue.remove(i));
            } else {
                i += 1;
            }
        }
        batch
    }
}

/// Runs one batch on the session `permit` holds and answers its callers.
async fn run(graph: Arc<Graph>, mut batch: Vec<Waiting>, permit: OwnedSemaphorePermit, running: Running) {
    let started = Instant::now();
    if batch.len() == 1 {
        let Waiting { inputs, limit, rows, mut answer, .. } = batch.pop().expect("one caller");
        tokio::select! {
            result = graph.execute(inputs, limit, permit) => {
                if result.is_ok() {
                    running.0.ran(rows, started.elapsed());
                }
                drop(answer.send(result));
            }
            () = answer.closed() => {}
        }
        return;
    }
    let rows: Vec<u32> = batch.iter().map(|w| w.rows).collect();
    let merged = merge(&batch);
    let limit = batch.iter().map(|w| w.limit).fold(0, u64::saturating_add);
    let result = {
        let gone = futures_util::future::join_all(batch.iter_mut().map(|w| w.answer.closed()));
        tokio::select! {
            result = graph.clone().execute(merged, limit, permit) => result,
            _ = gone => return,
        }
    };
    if result.is_ok() {
        running.0.ran(rows.iter().sum(), started.elapsed());
    }
    drop(running);
    match result.ok().and_then(|outputs| split(outputs, &rows)) {
        Some(parts) => {
            for (w, part) in batch.into_iter().zip(parts) {
                let _ = w.answer.send(Ok(part));
            }
        }
        // Each caller alone, with its own limit: only a culprit fails.
        None => {
            for Waiting { inputs, limit, mut answer, .. } in batch {
                tokio::select! {
                    result = graph.clone().run_alone(inputs, limit) => drop(answer.send(result)),
                    () = answer.closed() => {}
                }
            }
        }
    }
}

/// The callers' inputs, concatenated along the first dimension in order.
fn merge(batch: &[Waiting]) -> Vec<(String, Tensor)> {
    let rows: u32 = batch.iter().map(|w| w.rows).sum();
    batch[0]
        .inputs
        .iter()
        .map(|(name, t)| {
            let mut dims = t.dims.clone();
            dims[0] = rows;
            let parts: Vec<&[u8]> = batch
                .iter()
                .filter_map(|w| w.inputs.iter().find(|(n, _)| n == name))
                .map(|(_, t)| t.data.as_slice())
                .collect();
            (name.clone(), Tensor { dims, ty: t.ty, data: parts.concat() })
        })
        .collect()
}

/// Cuts each output into the callers' rows; `None` if an output does not
/// keep the batch's first dimension.
fn split(outputs: Outputs, rows: &[u32]) -> Option<Vec<Outputs>> {
    let total: u32 = rows.iter().sum();
    let mut parts: Vec<Outputs> = rows.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for (name, t) in outputs {
        if t.dims.first() != Some(&total) {
            tracing::warn!(output = %name, dims = ?t.dims, rows = total, "an output does not keep the batch dimension");
            return None;
        }
        let row_bytes = t.data.len() / total as usize;
        let mut at = 0;
        for (part, &r) in parts.iter_mut().zip(rows) {
            let mut dims = t.dims.clone();
            dims[0] = r;
            let end = at + r as usize * row_bytes;
            part.push((name.clone(), Tensor { dims, ty: t.ty, data: t.data[at..end].to_vec() }));
            at = end;
        }
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::GraphOptions;
    use std::path::Path;

    /// Remembers how many callers each batch had.
    #[derive(Default)]
    struct Sizes(Mutex<Vec<usize>>);

    impl BatchObserver for Sizes {
        fn batch(&self, callers: usize, _: &mut dyn Iterator<Item = Duration>) {
            self.0.lock().unwrap().push(callers);
        }
    }

    /// The digits forest, one session, batching up to 64 rows.
    fn digits(sizes: &Arc<Sizes>) -> Arc<Graph> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/digits/model/digits.onnx");
        assert!(path.is_file(), "{} is missing: run `make build`", path.display());
        let observer = Observer(Some(sizes.clone()));
        let batching = Batching { max_rows: 64, max_delay: Duration::from_millis(2), observer };
        let options = GraphOptions { batching: Some(batching), ..GraphOptions::default() };
        Arc::new(Graph::load("digits", &path, path.parent().unwrap(), &options).unwrap())
    }

    /// `rows` rows of 64 pixels, different for each `seed`.
    fn pixels(rows: u32, seed: u32) -> Vec<(String, Tensor)> {
        let values: Vec<f32> = (0..rows * 64).map(|i| ((i * 7 + seed * 13) % 17) as f32).collect();
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        vec![("input".to_owned(), Tensor { dims: vec![rows, 64], ty: ElementType::F32, data })]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_get_their_own_rows_and_a_caller_that_leaves_harms_no_one() {
        let sizes = Arc::default();
        let graph = digits(&sizes);
        let alone: Vec<Outputs> = {
            let mut v = Vec::new();
            for seed in 0..6 {
                v.push(graph.clone().run_alone(pixels(seed % 3 + 1, seed), 1 << 30).await.unwrap());
            }
            v
        };
        // The only session busy: callers queue behind it.
        let busy = graph.free.clone().acquire_owned().await.unwrap();
        let callers: Vec<_> =
            (0..6).map(|seed| tokio::spawn(graph.clone().run(pixels(seed % 3 + 1, seed), 1 << 30))).collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        callers[2].abort(); // its request timed out while it waited
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(busy);
        for (seed, caller) in callers.into_iter().enumerate() {
            match caller.await {
                Ok(result) => assert_eq!(result.unwrap(), alone[seed], "caller {seed}"),
                Err(e) => assert!(seed == 2 && e.is_cancelled(), "caller {seed}: {e}"),
            }
        }
        assert_eq!(graph.free.available_permits(), 1, "the session is free again");
        let sizes = sizes.0.lock().unwrap().clone();
        // How they merged follows what was measured (see `Flight::limit`).
        assert_eq!(sizes.iter().sum::<usize>(), 5, "the five callers left ran: {sizes:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_cannot_join_runs_alone() {
        let sizes = Arc::default();
        let graph = digits(&sizes);
        let big = graph.clone().run(pixels(65, 1), 1 << 30).await.unwrap();
        assert_eq!(big[0].1.dims, [65], "more rows than a batch holds: run alone");
        let refused = graph.clone().run(vec![("input".to_owned(), tensor(&[2, 3], 0))], 1 << 30).await;
        assert!(matches!(refused, Err(NnError::InvalidInput { .. })), "checked before it queues");
        assert!(sizes.0.lock().unwrap().is_empty(), "neither queued");
    }

    fn tensor(dims: &[u32], fill: u8) -> Tensor {
        let len = dims.iter().product::<u32>() as usize * 4;
        Tensor { dims: dims.to_vec(), ty: ElementType::F32, data: vec![fill; len] }
    }

    #[test]
    fn only_inputs_sharing_a_first_dimension_batch() {
        let a = vec![("x".to_owned(), tensor(&[2, 3], 0)), ("m".to_owned(), tensor(&[2], 0))];
        let (shape, rows) = shape_of(&a).unwrap();
        assert_eq!(rows, 2);
        let b = vec![("m".to_owned(), tensor(&[5], 0)), ("x".to_owned(), tensor(&[5, 3], 0))];
        assert_eq!(shape_of(&b).unwrap().0, shape, "input order does not matter");
        let c = vec![("x".to_owned(), tensor(&[5, 4], 0)), ("m".to_owned(), tensor(&[5], 0))];
        assert_ne!(shape_of(&c).unwrap().0, shape);
        assert!(shape_of(&[("x".to_owned(), tensor(&[2, 3], 0)), ("m".to_owned(), tensor(&[3], 0))]).is_none());
        assert!(shape_of(&[("x".to_owned(), tensor(&[], 0))]).is_none(), "a scalar has no rows");
        assert!(shape_of(&[("x".to_owned(), tensor(&[0, 3], 0))]).is_none(), "nothing to batch");
    }

    #[test]
    fn runs_are_measured_by_size() {
        assert_eq!([1, 2, 3, 4, 5, 8, 9, 16, 17, 1024, 5000].map(size_of), [0, 1, 2, 2, 3, 3, 4, 4, 5, 10, 10]);
    }

    /// The limits of `n` batches in a row.
    fn limits(flight: &Flight, n: u64) -> Vec<u32> {
        (0..n).map(|_| flight.limit()).collect()
    }

    /// A probe's limit, then the usual one for the rest of `PROBE` batches.
    fn probe_then(probe: u32, usual: u32) -> Vec<u32> {
        std::iter::once(probe).chain(std::iter::repeat_n(usual, PROBE as usize - 1)).collect()
    }

    #[test]
    fn batches_grow_while_larger_ones_make_rows_cheaper() {
        let flight = Flight::default();
        assert_eq!(flight.limit(), 2, "nothing measured: the first batch probes two rows");
        assert!(limits(&flight, PROBE - 1).iter().all(|&l| l == 1), "then one row at a time");
        flight.ran(1, Duration::from_millis(10));
        flight.ran(2, Duration::from_millis(12));
        assert_eq!(limits(&flight, PROBE), probe_then(4, 2), "6 ms a row against 10");
        flight.ran(4, Duration::from_millis(16));
        flight.ran(8, Duration::from_millis(30));
        let not_cheaper = "4 ms a row at 4, 3.75 at 8: not a tenth cheaper";
        assert_eq!(limits(&flight, PROBE), probe_then(8, 4), "{not_cheaper}");
        // A convolutional net: pairs pay, larger batches do not.
        let flight = Flight::default();
        flight.ran(1, Duration::from_millis(10));
        flight.ran(2, Duration::from_millis(16));
        flight.ran(4, Duration::from_millis(40));
        flight.ran(16, Duration::from_millis(160));
        assert_eq!(limits(&flight, PROBE), probe_then(4, 2));
        // Nothing pays: one row at a time, a pair to probe.
        let flight = Flight::default();
        flight.ran(1, Duration::from_millis(10));
        flight.ran(2, Duration::from_millis(20));
        assert_eq!(limits(&flight, PROBE), probe_then(2, 1));
    }

    #[test]
    fn a_batch_takes_the_callers_that_fit_its_limit() {
        let mut dispatcher = Dispatcher {
            graph: Weak::new(),
            arrivals: mpsc::unbounded_channel().1,
            batching: Batching { max_rows: 64, max_delay: Duration::ZERO, observer: Observer::default() },
            flight: Arc::default(),
            queue: VecDeque::new(),
        };
        for (seed, rows) in [3, 1, 2, 1, 1, 1].into_iter().enumerate() {
            let inputs = pixels(rows, seed as u32);
            let (shape, rows) = shape_of(&inputs).unwrap();
            let (answer, _) = oneshot::channel();
            dispatcher.queue.push_back(Waiting { inputs, shape, rows, limit: 0, arrived: Instant::now(), answer });
        }
        let rows = |batch: Vec<Waiting>| batch.iter().map(|w| w.rows).collect::<Vec<_>>();
        assert_eq!(rows(dispatcher.take(2)), [3], "the oldest caller goes even past the limit");
        assert_eq!(rows(dispatcher.take(2)), [1, 1], "callers that fit, in order");
        assert_eq!(rows(dispatcher.take(1)), [2]);
        assert_eq!(rows(dispatcher.take(64)), [1, 1]);
    }

    #[test]
    fn outputs_split_into_each_caller_s_rows() {
        let rows = [1, 3, 2];
        let data: Vec<u8> = (0..6 * 2 * 4).map(|i| i as u8).collect();
        let out = vec![("y".to_owned(), Tensor { dims: vec![6, 2], ty: ElementType::F32, data: data.clone() })];
        let parts = split(out, &rows).unwrap();
        assert_eq!(parts.iter().map(|p| p[0].1.dims.clone()).collect::<Vec<_>>(), [vec![1, 2], vec![3, 2], vec![2, 2]]);
        assert_eq!(parts.iter().flat_map(|p| p[0].1.data.clone()).collect::<Vec<_>>(), data);
        let scalar = vec![("n".to_owned(), Tensor { dims: vec![], ty: ElementType::F32, data: vec![0; 4] })];
        assert!(split(scalar, &rows).is_none(), "an output without the batch dimension cannot be split");
    }
}

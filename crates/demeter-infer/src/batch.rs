//! Batched inference: one session, owned by one thread, fed by every worker.
//!
//! A GPU runs a network on eight photos in little more than the time of one (issue 23, an H200:
//! 455-595 photos/s at batch 1, about 1,070 at 8, 1,210 at 32), and a session per worker would
//! pay its own algorithm search and memory each. So workers decode, resize and encode in
//! parallel on the CPU, hand the encoded photo to the [`Batcher`], and wait for its
//! segmentation; the batcher runs photos of one shape together.
//!
//! The rule, greedy ([`Queue`], pure logic over injected instants, tested on mock time):
//! - photos queue per input shape (a batch has one shape; [`crate::Model::input_size`] keeps
//!   the shapes few);
//! - a shape runs as soon as it has [`BatchOptions::max_batch`] photos, or when its oldest photo
//!   has waited [`BatchOptions::max_wait`]: a lone photo is never held longer than that;
//! - batch sizes are powers of two (and the maximum), the largest that the queue fills: five
//!   waiting run as four, then one. The set of batch sizes is finite, so warm-up covers them all;
//! - among ready shapes, the one whose oldest photo waited longest goes first.
//!
//! A batch that fails fails its own photos only, each with the batch's number
//! ([`InferError::Batch`]), so the engine's circuit breaker counts it as one device error, not
//! one per photo.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{mpsc, Arc, Condvar, Mutex},
    thread,
    time::{Duration, Instant},
};

use crate::{
    analyzer::{Encoder, Segment},
    Analyzer, InferError, Model, ModelOutput, Prepared, Provider,
};

/// An input shape: width, height.
pub type Shape = (u32, u32);

/// How photos are gathered into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// At most this many photos in one run.
    pub max_batch: usize,
    /// A photo waits at most this long for others of its shape.
    pub max_wait: Duration,
}

impl BatchOptions {
    /// The batch sizes a session runs: powers of two below `max_batch`, and `max_batch`.
    pub fn batch_sizes(&self) -> Vec<usize> {
        let max = self.max_batch.max(1);
        let mut sizes: Vec<usize> =
            std::iter::successors(Some(1usize), |n| n.checked_mul(2)).take_while(|&n| n < max).collect();
        sizes.push(max);
        sizes
    }

    /// The largest batch size not above `queued`.
    fn size_for(&self, queued: usize) -> usize {
        self.batch_sizes().into_iter().filter(|&n| n <= queued).max().unwrap_or(1)
    }
}

/// What the batch thread does next.
#[derive(Debug, PartialEq)]
pub enum Next<T> {
    /// Run these photos of `shape` as one batch, in this order.
    Run { shape: Shape, items: Vec<T> },
    /// Nothing is ready: sleep until this instant, or until a photo comes.
    WaitUntil(Instant),
    /// Nothing queued: sleep until a photo comes.
    Idle,
}

/// Photos waiting, per shape, with when each came. No clock inside: every call says `now`.
#[derive(Debug)]
pub struct Queue<T> {
    options: BatchOptions,
    waiting: BTreeMap<Shape, VecDeque<(Instant, T)>>,
    len: usize,
}

impl<T> Queue<T> {
    pub fn new(options: BatchOptions) -> Self {
        Self { options, waiting: BTreeMap::new(), len: 0 }
    }

    pub fn push(&mut self, shape: Shape, item: T, now: Instant) {
        self.waiting.entry(shape).or_default().push_back((now, item));
        self.len += 1;
    }

    /// Photos waiting, all shapes together.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next batch to run at `now`, or how long to wait for one.
    pub fn next(&mut self, now: Instant) -> Next<T> {
        let ready = |q: &VecDeque<(Instant, T)>| {
            q.len() >= self.options.max_batch || q.front().is_some_and(|(came, _)| now >= *came + self.options.max_wait)
        };
        let oldest_ready = self
            .waiting
            .iter()
            .filter(|(_, q)| ready(q))
            .min_by_key(|(_, q)| q.front().map(|(came, _)| *came))
            .map(|(shape, q)| (*shape, q.len()));
        if let Some((shape, queued)) = oldest_ready {
            let n = self.options.size_for(queued.min(self.options.max_batch));
            let q = self.waiting.get_mut(&shape).expect("the shape just found");
            let items: Vec<T> = q.drain(..n).map(|(_, item)| item).collect();
            if q.is_empty() {
                self.waiting.remove(&shape);
            }
            self.len -= items.len();
            return Next::Run { shape, items };
        }
        match self.waiting.values().filter_map(|q| q.front().map(|(came, _)| *came)).min() {
            Some(first) => Next::WaitUntil(first + self.options.max_wait),
            None => Next::Idle,
        }
    }
}

/// What runs a batch: the batcher's session ([`Analyzer`]), or a test double.
pub trait RunBatch: Send + 'static {
    /// `n` photos of `shape`, encoded one after the other in `data`.
    fn run_batch(&mut self, n: usize, shape: Shape, data: Vec<f32>) -> Result<Vec<ModelOutput>, InferError>;
}

impl RunBatch for Analyzer {
    fn run_batch(&mut self, n: usize, shape: Shape, data: Vec<f32>) -> Result<Vec<ModelOutput>, InferError> {
        self.run(n, shape, data)
    }
}

/// Counters for `/health` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchStats {
    /// Runs by batch size (the histogram of batch sizes).
    pub batches_by_size: BTreeMap<usize, u64>,
    /// Runs that failed (their photos failed with them).
    pub failed_batches: u64,
    /// Photos waiting for a batch now.
    pub queued: usize,
}

type Reply = mpsc::SyncSender<Result<ModelOutput, InferError>>;

struct Request {
    data: Vec<f32>,
    reply: Reply,
}

struct State {
    queue: Queue<Request>,
    stopping: bool,
    stats: BatchStats,
    /// Batches taken so far; the latest one's number.
    runs: u64,
}

struct Inner {
    state: Mutex<State>,
    /// Wakes the batch thread: a photo came, or stop.
    wake: Condvar,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The threads that own the sessions and run the batches, one thread per session, all taking
/// from one queue: one session on a GPU; on the CPU one single-threaded session per core, so
/// batches run side by side as a session per worker would (one session with an intra-op thread
/// per core was 14 % slower on 2 cores: its threads meet at a barrier after every operator, and
/// a thread descheduled by a decoding worker holds up the other). Dropping it stops the threads
/// once the photos queued have run.
pub struct Batcher {
    inner: Arc<Inner>,
    model: Arc<Model>,
    provider: Provider,
    options: BatchOptions,
    sessions: usize,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Batcher {
    /// Starts a batch thread around each of `sessions`; `model` and `provider` are what the
    /// clients report (the sessions' own, for [`Analyzer`]s).
    pub fn start<S: RunBatch>(sessions: Vec<S>, model: Arc<Model>, provider: Provider, options: BatchOptions) -> Self {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                queue: Queue::new(options),
                stopping: false,
                stats: BatchStats::default(),
                runs: 0,
            }),
            wake: Condvar::new(),
        });
        let count = sessions.len();
        let threads = sessions
            .into_iter()
            .enumerate()
            .map(|(i, session)| {
                let inner = inner.clone();
                thread::Builder::new()
                    .name(format!("demeter-batch-{}-{i}", model.manifest.name))
                    .spawn(move || serve(&inner, session))
                    .expect("spawning a batch thread")
            })
            .collect();
        Self { inner, model, provider, options, sessions: count, threads }
    }

    /// The sessions serving the queue.
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    /// A handle for one worker.
    pub fn client(&self) -> BatchClient {
        BatchClient {
            inner: self.inner.clone(),
            model: self.model.clone(),
            provider: self.provider,
            encoder: Arc::new(Encoder::new(&self.model)),
        }
    }

    pub fn options(&self) -> BatchOptions {
        self.options
    }

    pub fn stats(&self) -> BatchStats {
        let state = self.inner.lock();
        BatchStats { queued: state.queue.len(), ..state.stats.clone() }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.inner.lock().stopping = true;
        self.inner.wake.notify_all();
        for t in self.threads.drain(..) {
            // A session stuck in a run would hold up the drop forever: let it go.
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// The batch thread: waits for a ready batch ([`Queue::next`]), runs it outside the lock,
/// answers each photo.
fn serve(inner: &Inner, mut session: impl RunBatch) {
    let mut state = inner.lock();
    loop {
        match state.queue.next(Instant::now()) {
            Next::Run { shape, items } => {
                state.runs += 1;
                let number = state.runs;
                drop(state);
                let n = items.len();
                let mut data = Vec::with_capacity(items.iter().map(|r| r.data.len()).sum());
                let mut replies = Vec::with_capacity(n);
                for r in items {
                    data.extend_from_slice(&r.data);
                    replies.push(r.reply);
                }
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.run_batch(n, shape, data)))
                        .unwrap_or_else(|_| Err(InferError::Run("the inference runtime panicked".into())));
                let failed = outcome.is_err();
                match outcome {
                    Ok(segs) if segs.len() == n => {
                        for (reply, seg) in replies.into_iter().zip(segs) {
                            let _ = reply.send(Ok(seg));
                        }
                    }
                    // The shape is every photo's own (a batch has one): their problem, not the device's.
                    Err(InferError::InputShape { model, photo }) => {
                        for reply in replies {
                            let _ =
                                reply.send(Err(InferError::InputShape { model: model.clone(), photo: photo.clone() }));
                        }
                    }
                    Err(InferError::Contract(reason)) => {
                        for reply in replies {
                            let _ = reply.send(Err(InferError::Contract(reason.clone())));
                        }
                    }
                    other => {
                        let reason = match other {
                            Err(e) => e.to_string(),
                            Ok(segs) => format!("{} results for {n} photos", segs.len()),
                        };
                        for reply in replies {
                            let _ =
                                reply.send(Err(InferError::Batch { batch: number, size: n, reason: reason.clone() }));
                        }
                    }
                }
                state = inner.lock();
                *state.stats.batches_by_size.entry(n).or_default() += 1;
                state.stats.failed_batches += u64::from(failed);
            }
            Next::WaitUntil(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                state = inner.wake.wait_timeout(state, wait).unwrap_or_else(|e| e.into_inner()).0;
            }
            Next::Idle if state.stopping => return,
            Next::Idle => state = inner.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// One worker's handle on a [`Batcher`]: encodes the photo on the worker's thread, queues it,
/// waits for its segmentation.
#[derive(Clone)]
pub struct BatchClient {
    inner: Arc<Inner>,
    model: Arc<Model>,
    provider: Provider,
    encoder: Arc<Encoder>,
}

impl Segment for BatchClient {
    fn model(&self) -> &Model {
        &self.model
    }

    fn provider(&self) -> Provider {
        self.provider
    }

    fn segment(&mut self, p: &Prepared) -> Result<ModelOutput, InferError> {
        let data = self.encoder.encode(&p.rgb);
        let shape = self.encoder.tensor_size(&p.rgb);
        let (reply, answer) = mpsc::sync_channel(1);
        {
            let mut state = self.inner.lock();
            if state.stopping {
                return Err(InferError::Run("the batcher has stopped".into()));
            }
            state.queue.push(shape, Request { data, reply }, Instant::now());
        }
        self.inner.wake.notify_one();
        answer.recv().unwrap_or_else(|_| Err(InferError::Run("the batcher stopped before answering".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Shape = (512, 384);
    const B: Shape = (512, 352);

    fn queue(max_batch: usize, wait_ms: u64) -> Queue<u32> {
        Queue::new(BatchOptions { max_batch, max_wait: Duration::from_millis(wait_ms) })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The test double's answer for a photo ([`Picky`] puts it in the brightness).
    fn brightness(output: ModelOutput) -> f32 {
        match output {
            ModelOutput::Mask(seg) => seg.brightness.expect("the double answers a brightness")[0],
            ModelOutput::Boxes(_) => panic!("a mask model"),
        }
    }

    #[test]
    fn a_lone_photo_waits_exactly_max_wait() {
        let t0 = Instant::now();
        let mut q = queue(8, 4);
        assert_eq!(q.next(t0), Next::Idle);
        q.push(A, 1, t0);
        assert_eq!(q.next(t0), Next::WaitUntil(t0 + ms(4)));
        assert_eq!(q.next(t0 + ms(3)), Next::WaitUntil(t0 + ms(4)), "not before its time");
        assert_eq!(q.next(t0 + ms(4)), Next::Run { shape: A, items: vec![1] });
        assert!(q.is_empty());
        assert_eq!(q.next(t0 + ms(5)), Next::Idle);
    }

    #[test]
    fn a_full_batch_runs_at_once_and_never_more_than_max_batch() {
        let t0 = Instant::now();
        let mut q = queue(4, 1000);
        for i in 0..3 {
            q.push(A, i, t0);
        }
        assert_eq!(q.next(t0), Next::WaitUntil(t0 + ms(1000)), "three of four: wait");
        for i in 3..6 {
            q.push(A, i, t0 + ms(1));
        }
        assert_eq!(q.next(t0 + ms(1)), Next::Run { shape: A, items: vec![0, 1, 2, 3] }, "full: no wait, in order");
        // The two left are not a full batch: they wait for the oldest's deadline.
        assert_eq!(q.next(t0 + ms(1)), Next::WaitUntil(t0 + ms(1001)));
        assert_eq!(q.next(t0 + ms(1001)), Next::Run { shape: A, items: vec![4, 5] });
    }

    #[test]
    fn batch_sizes_are_powers_of_two_and_the_maximum() {
        let o = |max_batch| BatchOptions { max_batch, max_wait: ms(1) };
        assert_eq!(o(8).batch_sizes(), vec![1, 2, 4, 8]);
        assert_eq!(o(6).batch_sizes(), vec![1, 2, 4, 6]);
        assert_eq!(o(1).batch_sizes(), vec![1]);
        // Five due: four now, the fifth at once after (it is due as well).
        let t0 = Instant::now();
        let mut q = queue(8, 2);
        for i in 0..5 {
            q.push(A, i, t0);
        }
        assert_eq!(q.next(t0 + ms(2)), Next::Run { shape: A, items: vec![0, 1, 2, 3] });
        assert_eq!(q.next(t0 + ms(2)), Next::Run { shape: A, items: vec![4] });
    }

    #[test]
    fn shapes_are_never_mixed_and_the_longest_waiting_goes_first() {
        let t0 = Instant::now();
        let mut q = queue(4, 10);
        q.push(B, 100, t0);
        q.push(A, 1, t0 + ms(1));
        q.push(B, 101, t0 + ms(2));
        q.push(A, 2, t0 + ms(3));
        assert_eq!(q.len(), 4);
        assert_eq!(q.next(t0 + ms(5)), Next::WaitUntil(t0 + ms(10)), "B's first photo is the first due");
        // Both shapes due: B's photos have waited longer.
        assert_eq!(q.next(t0 + ms(11)), Next::Run { shape: B, items: vec![100, 101] });
        assert_eq!(q.next(t0 + ms(11)), Next::Run { shape: A, items: vec![1, 2] });
        // A full shape does not wait behind a due one... and a due one is not starved by a
        // stream of full ones: it has waited longest.
        q.push(A, 3, t0 + ms(20));
        for i in 0..4 {
            q.push(B, 200 + i, t0 + ms(29));
        }
        assert_eq!(q.next(t0 + ms(29)), Next::Run { shape: B, items: vec![200, 201, 202, 203] });
        for i in 0..4 {
            q.push(B, 300 + i, t0 + ms(30));
        }
        assert_eq!(q.next(t0 + ms(30)), Next::Run { shape: A, items: vec![3] }, "A is due and oldest");
    }

    /// A double that fails every batch holding a photo whose first value is negative, and
    /// answers each photo's first value as its brightness otherwise.
    struct Picky;

    impl RunBatch for Picky {
        fn run_batch(&mut self, n: usize, shape: Shape, data: Vec<f32>) -> Result<Vec<ModelOutput>, InferError> {
            let size = 3 * (shape.0 * shape.1) as usize;
            let firsts: Vec<f32> = data.chunks(size).map(|c| c[0]).collect();
            assert_eq!(firsts.len(), n);
            if firsts.iter().any(|v| *v < 0.0) {
                return Err(InferError::Run("CUDA out of memory".into()));
            }
            Ok(firsts
                .iter()
                .map(|v| {
                    ModelOutput::Mask(crate::Segmentation {
                        mask: vec![],
                        vegetation: None,
                        brightness: Some(vec![*v]),
                        labels: None,
                    })
                })
                .collect())
        }
    }

    fn model() -> Arc<Model> {
        // A byte encodes to itself minus one: red 0 is the only negative value.
        let mut m = Model::builtin();
        m.manifest.input.scale = 1.0;
        m.manifest.input.mean = [1.0; 3];
        m.manifest.input.std = [1.0; 3];
        Arc::new(m)
    }

    fn photo(shape: Shape, red: u8) -> Prepared {
        Prepared {
            rgb: image::RgbImage::from_pixel(shape.0, shape.1, image::Rgb([red, 0, 0])),
            orig_width: 1,
            orig_height: 1,
        }
    }

    #[test]
    fn a_failing_batch_fails_only_its_own_photos_with_one_batch_number() {
        // No photo waits on the clock: a batch runs when it has four.
        let options = BatchOptions { max_batch: 4, max_wait: Duration::from_secs(3600) };
        let batcher = Batcher::start(vec![Picky], model(), Provider::Cpu, options);
        let run = |shape: Shape, reds: Vec<u8>| {
            let handles: Vec<_> = reds
                .into_iter()
                .map(|red| {
                    let mut c = batcher.client();
                    thread::spawn(move || c.segment(&photo(shape, red)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
        };
        // Red 0 encodes to -1: that batch fails, all four of its photos, with one number.
        let failed = run((4, 3), vec![5, 0, 7, 9]);
        let numbers: Vec<u64> = failed
            .iter()
            .map(|r| match r {
                Err(InferError::Batch { batch, size: 4, reason }) => {
                    assert!(reason.contains("CUDA out of memory"), "{reason}");
                    *batch
                }
                other => panic!("expected the batch's error, got {other:?}"),
            })
            .collect();
        assert!(numbers.iter().all(|n| *n == numbers[0]), "{numbers:?}");
        // The next batch of the same shape, and one of another, are unaffected.
        for (shape, reds) in [((4, 3), vec![1, 2, 3, 4]), ((3, 4), vec![10, 20, 30, 40])] {
            let mut got: Vec<f32> = run(shape, reds.clone()).into_iter().map(|r| brightness(r.unwrap())).collect();
            got.sort_by(f32::total_cmp);
            assert_eq!(got, reds.iter().map(|r| f32::from(*r) - 1.0).collect::<Vec<_>>());
        }
        let stats = batcher.stats();
        assert_eq!(stats.batches_by_size, BTreeMap::from([(4, 3)]));
        assert_eq!((stats.failed_batches, stats.queued), (1, 0));
    }

    #[test]
    fn a_lone_photo_is_answered_after_max_wait_and_a_stopped_batcher_says_so() {
        let options = BatchOptions { max_batch: 8, max_wait: Duration::from_millis(5) };
        let batcher = Batcher::start(vec![Picky], model(), Provider::Cpu, options);
        let mut client = batcher.client();
        assert_eq!(brightness(client.segment(&photo((4, 3), 11)).unwrap()), 10.0);
        assert_eq!(batcher.stats().batches_by_size, BTreeMap::from([(1, 1)]));
        assert_eq!(client.provider(), Provider::Cpu);
        drop(batcher);
        let e = client.segment(&photo((4, 3), 11)).unwrap_err().to_string();
        assert!(e.contains("the batcher has stopped"), "{e}");
    }
}

//! The circuit breaker for the inference device: when inference itself keeps failing (a GPU
//! that fell off the bus, a runtime out of device memory) rather than photos, processing
//! pauses instead of failing the whole queue one photo at a time, `/health` says why and turns
//! not-ready, and a single trial photo probes for recovery after a cool-down.
//!
//! Pure logic over injected instants; the engine keeps one behind a mutex and the workers ask
//! it before claiming and tell it every outcome.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// How many failed batches the breaker remembers, to count each once.
const RECENT_BATCHES: usize = 64;

/// Where the breaker stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Processing normally.
    Closed,
    /// Paused after repeated device errors; nothing is claimed before `until`.
    Open { until: Instant },
    /// The cool-down is over: one trial photo runs; its outcome closes or reopens the breaker.
    Probing { trial_running: bool },
}

/// Circuit breaker over consecutive inference-device errors.
#[derive(Debug)]
pub(crate) struct Breaker {
    /// Consecutive device errors (no success in between) that open the breaker.
    threshold: u32,
    /// The first cool-down; doubled on every failed trial, up to `max_cooldown`.
    base_cooldown: Duration,
    max_cooldown: Duration,
    state: State,
    consecutive: u32,
    /// The cool-down of the current opening (grows while trials keep failing).
    cooldown: Duration,
    /// The error that opened it, and since when processing has been paused, for `/health`.
    reason: Option<String>,
    since: Option<DateTime<Utc>>,
    /// How many times it opened since start (a metric).
    pub(crate) trips: u64,
    /// The batches whose failure was counted (the latest [`RECENT_BATCHES`]): their other
    /// photos' errors are the same failure, however they interleave with other outcomes.
    counted_batches: std::collections::VecDeque<u64>,
}

/// What `/health` shows of the breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BreakerStatus {
    /// "closed", "open" or "probing".
    pub state: &'static str,
    pub reason: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// When the next trial may start (while open).
    pub retry_in: Option<Duration>,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            base_cooldown: cooldown,
            max_cooldown: (cooldown * 20).max(Duration::from_secs(600)),
            state: State::Closed,
            consecutive: 0,
            cooldown,
            reason: None,
            since: None,
            trips: 0,
            counted_batches: std::collections::VecDeque::new(),
        }
    }

    /// May a worker claim a photo now? While probing, exactly one caller gets `true`, and it
    /// must report that photo's outcome (or [`Breaker::nothing_claimed`]).
    pub(crate) fn allow_claim(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { until } if now >= until => {
                self.state = State::Probing { trial_running: true };
                true
            }
            State::Open { .. } => false,
            State::Probing { trial_running: false } => {
                self.state = State::Probing { trial_running: true };
                true
            }
            State::Probing { trial_running: true } => false,
        }
    }

    /// The claim `allow_claim` permitted found the queue empty: the trial is still owed.
    pub(crate) fn nothing_claimed(&mut self) {
        if self.state == (State::Probing { trial_running: true }) {
            self.state = State::Probing { trial_running: false };
        }
    }

    /// Inference worked. Returns `true` when this closed an open breaker (recovery).
    pub(crate) fn success(&mut self) -> bool {
        self.consecutive = 0;
        let recovered = self.state != State::Closed;
        if recovered {
            self.state = State::Closed;
            self.cooldown = self.base_cooldown;
            self.reason = None;
            self.since = None;
        }
        recovered
    }

    /// The photo ended without telling anything about the device (it failed to decode, or
    /// the run was stopped): a trial is owed again.
    pub(crate) fn inconclusive(&mut self) {
        self.nothing_claimed();
    }

    /// Inference failed for a reason that is not the photo's. Returns `true` when this opened
    /// the breaker (or reopened it after a failed trial). The photos of one failed batch
    /// (`batch`: its number) are one error: a batch of eight is not eight failures of the device.
    pub(crate) fn device_error(
        &mut self,
        message: &str,
        batch: Option<u64>,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> bool {
        if let Some(b) = batch {
            if self.counted_batches.contains(&b) {
                return false;
            }
            if self.counted_batches.len() == RECENT_BATCHES {
                self.counted_batches.pop_front();
            }
            self.counted_batches.push_back(b);
        }
        self.consecutive += 1;
        let open = match self.state {
            State::Closed => self.consecutive >= self.threshold,
            State::Probing { .. } => {
                self.cooldown = (self.cooldown * 2).min(self.max_cooldown);
                true
            }
            // A photo claimed before the breaker opened, failing late: already open.
            State::Open { .. } => false,
        };
        if open {
            if self.state == State::Closed {
                self.trips += 1;
                self.since = Some(wall);
            }
            self.state = State::Open { until: now + self.cooldown };
            self.reason = Some(message.to_owned());
        }
        open
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    pub(crate) fn cooldown(&self) -> Duration {
        self.cooldown
    }

    pub(crate) fn status(&self, now: Instant) -> BreakerStatus {
        let (state, retry_in) = match self.state {
            State::Closed => ("closed", None),
            State::Open { until } => ("open", Some(until.saturating_duration_since(now))),
            State::Probing { .. } => ("probing", None),
        };
        BreakerStatus { state, reason: self.reason.clone(), since: self.since, retry_in }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap()
    }

    #[test]
    fn opens_after_consecutive_device_errors_only() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        assert!(!b.device_error("cuda error", None, t0, wall()));
        assert!(!b.device_error("cuda error", None, t0, wall()));
        b.success(); // a success in between starts the count again
        assert!(!b.device_error("cuda error", None, t0, wall()));
        assert!(!b.device_error("cuda error", None, t0, wall()));
        assert!(b.allow_claim(t0));
        assert!(b.device_error("CUDA failure 999: unknown error", None, t0, wall()));
        let s = b.status(t0);
        assert_eq!(
            (s.state, s.reason.as_deref(), s.since),
            ("open", Some("CUDA failure 999: unknown error"), Some(wall()))
        );
        assert!(!b.allow_claim(t0 + Duration::from_secs(9)), "nothing is claimed while open");
        assert_eq!(b.trips, 1);
    }

    #[test]
    fn one_trial_after_the_cooldown_closes_or_reopens_it_for_longer() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(10));
        b.device_error("boom", None, t0, wall());
        let t1 = t0 + Duration::from_secs(10);
        assert!(b.allow_claim(t1), "the trial");
        assert!(!b.allow_claim(t1), "only one trial at a time");
        assert_eq!(b.status(t1).state, "probing");
        // The trial fails: open again, for twice as long.
        assert!(b.device_error("boom", None, t1, wall()));
        assert_eq!(b.cooldown(), Duration::from_secs(20));
        assert!(!b.allow_claim(t1 + Duration::from_secs(19)));
        let t2 = t1 + Duration::from_secs(20);
        assert!(b.allow_claim(t2));
        // The queue was empty: the trial is still owed, to the next claimer.
        b.nothing_claimed();
        assert!(b.allow_claim(t2));
        // A bad photo says nothing about the device.
        b.inconclusive();
        assert!(b.allow_claim(t2));
        assert!(b.success(), "recovered");
        let s = b.status(t2);
        assert_eq!((s.state, s.reason, s.since), ("closed", None, None));
        assert_eq!(b.cooldown(), Duration::from_secs(10), "the next opening starts short again");
        assert!(b.allow_claim(t2) && b.allow_claim(t2), "every worker claims again");
        assert!(!b.success(), "nothing to recover from");
    }

    #[test]
    fn cooldown_growth_is_capped() {
        let mut t = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(30));
        b.device_error("x", None, t, wall());
        for _ in 0..20 {
            t += b.cooldown();
            assert!(b.allow_claim(t));
            b.device_error("x", None, t, wall());
        }
        assert_eq!(b.cooldown(), Duration::from_secs(600));
        assert_eq!(b.trips, 1, "one outage, however many failed trials");
    }

    /// A batch of four fails (the batcher's own thread and a failing double): each photo gets
    /// the batch's error, the worker's mapping makes each a device error of that batch, and a
    /// breaker that opens at two errors stays closed; a second failing batch is the second error.
    #[test]
    fn a_failing_batch_fails_only_its_photos_and_is_one_error_for_the_breaker() {
        use demeter_infer::{
            batch::RunBatch, BatchOptions, Batcher, InferError, Model, ModelOutput, Prepared, Segment, Segmentation,
        };

        /// Fails every batch holding a photo whose red is 0; answers the others.
        struct FailsOnBlack;
        impl RunBatch for FailsOnBlack {
            fn run_batch(&mut self, n: usize, _: (u32, u32), data: Vec<f32>) -> Result<Vec<ModelOutput>, InferError> {
                let firsts: Vec<f32> = data.chunks(data.len() / n).map(|c| c[0]).collect();
                if firsts.contains(&0.0) {
                    return Err(InferError::Run("CUDA error: an illegal memory access was encountered".into()));
                }
                Ok(vec![
                    ModelOutput::Mask(Segmentation {
                        mask: vec![true],
                        vegetation: None,
                        brightness: None,
                        labels: None
                    });
                    n
                ])
            }
        }
        let model = std::sync::Arc::new(Model::builtin());
        let options = BatchOptions { max_batch: 4, max_wait: Duration::from_secs(3600) };
        let batcher = Batcher::start(vec![FailsOnBlack], model, demeter_infer::Provider::Cuda, options);
        let batch = |reds: [u8; 4]| -> Vec<Result<ModelOutput, InferError>> {
            let handles: Vec<_> = reds
                .into_iter()
                .map(|red| {
                    let mut c = batcher.client();
                    let p = Prepared {
                        rgb: image::RgbImage::from_pixel(8, 6, image::Rgb([red, 9, 9])),
                        orig_width: 8,
                        orig_height: 6,
                    };
                    std::thread::spawn(move || c.segment(&p))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        };
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(10));
        for outcome in batch([0, 40, 80, 120]) {
            let e = outcome.expect_err("every photo of the failing batch fails");
            match crate::pipeline::device_or_photo(e) {
                crate::pipeline::Interrupt::Device(err, Some(n)) => {
                    assert!(err.message.contains(&format!("batch {n} of 4 photos")), "{}", err.message);
                    assert!(!b.device_error(&err.message, Some(n), t0, wall()), "one batch, one error");
                }
                other => panic!("a device error of the batch, not {other:?}"),
            }
        }
        assert!(b.is_closed());
        assert!(batch([10, 20, 30, 40]).iter().all(Result::is_ok), "the next batch is not affected");
        b.success();
        let mut tell = |outcomes: Vec<Result<ModelOutput, InferError>>| -> Vec<bool> {
            outcomes
                .into_iter()
                .map(|o| match crate::pipeline::device_or_photo(o.unwrap_err()) {
                    crate::pipeline::Interrupt::Device(err, n) => b.device_error(&err.message, n, t0, wall()),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(tell(batch([0, 1, 2, 3])), [false; 4], "after a success the count starts again");
        assert_eq!(tell(batch([0, 5, 5, 5])), [true, false, false, false], "a second failing batch in a row opens it");
    }
}

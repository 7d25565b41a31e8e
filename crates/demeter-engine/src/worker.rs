//! Worker threads: claim a job, run the pipeline, store every milestone and the outcome.
//! Inference runs here, on dedicated OS threads, never on the async runtime.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use demeter_domain::{config::Config, Job, JobId, Stage};
use demeter_infer::{Analyzer, Choice, DecodeLimits, Model, Runtime};
use demeter_store::StoreError;
use tracing::{debug, error, info, warn};

use crate::{
    engine::{EngineEvent, Shared},
    pipeline::{self, Interrupt, PhotoInput},
    EngineError,
};

/// A worker's sessions: the default model first, then every installed one. Sessions are small
/// for the models Demeter ships; a worker keeps one per model so a reprocess never waits for a
/// session to be built.
pub(crate) struct ModelSet {
    analyzers: Vec<Analyzer>,
}

impl ModelSet {
    pub(crate) fn default_model(&mut self) -> &mut Analyzer {
        &mut self.analyzers[0]
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Analyzer> {
        self.analyzers.iter()
    }

    /// The analyzer for a job's model (`None`: the default).
    fn pick(&mut self, name: Option<&str>) -> Option<&mut Analyzer> {
        match name {
            None => Some(&mut self.analyzers[0]),
            Some(n) => self.analyzers.iter_mut().find(|a| a.model().manifest.name == n),
        }
    }
}

/// The default model (the configured folder or the built-in one) and the installed ones,
/// checked for distinct names.
fn models(config: &Config) -> Result<Vec<Arc<Model>>, EngineError> {
    let mut models = vec![Arc::new(match &config.model.dir {
        Some(dir) => Model::load_dir(dir)?,
        None => Model::builtin(),
    })];
    for dir in &config.model.installed {
        let m = Model::load_dir(dir)?;
        if models.iter().any(|o| o.manifest.name == m.manifest.name) {
            return Err(EngineError::Config(demeter_domain::config::ConfigError::Invalid {
                field: "model.installed",
                reason: format!(
                    "{} is named {:?} like another model; names must differ",
                    dir.display(),
                    m.manifest.name
                ),
            }));
        }
        models.push(Arc::new(m));
    }
    Ok(models)
}

/// Builds a worker's sessions; kept by the engine so a replaced worker gets fresh ones.
pub(crate) struct Factory {
    runtime: Runtime,
    models: Vec<Arc<Model>>,
    /// Where each model runs (`auto` decided per model at start: [`demeter_infer::choose`]).
    pub(crate) choices: Vec<Choice>,
    pub(crate) intra: usize,
}

impl Factory {
    pub(crate) fn model_set(&self) -> Result<ModelSet, EngineError> {
        let analyzers = self
            .models
            .iter()
            .zip(&self.choices)
            .map(|(m, c)| Analyzer::on(&self.runtime, m.clone(), self.intra, c.device))
            .collect::<Result<_, _>>()?;
        Ok(ModelSet { analyzers })
    }
}

/// One set of analyzers (ONNX sessions) per worker, for the configured runtime and device.
/// Built before anything else starts, so a bad model or an unusable GPU stops start-up early.
pub(crate) fn analyzers(config: &Config, count: usize) -> Result<(Vec<ModelSet>, Factory), EngineError> {
    let models = models(config)?;
    let runtime = Runtime::init(config.runtime.ort_lib.as_deref(), config.workers.device)?;
    let cores = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let intra = config.intra_threads(cores);
    // Choosing builds each model's first session: the first worker's set.
    let (choices, first): (Vec<Choice>, Vec<Analyzer>) = models
        .iter()
        .map(|m| demeter_infer::choose(&runtime, m, intra))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    for (m, c) in models.iter().zip(&choices) {
        info!(model = %m.manifest.name, device = %c.device, reason = %c.reason, "device chosen");
    }
    let factory = Factory { runtime, models, choices, intra };
    let mut sets = vec![ModelSet { analyzers: first }];
    for _ in 1..count.max(1) {
        sets.push(factory.model_set()?);
    }
    Ok((sets, factory))
}

/// A worker thread and its slot (the handle is `None` only while being replaced).
pub(crate) type Running = (Arc<WorkerSlot>, Option<thread::JoinHandle<()>>);

/// What one worker thread is doing, watched by the engine's watchdog.
#[derive(Default)]
pub(crate) struct WorkerSlot {
    /// The job and stage it is in, and since when; `None` while idle.
    current: Mutex<Option<(JobId, Stage, Instant)>>,
    /// Set by the watchdog when a stage ran past the timeout: the thread is left behind (a
    /// thread cannot be killed) and a new worker takes its place. If the stuck call ever
    /// returns, the thread sees this and ends without touching the store or the counters.
    abandoned: AtomicBool,
}

impl WorkerSlot {
    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// The job to give up on, if the current stage has run longer than `limit`; marks the
    /// slot abandoned in the same step so the worker and the watchdog never both act.
    pub(crate) fn abandon_if_stuck(&self, limit: Duration) -> Option<(JobId, Stage)> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match *current {
            Some((job, stage, since)) if since.elapsed() > limit && !self.is_abandoned() => {
                self.abandoned.store(true, Ordering::SeqCst);
                Some((job, stage))
            }
            _ => None,
        }
    }

    fn set(&self, now: Option<(JobId, Stage, Instant)>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }

    /// Clears the slot after a job; `false` if the watchdog gave up on the worker meanwhile.
    fn finish(&self) -> bool {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *current = None;
        !self.is_abandoned()
    }
}

pub(crate) fn spawn(
    id: usize,
    mut models: ModelSet,
    shared: Arc<Shared>,
    slot: Arc<WorkerSlot>,
) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name(format!("demeter-worker-{id}"))
        .spawn(move || {
            while !shared.stopping() && !slot.is_abandoned() {
                if shared.store.paused().unwrap_or(false) {
                    shared.work.wait(Duration::from_millis(500));
                    continue;
                }
                // The device keeps failing: leave the queue alone until the breaker lets a
                // trial photo through.
                if !shared.breaker().allow_claim(Instant::now()) {
                    shared.work.wait(Duration::from_millis(250));
                    continue;
                }
                match shared.store.claim_next(id, shared.clock.now()) {
                    Ok(None) => {
                        shared.breaker().nothing_claimed();
                        shared.work.wait(Duration::from_millis(500));
                    }
                    Ok(Some(job)) => {
                        shared.busy.fetch_add(1, Ordering::Relaxed);
                        shared.publish(EngineEvent::Job(Box::new(job.clone())));
                        process(&shared, &mut models, job, &slot);
                        if slot.finish() {
                            shared.busy.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        shared.breaker().nothing_claimed();
                        error!(worker = id, error = %e, "cannot claim a job");
                        thread::sleep(Duration::from_secs(1));
                    }
                }
            }
            debug!(worker = id, abandoned = slot.is_abandoned(), "worker stopped");
        })
        .expect("spawning a worker thread")
}

fn process(shared: &Shared, models: &mut ModelSet, job: Job, slot: &WorkerSlot) {
    let id = job.id;
    let thumbnail = shared.thumbnail_path(id);
    let input = PhotoInput {
        path: &job.path,
        rel_path: &job.filename,
        limits: DecodeLimits { max_pixels: shared.config.workers.max_pixels },
        thumbnail: Some(&thumbnail),
        locator: &shared.locator,
        faults: shared.config.runtime.faults.as_ref(),
    };
    let mut current = Stage::Read;
    let on_stage = |stage: Stage| {
        if shared.stopping() || slot.is_abandoned() {
            return false;
        }
        slot.set(Some((id, stage, Instant::now())));
        if stage != current {
            current = stage;
            // Progress is not flushed: a crash reclaims the job whatever its stage.
            match shared.store.update_progress(id, |j| j.advance(stage, shared.clock.now())) {
                Ok(j) => shared.publish(EngineEvent::Job(Box::new(j))),
                Err(e) => warn!(job = %id, error = %e, "cannot store a milestone"),
            }
        }
        true
    };
    // A panic in decoding or inference fails this job only; the worker carries on.
    let outcome = match models.pick(job.model.as_deref()) {
        Some(analyzer) => pipeline::run_guarded(analyzer, &input, on_stage),
        None => Err(Interrupt::Failed(demeter_domain::JobError::permanent(format!(
            "model {:?} is not installed any more",
            job.model.as_deref().unwrap_or_default()
        )))),
    };
    if slot.is_abandoned() {
        warn!(job = %id, "a stage returned after it had timed out; the job was already failed, nothing stored");
        return;
    }
    let now = shared.clock.now();
    // Whether the device was believed to work when this photo ran: only then can a device
    // error be the photo's fault.
    let device_trusted = tell_breaker(shared, &outcome);
    let stored: Result<Job, StoreError> = match outcome {
        Ok(result) => {
            info!(job = %id, file = %job.filename, plants = result.total_detected, "completed");
            if let Err(e) = shared.store.record_stage_timings(&result.timings_ms) {
                warn!(error = %e, "cannot record stage timings; ETAs learn from the next job");
            }
            shared.store.update(id, |j| j.complete(result, now))
        }
        Err(Interrupt::Failed(err)) => {
            info!(job = %id, file = %job.filename, reason = %err, "failed");
            shared.store.update(id, |j| j.fail(err, now))
        }
        Err(Interrupt::Device(err)) => {
            warn!(job = %id, file = %job.filename, reason = %err, "inference device error; the photo goes back to the queue");
            let max = shared.config.workers.max_attempts;
            // Back off a little more each time, so other photos are tried meanwhile.
            let not_before = now + chrono::Duration::seconds(2 * i64::from(job.attempts.min(30)));
            shared.store.update(id, |j| j.retry_later(err, max, device_trusted, not_before, now))
        }
        Err(Interrupt::Stopped) => {
            info!(job = %id, "shutting down: job back in the queue");
            shared.store.update(id, |j| j.release(now))
        }
    };
    if let Ok(j) = &stored {
        let mut m = shared.metrics.lock().unwrap_or_else(|e| e.into_inner());
        match j.result() {
            Some(r) => {
                m.jobs_completed += 1;
                for (stage, ms) in &r.timings_ms {
                    m.stage_seconds.entry(*stage).or_default().observe(*ms as f64 / 1000.0);
                }
            }
            None if j.is_terminal() => m.jobs_failed += 1,
            None => {}
        }
    }
    match stored {
        Ok(j) => shared.publish(EngineEvent::Job(Box::new(j))),
        // The job stays `processing` in the store and is reclaimed at the next start.
        Err(e) => error!(job = %id, error = %e, "cannot store the job's outcome"),
    }
}

/// Tells the circuit breaker what this photo said about the inference device, and logs the
/// moments that matter to whoever reads the log: the pause and the recovery. Returns whether
/// the breaker was closed (the device trusted) when the photo's outcome came in.
fn tell_breaker(shared: &Shared, outcome: &Result<demeter_domain::JobResult, Interrupt>) -> bool {
    let mut breaker = shared.breaker();
    let trusted = breaker.is_closed();
    match outcome {
        Ok(_) => {
            if breaker.success() {
                info!("inference works again; processing resumes");
            }
        }
        Err(Interrupt::Device(err)) => {
            if breaker.device_error(&err.message, Instant::now(), shared.clock.now()) {
                error!(
                    reason = %err,
                    retry_in_secs = breaker.cooldown().as_secs(),
                    "inference keeps failing: processing paused; one photo will test the device after the cool-down"
                );
            }
        }
        Err(Interrupt::Failed(_) | Interrupt::Stopped) => breaker.inconclusive(),
    }
    trusted
}

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

use demeter_domain::config::{Batching, Device};
use demeter_domain::{config::Config, Job, JobId, Stage};
use demeter_infer::{
    Analyzer, BatchClient, BatchOptions, Batcher, Choice, DecodeLimits, Model, Provider, Runtime, Segment,
};
use demeter_store::StoreError;
use tracing::{debug, error, info, warn};

use crate::{
    engine::{EngineEvent, Shared},
    pipeline::{self, Interrupt, PhotoInput},
    EngineError,
};

/// How a worker runs one model: its own session, or its share of the model's batcher.
pub(crate) enum Inference {
    Own(Analyzer),
    Batched(BatchClient),
}

impl Segment for Inference {
    fn model(&self) -> &Model {
        match self {
            Inference::Own(a) => a.model(),
            Inference::Batched(c) => c.model(),
        }
    }

    fn provider(&self) -> Provider {
        match self {
            Inference::Own(a) => a.provider(),
            Inference::Batched(c) => c.provider(),
        }
    }

    fn segment(
        &mut self,
        p: &demeter_infer::Prepared,
    ) -> Result<demeter_infer::ModelOutput, demeter_infer::InferError> {
        match self {
            Inference::Own(a) => a.segment(p),
            Inference::Batched(c) => c.segment(p),
        }
    }
}

/// A worker's sessions: the default model first, then every installed one. Sessions are small
/// for the models Demeter ships; a worker keeps one per model so a reprocess never waits for a
/// session to be built.
pub(crate) struct ModelSet {
    analyzers: Vec<Inference>,
}

impl ModelSet {
    pub(crate) fn default_model(&mut self) -> &mut Inference {
        &mut self.analyzers[0]
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Inference> {
        self.analyzers.iter()
    }

    /// The analyzer for a job's model (`None`: the default). A model installed while running
    /// gets this worker's session the first time one of its jobs comes here.
    fn pick(&mut self, name: Option<&str>, factory: &Factory) -> Result<Option<&mut Inference>, EngineError> {
        let Some(n) = name else { return Ok(Some(&mut self.analyzers[0])) };
        if let Some(i) = self.analyzers.iter().position(|a| a.model().manifest.name == n) {
            return Ok(Some(&mut self.analyzers[i]));
        }
        match factory.session_for(n) {
            None => Ok(None),
            Some(session) => {
                self.analyzers.push(Inference::Own(session?));
                Ok(self.analyzers.last_mut())
            }
        }
    }
}

/// A model installed while running ([`crate::install`]): it runs on a session per worker,
/// built when the worker first gets one of its jobs, on the device chosen at installation.
pub(crate) struct Added {
    pub model: Arc<Model>,
    pub choice: Choice,
    /// Where the session built at installation ran (what `choice.device` resolves to).
    pub provider: Provider,
    /// Workers that have built a session for it.
    pub sessions: std::sync::atomic::AtomicUsize,
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
    /// Each model's batcher, when it runs batched.
    pub(crate) batchers: Vec<Option<Batcher>>,
    /// Milliseconds each model's sessions spent warming up (all workers' together).
    pub(crate) warm_up_ms: Vec<std::sync::atomic::AtomicU64>,
    pub(crate) intra: usize,
    /// Models installed while running, in the order they came.
    pub(crate) added: std::sync::RwLock<Vec<Arc<Added>>>,
}

impl Factory {
    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Every model's name: the default, those installed at start, those installed since.
    pub(crate) fn names(&self) -> Vec<String> {
        let added = self.added.read().unwrap_or_else(|e| e.into_inner());
        self.models
            .iter()
            .map(|m| &m.manifest.name)
            .chain(added.iter().map(|a| &a.model.manifest.name))
            .cloned()
            .collect()
    }

    /// Models installed while running.
    pub(crate) fn added(&self) -> Vec<Arc<Added>> {
        self.added.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes an installed model available to every worker; `false` when its name is taken
    /// (checked under the same lock, so two installs of one name cannot both succeed).
    pub(crate) fn add(&self, added: Added) -> bool {
        let mut list = self.added.write().unwrap_or_else(|e| e.into_inner());
        let name = &added.model.manifest.name;
        if self.models.iter().any(|m| &m.manifest.name == name) || list.iter().any(|a| &a.model.manifest.name == name) {
            return false;
        }
        list.push(Arc::new(added));
        true
    }

    /// A new session for model `name` installed while running; `None` when there is none.
    fn session_for(&self, name: &str) -> Option<Result<Analyzer, EngineError>> {
        let added = self.added().into_iter().find(|a| a.model.manifest.name == name)?;
        let session = Analyzer::on(&self.runtime, added.model.clone(), self.intra, added.choice.device);
        Some(session.map_err(Into::into).inspect(|_| {
            added.sessions.fetch_add(1, Ordering::Relaxed);
        }))
    }

    pub(crate) fn model_set(&self) -> Result<ModelSet, EngineError> {
        let analyzers = self
            .models
            .iter()
            .zip(&self.choices)
            .zip(&self.batchers)
            .zip(&self.warm_up_ms)
            .map(|(((m, c), batcher), spent)| match batcher {
                Some(b) => Ok(Inference::Batched(b.client())),
                None => Analyzer::on(&self.runtime, m.clone(), self.intra, c.device).and_then(|mut a| {
                    spent.fetch_add(warm_up(&mut a, &[1])?, Ordering::Relaxed);
                    Ok(Inference::Own(a))
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(ModelSet { analyzers })
    }
}

/// Runs a GPU session once at each common input shape and each of `batches`, so no photo pays for
/// the algorithm search (cuDNN's HEURISTIC: about 150 ms a new shape on an H200, issue 23) or
/// for the device memory growing. The CPU has nothing to search: skipped. Milliseconds spent.
fn warm_up(session: &mut Analyzer, batches: &[usize]) -> Result<u64, demeter_infer::InferError> {
    if session.provider() == Provider::Cpu {
        return Ok(0);
    }
    let sizes = session.model().common_input_sizes();
    let took = session.warm_up(&sizes, batches)?;
    info!(model = %session.model().manifest.name, shapes = sizes.len(), ?batches, ms = took.as_millis() as u64, "warmed up");
    Ok(took.as_millis() as u64)
}

/// Whether `session`'s model runs batched: it has a free batch axis, and batching is on, or
/// `auto` on a GPU.
fn batched(config: &Config, session: &Analyzer) -> bool {
    session.has_batch_axis()
        && match config.workers.batching {
            Batching::On => true,
            Batching::Off => false,
            Batching::Auto => session.provider() != Provider::Cpu,
        }
}

/// One set of analyzers (ONNX sessions, or handles on a model's batcher) per worker, for the
/// configured runtime and device, and as many workers as [`Config::worker_threads`] says (at
/// most `limit`: `demeter process` needs no more than it has photos). Built and warmed up
/// before anything else starts, so a bad model or an unusable GPU stops start-up early and no
/// photo pays for a warm-up.
pub(crate) fn analyzers(config: &Config, limit: usize) -> Result<(Vec<ModelSet>, Factory), EngineError> {
    let models = models(config)?;
    let runtime = Runtime::init(config.runtime.ort_lib.as_deref(), config.workers.device)?;
    let cores = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let intra = config.intra_threads(cores);
    let options = BatchOptions {
        max_batch: config.workers.max_batch,
        max_wait: Duration::from_millis(config.workers.batch_wait_ms),
    };
    // Choosing builds each model's first session: the first worker's, or the batcher's.
    let mut choices = Vec::new();
    let mut batchers = Vec::new();
    let mut warm_up_ms = Vec::new();
    let mut first = Vec::new();
    for m in &models {
        let (choice, mut session) = demeter_infer::choose(&runtime, m, intra)?;
        info!(model = %m.manifest.name, device = %choice.device, reason = %choice.reason, "device chosen");
        if batched(config, &session) {
            // One session per GPU; on the CPU one single-threaded session per core (see
            // `Batcher`), or cores / intra_threads sessions when that is set.
            let provider = session.provider();
            let mut sessions = if provider == Provider::Cpu {
                let threads = config.workers.intra_threads.unwrap_or(1);
                (0..(cores / threads).max(1))
                    .map(|_| Analyzer::on(&runtime, m.clone(), threads, Device::Cpu))
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                vec![session]
            };
            let mut spent = 0;
            for s in &mut sessions {
                spent += warm_up(s, &options.batch_sizes())?;
            }
            warm_up_ms.push(spent);
            info!(model = %m.manifest.name, sessions = sessions.len(), max_batch = options.max_batch, max_wait_ms = config.workers.batch_wait_ms, "batched: the workers share the sessions");
            let batcher = Batcher::start(sessions, m.clone(), provider, options);
            first.push(Inference::Batched(batcher.client()));
            batchers.push(Some(batcher));
        } else {
            warm_up_ms.push(warm_up(&mut session, &[1])?);
            first.push(Inference::Own(session));
            batchers.push(None);
        }
        choices.push(choice);
    }
    let warm_up_ms = warm_up_ms.into_iter().map(std::sync::atomic::AtomicU64::new).collect();
    let batched_on_gpu = batchers[0].is_some() && first[0].provider() != Provider::Cpu;
    let count = config.worker_threads(batched_on_gpu, cores).min(limit);
    if batched_on_gpu {
        info!(workers = count, "the default model runs batched on the GPU: a worker per core decodes and counts");
    }
    let factory = Factory { runtime, models, choices, batchers, warm_up_ms, intra, added: Default::default() };
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
                Ok(j) => shared.publish_progress(j),
                Err(e) => warn!(job = %id, error = %e, "cannot store a milestone"),
            }
        }
        true
    };
    // A panic in decoding or inference fails this job only; the worker carries on.
    let outcome = match models.pick(job.model.as_deref(), &shared.factory) {
        Ok(Some(analyzer)) => pipeline::run_guarded(analyzer, &input, on_stage),
        Ok(None) => Err(Interrupt::Failed(demeter_domain::JobError::permanent(format!(
            "model {:?} is not installed any more",
            job.model.as_deref().unwrap_or_default()
        )))),
        Err(e) => Err(Interrupt::Failed(demeter_domain::JobError::permanent(format!(
            "cannot start model {:?}: {e}",
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
            // The archive keeps this result's thumbnail after the job's goes with the job: a
            // second name for the same file (thumbnails are replaced by rename, never rewritten
            // in place), or a copy where links are not possible. Before the result is stored,
            // so an archived result never lacks its thumbnail for long.
            let archived = shared.archived_thumbnail_path(result.session_id);
            if std::fs::hard_link(&thumbnail, &archived)
                .or_else(|_| std::fs::copy(&thumbnail, &archived).map(drop))
                .is_err()
            {
                warn!(job = %id, "cannot keep the thumbnail in the results archive; the result is archived without it");
            }
            shared.store.update(id, |j| j.complete(result, now))
        }
        Err(Interrupt::Failed(err)) => {
            info!(job = %id, file = %job.filename, reason = %err, "failed");
            shared.store.update(id, |j| j.fail(err, now))
        }
        Err(Interrupt::Device(err, _)) => {
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
        Ok(j) => {
            // A new photo (not a reprocess of an old one) may show plants lost at its location.
            let drop = if job.previous_result.is_none() { count_drop(shared, &j) } else { None };
            shared.publish(EngineEvent::Job(Box::new(j)));
            if let Some(drop) = drop {
                warn!(location = %drop.location_id, from = drop.from, to = drop.to, "{}", drop.message);
                shared.publish(EngineEvent::CountDropped(Box::new(drop)));
            }
        }
        // The job stays `processing` in the store and is reclaimed at the next start.
        Err(e) => error!(job = %id, error = %e, "cannot store the job's outcome"),
    }
}

/// The drop `job`'s new result shows at its location: its count against the photo taken just
/// before it there, when it is the location's latest and fell by more than
/// `alerts.drop_percent`. Said once: only for the result that first showed it.
fn count_drop(shared: &Shared, job: &Job) -> Option<demeter_domain::notify::CountDrop> {
    let r = job.result()?;
    let location = r.storage_location_id.as_deref()?;
    let (taken_at, _) = demeter_domain::archive::taken_at(job, r);
    let (before, after) = match shared.store.location_neighbours(location, taken_at, r.session_id) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "cannot read the location's series; no drop alert for this photo");
            return None;
        }
    };
    let before = before?;
    if after.is_some() || !shared.config.alerts.is_drop(before.total_detected, r.total_detected) {
        return None;
    }
    Some(demeter_domain::notify::CountDrop::new(
        location.to_owned(),
        r.storage_location_name.clone(),
        before.total_detected,
        r.total_detected,
        r.session_id,
        taken_at,
        job.filename.clone(),
    ))
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
        Err(Interrupt::Device(err, batch)) => {
            if breaker.device_error(&err.message, *batch, Instant::now(), shared.clock.now()) {
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

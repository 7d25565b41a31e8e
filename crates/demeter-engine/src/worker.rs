//! Worker threads: claim a job, run the pipeline, store every milestone and the outcome.
//! Inference runs here, on dedicated OS threads, never on the async runtime.

use std::{
    sync::{atomic::Ordering, Arc},
    thread,
    time::Duration,
};

use demeter_domain::{config::Config, Job, Stage};
use demeter_infer::{Analyzer, DecodeLimits, Model, Runtime};
use demeter_store::StoreError;
use tracing::{debug, error, info, warn};

use crate::{
    engine::{EngineEvent, Shared},
    pipeline::{self, Interrupt, PhotoInput},
    EngineError,
};

/// One analyzer (ONNX session) per worker for the configured model, runtime and device. Built
/// before anything else starts, so a bad model or an unusable GPU stops start-up early.
/// Returns the analyzers and the intra-op thread count each uses.
pub(crate) fn analyzers(config: &Config, count: usize) -> Result<(Vec<Analyzer>, usize), EngineError> {
    let model = Arc::new(match &config.model.dir {
        Some(dir) => Model::load_dir(dir)?,
        None => Model::builtin(),
    });
    let runtime = Runtime::init(config.runtime.ort_lib.as_deref(), config.workers.device)?;
    let cores = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let intra = config.intra_threads(cores);
    let analyzers =
        (0..count.max(1)).map(|_| Analyzer::new(&runtime, model.clone(), intra)).collect::<Result<Vec<_>, _>>()?;
    Ok((analyzers, intra))
}

pub(crate) fn spawn(id: usize, mut analyzer: Analyzer, shared: Arc<Shared>) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name(format!("demeter-worker-{id}"))
        .spawn(move || {
            while !shared.stopping() {
                if shared.store.paused().unwrap_or(false) {
                    shared.work.wait(Duration::from_millis(500));
                    continue;
                }
                match shared.store.claim_next(id, shared.clock.now()) {
                    Ok(Some(job)) => {
                        shared.busy.fetch_add(1, Ordering::Relaxed);
                        shared.publish(EngineEvent::Job(Box::new(job.clone())));
                        process(&shared, &mut analyzer, job);
                        shared.busy.fetch_sub(1, Ordering::Relaxed);
                    }
                    Ok(None) => shared.work.wait(Duration::from_millis(500)),
                    Err(e) => {
                        error!(worker = id, error = %e, "cannot claim a job");
                        thread::sleep(Duration::from_secs(1));
                    }
                }
            }
            debug!(worker = id, "worker stopped");
        })
        .expect("spawning a worker thread")
}

fn process(shared: &Shared, analyzer: &mut Analyzer, job: Job) {
    let id = job.id;
    let thumbnail = shared.thumbnail_path(id);
    let overlay = shared.overlay_path(id);
    let input = PhotoInput {
        path: &job.path,
        rel_path: &job.filename,
        limits: DecodeLimits { max_pixels: shared.config.workers.max_pixels },
        thumbnail: Some(&thumbnail),
        overlay: Some(&overlay),
        locator: &shared.locator,
    };
    let mut current = Stage::Read;
    let on_stage = |stage: Stage| {
        if shared.stopping() {
            return false;
        }
        if stage != current {
            current = stage;
            match shared.store.update(id, |j| j.advance(stage, shared.clock.now())) {
                Ok(j) => shared.publish(EngineEvent::Job(Box::new(j))),
                Err(e) => warn!(job = %id, error = %e, "cannot store a milestone"),
            }
        }
        true
    };
    // A panic in decoding or inference fails this job only; the worker carries on.
    let outcome = pipeline::run_guarded(analyzer, &input, on_stage);
    let now = shared.clock.now();
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

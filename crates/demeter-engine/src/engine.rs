use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Condvar, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use demeter_domain::{
    config::Config,
    health::{Health, InferenceHealth, ModelDevice, ModelHealth, QueueHealth, WatcherHealth, WorkersHealth},
    metrics::EngineMetrics,
    notify::SessionReport,
    Clock, Job, UploadSession,
};
use demeter_infer::{Model, Segment};
use demeter_store::Store;
use demeter_watch::{FolderWatcher, WatchMode, WatchOptions};
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::{breaker::Breaker, completion, ingest, sweeper, watchdog, worker, EngineError};

/// A change that has been durably stored. Sent only after the write is flushed.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    Session(UploadSession),
    Job(Box<Job>),
    /// Every photo of an upload session is finished (again, after a retry): one per session.
    SessionFinished(SessionReport),
    /// Claiming was paused (`true`) or resumed.
    Paused(bool),
    /// A location's count fell by more than `alerts.drop_percent` since its photo before.
    CountDropped(Box<demeter_domain::notify::CountDrop>),
}

/// How to start an engine.
pub struct EngineOptions {
    pub config: Config,
    /// Resolved data directory (the config's may be `None`, meaning the platform default).
    pub data_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
}

/// Wakes idle workers when a job is queued.
#[derive(Default)]
pub(crate) struct WorkSignal {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl WorkSignal {
    pub(crate) fn notify(&self) {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.cv.notify_all();
    }

    pub(crate) fn wait(&self, timeout: Duration) {
        let g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        let seen = *g;
        let _ = self.cv.wait_timeout_while(g, timeout, |g| *g == seen);
    }
}

/// State shared by the engine's threads.
pub(crate) struct Shared {
    pub store: Arc<Store>,
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub events: broadcast::Sender<EngineEvent>,
    /// Every event also goes to the completion tracker, which must see all of them (a
    /// broadcast receiver may lag and lose some) and sleeps until one comes or a gap closes.
    pub completion: mpsc::Sender<completion::Message>,
    pub stop: AtomicBool,
    pub work: WorkSignal,
    pub busy: AtomicUsize,
    /// Counters and stage histograms for `/metrics`.
    pub metrics: Mutex<EngineMetrics>,
    /// Builds sessions for a worker that replaces one stuck past the stage timeout.
    pub factory: worker::Factory,
    /// The worker threads and what each is doing; the watchdog replaces stuck ones here.
    pub workers: Mutex<Vec<worker::Running>>,
    /// Storage-location rules, compiled once (the config was validated at load).
    pub locator: demeter_domain::location::Locator,
    pub thumbnails: PathBuf,
    /// Models installed while running are kept here ([`crate::install`]).
    pub models_dir: PathBuf,
    /// Overlays, drawn when first asked for (see `overlays`).
    pub overlays: crate::overlays::Overlays,
    /// Pauses claiming while the inference device keeps failing (see `breaker`).
    pub breaker: Mutex<Breaker>,
}

impl Shared {
    pub(crate) fn publish(&self, e: EngineEvent) {
        // The tracker reads job changes only. The tracker gone means the engine is stopping; no
        // subscribers is normal (no browser open). A send error only means that.
        if let EngineEvent::Job(job) = &e {
            let _ = self.completion.send(completion::Message::Job(job.clone()));
        }
        let _ = self.events.send(e);
    }

    /// Publishes a running job's next milestone: for the page and the event stream only. The
    /// completion tracker has nothing to learn from it (the claim before it already told it
    /// the job is unfinished), so its thread is not woken six times a photo for nothing.
    pub(crate) fn publish_progress(&self, job: Job) {
        let _ = self.events.send(EngineEvent::Job(Box::new(job)));
    }

    pub(crate) fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn thumbnail_path(&self, job: demeter_domain::JobId) -> PathBuf {
        self.thumbnails.join(format!("{job}.jpg"))
    }

    /// An archived result's thumbnail: kept while its archive record is, after the job's own
    /// thumbnail has been swept with the job.
    pub(crate) fn archived_thumbnail_path(&self, result: uuid::Uuid) -> PathBuf {
        self.thumbnails.join(demeter_domain::archive::THUMBNAILS_DIR).join(format!("{result}.jpg"))
    }
}

/// The engine's side effects of a command: announce on its stream, wake its workers, sweep.
struct EngineEffects(Arc<Shared>);

impl crate::commands::Effects for EngineEffects {
    fn publish(&self, event: EngineEvent) {
        self.0.publish(event);
    }

    fn wake_workers(&self) {
        self.0.work.notify();
    }

    fn sweep(&self) -> (usize, usize) {
        sweeper::sweep(&self.0)
    }

    fn install_model(
        &self,
        upload: demeter_domain::command::ModelUpload,
    ) -> Result<demeter_domain::command::InstalledModel, demeter_domain::command::CommandError> {
        crate::install::install(&self.0, upload)
    }

    fn models(&self) -> Vec<String> {
        self.0.factory.names()
    }
}

/// A running engine: watcher, ingest, workers and sweeper. Stop it with [`Engine::shutdown`].
pub struct Engine {
    shared: Arc<Shared>,
    /// Where the server and the desktop send their changes ([`Engine::commands`]).
    commands: Arc<dyn demeter_domain::command::Commands>,
    /// Taken by the first [`Engine::shutdown`]: a second call has nothing left to stop.
    watcher: Mutex<Option<FolderWatcher>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The default model first, then the installed ones.
    models: Vec<Arc<Model>>,
    provider: &'static str,
    warnings: Vec<String>,
    /// Where each model runs and why.
    devices: Vec<ModelDevice>,
    intra_threads: usize,
    /// Worker threads started ([`demeter_domain::config::Config::worker_threads`]).
    workers: usize,
}

impl Engine {
    /// Starts everything. Fails, without side effects on the photo folder, when the model,
    /// the ONNX Runtime library, the device or the store cannot be used.
    pub fn start(opts: EngineOptions) -> Result<Self, EngineError> {
        let EngineOptions { mut config, data_dir, clock } = opts;
        // Models installed through the API at an earlier run load like `model.installed`.
        config.model.installed.extend(crate::install::installed_dirs(&data_dir));
        if let Some(f) = &config.runtime.faults {
            warn!(faults = ?f, "fault injection is ON ([runtime.faults]): a test double, not for production");
        }
        let (mut sets, factory) = worker::analyzers(&config, usize::MAX)?;
        let worker_count = sets.len();
        let intra_threads = factory.intra;
        let models: Vec<Arc<Model>> = sets[0].all().map(|a| Arc::new(a.model().clone())).collect();
        let first = sets[0].default_model();
        let provider = first.provider().as_str();
        // `auto` without a usable GPU says why once, however many models.
        let mut warnings: Vec<String> = Vec::new();
        for w in factory.choices.iter().filter_map(|c| c.warning.clone()) {
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
        let devices: Vec<ModelDevice> = sets[0]
            .all()
            .zip(&factory.choices)
            .zip(&factory.batchers)
            .map(|((a, c), batcher)| ModelDevice {
                model: a.model().manifest.name.clone(),
                execution_provider: a.provider().as_str().to_owned(),
                device: a.provider().device().to_owned(),
                reason: c.reason.clone(),
                sessions: batcher.as_ref().map_or(sets.len(), |b| b.sessions()),
                warm_up_ms: 0,
                batching: None,
            })
            .collect();

        std::fs::create_dir_all(&data_dir).map_err(|source| EngineError::DataDir { path: data_dir.clone(), source })?;
        let (thumbnails, overlays) = (data_dir.join("thumbnails"), data_dir.join("overlays"));
        for dir in [&thumbnails, &thumbnails.join(demeter_domain::archive::THUMBNAILS_DIR), &overlays] {
            std::fs::create_dir_all(dir).map_err(|source| EngineError::DataDir { path: dir.clone(), source })?;
        }
        let (store, moved_aside) = Store::open_or_rebuild(&data_dir, config.store.cache_capacity_mb << 20)?;
        if let Some(aside) = moved_aside {
            warnings.push(format!(
                "the job database was corrupt: moved to {} and rebuilt from the photo folder (photos are processed again)",
                aside.display()
            ));
        }
        let store = Arc::new(store);

        let reclaimed = store.reclaim_orphans(config.workers.max_attempts, clock.now())?;
        if !reclaimed.is_empty() {
            info!(count = reclaimed.len(), "reclaimed jobs left in processing by a previous run");
        }

        let (events, _) = broadcast::channel(1024);
        let (completion_tx, completion_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            store,
            config: config.clone(),
            clock,
            events,
            completion: completion_tx,
            stop: AtomicBool::new(false),
            work: WorkSignal::default(),
            busy: AtomicUsize::new(0),
            metrics: Mutex::new(EngineMetrics::default()),
            factory,
            workers: Mutex::new(Vec::new()),
            locator: demeter_domain::location::Locator::new(&config.locations).map_err(EngineError::Config)?,
            overlays: crate::overlays::Overlays::new(
                overlays,
                thumbnails.clone(),
                demeter_infer::DecodeLimits { max_pixels: config.workers.max_pixels },
            ),
            thumbnails,
            models_dir: data_dir.join(crate::install::MODELS_DIR),
            breaker: Mutex::new(Breaker::new(
                config.workers.breaker_threshold,
                Duration::from_secs(config.workers.breaker_cooldown_secs),
            )),
        });
        // The tracker first, so it sees the reclaimed jobs' events too.
        let completion = completion::spawn(shared.clone(), completion_rx);
        for job in reclaimed {
            shared.publish(EngineEvent::Job(Box::new(job)));
        }

        let mut threads = Vec::new();
        {
            let mut workers = shared.workers.lock().unwrap_or_else(|e| e.into_inner());
            for (id, set) in sets.into_iter().enumerate() {
                let slot = Arc::new(worker::WorkerSlot::default());
                workers.push((slot.clone(), Some(worker::spawn(id, set, shared.clone(), slot))));
            }
        }
        if config.workers.stage_timeout_secs > 0 {
            threads.push(watchdog::spawn(shared.clone()));
        }
        threads.push(sweeper::spawn(shared.clone()));
        threads.push(completion);

        let (tx, rx) = mpsc::channel();
        let watch = WatchOptions {
            rescan_interval: Duration::from_secs(config.watch.rescan_interval_secs),
            stability_window: Duration::from_millis(config.watch.stability_window_ms),
            mode: match config.watch.mode {
                demeter_domain::config::WatchMode::Auto => WatchMode::Auto,
                demeter_domain::config::WatchMode::Events => WatchMode::Events,
                demeter_domain::config::WatchMode::Polling => WatchMode::Polling,
            },
            ..WatchOptions::new(&config.watch.dir)
        };
        let watcher = FolderWatcher::start(watch, tx)?;
        threads.push(ingest::spawn(rx, shared.clone()));

        info!(workers = worker_count, provider, model = %models[0].manifest.name, installed = models.len() - 1, "engine started");
        let commands = Arc::new(crate::commands::Executor::new(
            shared.store.clone(),
            shared.clock.clone(),
            EngineEffects(shared.clone()),
        ));
        Ok(Self {
            shared,
            commands,
            watcher: Mutex::new(Some(watcher)),
            threads: Mutex::new(threads),
            models,
            provider,
            warnings,
            devices,
            intra_threads,
            workers: worker_count,
        })
    }

    /// Worker threads running (`workers.count`, or `workers.gpu_count` when the default model
    /// runs batched on a GPU).
    pub fn worker_count(&self) -> usize {
        self.workers
    }

    /// The command port: the only way to change job and session state from outside.
    pub fn commands(&self) -> Arc<dyn demeter_domain::command::Commands> {
        self.commands.clone()
    }

    pub fn store(&self) -> Arc<Store> {
        self.shared.store.clone()
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.shared.clock.clone()
    }

    /// Durable changes as they happen (for live pages and notifications).
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.shared.events.subscribe()
    }

    /// The folder holding `<job_id>.jpg` thumbnails.
    pub fn thumbnails_dir(&self) -> PathBuf {
        self.shared.thumbnails.clone()
    }

    /// The overlay of a job's current result (the photo with its plants boxed and numbered) as
    /// a JPEG, with that result's id; drawn now if it was not before. `None` when the job is
    /// unknown or has no result, or neither its photo nor its thumbnail can be read. Blocks
    /// (tens of milliseconds when it draws): call it off the async runtime.
    pub fn overlay(&self, job: demeter_domain::JobId) -> Result<Option<(uuid::Uuid, Vec<u8>)>, crate::OverlayError> {
        self.shared.overlays.get(&self.shared.store, job)
    }

    /// The snapshot served on `/health`.
    pub fn health(&self) -> Health {
        let inference = self.shared.breaker().status(std::time::Instant::now());
        let watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|w| w.status()).map(|s| {
            WatcherHealth {
                dir: s.dir.display().to_string(),
                mode: s.mode.to_owned(),
                mode_reason: s.mode_reason,
                last_scan_at: s.last_scan_at,
                files_seen: s.files_reported,
                last_error: s.last_error,
            }
        });
        Health {
            ready: !self.shared.stopping() && inference.state == "closed",
            version: env!("CARGO_PKG_VERSION").to_owned(),
            execution_provider: self.provider.to_owned(),
            compiled_providers: demeter_infer::COMPILED_PROVIDERS.iter().map(|p| (*p).to_owned()).collect(),
            warnings: self.warnings.clone(),
            devices: self.devices(),
            model: model_health(&self.models[0]),
            installed_models: self
                .models
                .iter()
                .map(|m| model_health(m))
                .chain(self.shared.factory.added().iter().map(|a| model_health(&a.model)))
                .collect(),
            workers: WorkersHealth {
                count: self.workers,
                busy: self.shared.busy.load(Ordering::Relaxed),
                intra_threads: self.intra_threads,
            },
            queue: QueueHealth {
                pending: self.shared.store.pending_count() as u64,
                processing: self.shared.store.processing_count() as u64,
            },
            watcher: watcher.unwrap_or_default(),
            inference: InferenceHealth {
                state: inference.state.to_owned(),
                reason: inference.reason,
                paused_since: inference.since,
                retry_in_secs: inference.retry_in.map(|d| d.as_secs_f64().ceil() as u64),
            },
        }
    }

    /// Where each model runs, with its warm-up and its batcher's counters as of now.
    fn devices(&self) -> Vec<ModelDevice> {
        let factory = &self.shared.factory;
        let mut devices = self.devices.clone();
        for ((d, batcher), spent) in devices.iter_mut().zip(&factory.batchers).zip(&factory.warm_up_ms) {
            d.warm_up_ms = spent.load(Ordering::Relaxed);
            d.batching = batcher.as_ref().map(|b| {
                let (options, stats) = (b.options(), b.stats());
                demeter_domain::health::BatchHealth {
                    max_batch: options.max_batch,
                    max_wait_ms: options.max_wait.as_millis() as u64,
                    batches: options
                        .batch_sizes()
                        .into_iter()
                        .map(|size| demeter_domain::health::BatchCount {
                            size,
                            runs: stats.batches_by_size.get(&size).copied().unwrap_or(0),
                        })
                        .collect(),
                    failed_batches: stats.failed_batches,
                    queued: stats.queued,
                }
            });
        }
        devices.extend(factory.added().iter().map(|a| ModelDevice {
            model: a.model.manifest.name.clone(),
            execution_provider: a.provider.as_str().to_owned(),
            device: a.provider.device().to_owned(),
            reason: a.choice.reason.clone(),
            sessions: a.sessions.load(Ordering::Relaxed),
            warm_up_ms: 0,
            batching: None,
        }));
        devices
    }

    /// The default model.
    pub fn model(&self) -> &Model {
        &self.models[0]
    }

    /// Everything counted since start, for `/metrics`.
    pub fn metrics(&self) -> EngineMetrics {
        let mut m = self.shared.metrics.lock().unwrap_or_else(|e| e.into_inner()).clone();
        m.jobs_pending = self.shared.store.pending_count() as u64;
        m.jobs_processing = self.shared.store.processing_count() as u64;
        m.workers = self.workers;
        m.workers_busy = self.shared.busy.load(Ordering::Relaxed);
        {
            let breaker = self.shared.breaker();
            m.inference_paused = !breaker.is_closed();
            m.inference_pauses = breaker.trips;
        }
        m.execution_provider = self.provider.to_owned();
        m.model_devices = self.devices();
        if let Some(w) = self.watcher.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|w| w.status()) {
            m.watcher_events = w.events;
            m.watcher_rescans = w.rescans;
            m.watcher_files_ready = w.files_reported;
        }
        m
    }

    /// Stops watching, lets workers put in-flight jobs back in the queue (without using an
    /// attempt) at their next stage boundary, and waits for every thread. A signal, not a
    /// drop: it works whoever else still holds the engine (the server's state, the tray), and a
    /// second call returns at once.
    pub fn shutdown(&self) {
        let Some(watcher) = self.watcher.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        info!("engine stopping");
        watcher.stop();
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.work.notify();
        let _ = self.shared.completion.send(completion::Message::Wake);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            if t.join().is_err() {
                warn!("an engine thread panicked while stopping");
            }
        }
        // Workers stuck past the stage timeout were replaced; they are not waited for.
        let workers = std::mem::take(&mut *self.shared.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for (slot, handle) in workers {
            match handle {
                Some(h) if !slot.is_abandoned() => {
                    if h.join().is_err() {
                        warn!("a worker panicked while stopping");
                    }
                }
                _ => warn!("a worker stuck in a stage is left behind"),
            }
        }
        info!("engine stopped");
    }
}

impl Drop for Engine {
    /// An engine dropped without [`Engine::shutdown`] still releases its jobs and threads.
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn model_health(m: &Model) -> ModelHealth {
    ModelHealth { name: m.manifest.name.clone(), version: m.manifest.version.clone(), sha256: m.sha256.clone() }
}

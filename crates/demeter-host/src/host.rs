//! [`Host`]: one running appliance — engine, HTTP server, event forwarding — on its own Tokio
//! runtime, started and stopped as a unit by either shell.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use demeter_auth::TokenStore;
use demeter_domain::{config::Config, SystemClock};
use demeter_engine::{Engine, EngineEvent, EngineOptions};
use demeter_server::{app, auth::Auth, events, events::EventHub, AppState};
use tokio::sync::{broadcast, oneshot};
use tracing::{info, warn};

use crate::{
    network::{allowed_hosts, lan_url, local_url},
    webhook, HostError,
};

/// Events kept for `Last-Event-ID` resume (a few minutes of a busy batch).
const EVENT_HISTORY: usize = 4096;
/// Events one SSE client may fall behind before it is told to resync.
const CLIENT_BUFFER: usize = 512;

/// How to start a [`Host`].
pub struct HostOptions {
    /// The layered, validated configuration.
    pub config: Config,
    /// Resolved data directory (see [`crate::settings::data_dir`]).
    pub data_dir: PathBuf,
    /// `--admin-token-file`: the admin token to accept, instead of `DEMETER_ADMIN_TOKEN` or a
    /// generated one.
    pub admin_token_file: Option<PathBuf>,
}

/// A running appliance. Dropping it without [`Host::stop`] still stops the server (the runtime
/// goes away) but leaves jobs in flight to be reclaimed at the next start.
pub struct Host {
    /// Owns the HTTP server, SSE publisher and webhook forwarder; engine threads are separate.
    runtime: tokio::runtime::Runtime,
    engine: Arc<Engine>,
    state: AppState,
    /// Tells the server to stop accepting and finish in-flight requests.
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    listen: SocketAddr,
    watch_dir: PathBuf,
    data_dir: PathBuf,
    /// A freshly made admin token, present only on the first start; shown once, never stored.
    new_admin_token: Option<String>,
    token_file: PathBuf,
}

impl Host {
    /// Binds the port first (a taken port stops start-up before any photo is touched), then
    /// bootstraps tokens, starts the engine and serves.
    pub fn start(opts: HostOptions) -> Result<Self, HostError> {
        let HostOptions { config, data_dir, admin_token_file } = opts;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("demeter-http")
            .enable_all()
            .build()
            .map_err(HostError::Runtime)?;
        let listen = config.server.listen;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .map_err(|source| HostError::Bind { addr: listen, source })?;
        // Port 0 (tests) becomes the real port here.
        let listen = listener.local_addr().map_err(|source| HostError::Bind { addr: listen, source })?;

        std::fs::create_dir_all(&data_dir).map_err(|source| HostError::DataDir { path: data_dir.clone(), source })?;
        let tokens = TokenStore::open(&data_dir)?;
        let configured = match &admin_token_file {
            Some(f) => Some(
                std::fs::read_to_string(f).map_err(|source| HostError::AdminTokenFile { path: f.clone(), source })?,
            ),
            None => std::env::var("DEMETER_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()),
        };
        let new_admin_token = tokens.ensure_admin(configured.as_deref().map(str::trim), chrono::Utc::now())?;
        let token_file = tokens.path().to_owned();
        let auth =
            Auth::new(Arc::new(tokens), allowed_hosts(&config)).with_failure_burst(config.server.failed_auth_burst);

        let engine = Arc::new(Engine::start(EngineOptions {
            config: config.clone(),
            data_dir: data_dir.clone(),
            clock: Arc::new(SystemClock),
        })?);
        let state = AppState {
            store: engine.store(),
            clock: engine.clock(),
            health: {
                let engine = engine.clone();
                Arc::new(move || engine.health())
            },
            metrics: {
                let engine = engine.clone();
                Arc::new(move || engine.metrics())
            },
            commands: engine.commands(),
            // The workers the engine started (more than `count` on a GPU fed in batches): the
            // ETAs of pending photos divide by them.
            config: Arc::new({
                let mut running = config.clone();
                running.workers.count = engine.worker_count();
                running
            }),
            thumbnails: engine.thumbnails_dir(),
            overlay: {
                let engine = engine.clone();
                Arc::new(move |job| engine.overlay(job).map_err(Into::into))
            },
            hub: Arc::new(EventHub::new(EVENT_HISTORY, CLIENT_BUFFER)),
            polls: Default::default(),
            auth: Arc::new(auth),
            lan_url: lan_url(listen),
        };
        runtime.spawn(forward_events(engine.subscribe(), state.clone()));
        if let Some(url) = &config.notify.webhook {
            runtime.spawn(webhook::forward(engine.subscribe(), webhook::Webhook::start(url.clone())));
        }
        let (stop_server, stopped) = oneshot::channel::<()>();
        let header_timeout = Duration::from_secs(config.server.header_timeout_secs);
        let server = runtime.spawn(demeter_server::serve(listener, app(state.clone()), header_timeout, async {
            let _ = stopped.await;
        }));
        let watch_dir = config.watch.dir.canonicalize().unwrap_or(config.watch.dir.clone());
        info!(%listen, watch = %watch_dir.display(), data = %data_dir.display(), "demeter is running");
        Ok(Self {
            runtime,
            engine,
            state,
            stop_server: Some(stop_server),
            server: Some(server),
            listen,
            watch_dir,
            data_dir,
            new_admin_token,
            token_file,
        })
    }

    /// The address the server listens on (the real port when 0 was asked for).
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The status page as this machine reaches it, e.g. `http://127.0.0.1:7878/`.
    pub fn local_url(&self) -> String {
        local_url(self.listen)
    }

    /// The status page as phones on the LAN reach it; `None` with LAN access off.
    pub fn lan_url(&self) -> Option<&str> {
        self.state.lan_url.as_deref()
    }

    pub fn watch_dir(&self) -> &Path {
        &self.watch_dir
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The admin token made on this start, if this is the first start. Show it once.
    pub fn take_new_admin_token(&mut self) -> Option<String> {
        self.new_admin_token.take()
    }

    /// Where tokens are kept (as hashes).
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Tokens, roles, sign-in sessions and pairing codes.
    pub fn auth(&self) -> &Arc<Auth> {
        &self.state.auth
    }

    /// A handle to spawn tasks (notification forwarders, tray updaters) on the host's runtime.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.handle().clone()
    }

    /// Durable engine changes, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.engine.subscribe()
    }

    /// Serves until `signal` completes (or the server fails), then stops gracefully.
    pub fn run_until(mut self, signal: impl std::future::Future<Output = ()>) -> Result<(), HostError> {
        let server = self.server.as_mut().expect("a started host has a server");
        let failed = self.runtime.block_on(async {
            tokio::select! {
                () = signal => None,
                r = server => Some(r),
            }
        });
        if let Some(result) = failed {
            self.server = None;
            self.stop_engine();
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(HostError::Serve(e)),
                Err(join) => Err(HostError::Serve(std::io::Error::other(join))),
            };
        }
        self.stop()
    }

    /// Stops accepting requests, lets in-flight requests finish, then stops the engine: jobs in
    /// flight go back to the queue without using an attempt.
    pub fn stop(mut self) -> Result<(), HostError> {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        let served = match self.server.take() {
            Some(server) => {
                match self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await }) {
                    Ok(Ok(r)) => r.map_err(HostError::Serve),
                    Ok(Err(join)) => Err(HostError::Serve(std::io::Error::other(join))),
                    Err(_) => {
                        warn!("HTTP connections still open after 10 s; closing them");
                        Ok(())
                    }
                }
            }
            None => Ok(()),
        };
        info!("HTTP server stopped");
        self.stop_engine();
        served
    }

    fn stop_engine(self) {
        let Self { runtime, engine, state, .. } = self;
        // The server first: no request may send a command while the engine stops.
        drop(state);
        runtime.shutdown_timeout(Duration::from_secs(2));
        // Whoever still holds the engine, it stops now: its workers put their jobs back.
        engine.shutdown();
    }
}

/// Turns the engine's durable changes into SSE events (with ETA and session summary).
async fn forward_events(mut rx: broadcast::Receiver<EngineEvent>, state: AppState) {
    use broadcast::error::{RecvError, TryRecvError};
    /// Events published per store read; a flood of queued photos is announced in batches.
    const BATCH: usize = 512;
    loop {
        let mut batch = match rx.recv().await {
            Ok(e) => vec![e],
            Err(RecvError::Lagged(n)) => {
                warn!(missed = n, "event publisher fell behind; clients told to resync");
                events::publish_resync(&state, "the server skipped events; reload");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let mut lagged = false;
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(TryRecvError::Lagged(n)) => {
                    warn!(missed = n, "event publisher fell behind; clients told to resync");
                    lagged = true;
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        // Nobody listening and nothing but job events: nothing to build (the usual case on a
        // machine with no page open), so no blocking thread is woken for it.
        let only_jobs = batch.iter().all(|e| !matches!(e, EngineEvent::Session(_)));
        if only_jobs && !lagged && state.hub.skip_if_unheard() {
            continue;
        }
        let state = state.clone();
        let published = tokio::task::spawn_blocking(move || {
            // Consecutive job events go out together; sessions in between keep their place.
            let mut jobs = Vec::new();
            for event in batch {
                match event {
                    EngineEvent::Job(job) => jobs.push(*job),
                    EngineEvent::Session(session) => {
                        events::publish_jobs(&state, &std::mem::take(&mut jobs))?;
                        events::publish_session(&state, &session);
                    }
                    EngineEvent::SessionFinished(_) | EngineEvent::Paused(_) | EngineEvent::CountDropped(_) => {}
                }
            }
            events::publish_jobs(&state, &jobs)?;
            if lagged {
                events::publish_resync(&state, "the server skipped events; reload");
            }
            Ok::<_, demeter_server::error::AppError>(())
        })
        .await;
        if let Ok(Err(e)) = published {
            warn!(error = ?e, "cannot publish an event");
        }
    }
}

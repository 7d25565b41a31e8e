//! The app's one engine: started from the layered configuration (or after the first-run
//! settings), restarted when settings change, stopped gracefully on Quit. Everything that
//! waits (starting, stopping) runs on its own thread, never on the UI thread.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
};

use demeter_auth::{Identity, Role};
use demeter_domain::{config::Config, SessionId};
use demeter_host::{settings, Host, HostOptions};
use tauri::{AppHandle, Manager, Runtime, WebviewUrl, WebviewWindowBuilder};
use tracing::{error, info, warn};

use crate::{notifications, progress, tray};

/// Where the status window should land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Sessions,
    Session(SessionId),
    /// The "Pair a phone" view with the LAN link and its QR code.
    PairPhone,
}

impl Target {
    fn hash(self) -> String {
        match self {
            Target::Sessions => String::new(),
            Target::Session(id) => format!("/session/{id}"),
            Target::PairPhone => "/pair-phone".to_owned(),
        }
    }
}

/// What the engine is doing, for the tray and the settings window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No photo folder chosen yet: the settings window asks for one.
    FirstRun,
    Starting,
    Running,
    /// Start-up failed; the reason is shown until settings change.
    Failed(String),
    Stopping,
    /// Stopped (the app is quitting).
    Stopped,
}

/// How the app was started.
#[derive(Debug, Clone)]
pub struct Startup {
    /// `--config`, if given (else `DEMETER_CONFIG`, else the XDG default). It may not exist
    /// yet: the settings window creates it.
    pub config_flag: Option<PathBuf>,
    /// Start in the tray without opening the window (autostart).
    pub minimized: bool,
}

pub struct Controller<R: Runtime> {
    app: AppHandle<R>,
    startup: Startup,
    /// Where the settings window saves.
    pub config_path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    phase: Phase,
    host: Option<Host>,
    /// The configuration the running (or last attempted) engine uses.
    config: Option<Config>,
    /// The window is opened on the first successful start only, unless minimized.
    opened_once: bool,
}

/// The window's label; the settings window is [`SETTINGS`].
pub const MAIN: &str = "main";
pub const SETTINGS: &str = "settings";

impl<R: Runtime> Controller<R> {
    pub fn new(app: AppHandle<R>, startup: Startup) -> Arc<Self> {
        let config_path = settings::config_path(startup.config_flag.as_deref())
            .map(|(p, _)| p)
            .unwrap_or_else(|| PathBuf::from("demeter.toml"));
        Arc::new(Self {
            app,
            startup,
            config_path,
            inner: Mutex::new(Inner { phase: Phase::Starting, host: None, config: None, opened_once: false }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase.clone()
    }

    /// The configuration as the engine sees it now (or would, on the next start): the config
    /// file (if it exists yet) < `DEMETER_*` environment.
    pub fn config(&self) -> Result<Config, demeter_host::HostError> {
        match self.lock().config.clone() {
            Some(c) => Ok(c),
            None => settings::load_optional(&self.config_path, |_| {}),
        }
    }

    /// A first run is one without a config file and without `DEMETER_WATCH`: nobody has chosen
    /// a photo folder yet.
    pub fn first_run(&self) -> bool {
        !self.config_path.exists() && std::env::var_os("DEMETER_WATCH").is_none_or(|v| v.is_empty())
    }

    /// Starts the engine in the background, or asks for the photo folder on a first run.
    pub fn start(self: &Arc<Self>) {
        if self.first_run() {
            info!(config = %self.config_path.display(), "first run: asking for the photo folder");
            self.set_phase(Phase::FirstRun);
            self.open_settings();
            return;
        }
        self.set_phase(Phase::Starting);
        let this = self.clone();
        std::thread::Builder::new()
            .name("demeter-start".into())
            .spawn(move || this.start_now())
            .expect("spawning the start-up thread");
    }

    fn start_now(self: &Arc<Self>) {
        let started = settings::load_optional(&self.config_path, |_| {}).and_then(|config| {
            let data_dir = settings::data_dir(&config);
            let host = Host::start(HostOptions { config: config.clone(), data_dir, admin_token_file: None })?;
            Ok((config, host))
        });
        match started {
            Ok((config, mut host)) => {
                if host.take_new_admin_token().is_some() {
                    info!(tokens = %host.token_file().display(), "admin token created; this app signs itself in, make tokens for others with `demeter token create`");
                }
                info!(url = %host.local_url(), lan = ?host.lan_url(), "engine started");
                let handle = host.handle();
                let store = host.engine().store();
                let health: Health = {
                    let engine = host.engine().clone();
                    Arc::new(move || engine.health())
                };
                let workers = host.engine().worker_count();
                handle.spawn(follow_progress(self.app.clone(), store, health, workers, host.subscribe()));
                handle.spawn(notifications::forward(self.app.clone(), host.subscribe()));
                let open = {
                    let mut inner = self.lock();
                    inner.host = Some(host);
                    inner.config = Some(config);
                    inner.phase = Phase::Running;
                    let open = !inner.opened_once && !self.startup.minimized;
                    inner.opened_once = true;
                    open
                };
                tray::refresh_phase(&self.app);
                if open {
                    self.open(Target::Sessions);
                }
            }
            Err(e) => {
                let reason = e.one_line();
                error!("cannot start: {reason}");
                self.set_phase(Phase::Failed(reason));
                self.open_settings();
            }
        }
    }

    fn set_phase(&self, phase: Phase) {
        self.lock().phase = phase;
        tray::refresh_phase(&self.app);
    }

    /// Stops the running engine (jobs in flight go back to the queue without using an
    /// attempt). Blocks: call it off the UI thread.
    fn stop_now(&self) {
        let host = {
            let mut inner = self.lock();
            inner.phase = Phase::Stopping;
            inner.host.take()
        };
        tray::refresh_phase(&self.app);
        if let Some(host) = host {
            if let Err(e) = host.stop() {
                warn!("engine stopped with an error: {}", e.one_line());
            }
        }
        self.set_phase(Phase::Stopped);
    }

    /// Applies saved settings: stops the engine and starts it on the new configuration.
    pub fn restart(self: &Arc<Self>) {
        let this = self.clone();
        std::thread::Builder::new()
            .name("demeter-restart".into())
            .spawn(move || {
                this.stop_now();
                this.lock().config = None;
                this.start_now();
            })
            .expect("spawning the restart thread");
    }

    /// Quit from the tray: stop gracefully, then end the app.
    pub fn quit(self: &Arc<Self>) {
        info!("quit requested; stopping the engine");
        let this = self.clone();
        std::thread::Builder::new()
            .name("demeter-quit".into())
            .spawn(move || {
                this.stop_now();
                info!("engine stopped; exiting");
                this.app.exit(0);
            })
            .expect("spawning the quit thread");
    }

    /// Stops the engine if it still runs (the app is exiting some other way).
    pub fn stop_if_running(&self) {
        if self.lock().host.is_some() {
            self.stop_now();
        }
    }

    pub fn paused(&self) -> bool {
        self.lock().host.as_ref().is_some_and(|h| h.engine().store().paused().unwrap_or(false))
    }

    /// Pauses or resumes taking new photos (jobs in flight finish).
    pub fn set_paused(&self, paused: bool) {
        let inner = self.lock();
        let Some(host) = &inner.host else { return };
        // A command to the engine, which stores it, wakes the workers and announces it.
        if let Err(e) = host.engine().commands().execute(demeter_domain::command::Command::SetPaused(paused)) {
            warn!(error = %e, "cannot change pause");
        }
    }

    /// The watched folder (running engine's, else the configured one).
    pub fn photo_folder(&self) -> Option<PathBuf> {
        if let Some(h) = &self.lock().host {
            return Some(h.watch_dir().to_owned());
        }
        self.config().ok().map(|c| c.watch.dir)
    }

    /// The status page for this machine, signed in once (`#/pair/CODE/<target>`), so a new
    /// window or a restarted engine never shows the sign-in form.
    pub fn signed_in_url(&self, target: Target) -> Option<String> {
        let inner = self.lock();
        let host = inner.host.as_ref()?;
        let who = Identity { name: "desktop".into(), role: Role::Admin };
        let (code, _) = host.auth().pairings.offer_session(who, chrono::Utc::now());
        Some(format!("{}#/pair/{code}{}", host.local_url(), target.hash()))
    }

    /// The status page as phones reach it; `None` with LAN access off or no engine running.
    pub fn lan_url(&self) -> Option<String> {
        self.lock().host.as_ref().and_then(|h| h.lan_url().map(str::to_owned))
    }

    /// The status page as others reach it: the LAN address, else this machine's.
    pub fn browser_url(&self) -> Option<String> {
        let inner = self.lock();
        let host = inner.host.as_ref()?;
        Some(host.lan_url().map(str::to_owned).unwrap_or_else(|| host.local_url()))
    }

    /// Shows the main window at `target` (creating it if needed).
    pub fn open(&self, target: Target) {
        let Some(url) = self.signed_in_url(target) else {
            self.open_settings();
            return;
        };
        let Ok(url) = url.parse::<tauri::Url>() else { return };
        if let Some(w) = self.app.get_webview_window(MAIN) {
            if let Err(e) = w.navigate(url) {
                warn!(error = %e, "cannot navigate the window");
            }
            let _ = w.show();
            let _ = w.unminimize();
            let _ = w.set_focus();
            return;
        }
        let built = WebviewWindowBuilder::new(&self.app, MAIN, WebviewUrl::External(url))
            .title("Demeter")
            .inner_size(1100.0, 760.0)
            .min_inner_size(360.0, 480.0)
            .build();
        if let Err(e) = built {
            error!(error = %e, "cannot open the window");
        }
    }

    /// Shows the settings window (a page bundled with the app).
    pub fn open_settings(&self) {
        if let Some(w) = self.app.get_webview_window(SETTINGS) {
            // Reload so it shows the current phase (e.g. a start-up error).
            let _ = w.eval("window.location.reload()");
            let _ = w.show();
            let _ = w.set_focus();
            return;
        }
        let built = WebviewWindowBuilder::new(&self.app, SETTINGS, WebviewUrl::App("settings.html".into()))
            .title("Demeter — Settings")
            .inner_size(620.0, 640.0)
            .build();
        if let Err(e) = built {
            error!(error = %e, "cannot open the settings window");
        }
    }
}

/// Keeps the tray's text and icon current while this engine runs: on every durable change,
/// and every few seconds while photos are in progress so the ETA counts down.
/// The engine's `/health` snapshot, for the tray's warnings.
type Health = Arc<dyn Fn() -> demeter_domain::health::Health + Send + Sync>;

async fn follow_progress<R: Runtime>(
    app: AppHandle<R>,
    store: Arc<demeter_store::Store>,
    health: Health,
    workers: usize,
    mut rx: tokio::sync::broadcast::Receiver<demeter_engine::EngineEvent>,
) {
    use tokio::sync::broadcast::error::RecvError;
    // Store reads block: they run on the blocking pool, never on the runtime that serves HTTP.
    let resumed = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || progress::Tracker::resume(&store)).await
    };
    let mut tracker = match resumed {
        Ok(t) => t,
        Err(e) => {
            error!(error = %e, "cannot read the open sessions for the tray; its progress stops");
            return;
        }
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Ok(e) => { tracker.observe(&e); }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {}
        }
        // Events arrive in bursts; take what is already there before redrawing once.
        while let Ok(e) = rx.try_recv() {
            tracker.observe(&e);
        }
        let read = {
            let (store, health) = (store.clone(), health.clone());
            tokio::task::spawn_blocking(move || {
                let overview = tracker.overview(&store, workers, chrono::Utc::now()).map(|mut o| {
                    o.alerts = progress::Alerts::of(&health());
                    o
                });
                (tracker, overview)
            })
            .await
        };
        let (back, overview) = match read {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "reading progress for the tray failed; its progress stops");
                return;
            }
        };
        tracker = back;
        match overview {
            Ok(o) => tray::show_progress(&app, &progress::TrayText::new(&o, &tracker.last), o.paused),
            Err(e) => warn!(error = %e, "cannot read progress for the tray"),
        }
    }
}

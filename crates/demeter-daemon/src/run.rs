//! `demeter run`: engine + HTTP server until Ctrl-C or SIGTERM.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context;
use demeter_auth::TokenStore;
use demeter_domain::SystemClock;
use demeter_engine::{Engine, EngineEvent, EngineOptions};
use demeter_server::{app, auth::Auth, events, events::EventHub, AppState};
use tracing::info;

use crate::{
    cli::{Failure, RunArgs},
    settings,
};

pub fn run(args: RunArgs) -> Result<ExitCode, Failure> {
    let config = settings::load(&args.common, |c| {
        if let Some(w) = &args.watch {
            c.watch.dir = w.clone();
        }
        if let Some(d) = &args.data {
            c.store.data_dir = Some(d.clone());
        }
        if let Some(l) = args.listen {
            c.server.listen = l;
        }
        if let Some(w) = &args.notify_webhook {
            c.notify.webhook = Some(w.clone());
        }
    })
    .map_err(Failure::config)?;
    let data_dir = settings::data_dir(&config);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("demeter-http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::runtime)?;
    // Bind first: a taken port should stop start-up before any photo is touched.
    let listen = config.server.listen;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| {
            format!("cannot listen on {listen} (is another demeter running? choose another with --listen)")
        })
        .map_err(Failure::config)?;

    let auth =
        open_auth(&data_dir, args.admin_token_file.as_deref(), allowed_hosts(&config)).map_err(Failure::config)?;

    let engine = Engine::start(EngineOptions {
        config: config.clone(),
        data_dir: data_dir.clone(),
        clock: Arc::new(SystemClock),
    })
    .map_err(Failure::config)?;
    let engine = Arc::new(engine);
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
        cleanup: {
            let engine = engine.clone();
            Arc::new(move || engine.sweep_now())
        },
        config: Arc::new(config.clone()),
        thumbnails: engine.thumbnails_dir(),
        overlays: engine.overlays_dir(),
        hub: Arc::new(EventHub::new(EVENT_HISTORY, CLIENT_BUFFER)),
        auth: Arc::new(auth),
    };
    runtime.spawn(forward_events(engine.subscribe(), state.clone()));
    if let Some(url) = &config.notify.webhook {
        runtime.spawn(crate::webhook::forward(engine.subscribe(), crate::webhook::Webhook::start(url.clone())));
    }
    let watch_dir = config.watch.dir.canonicalize().unwrap_or(config.watch.dir.clone());
    println!("Demeter is running at http://{listen}/");
    println!("  watching {}", watch_dir.display());
    println!("  data in  {}", data_dir.display());
    println!("Press Ctrl-C to stop.");

    let header_timeout = std::time::Duration::from_secs(config.server.header_timeout_secs);
    let served = runtime.block_on(demeter_server::serve(listener, app(state), header_timeout, shutdown_signal()));
    info!("HTTP server stopped");
    drop(runtime);
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.shutdown(),
        Err(_) => tracing::warn!("engine still referenced at exit; jobs in flight are reclaimed at next start"),
    }
    served.context("HTTP server failed").map_err(Failure::runtime)?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the token file and makes sure there is an admin token: the configured one
/// (`DEMETER_ADMIN_TOKEN` or `--admin-token-file`), else one made now and shown once.
fn open_auth(
    data_dir: &std::path::Path,
    token_file: Option<&std::path::Path>,
    hosts: std::collections::HashSet<String>,
) -> anyhow::Result<Auth> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let tokens = TokenStore::open(data_dir)?;
    let configured = match token_file {
        Some(f) => Some(
            std::fs::read_to_string(f).with_context(|| format!("cannot read --admin-token-file {}", f.display()))?,
        ),
        None => std::env::var("DEMETER_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    if let Some(secret) = tokens.ensure_admin(configured.as_deref().map(str::trim), chrono::Utc::now())? {
        println!("Admin token (shown once; it is stored only as a hash in {}):", tokens.path().display());
        println!("  {secret}");
        println!("Sign in on the status page with it, or make more: demeter token create --role viewer --name NAME");
    }
    Ok(Auth::new(Arc::new(tokens), hosts))
}

/// The names this server answers to: loopback names, the machine's hostname, the address it
/// listens on (every interface's address when it listens on all), and configured names.
fn allowed_hosts(config: &demeter_domain::config::Config) -> std::collections::HashSet<String> {
    let mut hosts: std::collections::HashSet<String> =
        ["localhost", "127.0.0.1", "::1"].into_iter().map(str::to_owned).collect();
    hosts.extend(config.server.allowed_hosts.iter().map(|h| h.trim().to_ascii_lowercase()));
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() {
            hosts.insert(format!("{name}.local"));
            hosts.insert(name);
        }
    }
    let ip = config.server.listen.ip();
    if ip.is_unspecified() {
        match if_addrs::get_if_addrs() {
            Ok(ifs) => hosts.extend(ifs.into_iter().map(|i| i.ip().to_string())),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list network interfaces; add this machine's address to server.allowed_hosts")
            }
        }
    } else {
        hosts.insert(ip.to_string());
    }
    hosts
}

/// Events kept for `Last-Event-ID` resume (a few minutes of a busy batch).
const EVENT_HISTORY: usize = 4096;
/// Events one SSE client may fall behind before it is told to resync.
const CLIENT_BUFFER: usize = 512;

/// Turns the engine's durable changes into SSE events (with ETA and session summary).
async fn forward_events(mut rx: tokio::sync::broadcast::Receiver<EngineEvent>, state: AppState) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match rx.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "event publisher fell behind; clients told to resync");
                events::publish_resync(&state, "the server skipped events; reload");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let state = state.clone();
        let published = tokio::task::spawn_blocking(move || match event {
            EngineEvent::Job(job) => events::publish_job(&state, &job),
            EngineEvent::Session(session) => {
                events::publish_session(&state, &session);
                Ok(())
            }
            EngineEvent::SessionFinished(_) => Ok(()),
        })
        .await;
        if let Ok(Err(e)) = published {
            tracing::warn!(error = ?e, "cannot publish an event");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("Ctrl-C received; stopping"),
        _ = term => info!("SIGTERM received; stopping"),
    }
}

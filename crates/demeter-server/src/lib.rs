//! The HTTP side of Demeter (axum): the seed's poll endpoint, recent sessions, `/health` and
//! the status page.
//!
//! This crate owns routes, their JSON shapes and error mapping ([`error::AppError`]: one
//! `IntoResponse`, internal errors logged and never leaked). It reads the store's read model and
//! a health snapshot, and changes nothing itself: every change is a
//! [`demeter_domain::command::Command`] sent to the engine ([`AppState::commands`]). It knows
//! nothing of watchers, workers or ONNX Runtime; [`app`] builds the router so tests can drive it
//! with `oneshot` and no socket.

pub mod api;
pub mod auth;
pub mod error;
pub mod events;
pub mod metrics;
pub mod routes;

use std::{future::Future, path::PathBuf, sync::Arc};

use axum::{
    http::{header, StatusCode},
    response::{Html, IntoResponse},
    Router,
};
use demeter_domain::{health::Health, Clock};
use demeter_store::Store;
use tokio::net::TcpListener;

/// The status page (`ui/`), compiled into the binary: no files to install, no build step.
const INDEX_HTML: &str = include_str!("../../../ui/index.html");
const APP_JS: &str = include_str!("../../../ui/app.js");
const STYLE_CSS: &str = include_str!("../../../ui/style.css");
/// uPlot (MIT), the Locations charts: the npm package's files, checked in under `ui/vendor/`
/// and verified against the lock file by `make ui-vendor-check`. Never from a CDN.
const UPLOT_JS: &str = include_str!("../../../ui/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../../ui/vendor/uPlot.min.css");

/// See [`AppState::overlay`].
pub type OverlayFn = dyn Fn(demeter_domain::JobId) -> Result<Option<(uuid::Uuid, Vec<u8>)>, Box<dyn std::error::Error + Send + Sync>>
    + Send
    + Sync;

/// What handlers need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub clock: Arc<dyn Clock>,
    /// Produces the `/health` snapshot on demand (no store reads: the queue counts are the
    /// store's counters).
    pub health: Arc<dyn Fn() -> Health + Send + Sync>,
    /// Engine counters and histograms for `/metrics`.
    pub metrics: Arc<dyn Fn() -> demeter_domain::metrics::EngineMetrics + Send + Sync>,
    /// The engine's command port: every change to jobs, sessions and the queue goes through it
    /// (the engine stores it and announces it on its event stream). Blocking: call it from
    /// `spawn_blocking`.
    pub commands: Arc<dyn demeter_domain::command::Commands>,
    /// The running configuration: worker count (pending ETAs), watched folder (uploads), TTLs.
    pub config: Arc<demeter_domain::config::Config>,
    /// Where `<job_id>.jpg` thumbnails are.
    pub thumbnails: PathBuf,
    /// A job's overlay (its photo with the plants boxed and numbered) as a JPEG, with the id of
    /// the result it shows; `None` when the job has no result or nothing to draw on. Drawn on
    /// first request by the engine, so it blocks: call it from `spawn_blocking`.
    pub overlay: Arc<OverlayFn>,
    /// SSE fan-out with replay.
    pub hub: Arc<events::EventHub>,
    /// Poll answers reused while their session is unchanged.
    pub polls: Arc<api::poll_cache::PollCache>,
    /// Tokens, roles and sign-in sessions.
    pub auth: Arc<auth::Auth>,
    /// How phones on the LAN reach this server (`http://192.168.1.20:7878/`); `None` when it
    /// listens on loopback only. Pairing links made on this machine itself use it.
    pub lan_url: Option<String>,
}

impl AppState {
    /// `session_gap_secs`: how long a drained session stays open for more photos.
    pub fn session_gap(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.config.watch.session_gap_secs as i64)
    }
}

/// The whole HTTP surface: the route table ([`routes`]) behind authentication, with every error
/// in the JSON shape.
pub fn app(state: AppState) -> Router {
    routes::router()
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::guard))
        // Outermost: whatever answers with an error, axum's extractors included, answers JSON.
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    // Revalidated on every load: the page and the binary must never disagree after an upgrade.
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}

async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn uplot_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", UPLOT_JS)
}

async fn uplot_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", UPLOT_CSS)
}

async fn index() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX_HTML))
}

#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = demeter_domain::health::Health), (status = 503, body = demeter_domain::health::Health)))]
/// Without a token `/health` says only whether the appliance is ready (for load balancers and
/// supervisors); with one, everything.
async fn health(
    axum::extract::State(state): axum::extract::State<AppState>,
    who: Option<axum::Extension<demeter_auth::Identity>>,
) -> axum::response::Response {
    let h = (state.health)();
    let code = if h.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    match who {
        Some(_) => (code, axum::Json(h)).into_response(),
        None => (code, axum::Json(serde_json::json!({ "ready": h.ready }))).into_response(),
    }
}

/// Longest wait for open connections (event streams never end by themselves) at shutdown.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` resolves, then drains open connections for at
/// most [`DRAIN`]. Each connection must send a request's headers within `header_timeout`, also
/// between keep-alive requests, so half-open and trickling (slowloris) connections are closed.
/// The peer address reaches handlers as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper_util::{
        rt::{TokioIo, TokioTimer},
        server::graceful::GracefulShutdown,
        service::TowerToHyperService,
    };
    use tower::ServiceExt;

    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let svc = app.clone().map_request(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => tracing::debug!("connections still open after the drain period; closing"),
    }
    Ok(())
}

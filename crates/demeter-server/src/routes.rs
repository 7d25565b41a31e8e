//! Every route the server answers, with the access it needs, declared in one table ([`table`]).
//!
//! The router is built from the table, and each route gets its own authorisation layer
//! ([`authorize`]) from the entry's [`Access`]; the OpenAPI document states each operation's role
//! from it, and the auth property test walks it. There is no second list of paths and roles to
//! keep in step: add a route here, with its access, and everything else follows.
//!
//! Authentication (who is asking) happens once, in front of every route, in [`crate::auth::guard`];
//! authorisation (may they) happens here, per route.

use axum::{
    extract::Request,
    http::{header, Method},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post, MethodRouter},
    Extension, Router,
};
use demeter_auth::Role;

use crate::{
    api,
    auth::{self, Caller, Via},
    error::AppError,
    AppState,
};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the page's own files, `/health`'s minimal answer, signing in and out. Credentials,
    /// when sent and valid, still reach the handler (e.g. `/health` then says everything).
    Public,
    /// A token or sign-in of at least this role. Cookie-authenticated changes must also come from
    /// this origin with a JSON or multipart body (CSRF).
    Needs(Role),
}

/// One row of the table, without its handler: what the docs and tests read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// axum's path syntax (`/api/v1/jobs/{id}`), as in the OpenAPI document.
    pub path: &'static str,
    pub access: Access,
}

use Access::{Needs, Public};
use Role::{Admin, Uploader, Viewer};

/// The whole HTTP surface: (method, path, access, handler). Reads need a viewer, uploads an
/// uploader, every other change an admin.
fn entries() -> Vec<(Route, MethodRouter<AppState>)> {
    let r = |method, path, access| Route { method, path, access };
    vec![
        // The page and the probe.
        (r("GET", "/", Public), get(crate::index)),
        (r("GET", "/app.js", Public), get(crate::app_js)),
        (r("GET", "/style.css", Public), get(crate::style_css)),
        (r("GET", "/uplot.js", Public), get(crate::uplot_js)),
        (r("GET", "/uplot.css", Public), get(crate::uplot_css)),
        (r("GET", "/health", Public), get(crate::health)),
        (r("GET", "/metrics", Needs(Viewer)), get(crate::metrics::metrics)),
        // Signing in.
        (r("POST", "/auth/login", Public), post(auth::login)),
        (r("POST", "/auth/logout", Public), post(auth::logout)),
        (r("POST", "/auth/pair/redeem", Public), post(auth::redeem)),
        (r("GET", "/auth/me", Needs(Viewer)), get(auth::me)),
        (r("POST", "/auth/pair", Needs(Admin)), post(auth::pair)),
        // Reading jobs and sessions.
        (r("GET", "/api/v1/photos/jobs/status", Needs(Viewer)), get(api::poll::poll_status)),
        (r("GET", "/api/v1/sessions", Needs(Viewer)), get(api::poll::list_sessions)),
        (r("GET", "/api/v1/sessions/{id}/results.json", Needs(Viewer)), get(api::results::results_json)),
        (r("GET", "/api/v1/sessions/{id}/results.csv", Needs(Viewer)), get(api::results::results_csv)),
        (r("GET", "/api/v1/jobs/{id}", Needs(Viewer)), get(api::jobs::job_detail)),
        (r("GET", "/api/v1/jobs/{id}/thumbnail", Needs(Viewer)), get(api::jobs::thumbnail)),
        (r("GET", "/api/v1/jobs/{id}/overlay", Needs(Viewer)), get(api::jobs::overlay)),
        (r("GET", "/api/v1/events", Needs(Viewer)), get(crate::events::stream)),
        (r("GET", "/api/v1/openapi.json", Needs(Viewer)), get(api::openapi::document)),
        // The results archive (an uploader sees its own uploads).
        (r("GET", "/api/v1/results", Needs(Viewer)), get(api::archive::list)),
        (r("GET", "/api/v1/results.csv", Needs(Viewer)), get(api::archive::list_csv)),
        (r("GET", "/api/v1/results/{id}/thumbnail", Needs(Viewer)), get(api::archive::thumbnail)),
        (r("GET", "/api/v1/locations", Needs(Viewer)), get(api::archive::locations)),
        (r("GET", "/api/v1/series", Needs(Viewer)), get(api::archive::series)),
        // Sending photos.
        (
            r("POST", "/api/v1/photos/upload", Needs(Uploader)),
            post(api::upload::upload).layer(axum::extract::DefaultBodyLimit::max(api::upload::MAX_UPLOAD_BYTES)),
        ),
        // Changing the queue: commands to the engine.
        (r("POST", "/api/v1/sessions/{id}/retry", Needs(Admin)), post(api::actions::retry_session)),
        (r("POST", "/api/v1/sessions/{id}/reprocess", Needs(Admin)), post(api::actions::reprocess_session)),
        (r("POST", "/api/v1/jobs/{id}/cancel", Needs(Admin)), post(api::actions::cancel_job)),
        (r("POST", "/api/v1/queue/pause", Needs(Admin)), post(api::actions::pause)),
        (r("POST", "/api/v1/queue/resume", Needs(Admin)), post(api::actions::resume)),
        (r("POST", "/admin/cleanup-sessions", Needs(Admin)), post(api::actions::cleanup)),
        // Models: what jobs may run with, and installing one while running.
        (r("GET", "/api/v1/models", Needs(Viewer)), get(api::models::list)),
        (
            r("POST", "/api/v1/models", Needs(Admin)),
            post(api::models::install).layer(axum::extract::DefaultBodyLimit::max(api::models::MAX_MODEL_BYTES)),
        ),
    ]
}

/// The table: every route with its access.
/// Read from [`entries`] once: the OpenAPI document asks for every operation's access each time
/// it is served, and building the handlers again for each lookup would be waste.
pub fn table() -> &'static [Route] {
    static TABLE: std::sync::OnceLock<Vec<Route>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| entries().into_iter().map(|(route, _)| route).collect())
}

/// The access a route needs, by method and path pattern (`None`: not in the table).
pub fn access(method: &str, path: &str) -> Option<Access> {
    table().iter().find(|r| r.method.eq_ignore_ascii_case(method) && r.path == path).map(|r| r.access)
}

/// The router for the table; each route wrapped in its own [`authorize`] layer. Paths that are not
/// in the table answer 404 to a viewer and 401 to anyone else, as if they needed a viewer.
pub(crate) fn router() -> Router<AppState> {
    let mut router = Router::new();
    for (route, handler) in entries() {
        let access = route.access;
        let handler = handler
            .route_layer(axum::middleware::from_fn(move |req: Request, next: Next| authorize(access, req, next)));
        router = router.route(route.path, handler);
    }
    router.fallback(unknown)
}

async fn unknown(caller: Option<Extension<Caller>>, req: Request) -> Response {
    match caller {
        Some(_) => crate::error::not_found(req.uri().clone()).await.into_response(),
        None => auth::unauthorized(),
    }
}

/// One route's authorisation: 401 without credentials, 403 without the role, 403/415 for a
/// cross-site change made with the sign-in cookie. On success the caller's
/// [`Identity`](demeter_auth::Identity) is in the request's extensions for the handler.
async fn authorize(access: Access, mut req: Request, next: Next) -> Response {
    let caller = req.extensions().get::<Caller>().cloned();
    let needed = match access {
        Public => {
            if let Some(c) = caller {
                req.extensions_mut().insert(c.who);
            }
            return next.run(req).await;
        }
        Needs(role) => role,
    };
    let Some(Caller { who, via }) = caller else { return auth::unauthorized() };
    if !who.role.allows(needed) {
        return AppError::Forbidden(format!("this needs the {needed} role; token {:?} is {}", who.name, who.role))
            .into_response();
    }
    if via == Via::Cookie && req.method() != Method::GET && req.method() != Method::HEAD {
        if !auth::same_origin(req.headers()) {
            return AppError::Forbidden("cross-site request refused (Origin does not match this host)".into())
                .into_response();
        }
        // A plain HTML form on another site can only send urlencoded or text bodies; requiring
        // JSON or multipart closes that door even where Origin is missing or wrong.
        let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !(ct.starts_with("application/json") || ct.starts_with("multipart/form-data")) {
            return AppError::UnsupportedMediaType(
                "changes from the page must send a JSON or multipart body (Content-Type)".into(),
            )
            .into_response();
        }
    }
    let (method, uri, name) = (req.method().clone(), req.uri().clone(), who.name.clone());
    req.extensions_mut().insert(who);
    let res = next.run(req).await;
    // An access log for authenticated requests (DEMETER_LOG=demeter_server=debug).
    tracing::debug!(%method, %uri, status = res.status().as_u16(), who = %name, "request");
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_declared_once() {
        let t = table();
        for (i, a) in t.iter().enumerate() {
            assert!(!t[i + 1..].iter().any(|b| a.method == b.method && a.path == b.path), "{a:?} twice");
        }
    }

    /// The OpenAPI document and the table list the same operations (the page's own files aside),
    /// and the document states each operation's role as the table declares it.
    #[test]
    fn the_api_document_and_the_table_agree() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(api::openapi::ApiDoc::openapi()).unwrap();
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                documented.push((method.to_uppercase(), path.clone(), op["x-role"].as_str().map(str::to_owned)));
            }
        }
        documented.sort();
        let mut declared: Vec<_> = table()
            .iter()
            .filter(|r| {
                !matches!(r.path, "/" | "/app.js" | "/style.css" | "/uplot.js" | "/uplot.css" | "/api/v1/openapi.json")
            })
            .map(|r| {
                let role = match r.access {
                    Public => None,
                    Needs(role) => Some(role.to_string()),
                };
                (r.method.to_owned(), r.path.to_owned(), role)
            })
            .collect();
        declared.sort();
        assert_eq!(documented, declared);
    }
}

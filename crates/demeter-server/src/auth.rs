//! Authentication and authorisation for every route but the page's static files, `/health`'s
//! minimal answer and sign-in itself.
//!
//! A request is identified by `Authorization: Bearer <token>` or by the sign-in cookie. The role
//! needed follows from the request: reads need viewer, uploads uploader, every other change
//! admin. Unknown or missing credentials → 401 with `WWW-Authenticate: Bearer`; a known identity
//! without the role → 403. Cookie-authenticated changes must also come from this origin (CSRF).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Extension, Json,
};
use demeter_auth::{Identity, Role, Sessions, TokenStore};
use demeter_domain::{SessionSource, UploadSession};
use serde::Deserialize;

use crate::{error::AppError, AppState};

/// The sign-in cookie's name.
pub const COOKIE: &str = "demeter_session";

/// Tokens and browser sessions.
pub struct Auth {
    pub tokens: Arc<TokenStore>,
    pub sessions: Sessions,
}

/// How the request proved who it is: a bearer token cannot be sent by another site's page, a
/// cookie can, so only cookie requests need the origin check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Bearer,
    Cookie,
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

fn identify(state: &AppState, headers: &HeaderMap) -> Option<(Identity, Via)> {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
    {
        return state.auth.tokens.verify(token).map(|id| (id, Via::Bearer));
    }
    let sid = cookie(headers, COOKIE)?;
    state.auth.sessions.get(&sid, state.clock.now()).map(|id| (id, Via::Cookie))
}

/// Routes anyone may reach: the page's own files, sign-in, and `/health` (which then says
/// only whether the appliance is ready).
fn is_public(path: &str) -> bool {
    matches!(path, "/" | "/app.js" | "/style.css" | "/health" | "/auth/login" | "/auth/logout")
}

fn required_role(method: &Method, path: &str) -> Role {
    if method == Method::GET || method == Method::HEAD {
        Role::Viewer
    } else if path == "/api/v1/photos/upload" || path == "/auth/me" {
        Role::Uploader
    } else {
        Role::Admin
    }
}

fn unauthorized() -> Response {
    let mut res = AppError::Unauthorized("a valid token is required: Authorization: Bearer <token>, or sign in".into())
        .into_response();
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"demeter\""));
    res
}

/// True when a cookie-authenticated change comes from a page of this very host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return false };
    origin.split_once("://").map(|(_, rest)| rest == host).unwrap_or(false)
}

/// The middleware in front of every route.
pub(crate) async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let found = identify(&state, req.headers());
    if is_public(&path) {
        if let Some((who, _)) = found {
            req.extensions_mut().insert(who);
        }
        return next.run(req).await;
    }
    let Some((who, via)) = found else { return unauthorized() };
    let needed = required_role(req.method(), &path);
    if !who.role.allows(needed) {
        return AppError::Forbidden(format!("this needs the {needed} role; token {:?} is {}", who.name, who.role))
            .into_response();
    }
    if via == Via::Cookie && req.method() != Method::GET && req.method() != Method::HEAD && !same_origin(req.headers())
    {
        return AppError::Forbidden("cross-site request refused (Origin does not match this host)".into())
            .into_response();
    }
    req.extensions_mut().insert(who);
    next.run(req).await
}

/// Uploaders see the appliance's folder sessions and their own uploads, not other uploaders'.
pub(crate) fn may_see(who: &Identity, session: &UploadSession) -> bool {
    match &session.source {
        SessionSource::Upload { owner: Some(owner), .. } => who.role != Role::Uploader || *owner == who.name,
        _ => true,
    }
}

pub(crate) fn check_access(who: &Identity, session: &UploadSession) -> Result<(), AppError> {
    if may_see(who, session) {
        Ok(())
    } else {
        Err(AppError::Forbidden("this upload session belongs to another uploader".into()))
    }
}

#[derive(Debug, Deserialize)]
pub struct Login {
    token: String,
}

fn session_cookie(value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"))
        .expect("cookie is ASCII")
}

/// `POST /auth/login {"token": …}`: exchanges a token for an HttpOnly, SameSite=Strict cookie.
pub(crate) async fn login(State(state): State<AppState>, Json(body): Json<Login>) -> Result<Response, AppError> {
    let who = state.auth.tokens.verify(&body.token).ok_or_else(|| AppError::Unauthorized("unknown token".into()))?;
    let sid = state.auth.sessions.start(who.clone(), state.clock.now());
    let mut res = Json(who).into_response();
    res.headers_mut().insert(header::SET_COOKIE, session_cookie(&sid, demeter_auth::SESSION_SECONDS));
    Ok(res)
}

/// `POST /auth/logout`: ends the browser session.
pub(crate) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(sid) = cookie(&headers, COOKIE) {
        state.auth.sessions.end(&sid);
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(header::SET_COOKIE, session_cookie("", 0));
    res
}

/// `GET /auth/me`: who the page is signed in as.
pub(crate) async fn me(Extension(who): Extension<Identity>) -> Json<Identity> {
    Json(who)
}

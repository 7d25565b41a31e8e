//! Authentication in front of every route, and the sign-in routes themselves.
//!
//! A request is identified by `Authorization: Bearer <token>` or by the sign-in cookie
//! ([`guard`]); the caller, if any, travels in the request as a [`Caller`]. What each route needs
//! is declared with the route, in [`crate::routes`], whose per-route layer answers 401 (with
//! `WWW-Authenticate: Bearer`) without credentials, 403 without the role, and refuses cross-site
//! changes made with the cookie (CSRF).

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Extension, Json,
};
use demeter_auth::{Identity, Pairings, Role, Sessions, TokenStore};
use demeter_domain::{SessionSource, UploadSession};
use serde::Deserialize;

use crate::{
    error::{AppError, ErrorBody},
    AppState,
};

/// The sign-in cookie's name.
pub const COOKIE: &str = "demeter_session";

/// Tokens, browser sessions, the hosts this server answers to, and the brute-force brake.
pub struct Auth {
    pub tokens: Arc<TokenStore>,
    pub sessions: Sessions,
    pub pairings: Pairings,
    /// Accepted `Host` names (lower case, without port). Empty: any (tests without a socket).
    pub allowed_hosts: HashSet<String>,
    pub limiter: FailureLimiter,
}

impl Auth {
    pub fn new(tokens: Arc<TokenStore>, allowed_hosts: HashSet<String>) -> Self {
        Self {
            tokens,
            sessions: Sessions::default(),
            pairings: Pairings::default(),
            allowed_hosts,
            limiter: FailureLimiter::default(),
        }
    }

    /// [`Auth::new`] allowing `burst` wrong tokens in a row per address (`server.failed_auth_burst`).
    pub fn with_failure_burst(mut self, burst: u32) -> Self {
        self.limiter.burst = f64::from(burst);
        self
    }
}

/// Failed authentication attempts per client address: a burst (default [`BURST`]), refilled one
/// per [`REFILL`]; past that, 429 with `Retry-After` until a token has refilled. No bans.
pub struct FailureLimiter {
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        Self { burst: BURST, buckets: Mutex::default() }
    }
}

/// Wrong tokens a client may present in a row, unless configured otherwise.
pub const BURST: f64 = 10.0;
/// One more attempt per this long.
pub const REFILL: Duration = Duration::from_secs(6);

impl FailureLimiter {
    fn level(&self, entry: &mut (f64, Instant), now: Instant) {
        let refill = now.duration_since(entry.1).as_secs_f64() / REFILL.as_secs_f64();
        *entry = ((entry.0 + refill).min(self.burst), now);
    }

    /// `Some(seconds)` to wait when this address has used up its attempts.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.get_mut(&ip)?;
        self.level(entry, Instant::now());
        (entry.0 < 1.0).then(|| ((1.0 - entry.0) * REFILL.as_secs_f64()).ceil() as u64)
    }

    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            // Forget addresses that have fully recovered, so the map cannot grow without bound.
            map.retain(|_, e| {
                self.level(e, now);
                e.0 < self.burst
            });
        }
        let entry = map.entry(ip).or_insert((self.burst, now));
        self.level(entry, now);
        entry.0 = (entry.0 - 1.0).max(0.0);
    }
}

fn peer_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

fn too_many(retry_after: u64) -> Response {
    let mut res = AppError::TooManyRequests(format!("too many failed sign-in attempts; try again in {retry_after} s"))
        .into_response();
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    res
}

/// The `Host` header's name without its port, lower case.
fn host_name(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?.trim().to_ascii_lowercase();
    Some(if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("").to_owned()
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map(|(h, _)| h.to_owned())
            .unwrap_or(host)
    })
}

/// How the request proved who it is: a bearer token cannot be sent by another site's page, a
/// cookie can, so only cookie requests need the origin check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Bearer,
    Cookie,
}

/// Who sent the request, as [`guard`] found: in the request's extensions when the credentials
/// are valid, absent otherwise.
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: Identity,
    pub via: Via,
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

/// What the request's credentials amount to.
enum Credentials {
    None,
    /// Presented but unknown: counts as a failed attempt.
    Invalid,
    Valid(Identity, Via),
}

fn identify(state: &AppState, headers: &HeaderMap) -> Credentials {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let token = auth.to_str().ok().and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        return match token.and_then(|t| state.auth.tokens.verify(t)) {
            Some(id) => Credentials::Valid(id, Via::Bearer),
            None => Credentials::Invalid,
        };
    }
    match cookie(headers, COOKIE) {
        None => Credentials::None,
        Some(sid) => match state.auth.sessions.get(&sid, state.clock.now()) {
            Some(s) if !s.token_backed || state.auth.tokens.is_current(&s.who) => {
                Credentials::Valid(s.who, Via::Cookie)
            }
            Some(_) => {
                // Its token was revoked since sign-in: the session goes with it.
                state.auth.sessions.end(&sid);
                Credentials::None
            }
            // A stale cookie after a restart is normal, not an attack: no penalty.
            None => Credentials::None,
        },
    }
}

/// 401 with the `WWW-Authenticate` challenge.
pub(crate) fn unauthorized() -> Response {
    let mut res = AppError::Unauthorized("a valid token is required: Authorization: Bearer <token>, or sign in".into())
        .into_response();
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"demeter\""));
    res
}

/// True when a cookie-authenticated change comes from a page of this very host.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return false };
    origin.split_once("://").map(|(_, rest)| rest == host).unwrap_or(false)
}

/// The middleware in front of every route: refuses names that are not this appliance's
/// (DNS rebinding) and addresses that used up their failed attempts, then identifies the caller.
/// It decides nothing about roles: see [`crate::routes`].
pub(crate) async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if !state.auth.allowed_hosts.is_empty() {
        if let Some(host) = host_name(req.headers()) {
            if !state.auth.allowed_hosts.contains(&host) {
                return AppError::MisdirectedRequest(format!(
                    "this appliance does not answer to the name {host:?}; add it to server.allowed_hosts"
                ))
                .into_response();
            }
        }
    }
    let ip = peer_ip(&req);
    if let Some(wait) = state.auth.limiter.blocked(ip) {
        return too_many(wait);
    }
    match identify(&state, req.headers()) {
        Credentials::Valid(who, via) => {
            req.extensions_mut().insert(Caller { who, via });
        }
        Credentials::Invalid => state.auth.limiter.failed(ip),
        Credentials::None => {}
    }
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Login {
    /// An access token (`dmt_…`).
    token: String,
}

fn session_cookie(value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"))
        .expect("cookie is ASCII")
}

/// `POST /auth/login {"token": …}`: exchanges a token for an HttpOnly, SameSite=Strict cookie.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = Login, responses((status = 200, description = "Signed in; sets the HttpOnly SameSite=Strict cookie"), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Json(body): Json<Login>,
) -> Result<Response, AppError> {
    let Some(who) = state.auth.tokens.verify(&body.token) else {
        let ip = peer.map(|c| c.0 .0.ip()).unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        state.auth.limiter.failed(ip);
        return Err(AppError::Unauthorized("unknown token".into()));
    };
    let sid = state.auth.sessions.start(who.clone(), state.clock.now());
    let mut res = Json(who).into_response();
    res.headers_mut().insert(header::SET_COOKIE, session_cookie(&sid, demeter_auth::SESSION_SECONDS));
    Ok(res)
}

/// `POST /auth/logout`: ends the browser session.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses((status = 204, description = "Signed out")))]
pub(crate) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(sid) = cookie(&headers, COOKIE) {
        state.auth.sessions.end(&sid);
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(header::SET_COOKIE, session_cookie("", 0));
    res
}

/// `GET /auth/me`: who the page is signed in as.
#[utoipa::path(get, path = "/auth/me", tag = "auth", responses((status = 200, description = "The signed-in name and role"), (status = 401, body = ErrorBody)))]
pub(crate) async fn me(Extension(who): Extension<Identity>) -> Json<Identity> {
    Json(who)
}

#[derive(Debug, Deserialize)]
pub struct PairRequest {
    /// `uploader` (default) or `viewer`: what the paired phone may do.
    #[serde(default)]
    role: Option<Role>,
}

/// `POST /auth/pair` (admin): a one-time link, and its QR code, that signs a phone in.
#[utoipa::path(post, path = "/auth/pair", tag = "auth", responses((status = 200, description = "One-time link, its QR code (SVG) and expiry"), (status = 403, body = ErrorBody)))]
pub(crate) async fn pair(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    body: Option<Json<PairRequest>>,
) -> Result<Json<serde_json::Value>, AppError> {
    let role = body.and_then(|b| b.0.role).unwrap_or(Role::Uploader);
    if role == Role::Admin {
        return Err(AppError::BadRequest("a phone can be paired as viewer or uploader, not admin".into()));
    }
    let (code, expires) = state.auth.pairings.offer(role, &who.name, state.clock.now());
    // A phone cannot reach "localhost": when the admin is on this machine, the link uses the
    // LAN address; with LAN access off there is none, and the answer says so.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let loopback = host_is_loopback(host);
    let base = match (&state.lan_url, loopback) {
        (Some(lan), true) => lan.trim_end_matches('/').to_owned(),
        _ => format!("http://{host}"),
    };
    let url = format!("{base}/#/pair/{code}");
    let reachable = !loopback || state.lan_url.is_some();
    let qr = qrcode::QrCode::new(url.as_bytes()).map_err(|e| AppError::Internal(Box::new(e)))?;
    let svg = qr.render::<qrcode::render::svg::Color>().min_dimensions(220, 220).build();
    Ok(Json(serde_json::json!({
        "url": url, "role": role, "expires_at": expires, "qr_svg": svg, "reachable_from_lan": reachable
    })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Redeem {
    /// The pairing code from the link or QR code.
    code: String,
}

/// `POST /auth/pair/redeem {"code": …}`: makes a token for this phone and signs it in. Codes
/// work once; unknown, used and expired codes all answer 401 and count as failed attempts.
#[utoipa::path(post, path = "/auth/pair/redeem", tag = "auth", request_body = Redeem, responses((status = 200, description = "Paired and signed in"), (status = 401, body = ErrorBody)))]
pub(crate) async fn redeem(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Json(body): Json<Redeem>,
) -> Result<Response, AppError> {
    let now = state.clock.now();
    let Ok(grant) = state.auth.pairings.redeem(body.code.trim(), now) else {
        let ip = peer.map(|c| c.0 .0.ip()).unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        state.auth.limiter.failed(ip);
        return Err(AppError::Unauthorized("this pairing link is not valid (used, expired, or mistyped)".into()));
    };
    let (who, sid) = match grant {
        demeter_auth::Grant::Session(who) => {
            tracing::info!(who = %who.name, "a browser signed in with a one-time link");
            let sid = state.auth.sessions.start_without_token(who.clone(), now);
            (who, sid)
        }
        demeter_auth::Grant::Device { role, by } => {
            let tokens = state.auth.tokens.clone();
            let name = tokio::task::spawn_blocking(move || {
                // Devices paired within the same second get -2, -3, … rather than an error.
                let base = paired_name(now);
                for n in 1.. {
                    let name = if n == 1 { base.clone() } else { format!("{base}-{n}") };
                    match tokens.create(&name, role, now) {
                        Ok(_) => return Ok(name),
                        Err(demeter_auth::AuthError::Exists(_)) => continue,
                        Err(e) => return Err(AppError::Internal(Box::new(e))),
                    }
                }
                unreachable!("an unbounded range always yields")
            })
            .await??;
            tracing::info!(token = %name, %role, paired_by = %by, "a device was paired");
            let who = Identity { name, role };
            let sid = state.auth.sessions.start(who.clone(), now);
            (who, sid)
        }
    };
    let mut res = Json(who).into_response();
    res.headers_mut().insert(header::SET_COOKIE, session_cookie(&sid, demeter_auth::SESSION_SECONDS));
    Ok(res)
}

/// `localhost`, `127.0.0.1`, `[::1]`, with or without a port.
fn host_is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.ends_with(':') => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A time-ordered name for a paired device's token, so `demeter token list` reads well.
fn paired_name(now: chrono::DateTime<chrono::Utc>) -> String {
    format!("paired-{}", now.format("%Y%m%d-%H%M%S"))
}

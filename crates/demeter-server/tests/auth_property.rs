//! A property test of the auth layer: for any sequence of requests with any mix of credentials,
//! the status follows from a small model of the rules (brake, public routes, 401, roles, origin).

mod common;

use std::sync::Arc;

use axum::{
    body::Body,
    http::{Request, StatusCode},
    Router,
};
use chrono::DateTime;
use demeter_auth::{Role, TokenStore};
use demeter_domain::ManualClock;
use demeter_server::{
    app,
    auth::Auth,
    events::EventHub,
    routes::{self, Access},
    AppState,
};
use demeter_store::Store;
use proptest::prelude::*;
use tower::ServiceExt;

/// Every route the server declares, with a made-up id where the path has one: the table the
/// router and its authorisation come from, so a route added there is tested here.
fn routes() -> Vec<(&'static str, String, Option<Role>)> {
    let id = uuid::Uuid::now_v7().to_string();
    routes::table()
        .iter()
        .map(|r| {
            let needed = match r.access {
                Access::Public => None,
                Access::Needs(role) => Some(role),
            };
            (r.method, r.path.replace("{id}", &id), needed)
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Cred {
    None,
    Garbage,
    Bearer(Role),
    /// The admin's sign-in cookie, with or without this host's Origin.
    Cookie {
        same_origin: bool,
    },
}

fn cred() -> impl Strategy<Value = Cred> {
    prop_oneof![
        Just(Cred::None),
        Just(Cred::Garbage),
        Just(Cred::Bearer(Role::Viewer)),
        Just(Cred::Bearer(Role::Uploader)),
        Just(Cred::Bearer(Role::Admin)),
        any::<bool>().prop_map(|same_origin| Cred::Cookie { same_origin }),
    ]
}

struct World {
    _dir: tempfile::TempDir,
    app: Router,
    tokens: [(Role, String); 3],
    cookie: String,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let t0 = DateTime::from_timestamp(1_750_000_000, 0).unwrap();
    let tokens = TokenStore::open(dir.path()).unwrap();
    let made =
        [Role::Viewer, Role::Uploader, Role::Admin].map(|r| (r, tokens.create(&format!("{r}-1"), r, t0).unwrap()));
    let store = Arc::new(Store::open(dir.path(), 4 << 20).unwrap());
    let state = AppState {
        store: store.clone(),
        clock: Arc::new(ManualClock::new(t0)),
        health: Arc::new(|| {
            serde_json::from_value(serde_json::json!({
                "ready": true, "version": "t", "execution_provider": "CPU", "warnings": [],
                "model": {"name": "m", "version": "1", "sha256": "x"},
                "workers": {"count": 1, "busy": 0, "intra_threads": 1},
                "queue": {"pending": 0, "processing": 0},
                "watcher": {"dir": "", "mode": "events", "last_scan_at": null, "files_seen": 0, "last_error": null}
            }))
            .unwrap()
        }),
        metrics: Arc::new(Default::default),
        commands: Arc::new(demeter_engine::commands::Executor::new(
            store.clone(),
            Arc::new(demeter_domain::SystemClock),
            common::NoEffects,
        )),
        config: Default::default(),
        thumbnails: dir.path().into(),
        overlay: Arc::new(|_| Ok(None)),
        hub: Arc::new(EventHub::new(16, 16)),
        polls: Default::default(),
        auth: Arc::new(Auth::new(Arc::new(tokens), ["localhost".to_owned()].into())),
        lan_url: None,
    };
    let app = app(state);
    let login = Request::post("/auth/login")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Body::from(format!(r#"{{"token":"{}"}}"#, made[2].1)))
        .unwrap();
    let res = app.clone().oneshot(login).await.unwrap();
    let cookie = res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    World { _dir: dir, app, tokens: made, cookie }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn status_codes_follow_the_rules(requests in prop::collection::vec((0..routes().len(), cred()), 1..40)) {
        let routes = routes();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let w = world().await;
            let mut failures = 0;
            // Signing out with the cookie ends its session: from then on it is a stale cookie.
            let mut signed_out = false;
            for (route, cred) in requests {
                let (method, path, needed) = (routes[route].0, routes[route].1.as_str(), routes[route].2);
                let mut req = Request::builder().method(method).uri(path).header("host", "localhost");
                match cred {
                    Cred::None => {}
                    Cred::Garbage => req = req.header("authorization", "Bearer dmt_not_a_token"),
                    Cred::Bearer(r) => {
                        let t = &w.tokens.iter().find(|(role, _)| *role == r).unwrap().1;
                        req = req.header("authorization", format!("Bearer {t}"));
                    }
                    Cred::Cookie { same_origin } => {
                        req = req.header("cookie", &w.cookie);
                        if same_origin {
                            req = req.header("origin", "http://localhost").header("content-type", "application/json");
                        }
                    }
                }
                let status = w.app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap().status();
                // The model.
                let blocked = failures >= 10;
                if matches!(cred, Cred::Garbage) && !blocked {
                    failures += 1;
                }
                let role = match cred {
                    Cred::Bearer(r) => Some(r),
                    Cred::Cookie { .. } if !signed_out => Some(Role::Admin),
                    _ => None,
                };
                if path == "/auth/logout" && matches!(cred, Cred::Cookie { .. }) {
                    signed_out = true;
                }
                let ctx = format!("{method} {path} with {cred:?} → {status}");
                match (blocked, needed, role) {
                    (true, _, _) => prop_assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{}", ctx),
                    (false, None, _) => {
                        prop_assert!(status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN, "{}", ctx)
                    }
                    (false, Some(_), None) => prop_assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", ctx),
                    (false, Some(needed), Some(role)) if !role.allows(needed) => {
                        prop_assert_eq!(status, StatusCode::FORBIDDEN, "{}", ctx)
                    }
                    _ if method == "POST" && matches!(cred, Cred::Cookie { same_origin: false }) => {
                        prop_assert_eq!(status, StatusCode::FORBIDDEN, "{}", ctx)
                    }
                    _ => prop_assert!(
                        ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN, StatusCode::TOO_MANY_REQUESTS].contains(&status),
                        "{}",
                        ctx
                    ),
                }
            }
            Ok(())
        })?;
    }
}

//! The router driven with `oneshot` over a real sled store on disk.

mod common;

use std::sync::Arc;

use axum::{
    body::Body,
    http::{Request, StatusCode},
    Router,
};
use chrono::{DateTime, Duration, Utc};
use demeter_domain::{
    health::{Health, ModelHealth, QueueHealth, WatcherHealth, WorkersHealth},
    Clock, Job, JobError, JobId, JobResult, ManualClock, ModelRef, SessionId, SessionSource, Stage, UploadSession,
};
use demeter_server::{app, AppState};
use demeter_store::Store;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000, 0).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    clock: ManualClock,
    hub: Arc<demeter_server::events::EventHub>,
    auth: Arc<demeter_server::auth::Auth>,
}

/// The admin token every request of these tests carries unless a test says otherwise.
const ADMIN: &str = "test-admin-token-0123456789abcdef0123456789";

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 8 << 20).unwrap());
        let dir_path = dir.path().to_owned();
        Self {
            _dir: dir,
            store,
            clock: ManualClock::new(t0()),
            hub: Arc::new(demeter_server::events::EventHub::new(64, 16)),
            auth: {
                let tokens = demeter_auth::TokenStore::open(&dir_path).unwrap();
                tokens.ensure_admin(Some(ADMIN), t0()).unwrap();
                Arc::new(demeter_server::auth::Auth::new(Arc::new(tokens), Default::default()))
            },
        }
    }

    fn app(&self) -> Router {
        app(self.state())
    }

    /// Everything a router needs, over this fixture's store, clock, hub and tokens.
    fn state(&self) -> AppState {
        AppState {
            store: self.store.clone(),
            clock: Arc::new(self.clock.clone()),
            health: Arc::new(|| Health {
                ready: true,
                version: "test".into(),
                execution_provider: "CPU".into(),
                compiled_providers: vec!["CPU".into()],
                warnings: vec![],
                devices: vec![],
                model: ModelHealth { name: "m".into(), version: "1".into(), sha256: "x".into() },
                installed_models: vec![
                    ModelHealth { name: "m".into(), version: "1".into(), sha256: "x".into() },
                    ModelHealth { name: "plant-unet".into(), version: "0.3".into(), sha256: "y".into() },
                ],
                workers: WorkersHealth { count: 4, busy: 0, intra_threads: 1 },
                queue: QueueHealth { pending: 0, processing: 0 },
                watcher: WatcherHealth::default(),
                inference: Default::default(),
            }),
            commands: Arc::new(demeter_engine::commands::Executor::new(
                self.store.clone(),
                Arc::new(self.clock.clone()),
                common::NoEffects,
            )),
            metrics: Arc::new(Default::default),
            config: Arc::new(demeter_domain::config::Config {
                watch: demeter_domain::config::WatchConfig {
                    dir: self._dir.path().join("photos"),
                    ..Default::default()
                },
                ..Default::default()
            }),
            thumbnails: self._dir.path().join("thumbnails"),
            // The engine draws overlays; here a job with a result has a fixed one.
            overlay: {
                let store = self.store.clone();
                Arc::new(move |id| {
                    Ok(store.job(id)?.and_then(|j| j.result().map(|r| (r.session_id, b"\xFF\xD8\xFFoverlay".to_vec()))))
                })
            },
            hub: self.hub.clone(),
            polls: Default::default(),
            auth: self.auth.clone(),
            lan_url: None,
        }
    }

    fn session(&self, created: DateTime<Utc>) -> SessionId {
        let s = UploadSession {
            id: SessionId::new_v7(),
            created_at: created,
            expires_at: created + Duration::hours(24),
            source: SessionSource::Folder { subfolder: None },
        };
        self.store.insert_session(&s).unwrap();
        s.id
    }

    fn job(&self, session: SessionId, name: &str) -> JobId {
        let job = Job::new(
            JobId::new_v7(),
            session,
            format!("img-{name}"),
            format!("/photos/{name}").into(),
            name.into(),
            1,
            1,
            t0(),
        );
        self.store.enqueue(&job, &format!("hash-{name}"), t0() + Duration::hours(48)).unwrap();
        job.id
    }
}

/// GET with the admin token, returning the whole response (headers and non-JSON bodies).
async fn raw_get(app: Router, uri: &str) -> axum::response::Response {
    app.oneshot(Request::get(uri).header("authorization", format!("Bearer {ADMIN}")).body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn get(app: Router, uri: &str) -> (StatusCode, Value) {
    let res = raw_get(app, uri).await;
    let status = res.status();
    let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    assert!(ct.starts_with("application/json"), "{uri}: content-type {ct}");
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn poll_returns_the_seed_shape_with_every_state() {
    let f = Fixture::new();
    let s = f.session(t0());
    let done = f.job(s, "a.jpg");
    let failed = f.job(s, "b.jpg");
    let running = f.job(s, "c.jpg");
    let _pending = f.job(s, "d.jpg");
    // Claims come in FIFO order.
    for expect in [done, failed, running] {
        assert_eq!(f.store.claim_next(0, t0()).unwrap().unwrap().id, expect);
    }
    f.store.update(running, |j| j.advance(Stage::Segment, t0())).unwrap();
    f.store
        .update(done, |j| {
            j.complete(
                JobResult {
                    session_id: uuid::Uuid::nil(),
                    total_detected: 7,
                    plants: vec![],
                    plant_area_fraction: 0.2,
                    storage_location_id: Some("bench-a".into()),
                    storage_location_name: None,
                    location_rule: None,
                    model: ModelRef { name: "m".into(), version: "1".into(), ..Default::default() },
                    execution_provider: "CPU".into(),
                    device: "cpu".into(),
                    timings_ms: Default::default(),
                    taken_at: None,
                    width: 10,
                    height: 10,
                    grid: None,
                    trust: Default::default(),
                    objects: vec![],
                    class_counts: Default::default(),
                },
                t0() + Duration::seconds(3),
            )
        })
        .unwrap();
    f.store.update(failed, |j| j.fail(JobError::permanent("corrupt or truncated JPEG image"), t0())).unwrap();

    let (code, body) = get(f.app(), &format!("/api/v1/photos/jobs/status?upload_session_id={s}")).await;
    assert_eq!(code, StatusCode::OK);
    let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "created_at",
            "eta_seconds",
            "jobs",
            "last_updated",
            "source",
            "summary",
            "upload_session_id",
            "waiting_for_more_photos"
        ]
    );
    assert!(body["eta_seconds"].is_null(), "no stage durations learned yet: no ETA");
    assert_eq!(body["upload_session_id"], s.to_string());
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 4);
    let job_keys: Vec<&str> = jobs[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        job_keys,
        [
            "completed_at",
            "error_message",
            "eta_seconds",
            "filename",
            "image_id",
            "job_id",
            "progress_percent",
            "result",
            "stage",
            "started_at",
            "status"
        ]
    );
    assert_eq!(jobs[0]["status"], "completed");
    assert_eq!(jobs[0]["progress_percent"], 100);
    assert_eq!(jobs[0]["result"]["total_detected"], 7);
    assert_eq!(jobs[0]["result"]["storage_location_id"], "bench-a");
    assert_eq!(jobs[0]["result"]["session_id"], uuid::Uuid::nil().to_string());
    assert_eq!(jobs[1]["status"], "failed");
    assert_eq!(jobs[1]["error_message"], "corrupt or truncated JPEG image");
    assert_eq!(jobs[2]["status"], "processing");
    assert_eq!(jobs[2]["progress_percent"], 40);
    assert!(jobs[2]["completed_at"].is_null());
    assert_eq!(jobs[3]["status"], "pending");
    assert!(jobs[3]["started_at"].is_null());
    assert_eq!(
        body["summary"],
        serde_json::json!({"total_jobs": 4, "pending": 1, "processing": 1, "completed": 1, "failed": 1, "overall_progress_percent": 50.0})
    );
}

#[tokio::test]
async fn bad_and_unknown_sessions_get_json_errors() {
    let f = Fixture::new();
    let (code, body) = get(f.app(), "/api/v1/photos/jobs/status").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("upload_session_id"));
    let (code, body) = get(f.app(), "/api/v1/photos/jobs/status?upload_session_id=not-a-uuid").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "bad_request");
    let (code, body) =
        get(f.app(), &format!("/api/v1/photos/jobs/status?upload_session_id={}", uuid::Uuid::now_v7())).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Upload session not found or expired");
    let (code, _) = get(f.app(), "/api/v1/nope").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cached_poll_answers_follow_every_stored_change_and_expiry() {
    let f = Fixture::new();
    let app = f.app(); // one state, one cache, for every request below
    let s = f.session(t0());
    let a = f.job(s, "a.jpg");
    let uri = format!("/api/v1/photos/jobs/status?upload_session_id={s}");
    let status = |body: &Value| body["jobs"][0]["status"].as_str().unwrap().to_owned();
    let (_, first) = get(app.clone(), &uri).await;
    assert_eq!(status(&first), "pending");
    // Finished: the answer is kept (same `last_updated`) until the session changes.
    f.store.update(a, |j| j.claim(0, t0())).unwrap();
    let (_, running) = get(app.clone(), &uri).await;
    assert_eq!(status(&running), "processing", "a stored change is never hidden by the cache");
    f.store.update(a, |j| j.complete(JobResult::default(), t0())).unwrap();
    let (_, waiting) = get(app.clone(), &uri).await;
    assert_eq!((status(&waiting), &waiting["waiting_for_more_photos"]), ("completed".into(), &Value::Bool(true)));
    // Once the session gap (30 s) has closed, the session is finished by the clock alone.
    f.clock.advance(Duration::seconds(30));
    let (_, done) = get(app.clone(), &uri).await;
    assert_eq!(done["waiting_for_more_photos"], false, "a waiting answer is not kept past the gap");
    f.clock.advance(Duration::minutes(5));
    let (_, again) = get(app.clone(), &uri).await;
    assert_eq!(again, done, "a finished session's answer is reused");
    let b = f.job(s, "b.jpg");
    let (_, grown) = get(app.clone(), &uri).await;
    assert_eq!(grown["summary"]["total_jobs"], 2, "a new job in the session is seen");
    f.store.update(b, |j| j.cancel(t0())).unwrap();
    assert_eq!(get(app.clone(), &uri).await.1["summary"]["failed"], 1);
    // The cache never outlives the session.
    f.clock.advance(Duration::hours(24));
    assert_eq!(get(app.clone(), &uri).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn expired_sessions_are_gone_before_and_after_the_sweep() {
    let f = Fixture::new();
    let s = f.session(t0());
    f.job(s, "a.jpg");
    let uri = format!("/api/v1/photos/jobs/status?upload_session_id={s}");
    f.clock.advance(Duration::hours(23));
    assert_eq!(get(f.app(), &uri).await.0, StatusCode::OK);
    f.clock.advance(Duration::hours(1));
    assert_eq!(get(f.app(), &uri).await.0, StatusCode::NOT_FOUND, "expired, not yet swept");
    let report = f.store.sweep_expired(f.clock.now(), 100).unwrap();
    assert_eq!(report.sessions, 1);
    assert!(report.jobs.is_empty(), "jobs live 48 h");
    assert_eq!(get(f.app(), &uri).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_drained_session_waits_for_more_photos_until_its_gap_closes() {
    let f = Fixture::new();
    let s = f.session(t0());
    let a = f.job(s, "a.jpg");
    let poll = format!("/api/v1/photos/jobs/status?upload_session_id={s}");
    let waiting = |body: &Value| body["waiting_for_more_photos"].as_bool().unwrap();
    let listed = |body: &Value| body["sessions"][0]["waiting_for_more_photos"].as_bool().unwrap();
    assert!(!waiting(&get(f.app(), &poll).await.1), "a pending photo: processing, not waiting");
    f.store.update(a, |j| j.claim(0, t0())).unwrap();
    f.store.update(a, |j| j.fail(demeter_domain::JobError::permanent("bad"), t0())).unwrap();
    f.clock.advance(Duration::seconds(29));
    assert!(waiting(&get(f.app(), &poll).await.1));
    assert!(listed(&get(f.app(), "/api/v1/sessions").await.1));
    f.clock.advance(Duration::seconds(1));
    assert!(!waiting(&get(f.app(), &poll).await.1), "30 s after the last photo: finished");
    assert!(!listed(&get(f.app(), "/api/v1/sessions").await.1));
}

#[tokio::test]
async fn sessions_are_listed_newest_first_with_summaries() {
    let f = Fixture::new();
    let old = f.session(t0());
    f.job(old, "a.jpg");
    let new = f.session(t0() + Duration::minutes(5));
    f.job(new, "b.jpg");
    f.job(new, "c.jpg");
    let (code, body) = get(f.app(), "/api/v1/sessions").await;
    assert_eq!(code, StatusCode::OK);
    let list = body["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["upload_session_id"], new.to_string());
    assert_eq!(list[0]["summary"]["total_jobs"], 2);
    assert_eq!(list[1]["upload_session_id"], old.to_string());
}

#[tokio::test]
async fn health_tells_the_public_only_readiness_and_answers_503_when_not_ready() {
    let f = Fixture::new();
    let (code, body) = get(f.app(), "/health").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!((body["ready"].as_bool(), body["workers"]["count"].as_u64()), (Some(true), Some(4)), "{body}");
    // Without a token: readiness and nothing else (no model, paths or warnings for strangers).
    let res = f.app().oneshot(Request::get("/health").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let public: Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(public, serde_json::json!({ "ready": true }));
    // Not ready (the engine still starting, say): 503, to tokens and strangers alike.
    let mut state = f.state();
    let full = (state.health)();
    state.health = Arc::new(move || Health { ready: false, ..full.clone() });
    let (code, body) = get(app(state.clone()), "/health").await;
    assert_eq!((code, body["ready"].as_bool()), (StatusCode::SERVICE_UNAVAILABLE, Some(false)));
    let res = app(state).oneshot(Request::get("/health").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
}

async fn send(app: Router, method: &str, uri: &str) -> (StatusCode, Value) {
    let res = app
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A request with a body; the answer's status, content type and JSON body (`Null` if not JSON).
async fn send_body(
    app: Router,
    method: &str,
    uri: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, String, Value) {
    let mut req = Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {ADMIN}"));
    if !content_type.is_empty() {
        req = req.header("content-type", content_type);
    }
    let res = app.oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = res.status();
    let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, ct, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn extractor_rejections_answer_in_the_json_error_shape() {
    let f = Fixture::new();
    let s = f.session(t0());
    let uri = format!("/api/v1/sessions/{s}/reprocess");
    let json = "application/json";
    for (what, ct, body, status, code) in [
        ("malformed JSON", json, "{\"model\": ", StatusCode::BAD_REQUEST, "bad_request"),
        ("a field of the wrong type", json, "{\"model\": 5}", StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
        (
            "a body that is not JSON",
            "text/plain",
            "model=m",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ] {
        let (got, content_type, body) = send_body(f.app(), "POST", &uri, ct, body).await;
        assert_eq!(got, status, "{what}: {body}");
        assert!(content_type.starts_with("application/json"), "{what}: {content_type}");
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(!body["detail"].as_str().unwrap().is_empty(), "{what}: {body}");
    }
    // A login body that is not JSON at all, and a method a route does not have (with Allow).
    let (got, _, body) = send_body(f.app(), "POST", "/auth/login", json, "not json").await;
    assert_eq!((got, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
    let res = f
        .app()
        .oneshot(
            Request::builder()
                .method("DELETE")
                .uri("/api/v1/sessions")
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(res.headers().contains_key("allow"), "the Allow header is kept");
    let body: Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"], "method_not_allowed");
}

fn timings(ms: u64) -> std::collections::BTreeMap<Stage, u64> {
    Stage::ALL.iter().map(|s| (*s, ms)).collect()
}

#[tokio::test]
async fn eta_and_progress_come_from_learned_stage_durations() {
    let f = Fixture::new();
    let s = f.session(t0());
    let running = f.job(s, "a.jpg");
    for i in 0..5 {
        f.job(s, &format!("w{i}.jpg"));
    }
    f.store.record_stage_timings(&timings(1000)).unwrap(); // 6 s per job
    f.store.claim_next(0, t0()).unwrap();
    f.store.update(running, |j| j.advance(Stage::Segment, t0())).unwrap();
    f.clock.advance(Duration::milliseconds(500));
    let (_, body) = get(f.app(), &format!("/api/v1/photos/jobs/status?upload_session_id={s}")).await;
    let job = &body["jobs"][0];
    assert_eq!(job["stage"], "segment");
    assert_eq!(job["progress_percent"], 54, "half-way from 40 towards 70");
    assert_eq!(job["eta_seconds"], 2.5, "half of segment, then detect and save (locate came before)");
    // Five pending jobs, four workers: the fifth waits a second round.
    assert_eq!(body["jobs"][1]["eta_seconds"], 6.0);
    assert_eq!(body["jobs"][5]["eta_seconds"], 12.0);
    assert_eq!(body["eta_seconds"], 12.0, "the session ends with its slowest job");
}

#[tokio::test]
async fn job_detail_thumbnail_and_actions() {
    let f = Fixture::new();
    let s = f.session(t0());
    let a = f.job(s, "a.jpg");
    let b = f.job(s, "b.jpg");
    let (code, detail) = get(f.app(), &format!("/api/v1/jobs/{a}")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!((detail["filename"].as_str(), detail["attempts"].as_u64()), (Some("a.jpg"), Some(0)));
    assert_eq!(detail["upload_session_id"], s.to_string());
    assert_eq!(get(f.app(), &format!("/api/v1/jobs/{}", JobId::new_v7())).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(f.app(), "/api/v1/jobs/..%2F..%2Fetc%2Fpasswd").await.0, StatusCode::BAD_REQUEST);
    for traversal in [
        "/api/v1/jobs/..%2F..%2Fetc%2Fpasswd/thumbnail",
        "/api/v1/jobs/%2e%2e/overlay",
        "/api/v1/jobs/../../etc/passwd",
    ] {
        assert_eq!(get(f.app(), traversal).await.0, StatusCode::NOT_FOUND, "{traversal}");
    }

    // Thumbnails: 404 until written, then JPEG bytes with cache headers.
    assert_eq!(get(f.app(), &format!("/api/v1/jobs/{a}/thumbnail")).await.0, StatusCode::NOT_FOUND);
    std::fs::create_dir_all(f._dir.path().join("thumbnails")).unwrap();
    std::fs::write(f._dir.path().join(format!("thumbnails/{a}.jpg")), b"\xFF\xD8\xFFjpeg").unwrap();
    let res = raw_get(f.app(), &format!("/api/v1/jobs/{a}/thumbnail")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "image/jpeg");
    assert!(res.headers()["cache-control"].to_str().unwrap().contains("max-age"));

    // Cancel a pending job (idempotent), refuse to cancel a running one.
    let (code, _) = send(f.app(), "POST", &format!("/api/v1/jobs/{a}/cancel")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(send(f.app(), "POST", &format!("/api/v1/jobs/{a}/cancel")).await.0, StatusCode::OK);
    assert_eq!(f.store.job(a).unwrap().unwrap().error().unwrap().message, "cancelled by user");
    f.store.claim_next(0, t0()).unwrap();
    let (code, body) = send(f.app(), "POST", &format!("/api/v1/jobs/{b}/cancel")).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "conflict");

    // Retry re-queues failed jobs only; a second call has nothing left to do.
    let (code, body) = send(f.app(), "POST", &format!("/api/v1/sessions/{s}/retry")).await;
    assert_eq!((code, body["requeued"].as_u64()), (StatusCode::OK, Some(1)));
    assert_eq!(send(f.app(), "POST", &format!("/api/v1/sessions/{s}/retry")).await.1["requeued"], 0);
    assert_eq!(f.store.job(a).unwrap().unwrap().status(), demeter_domain::StatusName::Pending);

    // Pause and resume are stored and idempotent.
    for _ in 0..2 {
        assert_eq!(send(f.app(), "POST", "/api/v1/queue/pause").await.1["paused"], true);
    }
    assert!(f.store.paused().unwrap());
    assert_eq!(send(f.app(), "POST", "/api/v1/queue/resume").await.1["paused"], false);
    assert!(!f.store.paused().unwrap());
    assert_eq!(send(f.app(), "GET", "/api/v1/queue/pause").await.0, StatusCode::METHOD_NOT_ALLOWED);

    // Overlays: 404 (JSON) without a result; with one, its URL and ETag carry the result's id,
    // and only the URL the detail gives may be cached for good (a reprocess changes it).
    let (code, body) = get(f.app(), &format!("/api/v1/jobs/{b}/overlay")).await;
    assert_eq!((code, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{body}");
    let (_, pending) = get(f.app(), &format!("/api/v1/jobs/{b}")).await;
    assert_eq!(pending["overlay_url"], format!("/api/v1/jobs/{b}/overlay"));
    let c = f.job(s, "c.jpg");
    while f.store.claim_next(0, t0()).unwrap().is_some_and(|j| j.id != c) {}
    let result = f.store.update(c, |j| j.complete(JobResult::default(), t0())).unwrap().result().unwrap().session_id;
    let (_, done) = get(f.app(), &format!("/api/v1/jobs/{c}")).await;
    let url = done["overlay_url"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("/api/v1/jobs/{c}/overlay?v={result}"));
    let res = raw_get(f.app(), &url).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        (res.headers()["content-type"].to_str().unwrap(), res.headers()["etag"].to_str().unwrap()),
        ("image/jpeg", format!("\"{result}\"").as_str())
    );
    assert!(res.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    for stale in [format!("/api/v1/jobs/{c}/overlay"), format!("/api/v1/jobs/{c}/overlay?v={}", JobId::new_v7())] {
        let res = raw_get(f.app(), &stale).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["cache-control"], "private, no-cache", "{stale}");
    }
}

#[tokio::test]
async fn results_come_as_json_and_csv() {
    let f = Fixture::new();
    let s = f.session(t0());
    let a = f.job(s, "=tray, \"A\".jpg");
    f.store.claim_next(0, t0()).unwrap();
    f.store.update(a, |j| j.fail(JobError::permanent("corrupt, truncated"), t0())).unwrap();
    // A tray of 2 × 3 cells with one empty and one holding two plants, flagged as crowded.
    let b = f.job(s, "tray-b.jpg");
    f.store.claim_next(0, t0()).unwrap();
    let grid = demeter_domain::Grid {
        rows: 2,
        cols: 3,
        origin: [50.0, 50.0],
        pitch: [100.0, 100.0],
        angle_deg: 0.0,
        plants_per_cell: vec![1, 0, 2, 1, 1, 1],
    };
    let trust = demeter_domain::Trust::from_reasons(vec![demeter_domain::TrustReason::CrowdedCells]);
    let result = JobResult {
        total_detected: 6,
        grid: Some(grid),
        trust,
        model: ModelRef { name: "plant-exg".into(), version: "2.0.0".into(), ..Default::default() },
        execution_provider: "CUDA".into(),
        device: "cuda:0".into(),
        class_counts: [("seedling".to_owned(), 6), ("weed".to_owned(), 1)].into(),
        ..Default::default()
    };
    f.store.update(b, |j| j.complete(result, t0())).unwrap();
    let (code, rows) = get(f.app(), &format!("/api/v1/sessions/{s}/results.json")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(rows[0]["status"], "failed");
    assert_eq!(rows[1]["grid"]["plants_per_cell"], json!([1, 0, 2, 1, 1, 1]));
    assert_eq!(rows[1]["trust"], json!({"trusted": false, "reasons": ["crowded_cells"]}));
    let res = raw_get(f.app(), &format!("/api/v1/sessions/{s}/results.csv")).await;
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let lines: Vec<_> = csv.lines().collect();
    assert!(lines[0].starts_with(
        "filename,status,plant_count,storage_location_id,error_message,grid_rows,grid_cols,cells_occupied,\
         cells_empty,cells_crowded,plants_per_cell,trusted,trust_reasons,model,execution_provider,device,class_counts,read_ms"
    ));
    assert_eq!(lines[1], "\"'=tray, \"\"A\"\".jpg\",failed,,,\"corrupt, truncated\",,,,,,,,,,,,,,,,,,");
    assert_eq!(
        lines[2],
        "tray-b.jpg,completed,6,,,2,3,5,1,1,1 0 2 1 1 1,false,crowded_cells,plant-exg 2.0.0,CUDA,cuda:0,seedling=6;weed=1,,,,,,"
    );
    assert_eq!(rows[1]["class_counts"], json!({"seedling": 6, "weed": 1}));
    assert_eq!((rows[1]["execution_provider"].as_str(), rows[1]["device"].as_str()), (Some("CUDA"), Some("cuda:0")));
}

mod sse {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A real HTTP client on a real port, reading SSE frames as (id, event, data).
    struct Client {
        lines: tokio::io::Lines<BufReader<tokio::net::TcpStream>>,
    }

    impl Client {
        async fn connect(addr: std::net::SocketAddr, path: &str, last_id: Option<u64>) -> Self {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let extra = last_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
            tcp.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN}\r\nAccept: text/event-stream\r\n{extra}\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut lines = BufReader::new(tcp).lines();
            let status = lines.next_line().await.unwrap().unwrap();
            assert!(status.contains("200"), "{status}");
            while !lines.next_line().await.unwrap().unwrap().is_empty() {}
            Self { lines }
        }

        /// Next event, skipping keep-alives and chunk-size lines of the chunked encoding.
        async fn next(&mut self) -> (Option<u64>, String, Value) {
            let (mut id, mut event, mut data) = (None, String::new(), None);
            loop {
                let line = tokio::time::timeout(std::time::Duration::from_secs(10), self.lines.next_line())
                    .await
                    .expect("an event within 10 s")
                    .unwrap()
                    .expect("stream open");
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.parse().unwrap());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    assert!(data.is_none(), "one data line per event: {v}");
                    data = Some(serde_json::from_str(v).unwrap());
                } else if line.is_empty() {
                    if let Some(data) = data.take() {
                        return (id, event, data);
                    }
                }
            }
        }
    }

    async fn serve(f: &Fixture) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = f.app();
        tokio::spawn(async move {
            demeter_server::serve(listener, app, std::time::Duration::from_secs(10), std::future::pending())
                .await
                .unwrap()
        });
        addr
    }

    #[tokio::test]
    async fn events_arrive_in_order_filtered_escaped_and_resumable() {
        let f = Fixture::new();
        let addr = serve(&f).await;
        let s = f.session(t0());
        let other = f.session(t0());
        let mut all = Client::connect(addr, "/api/v1/events", None).await;
        let mut mine = Client::connect(addr, &format!("/api/v1/events?upload_session_id={s}"), None).await;

        let nasty = "evil\nevent: resync\ndata: {}\n\n.jpg";
        let a = f.job(s, nasty);
        let b = f.job(other, "b.jpg");
        for id in [a, b] {
            let job = f.store.job(id).unwrap().unwrap();
            tokio::task::spawn_blocking({
                let st = f.state();
                move || demeter_server::events::publish_job(&st, &job).unwrap()
            })
            .await
            .unwrap();
        }
        let (id1, kind, data) = all.next().await;
        assert_eq!(kind, "job");
        assert_eq!(data["job"]["filename"], nasty, "the filename survives intact inside JSON");
        assert_eq!(data["summary"]["total_jobs"], 1);
        let (id2, _, data2) = all.next().await;
        assert!(id2 > id1, "ids increase");
        assert_eq!(data2["job"]["filename"], "b.jpg");
        let (mid, _, mdata) = mine.next().await;
        assert_eq!((mid, mdata["job"]["job_id"].as_str()), (id1, Some(a.to_string().as_str())));

        // Reconnect after id1: exactly what was missed is replayed.
        let mut resumed = Client::connect(addr, "/api/v1/events", id1).await;
        assert_eq!(resumed.next().await.0, id2);
        // An id from before the kept history (or from another run) asks for a resync.
        let mut stale = Client::connect(addr, "/api/v1/events", Some(10_000)).await;
        assert_eq!(stale.next().await.1, "resync");
    }

    #[tokio::test]
    async fn a_slow_client_is_told_to_resync_without_stalling_others() {
        let f = Fixture::new(); // client buffer: 16 events
        let addr = serve(&f).await;
        let mut slow = Client::connect(addr, "/api/v1/events", None).await;
        let mut fast = Client::connect(addr, "/api/v1/events", None).await;
        // Big events, so the slow client's socket buffers fill and its server side stops reading.
        let pad = "x".repeat(64 * 1024);
        for i in 0..400 {
            f.hub.publish("session", None, None, serde_json::json!({ "n": i, "pad": pad }));
            let (_, _, d) = fast.next().await;
            assert_eq!(d["n"], i, "the fast client sees every event in order");
        }
        // The slow one never read: it gets at most its buffer, then a resync.
        let mut kinds = Vec::new();
        loop {
            let (_, kind, _) = slow.next().await;
            kinds.push(kind.clone());
            if kind == "resync" {
                break;
            }
            assert!(kinds.len() <= 400);
        }
        assert!(kinds.len() < 400, "dropped behind, not buffered without bound: {}", kinds.len());
    }
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_every_documented_route_exists() {
    let f = Fixture::new();
    let (code, doc) = get(f.app(), "/api/v1/openapi.json").await;
    assert_eq!(code, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for route in [
        "/api/v1/photos/jobs/status",
        "/api/v1/photos/upload",
        "/api/v1/sessions",
        "/api/v1/sessions/{id}/retry",
        "/api/v1/sessions/{id}/results.json",
        "/api/v1/sessions/{id}/results.csv",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/thumbnail",
        "/api/v1/jobs/{id}/overlay",
        "/api/v1/jobs/{id}/cancel",
        "/api/v1/queue/pause",
        "/api/v1/queue/resume",
        "/api/v1/events",
        "/admin/cleanup-sessions",
        "/health",
        "/metrics",
        "/auth/login",
        "/auth/logout",
        "/auth/me",
        "/auth/pair",
        "/auth/pair/redeem",
    ] {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
    // The poll response documents the seed's fields.
    let poll = &doc["components"]["schemas"]["JobView"]["properties"];
    for field in
        ["job_id", "image_id", "filename", "status", "progress_percent", "error_message", "result", "eta_seconds"]
    {
        assert!(poll.get(field).is_some(), "JobView.{field}");
    }
    // Every documented route is served (an unknown route would answer "no such route").
    let id = uuid::Uuid::now_v7();
    for (path, methods) in paths {
        for method in methods.as_object().unwrap().keys() {
            if path == "/api/v1/events" {
                continue; // a stream; covered by the SSE tests
            }
            let uri = path.replace("{id}", &id.to_string());
            let res = f
                .app()
                .oneshot(
                    // As the admin: without a token every route but the public ones answers 401
                    // before routing says anything.
                    Request::builder()
                        .method(method.to_uppercase().as_str())
                        .uri(&uri)
                        .header("authorization", format!("Bearer {ADMIN}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = res.status();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert!(
                !String::from_utf8_lossy(&body).contains("no such route") && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed ({status})"
            );
        }
    }
}

mod auth_rules {
    use super::*;
    use demeter_auth::Role;

    async fn call(
        app: Router,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = if headers.iter().any(|(k, _)| *k == "content-type") {
            Body::from(r#"{"token":"x"}"#)
        } else {
            Body::empty()
        };
        let res = app.oneshot(req.body(body).unwrap()).await.unwrap();
        let (status, h) = (res.status(), res.headers().clone());
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, h, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    #[tokio::test]
    async fn no_or_wrong_token_is_401_with_a_bearer_challenge_and_health_says_little() {
        let f = Fixture::new();
        for uri in [
            "/api/v1/sessions",
            "/api/v1/events",
            "/metrics",
            "/api/v1/openapi.json",
            "/auth/me",
            "/api/v1/jobs/x/thumbnail",
        ] {
            let (code, h, body) = call(f.app(), "GET", uri, &[]).await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{uri}");
            assert_eq!(h["www-authenticate"], "Bearer realm=\"demeter\"", "{uri}");
            assert_eq!(body["error"], "unauthorized");
        }
        let (code, _, _) = call(f.app(), "GET", "/api/v1/sessions", &[("authorization", "Bearer dmt_wrong")]).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let (code, _, _) = call(f.app(), "POST", "/admin/cleanup-sessions", &[]).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        // /health answers without a token, but only whether it is ready.
        let (code, _, body) = call(f.app(), "GET", "/health", &[]).await;
        assert_eq!((code, body), (StatusCode::OK, serde_json::json!({ "ready": true })));
        // "Not ready" is a 503, and still says nothing more.
        let mut state = f.state();
        let not_ready = Health { ready: false, ..(state.health)() };
        state.health = Arc::new(move || not_ready.clone());
        let (code, _, body) = call(app(state), "GET", "/health", &[]).await;
        assert_eq!((code, body), (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "ready": false })));
        // The page itself loads, so people can sign in.
        assert_eq!(call(f.app(), "GET", "/app.js", &[]).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn roles_decide_what_a_token_may_do() {
        let f = Fixture::new();
        let viewer = f.auth.tokens.create("screen", Role::Viewer, t0()).unwrap();
        let uploader = f.auth.tokens.create("phone", Role::Uploader, t0()).unwrap();
        let (code, _, _) = call(f.app(), "GET", "/api/v1/sessions", &[("authorization", &bearer(&viewer))]).await;
        assert_eq!(code, StatusCode::OK, "viewers read");
        for (token, uri, expect) in [
            (&viewer, "/api/v1/queue/pause", StatusCode::FORBIDDEN),
            (&viewer, "/api/v1/photos/upload", StatusCode::FORBIDDEN),
            (&uploader, "/api/v1/queue/pause", StatusCode::FORBIDDEN),
            (&uploader, "/admin/cleanup-sessions", StatusCode::FORBIDDEN),
            (&uploader, "/api/v1/photos/upload", StatusCode::BAD_REQUEST), // allowed; the body is just not multipart
        ] {
            let (code, _, body) = call(f.app(), "POST", uri, &[("authorization", &bearer(token))]).await;
            assert_eq!(code, expect, "{uri}: {body}");
        }
    }

    #[tokio::test]
    async fn another_uploaders_session_is_403_but_folder_sessions_are_shared() {
        let f = Fixture::new();
        let alice = f.auth.tokens.create("alice", Role::Uploader, t0()).unwrap();
        let bob = f.auth.tokens.create("bob", Role::Uploader, t0()).unwrap();
        let viewer = f.auth.tokens.create("screen", Role::Viewer, t0()).unwrap();
        let upload = UploadSession {
            id: SessionId::new_v7(),
            created_at: t0(),
            expires_at: t0() + Duration::hours(24),
            source: SessionSource::Upload { files: 1, owner: Some("alice".into()) },
        };
        f.store.insert_session(&upload).unwrap();
        let job = f.job(upload.id, "a.jpg");
        let folder = f.session(t0());
        let poll = |id: SessionId| format!("/api/v1/photos/jobs/status?upload_session_id={id}");
        for (token, expect) in [(&alice, StatusCode::OK), (&bob, StatusCode::FORBIDDEN), (&viewer, StatusCode::OK)] {
            assert_eq!(call(f.app(), "GET", &poll(upload.id), &[("authorization", &bearer(token))]).await.0, expect);
            let detail = format!("/api/v1/jobs/{job}");
            assert_eq!(call(f.app(), "GET", &detail, &[("authorization", &bearer(token))]).await.0, expect);
            assert_eq!(
                call(f.app(), "GET", &poll(folder), &[("authorization", &bearer(token))]).await.0,
                StatusCode::OK
            );
        }
        let (_, _, list) = call(f.app(), "GET", "/api/v1/sessions", &[("authorization", &bearer(&bob))]).await;
        assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "bob sees only the folder session");
    }

    #[tokio::test]
    async fn an_uploader_sees_only_its_own_archived_results() {
        let f = Fixture::new();
        let alice = f.auth.tokens.create("alice", Role::Uploader, t0()).unwrap();
        let viewer = f.auth.tokens.create("screen", Role::Viewer, t0()).unwrap();
        let record = |name: &str, owner: Option<&str>| {
            let job = Job::new(JobId::new_v7(), SessionId::new_v7(), "i".into(), name.into(), name.into(), 1, 1, t0());
            let result = JobResult {
                session_id: uuid::Uuid::now_v7(),
                total_detected: 3,
                storage_location_id: Some("B1".into()),
                ..Default::default()
            };
            demeter_domain::archive::ArchivedResult::new(&job, &result, t0(), owner.map(str::to_owned))
        };
        let mine = record("mine.jpg", Some("alice"));
        let theirs = record("theirs.jpg", Some("bob"));
        let folder = record("folder.jpg", None);
        f.store.archive_insert_many(&[mine.clone(), theirs.clone(), folder]).unwrap();
        let names = |body: &Value| -> Vec<String> {
            let mut v: Vec<String> = body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["filename"].as_str().unwrap().to_owned())
                .collect();
            v.sort();
            v
        };
        let (_, _, body) = call(f.app(), "GET", "/api/v1/results", &[("authorization", &bearer(&alice))]).await;
        assert_eq!(names(&body), ["mine.jpg"]);
        let (_, _, body) = call(f.app(), "GET", "/api/v1/results", &[("authorization", &bearer(&viewer))]).await;
        assert_eq!(names(&body), ["folder.jpg", "mine.jpg", "theirs.jpg"]);
        let (_, _, series) =
            call(f.app(), "GET", "/api/v1/series?location=B1", &[("authorization", &bearer(&alice))]).await;
        assert_eq!(series["points"].as_array().unwrap().len(), 1);
        let thumb = |r: &demeter_domain::archive::ArchivedResult| format!("/api/v1/results/{}/thumbnail", r.result_id);
        let (code, _, _) = call(f.app(), "GET", &thumb(&theirs), &[("authorization", &bearer(&alice))]).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        // The viewer may: there is just no thumbnail file in this fixture.
        let (code, _, body) = call(f.app(), "GET", &thumb(&theirs), &[("authorization", &bearer(&viewer))]).await;
        assert_eq!((code, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
        let (code, _, body) =
            call(f.app(), "GET", "/api/v1/results?since=yesterday", &[("authorization", &bearer(&viewer))]).await;
        assert_eq!((code, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
    }

    #[tokio::test]
    async fn sign_in_sets_a_strict_http_only_cookie_and_cookie_changes_need_this_origin() {
        let f = Fixture::new();
        let login = |token: &str| {
            Request::post("/auth/login")
                .header("content-type", "application/json")
                .body(Body::from(format!(r#"{{"token":"{token}"}}"#)))
                .unwrap()
        };
        assert_eq!(f.app().oneshot(login("nope")).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        let res = f.app().oneshot(login(ADMIN)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let set = res.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"), "{set}");
        let cookie = set.split(';').next().unwrap().to_owned();
        let (code, _, me) = call(f.app(), "GET", "/auth/me", &[("cookie", &cookie)]).await;
        assert_eq!((code, me["role"].as_str()), (StatusCode::OK, Some("admin")));
        // A change with the cookie from another site (or no Origin at all) is refused …
        let (code, _, _) = call(
            f.app(),
            "POST",
            "/api/v1/queue/pause",
            &[("cookie", &cookie), ("host", "greenhouse:7878"), ("origin", "http://evil.example")],
        )
        .await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        let (code, _, _) =
            call(f.app(), "POST", "/api/v1/queue/pause", &[("cookie", &cookie), ("host", "greenhouse:7878")]).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        // … and accepted from the page itself.
        let (code, _, _) = call(
            f.app(),
            "POST",
            "/api/v1/queue/pause",
            &[("cookie", &cookie), ("host", "greenhouse:7878"), ("origin", "http://greenhouse:7878")],
        )
        .await;
        assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE, "a form-like body is refused even from this origin");
        let (code, _, _) = call(
            f.app(),
            "POST",
            "/api/v1/queue/pause",
            &[
                ("cookie", &cookie),
                ("host", "greenhouse:7878"),
                ("origin", "http://greenhouse:7878"),
                ("content-type", "application/json"),
            ],
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        // Revoking the token signs its browsers out too.
        let viewer = f.auth.tokens.create("screen", Role::Viewer, t0()).unwrap();
        let res = f.app().oneshot(login(&viewer)).await.unwrap();
        let viewer_cookie = res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
        assert_eq!(call(f.app(), "GET", "/auth/me", &[("cookie", &viewer_cookie)]).await.0, StatusCode::OK);
        f.auth.tokens.revoke("screen").unwrap();
        assert_eq!(call(f.app(), "GET", "/auth/me", &[("cookie", &viewer_cookie)]).await.0, StatusCode::UNAUTHORIZED);
        // Sign out ends the session.
        let (code, h, _) = call(f.app(), "POST", "/auth/logout", &[("cookie", &cookie)]).await;
        assert_eq!(code, StatusCode::NO_CONTENT);
        assert!(h["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
        assert_eq!(call(f.app(), "GET", "/auth/me", &[("cookie", &cookie)]).await.0, StatusCode::UNAUTHORIZED);
    }
}

mod lan_rules {
    use super::*;

    fn with_hosts(f: &Fixture, hosts: &[&str]) -> Router {
        let auth = Arc::new(demeter_server::auth::Auth::new(
            f.auth.tokens.clone(),
            hosts.iter().map(|h| h.to_string()).collect(),
        ));
        app(AppState { auth, ..f.state() })
    }

    async fn status(app: Router, host: &str, auth: Option<&str>) -> (StatusCode, axum::http::HeaderMap) {
        let mut req = Request::get("/api/v1/sessions").header("host", host);
        if let Some(t) = auth {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        (res.status(), res.headers().clone())
    }

    #[tokio::test]
    async fn only_this_machines_names_are_answered() {
        let f = Fixture::new();
        let app = with_hosts(&f, &["localhost", "127.0.0.1", "::1", "greenhouse"]);
        for ok in ["localhost:7878", "127.0.0.1:7878", "[::1]:7878", "GreenHouse:7878", "greenhouse"] {
            assert_eq!(status(app.clone(), ok, Some(ADMIN)).await.0, StatusCode::OK, "{ok}");
        }
        for evil in ["evil.example:7878", "attacker.test", "127.0.0.2:7878"] {
            assert_eq!(status(app.clone(), evil, Some(ADMIN)).await.0, StatusCode::MISDIRECTED_REQUEST, "{evil}");
        }
        // The page itself is protected too: a rebinding attack starts by loading it.
        let res =
            app.oneshot(Request::get("/").header("host", "evil.example").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::MISDIRECTED_REQUEST);
    }

    #[tokio::test]
    async fn guessing_tokens_is_slowed_down_without_a_ban() {
        let f = Fixture::new();
        let app = f.app();
        for i in 0..10 {
            assert_eq!(
                status(app.clone(), "localhost", Some(&format!("dmt_guess{i}"))).await.0,
                StatusCode::UNAUTHORIZED,
                "{i}"
            );
        }
        let (code, headers) = status(app.clone(), "localhost", Some("dmt_guess10")).await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=6).contains(&wait), "{wait}");
        // While limited even the right token waits: no oracle for guesses.
        assert_eq!(status(app.clone(), "localhost", Some(ADMIN)).await.0, StatusCode::TOO_MANY_REQUESTS);
        // No credentials at all (a page loading before sign-in) never counts.
        let g = Fixture::new();
        for _ in 0..30 {
            assert_eq!(status(g.app(), "localhost", None).await.0, StatusCode::UNAUTHORIZED);
        }
    }

    #[tokio::test]
    async fn event_streams_are_capped() {
        let f = Fixture::new();
        let mut config = demeter_domain::config::Config::default();
        config.server.max_event_streams = 1;
        let app = app(AppState { config: Arc::new(config), ..f.state() });
        let open = raw_get(app.clone(), "/api/v1/events").await;
        assert_eq!(open.status(), StatusCode::OK);
        let second = raw_get(app.clone(), "/api/v1/events").await;
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(second.headers()["retry-after"], "5");
        drop(open);
    }
}

#[tokio::test]
async fn pairing_codes_sign_a_phone_in_once() {
    let f = Fixture::new();
    let json = |method: &str, uri: &str, body: &str, bearer: Option<&str>| {
        let mut r = Request::builder().method(method).uri(uri).header("content-type", "application/json");
        if let Some(t) = bearer {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.body(Body::from(body.to_owned())).unwrap()
    };
    let res = f.app().oneshot(json("POST", "/auth/pair", r#"{"role":"uploader"}"#, Some(ADMIN))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let offer: Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(offer["qr_svg"].as_str().unwrap().contains("<svg"));
    let code = offer["url"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();

    let redeem = |code: &str| json("POST", "/auth/pair/redeem", &format!(r#"{{"code":"{code}"}}"#), None);
    let res = f.app().oneshot(redeem(&code)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["set-cookie"].to_str().unwrap().contains("HttpOnly"));
    let who: Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(who["role"], "uploader");
    assert!(f.auth.tokens.list().iter().any(|t| t.name == who["name"].as_str().unwrap()), "a revocable token exists");
    assert_eq!(f.app().oneshot(redeem(&code)).await.unwrap().status(), StatusCode::UNAUTHORIZED, "single use");
    // A second phone paired in the same second (the test clock stands still) gets its own token.
    let res = f.app().oneshot(json("POST", "/auth/pair", "{}", Some(ADMIN))).await.unwrap();
    let offer: Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let second = offer["url"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let res = f.app().oneshot(redeem(&second)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let who2: Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_ne!(who2["name"], who["name"]);

    let phone = f.auth.tokens.create("phone", demeter_auth::Role::Uploader, t0()).unwrap();
    assert_eq!(
        f.app().oneshot(json("POST", "/auth/pair", "{}", Some(&phone))).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let admin_pair = json("POST", "/auth/pair", r#"{"role":"admin"}"#, Some(ADMIN));
    assert_eq!(f.app().oneshot(admin_pair).await.unwrap().status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn desktop_sign_in_links_make_a_session_but_no_token() {
    let f = Fixture::new();
    let desk = demeter_auth::Identity { name: "desktop".into(), role: demeter_auth::Role::Admin };
    let (code, _) = f.auth.pairings.offer_session(desk, t0());
    let tokens_before = f.auth.tokens.list().len();
    let redeem = Request::post("/auth/pair/redeem")
        .header("content-type", "application/json")
        .body(Body::from(format!(r#"{{"code":"{code}"}}"#)))
        .unwrap();
    let res = f.app().oneshot(redeem).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert_eq!(f.auth.tokens.list().len(), tokens_before, "no token piles up per app start");
    let me = Request::get("/auth/me").header("cookie", &cookie).body(Body::empty()).unwrap();
    let res = f.app().oneshot(me).await.unwrap();
    let who: Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!((who["name"].as_str(), who["role"].as_str()), (Some("desktop"), Some("admin")));
}

#[tokio::test]
async fn pairing_links_made_on_this_machine_point_phones_at_the_lan_address() {
    let f = Fixture::new();
    let pair = |host: &str| {
        Request::post("/auth/pair")
            .header("host", host)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Body::from("{}"))
            .unwrap()
    };
    let offer = |res: axum::response::Response| async move {
        assert_eq!(res.status(), StatusCode::OK);
        serde_json::from_slice::<Value>(&res.into_body().collect().await.unwrap().to_bytes()).unwrap()
    };
    let lan = app(AppState { lan_url: Some("http://192.168.7.2:7878/".into()), ..f.state() });
    let o = offer(lan.clone().oneshot(pair("127.0.0.1:7878")).await.unwrap()).await;
    assert!(o["url"].as_str().unwrap().starts_with("http://192.168.7.2:7878/#/pair/"), "{o}");
    assert_eq!(o["reachable_from_lan"], true);
    let o = offer(lan.oneshot(pair("greenhouse.local:7878")).await.unwrap()).await;
    assert!(o["url"].as_str().unwrap().starts_with("http://greenhouse.local:7878/#/pair/"), "the name the admin used");
    let o = offer(f.app().oneshot(pair("localhost:7878")).await.unwrap()).await;
    assert_eq!(o["reachable_from_lan"], false, "LAN access off: the page must say so");
}

#[tokio::test]
async fn reprocessing_a_session_with_another_model_keeps_old_results_until_new_ones_are_stored() {
    let f = Fixture::new();
    let s = f.session(t0());
    let done = f.job(s, "a.jpg");
    let failed = f.job(s, "b.jpg");
    for id in [done, failed] {
        assert_eq!(f.store.claim_next(0, t0()).unwrap().unwrap().id, id);
    }
    let result = JobResult { total_detected: 7, ..Default::default() };
    f.store.update(done, |j| j.complete(result, t0())).unwrap();
    f.store.update(failed, |j| j.fail(JobError::permanent("corrupt"), t0())).unwrap();
    let uploader = f.auth.tokens.create("phone", demeter_auth::Role::Uploader, t0()).unwrap();
    let post = |token: &str, body: &str| {
        Request::post(format!("/api/v1/sessions/{s}/reprocess"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let json = |res: axum::response::Response| async move {
        let status = res.status();
        (status, serde_json::from_slice::<Value>(&res.into_body().collect().await.unwrap().to_bytes()).unwrap())
    };

    let (code, _) = json(f.app().oneshot(post(&uploader, r#"{"model":"plant-unet"}"#)).await.unwrap()).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "admins only");
    let (code, body) = json(f.app().oneshot(post(ADMIN, r#"{"model":"nope"}"#)).await.unwrap()).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "no such model installed");
    assert!(body["error"]["message"].as_str().unwrap_or(&body.to_string()).contains("m, plant-unet"), "{body}");

    let (code, body) = json(f.app().oneshot(post(ADMIN, r#"{"model":"plant-unet"}"#)).await.unwrap()).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!((body["model"].as_str(), body["requeued"].as_u64()), (Some("plant-unet"), Some(2)));
    let (_, detail) = get(f.app(), &format!("/api/v1/jobs/{done}")).await;
    assert_eq!(detail["status"], "pending");
    assert_eq!(detail["model"], "plant-unet");
    assert_eq!(detail["previous_result"]["total_detected"], 7, "the old count stays visible: {detail}");
    assert_eq!(f.store.job(failed).unwrap().unwrap().model.as_deref(), Some("plant-unet"));

    let (code, _) = json(f.app().oneshot(post(ADMIN, "{}")).await.unwrap()).await;
    assert_eq!(code, StatusCode::CONFLICT, "not while its photos are queued");
    let (code, _) = json(
        f.app()
            .oneshot(
                Request::post(format!("/api/v1/sessions/{}/reprocess", SessionId::new_v7()))
                    .header("authorization", format!("Bearer {ADMIN}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn models_are_listed_and_an_install_answers_in_the_json_error_shape() {
    let f = Fixture::new();
    let (status, body) = get(f.app(), "/api/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["default"], "m");
    assert_eq!(body["models"][1]["name"], "plant-unet");

    let boundary = "b0undary";
    let form = |parts: &[(&str, Option<&str>, &str)]| {
        let mut body = String::new();
        for (field, file, value) in parts {
            let file = file.map(|f| format!("; filename=\"{f}\"")).unwrap_or_default();
            body +=
                &format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"{file}\r\n\r\n{value}\r\n");
        }
        body + &format!("--{boundary}--\r\n")
    };
    let ct = format!("multipart/form-data; boundary={boundary}");
    // No model file: 400.
    let (status, _, body) =
        send_body(f.app(), "POST", "/api/v1/models", &ct, &form(&[("plant_classes", None, "seedling")])).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("\"model\""), "{body}");
    // The engine refuses the model: 422 with its reason (the test double's, here).
    let (status, _, body) =
        send_body(f.app(), "POST", "/api/v1/models", &ct, &form(&[("model", Some("../best.onnx"), "xx")])).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unprocessable")), "{body}");
    assert_eq!(body["detail"], "cannot load the model in best.onnx: ONNX Runtime cannot read it", "the path is cut");
    // Not multipart: 415 or 400, in the JSON shape.
    let (status, _, body) = send_body(f.app(), "POST", "/api/v1/models", "application/json", "{}").await;
    assert!(status.is_client_error() && body["error"].is_string(), "{status} {body}");
}

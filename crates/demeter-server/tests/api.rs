//! The router driven with `oneshot` over a real sled store on disk.

use std::sync::Arc;

use axum::{
    body::Body,
    http::{Request, StatusCode},
    Router,
};
use chrono::{DateTime, Duration, Utc};
use demeter_domain::{
    health::{Health, ModelHealth, QueueHealth, WatcherHealth, WorkersHealth},
    Clock, Job, JobError, JobId, JobResult, ManualClock, ModelRef, SessionId, SessionSource, Stage,
    UploadSession,
};
use demeter_server::{app, AppState};
use demeter_store::Store;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000, 0).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    clock: ManualClock,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 8 << 20).unwrap());
        Self {
            _dir: dir,
            store,
            clock: ManualClock::new(t0()),
        }
    }

    fn app(&self) -> Router {
        app(AppState {
            store: self.store.clone(),
            clock: Arc::new(self.clock.clone()),
            health: Arc::new(|| Health {
                ready: true,
                version: "test".into(),
                execution_provider: "CPU".into(),
                warnings: vec![],
                model: ModelHealth {
                    name: "m".into(),
                    version: "1".into(),
                    sha256: "x".into(),
                },
                workers: WorkersHealth {
                    count: 4,
                    busy: 0,
                    intra_threads: 1,
                },
                queue: QueueHealth {
                    pending: 0,
                    processing: 0,
                },
                watcher: WatcherHealth::default(),
            }),
        })
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
        self.store
            .enqueue(&job, &format!("hash-{name}"), t0() + Duration::hours(48))
            .unwrap();
        job.id
    }
}

async fn get(app: Router, uri: &str) -> (StatusCode, Value) {
    let res = app
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    assert!(
        ct.starts_with("application/json"),
        "{uri}: content-type {ct}"
    );
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
    f.store
        .update(running, |j| j.advance(Stage::Segment))
        .unwrap();
    f.store
        .update(done, |j| {
            j.complete(
                JobResult {
                    session_id: uuid::Uuid::nil(),
                    total_detected: 7,
                    plants: vec![],
                    plant_area_fraction: 0.2,
                    storage_location_id: Some("bench-a".into()),
                    model: ModelRef {
                        name: "m".into(),
                        version: "1".into(),
                    },
                    timings_ms: Default::default(),
                    width: 10,
                    height: 10,
                },
                t0() + Duration::seconds(3),
            )
        })
        .unwrap();
    f.store
        .update(failed, |j| {
            j.fail(JobError::permanent("corrupt or truncated JPEG image"), t0())
        })
        .unwrap();

    let (code, body) = get(
        f.app(),
        &format!("/api/v1/photos/jobs/status?upload_session_id={s}"),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["jobs", "last_updated", "summary", "upload_session_id"]
    );
    assert_eq!(body["upload_session_id"], s.to_string());
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 4);
    let job_keys: Vec<&str> = jobs[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        job_keys,
        [
            "completed_at",
            "error_message",
            "filename",
            "image_id",
            "job_id",
            "progress_percent",
            "result",
            "started_at",
            "status"
        ]
    );
    assert_eq!(jobs[0]["status"], "completed");
    assert_eq!(jobs[0]["progress_percent"], 100);
    assert_eq!(jobs[0]["result"]["total_detected"], 7);
    assert_eq!(jobs[0]["result"]["storage_location_id"], "bench-a");
    assert_eq!(
        jobs[0]["result"]["session_id"],
        uuid::Uuid::nil().to_string()
    );
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
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("upload_session_id"));
    let (code, body) = get(
        f.app(),
        "/api/v1/photos/jobs/status?upload_session_id=not-a-uuid",
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "bad_request");
    let (code, body) = get(
        f.app(),
        &format!(
            "/api/v1/photos/jobs/status?upload_session_id={}",
            uuid::Uuid::now_v7()
        ),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Upload session not found or expired");
    let (code, _) = get(f.app(), "/api/v1/nope").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
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
    assert_eq!(
        get(f.app(), &uri).await.0,
        StatusCode::NOT_FOUND,
        "expired, not yet swept"
    );
    let report = f.store.sweep_expired(f.clock.now(), 100).unwrap();
    assert_eq!(report.sessions, 1);
    assert!(report.jobs.is_empty(), "jobs live 48 h");
    assert_eq!(get(f.app(), &uri).await.0, StatusCode::NOT_FOUND);
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
async fn health_reports_the_snapshot() {
    let f = Fixture::new();
    let (code, body) = get(f.app(), "/health").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["execution_provider"], "CPU");
    assert_eq!(body["workers"]["count"], 4);
}

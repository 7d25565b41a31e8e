//! JSON shapes shared by the poll endpoint, job detail and the event stream.

use chrono::{DateTime, Utc};
use demeter_domain::{
    eta::{self, Estimate, StageStats},
    Job, JobResult, SessionId, SessionSummary, Stage, UploadSession,
};
use serde::{Deserialize, Serialize};

use crate::{error::AppError, AppState};

/// `result` of a completed job, as in the seed.
#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobResultView {
    pub session_id: uuid::Uuid,
    pub total_detected: u32,
    pub storage_location_id: Option<String>,
    /// Whether the count can be trusted (the list marks the ones that cannot).
    pub trust: demeter_domain::Trust,
}

/// One entry of `jobs[]`: the seed's fields, plus the stage and the ETA.
#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobView {
    pub job_id: String,
    pub image_id: String,
    pub filename: String,
    pub status: String,
    /// The stage milestone, advanced within a stage by its measured mean duration (never past
    /// the next milestone).
    pub progress_percent: u8,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub result: Option<JobResultView>,
    /// The stage running now, while processing.
    pub stage: Option<Stage>,
    /// Seconds until done from measured stage durations; `null` until there is data.
    pub eta_seconds: Option<f64>,
}

impl JobView {
    pub fn new(j: &Job, estimate: Estimate) -> Self {
        Self {
            job_id: j.id.to_string(),
            image_id: j.image_id.clone(),
            filename: j.filename.clone(),
            status: j.status().as_str().to_owned(),
            progress_percent: estimate.progress_percent,
            started_at: j.started_at(),
            completed_at: j.completed_at(),
            error_message: j.error().map(|e| e.message.clone()),
            result: j.result().map(|r| JobResultView {
                session_id: r.session_id,
                total_detected: r.total_detected,
                storage_location_id: r.storage_location_id.clone(),
                trust: r.trust.clone(),
            }),
            stage: match &j.state {
                demeter_domain::JobState::Processing { stage, .. } => Some(*stage),
                _ => None,
            },
            eta_seconds: estimate.eta_seconds.map(|s| (s * 10.0).round() / 10.0),
        }
    }
}

/// A session's jobs with their estimates, computed from one read of the learned durations and
/// one pass over the queue prefix.
pub struct SessionSnapshot {
    pub session: UploadSession,
    pub jobs: Vec<Job>,
    pub estimates: Vec<Estimate>,
}

impl SessionSnapshot {
    /// `Ok(None)` for unknown or expired sessions.
    pub fn load(state: &AppState, id: SessionId) -> Result<Option<Self>, AppError> {
        let now = state.clock.now();
        // One consistent view, of what is on disk: a reported state must survive a kill -9, and
        // a job read as pending must still be in the queue when its place is looked up.
        let workers = state.config.workers.count;
        let read = state.store.read_durable(|store| {
            let Some(session) = store.session(id)?.filter(|s| s.expires_at > now) else {
                return Ok::<_, demeter_store::StoreError>(None);
            };
            let jobs = store.session_jobs(id)?;
            let estimates = store.estimates(&jobs, &store.stage_stats()?, workers, now)?;
            Ok(Some(Self { session, jobs, estimates }))
        });
        Ok(read?)
    }

    pub fn summary(&self) -> SessionSummary {
        SessionSummary::from_jobs(&self.jobs)
    }

    pub fn eta_seconds(&self) -> Option<f64> {
        eta::session_eta(self.estimates.iter().copied()).map(|s| (s * 10.0).round() / 10.0)
    }

    pub fn job_views(&self) -> Vec<JobView> {
        self.jobs.iter().zip(&self.estimates).map(|(j, e)| JobView::new(j, *e)).collect()
    }
}

/// Estimates for `jobs` (any mix of states).
pub fn estimates(
    state: &AppState,
    jobs: &[Job],
    stats: &StageStats,
    now: DateTime<Utc>,
) -> Result<Vec<Estimate>, AppError> {
    Ok(state.store.estimates(jobs, stats, state.config.workers.count, now)?)
}

/// `GET /api/v1/jobs/{id}`: everything known about one job.
#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobView,
    pub upload_session_id: String,
    pub created_at: DateTime<Utc>,
    pub attempts: u32,
    /// `permanent`, `transient`, `crashed` or `cancelled` when failed.
    pub error_kind: Option<demeter_domain::ErrorKind>,
    /// Plants (boxes, centroids, areas), per-stage timings and the model, when completed.
    pub details: Option<JobResult>,
    /// While the job is re-run with another model (or when that re-run failed): the result it
    /// had before. Cleared once the new result is stored.
    pub previous_result: Option<JobResult>,
    /// The installed model the job runs with when it is not the default.
    pub model: Option<String>,
    pub thumbnail_url: String,
    pub overlay_url: String,
    /// A multi-class model's classes with their counts and the colours the overlay boxes them
    /// in; empty for a mask model.
    pub legend: Vec<LegendEntry>,
}

/// One class in a job's overlay.
#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LegendEntry {
    pub class: String,
    pub count: u32,
    /// Whether the class counts as plants (`total_detected`).
    pub plant: bool,
    /// The box colour, `#rrggbb`.
    pub colour: String,
}

impl LegendEntry {
    /// The legend of `result`'s overlay.
    pub fn of(result: &JobResult) -> Vec<Self> {
        result
            .class_counts
            .iter()
            .map(|(class, count)| {
                let [r, g, b] = result.class_colour(class).expect("a class of the result");
                LegendEntry {
                    class: class.clone(),
                    count: *count,
                    plant: result.model.plant_classes.contains(class),
                    colour: format!("#{r:02x}{g:02x}{b:02x}"),
                }
            })
            .collect()
    }
}

//! One job per photo, and the state machine it moves through.
//!
//! ```text
//!            claim                advance(stage)*          complete
//! Pending ──────────▶ Processing ───────────────▶ Processing ─────────▶ Completed
//!    ▲                    │                                  fail
//!    │     reclaim        ├────────────────────────────────────────────▶ Failed
//!    └────────────────────┘ (attempts < max; else Failed "worker crashed repeatedly")
//! ```
//!
//! Every transition is a method returning `Result<(), TransitionError>`, so an impossible move
//! (completing a pending job, restarting a finished one) is an error the store refuses to write.

use std::{fmt, path::PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{result::JobResult, session::SessionId};

crate::ids::uuid_id! {
    /// Identifies a job. UUIDv7, so ids sort by creation time and sled keys stay in FIFO order.
    JobId
}

/// The processing stages of a job, in order. Each has the progress milestone that is stored and
/// announced when the stage *starts*; a job only reaches 100 % by completing.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading the file from disk.
    Read,
    /// Decoding, applying EXIF orientation and resizing to the model's input.
    Decode,
    /// Matching the photo to a storage location (before counting: a location may say which
    /// tray the photo shows).
    Locate,
    /// Running the segmentation model (ONNX Runtime).
    Segment,
    /// Turning the mask into plant instances and a count.
    Detect,
    /// Writing the thumbnail and the result.
    Save,
}

impl Stage {
    pub const ALL: [Stage; 6] = [Stage::Read, Stage::Decode, Stage::Locate, Stage::Segment, Stage::Detect, Stage::Save];

    /// Progress shown while this stage runs (percent).
    pub fn milestone(self) -> u8 {
        match self {
            Stage::Read => 5,
            Stage::Decode => 15,
            Stage::Locate => 25,
            Stage::Segment => 40,
            Stage::Detect => 70,
            Stage::Save => 95,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Decode => "decode",
            Stage::Segment => "segment",
            Stage::Detect => "detect",
            Stage::Locate => "locate",
            Stage::Save => "save",
        }
    }
}

/// Whether retrying could help. Shown to users and decides nothing automatically yet.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The input itself is bad (undecodable, too large, not an image): retrying will not help.
    Permanent,
    /// The environment failed (I/O, runtime): a retry may succeed.
    Transient,
    /// The worker died while processing this job, repeatedly.
    Crashed,
    /// A person cancelled the job before it ran.
    Cancelled,
}

/// Why a job failed, in words a greenhouse worker can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub kind: ErrorKind,
    pub message: String,
}

impl JobError {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Permanent, message: message.into() }
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Transient, message: message.into() }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Where a job is in its life, with the data that only makes sense in that state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JobState {
    Pending {
        /// When the job (re-)entered the queue.
        queued_at: DateTime<Utc>,
    },
    Processing {
        started_at: DateTime<Utc>,
        /// The stage now running; its milestone is the job's progress.
        stage: Stage,
        /// When `stage` began: with the stage's measured mean duration this gives the
        /// in-stage progress and the ETA, never more than the next milestone.
        stage_since: DateTime<Utc>,
        /// Which worker holds the job (for logs and `/health`).
        worker: usize,
    },
    Completed {
        started_at: DateTime<Utc>,
        completed_at: DateTime<Utc>,
        result: Box<JobResult>,
    },
    Failed {
        /// `None` when the job never started (e.g. a file that is not an image).
        started_at: Option<DateTime<Utc>>,
        completed_at: DateTime<Utc>,
        error: JobError,
    },
}

/// What a session's summary needs of a job: when it arrived and where it is. The store reads it
/// from a stored job without decoding the rest (a completed job's result is most of its bytes),
/// so the sessions list costs little however often the page asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobHead {
    pub created_at: DateTime<Utc>,
    pub status: StatusName,
}

impl JobHead {
    pub fn is_terminal(self) -> bool {
        matches!(self.status, StatusName::Completed | StatusName::Failed)
    }
}

impl From<&Job> for JobHead {
    fn from(job: &Job) -> Self {
        JobHead { created_at: job.created_at, status: job.status() }
    }
}

/// The four status names of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusName {
    Pending,
    Processing,
    Completed,
    Failed,
}

impl StatusName {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusName::Pending => "pending",
            StatusName::Processing => "processing",
            StatusName::Completed => "completed",
            StatusName::Failed => "failed",
        }
    }
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {job}: cannot {action} a job that is {from}")]
pub struct TransitionError {
    pub job: JobId,
    pub action: &'static str,
    pub from: &'static str,
}

/// A photo's job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    /// The upload session the photo arrived in.
    pub upload_session_id: SessionId,
    /// Stable id of the image content (first 16 hex digits of its BLAKE3 hash), as `image_id` in the API.
    pub image_id: String,
    /// Absolute path of the photo when it was queued; the folder is the source of truth.
    pub path: PathBuf,
    /// Shown as the filename: the path relative to the watched folder, or for uploads the name
    /// the photo was sent with.
    pub filename: String,
    pub size: u64,
    /// File modification time in nanoseconds since the epoch, part of the dedup key.
    pub mtime_ns: i128,
    pub created_at: DateTime<Utc>,
    /// How many times a worker has started this job; capped by `max_attempts`.
    pub attempts: u32,
    pub state: JobState,
    /// The installed model to run (by name); `None`: the default model. Set by a reprocess.
    #[serde(default)]
    pub model: Option<String>,
    /// While a job is re-run with another model, its last result: nothing is lost until the
    /// new one is stored (and it stays if the re-run fails).
    #[serde(default)]
    pub previous_result: Option<Box<JobResult>>,
    /// The process died while this job and others were in flight: which one killed it (if any)
    /// is unknown, so this job runs alone until it finishes, and only a crash while it runs
    /// alone counts against it. Keeps a `kill -9` or power cut from failing healthy photos.
    #[serde(default)]
    pub suspect: bool,
    /// After an inference-device error: not claimed before this time, so other photos are
    /// tried meanwhile and an outage shows as errors across photos (which pause processing)
    /// rather than as one photo failing again and again.
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
}

impl Job {
    /// A new job waiting in the queue.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: JobId,
        upload_session_id: SessionId,
        image_id: String,
        path: PathBuf,
        filename: String,
        size: u64,
        mtime_ns: i128,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            upload_session_id,
            image_id,
            path,
            filename,
            size,
            mtime_ns,
            created_at: now,
            attempts: 0,
            state: JobState::Pending { queued_at: now },
            model: None,
            previous_result: None,
            suspect: false,
            not_before: None,
        }
    }

    pub fn status(&self) -> StatusName {
        match self.state {
            JobState::Pending { .. } => StatusName::Pending,
            JobState::Processing { .. } => StatusName::Processing,
            JobState::Completed { .. } => StatusName::Completed,
            JobState::Failed { .. } => StatusName::Failed,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.state, JobState::Completed { .. } | JobState::Failed { .. })
    }

    /// Progress in percent from stored milestones, never from elapsed time.
    pub fn progress_percent(&self) -> u8 {
        match &self.state {
            JobState::Pending { .. } => 0,
            JobState::Processing { stage, .. } => stage.milestone(),
            JobState::Completed { .. } => 100,
            // A failed job is finished: the seed shows 0 for it; its bar is drawn red by the UI.
            JobState::Failed { .. } => 0,
        }
    }

    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        match &self.state {
            JobState::Pending { .. } => None,
            JobState::Processing { started_at, .. } | JobState::Completed { started_at, .. } => Some(*started_at),
            JobState::Failed { started_at, .. } => *started_at,
        }
    }

    pub fn completed_at(&self) -> Option<DateTime<Utc>> {
        match &self.state {
            JobState::Completed { completed_at, .. } | JobState::Failed { completed_at, .. } => Some(*completed_at),
            _ => None,
        }
    }

    pub fn result(&self) -> Option<&JobResult> {
        match &self.state {
            JobState::Completed { result, .. } => Some(result),
            _ => None,
        }
    }

    pub fn error(&self) -> Option<&JobError> {
        match &self.state {
            JobState::Failed { error, .. } => Some(error),
            _ => None,
        }
    }

    fn refuse(&self, action: &'static str) -> TransitionError {
        TransitionError { job: self.id, action, from: self.status().as_str() }
    }

    /// A worker takes the job: counts an attempt and enters the first stage.
    pub fn claim(&mut self, worker: usize, now: DateTime<Utc>) -> Result<(), TransitionError> {
        match self.state {
            JobState::Pending { .. } => {
                self.attempts += 1;
                self.not_before = None;
                self.state = JobState::Processing { started_at: now, stage: Stage::Read, stage_since: now, worker };
                Ok(())
            }
            _ => Err(self.refuse("claim")),
        }
    }

    /// The job moves to a later stage. Going backwards is refused: progress never decreases.
    pub fn advance(&mut self, next: Stage, now: DateTime<Utc>) -> Result<(), TransitionError> {
        match &mut self.state {
            JobState::Processing { stage, stage_since, .. } if next >= *stage => {
                if next != *stage {
                    *stage = next;
                    *stage_since = now;
                }
                Ok(())
            }
            _ => Err(self.refuse("advance")),
        }
    }

    pub fn complete(&mut self, result: JobResult, now: DateTime<Utc>) -> Result<(), TransitionError> {
        match self.state {
            JobState::Processing { started_at, .. } => {
                self.state = JobState::Completed { started_at, completed_at: now, result: Box::new(result) };
                self.previous_result = None;
                self.suspect = false;
                Ok(())
            }
            _ => Err(self.refuse("complete")),
        }
    }

    /// Fails a processing job, or a pending one that can never be processed (not an image).
    pub fn fail(&mut self, error: JobError, now: DateTime<Utc>) -> Result<(), TransitionError> {
        match self.state {
            JobState::Processing { started_at, .. } => {
                self.state = JobState::Failed { started_at: Some(started_at), completed_at: now, error };
                self.suspect = false;
                Ok(())
            }
            JobState::Pending { .. } => {
                self.state = JobState::Failed { started_at: None, completed_at: now, error };
                Ok(())
            }
            _ => Err(self.refuse("fail")),
        }
    }

    /// Gives a job back to the queue because the appliance is shutting down: the attempt it
    /// was using is not counted, since the photo did nothing wrong.
    pub fn release(&mut self, now: DateTime<Utc>) -> Result<(), TransitionError> {
        match self.state {
            JobState::Processing { .. } => {
                self.attempts = self.attempts.saturating_sub(1);
                self.state = JobState::Pending { queued_at: now };
                Ok(())
            }
            _ => Err(self.refuse("release")),
        }
    }

    /// A person asks for a failed job to be tried again: back to the queue with a fresh
    /// attempt budget.
    pub fn retry(&mut self, now: DateTime<Utc>) -> Result<(), TransitionError> {
        match self.state {
            JobState::Failed { .. } => {
                self.attempts = 0;
                self.state = JobState::Pending { queued_at: now };
                Ok(())
            }
            _ => Err(self.refuse("retry")),
        }
    }

    /// Runs a finished job again with `model` (`None`: the default model). The current result,
    /// if any, is kept as `previous_result` until the new one is stored.
    pub fn reprocess(&mut self, model: Option<String>, now: DateTime<Utc>) -> Result<(), TransitionError> {
        match &mut self.state {
            JobState::Completed { result, .. } => {
                self.previous_result = Some(std::mem::take(result));
            }
            JobState::Failed { .. } => {}
            _ => return Err(self.refuse("reprocess")),
        }
        self.model = model;
        self.attempts = 0;
        self.state = JobState::Pending { queued_at: now };
        Ok(())
    }

    /// A person cancels a job that has not started yet.
    pub fn cancel(&mut self, now: DateTime<Utc>) -> Result<(), TransitionError> {
        match self.state {
            JobState::Pending { .. } => {
                self.state = JobState::Failed {
                    started_at: None,
                    completed_at: now,
                    error: JobError { kind: ErrorKind::Cancelled, message: "cancelled by user".into() },
                };
                Ok(())
            }
            _ => Err(self.refuse("cancel")),
        }
    }

    /// A job found in `processing` after the process died with other jobs in flight too: it
    /// goes back to the queue as a suspect, and the attempt it was using is not counted (the
    /// crash cannot be blamed on it yet; it will run alone, see [`Job::suspect`]).
    pub fn reclaim_as_suspect(&mut self, now: DateTime<Utc>) -> Result<(), TransitionError> {
        match self.state {
            JobState::Processing { .. } => {
                self.attempts = self.attempts.saturating_sub(1);
                self.suspect = true;
                self.state = JobState::Pending { queued_at: now };
                Ok(())
            }
            _ => Err(self.refuse("reclaim")),
        }
    }

    /// Inference failed under this job for a reason that is not the photo's (the device or
    /// runtime): back to the queue, not to be claimed before `not_before`, or failed with
    /// `error` once it has used `max_attempts` attempts, so a photo that keeps upsetting a
    /// working device still ends. `counted: false` gives the attempt back: the device was
    /// already known to be failing (a trial while processing is paused), so the photo is not
    /// to blame.
    pub fn retry_later(
        &mut self,
        error: JobError,
        max_attempts: u32,
        counted: bool,
        not_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        match self.state {
            JobState::Processing { started_at, .. } => {
                if !counted {
                    self.attempts = self.attempts.saturating_sub(1);
                }
                if self.attempts >= max_attempts {
                    let message = format!("{} (after {} attempts)", error.message, self.attempts);
                    self.state = JobState::Failed {
                        started_at: Some(started_at),
                        completed_at: now,
                        error: JobError { message, ..error },
                    };
                } else {
                    self.not_before = Some(not_before);
                    self.state = JobState::Pending { queued_at: now };
                }
                Ok(())
            }
            _ => Err(self.refuse("retry later")),
        }
    }

    /// A job found in `processing` after its worker vanished (crash, `kill -9`). It goes back to
    /// the queue, or fails once it has used `max_attempts` attempts, so a photo that kills the
    /// process cannot crash-loop the appliance.
    pub fn reclaim(&mut self, max_attempts: u32, now: DateTime<Utc>) -> Result<(), TransitionError> {
        match self.state {
            JobState::Processing { started_at, .. } => {
                if self.attempts >= max_attempts {
                    self.state = JobState::Failed {
                        started_at: Some(started_at),
                        completed_at: now,
                        error: JobError { kind: ErrorKind::Crashed, message: "worker crashed repeatedly".into() },
                    };
                } else {
                    self.state = JobState::Pending { queued_at: now };
                }
                Ok(())
            }
            _ => Err(self.refuse("reclaim")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{JobResult, ModelRef};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn job() -> Job {
        Job::new(JobId::new_v7(), SessionId::new_v7(), "abc".into(), "/p/a.jpg".into(), "a.jpg".into(), 10, 1, t(0))
    }

    fn result() -> JobResult {
        JobResult {
            total_detected: 3,
            model: ModelRef { name: "m".into(), version: "1".into(), ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn happy_path_moves_through_every_milestone() {
        let mut j = job();
        assert_eq!(j.progress_percent(), 0);
        j.claim(0, t(1)).unwrap();
        assert_eq!(j.attempts, 1);
        let mut last = 0;
        for s in Stage::ALL {
            j.advance(s, t(1)).unwrap();
            assert!(j.progress_percent() > last, "progress must grow at {s:?}");
            last = j.progress_percent();
        }
        j.complete(result(), t(2)).unwrap();
        assert_eq!(j.progress_percent(), 100);
        assert_eq!(j.status(), StatusName::Completed);
        assert_eq!(j.started_at(), Some(t(1)));
        assert_eq!(j.completed_at(), Some(t(2)));
    }

    #[test]
    fn reprocessing_keeps_the_old_result_until_a_new_one_is_stored() {
        let mut j = job();
        j.claim(0, t(1)).unwrap();
        j.complete(result(), t(2)).unwrap();
        j.reprocess(Some("plant-unet".into()), t(3)).unwrap();
        assert_eq!((j.status(), j.attempts, j.model.as_deref()), (StatusName::Pending, 0, Some("plant-unet")));
        assert_eq!(j.previous_result.as_deref().map(|r| r.total_detected), Some(3));
        assert!(j.reprocess(None, t(3)).is_err(), "not while pending");
        j.claim(0, t(4)).unwrap();
        assert!(j.reprocess(None, t(4)).is_err(), "not while processing");
        // A failed re-run keeps the old result available.
        j.fail(JobError::permanent("model refused"), t(5)).unwrap();
        assert_eq!(j.previous_result.as_deref().map(|r| r.total_detected), Some(3));
        j.reprocess(Some("plant-unet".into()), t(6)).unwrap();
        assert!(j.previous_result.is_some(), "still the last good result");
        j.claim(0, t(7)).unwrap();
        let mut new = result();
        new.total_detected = 4;
        j.complete(new, t(8)).unwrap();
        assert_eq!((j.result().map(|r| r.total_detected), j.previous_result.is_none()), (Some(4), true));
    }

    #[test]
    fn a_crash_with_others_in_flight_is_not_counted_and_marks_a_suspect() {
        let mut j = job();
        j.claim(0, t(1)).unwrap();
        j.reclaim_as_suspect(t(2)).unwrap();
        assert_eq!((j.status(), j.attempts, j.suspect), (StatusName::Pending, 0, true));
        j.claim(0, t(3)).unwrap();
        j.complete(result(), t(4)).unwrap();
        assert!(!j.suspect, "cleared once it finished");
    }

    #[test]
    fn impossible_transitions_are_refused() {
        let mut j = job();
        assert!(j.complete(result(), t(1)).is_err());
        assert!(j.advance(Stage::Decode, t(1)).is_err());
        assert!(j.reclaim(3, t(1)).is_err());
        j.claim(0, t(1)).unwrap();
        assert!(j.claim(1, t(1)).is_err(), "a processing job cannot be claimed twice");
        j.advance(Stage::Detect, t(1)).unwrap();
        let err = j.advance(Stage::Decode, t(1)).unwrap_err();
        assert_eq!(err.action, "advance");
        j.fail(JobError::permanent("bad"), t(2)).unwrap();
        assert!(j.claim(0, t(3)).is_err(), "a failed job stays failed");
        assert!(j.fail(JobError::permanent("again"), t(3)).is_err());
    }

    #[test]
    fn reclaim_requeues_until_attempts_are_used_up() {
        let mut j = job();
        for attempt in 1..=3 {
            j.claim(0, t(attempt)).unwrap();
            j.reclaim(3, t(attempt)).unwrap();
            if attempt < 3 {
                assert_eq!(j.status(), StatusName::Pending, "attempt {attempt}");
            }
        }
        assert_eq!(j.status(), StatusName::Failed);
        let e = j.error().unwrap();
        assert_eq!(e.kind, ErrorKind::Crashed);
        assert_eq!(e.message, "worker crashed repeatedly");
    }

    #[test]
    fn device_errors_requeue_until_attempts_are_used_up() {
        let mut j = job();
        let e = || JobError::transient("inference failed: CUDA error");
        for attempt in 1..=3 {
            j.claim(0, t(attempt)).unwrap();
            assert_eq!(j.not_before, None, "cleared by the claim");
            if attempt == 2 {
                // A trial while paused: the attempt is given back.
                j.retry_later(e(), 3, false, t(50), t(attempt)).unwrap();
                assert_eq!(j.attempts, 1);
                j.claim(0, t(51)).unwrap();
            }
            j.retry_later(e(), 3, true, t(100), t(attempt)).unwrap();
            if attempt < 3 {
                assert_eq!((j.status(), j.attempts, j.not_before), (StatusName::Pending, attempt as u32, Some(t(100))));
            }
        }
        let e = j.error().unwrap();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::Transient, "inference failed: CUDA error (after 3 attempts)")
        );
        assert!(j.retry_later(JobError::transient("x"), 3, true, t(9), t(9)).is_err(), "only a running job");
    }

    #[test]
    fn retry_and_cancel_follow_the_rules() {
        let mut j = job();
        assert!(j.retry(t(1)).is_err(), "a pending job has nothing to retry");
        j.cancel(t(1)).unwrap();
        assert_eq!(j.error().unwrap().kind, ErrorKind::Cancelled);
        assert!(j.cancel(t(2)).is_err());
        j.retry(t(2)).unwrap();
        assert_eq!((j.status(), j.attempts), (StatusName::Pending, 0));
        j.claim(0, t(3)).unwrap();
        assert!(j.cancel(t(3)).is_err(), "a running job is not cancelled under the worker");
        j.complete(result(), t(4)).unwrap();
        assert!(j.retry(t(5)).is_err(), "a completed job is not retried");
    }

    #[test]
    fn release_returns_the_attempt() {
        let mut j = job();
        j.claim(0, t(1)).unwrap();
        j.release(t(2)).unwrap();
        assert_eq!((j.status(), j.attempts), (StatusName::Pending, 0));
        assert!(j.release(t(3)).is_err());
    }

    #[test]
    fn a_pending_job_can_fail_without_starting() {
        let mut j = job();
        j.fail(JobError::permanent("not an image"), t(1)).unwrap();
        assert_eq!(j.started_at(), None);
        assert_eq!(j.completed_at(), Some(t(1)));
    }
}

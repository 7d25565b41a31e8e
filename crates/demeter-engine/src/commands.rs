//! The engine's command port: every change the server or the desktop asks for is carried out
//! here, stored, and then announced on the engine's event stream, the same stream the workers
//! and the ingest announce on. So a cancelled last photo finishes its session (the completion
//! tracker hears it), a retry wakes the workers at once, and SSE, the webhook, notifications and
//! the tray all learn of every change from one place.

use std::sync::Arc;

use demeter_domain::{
    command::{Command, CommandError, Commands, InstalledModel, ModelUpload, Outcome},
    Clock, ErrorKind, Job, SessionId,
};
use demeter_store::{Store, StoreError};

use crate::engine::EngineEvent;

/// What carrying out a command sets off besides the stored change.
pub trait Effects: Send + Sync {
    /// Announces a change that has been stored.
    fn publish(&self, event: EngineEvent);
    /// Wakes idle workers: there is work in the queue.
    fn wake_workers(&self);
    /// Runs the TTL sweep now; returns (sessions, jobs) removed.
    fn sweep(&self) -> (usize, usize);
    /// Checks and installs a model ([`crate::install`]).
    fn install_model(&self, upload: ModelUpload) -> Result<InstalledModel, CommandError>;
    /// The models jobs may run with, the default first.
    fn models(&self) -> Vec<String>;
}

/// Carries out [`Command`]s against the store. The engine builds one over its own effects
/// ([`crate::Engine::commands`]); tests may build one over a store and recorded effects.
pub struct Executor<E> {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    effects: E,
}

impl<E: Effects> Executor<E> {
    pub fn new(store: Arc<Store>, clock: Arc<dyn Clock>, effects: E) -> Self {
        Self { store, clock, effects }
    }

    /// The session's jobs, or 404 when it is unknown or expired.
    fn live_session(&self, id: SessionId) -> Result<Vec<Job>, CommandError> {
        let now = self.clock.now();
        match self.store.session(id).map_err(store)? {
            Some(s) if s.expires_at > now => self.store.read_durable(|st| st.session_jobs(id)).map_err(store),
            _ => Err(CommandError::NotFound("Upload session not found or expired".into())),
        }
    }

    /// Applies `change` to each job, stores it and announces it; returns how many changed.
    fn update_all(
        &self,
        jobs: impl IntoIterator<Item = Job>,
        change: impl Fn(&mut Job) -> Result<(), demeter_domain::TransitionError>,
    ) -> Result<usize, CommandError> {
        let mut n = 0;
        for job in jobs {
            let stored = self.store.update(job.id, &change).map_err(store)?;
            self.effects.publish(EngineEvent::Job(Box::new(stored)));
            n += 1;
        }
        Ok(n)
    }
}

impl<E: Effects> Commands for Executor<E> {
    fn execute(&self, command: Command) -> Result<Outcome, CommandError> {
        let now = self.clock.now();
        let outcome = match command {
            Command::RetrySession(id) => {
                let failed = self.live_session(id)?.into_iter().filter(|j| j.error().is_some());
                let jobs = self.update_all(failed, |j| j.retry(now))?;
                Outcome::Requeued { jobs, model: None }
            }
            Command::RetryJob(id) => {
                let job = self.store.read_durable(|st| st.job(id)).map_err(store)?.ok_or_else(|| job_gone(id))?;
                let jobs = self.update_all([job], |j| j.retry(now))?;
                Outcome::Requeued { jobs, model: None }
            }
            Command::CancelJob(id) => {
                let job = self.store.read_durable(|st| st.job(id)).map_err(store)?.ok_or_else(|| job_gone(id))?;
                if job.error().map(|e| e.kind) != Some(ErrorKind::Cancelled) {
                    self.update_all([job], |j| j.cancel(now))?;
                }
                Outcome::Cancelled
            }
            Command::Reprocess { session, model } => {
                let models = self.effects.models();
                let default = models.first().cloned().unwrap_or_default();
                let model = match model {
                    Some(name) if models.contains(&name) => name,
                    Some(name) => {
                        return Err(CommandError::NotFound(format!(
                            "model {name:?} is not installed; installed: {}",
                            models.join(", ")
                        )))
                    }
                    None => default.clone(),
                };
                let jobs = self.live_session(session)?;
                if jobs.iter().any(|j| !j.is_terminal()) {
                    return Err(CommandError::Conflict(
                        "the session is still processing; reprocess it when it is done".into(),
                    ));
                }
                // The default model runs jobs with no model set, so results say what they
                // always said.
                let job_model = (model != default).then(|| model.clone());
                let n = self.update_all(jobs, |j| j.reprocess(job_model.clone(), now))?;
                tracing::info!(%session, %model, jobs = n, "session reprocessing");
                Outcome::Requeued { jobs: n, model: Some(model) }
            }
            Command::SetPaused(paused) => {
                self.store.set_paused(paused).map_err(store)?;
                tracing::info!(paused, "processing {}", if paused { "paused" } else { "resumed" });
                self.effects.publish(EngineEvent::Paused(paused));
                Outcome::Paused(paused)
            }
            Command::CreateUploadSession(session) => {
                self.store.insert_session(&session).map_err(store)?;
                self.effects.publish(EngineEvent::Session(session));
                Outcome::SessionCreated
            }
            Command::Cleanup => {
                let (sessions, jobs) = self.effects.sweep();
                return Ok(Outcome::Cleaned { sessions, jobs });
            }
            Command::InstallModel(upload) => {
                return Ok(Outcome::ModelInstalled(Box::new(self.effects.install_model(*upload)?)));
            }
        };
        if matches!(outcome, Outcome::Requeued { jobs: 1.., .. } | Outcome::Paused(false)) {
            self.effects.wake_workers();
        }
        Ok(outcome)
    }
}

fn job_gone(id: demeter_domain::JobId) -> CommandError {
    CommandError::NotFound(format!("job {id} not found or expired"))
}

fn store(e: StoreError) -> CommandError {
    match e {
        StoreError::Transition(t) => CommandError::Conflict(t.to_string()),
        StoreError::JobNotFound(id) => job_gone(id),
        e => CommandError::Store(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::{DateTime, Duration, Utc};
    use demeter_domain::{JobId, JobResult, ManualClock, SessionSource, UploadSession};

    use super::*;

    #[derive(Default)]
    struct Recorded {
        events: Mutex<Vec<EngineEvent>>,
        wakes: Mutex<usize>,
    }

    impl Effects for Arc<Recorded> {
        fn publish(&self, event: EngineEvent) {
            self.events.lock().unwrap().push(event);
        }
        fn wake_workers(&self) {
            *self.wakes.lock().unwrap() += 1;
        }
        fn sweep(&self) -> (usize, usize) {
            (0, 0)
        }
        fn install_model(&self, _: ModelUpload) -> Result<InstalledModel, CommandError> {
            Err(CommandError::Invalid("no engine in this test".into()))
        }
        fn models(&self) -> Vec<String> {
            vec!["plant-exg".into(), "other".into()]
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap()
    }

    fn fixture() -> (tempfile::TempDir, Arc<Store>, Arc<Recorded>, Executor<Arc<Recorded>>, SessionId) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 8 << 20).unwrap());
        let rec = Arc::new(Recorded::default());
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(t0()));
        let exec = Executor::new(store.clone(), clock, rec.clone());
        let session = UploadSession {
            id: SessionId::new_v7(),
            created_at: t0(),
            expires_at: t0() + Duration::hours(24),
            source: SessionSource::Folder { subfolder: None },
        };
        exec.execute(Command::CreateUploadSession(session.clone())).unwrap();
        (dir, store, rec, exec, session.id)
    }

    fn add(store: &Store, session: SessionId, name: &str) -> JobId {
        let job = Job::new(JobId::new_v7(), session, name.into(), format!("/p/{name}").into(), name.into(), 1, 1, t0());
        store.enqueue(&job, name, t0() + Duration::hours(48)).unwrap();
        job.id
    }

    #[test]
    fn every_change_is_stored_then_announced_and_requeues_wake_the_workers() {
        let (_dir, store, rec, exec, s) = fixture();
        assert!(matches!(rec.events.lock().unwrap()[0], EngineEvent::Session(_)), "the new session is announced");
        let (a, b) = (add(&store, s, "a.jpg"), add(&store, s, "b.jpg"));
        // Cancelling the last pending photos is a stored, announced change (the tracker hears it).
        assert_eq!(exec.execute(Command::CancelJob(a)).unwrap(), Outcome::Cancelled);
        assert_eq!(exec.execute(Command::CancelJob(a)).unwrap(), Outcome::Cancelled, "idempotent");
        assert_eq!(exec.execute(Command::CancelJob(b)).unwrap(), Outcome::Cancelled);
        let announced: Vec<JobId> = rec
            .events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                EngineEvent::Job(j) if j.is_terminal() => Some(j.id),
                _ => None,
            })
            .collect();
        assert_eq!(announced, [a, b], "each cancel once, as stored");
        assert_eq!(*rec.wakes.lock().unwrap(), 0);
        // Retrying the session puts both back and wakes the workers once.
        let out = exec.execute(Command::RetrySession(s)).unwrap();
        assert_eq!(out, Outcome::Requeued { jobs: 2, model: None });
        assert_eq!(*rec.wakes.lock().unwrap(), 1);
        assert_eq!(store.pending_count(), 2);
        // Nothing to retry: nothing stored, announced or woken.
        let before = rec.events.lock().unwrap().len();
        assert_eq!(exec.execute(Command::RetrySession(s)).unwrap(), Outcome::Requeued { jobs: 0, model: None });
        assert_eq!((rec.events.lock().unwrap().len(), *rec.wakes.lock().unwrap()), (before, 1));
    }

    #[test]
    fn refusals_say_why_and_change_nothing() {
        let (_dir, store, rec, exec, s) = fixture();
        let a = add(&store, s, "a.jpg");
        store.claim_next(0, t0()).unwrap();
        assert!(matches!(exec.execute(Command::CancelJob(a)), Err(CommandError::Conflict(_))), "running");
        assert!(matches!(
            exec.execute(Command::Reprocess { session: s, model: None }),
            Err(CommandError::Conflict(m)) if m.contains("still processing")
        ));
        store.update(a, |j| j.complete(JobResult::default(), t0())).unwrap();
        assert!(matches!(
            exec.execute(Command::Reprocess { session: s, model: Some("nope".into()) }),
            Err(CommandError::NotFound(m)) if m.contains("installed: plant-exg, other")
        ));
        assert!(matches!(exec.execute(Command::RetrySession(SessionId::new_v7())), Err(CommandError::NotFound(_))));
        assert!(matches!(exec.execute(Command::CancelJob(JobId::new_v7())), Err(CommandError::NotFound(_))));
        assert_eq!(rec.events.lock().unwrap().len(), 1, "only the session's creation was announced");
        // A reprocess with another model keeps the result until the new one comes.
        let out = exec.execute(Command::Reprocess { session: s, model: Some("other".into()) }).unwrap();
        assert_eq!(out, Outcome::Requeued { jobs: 1, model: Some("other".into()) });
        let job = store.job(a).unwrap().unwrap();
        assert_eq!((job.model.as_deref(), job.previous_result.is_some()), (Some("other"), true));
    }

    #[test]
    fn pausing_is_stored_and_resuming_wakes_the_workers() {
        let (_dir, store, rec, exec, _) = fixture();
        assert_eq!(exec.execute(Command::SetPaused(true)).unwrap(), Outcome::Paused(true));
        assert!(store.paused().unwrap());
        assert_eq!(*rec.wakes.lock().unwrap(), 0);
        assert_eq!(exec.execute(Command::SetPaused(false)).unwrap(), Outcome::Paused(false));
        assert!(!store.paused().unwrap());
        assert_eq!(*rec.wakes.lock().unwrap(), 1);
        assert!(matches!(rec.events.lock().unwrap().last(), Some(EngineEvent::Paused(false))));
    }
}

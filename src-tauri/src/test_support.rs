//! Finished sessions and jobs for unit tests, made through the domain's own constructors so
//! their wording is the real one.

use chrono::DateTime;
use demeter_domain::{notify::SessionReport, SessionId};

pub fn report(total: u32, completed: u32, plants: u64) -> SessionReport {
    let session = SessionId::new_v7();
    // `plants` spread over the completed photos, the remainder on the first.
    let each = plants / u64::from(completed.max(1));
    let first = each + plants % u64::from(completed.max(1));
    let jobs: Vec<_> =
        (0..total).map(|i| finished(session, i < completed, if i == 0 { first } else { each })).collect();
    SessionReport::from_jobs(session, &jobs).unwrap()
}

pub fn pending(session: SessionId) -> demeter_domain::Job {
    let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    demeter_domain::Job::new(demeter_domain::JobId::new_v7(), session, "i".into(), "/a".into(), "a".into(), 1, 1, t)
}

pub fn finished(session: SessionId, ok: bool, plants: u64) -> demeter_domain::Job {
    use demeter_domain::{JobError, JobResult};
    let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let mut j = pending(session);
    j.claim(0, t).unwrap();
    if ok {
        let result = JobResult { total_detected: plants as u32, ..Default::default() };
        j.complete(result, t).unwrap();
    } else {
        j.fail(JobError::permanent("bad"), t).unwrap();
    }
    j
}

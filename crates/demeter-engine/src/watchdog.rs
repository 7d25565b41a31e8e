//! The watchdog: a stage running past `workers.stage_timeout_secs` (a hung decoder, a runtime
//! that never returns) fails its photo with "stage … timed out" and the stuck worker is
//! replaced by a fresh one with new sessions, so the pool stays at full strength.

use std::{
    sync::{atomic::Ordering, Arc},
    thread,
    time::Duration,
};

use demeter_domain::JobError;
use tracing::{error, warn};

use crate::{
    engine::{EngineEvent, Shared},
    worker,
};

pub(crate) fn spawn(shared: Arc<Shared>) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("demeter-watchdog".into())
        .spawn(move || {
            let limit = Duration::from_secs(shared.config.workers.stage_timeout_secs);
            while !shared.stopping() {
                check(&shared, limit);
                thread::sleep(Duration::from_millis(250).min(limit / 4).max(Duration::from_millis(50)));
            }
        })
        .expect("spawning the watchdog thread")
}

fn check(shared: &Arc<Shared>, limit: Duration) {
    let mut workers = shared.workers.lock().unwrap_or_else(|e| e.into_inner());
    for (id, (slot, handle)) in workers.iter_mut().enumerate() {
        let Some((job, stage)) = slot.abandon_if_stuck(limit) else { continue };
        // The stuck thread no longer counts as busy; it will not decrement when it returns.
        shared.busy.fetch_sub(1, Ordering::Relaxed);
        let reason = format!("stage {} timed out after {} s", stage.as_str(), limit.as_secs());
        error!(worker = id, %job, %reason, "replacing the worker");
        match shared.store.update(job, |j| j.fail(JobError::permanent(reason.clone()), shared.clock.now())) {
            Ok(j) => shared.publish(EngineEvent::Job(Box::new(j))),
            Err(e) => warn!(%job, error = %e, "cannot fail the timed-out job"),
        }
        match shared.factory.model_set() {
            Ok(set) => {
                let fresh = Arc::new(worker::WorkerSlot::default());
                // The old handle is dropped: the stuck thread is detached, never joined.
                *handle = Some(worker::spawn(id, set, shared.clone(), fresh.clone()));
                *slot = fresh;
            }
            Err(e) => error!(worker = id, error = %e, "cannot start a replacement worker; the pool is one short"),
        }
    }
}

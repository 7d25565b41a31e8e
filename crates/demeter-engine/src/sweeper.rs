//! The TTL sweeper: removes expired sessions and jobs (and their thumbnails and overlays) through the
//! expiry index, in bounded batches so polls are never starved while it runs.

use std::{sync::Arc, thread, time::Duration};

use tracing::{info, warn};

use crate::engine::Shared;

/// Records removed per store call; the write lock is released between batches.
const BATCH: usize = 500;

pub(crate) fn spawn(shared: Arc<Shared>) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("demeter-sweeper".into())
        .spawn(move || {
            let interval = Duration::from_secs(shared.config.store.sweep_interval_secs);
            let tick = Duration::from_millis(200);
            let mut waited = interval; // sweep once at start
            while !shared.stopping() {
                if waited >= interval {
                    sweep(&shared);
                    waited = Duration::ZERO;
                }
                thread::sleep(tick);
                waited += tick;
            }
        })
        .expect("spawning the sweeper thread")
}

/// Removes everything due now; returns (sessions, jobs) removed.
pub(crate) fn sweep(shared: &Shared) -> (usize, usize) {
    let (mut sessions, mut jobs) = (0, 0);
    loop {
        match shared.store.sweep_expired(shared.clock.now(), BATCH) {
            Ok(report) => {
                sessions += report.sessions;
                jobs += report.jobs.len();
                for job in &report.jobs {
                    let _ = std::fs::remove_file(shared.thumbnail_path(*job));
                    let _ = std::fs::remove_file(shared.overlay_path(*job));
                }
                if !report.more || shared.stopping() {
                    break;
                }
            }
            Err(e) => {
                warn!(error = %e, "TTL sweep failed; will retry");
                break;
            }
        }
    }
    if sessions + jobs > 0 {
        info!(sessions, jobs, "expired records removed");
    }
    (sessions, jobs)
}

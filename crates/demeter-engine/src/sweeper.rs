//! The TTL sweeper: removes expired sessions and jobs (and their thumbnails and overlays) through the
//! expiry index, in bounded batches so polls are never starved while it runs; and, when
//! `results.retention_days` is set, archived results of photos taken longer ago than that (the
//! archive outlives the jobs otherwise).

use std::{sync::Arc, thread, time::Duration};

use tracing::{info, warn};

use crate::engine::Shared;

/// Records removed per store call; readers wait at most one batch (see `Store::sweep_due`).
const BATCH: usize = 200;

pub(crate) fn spawn(shared: Arc<Shared>) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("demeter-sweeper".into())
        .spawn(move || {
            // The store counts its queue once, on first use (a walk of the whole queue: 65 ms with
            // 100,000 jobs on a quiet machine, 0.7 s at start-up beside the workers loading their
            // models): done here, before the first sweep starts writing, rather than on a
            // request.
            let pending = shared.store.pending_count();
            tracing::debug!(pending, "queue counted");
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
    let removed = shared.store.sweep_due(shared.clock.now(), BATCH, |report| {
        for job in &report.jobs {
            let _ = std::fs::remove_file(shared.thumbnail_path(*job));
        }
        shared.overlays.remove(&report.jobs);
        !shared.stopping()
    });
    if let Some(days) = shared.config.results.retention_days {
        sweep_archive(shared, days);
    }
    match removed {
        Ok(t) => {
            if t.sessions + t.jobs > 0 {
                info!(sessions = t.sessions, jobs = t.jobs, batches = t.calls, "expired records removed");
            }
            (t.sessions, t.jobs)
        }
        Err(e) => {
            warn!(error = %e, "TTL sweep failed; will retry");
            (0, 0)
        }
    }
}

/// Removes archived results of photos taken more than `days` ago, with their thumbnails, paced like
/// the TTL sweep.
fn sweep_archive(shared: &Shared, days: f64) {
    let cutoff = shared.clock.now() - chrono::Duration::milliseconds((days * 86_400_000.0) as i64);
    let removed = shared.store.sweep_archive_due(cutoff, BATCH, |ids| {
        for id in ids {
            let _ = std::fs::remove_file(shared.archived_thumbnail_path(*id));
        }
        !shared.stopping()
    });
    match removed {
        Ok(0) => {}
        Ok(n) => info!(results = n, days, "archived results past their retention removed"),
        Err(e) => warn!(error = %e, "results retention sweep failed; will retry"),
    }
}

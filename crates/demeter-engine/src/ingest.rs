//! Ready files → jobs: dedup, grouping into upload sessions, and durable enqueueing.

use std::{io::Read, sync::mpsc, sync::Arc, thread, time::Duration};

use chrono::Duration as ChronoDuration;
use demeter_domain::{
    session::{upload_session_of, Assignment},
    Job, JobError, JobId, SessionGrouper, SessionSource, UploadSession,
};
use demeter_store::{EnqueueOutcome, SeenKey, Store};
use demeter_watch::{FileKind, ReadyFile};
use tracing::{debug, info, warn};

use crate::engine::{EngineEvent, Shared};

pub(crate) fn spawn(rx: mpsc::Receiver<ReadyFile>, shared: Arc<Shared>) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("demeter-ingest".into())
        .spawn(move || {
            let mut grouper = SessionGrouper::new(ChronoDuration::seconds(shared.config.watch.session_gap_secs as i64));
            if let Err(e) = resume_sessions(&shared, &mut grouper) {
                warn!(error = %e, "cannot resume recent upload sessions; new photos start a new one");
            }
            while !shared.stopping() {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(file) => {
                        if let Err(e) = ingest(&shared, &mut grouper, &file) {
                            // The rescan offers the file again; nothing is lost.
                            warn!(path = %file.path.display(), error = %e, "could not queue photo; will retry on the next rescan");
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        })
        .expect("spawning the ingest thread")
}

/// After a restart, re-opens the newest session of each source whose last photo arrived
/// within the session gap, so a batch interrupted by a restart stays one batch.
fn resume_sessions(shared: &Shared, grouper: &mut SessionGrouper) -> Result<(), demeter_store::StoreError> {
    let now = shared.clock.now();
    let gap = ChronoDuration::seconds(shared.config.watch.session_gap_secs as i64);
    for session in shared.store.recent_sessions(16)? {
        if now - session.created_at > ChronoDuration::hours(1) {
            break; // newest first: nothing older can be within the gap
        }
        let last =
            shared.store.session_jobs(session.id)?.iter().map(|j| j.created_at).max().unwrap_or(session.created_at);
        if now - last <= gap {
            if let SessionSource::Folder { subfolder } = &session.source {
                grouper.resume(subfolder.as_deref(), session.id, last);
            }
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum IngestError {
    #[error("cannot read {0}")]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] demeter_store::StoreError),
}

fn ingest(shared: &Shared, grouper: &mut SessionGrouper, file: &ReadyFile) -> Result<(), IngestError> {
    let store: &Store = &shared.store;
    let seen = SeenKey { path: file.path.clone(), size: file.size, mtime_ns: file.mtime_ns };
    if store.seen(&seen)?.is_some() {
        return Ok(());
    }
    let hash = content_hash(&file.path)?;
    // The dedup rule (README, "Which photos are processed"): one job per photo content, except
    // that a photo saved again under its own path is processed again, once.
    let resaved = match store.content_seen(&hash)? {
        None => false,
        Some(existing) => match store.job(existing)? {
            Some(known) if known.path != file.path => {
                // Same bytes under another name: remember this file so rescans skip it.
                store.enqueue_alias(&seen, existing)?;
                info!(path = %file.path.display(), %existing, "identical to an already-known photo; not processed again");
                return Ok(());
            }
            // Saved again (a new mtime), or known only from a record the TTL removed.
            _ => {
                info!(path = %file.path.display(), previous = %existing, "photo saved again; processing it again");
                true
            }
        },
    };
    let now = shared.clock.now();
    let uploaded = match upload_session_of(&file.rel_path) {
        Some(id) => store.session(id)?.map(|s| s.id),
        None => None,
    };
    let assignment = match uploaded {
        Some(session) => Assignment { session, is_new: false },
        None => grouper.assign(file.top_level.as_deref(), now),
    };
    if assignment.is_new {
        let session = UploadSession {
            id: assignment.session,
            created_at: now,
            expires_at: Store::expires(now, shared.config.store.session_ttl_hours),
            source: SessionSource::Folder { subfolder: file.top_level.clone() },
        };
        if let Err(e) = store.insert_session(&session) {
            grouper.forget(session.id);
            return Err(e.into());
        }
        info!(session = %session.id, subfolder = ?file.top_level, "new upload session");
        shared.publish(EngineEvent::Session(session));
    }
    let mut job = Job::new(
        JobId::new_v7(),
        assignment.session,
        hash[..16].to_owned(),
        file.path.clone(),
        // An uploaded photo is shown by the name it was sent with, not its storage path.
        match uploaded {
            Some(_) => file.rel_path.splitn(3, '/').nth(2).unwrap_or(&file.rel_path).to_owned(),
            None => file.rel_path.clone(),
        },
        file.size,
        file.mtime_ns,
        now,
    );
    if file.kind == FileKind::NotAnImage {
        let reason = if file.size == 0 {
            "the file is empty"
        } else {
            "not an image: the file is named like a photo but is not JPEG, PNG, TIFF or WebP"
        };
        job.fail(JobError::permanent(reason), now).expect("a new job can fail");
    }
    let expires = Store::expires(now, shared.config.store.job_ttl_hours);
    let outcome = if resaved {
        store.enqueue_resaved(&job, &hash, expires).map(|()| EnqueueOutcome::Stored)?
    } else {
        store.enqueue(&job, &hash, expires)?
    };
    match outcome {
        EnqueueOutcome::Stored => {
            debug!(job = %job.id, file = %job.filename, status = job.status().as_str(), "queued");
            shared.publish(EngineEvent::Job(Box::new(job)));
            shared.work.notify();
        }
        EnqueueOutcome::Duplicate(existing) => {
            info!(path = %file.path.display(), %existing, "identical to an already-known photo; not processed again");
        }
    }
    Ok(())
}

/// Streaming BLAKE3 of a file, hex: the content identity used for dedup and `image_id`.
///
/// Stores written by earlier builds hashed with SHA-256; their records stay valid (a known path is
/// recognised by path, size and mtime before anything is hashed), only a byte-identical copy of
/// a photo first seen then is not recognised as a copy and is processed once more.
fn content_hash(path: &std::path::Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

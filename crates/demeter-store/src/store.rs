use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex, RwLock, RwLockWriteGuard,
    },
};

use chrono::{DateTime, Duration, Utc};
use demeter_domain::{
    eta::StageStats, Job, JobHead, JobId, JobState, SessionId, Stage, StatusName, TransitionError, UploadSession,
};
use serde::{de::DeserializeOwned, Serialize};
use sled::{transaction::ConflictableTransactionError, Transactional, Tree};
use tracing::{debug, info};

use crate::{
    archive::log::RecordLog,
    error::StoreError,
    keys::{self, ExpiryKind},
};

/// The folder under the data directory that holds the archive's segment files.
pub const ARCHIVE_DIR: &str = "archive";

const META_STAGE_STATS: &[u8] = b"stage_stats";
const META_PAUSED: &[u8] = b"paused";

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The cheap identity of a file on disk: same path, size and mtime means "already seen".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenKey {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
}

impl SeenKey {
    fn encode(&self) -> Vec<u8> {
        let mut k = self.path.as_os_str().as_encoded_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(&self.size.to_be_bytes());
        k.extend_from_slice(&self.mtime_ns.to_be_bytes());
        k
    }
}

/// What [`Store::enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// A new job was stored (pending, or failed when the file cannot be processed at all).
    Stored,
    /// The same content is already known under this job; nothing was queued.
    Duplicate(JobId),
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub sessions: usize,
    pub jobs: Vec<JobId>,
    /// True when the batch limit stopped the sweep before everything due was removed.
    pub more: bool,
}

/// What a whole [`Store::sweep_due`] removed, in how many batches.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepTotals {
    pub sessions: usize,
    pub jobs: usize,
    pub calls: usize,
}

/// The sled-backed store. Cheap to share behind an `Arc`; all methods are blocking (call them
/// from worker threads or `spawn_blocking`, never while holding up the async runtime for long).
pub struct Store {
    pub(crate) db: sled::Db,
    path: PathBuf,
    jobs: Tree,
    sessions: Tree,
    session_jobs: Tree,
    queue: Tree,
    processing: Tree,
    seen_path: Tree,
    seen_hash: Tree,
    expiry: Tree,
    /// Small appliance-wide values: learned stage durations, the pause switch.
    meta: Tree,
    /// The results archive ([`crate::archive`]): records, by time taken, by location.
    pub(crate) archive_by_location: Tree,
    pub(crate) archive_late_ids: Tree,
    /// The archive's records themselves, in segment files beside the database.
    pub(crate) records: RecordLog,
    /// Serialises read-modify-write sequences (held from a change's transaction through its
    /// flush). One process owns the database (sled's file lock), so an in-process lock is
    /// enough, and transactions never conflict or retry. Readers of what the API reports take
    /// it shared ([`Store::read_durable`]), so they never see a change that is not yet on disk.
    write: RwLock<()>,
    /// Per-session change counters, in memory: bumped after every stored change to a session or
    /// its jobs, so what is derived from a session (a poll answer) can be cached and known stale.
    generations: Mutex<HashMap<SessionId, u64>>,
    /// Entries in `queue` and `processing`, kept by every change to those trees (under the
    /// write lock) so `/health` and `/metrics` answer in O(1): sled's `Tree::len` walks the
    /// whole tree (65 ms with 100,000 jobs queued, far more while a sweep is writing). Counted
    /// from disk on first use, never stored, so a crash cannot leave them wrong.
    sizes: IndexSizes,
}

/// Sizes of the `queue` and `processing` trees, counted on first use rather than at open so a
/// large queue does not slow start-up (the first authenticated `/health` pays instead).
#[derive(Default)]
struct IndexSizes {
    /// Set once the counters below hold the trees' sizes; until then changes are not counted.
    counted: AtomicBool,
    queue: AtomicUsize,
    processing: AtomicUsize,
}

/// What one change did to the sizes of `queue` and `processing`, from what sled's inserts and
/// removes return (an insert over an existing key or a remove of a missing one changes
/// nothing). A transaction returns it, so a retried closure is counted once.
#[derive(Debug, Default, Clone, Copy)]
struct SizeChange {
    queue: isize,
    processing: isize,
}

impl SizeChange {
    fn inserted(prev: Option<sled::IVec>) -> isize {
        isize::from(prev.is_none())
    }

    fn removed(prev: Option<sled::IVec>) -> isize {
        -isize::from(prev.is_some())
    }
}

impl IndexSizes {
    /// Counts the trees if not yet done. Called under the write lock, so no change can fall
    /// between the count and the first [`IndexSizes::apply`] it must be added to.
    fn count_once(&self, queue: &Tree, processing: &Tree) {
        if !self.counted.load(Ordering::Acquire) {
            self.queue.store(queue.len(), Ordering::Relaxed);
            self.processing.store(processing.len(), Ordering::Relaxed);
            self.counted.store(true, Ordering::Release);
        }
    }

    /// Applies a committed change (nothing before the first count, which will include it).
    /// Callers hold the write lock, so changes never interleave.
    fn apply(&self, change: SizeChange) {
        if !self.counted.load(Ordering::Acquire) {
            return;
        }
        let add = |counter: &AtomicUsize, by: isize| {
            if by >= 0 {
                counter.fetch_add(by.unsigned_abs(), Ordering::Relaxed);
            } else {
                counter.fetch_sub(by.unsigned_abs(), Ordering::Relaxed);
            }
        };
        add(&self.queue, change.queue);
        add(&self.processing, change.processing);
    }
}

/// Which of the state indexes (`queue`, `processing`) a job belongs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Indexed {
    queued: bool,
    running: bool,
}

impl Indexed {
    fn of(job: &Job) -> Self {
        match job.state {
            JobState::Pending { .. } => Indexed { queued: true, running: false },
            JobState::Processing { .. } => Indexed { queued: false, running: true },
            JobState::Completed { .. } | JobState::Failed { .. } => Indexed { queued: false, running: false },
        }
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("domain types always serialise")
}

fn decode<T: DeserializeOwned>(what: &'static str, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|source| StoreError::Codec { what, source })
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

impl Store {
    /// Opens (or creates) the database in `dir`. A database held by another process and a
    /// corrupt one are reported as such, never as a panic.
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<Self> {
        Self::open_with_segments(dir, cache_capacity_bytes, crate::archive::log::SEGMENT_BYTES)
    }

    /// [`Store::open`] with the archive's segment files closed at `segment_bytes` (small ones
    /// let tests see segments come and go).
    #[doc(hidden)]
    pub fn open_with_segments(dir: &Path, cache_capacity_bytes: u64, segment_bytes: u64) -> Result<Self> {
        let path = dir.join("db");
        std::fs::create_dir_all(&path).map_err(|e| StoreError::Open { path: path.clone(), source: e.into() })?;
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_capacity_bytes)
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|e| classify_open_error(&path, e))?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| classify_open_error(&path, e));
        let store = Self {
            jobs: tree("jobs")?,
            sessions: tree("sessions")?,
            session_jobs: tree("session_jobs")?,
            queue: tree("queue")?,
            processing: tree("processing")?,
            seen_path: tree("seen_path")?,
            seen_hash: tree("seen_hash")?,
            expiry: tree("expiry")?,
            meta: tree("meta")?,
            archive_by_location: tree("archive_by_location")?,
            archive_late_ids: tree("archive_late_ids")?,
            records: RecordLog::open(&dir.join(ARCHIVE_DIR), segment_bytes)?,
            db,
            path,
            write: RwLock::new(()),
            generations: Mutex::default(),
            sizes: IndexSizes::default(),
        };
        let moved = store.migrate_inline_archive()?;
        if moved > 0 {
            info!(results = moved, "moved the results archive out of the database into its segment files");
        }
        if !store.db.was_recovered() {
            let rebuilt = store.reindex_archive()?;
            if rebuilt > 0 {
                tracing::warn!(results = rebuilt, dir = %store.records.dir().display(),
                    "a new job database: the results archive's index was rebuilt from its segment files");
            }
        }
        info!(path = %store.path.display(), "job store open");
        Ok(store)
    }

    /// Like [`Store::open`], but a corrupt database is moved aside (`db.corrupt-<time>`, kept
    /// for inspection) and a fresh one opened: the photo folder is the source of truth, and the
    /// start-up scan queues every photo in it again. Returns where the corrupt one went.
    pub fn open_or_rebuild(dir: &Path, cache_capacity_bytes: u64) -> Result<(Self, Option<PathBuf>)> {
        match Self::open(dir, cache_capacity_bytes) {
            Err(StoreError::Corrupt { path, source }) => {
                let aside = dir.join(format!("db.corrupt-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")));
                tracing::error!(db = %path.display(), error = %source, aside = %aside.display(),
                    "the job database is corrupt; moving it aside and rebuilding from the photo folder");
                std::fs::rename(&path, &aside)
                    .map_err(|e| StoreError::Open { path: path.clone(), source: e.into() })?;
                Ok((Self::open(dir, cache_capacity_bytes)?, Some(aside)))
            }
            other => other.map(|s| (s, None)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn lock(&self) -> RwLockWriteGuard<'_, ()> {
        self.write.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` while no change is between its transaction and its flush, so everything `f`
    /// reads is on disk. What the API reports goes through here: a state it has shown must
    /// survive a `kill -9`, and sled's readers would otherwise see a change a few milliseconds
    /// before its fsync completes.
    pub fn read_durable<T>(&self, f: impl FnOnce(&Self) -> T) -> T {
        let _shared = self.write.read().unwrap_or_else(|e| e.into_inner());
        f(self)
    }

    /// How many changes a session has had in this process (see [`Store::session_generation`]).
    fn bump(&self, session: SessionId) {
        *self.generations.lock().unwrap_or_else(|e| e.into_inner()).entry(session).or_default() += 1;
    }

    /// A counter that changes whenever the session or one of its jobs is stored anew (or the
    /// session is swept). Read it before deriving something from the session; if it is the
    /// same afterwards, and the same later, the derived value is still current.
    pub fn session_generation(&self, session: SessionId) -> u64 {
        self.generations.lock().unwrap_or_else(|e| e.into_inner()).get(&session).copied().unwrap_or(0)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// [`Store::flush`], for the archive's writers (which hold the write lock).
    pub(crate) fn flush_now(&self) -> Result<()> {
        self.flush()
    }

    /// Stores a new upload session and its expiry entry.
    pub fn insert_session(&self, session: &UploadSession) -> Result<()> {
        let _g = self.lock();
        let id = session.id.as_bytes();
        (&self.sessions, &self.expiry).transaction(|(sessions, expiry)| {
            sessions.insert(id, encode(session))?;
            expiry.insert(keys::expiry(session.expires_at, ExpiryKind::Session, id), &[])?;
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        self.bump(session.id);
        self.flush()
    }

    /// The job already recorded for this exact file, if any.
    pub fn seen(&self, key: &SeenKey) -> Result<Option<JobId>> {
        Ok(self.seen_path.get(key.encode())?.and_then(|v| JobId::from_slice(&v)))
    }

    /// The job already recorded for this content (BLAKE3, hex), if any.
    pub fn content_seen(&self, content_hash: &str) -> Result<Option<JobId>> {
        Ok(self.seen_hash.get(content_hash)?.and_then(|v| JobId::from_slice(&v)))
    }

    /// Remembers a file whose content is already known under `existing`, so rescans skip it.
    pub fn enqueue_alias(&self, key: &SeenKey, existing: JobId) -> Result<()> {
        let _g = self.lock();
        self.seen_path.insert(key.encode(), existing.as_bytes())?;
        self.flush()
    }

    /// Records a new job for a photo whose content hash is `content_hash`: the job, its session
    /// index entry, the queue entry (when pending), both dedup entries and its expiry, atomically.
    /// When the content is already known the file is only remembered, under the existing job.
    pub fn enqueue(&self, job: &Job, content_hash: &str, expires_at: DateTime<Utc>) -> Result<EnqueueOutcome> {
        let _g = self.lock();
        let seen = SeenKey { path: job.path.clone(), size: job.size, mtime_ns: job.mtime_ns }.encode();
        if let Some(existing) = self.content_seen(content_hash)? {
            self.seen_path.insert(seen, existing.as_bytes())?;
            self.flush()?;
            return Ok(EnqueueOutcome::Duplicate(existing));
        }
        self.insert_job(job, content_hash, expires_at)?;
        Ok(EnqueueOutcome::Stored)
    }

    /// Records a new job for a photo saved again under the same path (a new mtime) whose content
    /// is already known: unlike [`Store::enqueue`] it is processed again, once, and the content
    /// index then points to the new job.
    pub fn enqueue_resaved(&self, job: &Job, content_hash: &str, expires_at: DateTime<Utc>) -> Result<()> {
        let _g = self.lock();
        self.insert_job(job, content_hash, expires_at)
    }

    /// The job, its session index entry, the queue entry (when pending), both dedup entries and
    /// its expiry, atomically and flushed. The caller holds the write lock.
    fn insert_job(&self, job: &Job, content_hash: &str, expires_at: DateTime<Utc>) -> Result<()> {
        let seen = SeenKey { path: job.path.clone(), size: job.size, mtime_ns: job.mtime_ns }.encode();
        let id = job.id.as_bytes();
        let pending = matches!(job.state, JobState::Pending { .. });
        let change = (&self.jobs, &self.session_jobs, &self.queue, &self.seen_path, &self.seen_hash, &self.expiry)
            .transaction(|(jobs, session_jobs, queue, seen_path, seen_hash, expiry)| {
                let mut change = SizeChange::default();
                jobs.insert(id, encode(job))?;
                session_jobs.insert(&keys::session_job(job.upload_session_id.as_bytes(), id), &[])?;
                if pending {
                    change.queue += SizeChange::inserted(queue.insert(id, &[])?);
                }
                seen_path.insert(seen.as_slice(), id)?;
                seen_hash.insert(content_hash.as_bytes(), id)?;
                expiry.insert(keys::expiry(expires_at, ExpiryKind::Job, id), &[])?;
                Ok::<_, ConflictableTransactionError<StoreError>>(change)
            })?;
        self.sizes.apply(change);
        self.bump(job.upload_session_id);
        self.flush()
    }

    pub fn job(&self, id: JobId) -> Result<Option<Job>> {
        self.jobs.get(id.as_bytes())?.map(|v| decode("job", &v)).transpose()
    }

    pub fn session(&self, id: SessionId) -> Result<Option<UploadSession>> {
        self.sessions.get(id.as_bytes())?.map(|v| decode("session", &v)).transpose()
    }

    /// A session's jobs in arrival order. Reads only this session's index range.
    pub fn session_jobs(&self, id: SessionId) -> Result<Vec<Job>> {
        self.session_jobs_as(id)
    }

    /// A session's jobs in arrival order, each decoded as `T` (a whole [`Job`], or the part of
    /// one that a reader needs).
    fn session_jobs_as<T: DeserializeOwned>(&self, id: SessionId) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for entry in self.session_jobs.scan_prefix(id.as_bytes()) {
            let (k, _) = entry?;
            if let Some(job) = self.jobs.get(&k[16..])? {
                out.push(decode("job", &job)?);
            }
        }
        Ok(out)
    }

    /// What a session's summary needs of each of its jobs ([`JobHead`]), in arrival order:
    /// [`Store::session_jobs`] without decoding results, errors or paths.
    pub fn session_job_heads(&self, id: SessionId) -> Result<Vec<JobHead>> {
        /// The parts of a stored job a head is read from; serde skips the rest unparsed
        /// into values (the state is read by its `status` tag alone).
        #[derive(serde::Deserialize)]
        struct Stored {
            created_at: DateTime<Utc>,
            state: StoredState,
        }
        #[derive(serde::Deserialize)]
        struct StoredState {
            status: StatusName,
        }
        Ok(self
            .session_jobs_as::<Stored>(id)?
            .into_iter()
            .map(|Stored { created_at, state }| JobHead { created_at, status: state.status })
            .collect())
    }

    /// Up to `limit` sessions, newest first.
    pub fn recent_sessions(&self, limit: usize) -> Result<Vec<UploadSession>> {
        self.sessions.iter().rev().take(limit).map(|e| decode("session", &e?.1)).collect()
    }

    /// Jobs waiting in the queue. O(1) after the first call.
    pub fn pending_count(&self) -> usize {
        self.counted_sizes().queue.load(Ordering::Relaxed)
    }

    /// Jobs in `processing` (claimed by a worker). O(1) after the first call.
    pub fn processing_count(&self) -> usize {
        self.counted_sizes().processing.load(Ordering::Relaxed)
    }

    fn counted_sizes(&self) -> &IndexSizes {
        if !self.sizes.counted.load(Ordering::Acquire) {
            let _g = self.lock();
            self.sizes.count_once(&self.queue, &self.processing);
        }
        &self.sizes
    }

    /// The jobs in `processing` (at most one per worker, plus any a stuck worker left behind).
    /// A read error is an error, not a job silently left out: the crash-suspect rule and the
    /// ETAs both depend on seeing every running job.
    fn running_jobs(&self) -> Result<Vec<Job>> {
        let mut out = Vec::new();
        for key in self.processing.iter().keys() {
            if let Some(bytes) = self.jobs.get(key?)? {
                out.push(decode("job", &bytes)?);
            }
        }
        Ok(out)
    }

    /// Takes the oldest pending job for `worker` (skipping those backing off after a device
    /// error, [`Job::not_before`]): it leaves the queue, counts an attempt and enters
    /// `processing`, durably, before the worker touches the photo. A crash suspect
    /// ([`Job::suspect`]) is only taken when nothing else is processing, and nothing is taken
    /// while one runs, so a crash during its run can be blamed on it alone.
    pub fn claim_next(&self, worker: usize, now: DateTime<Utc>) -> Result<Option<Job>> {
        let _g = self.lock();
        let busy = self.running_jobs()?;
        if busy.iter().any(|j| j.suspect) {
            return Ok(None);
        }
        for key in self.queue.iter().keys() {
            let key = key?;
            let Some(bytes) = self.jobs.get(&key)? else {
                // A queue entry without a job (swept): drop it and look further.
                let queue = SizeChange::removed(self.queue.remove(&key)?);
                self.sizes.apply(SizeChange { queue, processing: 0 });
                continue;
            };
            let mut job: Job = decode("job", &bytes)?;
            if job.not_before.is_some_and(|t| t > now) {
                continue; // backing off after a device error; later photos go first
            }
            if job.suspect && !busy.is_empty() {
                return Ok(None);
            }
            job.claim(worker, now)?;
            self.write_job(&job)?;
            return Ok(Some(job));
        }
        Ok(None)
    }

    /// Applies a state-machine transition to a stored job and stores the result with its index
    /// changes; returns the job as stored. A refused transition writes nothing.
    pub fn update(&self, id: JobId, change: impl FnOnce(&mut Job) -> Result<(), TransitionError>) -> Result<Job> {
        let _g = self.lock();
        let mut job = self.job(id)?.ok_or(StoreError::JobNotFound(id))?;
        change(&mut job)?;
        self.write_job(&job)?;
        Ok(job)
    }

    /// [`Store::update`] without waiting for the disk: for a running job's progress (its stage
    /// milestones). A crash may lose such a change, and that is harmless — a job found running
    /// after a crash goes back to the queue whatever stage it had reached — while an fsync per
    /// milestone kept the workers waiting on the disk for about half of their time. The next
    /// flushed change (the outcome) makes it durable.
    pub fn update_progress(
        &self,
        id: JobId,
        change: impl FnOnce(&mut Job) -> Result<(), TransitionError>,
    ) -> Result<Job> {
        let _g = self.lock();
        let mut job = self.job(id)?.ok_or(StoreError::JobNotFound(id))?;
        change(&mut job)?;
        self.write_job_unflushed(&job)?;
        Ok(job)
    }

    /// Writes a job and keeps `queue` and `processing` in step with its state, then flushes.
    /// Callers hold the write lock.
    fn write_job(&self, job: &Job) -> Result<()> {
        self.write_job_unflushed(job)?;
        self.flush()
    }

    /// Writes a job (and, when it has just completed, its archive record) and keeps `queue` and
    /// `processing` in step with its state, in one transaction. Callers hold the write lock.
    fn write_job_unflushed(&self, job: &Job) -> Result<()> {
        let id = job.id.as_bytes();
        // The record is on disk before the transaction that indexes it.
        let archived = self.archive_record(job)?.map(|r| self.archive_prepare(&r)).transpose()?;
        let indexed = Indexed::of(job);
        if archived.is_none()
            && self.queue.contains_key(id)? == indexed.queued
            && self.processing.contains_key(id)? == indexed.running
        {
            // Only the job's own key changes (a running job's next milestone, say): a plain
            // insert does, and the write lock the caller holds keeps it in step with the
            // indexes. A transaction would seal sled's log buffer at its commit and wake every
            // idle sled I/O thread to write it: six times a photo, for nothing a crash needs.
            if !self.jobs.contains_key(id)? {
                return Err(StoreError::JobNotFound(job.id));
            }
            self.jobs.insert(id, encode(job))?;
            self.bump(job.upload_session_id);
            return Ok(());
        }
        let trees = (&self.jobs, &self.queue, &self.processing, &self.archive_by_location, &self.archive_late_ids);
        let change = trees.transaction(|(jobs, queue, processing, by_location, late)| {
            if jobs.get(id)?.is_none() {
                return Err(abort(StoreError::JobNotFound(job.id)));
            }
            jobs.insert(id, encode(job))?;
            if let Some(writes) = &archived {
                writes.apply_tx((by_location, late))?;
            }
            let Indexed { queued, running } = indexed;
            Ok(SizeChange {
                queue: if queued {
                    SizeChange::inserted(queue.insert(id, &[])?)
                } else {
                    SizeChange::removed(queue.remove(id)?)
                },
                processing: if running {
                    SizeChange::inserted(processing.insert(id, &[])?)
                } else {
                    SizeChange::removed(processing.remove(id)?)
                },
            })
        })?;
        self.sizes.apply(change);
        self.bump(job.upload_session_id);
        Ok(())
    }

    /// Learned per-stage durations (empty until a job has completed).
    pub fn stage_stats(&self) -> Result<StageStats> {
        self.meta.get(META_STAGE_STATS)?.map(|v| decode("stage stats", &v)).transpose().map(Option::unwrap_or_default)
    }

    /// Folds a completed job's stage timings into the learned durations. Not flushed on its
    /// own: it is recorded just before the job's outcome, whose flush carries it to disk.
    pub fn record_stage_timings(&self, timings_ms: &BTreeMap<Stage, u64>) -> Result<StageStats> {
        let _g = self.lock();
        let mut stats = self.stage_stats()?;
        stats.record(timings_ms);
        self.meta.insert(META_STAGE_STATS, encode(&stats))?;
        Ok(stats)
    }

    /// 0-based FIFO positions of those of `ids` that are pending. Reads the queue only up to
    /// the last of them.
    pub fn queue_positions(&self, ids: &[JobId]) -> Result<HashMap<JobId, usize>> {
        let wanted: HashSet<JobId> = ids.iter().copied().collect();
        let mut out = HashMap::new();
        if wanted.is_empty() {
            return Ok(out);
        }
        for (pos, key) in self.queue.iter().keys().enumerate() {
            if let Some(id) = JobId::from_slice(&key?) {
                if wanted.contains(&id) {
                    out.insert(id, pos);
                    if out.len() == wanted.len() {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Progress and time left for each of `jobs` (any mix of states): learned stage durations
    /// for running jobs, FIFO place among `workers` workers for pending ones.
    pub fn estimates(
        &self,
        jobs: &[Job],
        stats: &StageStats,
        workers: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<demeter_domain::eta::Estimate>> {
        let pending: Vec<_> =
            jobs.iter().filter(|j| matches!(j.state, JobState::Pending { .. })).map(|j| j.id).collect();
        let positions = self.queue_positions(&pending)?;
        // When the workers free up: only needed for pending jobs (at most `workers` records).
        let free_in = if pending.is_empty() {
            vec![0.0; workers.max(1)]
        } else {
            demeter_domain::eta::workers_free_in(&self.running_jobs()?, stats, now, workers)
        };
        Ok(jobs
            .iter()
            .map(|j| demeter_domain::eta::estimate(j, stats, now, positions.get(&j.id).copied(), &free_in))
            .collect())
    }

    /// Whether workers should stop taking new jobs (kept across restarts).
    pub fn paused(&self) -> Result<bool> {
        Ok(self.meta.get(META_PAUSED)?.is_some())
    }

    pub fn set_paused(&self, paused: bool) -> Result<()> {
        let _g = self.lock();
        if paused {
            self.meta.insert(META_PAUSED, &[])?;
        } else {
            self.meta.remove(META_PAUSED)?;
        }
        self.flush()
    }

    /// At start-up: every job left in `processing` lost its worker. Each goes back to the queue
    /// with the attempt counted, or fails after `max_attempts`. Returns the jobs as stored.
    pub fn reclaim_orphans(&self, max_attempts: u32, now: DateTime<Utc>) -> Result<Vec<Job>> {
        let ids: Vec<JobId> =
            self.processing.iter().keys().filter_map(|k| k.ok().and_then(|k| JobId::from_slice(&k))).collect();
        // Alone in flight: the crash is counted against it. With others: nobody can be blamed
        // yet; each becomes a suspect and will run alone.
        let alone = ids.len() == 1;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let reclaimed = self.update(id, |job| {
                if alone || job.suspect {
                    job.reclaim(max_attempts, now)
                } else {
                    job.reclaim_as_suspect(now)
                }
            });
            match reclaimed {
                Ok(job) => out.push(job),
                Err(StoreError::JobNotFound(_)) => {
                    let _g = self.lock();
                    let processing = SizeChange::removed(self.processing.remove(id.as_bytes())?);
                    self.sizes.apply(SizeChange { queue: 0, processing });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Removes up to `batch` expired records (sessions with their index, jobs with their queue
    /// entries) whose expiry is at or before `now`. Returns what went, so the caller can delete
    /// the files that belong to removed jobs.
    pub fn sweep_expired(&self, now: DateTime<Utc>, batch: usize) -> Result<SweepReport> {
        let _g = self.lock();
        let mut report = SweepReport::default();
        let due: Vec<_> =
            self.expiry.range(..keys::expiry_upper(now)).keys().take(batch + 1).collect::<Result<_, _>>()?;
        report.more = due.len() > batch;
        for key in due.into_iter().take(batch) {
            let Some((kind, id)) = keys::parse_expiry(&key) else {
                self.expiry.remove(&key)?;
                continue;
            };
            match kind {
                ExpiryKind::Session => {
                    let mut b = sled::Batch::default();
                    for k in self.session_jobs.scan_prefix(id).keys() {
                        b.remove(k?);
                    }
                    self.session_jobs.apply_batch(b)?;
                    self.sessions.remove(id)?;
                    if let Some(session) = SessionId::from_slice(&id) {
                        self.bump(session);
                    }
                    report.sessions += 1;
                }
                ExpiryKind::Job => {
                    let change =
                        (&self.jobs, &self.queue, &self.processing).transaction(|(jobs, queue, processing)| {
                            jobs.remove(&id)?;
                            Ok::<_, ConflictableTransactionError<StoreError>>(SizeChange {
                                queue: SizeChange::removed(queue.remove(&id)?),
                                processing: SizeChange::removed(processing.remove(&id)?),
                            })
                        })?;
                    self.sizes.apply(change);
                    if let Some(job) = JobId::from_slice(&id) {
                        report.jobs.push(job);
                    }
                }
            }
            self.expiry.remove(&key)?;
        }
        self.flush()?;
        if report.sessions + report.jobs.len() > 0 {
            debug!(sessions = report.sessions, jobs = report.jobs.len(), more = report.more, "swept expired records");
        }
        Ok(report)
    }

    /// Removes everything due at `now`, `batch` records per call of [`Store::sweep_expired`],
    /// pausing after each batch as long as it took: each batch briefly holds sled's write lock,
    /// which blocks readers too, so a long sweep never takes more than half of the store's time
    /// and a poll waits at most one batch. `each` sees every batch's report (to delete the
    /// removed jobs' files) and returns `false` to stop early (shutdown). Returns the totals.
    pub fn sweep_due(
        &self,
        now: DateTime<Utc>,
        batch: usize,
        mut each: impl FnMut(&SweepReport) -> bool,
    ) -> Result<SweepTotals> {
        let mut totals = SweepTotals::default();
        paced(
            || self.sweep_expired(now, batch),
            |report| {
                totals.calls += 1;
                totals.sessions += report.sessions;
                totals.jobs += report.jobs.len();
                each(report) && report.more
            },
        )?;
        Ok(totals)
    }

    /// When something made at `now` with a time to live of `hours` (fractions allowed; the
    /// config keeps it within a century) expires, to the millisecond.
    pub fn expires(now: DateTime<Utc>, hours: f64) -> DateTime<Utc> {
        now + Duration::milliseconds((hours * 3_600_000.0).round().clamp(1.0, 3.2e12) as i64)
    }
}

/// Runs `step` (one batch of a sweep, under the write lock) until `go_on` says stop, pausing
/// after each batch as long as it took: a long sweep takes at most half of the store's time, and
/// a reader waits at most one batch.
pub(crate) fn paced<R>(mut step: impl FnMut() -> Result<R>, mut go_on: impl FnMut(&R) -> bool) -> Result<()> {
    loop {
        let started = std::time::Instant::now();
        let done = step()?;
        if !go_on(&done) {
            return Ok(());
        }
        std::thread::sleep(started.elapsed());
    }
}

fn classify_open_error(path: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") => {
            StoreError::Locked { path: path.to_owned() }
        }
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) | sled::Error::ReportableBug(_) => {
            StoreError::Corrupt { path: path.to_owned(), source: e }
        }
        sled::Error::Io(ref io)
            if matches!(io.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof) =>
        {
            StoreError::Corrupt { path: path.to_owned(), source: e }
        }
        e => StoreError::Open { path: path.to_owned(), source: e },
    }
}

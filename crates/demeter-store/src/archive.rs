//! The results archive's trees and queries ([`demeter_domain::archive`]).
//!
//! - `archive`: result id (a UUIDv7, so in processing order) → the record, binary (postcard);
//! - `archive_taken`: taken-at + result id → nothing: every result in the order taken;
//! - `archive_location`: location id, 0, taken-at, result id → the point a chart needs (count
//!   and plant cover, 8 bytes), so a location's series is one range scan with no record reads.
//!
//! Records are written by [`Store::update`] in the transaction that completes their job, so an
//! archived result and the job that shows it are stored together or not at all.

use chrono::{DateTime, Utc};
use demeter_domain::{archive::ArchivedResult, Job, JobState, SessionId, SessionSource};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use uuid::Uuid;

use crate::{error::StoreError, keys, store::Store};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Index entries a page may read before it stops and hands back a cursor, so a filter that
/// matches little never scans a million records in one request.
pub const MAX_SCAN: usize = 20_000;

/// What [`Store::archive_page`] lists. Every filter is optional; all that are given must match.
#[derive(Debug, Clone, Default)]
pub struct ArchiveQuery {
    /// The storage location's id (`Some("")`: results without a location).
    pub location: Option<String>,
    /// Taken at or after.
    pub since: Option<DateTime<Utc>>,
    /// Taken before.
    pub until: Option<DateTime<Utc>>,
    /// The model's name.
    pub model: Option<String>,
    pub session: Option<SessionId>,
    /// A part of the file name (case-insensitive).
    pub q: Option<String>,
    /// Only this uploader's results (an uploader's own view).
    pub owner: Option<String>,
    /// Where the previous page stopped ([`ArchivePage::next_cursor`]).
    pub cursor: Option<String>,
    pub limit: usize,
    /// Oldest first (a spreadsheet export); else newest first.
    pub oldest_first: bool,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivePage {
    pub results: Vec<ArchivedResult>,
    /// Pass it back for the next page; `None` when there is nothing more. A page may hold fewer
    /// than `limit` results (even none) and still have a cursor: it stopped after [`MAX_SCAN`].
    pub next_cursor: Option<String>,
}

/// A point of a location's series: when, how many plants, how much cover.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesPoint {
    pub taken_at: DateTime<Utc>,
    pub result_id: Uuid,
    pub total_detected: u32,
    pub plant_cover: f32,
}

/// Why a cursor was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the cursor is not one this API gave (pass back next_cursor unchanged)")]
pub struct BadCursor;

pub(crate) fn encode_record(r: &ArchivedResult) -> Vec<u8> {
    postcard::to_stdvec(r).expect("archive records always serialise")
}

pub(crate) fn decode_record(b: &[u8]) -> Result<ArchivedResult> {
    postcard::from_bytes(b).map_err(|source| StoreError::Binary { what: "archived result", source })
}

fn point_value(r: &ArchivedResult) -> [u8; 8] {
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&r.total_detected.to_be_bytes());
    v[4..].copy_from_slice(&r.plant_cover.to_be_bytes());
    v
}

/// Writes `r` and its index entries inside a transaction.
pub(crate) fn insert(
    (archive, taken, location): (&TransactionalTree, &TransactionalTree, &TransactionalTree),
    r: &ArchivedResult,
) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
    let id = r.result_id.as_bytes();
    archive.insert(id, encode_record(r))?;
    taken.insert(&keys::archive_taken(r.taken_at, id), &[])?;
    location.insert(keys::archive_location(r.location_id.as_deref().unwrap_or(""), r.taken_at, id), &point_value(r))?;
    Ok(())
}

impl Store {
    /// The archive record `job`'s state calls for: its completed result, when not archived yet.
    pub(crate) fn archive_record(&self, job: &Job) -> Result<Option<ArchivedResult>> {
        let JobState::Completed { completed_at, result, .. } = &job.state else { return Ok(None) };
        if self.archive.contains_key(result.session_id.as_bytes())? {
            return Ok(None);
        }
        let owner = match self.session(job.upload_session_id)?.map(|s| s.source) {
            Some(SessionSource::Upload { owner, .. }) => owner,
            _ => None,
        };
        Ok(Some(ArchivedResult::new(job, result, *completed_at, owner)))
    }

    /// One archived result.
    pub fn archived(&self, result: Uuid) -> Result<Option<ArchivedResult>> {
        self.archive.get(result.as_bytes())?.map(|v| decode_record(&v)).transpose()
    }

    /// Archived results, all of them (O(n): for reports and tests).
    pub fn archive_len(&self) -> usize {
        self.archive.len()
    }

    /// Bytes the archive's records take (keys and values of its three trees), for the benchmark.
    pub fn archive_bytes(&self) -> Result<u64> {
        let mut bytes = 0u64;
        for tree in [&self.archive, &self.archive_taken, &self.archive_location] {
            for entry in tree.iter() {
                let (k, v) = entry?;
                bytes += (k.len() + v.len()) as u64;
            }
        }
        Ok(bytes)
    }

    /// A page of archived results matching `query`, newest taken first (or oldest first).
    pub fn archive_page(&self, query: &ArchiveQuery) -> Result<std::result::Result<ArchivePage, BadCursor>> {
        let (tree, prefix) = match &query.location {
            Some(loc) => (&self.archive_location, keys::archive_location_prefix(loc)),
            None => (&self.archive_taken, Vec::new()),
        };
        let (mut lower, mut upper) = bounds(&prefix, query.since, query.until);
        if let Some(cursor) = &query.cursor {
            // A cursor is a key of the index read; one from elsewhere only moves the bound (to
            // an empty page, for a cursor outside this location's range).
            let Some(after) = decode_cursor(cursor) else { return Ok(Err(BadCursor)) };
            if query.oldest_first {
                // Strictly after the cursor: the cursor with a 0 byte appended is its successor.
                let mut next = after;
                next.push(0);
                lower = lower.max(next);
            } else {
                upper = Some(upper.map_or(after.clone(), |u| u.min(after)));
            }
        }
        let range = match upper {
            // `since` after `until`, or a cursor past the end: nothing.
            Some(upper) if upper <= lower => return Ok(Ok(ArchivePage { results: Vec::new(), next_cursor: None })),
            Some(upper) => tree.range(lower..upper),
            None => tree.range(lower..),
        };
        let mut iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            if query.oldest_first { Box::new(range) } else { Box::new(range.rev()) };
        let q = query.q.as_ref().map(|q| q.to_lowercase());
        let mut results = Vec::new();
        let mut scanned = 0;
        let mut last_key = None;
        let limit = query.limit.max(1);
        for entry in iter.by_ref() {
            let (key, _) = entry?;
            scanned += 1;
            if let Some(id) = keys::archive_result_of(&key) {
                if let Some(bytes) = self.archive.get(id)? {
                    let r = decode_record(&bytes)?;
                    let keep = query.model.as_ref().is_none_or(|m| &r.model_name == m)
                        && query.session.is_none_or(|s| r.upload_session_id == s)
                        && query.owner.as_ref().is_none_or(|o| r.owner.as_ref() == Some(o))
                        && q.as_ref().is_none_or(|q| r.filename.to_lowercase().contains(q.as_str()));
                    if keep {
                        results.push(r);
                    }
                }
            }
            last_key = Some(key);
            if results.len() >= limit || scanned >= MAX_SCAN {
                break;
            }
        }
        // A cursor only when the range may hold more than this page read.
        let more = (results.len() >= limit || scanned >= MAX_SCAN) && iter.next().is_some();
        let next_cursor = if more { last_key.map(|k| encode_cursor(&k)) } else { None };
        Ok(Ok(ArchivePage { results, next_cursor }))
    }

    /// A location's results in the order taken (`""`: those without a location), from the
    /// index alone.
    pub fn location_series(
        &self,
        location: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<SeriesPoint>> {
        let prefix = keys::archive_location_prefix(location);
        let (lower, upper) = bounds(&prefix, since, until);
        let upper = upper.expect("a location's prefix is never empty");
        let mut out = Vec::new();
        if upper <= lower {
            return Ok(out);
        }
        for entry in self.archive_location.range(lower..upper) {
            let (k, v) = entry?;
            if let Some(p) = point(&prefix, &k, &v) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Every location id in the archive (`""`: results without a location), in order: one
    /// seek per location, however many results each has.
    pub fn archive_locations(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut next: Vec<u8> = Vec::new();
        while let Some(entry) = self.archive_location.range(next.clone()..).next() {
            let (k, _) = entry?;
            let Some(end) = k.iter().position(|b| *b == 0) else { break };
            out.push(String::from_utf8_lossy(&k[..end]).into_owned());
            next = k[..=end].to_vec();
            *next.last_mut().expect("the prefix ends in 0") += 1;
        }
        Ok(out)
    }

    /// The photos of `location` just before and just after the one taken at `taken_at` as
    /// `result` (in the order taken), from the index alone.
    pub fn location_neighbours(
        &self,
        location: &str,
        taken_at: DateTime<Utc>,
        result: Uuid,
    ) -> Result<(Option<SeriesPoint>, Option<SeriesPoint>)> {
        let prefix = keys::archive_location_prefix(location);
        let key = keys::archive_location(location, taken_at, result.as_bytes());
        let before = self.archive_location.range(prefix.clone()..key.clone()).next_back().transpose()?;
        let mut after_start = key;
        after_start.push(0);
        let after = self.archive_location.range(after_start..).next().transpose()?;
        let at = |e: Option<(sled::IVec, sled::IVec)>| {
            e.filter(|(k, _)| k.starts_with(&prefix)).and_then(|(k, v)| point(&prefix, &k, &v))
        };
        Ok((at(before), at(after)))
    }

    /// A location's last `n` points, oldest first (the latest photo and the ones before it).
    pub fn location_tail(&self, location: &str, n: usize) -> Result<Vec<SeriesPoint>> {
        let prefix = keys::archive_location_prefix(location);
        let mut out = Vec::with_capacity(n);
        for entry in self.archive_location.scan_prefix(&prefix).rev().take(n) {
            let (k, v) = entry?;
            if let Some(p) = point(&prefix, &k, &v) {
                out.push(p);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Removes every result processed before `cutoff`, `batch` at a time and paced like the TTL
    /// sweep ([`Store::sweep_due`]), so the API never waits more than one batch. `each` gets each
    /// batch's ids (to delete their thumbnails) and returns `false` to stop early. Returns how
    /// many went.
    pub fn sweep_archive_due(
        &self,
        cutoff: DateTime<Utc>,
        batch: usize,
        mut each: impl FnMut(&[Uuid]) -> bool,
    ) -> Result<usize> {
        let mut total = 0;
        crate::store::paced(
            || self.sweep_archive(cutoff, batch),
            |(ids, more)| {
                total += ids.len();
                each(ids) && *more
            },
        )?;
        Ok(total)
    }

    /// Removes up to `batch` results processed before `cutoff`, oldest first, with their index
    /// entries; returns their ids (their thumbnails go too) and whether more are due.
    pub fn sweep_archive(&self, cutoff: DateTime<Utc>, batch: usize) -> Result<(Vec<Uuid>, bool)> {
        let _g = self.lock();
        let mut removed = Vec::new();
        for entry in self.archive.iter() {
            let (k, v) = entry?;
            let r = decode_record(&v)?;
            if r.processed_at >= cutoff {
                return self.flush_removed(removed, false);
            }
            if removed.len() == batch {
                return self.flush_removed(removed, true);
            }
            let id = r.result_id.as_bytes();
            self.archive.remove(&k)?;
            self.archive_taken.remove(keys::archive_taken(r.taken_at, id))?;
            self.archive_location.remove(keys::archive_location(
                r.location_id.as_deref().unwrap_or(""),
                r.taken_at,
                id,
            ))?;
            removed.push(r.result_id);
        }
        self.flush_removed(removed, false)
    }

    fn flush_removed(&self, removed: Vec<Uuid>, more: bool) -> Result<(Vec<Uuid>, bool)> {
        if !removed.is_empty() {
            self.flush_now()?;
        }
        Ok((removed, more))
    }

    /// Writes archive records directly (the benchmark's million, and tests): each with its
    /// index entries, one flush at the end.
    pub fn archive_insert_many(&self, records: &[ArchivedResult]) -> Result<()> {
        let _g = self.lock();
        let mut batch = (sled::Batch::default(), sled::Batch::default(), sled::Batch::default());
        for r in records {
            let id = r.result_id.as_bytes();
            batch.0.insert(id.as_slice(), encode_record(r));
            batch.1.insert(keys::archive_taken(r.taken_at, id).as_slice(), &[]);
            batch.2.insert(
                keys::archive_location(r.location_id.as_deref().unwrap_or(""), r.taken_at, id),
                &point_value(r),
            );
        }
        self.archive.apply_batch(batch.0)?;
        self.archive_taken.apply_batch(batch.1)?;
        self.archive_location.apply_batch(batch.2)?;
        self.flush_now()
    }
}

/// The keys of an archive index with `prefix` (empty: the whole of `archive_taken`) taken in
/// `[since, until)`: the lower bound, and the upper one (`None`: to the end of the index). Without
/// `until`, everything with the prefix: up to the prefix with its last byte raised (a location's
/// closing 0 becomes 1).
fn bounds(prefix: &[u8], since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> (Vec<u8>, Option<Vec<u8>>) {
    let at = |t: DateTime<Utc>| keys::archive_location_at(prefix, t);
    let lower = since.map_or_else(|| prefix.to_vec(), at);
    let upper = until.map(at).or_else(|| {
        let mut end = prefix.to_vec();
        *end.last_mut()? += 1;
        Some(end)
    });
    (lower, upper)
}

/// The point an `archive_location` entry holds.
fn point(prefix: &[u8], k: &[u8], v: &[u8]) -> Option<SeriesPoint> {
    let time: [u8; 8] = k.get(prefix.len()..prefix.len() + 8)?.try_into().ok()?;
    let ms = (u64::from_be_bytes(time) ^ (1 << 63)) as i64;
    let v: [u8; 8] = v.try_into().ok()?;
    Some(SeriesPoint {
        taken_at: DateTime::from_timestamp_millis(ms)?,
        result_id: Uuid::from_bytes(keys::archive_result_of(k)?),
        total_detected: u32::from_be_bytes(v[..4].try_into().ok()?),
        plant_cover: f32::from_be_bytes(v[4..].try_into().ok()?),
    })
}

fn encode_cursor(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 512 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

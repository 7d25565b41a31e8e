//! The results archive's records and queries ([`demeter_domain::archive`]).
//!
//! - The records themselves: postcard, appended to segment files beside the database
//!   ([`log`]), with a sorted list of their ids beside each, so they cost their own size on
//!   disk and a result is found by its id without a database key.
//! - One database key per result, in `archive_by_location`: location id, 0, taken-at, result
//!   id → the point a chart needs (count and plant cover) and where the record is. A location's
//!   series is one range scan with no record reads; all locations in the order taken is a merge
//!   of their ranges (one seek per location).
//! - `archive_late_ids`: result id → where the record is, for the few results whose id did not
//!   come after every id before it (two workers finishing at once), which the id lists skip.
//!
//! sled costs about 250 bytes a key on disk however small the key (a leaf holds 8–16 of them and
//! its log keeps pages as last written until a segment is under half live), so the archive keeps
//! to one key a result: measured in `demeter-bench archive`.
//!
//! A record is appended (and synced) before the transaction that completes its job, which
//! writes its key: an archived result and the job that shows it are stored together or not at
//! all. A record is in the archive exactly when its key is; a record in the segments without
//! one (a crash between the two, or a result swept by retention whose segment is still in use)
//! is never shown.
//!
//! When the database is new but segment files are there (`db/` deleted, or moved aside as
//! corrupt), the keys are rebuilt from the segments: the results outlive the job store. An
//! archive kept inside the database (records in the `archive` tree, before the segment files)
//! is moved out at the first start.

pub(crate) mod log;

use std::{cmp::Reverse, collections::BinaryHeap};

use chrono::{DateTime, Utc};
use demeter_domain::{archive::ArchivedResult, Job, JobState, SessionId, SessionSource};
use sled::{
    transaction::{ConflictableTransactionError, TransactionalTree},
    IVec, Transactional,
};
use uuid::Uuid;

use crate::{error::StoreError, keys, store::Store};
use log::RecordRef;

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

/// The first byte of every record in the segments: the encoding that follows. Postcard needs
/// every field in order, so a change to [`ArchivedResult`] gets a new version here and a
/// decoder for the old ones (they are kept for years).
const RECORD_V1: u8 = 1;

pub(crate) fn encode_record(r: &ArchivedResult) -> Vec<u8> {
    let mut out = vec![RECORD_V1];
    out.extend(postcard::to_stdvec(r).expect("archive records always serialise"));
    out
}

pub(crate) fn decode_record(b: &[u8]) -> Result<ArchivedResult> {
    match b.split_first() {
        Some((&RECORD_V1, rest)) => decode_postcard(rest),
        Some((&version, _)) => Err(StoreError::ArchiveVersion(version)),
        None => Err(StoreError::ArchiveEntry),
    }
}

/// A record as postcard alone: version 1 without its byte, as kept in the database before the
/// segment files.
fn decode_postcard(b: &[u8]) -> Result<ArchivedResult> {
    postcard::from_bytes(b).map_err(|source| StoreError::Binary { what: "archived result", source })
}

/// An `archive_by_location` value: count, cover, where the record is.
fn entry_value(r: &ArchivedResult, at: RecordRef) -> [u8; 20] {
    let mut v = [0u8; 20];
    v[..4].copy_from_slice(&r.total_detected.to_be_bytes());
    v[4..8].copy_from_slice(&r.plant_cover.to_be_bytes());
    v[8..].copy_from_slice(&at.encode());
    v
}

fn entry_ref(v: &[u8]) -> Option<RecordRef> {
    RecordRef::decode(v.get(8..)?)
}

fn location_key(r: &ArchivedResult) -> Vec<u8> {
    keys::archive_location(r.location_id.as_deref().unwrap_or(""), r.taken_at, r.result_id.as_bytes())
}

/// A record appended to the segments, to be indexed in the transaction that completes its job.
pub(crate) struct Appended {
    key: Vec<u8>,
    value: [u8; 20],
    /// Its reference by id, when the segments' id lists skip it.
    late: Option<([u8; 16], RecordRef)>,
}

impl Appended {
    /// Writes the record's key (and its late id) inside a transaction.
    pub(crate) fn apply_tx(
        &self,
        (by_location, late): (&TransactionalTree, &TransactionalTree),
    ) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
        by_location.insert(self.key.as_slice(), &self.value)?;
        if let Some((id, at)) = &self.late {
            late.insert(id, &at.encode())?;
        }
        Ok(())
    }
}

impl Store {
    /// The archive record `job`'s state calls for: its completed result, when not archived yet.
    pub(crate) fn archive_record(&self, job: &Job) -> Result<Option<ArchivedResult>> {
        let JobState::Completed { completed_at, result, .. } = &job.state else { return Ok(None) };
        let owner = || -> Result<Option<String>> {
            Ok(match self.session(job.upload_session_id)?.map(|s| s.source) {
                Some(SessionSource::Upload { owner, .. }) => owner,
                _ => None,
            })
        };
        let record = ArchivedResult::new(job, result, *completed_at, None);
        if self.archive_by_location.contains_key(location_key(&record))? {
            return Ok(None);
        }
        Ok(Some(ArchivedResult { owner: owner()?, ..record }))
    }

    /// Appends `record` to the archive's segments (on disk when this returns); the caller writes
    /// its key in the transaction that completes the job.
    pub(crate) fn archive_prepare(&self, record: &ArchivedResult) -> Result<Appended> {
        let id = *record.result_id.as_bytes();
        let (at, listed) = self.records.append(&[(id, encode_record(record))])?[0];
        Ok(Appended { key: location_key(record), value: entry_value(record, at), late: (!listed).then_some((id, at)) })
    }

    /// Indexes records already in the segments, as one batch per tree. Callers hold the write
    /// lock.
    fn index_records<'a>(&self, records: impl Iterator<Item = (&'a ArchivedResult, (RecordRef, bool))>) -> Result<()> {
        let (mut keys, mut late) = (sled::Batch::default(), sled::Batch::default());
        for (r, (at, listed)) in records {
            keys.insert(location_key(r), &entry_value(r, at));
            if !listed {
                late.insert(r.result_id.as_bytes(), &at.encode());
            }
        }
        self.archive_late_ids.apply_batch(late)?;
        self.archive_by_location.apply_batch(keys)?;
        Ok(())
    }

    /// The record at `at`, when it is in the archive: its key is there and points to it (a
    /// record the segments still hold after retention removed it, or one a crash left
    /// unindexed, is not).
    fn indexed(&self, at: RecordRef) -> Result<Option<ArchivedResult>> {
        let record = match self.records.read(at) {
            Ok(bytes) => decode_record(&bytes)?,
            // A frame an index entry does not point to may be torn (a crash mid-write).
            Err(StoreError::ArchiveFrame { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let value = self.archive_by_location.get(location_key(&record))?;
        Ok(value.and_then(|v| entry_ref(&v)).filter(|r| *r == at).map(|_| record))
    }

    /// One archived result.
    pub fn archived(&self, result: Uuid) -> Result<Option<ArchivedResult>> {
        let id = result.as_bytes();
        if let Some(v) = self.archive_late_ids.get(id)? {
            if let Some(found) = RecordRef::decode(&v).map(|at| self.indexed(at)).transpose()?.flatten() {
                return Ok(Some(found));
            }
        }
        match self.records.find(id)? {
            Some(at) => self.indexed(at),
            None => Ok(None),
        }
    }

    /// The record an `archive_by_location` value points to.
    fn record_of(&self, value: &[u8]) -> Result<ArchivedResult> {
        let at = entry_ref(value).ok_or(StoreError::ArchiveEntry)?;
        decode_record(&self.records.read(at)?)
    }

    /// Archived results, all of them (O(n): for reports and tests).
    pub fn archive_len(&self) -> usize {
        self.archive_by_location.len()
    }

    /// What the archive holds, for the benchmark: the bytes of its keys and values in the
    /// database, and of its segment files.
    pub fn archive_bytes(&self) -> Result<ArchiveBytes> {
        let mut index = 0u64;
        for tree in [&self.archive_by_location, &self.archive_late_ids] {
            for entry in tree.iter() {
                let (k, v) = entry?;
                index += (k.len() + v.len()) as u64;
            }
        }
        Ok(ArchiveBytes { index, segments: self.records.bytes()? })
    }

    /// The archive's segment files, by number (oldest first).
    pub fn archive_segments(&self) -> Result<Vec<u32>> {
        self.records.segments()
    }

    /// The folder of the archive's segment files.
    pub fn archive_dir(&self) -> &std::path::Path {
        self.records.dir()
    }

    /// A page of archived results matching `query`, newest taken first (or oldest first).
    pub fn archive_page(&self, query: &ArchiveQuery) -> Result<std::result::Result<ArchivePage, BadCursor>> {
        let prefix = query.location.as_deref().map(keys::archive_location_prefix).unwrap_or_default();
        let (mut lower, mut upper) = bounds(&prefix, query.since, query.until);
        if let Some(cursor) = &query.cursor {
            // A cursor is a key of the index read (a location's, or taken-at ++ result id for
            // all of them); one from elsewhere only moves the bound (to an empty page, for a
            // cursor outside this location's range).
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
        if upper.as_ref().is_some_and(|u| *u <= lower) {
            // `since` after `until`, or a cursor past the end: nothing.
            return Ok(Ok(ArchivePage { results: Vec::new(), next_cursor: None }));
        }
        let rev = !query.oldest_first;
        let mut iter: Box<dyn Iterator<Item = Result<(Vec<u8>, IVec)>>> = match &query.location {
            Some(_) => Box::new(range(&self.archive_by_location, lower, upper, rev).map(|e| {
                let (k, v) = e?;
                Ok((k.to_vec(), v))
            })),
            None => Box::new(self.merged(lower, upper, rev)?),
        };
        let q = query.q.as_ref().map(|q| q.to_lowercase());
        let mut results = Vec::new();
        let mut scanned = 0;
        let mut last_key = None;
        let limit = query.limit.max(1);
        for entry in iter.by_ref() {
            let (key, value) = entry?;
            scanned += 1;
            let r = self.record_of(&value)?;
            let keep = query.model.as_ref().is_none_or(|m| &r.model_name == m)
                && query.session.is_none_or(|s| r.upload_session_id == s)
                && query.owner.as_ref().is_none_or(|o| r.owner.as_ref() == Some(o))
                && q.as_ref().is_none_or(|q| r.filename.to_lowercase().contains(q.as_str()));
            if keep {
                results.push(r);
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

    /// Every location's entries with taken-at ++ result id in `[lower, upper)`, merged in that
    /// order (or reversed): `(taken-at ++ result id, value)`. One range per location.
    fn merged(
        &self,
        lower: Vec<u8>,
        upper: Option<Vec<u8>>,
        rev: bool,
    ) -> Result<impl Iterator<Item = Result<(Vec<u8>, IVec)>> + '_> {
        let mut ranges = Vec::new();
        for location in self.archive_locations()? {
            let prefix = keys::archive_location_prefix(&location);
            let lo = [prefix.as_slice(), &lower].concat();
            let hi = match &upper {
                Some(u) => [prefix.as_slice(), u].concat(),
                None => keys::archive_location_end(&prefix),
            };
            ranges.push((prefix.len(), range(&self.archive_by_location, lo, Some(hi), rev).peekable()));
        }
        Ok(Merge { ranges, heads: BinaryHeap::new(), started: false, rev })
    }

    /// A location's points in `[lower, upper)`, in order or reversed.
    fn points(
        &self,
        prefix: &[u8],
        lower: Vec<u8>,
        upper: Vec<u8>,
        rev: bool,
    ) -> impl Iterator<Item = Result<SeriesPoint>> + '_ {
        let prefix = prefix.to_vec();
        range(&self.archive_by_location, lower, Some(upper), rev)
            .filter_map(move |e| e.map_err(StoreError::from).map(|(k, v)| point(&prefix, &k, &v)).transpose())
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
        if upper <= lower {
            return Ok(Vec::new());
        }
        self.points(&prefix, lower, upper, false).collect()
    }

    /// Every location id in the archive (`""`: results without a location), in order: one
    /// seek per location, however many results each has.
    pub fn archive_locations(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut next: Vec<u8> = Vec::new();
        while let Some(entry) = self.archive_by_location.range(next.clone()..).next() {
            let (k, _) = entry?;
            let Some(end) = k.iter().position(|b| *b == 0) else { break };
            out.push(String::from_utf8_lossy(&k[..end]).into_owned());
            next = keys::archive_location_end(&k[..=end]);
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
        let end = keys::archive_location_end(&prefix);
        let before = self.points(&prefix, prefix.clone(), key.clone(), true).next().transpose()?;
        let mut after_start = key;
        after_start.push(0);
        let after = self.points(&prefix, after_start, end, false).next().transpose()?;
        Ok((before, after))
    }

    /// A location's last `n` points, oldest first (the latest photo and the ones before it).
    pub fn location_tail(&self, location: &str, n: usize) -> Result<Vec<SeriesPoint>> {
        let prefix = keys::archive_location_prefix(location);
        let end = keys::archive_location_end(&prefix);
        let mut out = self.points(&prefix, prefix.clone(), end, true).take(n).collect::<Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    /// Removes every result taken before `cutoff`, `batch` at a time and paced like the TTL
    /// sweep ([`Store::sweep_due`]), so the API never waits more than one batch. `each` gets each
    /// batch's ids (to delete their thumbnails) and returns `false` to stop early. Returns how
    /// many went. Segment files no result is left in are deleted afterwards.
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
        if total > 0 {
            self.remove_unused_segments()?;
        }
        Ok(total)
    }

    /// Deletes the segment files no result is in any more (after a retention sweep). Reads
    /// every key, without the write lock: new records go to the newest segment, which is never
    /// deleted.
    pub fn remove_unused_segments(&self) -> Result<Vec<u32>> {
        let mut used = std::collections::BTreeSet::new();
        for tree in [&self.archive_by_location, &self.archive_late_ids] {
            for entry in tree.iter() {
                let (_, v) = entry?;
                let at = if v.len() == RecordRef::ENCODED { RecordRef::decode(&v) } else { entry_ref(&v) };
                used.insert(at.ok_or(StoreError::ArchiveEntry)?.segment);
            }
        }
        let removed = self.records.remove_unused(&used)?;
        if !removed.is_empty() {
            tracing::info!(segments = ?removed, "removed archive segments no result is in any more");
        }
        Ok(removed)
    }

    /// Removes up to `batch` results taken before `cutoff` (the oldest of each location first),
    /// their keys and late ids in one transaction; returns their ids (their thumbnails go too)
    /// and whether more are due.
    pub fn sweep_archive(&self, cutoff: DateTime<Utc>, batch: usize) -> Result<(Vec<Uuid>, bool)> {
        let _g = self.lock();
        let mut due: Vec<(IVec, [u8; 16])> = Vec::new();
        let mut more = false;
        'locations: for location in self.archive_locations()? {
            let prefix = keys::archive_location_prefix(&location);
            for entry in self.archive_by_location.range(prefix.clone()..keys::archive_location_at(&prefix, cutoff)) {
                let (k, _) = entry?;
                if due.len() == batch {
                    more = true;
                    break 'locations;
                }
                let id = keys::archive_result_of(&k).ok_or(StoreError::ArchiveEntry)?;
                due.push((k, id));
            }
        }
        if due.is_empty() {
            return Ok((Vec::new(), false));
        }
        (&self.archive_by_location, &self.archive_late_ids).transaction(|(by_location, late)| {
            for (k, id) in &due {
                by_location.remove(k)?;
                late.remove(id)?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        self.flush_now()?;
        Ok((due.into_iter().map(|(_, id)| Uuid::from_bytes(id)).collect(), more))
    }

    /// Writes archive records directly (the benchmark's million, and tests): appended with one
    /// sync, indexed, one flush at the end.
    pub fn archive_insert_many(&self, records: &[ArchivedResult]) -> Result<()> {
        let _g = self.lock();
        let appended = self
            .records
            .append(&records.iter().map(|r| (*r.result_id.as_bytes(), encode_record(r))).collect::<Vec<_>>())?;
        self.index_records(records.iter().zip(appended))?;
        self.flush_now()
    }

    /// Rebuilds the archive's keys from its segment files, for a database that is new while the
    /// segments are not. Returns how many results were indexed.
    pub(crate) fn reindex_archive(&self) -> Result<usize> {
        let _g = self.lock();
        let mut pending: Vec<(ArchivedResult, (RecordRef, bool))> = Vec::new();
        let (mut total, mut damaged) = (0, 0);
        let mut write = |pending: &mut Vec<(ArchivedResult, (RecordRef, bool))>| -> Result<()> {
            self.index_records(pending.iter().map(|(r, at)| (r, *at)))?;
            total += pending.len();
            pending.clear();
            Ok(())
        };
        self.records.scan(|at, bytes| {
            match decode_record(&bytes) {
                Ok(r) => {
                    let listed = self.records.find(r.result_id.as_bytes())? == Some(at);
                    pending.push((r, (at, listed)));
                }
                Err(_) => damaged += 1,
            }
            if pending.len() >= 10_000 {
                write(&mut pending)?;
            }
            Ok(())
        })?;
        write(&mut pending)?;
        if damaged > 0 {
            tracing::warn!(damaged, "archive records that could not be read were left out of the rebuilt index");
        }
        self.flush_now()?;
        Ok(total)
    }

    /// Moves an archive kept inside the database (records in the `archive` tree, indexed by
    /// `archive_taken` and `archive_location`: before the segment files) out to the segments,
    /// then drops the old trees. A start interrupted midway does it again (the copies a second
    /// run appends replace the first's keys). Returns how many records moved.
    pub(crate) fn migrate_inline_archive(&self) -> Result<usize> {
        const OLD: [&str; 3] = ["archive", "archive_taken", "archive_location"];
        if !self.db.tree_names().iter().any(|n| n.as_ref() == OLD[0].as_bytes()) {
            return Ok(0);
        }
        let old = self.db.open_tree(OLD[0])?;
        let _g = self.lock();
        let mut moved = 0;
        let mut chunk = Vec::new();
        let mut flush = |chunk: &mut Vec<ArchivedResult>| -> Result<()> {
            let appended = self
                .records
                .append(&chunk.iter().map(|r| (*r.result_id.as_bytes(), encode_record(r))).collect::<Vec<_>>())?;
            self.index_records(chunk.iter().zip(appended))?;
            moved += chunk.len();
            chunk.clear();
            Ok(())
        };
        for entry in old.iter() {
            let (_, v) = entry?;
            chunk.push(decode_postcard(&v)?);
            if chunk.len() == 10_000 {
                flush(&mut chunk)?;
            }
        }
        flush(&mut chunk)?;
        self.flush_now()?;
        for name in OLD {
            self.db.drop_tree(name)?;
        }
        self.flush_now()?;
        Ok(moved)
    }
}

/// The archive's size ([`Store::archive_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveBytes {
    /// Keys and values of the archive's trees in the database.
    pub index: u64,
    /// The segment files: the records in their frames, and the id lists.
    pub segments: u64,
}

/// A tree's entries in `[lower, upper)` (`None`: to the end), in order or reversed.
fn range(
    tree: &sled::Tree,
    lower: Vec<u8>,
    upper: Option<Vec<u8>>,
    rev: bool,
) -> Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>>> {
    let r = match upper {
        Some(u) => tree.range(lower..u),
        None => tree.range(lower..),
    };
    if rev {
        Box::new(r.rev())
    } else {
        Box::new(r)
    }
}

type Ranges = Vec<(usize, std::iter::Peekable<Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>>>>)>;

/// [`Store::merged`]'s iterator: the location ranges' heads in a heap, by taken-at ++ result id.
struct Merge {
    /// Each location's prefix length and its entries.
    ranges: Ranges,
    /// The next key of each range that has one (negated order when reversed), and its range.
    heads: BinaryHeap<(Reverse<Head>, usize)>,
    started: bool,
    rev: bool,
}

/// A merge key: taken-at ++ result id, ordered so the heap's top is the next to give.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Head {
    Forward(Vec<u8>),
    Backward(Reverse<Vec<u8>>),
}

impl Merge {
    fn push_head(&mut self, i: usize) -> Result<()> {
        let (prefix, iter) = &mut self.ranges[i];
        match iter.peek() {
            Some(Ok((k, _))) => {
                let suffix = k[*prefix..].to_vec();
                let head = if self.rev { Head::Backward(Reverse(suffix)) } else { Head::Forward(suffix) };
                self.heads.push((Reverse(head), i));
                Ok(())
            }
            Some(Err(_)) => Err(iter.next().expect("peeked").expect_err("peeked an error").into()),
            None => Ok(()),
        }
    }
}

impl Iterator for Merge {
    type Item = Result<(Vec<u8>, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            for i in 0..self.ranges.len() {
                if let Err(e) = self.push_head(i) {
                    return Some(Err(e));
                }
            }
        }
        let (Reverse(head), i) = self.heads.pop()?;
        let (_, value) = self.ranges[i].1.next().expect("a head was peeked").expect("a head is not an error");
        if let Err(e) = self.push_head(i) {
            return Some(Err(e));
        }
        let key = match head {
            Head::Forward(k) | Head::Backward(Reverse(k)) => k,
        };
        Some(Ok((key, value)))
    }
}

/// The keys of an archive index with `prefix` (empty: taken-at ++ result id, as merged) taken in
/// `[since, until)`: the lower bound, and the upper one (`None`: to the end of the index). Without
/// `until`, everything with the prefix: up to [`keys::archive_location_end`].
fn bounds(prefix: &[u8], since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> (Vec<u8>, Option<Vec<u8>>) {
    let at = |t: DateTime<Utc>| keys::archive_location_at(prefix, t);
    let lower = since.map_or_else(|| prefix.to_vec(), at);
    let upper = until.map(at).or_else(|| (!prefix.is_empty()).then(|| keys::archive_location_end(prefix)));
    (lower, upper)
}

/// The point an `archive_by_location` entry holds.
fn point(prefix: &[u8], k: &[u8], v: &[u8]) -> Option<SeriesPoint> {
    let time: [u8; 8] = k.get(prefix.len()..prefix.len() + 8)?.try_into().ok()?;
    let ms = (u64::from_be_bytes(time) ^ (1 << 63)) as i64;
    let v: [u8; 8] = v.get(..8)?.try_into().ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_their_format_and_an_unknown_one_is_refused_by_name() {
        let r = ArchivedResult {
            result_id: Uuid::now_v7(),
            job_id: demeter_domain::JobId::new_v7(),
            upload_session_id: SessionId::new_v7(),
            filename: "b1/a.jpg".into(),
            content_hash: "00ff00ff00ff00ff".into(),
            taken_at: DateTime::from_timestamp(1_750_000_000, 0).unwrap(),
            taken_at_source: demeter_domain::archive::TakenAtSource::Exif,
            processed_at: DateTime::from_timestamp(1_750_000_100, 5).unwrap(),
            location_id: Some("b1".into()),
            location_name: None,
            location_rule: None,
            model_name: "plant-exg".into(),
            model_version: "2".into(),
            model_sha256: "ab".repeat(32),
            total_detected: 3,
            class_counts: Default::default(),
            grid: None,
            plant_cover: 0.25,
            boxes: vec![[1, 2, 3, 4]; 3],
            width: 640,
            height: 480,
            trusted: true,
            trust_reasons: Vec::new(),
            owner: None,
        };
        let bytes = encode_record(&r);
        assert_eq!(bytes[0], RECORD_V1);
        assert_eq!(decode_record(&bytes).unwrap(), r);
        // What the database held before the segment files: the same without the byte.
        assert_eq!(decode_postcard(&bytes[1..]).unwrap(), r);
        let mut newer = bytes.clone();
        newer[0] = 2;
        let e = decode_record(&newer).unwrap_err();
        assert!(matches!(e, StoreError::ArchiveVersion(2)), "{e}");
        assert!(e.to_string().contains("record format 2"));
    }
}

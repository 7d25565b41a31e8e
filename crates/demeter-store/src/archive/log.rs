//! The archive's records, appended to segment files beside the database.
//!
//! A million results must cost at most a kilobyte each on disk. Kept in sled, a ~450-byte
//! record cost 1.3–1.5 KB: sled's log holds each page as last written and frees a segment only
//! when under half of it is live, so it stays 2.6–3 times its live data. Records are written
//! once, never changed, and leave about in the order they came (retention), which is what an
//! append-only file does at its own size. So a record lives here, and the database keeps one key
//! per result with a 12-byte [`RecordRef`] to it.
//!
//! Layout: `<data>/archive/00000001.log`, `00000002.log`, …; the highest is the one written.
//! Each record is a frame: its length (u32, little-endian), the CRC-32 of its bytes (u32,
//! little-endian), then the bytes. A segment is closed at [`SEGMENT_BYTES`] and a new one begun.
//!
//! Beside each segment, `NNNNNNNN.ids` finds a record by its result id without a database key
//! (sled costs about 250 bytes a key): 24 bytes per record (the id, the frame's offset and
//! length), in the order appended. Result ids are UUIDv7s made as each photo finishes, so they
//! nearly always arrive in increasing order, and the `.ids` files together are one sorted list,
//! searched by bisection. A record whose id is not above every id before it (two workers
//! finishing within the same moment) is not listed there; [`RecordLog::append`] says so and the
//! store keeps its reference in the database instead.
//!
//! Durability: [`RecordLog::append`] returns only after the frame is on disk (`fdatasync`), and
//! the store writes the reference to it afterwards, in the transaction that completes the job.
//! So a reference on disk always finds its frame. A crash between the two leaves a frame no one
//! refers to (the job runs again and writes a new one); a crash in the middle of a write leaves
//! a torn frame at the end, which nothing refers to either. Both go with their segment.
//!
//! Removal: the retention sweep removes references; a segment no reference points into any
//! more is deleted whole ([`RecordLog::remove_unused`]). Retention goes by when photos were
//! taken, and photos are mostly processed soon after, so records leave about in the order they
//! were appended and the dead weight is about one segment (a backlog of old photos processed
//! late stays until the newest record of its segments goes).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use crate::error::StoreError;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where a segment is closed and the next begun: about 150,000 records of a 24-plant tray.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// A frame's header: length and CRC-32.
const HEADER: usize = 8;

/// An `.ids` entry: the result id, the frame's offset and the record's length (big-endian).
const ID_ENTRY: usize = 24;

/// A result id, as bytes (a UUIDv7's bytes sort as its time).
pub(crate) type Id = [u8; 16];

/// Where a record is: segment, offset of its frame, length of its bytes. Stored in the index as
/// 12 bytes, three big-endian u32s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RecordRef {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

impl RecordRef {
    pub const ENCODED: usize = 12;

    pub fn encode(self) -> [u8; Self::ENCODED] {
        let mut v = [0u8; Self::ENCODED];
        v[0..4].copy_from_slice(&self.segment.to_be_bytes());
        v[4..8].copy_from_slice(&self.offset.to_be_bytes());
        v[8..12].copy_from_slice(&self.len.to_be_bytes());
        v
    }

    /// `None`: not 12 bytes.
    pub fn decode(v: &[u8]) -> Option<Self> {
        if v.len() != Self::ENCODED {
            return None;
        }
        let u = |i: usize| u32::from_be_bytes(v[i..i + 4].try_into().expect("4 bytes"));
        Some(Self { segment: u(0), offset: u(4), len: u(8) })
    }
}

/// The segment being written and where its end is.
struct Tail {
    segment: u32,
    file: File,
    len: u64,
    ids: File,
    /// The highest id listed in any `.ids` file: a record goes in the list only above it.
    last_id: Option<Id>,
    /// A write to the `.ids` file failed: list nothing more until reopened (which cuts off a
    /// torn entry), so the list stays aligned and sorted.
    ids_broken: bool,
}

/// The ids a segment's `.ids` file lists: first, last, how many.
#[derive(Debug, Clone, Copy)]
struct IdRange {
    first: Id,
    last: Id,
    entries: u64,
}

/// The records' segment files. Appends are serialised by the store's write lock (and this
/// mutex); reads take no lock but short ones to find a segment's open files.
pub(crate) struct RecordLog {
    dir: PathBuf,
    segment_bytes: u64,
    tail: Mutex<Tail>,
    open: RwLock<BTreeMap<(u32, Kind), Arc<File>>>,
    /// Each segment's listed ids, kept in memory (two reads a segment at open).
    ranges: RwLock<BTreeMap<u32, IdRange>>,
}

/// A segment's two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Records,
    Ids,
}

fn segment_name(n: u32) -> String {
    format!("{n:08}.log")
}

fn ids_name(n: u32) -> String {
    format!("{n:08}.ids")
}

fn parse_segment_name(name: &str) -> Option<u32> {
    let n = name.strip_suffix(".log")?;
    (n.len() == 8 && n.bytes().all(|b| b.is_ascii_digit())).then(|| n.parse().ok())?
}

impl RecordLog {
    /// Opens the log in `dir` (created if missing), ready to append to its newest segment.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Self> {
        let io = |source: std::io::Error| StoreError::ArchiveIo { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let segments = Self::list(dir)?;
        let mut ranges = BTreeMap::new();
        for &segment in &segments {
            if let Some(range) = Self::read_range(dir, segment)? {
                ranges.insert(segment, range);
            }
        }
        let newest = segments.last().copied();
        let mut tail = Self::open_tail(dir, newest.unwrap_or(1))?;
        tail.last_id = ranges.values().map(|r| r.last).max();
        if newest.is_none() {
            sync_dir(dir)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.min(u32::MAX as u64),
            tail: Mutex::new(tail),
            open: RwLock::default(),
            ranges: RwLock::new(ranges),
        })
    }

    fn open_tail(dir: &Path, segment: u32) -> Result<Tail> {
        let append = |path: PathBuf| -> Result<(File, u64)> {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|source| StoreError::ArchiveIo { path: path.clone(), source })?;
            let len = file.metadata().map_err(|source| StoreError::ArchiveIo { path, source })?.len();
            Ok((file, len))
        };
        let (file, len) = append(dir.join(segment_name(segment)))?;
        let ids_path = dir.join(ids_name(segment));
        let (ids, ids_len) = append(ids_path.clone())?;
        if ids_len % ID_ENTRY as u64 != 0 {
            // A torn entry from a crash: cut it off, or every later one would be misaligned.
            ids.set_len(ids_len - ids_len % ID_ENTRY as u64)
                .and_then(|()| ids.sync_all())
                .map_err(|source| StoreError::ArchiveIo { path: ids_path, source })?;
        }
        Ok(Tail { segment, file, len, ids, last_id: None, ids_broken: false })
    }

    /// The first and last ids a segment's `.ids` file lists (`None`: none, or no file).
    fn read_range(dir: &Path, segment: u32) -> Result<Option<IdRange>> {
        let path = dir.join(ids_name(segment));
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::ArchiveIo { path, source }),
        };
        let io = |source: std::io::Error| StoreError::ArchiveIo { path: path.clone(), source };
        let entries = file.metadata().map_err(io)?.len() / ID_ENTRY as u64;
        if entries == 0 {
            return Ok(None);
        }
        let first = read_entry(&file, 0).map_err(io)?.0;
        let last = read_entry(&file, entries - 1).map_err(io)?.0;
        Ok(Some(IdRange { first, last, entries }))
    }

    /// The segment numbers in `dir`, in order.
    fn list(dir: &Path) -> Result<Vec<u32>> {
        let io = |source: std::io::Error| StoreError::ArchiveIo { path: dir.to_path_buf(), source };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            if let Some(n) = entry.map_err(io)?.file_name().to_str().and_then(parse_segment_name) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends each of `records` (its result id, its bytes) as a frame and returns where each
    /// went and whether its id is listed in an `.ids` file (else the caller keeps the reference),
    /// once all are on disk.
    pub fn append(&self, records: &[(Id, Vec<u8>)]) -> Result<Vec<(RecordRef, bool)>> {
        let mut tail = self.tail();
        let mut refs = Vec::with_capacity(records.len());
        let mut frame = Vec::new();
        let mut listed = Vec::new();
        for (id, record) in records {
            let len = u32::try_from(record.len()).expect("a record is far under 4 GiB");
            let size = (HEADER + record.len()) as u64;
            if tail.len > 0 && tail.len + size > self.segment_bytes {
                self.write_ids(&mut tail, &mut listed)?;
                self.sync(&tail)?;
                let (last_id, ids_broken) = (tail.last_id, tail.ids_broken);
                *tail = Self::open_tail(&self.dir, tail.segment + 1)?;
                (tail.last_id, tail.ids_broken) = (last_id, ids_broken);
                sync_dir(&self.dir)?;
            }
            frame.clear();
            frame.extend_from_slice(&len.to_le_bytes());
            frame.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
            frame.extend_from_slice(record);
            let offset = tail.len;
            if let Err(source) = tail.file.write_all(&frame) {
                // A partial frame may be there now: later frames go after whatever was written.
                tail.len = tail.file.metadata().map(|m| m.len()).unwrap_or(tail.len + size);
                return Err(StoreError::ArchiveIo { path: self.path(tail.segment), source });
            }
            tail.len += size;
            let at = RecordRef { segment: tail.segment, offset: offset as u32, len };
            let in_order = !tail.ids_broken && tail.last_id.is_none_or(|last| *id > last);
            if in_order {
                tail.last_id = Some(*id);
                listed.push((*id, at));
            }
            refs.push((at, in_order));
        }
        self.write_ids(&mut tail, &mut listed)?;
        self.sync(&tail)?;
        Ok(refs)
    }

    /// Lists `listed` (all in the segment being written) in its `.ids` file.
    fn write_ids(&self, tail: &mut Tail, listed: &mut Vec<(Id, RecordRef)>) -> Result<()> {
        let (Some(first), Some(last)) = (listed.first(), listed.last()) else { return Ok(()) };
        let mut bytes = Vec::with_capacity(listed.len() * ID_ENTRY);
        for (id, at) in listed.iter() {
            bytes.extend_from_slice(id);
            bytes.extend_from_slice(&at.offset.to_be_bytes());
            bytes.extend_from_slice(&at.len.to_be_bytes());
        }
        let path = || self.dir.join(ids_name(tail.segment));
        if let Err(source) = tail.ids.write_all(&bytes) {
            // A torn entry is cut off when the log is next opened; until then nothing is listed.
            tail.ids_broken = true;
            listed.clear();
            return Err(StoreError::ArchiveIo { path: path(), source });
        }
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        let range = ranges.entry(tail.segment).or_insert(IdRange { first: first.0, last: first.0, entries: 0 });
        range.last = last.0;
        range.entries += listed.len() as u64;
        listed.clear();
        Ok(())
    }

    fn sync(&self, tail: &Tail) -> Result<()> {
        tail.file.sync_data().map_err(|source| StoreError::ArchiveIo { path: self.path(tail.segment), source })?;
        tail.ids
            .sync_data()
            .map_err(|source| StoreError::ArchiveIo { path: self.dir.join(ids_name(tail.segment)), source })
    }

    /// Where the record with result id `id` is, when its id is listed (see [`RecordLog::append`]):
    /// the segment whose listed ids span it, then bisection in its `.ids` file.
    pub fn find(&self, id: &Id) -> Result<Option<RecordRef>> {
        let found = self
            .ranges
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(_, r)| r.first <= *id && *id <= r.last)
            .map(|(s, r)| (*s, *r));
        let Some((segment, range)) = found else { return Ok(None) };
        let file = self.file(segment, Kind::Ids)?;
        let io = |source: std::io::Error| StoreError::ArchiveIo { path: self.dir.join(ids_name(segment)), source };
        let (mut lo, mut hi) = (0u64, range.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (at, offset, len) = read_entry(&file, mid).map_err(io)?;
            match at.cmp(id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(RecordRef { segment, offset, len })),
            }
        }
        Ok(None)
    }

    fn path(&self, segment: u32) -> PathBuf {
        self.dir.join(segment_name(segment))
    }

    fn file(&self, segment: u32, kind: Kind) -> Result<Arc<File>> {
        if let Some(f) = self.open.read().unwrap_or_else(|e| e.into_inner()).get(&(segment, kind)) {
            return Ok(f.clone());
        }
        let path = match kind {
            Kind::Records => self.path(segment),
            Kind::Ids => self.dir.join(ids_name(segment)),
        };
        let file = Arc::new(File::open(&path).map_err(|source| StoreError::ArchiveIo { path, source })?);
        self.open.write().unwrap_or_else(|e| e.into_inner()).insert((segment, kind), file.clone());
        Ok(file)
    }

    /// The record `r` points to, checked against its frame's length and CRC.
    pub fn read(&self, r: RecordRef) -> Result<Vec<u8>> {
        let file = self.file(r.segment, Kind::Records)?;
        let mut buf = vec![0u8; HEADER + r.len as usize];
        let path = || self.path(r.segment);
        file.read_exact_at(&mut buf, u64::from(r.offset))
            .map_err(|source| StoreError::ArchiveIo { path: path(), source })?;
        let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
        let record = buf.split_off(HEADER);
        if len != r.len || crc != crc32fast::hash(&record) {
            return Err(StoreError::ArchiveFrame { path: path(), offset: u64::from(r.offset) });
        }
        Ok(record)
    }

    /// Every intact frame, segment by segment, in the order written: what rebuilding the
    /// archive's references reads. A torn or corrupt frame ends its segment's reading.
    pub fn scan(&self, mut each: impl FnMut(RecordRef, Vec<u8>) -> Result<()>) -> Result<()> {
        for segment in Self::list(&self.dir)? {
            let path = self.path(segment);
            let bytes = std::fs::read(&path).map_err(|source| StoreError::ArchiveIo { path: path.clone(), source })?;
            let mut at = 0usize;
            while let Some(header) = bytes.get(at..at + HEADER) {
                let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
                let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
                let Some(record) = bytes.get(at + HEADER..at + HEADER + len as usize) else { break };
                if crc32fast::hash(record) != crc {
                    tracing::warn!(path = %path.display(), offset = at, "a damaged frame ends this archive segment");
                    break;
                }
                each(RecordRef { segment, offset: at as u32, len }, record.to_vec())?;
                at += HEADER + len as usize;
            }
        }
        Ok(())
    }

    /// Deletes every segment that is not `used` and not the one being written; returns them.
    /// Nothing can come to point into an older segment: appends go to the newest alone.
    pub fn remove_unused(&self, used: &BTreeSet<u32>) -> Result<Vec<u32>> {
        let writing = self.tail().segment;
        let mut removed = Vec::new();
        for segment in Self::list(&self.dir)? {
            if segment >= writing || used.contains(&segment) {
                continue;
            }
            self.ranges.write().unwrap_or_else(|e| e.into_inner()).remove(&segment);
            {
                let mut open = self.open.write().unwrap_or_else(|e| e.into_inner());
                open.remove(&(segment, Kind::Records));
                open.remove(&(segment, Kind::Ids));
            }
            for path in [self.dir.join(ids_name(segment)), self.path(segment)] {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(StoreError::ArchiveIo { path, source }),
                }
            }
            removed.push(segment);
        }
        if !removed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// The bytes of every segment's two files (the benchmark's cost on disk).
    pub fn bytes(&self) -> Result<u64> {
        let mut total = 0;
        for segment in Self::list(&self.dir)? {
            for path in [self.path(segment), self.dir.join(ids_name(segment))] {
                total += match std::fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(source) => return Err(StoreError::ArchiveIo { path, source }),
                };
            }
        }
        Ok(total)
    }

    /// Segment numbers present, in order (for tests and reports).
    pub fn segments(&self) -> Result<Vec<u32>> {
        Self::list(&self.dir)
    }
}

/// The `i`th entry of an `.ids` file: id, offset, length.
fn read_entry(file: &File, i: u64) -> std::io::Result<(Id, u32, u32)> {
    let mut e = [0u8; ID_ENTRY];
    file.read_exact_at(&mut e, i * ID_ENTRY as u64)?;
    let u = |at: usize| u32::from_be_bytes(e[at..at + 4].try_into().expect("4 bytes"));
    Ok((e[..16].try_into().expect("16 bytes"), u(16), u(20)))
}

/// Makes a file's creation or removal in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::ArchiveIo { path: dir.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Id {
        n.to_be_bytes()
    }

    /// `n` records with increasing ids 10, 20, 30, …
    fn records(n: usize) -> Vec<(Id, Vec<u8>)> {
        (0..n).map(|i| (id(10 * (i as u128 + 1)), format!("record {i} ").repeat(i % 7 + 1).into_bytes())).collect()
    }

    #[test]
    fn references_and_segment_names_round_trip() {
        let r = RecordRef { segment: 3, offset: 70_000, len: 451 };
        assert_eq!(RecordRef::decode(&r.encode()), Some(r));
        assert_eq!(RecordRef::decode(&[0; 13]), None);
        assert_eq!(parse_segment_name("00000012.log"), Some(12));
        assert_eq!(parse_segment_name("12.log"), None);
        assert_eq!(parse_segment_name("0000001x.log"), None);
    }

    #[test]
    fn records_are_read_back_and_found_by_id_across_segments_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let all = records(40);
        let refs: Vec<RecordRef> = {
            let log = RecordLog::open(dir.path(), 300).unwrap();
            let mut refs = log.append(&all[..25]).unwrap();
            refs.extend(log.append(&all[25..]).unwrap());
            assert!(refs.iter().all(|(_, listed)| *listed), "ids in order are all listed");
            refs.into_iter().map(|(r, _)| r).collect()
        };
        let log = RecordLog::open(dir.path(), 300).unwrap();
        assert!(log.segments().unwrap().len() > 3, "small segments roll over");
        for (r, (i, want)) in refs.iter().zip(&all) {
            assert_eq!(&log.read(*r).unwrap(), want);
            assert_eq!(log.find(i).unwrap(), Some(*r));
        }
        for missing in [id(5), id(15), id(405), id(10_000)] {
            assert_eq!(log.find(&missing).unwrap(), None);
        }
        let mut scanned = Vec::new();
        log.scan(|r, bytes| {
            scanned.push((r, bytes));
            Ok(())
        })
        .unwrap();
        assert_eq!(scanned, refs.iter().copied().zip(all.iter().map(|(_, b)| b.clone())).collect::<Vec<_>>());
        // Appending after reopening goes on from the end of the newest segment; an id not above
        // every one before is stored but not listed.
        let more = log.append(&[(id(1_000), b"later".to_vec()), (id(15), b"late".to_vec())]).unwrap();
        assert!(more[0].0 > *refs.last().unwrap());
        assert_eq!((more[0].1, more[1].1), (true, false));
        assert_eq!(log.find(&id(1_000)).unwrap(), Some(more[0].0));
        assert_eq!(log.find(&id(15)).unwrap(), None);
        assert_eq!(log.read(more[1].0).unwrap(), b"late");
    }

    #[test]
    fn a_damaged_or_torn_frame_is_an_error_to_read_and_ends_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path(), SEGMENT_BYTES).unwrap();
        let refs: Vec<RecordRef> = log.append(&records(3)).unwrap().into_iter().map(|(r, _)| r).collect();
        drop(log);
        let path = dir.path().join(segment_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[refs[1].offset as usize + HEADER + 2] ^= 0xff;
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]); // a torn frame: a header cut short
        std::fs::write(&path, bytes).unwrap();
        // And a torn `.ids` entry.
        let ids = dir.path().join(ids_name(1));
        let mut list = std::fs::read(&ids).unwrap();
        list.extend_from_slice(&[7; 10]);
        std::fs::write(&ids, list).unwrap();
        let log = RecordLog::open(dir.path(), SEGMENT_BYTES).unwrap();
        assert_eq!(std::fs::metadata(&ids).unwrap().len(), 3 * ID_ENTRY as u64, "the torn entry is cut off");
        assert_eq!(log.read(refs[0]).unwrap(), records(3)[0].1);
        assert!(matches!(log.read(refs[1]), Err(StoreError::ArchiveFrame { .. })));
        let mut n = 0;
        log.scan(|_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1, "the scan stops at the damaged frame");
        // New frames go after the torn one, and their ids after the cut.
        let (r, listed) = log.append(&[(id(99), b"next".to_vec())]).unwrap()[0];
        assert!(listed);
        assert_eq!(log.read(r).unwrap(), b"next");
        assert_eq!(log.find(&id(99)).unwrap(), Some(r));
        assert_eq!(log.find(&id(20)).unwrap(), Some(refs[1]));
    }

    #[test]
    fn unused_segments_are_removed_but_never_the_one_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path(), 100).unwrap();
        let all = records(20);
        let refs: Vec<RecordRef> = log.append(&all).unwrap().into_iter().map(|(r, _)| r).collect();
        let segments = log.segments().unwrap();
        let keep = refs[10].segment;
        let removed = log.remove_unused(&BTreeSet::from([keep])).unwrap();
        let newest = *segments.last().unwrap();
        assert_eq!(removed, segments.iter().copied().filter(|s| *s != keep && *s != newest).collect::<Vec<_>>());
        assert_eq!(log.read(refs[10]).unwrap(), all[10].1);
        assert_eq!(log.find(&all[10].0).unwrap(), Some(refs[10]));
        assert!(log.read(refs[0]).is_err());
        assert_eq!(log.find(&all[0].0).unwrap(), None);
        assert_eq!(log.segments().unwrap(), vec![keep, newest]);
        assert!(!dir.path().join(ids_name(refs[0].segment)).exists(), "a segment's list goes with it");
    }
}

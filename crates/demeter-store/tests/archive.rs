//! The results archive on a real sled database: written with each completed result (once, and
//! again for a reprocess), kept after the job's TTL sweep and across reopening, paged by cursor
//! in both orders under every filter (checked against a plain list of the same records), a
//! location's series from the index alone, and the retention sweep.

use chrono::{DateTime, Duration, Utc};
use demeter_domain::{
    archive::{ArchivedResult, TakenAtSource},
    Job, JobId, JobResult, SessionId, SessionSource, UploadSession,
};
use demeter_store::{ArchiveQuery, Store};
use proptest::prelude::*;

const CACHE: u64 = 8 << 20;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000 + s, 0).unwrap()
}

fn upload_session(store: &Store, owner: Option<&str>) -> SessionId {
    let s = UploadSession {
        id: SessionId::new_v7(),
        created_at: t(0),
        expires_at: t(0) + Duration::hours(24),
        source: SessionSource::Upload { files: 1, owner: owner.map(str::to_owned) },
    };
    store.insert_session(&s).unwrap();
    s.id
}

fn completed(store: &Store, session: SessionId, name: &str, plants: u32, location: &str) -> (Job, JobResult) {
    let job = Job::new(JobId::new_v7(), session, name.into(), format!("/p/{name}").into(), name.into(), 1, 5, t(0));
    store.enqueue(&job, name, t(0) + Duration::hours(48)).unwrap();
    store.claim_next(0, t(1)).unwrap().unwrap();
    let result = JobResult {
        session_id: uuid::Uuid::now_v7(),
        total_detected: plants,
        plants: (0..plants).map(|i| demeter_domain::Plant { bbox: [i, i, 10, 10], ..Default::default() }).collect(),
        storage_location_id: Some(location.into()),
        taken_at: Some(t(100)),
        ..Default::default()
    };
    store.update(job.id, |j| j.complete(result.clone(), t(2))).unwrap();
    (job, result)
}

#[test]
fn a_completed_result_is_archived_once_kept_after_its_job_and_a_reprocess_adds_another() {
    let dir = tempfile::tempdir().unwrap();
    let (job, first);
    {
        let store = Store::open(dir.path(), CACHE).unwrap();
        let s = upload_session(&store, Some("phone"));
        (job, first) = completed(&store, s, "b1.jpg", 3, "B1");
        let r = store.archived(first.session_id).unwrap().unwrap();
        assert_eq!((r.total_detected, r.boxes.len(), r.owner.as_deref()), (3, 3, Some("phone")));
        assert_eq!((r.taken_at, r.taken_at_source, r.processed_at), (t(100), TakenAtSource::Exif, t(2)));
        assert_eq!(r.location_id.as_deref(), Some("B1"));
        // Writing the completed job again (a no-op change) archives nothing more.
        store.update(job.id, |_| Ok(())).unwrap();
        assert_eq!(store.archive_len(), 1);
        // A reprocess: the job runs again and its new result is archived beside the first.
        store.update(job.id, |j| j.reprocess(Some("strict".into()), t(3))).unwrap();
        store.claim_next(0, t(4)).unwrap().unwrap();
        let again = JobResult { session_id: uuid::Uuid::now_v7(), total_detected: 2, ..Default::default() };
        store.update(job.id, |j| j.complete(again, t(5))).unwrap();
        assert_eq!(store.archive_len(), 2);
        // The job's TTL sweep leaves the archive alone.
        let swept = store.sweep_due(t(0) + Duration::hours(49), 100, |_| true).unwrap();
        assert_eq!(swept.jobs, 1);
        assert!(store.job(job.id).unwrap().is_none());
    }
    // Reopened (no shutdown): both records are there.
    let store = reopen(dir.path());
    assert_eq!(store.archive_len(), 2);
    assert_eq!(store.archived(first.session_id).unwrap().unwrap().filename, "b1.jpg");
    let series = store.location_series("B1", None, None).unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!((series[0].total_detected, series[0].taken_at), (3, t(100)));
    // The reprocessed result had no location: it is under "".
    assert_eq!(store.archive_locations().unwrap(), vec![String::new(), "B1".into()]);
    assert_eq!(store.location_tail("B1", 2).unwrap(), series);
}

#[test]
fn the_retention_sweep_removes_only_what_was_taken_before_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), CACHE).unwrap();
    let records: Vec<ArchivedResult> = (0..10).map(|i| record(i, "B1", t(i), None)).collect();
    store.archive_insert_many(&records).unwrap();
    let (removed, more) = store.sweep_archive(t(4), 3).unwrap();
    assert_eq!((removed.len(), more), (3, true));
    let (removed, more) = store.sweep_archive(t(4), 3).unwrap();
    assert_eq!((removed.len(), more), (1, false));
    assert_eq!(store.archive_len(), 6);
    assert_eq!(store.location_series("B1", None, None).unwrap().len(), 6);
    assert_eq!(
        store.archive_page(&ArchiveQuery { limit: 100, ..Default::default() }).unwrap().unwrap().results.len(),
        6
    );
    // The paced sweep goes batch by batch to the cutoff, telling each batch's ids.
    let mut batches = Vec::new();
    let n = store.sweep_archive_due(t(8), 2, |ids| {
        batches.push(ids.len());
        true
    });
    assert_eq!(n.unwrap(), 4);
    assert_eq!(batches, [2, 2], "no empty batch after the last");
    assert_eq!(
        store.location_series("B1", None, None).unwrap().iter().map(|p| p.total_detected).collect::<Vec<_>>(),
        [8, 9]
    );
    // Stopped early (a shutdown), it leaves the rest for the next sweep.
    assert_eq!(store.sweep_archive_due(t(100), 1, |_| false).unwrap(), 1);
    assert_eq!(store.archive_len(), 1);
}

/// Opens the store again after dropping it (sled lets go of its file lock from a background
/// thread just after the last handle goes; a real restart is a new process).
fn reopen(dir: &std::path::Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir, CACHE) {
            Err(demeter_store::StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other.unwrap(),
        }
    }
}

/// A record taken at `taken` (and processed `i` seconds in), in `location`, by `owner`.
fn record(i: i64, location: &str, taken: DateTime<Utc>, owner: Option<&str>) -> ArchivedResult {
    ArchivedResult {
        // v7 ids in processing order, as the pipeline makes them.
        result_id: uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, 1_750_000_000 + i as u64, 0)),
        job_id: JobId::new_v7(),
        upload_session_id: SessionId(uuid::Uuid::from_u128(i as u128 % 3)),
        filename: format!("{location}/photo-{i}.jpg"),
        content_hash: format!("{i:016x}"),
        taken_at: taken,
        taken_at_source: TakenAtSource::Mtime,
        processed_at: t(i),
        location_id: (!location.is_empty()).then(|| location.to_owned()),
        location_name: None,
        location_rule: None,
        model_name: if i % 2 == 0 { "plant-exg".into() } else { "yolo".into() },
        model_version: "2".into(),
        model_sha256: "0".repeat(64),
        total_detected: i as u32,
        class_counts: Default::default(),
        grid: None,
        plant_cover: 0.1,
        boxes: vec![[1, 2, 3, 4]; 24],
        width: 2592,
        height: 1944,
        trusted: true,
        trust_reasons: vec![],
        owner: owner.map(str::to_owned),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Every filter and both orders, paged with small limits: the pages together are exactly
    /// the matching records of a plain list, in order, with no duplicates.
    #[test]
    fn pages_join_up_to_exactly_the_filtered_list(
        takes in proptest::collection::vec((0i64..50, 0usize..3, 0usize..3), 1..120),
        location in proptest::option::of(0usize..3),
        model in proptest::option::of(0usize..2),
        owner in proptest::option::of(0usize..3),
        since in proptest::option::of(0i64..50),
        until in proptest::option::of(0i64..60),
        limit in 1usize..7,
        oldest_first: bool,
    ) {
        let locations = ["B1", "B2", ""];
        let owners = [Some("ann"), Some("bo"), None];
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE).unwrap();
        let records: Vec<ArchivedResult> = takes
            .iter()
            .enumerate()
            .map(|(i, (taken, loc, own))| record(i as i64, locations[*loc], t(*taken), owners[*own]))
            .collect();
        store.archive_insert_many(&records).unwrap();
        let query = ArchiveQuery {
            location: location.map(|l| locations[l].to_owned()),
            since: since.map(t),
            until: until.map(t),
            model: model.map(|m| ["plant-exg", "yolo"][m].to_owned()),
            owner: owner.and_then(|o| owners[o].map(str::to_owned)),
            limit,
            oldest_first,
            ..Default::default()
        };
        let mut want: Vec<&ArchivedResult> = records
            .iter()
            .filter(|r| query.location.as_ref().is_none_or(|l| r.location_id.as_deref().unwrap_or("") == l))
            .filter(|r| query.since.is_none_or(|s| r.taken_at >= s) && query.until.is_none_or(|u| r.taken_at < u))
            .filter(|r| query.model.as_ref().is_none_or(|m| &r.model_name == m))
            .filter(|r| query.owner.is_none() || r.owner == query.owner)
            .collect();
        want.sort_by_key(|r| (r.taken_at, r.result_id));
        if !oldest_first {
            want.reverse();
        }
        let mut got = Vec::new();
        let mut query = query;
        for _ in 0..100 {
            let page = store.archive_page(&query).unwrap().unwrap();
            prop_assert!(page.results.len() <= limit);
            got.extend(page.results);
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        let got: Vec<_> = got.iter().map(|r| r.result_id).collect();
        let want: Vec<_> = want.iter().map(|r| r.result_id).collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn a_cursor_that_is_not_hex_is_refused_and_one_from_elsewhere_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), CACHE).unwrap();
    store.archive_insert_many(&[record(1, "B1", t(1), None)]).unwrap();
    for cursor in ["zz", "abc"] {
        let q =
            ArchiveQuery { location: Some("B1".into()), cursor: Some(cursor.into()), limit: 5, ..Default::default() };
        assert!(store.archive_page(&q).unwrap().is_err(), "{cursor}");
    }
    for oldest_first in [false, true] {
        let q = ArchiveQuery {
            location: Some("B1".into()),
            cursor: Some(if oldest_first { "ff" } else { "00" }.into()),
            limit: 5,
            oldest_first,
            ..Default::default()
        };
        let page = store.archive_page(&q).unwrap().unwrap();
        assert!(page.results.is_empty() && page.next_cursor.is_none());
    }
}

#[test]
fn a_typical_record_costs_well_under_a_kilobyte() {
    // 24 plants (a common plug tray), two timestamps, hashes, names: the binary record and its
    // index entries.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), CACHE).unwrap();
    let records: Vec<ArchivedResult> = (0..64).map(|i| record(i, "B1", t(i), Some("ann"))).collect();
    store.archive_insert_many(&records).unwrap();
    let bytes = store.archive_bytes().unwrap();
    assert!((bytes.index + bytes.segments) / 64 < 600, "{bytes:?}");
    assert!(bytes.index / 64 < 100, "the index entries are small, packed: {bytes:?}");
}

#[test]
fn retention_deletes_the_segment_files_no_record_is_left_in() {
    let dir = tempfile::tempdir().unwrap();
    // Segments of three records each.
    let store = Store::open_with_segments(dir.path(), CACHE, 1_000).unwrap();
    let records: Vec<ArchivedResult> = (0..40).map(|i| record(i, "B1", t(i), None)).collect();
    for r in &records {
        store.archive_insert_many(std::slice::from_ref(r)).unwrap();
    }
    let before = store.archive_segments().unwrap();
    assert!(before.len() >= 12, "{before:?}");
    assert_eq!(store.sweep_archive_due(t(30), 7, |_| true).unwrap(), 30);
    let after = store.archive_segments().unwrap();
    assert!(after.len() <= 5 && after.first() > before.first(), "{before:?} → {after:?}");
    // A swept result is gone by its id too, though its record may still be in a segment.
    assert_eq!(store.archived(records[29].result_id).unwrap(), None);
    assert_eq!(store.archived(records[30].result_id).unwrap().as_ref(), Some(&records[30]));
    // What is left reads back whole, and new records go on being written.
    let left = store.archive_page(&ArchiveQuery { limit: 100, oldest_first: true, ..Default::default() });
    assert_eq!(left.unwrap().unwrap().results, records[30..].to_vec());
    store.archive_insert_many(&[record(50, "B1", t(50), None)]).unwrap();
    assert_eq!(store.archive_len(), 11);
}

#[test]
fn a_result_whose_id_comes_late_is_found_by_its_id_through_restarts_and_a_rebuild() {
    // Two workers finishing at once: ids made in one order, stored in the other.
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<ArchivedResult> = (0..20).map(|i| record(i, "B1", t(i), None)).collect();
    let order: Vec<usize> = (0..20)
        .map(|i| {
            if i % 4 == 1 {
                i - 1
            } else if i % 4 == 0 {
                i + 1
            } else {
                i
            }
        })
        .collect();
    {
        let store = Store::open(dir.path(), CACHE).unwrap();
        for &i in &order {
            store.archive_insert_many(std::slice::from_ref(&records[i])).unwrap();
        }
        for r in &records {
            assert_eq!(store.archived(r.result_id).unwrap().as_ref(), Some(r));
        }
        assert!(store.archive_bytes().unwrap().index > 0);
    }
    let store = reopen(dir.path());
    for r in &records {
        assert_eq!(store.archived(r.result_id).unwrap().as_ref(), Some(r), "after a restart");
    }
    drop(store);
    std::fs::remove_dir_all(dir.path().join("db")).unwrap();
    let store = reopen(dir.path());
    for r in &records {
        assert_eq!(store.archived(r.result_id).unwrap().as_ref(), Some(r), "after a rebuild");
    }
    assert_eq!(store.archived(uuid::Uuid::now_v7()).unwrap(), None);
}

#[test]
fn a_new_database_rebuilds_the_archive_from_its_segment_files() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<ArchivedResult> =
        (0..100).map(|i| record(i, ["B1", "B2", ""][i as usize % 3], t(100 - i), None)).collect();
    let (series, page) = {
        let store = Store::open(dir.path(), CACHE).unwrap();
        store.archive_insert_many(&records).unwrap();
        let page = store.archive_page(&ArchiveQuery { limit: 1000, ..Default::default() }).unwrap().unwrap();
        (store.location_series("B2", None, None).unwrap(), page.results)
    };
    // The job database is lost (deleted, or moved aside as corrupt): the photo folder queues
    // every photo again, and the archive comes back from its segments.
    std::fs::remove_dir_all(dir.path().join("db")).unwrap();
    let store = reopen(dir.path());
    assert_eq!(store.archive_len(), 100);
    assert_eq!(store.location_series("B2", None, None).unwrap(), series);
    assert_eq!(store.archive_page(&ArchiveQuery { limit: 1000, ..Default::default() }).unwrap().unwrap().results, page);
    // Reopening an existing database reads nothing again.
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(store.archive_len(), 100);
}

#[test]
fn an_archive_kept_in_the_database_moves_to_segment_files_at_the_first_start() {
    // The layout before the segment files: records (postcard) in `archive`, by result id, and
    // two unpacked indexes.
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<ArchivedResult> = (0..50).map(|i| record(i, ["B1", "B2"][i as usize % 2], t(i), None)).collect();
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        let old = db.open_tree("archive").unwrap();
        for r in &records {
            old.insert(r.result_id.as_bytes(), postcard::to_stdvec(r).unwrap()).unwrap();
        }
        db.open_tree("archive_taken").unwrap().insert(b"x", b"").unwrap();
        db.open_tree("archive_location").unwrap().insert(b"y", b"").unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path(), CACHE).unwrap();
    assert_eq!(store.archive_len(), 50);
    assert_eq!(store.archived(records[7].result_id).unwrap().as_ref(), Some(&records[7]));
    assert_eq!(store.location_series("B2", None, None).unwrap().len(), 25);
    assert!(!store.archive_segments().unwrap().is_empty());
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(store.archive_len(), 50, "moved once");
    drop(store);
    let db = loop {
        match sled::open(dir.path().join("db")) {
            Ok(db) => break db,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    };
    let names: Vec<String> = db.tree_names().iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect();
    assert!(!names.iter().any(|n| n == "archive" || n == "archive_taken" || n == "archive_location"), "{names:?}");
}

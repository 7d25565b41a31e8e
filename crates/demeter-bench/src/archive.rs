//! The results archive at 1,000,000 results (issue 18): the cost per result on disk, start-up,
//! a location's series, the Locations and results pages, and the retention sweep running while
//! the series is read.

use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{TimeZone, Utc};
use demeter_domain::{
    archive::{ArchivedResult, TakenAtSource},
    JobId, SessionId,
};
use demeter_store::Store;

use crate::{
    daemon::{wait_for, Daemon},
    report::Section,
    stats::Samples,
    Opts,
};

/// Locations the results are spread over, and plants per tray (a 24-cell plug tray).
const LOCATIONS: usize = 100;
const PLANTS: u32 = 24;

/// Result `i` of `n`: location `i % LOCATIONS`, taken one after another over a year, processed
/// in the same order.
fn record(i: usize, n: usize) -> ArchivedResult {
    let start = Utc.with_ymd_and_hms(2025, 12, 1, 6, 0, 0).unwrap();
    let at = start + chrono::Duration::milliseconds((i as f64 * 365.0 * 86_400_000.0 / n as f64) as i64);
    let location = format!("bench-{:03}", i % LOCATIONS);
    ArchivedResult {
        result_id: uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            at.timestamp() as u64,
            at.timestamp_subsec_nanos(),
        )),
        job_id: JobId::new_v7(),
        upload_session_id: SessionId::new_v7(),
        filename: format!("{location}/IMG_{i:07}.jpg"),
        content_hash: format!("{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        taken_at: at,
        taken_at_source: TakenAtSource::Exif,
        processed_at: at + chrono::Duration::seconds(5),
        location_name: Some(format!("Bench {}", i % LOCATIONS)),
        location_id: Some(location),
        location_rule: Some(demeter_domain::location::LocationRule::Subfolder),
        model_name: "plant-exg".into(),
        model_version: "2.0.0".into(),
        model_sha256: "6f1c".repeat(16),
        total_detected: PLANTS - (i % 5) as u32,
        class_counts: Default::default(),
        grid: Some(demeter_domain::archive::ArchivedGrid { rows: 4, cols: 6, occupied: 22 }),
        plant_cover: 0.18,
        boxes: (0..PLANTS - (i % 5) as u32).map(|k| [100 + 400 * (k % 6), 80 + 450 * (k / 6), 310, 290]).collect(),
        width: 2592,
        height: 1944,
        trusted: true,
        trust_reasons: Vec::new(),
        owner: None,
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    walkdir::WalkDir::new(dir).into_iter().flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
}

/// The cost on disk of `n` results written as the pipeline writes them: each appended and synced
/// on its own, its key stored and the database flushed, one result at a time.
fn one_at_a_time(n: usize) -> Result<(usize, f64)> {
    let root = tempfile::tempdir()?;
    let data = root.path().join("data");
    let store = Store::open(&data, 64 << 20)?;
    let empty = dir_bytes(&data.join("db"));
    for i in 0..n {
        store.archive_insert_many(&[record(i, n)])?;
    }
    let bytes = dir_bytes(&data.join("db")).saturating_sub(empty) + dir_bytes(store.archive_dir());
    Ok((n, bytes as f64 / n as f64))
}

fn timed(d: &Daemon, path: &str, reps: usize) -> Result<Samples> {
    let mut s = Samples::default();
    for _ in 0..reps {
        let t = Instant::now();
        d.get_bytes(path)?;
        s.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(s)
}

pub fn run(opts: &Opts) -> Result<Section> {
    let n = opts.scaled(1_000_000, 50_000);
    let root = tempfile::tempdir()?;
    let data = root.path().join("data");
    let t = Instant::now();
    let (logical, empty_db, segments_dir) = {
        let store = Store::open(&data, 64 << 20)?;
        let empty = dir_bytes(&data.join("db"));
        for start in (0..n).step_by(10_000) {
            let chunk: Vec<ArchivedResult> = (start..(start + 10_000).min(n)).map(|i| record(i, n)).collect();
            store.archive_insert_many(&chunk)?;
        }
        (store.archive_bytes()?, empty, store.archive_dir().to_path_buf())
    };
    let filled = t.elapsed();
    let db_grown = dir_bytes(&data.join("db")).saturating_sub(empty_db);
    let segments = dir_bytes(&segments_dir);
    let on_disk = db_grown + segments;
    let per = |bytes: u64| bytes as f64 / n as f64;
    let (single_n, single_disk) = one_at_a_time(opts.scaled(20_000, 2_000))?;
    let per_result = per(logical.index + logical.segments);
    let per_result_disk = per(on_disk);

    // Start-up with the full archive; then a location's series (n / 100 points) through the
    // API, the Locations summary and a page of results, each asked `reps` × 10 times.
    let mut startups = Samples::default();
    for _ in 0..opts.reps {
        let (d, took) = Daemon::start(root.path(), &[])?;
        startups.push(took.as_secs_f64() * 1e3);
        drop(d);
    }
    let (d, _) = Daemon::start(root.path(), &[])?;
    let reps = opts.reps * 10;
    let series = timed(&d, "/api/v1/series?location=bench-042", reps)?;
    let points = d.get("/api/v1/series?location=bench-042")?["points"].as_array().map_or(0, Vec::len);
    let locations = timed(&d, "/api/v1/locations", reps)?;
    let page = timed(&d, "/api/v1/results?location=bench-042&limit=100", reps)?;
    let csv = timed(&d, "/api/v1/results.csv?limit=1000", opts.reps)?;
    drop(d);

    // Retention: the oldest tenth is past `retention_days`; the sweep runs at start while the
    // series is read every 20 ms.
    let cutoff_days = {
        let first = record(0, n).processed_at;
        let tenth = record(n / 10, n).processed_at;
        (Utc::now() - first).num_milliseconds() as f64 / 86_400_000.0
            - (tenth - first).num_milliseconds() as f64 / 86_400_000.0
    };
    let days = format!("{cutoff_days:.6}");
    let (d, _) = Daemon::start(root.path(), &[("DEMETER_RESULTS_RETENTION_DAYS", &days)])?;
    let t0 = Instant::now();
    let mut during = Samples::default();
    wait_for("the retention sweep", Duration::from_secs(1800), || {
        let q = Instant::now();
        let r = d.get("/api/v1/results?limit=1&order=asc").ok()?;
        d.get("/api/v1/series?location=bench-042").ok()?;
        during.push(q.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(20));
        let oldest = r["results"][0]["processed_at"].as_str()?.to_owned();
        let first_kept = record(n / 10, n).processed_at;
        (chrono::DateTime::parse_from_rfc3339(&oldest).ok()? >= first_kept).then_some(())
    })?;
    let swept = t0.elapsed();
    drop(d);
    let kept = n - n / 10;
    let after_sweep =
        (dir_bytes(&data.join("db")).saturating_sub(empty_db) + dir_bytes(&segments_dir)) as f64 / kept as f64;

    let ms = |s: &Samples| format!("{:.1} ms (p95 {:.1}, max {:.1})", s.median(), s.quantile(0.95), s.max());
    Ok(Section {
        title: "Results archive at scale".into(),
        command: "demeter-bench archive".into(),
        targets: "a location's series ≤ 50 ms; start-up < 1 s; ≤ 1 KB per result besides the thumbnail (issue 18)"
            .into(),
        result: format!(
            "{n} results: series {:.1} ms ({}), start-up {:.0} ms ({}), {:.0} B/result stored, {:.0} B on disk ({})",
            series.median(),
            if series.quantile(0.95) <= 50.0 { "met" } else { "NOT met" },
            startups.median(),
            if startups.max() < 1000.0 { "met" } else { "NOT met" },
            per_result,
            per_result_disk,
            if per_result_disk.max(single_disk) <= 1024.0 { "met" } else { "NOT met" },
        ),
        body: format!(
            "{n} archived results (synthetic, each as the pipeline writes it: {PLANTS} plants or a few fewer, their \
             boxes, a 4 × 6 grid, two timestamps, hashes, names) over {LOCATIONS} locations and a year, written in \
             batches of 10,000 in {:.0} s.\n\n\
             | | |\n|---|---|\n\
             | records in their frames, and the id lists | {:.0} bytes per result |\n\
             | index entries in the database (keys and values) | {:.0} bytes per result |\n\
             | **on disk, in all** | **{:.0} bytes per result** ({:.0} MB) |\n\
             | of which the segment files (`archive/`) | {:.0} bytes per result |\n\
             | of which the database (`db/` grown by) | {:.0} bytes per result |\n\
             | on disk, {single_n} results written one at a time as the pipeline writes them (each synced and flushed) | {single_disk:.0} bytes per result |\n\
             | start-up with the full archive (to `/health` answering), {} runs | {:.0} ms median, {:.0} ms max |\n\
             | a location's series, {points} points (`GET /api/v1/series`) | {} |\n\
             | the Locations summary, {LOCATIONS} locations (`GET /api/v1/locations`) | {} |\n\
             | a page of 100 results of one location (`GET /api/v1/results`) | {} |\n\
             | 1,000 results as CSV (`GET /api/v1/results.csv?limit=1000`) | {} |\n\
             | retention removing the oldest {} results, at start | {:.1} s; the series and a results page meanwhile: {} |\n\
             | on disk after it, per result kept | {:.0} bytes |\n\n\
             The records are appended to segment files and cost their own size; the database holds one key per result (location, taken-at, id → count, cover, where the record is) \
             and sled's log keeps {:.1} times its live bytes (it \
             frees a log segment only when less than half of it is live, so records kept in sled cost about three \
             times their size: 1,318–1,521 bytes per result before they moved out). The series is read from the location index alone (each entry holds its photo's count and cover), so it \
             costs one range scan and no record reads; start-up opens the trees and reads nothing of the archive. \
             The retention sweep removes 200 results at a time, holding the store's write lock only for a batch \
             and then pausing as long as the batch took (as the TTL sweep does); archive reads take no lock.\n",
            filled.as_secs_f64(),
            per(logical.segments),
            per(logical.index),
            per_result_disk,
            on_disk as f64 / 1e6,
            per(segments),
            per(db_grown),
            startups.len(),
            startups.median(),
            startups.max(),
            ms(&series),
            ms(&locations),
            ms(&page),
            ms(&csv),
            n / 10,
            swept.as_secs_f64(),
            ms(&during),
            after_sweep,
            db_grown as f64 / logical.index.max(1) as f64,
        ),
    })
}

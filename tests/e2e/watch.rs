//! The watcher's promises through the whole daemon: floods, re-saved photos and copies, and
//! polling with events off.

use std::{collections::BTreeSet, fs, time::Duration};

use demeter_tests::{real_photos, wait_for, Daemon};
use serde_json::Value;

/// Every job of every session, as the poll endpoint reports them.
fn all_jobs(d: &Daemon) -> Vec<Value> {
    d.sessions()
        .iter()
        .flat_map(|s| d.poll(s["upload_session_id"].as_str().unwrap())["jobs"].as_array().cloned().unwrap())
        .collect()
}

fn total_jobs(d: &Daemon) -> u64 {
    d.sessions().iter().map(|s| s["summary"]["total_jobs"].as_u64().unwrap()).sum()
}

#[test]
fn five_thousand_photos_dropped_at_once_become_exactly_five_thousand_jobs() {
    let d = Daemon::start_with(&[("DEMETER_SESSION_GAP_SECS", "600")]);
    // Paused, so the test counts jobs rather than waiting for 5,000 inferences.
    d.request("POST", "/api/v1/queue/pause").call().unwrap();
    const N: usize = 5000;
    let started = std::time::Instant::now();
    for i in 0..N {
        // Distinct content each (identical bytes would be one job by the dedup rule).
        let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0];
        bytes.extend(format!("tray {i}").as_bytes());
        bytes.extend([0xFF, 0xD9]);
        fs::write(d.watch_dir().join(format!("tray-{i:04}.jpg")), bytes).unwrap();
    }
    wait_for("5,000 jobs", Duration::from_secs(240), || {
        (d.get("/health").1["queue"]["pending"] == N as u64).then_some(())
    });
    eprintln!("5,000 photos queued {:?} after the first was written", started.elapsed());
    // Two more rescans (every 2 s here) must not add any.
    std::thread::sleep(Duration::from_secs(5));
    let jobs = all_jobs(&d);
    let names: BTreeSet<_> = jobs.iter().map(|j| j["filename"].as_str().unwrap().to_owned()).collect();
    assert_eq!((jobs.len(), names.len()), (N, N), "exactly one job per photo");
    assert_eq!(d.get("/health").1["queue"]["pending"], N as u64);
}

#[test]
fn a_resaved_photo_is_processed_again_once_and_a_copy_is_not() {
    let d = Daemon::start();
    let photo = fs::read(&real_photos()[0]).unwrap();
    let path = d.watch_dir().join("bench-1.jpg");
    fs::write(&path, &photo).unwrap();
    let completed = |n: usize| {
        wait_for("the jobs to complete", Duration::from_secs(60), || {
            let jobs = all_jobs(&d);
            (jobs.iter().filter(|j| j["status"] == "completed").count() == n).then_some(jobs)
        })
    };
    completed(1);

    // A byte-identical copy under another name: no job (README, "How photos become jobs").
    fs::write(d.watch_dir().join("bench-1 copy.jpg"), &photo).unwrap();
    wait_for("the copy to be noticed", Duration::from_secs(20), || {
        d.log().contains("identical to an already-known photo").then_some(())
    });
    // Saved again under its own name (a new mtime): processed again, once.
    std::thread::sleep(Duration::from_millis(20));
    fs::write(&path, &photo).unwrap();
    let jobs = completed(2);
    assert!(jobs.iter().all(|j| j["filename"] == "bench-1.jpg"), "{jobs:?}");
    // Rescans (every 2 s) change nothing.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(total_jobs(&d), 2);
}

#[test]
fn with_filesystem_events_off_photos_arrive_by_rescan_and_health_says_so() {
    let d = Daemon::start_with(&[("DEMETER_WATCH_MODE", "polling")]);
    let watcher = d.get("/health").1["watcher"].clone();
    assert_eq!(watcher["mode"], "polling");
    assert!(watcher["mode_reason"].as_str().unwrap().contains("watch.mode"), "{watcher}");
    fs::copy(&real_photos()[0], d.watch_dir().join("polled.jpg")).unwrap();
    wait_for("the photo to complete", Duration::from_secs(60), || {
        all_jobs(&d).iter().any(|j| j["status"] == "completed").then_some(())
    });
    assert_eq!(d.get("/health").1["watcher"]["mode"], "polling");
}

use std::{collections::HashMap, fs, time::Duration};

use demeter_tests::{real_photos, wait_for, Daemon};
use serde_json::Value;

/// `kill -9` while jobs are processing, restart: every job ends terminal exactly once, and
/// nothing that was already finished is processed again.
#[test]
fn kill_9_while_processing_then_restart_loses_and_repeats_nothing() {
    let mut d = Daemon::start();
    // Enough distinct photos to keep four workers busy for a while: each copy gets a different
    // trailing byte after the JPEG's end marker, so the content hashes differ.
    let photos: Vec<_> = real_photos().into_iter().filter(|p| p.extension().unwrap() != "png").collect();
    let mut n = 0u64;
    for round in 0..8u8 {
        for p in &photos {
            let mut bytes = fs::read(p).unwrap();
            bytes.push(round);
            let name = format!("r{round}-{}", p.file_name().unwrap().to_string_lossy());
            fs::write(d.watch_dir().join(".staging"), &bytes).unwrap();
            fs::rename(d.watch_dir().join(".staging"), d.watch_dir().join(name)).unwrap();
            n += 1;
        }
    }
    let session = wait_for("the session", Duration::from_secs(60), || {
        d.sessions().first().map(|s| s["upload_session_id"].as_str().unwrap().to_owned())
    });
    // Kill as soon as some jobs are finished and others are mid-flight.
    let before = wait_for("jobs in flight after some completed", Duration::from_secs(120), || {
        let body = d.poll(&session);
        let s = &body["summary"];
        (s["processing"].as_u64().unwrap() > 0 && s["completed"].as_u64().unwrap() > 0).then_some(body)
    });
    assert!(before["summary"]["total_jobs"].as_u64().unwrap() > 0);
    d.kill9();

    // Every state reported before the kill was durable: read the store again after restart.
    d.restart();
    let mut last = Value::Null;
    let after = wait_for("every job to finish after restart", Duration::from_secs(180), || {
        let body = d.poll(&session);
        if body["summary"]["total_jobs"] == n && body["summary"]["completed"] == n {
            return Some(body);
        }
        if last["summary"] != body["summary"] {
            eprintln!("after restart: {}", body["summary"]);
        }
        last = body;
        None
    });

    let runs: HashMap<&str, &Value> = after["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["job_id"].as_str().unwrap(), &j["result"]["session_id"]))
        .collect();
    assert_eq!(runs.len() as u64, n, "one job per photo, no duplicates");
    let mut finished_before = 0;
    for job in before["jobs"].as_array().unwrap() {
        if job["status"] == "completed" {
            finished_before += 1;
            // Same processing-run id: the job was not processed a second time.
            assert_eq!(runs[job["job_id"].as_str().unwrap()], &job["result"]["session_id"], "{job}");
        }
    }
    assert!(finished_before > 0);
    // Photos still arriving after the restart (within the 30 s gap) joined the same session,
    // and nothing already queued was queued again.
    let sessions = d.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
}

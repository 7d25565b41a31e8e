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

/// `kill -9` again and again while photos are processing (10 cycles; `make soak` runs 100 with
/// DEMETER_KILL_CYCLES): nothing is lost, nothing is finished twice, and what the API reported
/// as an outcome (completed with a result, or failed) is never taken back.
#[test]
fn kill_9_cycles_lose_nothing_and_reported_outcomes_never_go_back() {
    let cycles: usize = std::env::var("DEMETER_KILL_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    // Slower segmentation keeps the four workers busy across the kills.
    let config = demeter_tests::config_file("[runtime.faults]\nlatency_ms = 400\n");
    let mut d = Daemon::start_with(&[("DEMETER_CONFIG", &config.path), ("DEMETER_WORKERS", "4")]);
    let small: Vec<_> = real_photos()
        .into_iter()
        .filter(|p| fs::metadata(p).unwrap().len() < 300_000 && p.extension().unwrap() == "jpg")
        .collect();
    // Enough photos that every cycle still finds four to run.
    let n = 8 * cycles.max(5) as u64 + 40;
    for i in 0..n {
        let mut bytes = fs::read(&small[i as usize % small.len()]).unwrap();
        bytes.extend_from_slice(&i.to_le_bytes()); // distinct content after the end marker
        fs::write(d.watch_dir().join(".staging"), &bytes).unwrap();
        fs::rename(d.watch_dir().join(".staging"), d.watch_dir().join(format!("p{i:04}.jpg"))).unwrap();
    }
    let session = wait_for("the session", Duration::from_secs(60), || {
        d.sessions().first().map(|s| s["upload_session_id"].as_str().unwrap().to_owned())
    });

    // What the API said, per job: the outcome once there is one.
    let mut outcome: HashMap<String, (String, Value)> = HashMap::new();
    let mut observe = |body: &Value, when: &str| {
        for j in body["jobs"].as_array().unwrap() {
            let id = j["job_id"].as_str().unwrap().to_owned();
            let status = j["status"].as_str().unwrap().to_owned();
            let now = (status.clone(), j["result"]["session_id"].clone());
            if let Some(before) = outcome.get(&id) {
                assert_eq!(&now, before, "{when}: job {id} reported {before:?} earlier, now {now:?}");
            } else if status == "completed" || status == "failed" {
                outcome.insert(id, now);
            }
        }
    };
    let mut restart_ms = Vec::new();
    for cycle in 0..cycles {
        // Watch until all four workers hold a photo, then kill the process under them.
        wait_for(&format!("four photos in flight (cycle {cycle})"), Duration::from_secs(60), || {
            let r = d.request("GET", &format!("/api/v1/photos/jobs/status?upload_session_id={session}")).call().ok()?;
            let body: Value = r.into_json().ok()?;
            observe(&body, &format!("cycle {cycle}"));
            (body["summary"]["processing"].as_u64() == Some(4)).then_some(())
        });
        d.kill9();
        let t = std::time::Instant::now();
        d.restart();
        restart_ms.push(t.elapsed().as_millis());
        observe(&d.poll(&session), &format!("right after restart {cycle}"));
    }
    let done = wait_for("every photo to finish", Duration::from_secs(300), || {
        let body = d.poll(&session);
        observe(&body, "after the last restart");
        (body["summary"]["completed"].as_u64().unwrap() + body["summary"]["failed"].as_u64().unwrap() == n)
            .then_some(body)
    });
    assert_eq!(done["summary"]["total_jobs"], n, "one job per photo: none lost, none duplicated");
    assert_eq!(done["summary"]["completed"], n, "{}", done["summary"]);
    assert_eq!(d.sessions().len(), 1);
    restart_ms.sort_unstable();
    eprintln!(
        "{cycles} kill -9 cycles, {n} photos: {} outcomes seen before the end; restart to serving (orphans reclaimed) median {} ms, max {} ms",
        outcome.len(),
        restart_ms[restart_ms.len() / 2],
        restart_ms[restart_ms.len() - 1]
    );
}

//! Faults, with the test double around inference (`[runtime.faults]`) and the real model.

use std::{fs, time::Duration};

use demeter_tests::{real_photos, wait_for, Daemon};
use serde_json::Value;

/// A job's detail, or `None` while the daemon is restarting.
fn job_status(d: &Daemon, name: &str) -> Option<Value> {
    let sessions: Value = d.request("GET", "/api/v1/sessions").call().ok()?.into_json().ok()?;
    for s in sessions["sessions"].as_array()? {
        let id = s["upload_session_id"].as_str()?;
        let poll: Value = d
            .request("GET", &format!("/api/v1/photos/jobs/status?upload_session_id={id}"))
            .call()
            .ok()?
            .into_json()
            .ok()?;
        if let Some(j) = poll["jobs"].as_array()?.iter().find(|j| j["filename"] == name) {
            let detail: Value =
                d.request("GET", &format!("/api/v1/jobs/{}", j["job_id"].as_str()?)).call().ok()?.into_json().ok()?;
            return Some(detail);
        }
    }
    None
}

fn finished(d: &Daemon, name: &str, within: Duration) -> Value {
    wait_for(&format!("{name} to finish"), within, || {
        job_status(d, name).filter(|j| j["status"] == "completed" || j["status"] == "failed")
    })
}

#[test]
fn a_photo_that_aborts_the_process_fails_after_three_crashes_under_the_supervisor_and_the_rest_complete() {
    let config = demeter_tests::config_file("[runtime.faults]\nabort_on = \"poison\"\n");
    // One worker: only the poisonous photo is in flight when the process dies.
    let mut d =
        Daemon::start_with_args(&["--supervise"], &[("DEMETER_CONFIG", &config.path), ("DEMETER_WORKERS", "1")]);
    let photos = real_photos();
    fs::copy(&photos[1], d.watch_dir().join("good-1.jpg")).unwrap();
    fs::copy(&photos[3], d.watch_dir().join("good-2.jpg")).unwrap();
    for name in ["good-1.jpg", "good-2.jpg"] {
        assert_eq!(finished(&d, name, Duration::from_secs(60))["status"], "completed");
    }

    fs::copy(&photos[0], d.watch_dir().join("poison.jpg")).unwrap();
    let poison = finished(&d, "poison.jpg", Duration::from_secs(90));
    assert_eq!(poison["status"], "failed", "{poison}");
    assert_eq!(poison["error_message"], "worker crashed repeatedly");
    assert_eq!(poison["error_kind"], "crashed");
    assert_eq!(poison["attempts"], 3);

    // No crash loop: the daemon stays up and keeps working.
    fs::copy(&photos[7], d.watch_dir().join("good-3.png")).unwrap();
    assert_eq!(finished(&d, "good-3.png", Duration::from_secs(60))["status"], "completed");
    let log = d.log();
    assert_eq!(log.matches("supervisor: the daemon crashed").count(), 3, "{log}");
    assert_eq!(log.matches("injected fault: aborting the process").count(), 3);
    assert_eq!(job_status(&d, "good-1.jpg").unwrap()["status"], "completed", "earlier results survive the crashes");

    assert_eq!(d.terminate(), Some(0), "SIGTERM stops the supervisor and its daemon cleanly:\n{}", d.log());
    assert!(d.log().contains("engine stopped"));
}

#[test]
fn a_corrupt_database_is_moved_aside_and_rebuilt_from_the_photo_folder() {
    let mut d = Daemon::start();
    let photos = real_photos();
    fs::copy(&photos[1], d.watch_dir().join("a.jpg")).unwrap();
    fs::copy(&photos[3], d.watch_dir().join("b.jpg")).unwrap();
    for name in ["a.jpg", "b.jpg"] {
        assert_eq!(finished(&d, name, Duration::from_secs(60))["status"], "completed");
    }
    assert_eq!(d.terminate(), Some(0));
    // A disk fault: sled's config and log files turn to garbage.
    let db = d.data_dir().join("db");
    fs::write(db.join("conf"), b"\x00\xffnot a sled config").unwrap();
    fs::write(db.join("db"), vec![0xA5u8; 8192]).unwrap();

    d.restart();
    for name in ["a.jpg", "b.jpg"] {
        assert_eq!(finished(&d, name, Duration::from_secs(60))["status"], "completed", "rebuilt from the folder");
    }
    let (_, health) = d.get("/health");
    let warnings = health["warnings"].to_string();
    assert!(warnings.contains("corrupt") && warnings.contains("rebuilt from the photo folder"), "{health}");
    let aside: Vec<_> = fs::read_dir(d.data_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the corrupt database is kept for inspection");
}

#[test]
fn sigterm_with_jobs_in_flight_puts_them_back_without_using_an_attempt() {
    // Each segmentation takes 1.5 s, so SIGTERM finds all four workers busy.
    let config = demeter_tests::config_file("[runtime.faults]\nlatency_ms = 1500\n");
    let env = [("DEMETER_CONFIG", config.path.as_str()), ("DEMETER_WORKERS", "4")];
    let mut d = Daemon::start_with(&env);
    let photos = real_photos();
    for (i, p) in photos.iter().take(6).enumerate() {
        fs::copy(p, d.watch_dir().join(format!("p{i}.{}", p.extension().unwrap().to_str().unwrap()))).unwrap();
    }
    four_in_flight(&d);
    let started = std::time::Instant::now();
    assert_eq!(d.terminate(), Some(0), "{}", d.log());
    // The helper waits at most 20 s for the exit; the time itself is a figure, not a test.
    eprintln!("SIGTERM with 4 jobs in flight: exited in {:?}", started.elapsed());
    assert!(d.log().contains("job back in the queue"), "{}", d.log());

    d.restart();
    let names: Vec<String> = photos
        .iter()
        .take(6)
        .enumerate()
        .map(|(i, p)| format!("p{i}.{}", p.extension().unwrap().to_str().unwrap()))
        .collect();
    for name in &names {
        let job = finished(&d, name, Duration::from_secs(90));
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["attempts"], 1, "an interrupted run does not count: {job}");
    }
}

/// Waits until all four workers hold a photo.
fn four_in_flight(d: &Daemon) {
    wait_for("four photos in flight", Duration::from_secs(60), || {
        let (_, h) = d.get("/health");
        (h["queue"]["processing"].as_u64() == Some(4)).then_some(())
    });
}

#[test]
fn stopping_ten_times_with_four_photos_in_flight_never_spends_an_attempt() {
    // The stop is a signal to the engine, whoever holds it: every time, the four workers put
    // their photos back without using an attempt, and nothing counts as crashed next start.
    let config = demeter_tests::config_file("[runtime.faults]\nlatency_ms = 1500\n");
    let env = [("DEMETER_CONFIG", config.path.as_str()), ("DEMETER_WORKERS", "4")];
    let mut d = Daemon::start_with(&env);
    let photos = real_photos();
    let names: Vec<String> = (0..8).map(|i| format!("q{i}.jpg")).collect();
    for (i, name) in names.iter().enumerate() {
        let mut bytes = fs::read(&photos[i % 2]).unwrap();
        bytes.push(i as u8);
        fs::write(d.watch_dir().join(name), bytes).unwrap();
    }
    for round in 0..10 {
        four_in_flight(&d);
        assert_eq!(d.terminate(), Some(0), "round {round}: {}", d.log());
        assert!(!d.log().contains("reclaimed jobs left in processing"), "round {round}: {}", d.log());
        d.restart();
    }
    for name in &names {
        let job = finished(&d, name, Duration::from_secs(120));
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["attempts"], 1, "ten interrupted runs spent nothing: {job}");
    }
}

#[test]
fn a_poison_photo_among_healthy_ones_in_flight_is_caught_and_only_it_fails() {
    // Four workers: the first crash takes healthy photos down with the poisonous one.
    let config = demeter_tests::config_file("[runtime.faults]\nabort_on = \"poison\"\nlatency_ms = 300\n");
    let mut d =
        Daemon::start_with_args(&["--supervise"], &[("DEMETER_CONFIG", &config.path), ("DEMETER_WORKERS", "4")]);
    let photos = real_photos();
    let names = ["a.jpg", "b.jpg", "poison.jpg", "c.jpg", "d.jpg", "e.jpg"];
    for (i, name) in names.iter().enumerate() {
        let mut bytes = fs::read(&photos[if i % 2 == 0 { 1 } else { 3 }]).unwrap();
        bytes.push(i as u8);
        fs::write(d.watch_dir().join(name), bytes).unwrap();
    }
    for name in names {
        let job = finished(&d, name, Duration::from_secs(120));
        if name == "poison.jpg" {
            assert_eq!(
                (job["status"].as_str(), job["error_message"].as_str()),
                (Some("failed"), Some("worker crashed repeatedly"))
            );
        } else {
            assert_eq!(job["status"], "completed", "a healthy photo caught in the crash: {job}");
        }
    }
    let crashes = d.log().matches("supervisor: the daemon crashed").count();
    assert!((3..=4).contains(&crashes), "one crash with others in flight, then three alone: {crashes}");
    assert_eq!(d.terminate(), Some(0));
}

#[test]
fn a_stage_that_hangs_fails_its_photo_and_the_worker_is_replaced() {
    let config = demeter_tests::config_file("[runtime.faults]\nhang_on = \"hang\"\nlatency_ms = 800\n");
    let mut d = Daemon::start_with(&[
        ("DEMETER_CONFIG", &config.path),
        ("DEMETER_WORKERS", "2"),
        ("DEMETER_STAGE_TIMEOUT_SECS", "3"),
    ]);
    let photos = real_photos();
    let put = |name: &str, i: u8| {
        let mut bytes = fs::read(&photos[1]).unwrap();
        bytes.push(i);
        fs::write(d.watch_dir().join(name), bytes).unwrap();
    };
    put("hang.jpg", 0);
    put("a.jpg", 1);
    put("b.jpg", 2);
    let hung = finished(&d, "hang.jpg", Duration::from_secs(60));
    assert_eq!(hung["status"], "failed");
    assert_eq!(hung["error_message"], "stage segment timed out after 3 s");
    for name in ["a.jpg", "b.jpg"] {
        assert_eq!(finished(&d, name, Duration::from_secs(60))["status"], "completed");
    }
    // Back to full strength: two photos in flight at once again.
    put("c.jpg", 3);
    put("d.jpg", 4);
    wait_for("two workers busy at once", Duration::from_secs(30), || {
        let (_, h) = d.get("/health");
        (h["workers"]["busy"].as_u64() == Some(2)).then_some(())
    });
    for name in ["c.jpg", "d.jpg"] {
        assert_eq!(finished(&d, name, Duration::from_secs(60))["status"], "completed");
    }
    let (_, h) = d.get("/health");
    assert_eq!(h["workers"]["busy"], 0, "the stuck thread is not counted: {h}");
    assert_eq!(d.terminate(), Some(0), "a stuck thread does not hold up shutdown:\n{}", d.log());
}

/// Every job of every session, from the poll endpoint.
fn all_jobs(d: &Daemon) -> Vec<Value> {
    d.sessions()
        .iter()
        .flat_map(|s| d.poll(s["upload_session_id"].as_str().unwrap())["jobs"].as_array().cloned().unwrap())
        .collect()
}

#[test]
fn repeated_device_errors_pause_processing_until_the_device_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("device-broken");
    let config = demeter_tests::config_file(&format!(
        "[runtime.faults]\ndevice_broken_while = {:?}\n[workers]\ncount = 2\nbreaker_threshold = 3\nbreaker_cooldown_secs = 2\n",
        broken.to_str().unwrap()
    ));
    let d = Daemon::start_with(&[("DEMETER_CONFIG", &config.path)]);
    fs::write(&broken, "").unwrap();
    let photos: Vec<_> = real_photos().into_iter().filter(|p| p.extension().unwrap() == "jpg").take(6).collect();
    for (i, p) in photos.iter().enumerate() {
        fs::copy(p, d.watch_dir().join(format!("tray-{i}.jpg"))).unwrap();
    }

    // Three device errors in a row: paused, not ready, and saying why.
    let health = wait_for("the breaker to open", Duration::from_secs(60), || {
        let (code, h) = d.get("/health");
        (h["inference"]["state"] == "open").then_some((code, h))
    });
    assert_eq!(health.0, 503, "not ready while paused: {}", health.1);
    assert_eq!(health.1["ready"], false);
    assert!(health.1["inference"]["reason"].as_str().unwrap().contains("not responding"), "{}", health.1);
    assert!(health.1["inference"]["paused_since"].is_string());
    // Nothing is lost to the outage: the photos wait in the queue instead of failing.
    std::thread::sleep(Duration::from_secs(3)); // a failed trial or two meanwhile
    let jobs = all_jobs(&d);
    assert_eq!(jobs.len(), photos.len());
    // Waiting, or (at most one) being tried by the breaker's trial: none failed, none done.
    assert!(jobs.iter().all(|j| j["status"] == "pending" || j["status"] == "processing"), "{jobs:?}");
    assert!(jobs.iter().filter(|j| j["status"] == "processing").count() <= 1, "one trial at a time: {jobs:?}");
    assert!(d.log().contains("inference keeps failing: processing paused"));

    // The device comes back: the next trial succeeds and everything completes.
    fs::remove_file(&broken).unwrap();
    wait_for("every photo to complete", Duration::from_secs(90), || {
        all_jobs(&d).iter().all(|j| j["status"] == "completed").then_some(())
    });
    let (code, health) = d.get("/health");
    assert_eq!((code, &health["inference"]["state"]), (200, &Value::from("closed")), "{health}");
    assert!(d.log().contains("inference works again; processing resumes"));
    let metrics = d.request("GET", "/metrics").call().unwrap().into_string().unwrap();
    assert!(metrics.contains("demeter_inference_pauses_total 1\n"), "{metrics}");
    assert!(metrics.contains("demeter_inference_paused 0\n"));
}

#[test]
fn a_photo_the_model_cannot_take_fails_once_without_retries_or_blaming_the_device() {
    // The default graph exported with a fixed 224 × 224 input (models/build.py); photos are
    // resized to a 512-pixel long side, so none fits.
    let model = demeter_tests::package_dir().join("models/plant-exg-fixed-224");
    let config = demeter_tests::config_file(&format!(
        "[model]\ndir = {:?}\n[workers]\nbreaker_threshold = 2\n",
        model.to_str().unwrap()
    ));
    let d = Daemon::start_with(&[("DEMETER_CONFIG", &config.path)]);
    for (i, p) in real_photos().iter().filter(|p| p.extension().unwrap() == "jpg").take(3).enumerate() {
        fs::copy(p, d.watch_dir().join(format!("shape-{i}.jpg"))).unwrap();
    }
    for i in 0..3 {
        let job = finished(&d, &format!("shape-{i}.jpg"), Duration::from_secs(60));
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!((job["attempts"].as_u64(), job["error_kind"].as_str()), (Some(1), Some("permanent")), "{job}");
        let message = job["error_message"].as_str().unwrap();
        assert!(message.starts_with("the model takes input of shape [1, 3, 224, 224]"), "{message}");
    }
    let (code, health) = d.get("/health");
    assert_eq!((code, &health["inference"]["state"]), (200, &Value::from("closed")), "{health}");
}

use std::{fs, time::Duration};

use demeter_tests::{real_photos, wait_for, Daemon, ADMIN_TOKEN};
use serde_json::Value;

/// Waits until exactly one session exists with `n` jobs, all terminal; returns its poll body.
fn finished_session(d: &Daemon, n: u64) -> Value {
    let id = wait_for("a session with every job queued", Duration::from_secs(60), || {
        let s = d.sessions();
        (s.len() == 1 && s[0]["summary"]["total_jobs"] == n)
            .then(|| s[0]["upload_session_id"].as_str().unwrap().to_owned())
    });
    wait_for("every job to finish", Duration::from_secs(120), || {
        let body = d.poll(&id);
        let s = &body["summary"];
        (s["completed"].as_u64().unwrap() + s["failed"].as_u64().unwrap() == n).then_some(body)
    })
}

#[test]
fn real_photos_dropped_into_the_folder_complete_and_bad_files_fail_with_reasons() {
    let d = Daemon::start();
    let photos = real_photos();
    assert!(photos.len() >= 9, "the shared real photo set");
    for p in &photos {
        fs::copy(p, d.watch_dir().join(p.file_name().unwrap())).unwrap();
    }
    // A truncated JPEG, a text file named .jpg, and junk that must be ignored.
    let jpeg = fs::read(&photos[0]).unwrap();
    fs::write(d.watch_dir().join("truncated.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    fs::write(d.watch_dir().join("notes.jpg"), "this is a text file, not a photo\n").unwrap();
    fs::write(d.watch_dir().join("readme.txt"), "ignored").unwrap();
    fs::write(d.watch_dir().join(".hidden.jpg"), &jpeg[..100]).unwrap();

    let n = photos.len() as u64 + 2;
    let body = finished_session(&d, n);
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len() as u64, n, "one job per photo, junk ignored: {body:#}");
    for job in jobs {
        let name = job["filename"].as_str().unwrap();
        match name {
            "truncated.jpg" => {
                assert_eq!(job["status"], "failed", "{job}");
                let msg = job["error_message"].as_str().unwrap();
                assert!(msg.contains("corrupt or truncated JPEG"), "{msg}");
            }
            "notes.jpg" => {
                assert_eq!(job["status"], "failed", "{job}");
                assert!(job["error_message"].as_str().unwrap().starts_with("not an image"), "{job}");
            }
            _ => {
                assert_eq!(job["status"], "completed", "{name}: {job}");
                assert_eq!(job["progress_percent"], 100);
                assert!(job["result"]["total_detected"].as_u64().unwrap() >= 1, "{name} has plants");
                assert!(job["started_at"].is_string() && job["completed_at"].is_string());
                assert_eq!(job["image_id"].as_str().unwrap().len(), 16);
                let id = job["job_id"].as_str().unwrap();
                // The overlay is drawn from the photo when first asked for, at most 1024 px
                // long, and kept under the result it shows.
                let (overlay, detail) = overlay_of(&d, id);
                // Where it ran is part of the result (no GPU in the tests: the CPU provider).
                let ran = (detail["details"]["execution_provider"].as_str(), detail["details"]["device"].as_str());
                assert_eq!(ran, (Some("CPU"), Some("cpu")), "{name}");
                let (w, h) =
                    (detail["details"]["width"].as_u64().unwrap(), detail["details"]["height"].as_u64().unwrap());
                let o = jpeg_size(&overlay);
                assert_eq!(u64::from(o.0.max(o.1)), w.max(h).min(1024), "{name}: overlay {o:?} of a {w}x{h} photo");
                let kept = d
                    .data_dir()
                    .join(format!("overlays/{id}/{}.jpg", detail["details"]["session_id"].as_str().unwrap()));
                assert_eq!(fs::read(&kept).unwrap(), overlay, "{name}: the drawn overlay is kept");
                let thumb = d.data_dir().join("thumbnails").join(format!("{id}.jpg"));
                let t = jpeg_size(&fs::read(&thumb).unwrap());
                assert!(t.0.max(t.1) <= 256 && t.0.max(t.1) >= 128, "{name}: thumbnail {t:?}");
            }
        }
    }
    let tray = jobs.iter().find(|j| j["filename"] == "01_pcv-tut-arabidopsis-tray__arabidopsis_tray.jpg").unwrap();
    let count = tray["result"]["total_detected"].as_u64().unwrap();
    assert!((15..=21).contains(&count), "tray of 19 plants counted {count}");
    // A photo gone from the folder still has an overlay, drawn on its thumbnail (and not kept:
    // the photo may come back).
    let id = tray["job_id"].as_str().unwrap();
    fs::remove_dir_all(d.data_dir().join(format!("overlays/{id}"))).unwrap();
    fs::remove_file(d.watch_dir().join("01_pcv-tut-arabidopsis-tray__arabidopsis_tray.jpg")).unwrap();
    let o = jpeg_size(&overlay_of(&d, id).0);
    assert_eq!(o.0.max(o.1), 256, "drawn on the 256-px thumbnail: {o:?}");
    assert!(!d.data_dir().join(format!("overlays/{id}")).exists());
    assert_eq!(body["summary"]["overall_progress_percent"], 100.0);
    assert_eq!(body["summary"]["failed"], 2);

    let metrics = d.request("GET", "/metrics").call().unwrap().into_string().unwrap();
    assert!(
        metrics.contains(&format!("demeter_jobs_finished_total{{state=\"completed\"}} {}", photos.len())),
        "{metrics}"
    );
    assert!(metrics.contains("demeter_inference_duration_seconds_count"), "{metrics}");
    assert!(
        metrics.contains("demeter_model_device{model=\"plant-exg\",provider=\"CPU\",device=\"cpu\"} 1"),
        "{metrics}"
    );
    let (code, health) = d.get("/health");
    assert_eq!(code, 200);
    assert_eq!(health["ready"], true);
    assert_eq!(health["execution_provider"], "CPU");
    assert_eq!(health["workers"]["count"], 4);
    assert_eq!(health["queue"]["pending"], 0);
    assert_eq!(health["watcher"]["mode"], "events");
    assert!(health["warnings"][0].as_str().unwrap().contains("CPU"), "auto fell back to CPU and says so");
    // Every build carries the GPU providers; the warning says why this machine cannot use them.
    assert_eq!(health["compiled_providers"], serde_json::json!(["CPU", "CUDA", "TensorRT"]));
    let why = health["warnings"][0].as_str().unwrap();
    // Where each model runs, and why (auto without a usable GPU: the same reason).
    assert_eq!(health["devices"][0]["model"], "plant-exg");
    assert_eq!(
        (health["devices"][0]["execution_provider"].as_str(), health["devices"][0]["device"].as_str()),
        (Some("CPU"), Some("cpu"))
    );
    assert_eq!(health["devices"][0]["reason"], why);
    if std::path::Path::new("/dev/nvidia0").exists() {
        assert!(why.contains("has no CUDA provider"), "a GPU with the CPU library: {why}");
    } else {
        assert!(why.contains("no CUDA device"), "no GPU here: {why}");
    }

    // A rescan (every 2 s here) must not queue anything again, nor may a byte-identical copy.
    fs::copy(&photos[1], d.watch_dir().join("copy-of-02.jpg")).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(d.poll(body["upload_session_id"].as_str().unwrap())["summary"]["total_jobs"], n);
    let total: u64 = d.sessions().iter().map(|s| s["summary"]["total_jobs"].as_u64().unwrap()).sum();
    assert_eq!(total, n, "no duplicate jobs");
}

#[test]
fn subfolders_form_their_own_sessions_with_their_location() {
    let d = Daemon::start();
    let photos = real_photos();
    for bench in ["bench-a", "bench-b"] {
        fs::create_dir(d.watch_dir().join(bench)).unwrap();
    }
    fs::copy(&photos[1], d.watch_dir().join("bench-a/tray.jpg")).unwrap();
    fs::copy(&photos[3], d.watch_dir().join("bench-b/tray.jpg")).unwrap();
    let sessions = wait_for("two sessions, finished", Duration::from_secs(60), || {
        let s = d.sessions();
        (s.len() == 2 && s.iter().all(|s| s["summary"]["completed"] == 1)).then_some(s)
    });
    for s in sessions {
        let folder = s["source"]["subfolder"].as_str().unwrap().to_owned();
        let body = d.poll(s["upload_session_id"].as_str().unwrap());
        assert_eq!(body["jobs"][0]["filename"], format!("{folder}/tray.jpg"));
        assert_eq!(body["jobs"][0]["result"]["storage_location_id"], folder);
    }
}

#[test]
fn api_errors_are_json_with_the_right_status_and_sigterm_stops_cleanly() {
    let mut d = Daemon::start();
    let (code, body) =
        d.get(&format!("/api/v1/photos/jobs/status?upload_session_id={}", "0192f5d2-0000-7000-8000-000000000000"));
    assert_eq!(code, 404);
    assert_eq!(body["detail"], "Upload session not found or expired");
    let (code, _) = d.get("/api/v1/photos/jobs/status?upload_session_id=42");
    assert_eq!(code, 400);
    let page = ureq::get(&d.url("/")).call().unwrap().into_string().unwrap();
    assert!(page.contains("<title>Demeter</title>"));
    assert_eq!(d.terminate(), Some(0), "SIGTERM is a clean exit:\n{}", d.log());
    assert!(d.log().contains("engine stopped"), "{}", d.log());
}

/// A job's overlay (fetched from the `overlay_url` its detail gives) and that detail.
fn overlay_of(d: &Daemon, job: &str) -> (Vec<u8>, Value) {
    let (code, detail) = d.get(&format!("/api/v1/jobs/{job}"));
    assert_eq!(code, 200, "{detail}");
    let res = d.request("GET", detail["overlay_url"].as_str().unwrap()).call().unwrap();
    assert_eq!(res.content_type(), "image/jpeg");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut res.into_reader(), &mut bytes).unwrap();
    (bytes, detail)
}

/// Width and height of a JPEG, from its SOF marker: avoids an image dependency for one check.
fn jpeg_size(b: &[u8]) -> (u32, u32) {
    let mut i = 2;
    while i + 9 < b.len() {
        assert_eq!(b[i], 0xFF, "JPEG marker");
        let marker = b[i + 1];
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if (0xC0..=0xC2).contains(&marker) {
            let h = u16::from_be_bytes([b[i + 5], b[i + 6]]) as u32;
            let w = u16::from_be_bytes([b[i + 7], b[i + 8]]) as u32;
            return (w, h);
        }
        i += 2 + len;
    }
    panic!("no SOF marker in {} bytes", b.len())
}

#[test]
fn the_event_stream_shows_each_stage_of_a_dropped_photo_and_a_learned_eta() {
    use std::io::{BufRead, BufReader, Write};
    let d = Daemon::start();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        tcp,
        "GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut lines = BufReader::new(tcp).lines();
    assert!(lines.next().unwrap().unwrap().contains("200"));

    let photos = real_photos();
    fs::copy(&photos[1], d.watch_dir().join("first.jpg")).unwrap();
    let mut seen = Vec::new();
    let mut last_id = 0u64;
    let mut session_event = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("id: ") {
            let id: u64 = id.parse().unwrap();
            assert!(id > last_id, "ids increase");
            last_id = id;
        }
        let Some(data) = line.strip_prefix("data: ") else { continue };
        let v: Value = serde_json::from_str(data).unwrap();
        match v["type"].as_str() {
            Some("session") => session_event = true,
            Some("job") => {
                let job = &v["job"];
                seen.push((job["status"].as_str().unwrap().to_owned(), job["progress_percent"].as_u64().unwrap()));
                if job["status"] == "completed" {
                    assert_eq!(v["summary"]["completed"], 1);
                    break;
                }
            }
            _ => {}
        }
    }
    assert!(session_event, "the new session was announced");
    let statuses: Vec<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses.first(), Some(&"pending"));
    assert_eq!(statuses.last(), Some(&"completed"));
    assert!(statuses.iter().filter(|s| **s == "processing").count() >= 5, "every stage is announced: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "progress never goes backwards: {seen:?}");

    // The completed job taught the engine its stage durations: a second photo's ETA is what is
    // left of one job as long as the first (its stage timings, the only sample), never more.
    let first = d.sessions()[0]["upload_session_id"].as_str().unwrap().to_owned();
    let first_job = d.poll(&first)["jobs"][0]["job_id"].as_str().unwrap().to_owned();
    let (_, detail) = d.get(&format!("/api/v1/jobs/{first_job}"));
    let learned: f64 = detail["details"]["timings_ms"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    assert!(learned > 0.0, "{detail}");
    fs::copy(&photos[3], d.watch_dir().join("second.jpg")).unwrap();
    let (status, eta) = wait_for("an ETA for the second photo", Duration::from_secs(30), || {
        d.sessions().iter().find_map(|s| {
            let body = d.poll(s["upload_session_id"].as_str().unwrap());
            let job = body["jobs"].as_array().unwrap().iter().find(|j| j["filename"] == "second.jpg")?.clone();
            Some((job["status"].as_str()?.to_owned(), job["eta_seconds"].as_f64()?))
        })
    });
    // Waiting, it has a whole job ahead; running, what is left of one (0 once its last stage
    // overruns the mean); never more than the job it learned from. The API gives ETAs to a
    // tenth of a second, so a whole job shorter than 50 ms reads as 0 (a fast machine's 400 x 300
    // photo took 22 ms).
    let tenth = |s: f64| (s * 10.0).round() / 10.0;
    let least = if status == "pending" { tenth(learned / 1000.0).min(0.1) } else { 0.0 };
    if status != "completed" {
        assert!(
            eta >= least && eta <= tenth(learned / 1000.0) + 1e-6,
            "{status}: ETA {eta} s for a job learned as {learned} ms"
        );
    }
}

fn multipart(files: &[(&str, Vec<u8>)]) -> (String, Vec<u8>) {
    let parts: Vec<(&str, Option<&str>, &[u8])> =
        files.iter().map(|(name, bytes)| ("photos", Some(*name), bytes.as_slice())).collect();
    demeter_tests::form(&parts)
}

#[test]
fn photos_uploaded_over_http_are_processed_in_their_own_session() {
    let d = Daemon::start();
    let photos = real_photos();
    let (ct, body) = multipart(&[
        ("../../tray.jpg", fs::read(&photos[1]).unwrap()),
        ("tray.jpg", fs::read(&photos[3]).unwrap()),
        ("broken.jpg", b"not a photo at all".to_vec()),
        ("notes.txt", b"bench 3 watered at 9".to_vec()),
    ]);
    let res = d.request("POST", "/api/v1/photos/upload").set("Content-Type", &ct).send_bytes(&body).unwrap();
    assert_eq!(res.status(), 201);
    let v: Value = res.into_json().unwrap();
    assert_eq!(v["files"], serde_json::json!(["tray.jpg", "tray-2.jpg", "broken.jpg"]), "names made safe and unique");
    // A file that is not a photo would never become a job: not saved, and said so.
    assert_eq!(v["skipped"][0]["name"], "notes.txt", "{v:#}");
    assert!(v["skipped"][0]["reason"].as_str().unwrap().contains("not a photo"), "{v:#}");
    let id = v["upload_session_id"].as_str().unwrap().to_owned();
    let body = wait_for("the uploaded photos to finish", Duration::from_secs(60), || {
        let b = d.poll(&id);
        (b["summary"]["total_jobs"] == 3 && b["summary"]["pending"] == 0 && b["summary"]["processing"] == 0)
            .then_some(b)
    });
    assert_eq!(body["summary"]["completed"], 2, "{body:#}");
    assert_eq!(body["summary"]["failed"], 1);
    assert!(body["jobs"][0]["result"]["storage_location_id"].is_null(), "a phone upload has no bench");
    let sessions = d.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["source"]["kind"], "upload");
    assert!(!d.watch_dir().join("uploads").join(&id).join(".tray.jpg.part").exists());
    assert!(!d.watch_dir().join("uploads").join(&id).join("notes.txt").exists());
    // Nothing but files that are not photos: 415, with each named.
    let (ct, text) = multipart(&[("notes.txt", b"bench 3".to_vec()), ("tray.jpg.part", b"half".to_vec())]);
    match d.request("POST", "/api/v1/photos/upload").set("Content-Type", &ct).send_bytes(&text) {
        Err(ureq::Error::Status(415, res)) => {
            let e: Value = res.into_json().unwrap();
            let detail = e["detail"].as_str().unwrap();
            assert!(detail.contains("notes.txt") && detail.contains("tray.jpg.part"), "{e}");
        }
        other => panic!("expected 415, got {other:?}"),
    }
    assert_eq!(d.sessions().len(), 1, "no session for an upload without photos");

    // Over the per-file limit: 413 with a JSON error, and nothing half-written is left behind.
    // The server answers as soon as the limit is crossed and stops reading, so the client must
    // read the answer while it is still sending (a plain client may only see a broken pipe).
    let (ct, big) = multipart(&[("huge.jpg", vec![0u8; 65 << 20])]);
    let response = {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        let mut writer = tcp.try_clone().unwrap();
        let head = format!(
            "POST /api/v1/photos/upload HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            big.len()
        );
        let sender = std::thread::spawn(move || {
            let _ = writer.write_all(head.as_bytes()).and_then(|_| writer.write_all(&big));
        });
        let mut response = Vec::new();
        let _ = tcp.read_to_end(&mut response);
        sender.join().unwrap();
        String::from_utf8_lossy(&response).into_owned()
    };
    assert!(response.starts_with("HTTP/1.1 413"), "{}", &response[..response.len().min(300)]);
    assert!(response.contains("\"error\":\"too_large\""), "{response}");
    let leftovers: Vec<_> =
        walkdir_files(&d.watch_dir().join("uploads")).into_iter().filter(|p| p.ends_with(".part")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let (ct, none) = multipart(&[]);
    assert!(matches!(
        d.request("POST", "/api/v1/photos/upload").set("Content-Type", &ct).send_bytes(&none),
        Err(ureq::Error::Status(400, _))
    ));
}

fn walkdir_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walkdir_files(&p));
        } else {
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn a_session_reprocessed_with_another_installed_model_gets_new_results_with_their_provenance() {
    // A second model: the built-in graph with stricter detection (only big plants count).
    let models = tempfile::tempdir().unwrap();
    let strict = models.path().join("strict");
    fs::create_dir_all(&strict).unwrap();
    let repo_models = demeter_tests::package_dir().join("../models/plant-exg");
    fs::copy(repo_models.join("model.onnx"), strict.join("model.onnx")).unwrap();
    let manifest = fs::read_to_string(repo_models.join("manifest.toml")).unwrap();
    let manifest = manifest
        .replace("name = \"plant-exg\"", "name = \"plant-exg-strict\"")
        .replace("relative_min_area = 0.005", "relative_min_area = 0.6");
    fs::write(strict.join("manifest.toml"), manifest).unwrap();
    let config = models.path().join("config.toml");
    fs::write(&config, format!("[model]\ninstalled = [{:?}]\n", strict.to_str().unwrap())).unwrap();

    let d = Daemon::start_with(&[("DEMETER_CONFIG", config.to_str().unwrap())]);
    let (_, health) = d.get("/health");
    let installed: Vec<&str> =
        health["installed_models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(installed, ["plant-exg", "plant-exg-strict"]);

    fs::copy(&real_photos()[0], d.watch_dir().join("tray.jpg")).unwrap();
    let first = finished_session(&d, 1);
    let session = first["upload_session_id"].as_str().unwrap().to_owned();
    let job = first["jobs"][0]["job_id"].as_str().unwrap().to_owned();
    let before = first["jobs"][0]["result"]["total_detected"].as_u64().unwrap();
    assert!(before >= 18, "{before}");

    let (first_overlay, first_detail) = overlay_of(&d, &job);

    let res = d
        .request("POST", &format!("/api/v1/sessions/{session}/reprocess"))
        .set("content-type", "application/json")
        .send_string(r#"{"model":"plant-exg-strict"}"#)
        .unwrap();
    let body: Value = res.into_json().unwrap();
    assert_eq!(body["requeued"], 1);

    let detail = wait_for("the re-run to finish", Duration::from_secs(60), || {
        let (_, detail) = d.get(&format!("/api/v1/jobs/{job}"));
        (detail["status"] == "completed" && detail["details"]["model"]["name"] == "plant-exg-strict").then_some(detail)
    });
    let after = detail["details"]["total_detected"].as_u64().unwrap();
    assert!(after < before, "only the biggest rosettes pass the strict model: {after} vs {before}");
    assert!(detail["previous_result"].is_null(), "the old result is replaced once the new one is stored");
    assert_eq!(detail["details"]["model"]["thresholds"]["detection.relative_min_area"], 0.6);
    assert_eq!(detail["model"], "plant-exg-strict");
    // The overlay follows the new result: a new URL (browsers cache the old one for a day), new
    // boxes, and only the new one kept.
    let (overlay, detail) = overlay_of(&d, &job);
    assert_ne!(detail["overlay_url"], first_detail["overlay_url"]);
    assert_ne!(overlay, first_overlay, "fewer plants boxed");
    let kept: Vec<_> = fs::read_dir(d.data_dir().join(format!("overlays/{job}")))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(kept, [format!("{}.jpg", detail["details"]["session_id"].as_str().unwrap())], "{kept:?}");
}

/// Every photo's count (file name → plants) from a daemon running `model` (`None`: the built-in
/// plant-exg) with two workers (unless `extra` says otherwise), and its `/health` and `/metrics`.
fn counts_with(
    model: Option<&std::path::Path>,
    extra: &[(&str, &str)],
) -> (std::collections::BTreeMap<String, u64>, Value, String) {
    let model = model.map(|m| m.to_str().unwrap().to_owned());
    let mut env = vec![("DEMETER_WORKERS", "2")];
    env.extend_from_slice(extra);
    if let Some(m) = &model {
        env.push(("DEMETER_MODEL", m.as_str()));
    }
    let d = Daemon::start_with(&env);
    let photos = real_photos();
    for p in &photos {
        fs::copy(p, d.watch_dir().join(p.file_name().unwrap())).unwrap();
    }
    let body = finished_session(&d, photos.len() as u64);
    let counts = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            assert_eq!(j["status"], "completed", "{j}");
            (j["filename"].as_str().unwrap().to_owned(), j["result"]["total_detected"].as_u64().unwrap())
        })
        .collect();
    let metrics = d.request("GET", "/metrics").call().unwrap().into_string().unwrap();
    (counts, d.get("/health").1, metrics)
}

#[test]
fn a_network_sized_model_counts_exactly_like_plant_exg_with_and_without_a_batch_axis() {
    // tests/models/plant-exg-heavy*: plant-exg plus a ~5.5 GFLOP convolutional trunk whose output
    // is added times zero (models/build.py), so the device really runs a network and the counts
    // must not move by one plant.
    let (base, _, _) = counts_with(None, &[]);
    assert!(base.values().sum::<u64>() > 20, "{base:?}");
    for name in ["plant-exg-heavy", "plant-exg-heavy-batch"] {
        let dir = demeter_tests::package_dir().join("models").join(name);
        let (heavy, health, _) = counts_with(Some(&dir), &[]);
        assert_eq!(health["model"]["name"], name);
        assert_eq!(heavy, base, "{name} counts differently from plant-exg");
        // On the CPU, `auto` batching keeps a session per worker.
        assert_eq!(
            (health["devices"][0]["sessions"].as_u64(), &health["devices"][0]["batching"]),
            (Some(2), &Value::Null)
        );
    }
    // Batched on the CPU (`--batching on`) with three workers: every photo through the batcher,
    // the same counts.
    let dir = demeter_tests::package_dir().join("models/plant-exg-heavy-batch");
    let (batched, health, metrics) = counts_with(
        Some(&dir),
        &[("DEMETER_WORKERS", "3"), ("DEMETER_BATCHING", "on"), ("DEMETER_BATCH_WAIT_MS", "50")],
    );
    assert_eq!(batched, base, "batched, plant-exg-heavy-batch counts differently from plant-exg");
    // On the CPU the batcher has a single-threaded session per core.
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    let device = &health["devices"][0];
    assert_eq!(
        (device["sessions"].as_u64(), device["execution_provider"].as_str()),
        (Some(cores), Some("CPU")),
        "{device}"
    );
    let batching = &device["batching"];
    assert_eq!((batching["max_batch"].as_u64(), batching["max_wait_ms"].as_u64()), (Some(8), Some(50)), "{batching}");
    let runs: Vec<(u64, u64)> = batching["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["size"].as_u64().unwrap(), c["runs"].as_u64().unwrap()))
        .collect();
    assert_eq!(runs.iter().map(|(size, _)| *size).collect::<Vec<_>>(), [1, 2, 4, 8], "{batching}");
    let photos: u64 = runs.iter().map(|(size, n)| size * n).sum();
    assert_eq!(photos, base.len() as u64, "every photo ran in exactly one batch: {batching}");
    assert_eq!((batching["failed_batches"].as_u64(), batching["queued"].as_u64()), (Some(0), Some(0)));
    assert!(
        metrics.contains(&format!("demeter_model_sessions{{model=\"plant-exg-heavy-batch\"}} {cores}\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("demeter_batch_size_sum{{model=\"plant-exg-heavy-batch\"}} {photos}\n")),
        "{metrics}"
    );
    assert!(metrics.contains("demeter_batch_size_bucket{model=\"plant-exg-heavy-batch\",le=\"+Inf\"}"), "{metrics}");
}

//! `--notify-webhook`: one JSON POST per finished session, retried when the receiver fails, and
//! one per location whose count dropped.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use demeter_tests::{real_photos, wait_for, Daemon};
use serde_json::Value;

/// What the receiver got: the status it answered and the JSON body.
type Received = Arc<Mutex<Vec<(u16, Value)>>>;

/// A tiny HTTP receiver: answers 503 to the first request and 200 to the rest, keeping bodies.
fn receiver() -> (String, Received) {
    receiver_answering(true)
}

/// A tiny HTTP receiver keeping (status answered, body); `fail_first`: 503 to the first request.
fn receiver_answering(fail_first: bool) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let mut all = seen.lock().unwrap();
            let status = if all.is_empty() && fail_first { 503 } else { 200 };
            all.push((status, serde_json::from_slice(&body).unwrap()));
            let reason = if status == 200 { "OK" } else { "Service Unavailable" };
            let _ = write!(stream, "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn a_finished_session_is_posted_once_and_retried_when_the_receiver_fails() {
    let (url, got) = receiver();
    // A batch is announced when no photo has joined it for the session gap.
    let mut d = Daemon::start_with(&[("DEMETER_NOTIFY_WEBHOOK", &url), ("DEMETER_SESSION_GAP_SECS", "3")]);
    let photos = real_photos();
    std::fs::copy(&photos[1], d.watch_dir().join("a.jpg")).unwrap();
    std::fs::copy(&photos[3], d.watch_dir().join("b.jpg")).unwrap();
    std::fs::write(d.watch_dir().join("c.jpg"), "not a photo").unwrap();
    let posts = wait_for("the webhook to be delivered", Duration::from_secs(60), || {
        let g = got.lock().unwrap();
        g.iter().any(|(s, _)| *s == 200).then(|| g.clone())
    });
    assert_eq!(posts[0].0, 503, "the first attempt failed");
    let body = &posts[1].1;
    assert_eq!(posts[0].1, *body, "the retry sends the same notice");
    assert_eq!(body["outcome"], "partial");
    assert_eq!(
        (body["total"].as_u64(), body["completed"].as_u64(), body["failed"].as_u64()),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(body["message"], "Completed 2, failed 1");
    assert!(body["plants"].as_u64().unwrap() > 0);
    let session = d.sessions()[0]["upload_session_id"].as_str().unwrap().to_owned();
    assert_eq!(body["upload_session_id"], session);
    // Once per session: nothing more arrives, also not after a restart.
    d.restart();
    std::thread::sleep(Duration::from_secs(3));
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 2, "posts: {got:?}\ndaemon log:\n{}", d.log());
}

/// A receiver that answers 200 to everything.
fn accepting_receiver() -> (String, Received) {
    receiver_answering(false)
}

#[test]
fn photos_trickling_in_within_the_gap_are_one_batch_announced_once() {
    // Six photos copied 5 s apart (each processed before the next comes), then two more after
    // the gap: two batches, two posts, each after its last photo's gap closed.
    let (url, got) = accepting_receiver();
    let gap = Duration::from_secs(8);
    let d = Daemon::start_with(&[("DEMETER_NOTIFY_WEBHOOK", &url), ("DEMETER_SESSION_GAP_SECS", "8")]);
    let photos = real_photos();
    let copy = |k: usize, name: &str| {
        // Appended bytes make each copy a photo of its own (no deduplication).
        let mut bytes = std::fs::read(&photos[k % 2]).unwrap();
        bytes.extend_from_slice(name.as_bytes());
        let tmp = d.watch_dir().join(format!(".{name}.part"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(tmp, d.watch_dir().join(name)).unwrap();
    };
    for k in 0..6 {
        copy(k, &format!("first-{k}.jpg"));
        std::thread::sleep(Duration::from_secs(5));
        assert!(got.lock().unwrap().is_empty(), "announced while photos still arrive: {:?}", got.lock().unwrap());
    }
    let first = wait_for("the first batch's post", gap + Duration::from_secs(30), || {
        got.lock().unwrap().first().map(|(_, body)| body.clone())
    });
    assert_eq!(first["total"], 6, "{first}");
    assert_eq!(first["update"], false);
    std::thread::sleep(Duration::from_secs(2));
    for k in 0..2 {
        copy(k, &format!("second-{k}.jpg"));
    }
    wait_for("the second batch's post", gap + Duration::from_secs(60), || {
        (got.lock().unwrap().len() >= 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let posts: Vec<Value> = got.lock().unwrap().iter().map(|(_, body)| body.clone()).collect();
    assert_eq!(posts.len(), 2, "posts: {posts:?}\ndaemon log:\n{}", d.log());
    assert_eq!(posts[1]["total"], 2);
    assert_ne!(posts[0]["upload_session_id"], posts[1]["upload_session_id"]);
    assert_eq!(d.sessions().len(), 2);
}

#[test]
fn cancelling_a_sessions_last_pending_photo_finishes_it_and_it_is_posted() {
    // The cancel is a command to the engine: its event reaches the completion tracker like a
    // worker's result, so the session is announced (before, a cancel never finished one).
    let (url, got) = accepting_receiver();
    let d = Daemon::start_with(&[("DEMETER_NOTIFY_WEBHOOK", &url), ("DEMETER_SESSION_GAP_SECS", "2")]);
    let (code, _) = d.request("POST", "/api/v1/queue/pause").call().map(|r| (r.status(), ())).unwrap();
    assert_eq!(code, 200);
    std::fs::copy(&real_photos()[1], d.watch_dir().join("held.jpg")).unwrap();
    let (session, job) = wait_for("the photo queued", Duration::from_secs(30), || {
        let s = d.sessions().first()?.clone();
        let id = s["upload_session_id"].as_str()?.to_owned();
        let job = d.poll(&id)["jobs"][0]["job_id"].as_str()?.to_owned();
        Some((id, job))
    });
    let r = d.request("POST", &format!("/api/v1/jobs/{job}/cancel")).call().unwrap();
    assert_eq!(r.status(), 200);
    let post =
        wait_for("the session's post", Duration::from_secs(30), || got.lock().unwrap().first().map(|(_, b)| b.clone()));
    assert_eq!(post["upload_session_id"], session.as_str());
    assert_eq!((post["total"].as_u64(), post["failed"].as_u64()), (Some(1), Some(1)), "{post}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(got.lock().unwrap().len(), 1, "once");
}

#[test]
fn an_https_or_malformed_webhook_stops_start_up_with_a_clear_line() {
    let out = std::process::Command::new(demeter_tests::demeter_bin())
        .args(["run", "--notify-webhook", "https://example.invalid/hook"])
        .env("DEMETER_CONFIG", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("notify.webhook") && stderr.contains("http://"), "{stderr}");
}

#[test]
fn a_locations_count_dropping_is_posted_once_and_badged_in_the_locations_api() {
    let (url, got) = accepting_receiver();
    let d = Daemon::start_with(&[("DEMETER_NOTIFY_WEBHOOK", &url)]);
    fs::create_dir(d.watch_dir().join("bench-3")).unwrap();
    // The same tray, whole and then with its right half cut away: plants removed. Saved without
    // EXIF, so the order taken is the order the files were written.
    let tray = image::open(&real_photos()[0]).unwrap();
    let (w, h) = (tray.width(), tray.height());
    tray.save(d.watch_dir().join("bench-3/monday.png")).unwrap();
    let monday = wait_for("Monday's photo counted", Duration::from_secs(60), || {
        let (_, r) = d.get("/api/v1/results?location=bench-3");
        r["results"].as_array().unwrap().first().map(|r| r["total_detected"].as_u64().unwrap())
    });
    std::thread::sleep(Duration::from_millis(50));
    tray.crop_imm(0, 0, w / 2, h).save(d.watch_dir().join("bench-3/tuesday.png")).unwrap();
    let drop = wait_for("the drop posted", Duration::from_secs(60), || {
        got.lock().unwrap().iter().map(|(_, b)| b.clone()).find(|b| b["outcome"] == "count_dropped")
    });
    let tuesday = drop["to"].as_u64().unwrap();
    assert_eq!(drop["from"].as_u64(), Some(monday));
    assert!(tuesday * 10 < monday * 9, "{drop}");
    assert_eq!(drop["location_id"], "bench-3");
    assert_eq!(drop["filename"], "bench-3/tuesday.png");
    assert!(drop["message"].as_str().unwrap().starts_with(&format!("bench-3: {monday} → {tuesday} plants (−")));
    let (_, locations) = d.get("/api/v1/locations");
    let bench = &locations["locations"][0];
    assert_eq!((bench["id"].as_str(), bench["dropped"].as_bool()), (Some("bench-3"), Some(true)), "{locations}");
    assert_eq!(bench["change"].as_i64(), Some(tuesday as i64 - monday as i64));
    // Once: the session's own report arrives too, and no second drop.
    std::thread::sleep(Duration::from_secs(2));
    let drops = got.lock().unwrap().iter().filter(|(_, b)| b["outcome"] == "count_dropped").count();
    assert_eq!(drops, 1);
}

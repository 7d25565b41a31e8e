use std::{
    collections::HashMap,
    fs,
    io::BufRead,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

use demeter_tests::{real_photos, wait_for, Daemon, ADMIN_TOKEN};
use serde_json::Value;

/// A live-page client: follows the event stream of one session across daemon restarts
/// (reconnecting whenever the connection drops) and records every job state it is told.
struct SseRecorder {
    stop: Arc<AtomicBool>,
    /// (job id, status, processing run id) in the order received.
    seen: Arc<Mutex<Vec<(String, String, Value)>>>,
    /// When each connection was opened (one per daemon instance it reached, more if it went quiet).
    connections: Arc<Mutex<Vec<std::time::Instant>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SseRecorder {
    fn follow(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, seen, connections) = (stop.clone(), seen.clone(), connections.clone());
            thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout_read(Duration::from_secs(2)).build();
                while !stop.load(Ordering::SeqCst) {
                    let Ok(response) = agent.get(&url).set("Authorization", &format!("Bearer {ADMIN_TOKEN}")).call()
                    else {
                        thread::sleep(Duration::from_millis(20)); // restarting
                        continue;
                    };
                    connections.lock().unwrap().push(std::time::Instant::now());
                    for line in std::io::BufReader::new(response.into_reader()).lines() {
                        let Ok(line) = line else { break }; // killed, or quiet for 2 s
                        let Some(data) = line.strip_prefix("data:") else { continue };
                        let Ok(event) = serde_json::from_str::<Value>(data.trim()) else { continue };
                        if event["type"] == "job" {
                            let j = &event["job"];
                            seen.lock().unwrap().push((
                                j["job_id"].as_str().unwrap().to_owned(),
                                j["status"].as_str().unwrap().to_owned(),
                                j["result"]["session_id"].clone(),
                            ));
                        }
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                }
            })
        };
        Self { stop, seen, connections, thread: Some(thread) }
    }

    /// Whether a connection was opened at or after `since`.
    fn connected_since(&self, since: std::time::Instant) -> bool {
        self.connections.lock().unwrap().last().is_some_and(|&t| t >= since)
    }

    fn finish(mut self) -> (Vec<(String, String, Value)>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        let connections = self.connections.lock().unwrap().len();
        (seen, connections)
    }
}

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
    let followed_from = std::time::Instant::now();
    let sse = SseRecorder::follow(d.url(&format!("/api/v1/events?upload_session_id={session}")));

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
    let mut instance_started = followed_from;
    for cycle in 0..cycles {
        // The stream client reaches this instance before it dies (otherwise a quick restart
        // could be killed again while the client is between attempts, and the stream's half of
        // the check would skip an instance).
        wait_for(&format!("the event stream client to connect (cycle {cycle})"), Duration::from_secs(30), || {
            sse.connected_since(instance_started).then_some(())
        });
        // Watch until all four workers hold a photo, then kill the process under them.
        wait_for(&format!("four photos in flight (cycle {cycle})"), Duration::from_secs(60), || {
            let r = d.request("GET", &format!("/api/v1/photos/jobs/status?upload_session_id={session}")).call().ok()?;
            let body: Value = r.into_json().ok()?;
            observe(&body, &format!("cycle {cycle}"));
            (body["summary"]["processing"].as_u64() == Some(4)).then_some(())
        });
        d.kill9();
        let t = std::time::Instant::now();
        instance_started = std::time::Instant::now();
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

    // The event stream's half: an outcome it announced (in any connection, before any kill)
    // is what every later event and the final record say.
    let (events, connections) = sse.finish();
    let mut sse_outcome: HashMap<&str, (&str, &Value)> = HashMap::new();
    for (id, status, run) in &events {
        if let Some(before) = sse_outcome.get(id.as_str()) {
            assert_eq!((status.as_str(), run), *before, "the event stream took back job {id}'s outcome");
        } else if status == "completed" || status == "failed" {
            sse_outcome.insert(id, (status, run));
        }
    }
    let finals: HashMap<&str, &Value> =
        done["jobs"].as_array().unwrap().iter().map(|j| (j["job_id"].as_str().unwrap(), j)).collect();
    for (id, (status, run)) in &sse_outcome {
        let j = finals[id];
        assert_eq!((j["status"].as_str().unwrap(), &j["result"]["session_id"]), (*status, *run), "job {id}");
    }
    assert!(connections > cycles, "the client followed every restart ({connections} connections)");

    // The results archive's half: every completed photo has exactly one record, the run the job
    // reports (a record appended but not committed before a kill must not surface, and a
    // committed one must not be lost).
    let (code, archived) = d.get(&format!("/api/v1/results?session={session}&limit={}", 2 * n));
    assert_eq!(code, 200, "{archived}");
    let mut runs: HashMap<&str, Vec<&Value>> = HashMap::new();
    for r in archived["results"].as_array().unwrap() {
        runs.entry(r["job_id"].as_str().unwrap()).or_default().push(&r["result_id"]);
    }
    assert_eq!(runs.len() as u64, n, "every completed photo is archived");
    for (id, j) in &finals {
        assert_eq!(runs[id], vec![&j["result"]["session_id"]], "job {id}: one record, the run the job reports");
    }
    assert!(sse_outcome.len() as u64 >= n / 2, "the stream announced most outcomes ({})", sse_outcome.len());
    restart_ms.sort_unstable();
    eprintln!(
        "{cycles} kill -9 cycles, {n} photos: {} outcomes seen by polling, {} job events and {} outcomes over {connections} SSE connections; restart to serving (orphans reclaimed) median {} ms, max {} ms",
        outcome.len(),
        events.len(),
        sse_outcome.len(),
        restart_ms[restart_ms.len() / 2],
        restart_ms[restart_ms.len() - 1]
    );
}

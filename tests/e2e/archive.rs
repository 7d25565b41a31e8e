//! The results archive (issue 18): results outlive job monitoring. Sessions and jobs are swept in
//! seconds here (fractional TTLs), and every photo's result is still listed by location, with
//! its count, boxes, model and timestamps, as JSON and as CSV, and exported by `demeter export`
//! with the daemon stopped.

use std::{fs, time::Duration};

use demeter_tests::{demeter, real_photos, wait_for, Daemon};
use serde_json::Value;

#[test]
fn results_stay_listed_by_location_after_their_sessions_and_jobs_are_swept() {
    let mut d = Daemon::start_with(&[
        ("DEMETER_SESSION_TTL_HOURS", "0.0005"), // 1.8 s
        ("DEMETER_JOB_TTL_HOURS", "0.001"),      // 3.6 s
        ("DEMETER_SWEEP_INTERVAL_SECS", "1"),
    ]);
    let photos = real_photos();
    for bench in ["bench-a", "bench-b"] {
        fs::create_dir(d.watch_dir().join(bench)).unwrap();
    }
    fs::copy(&photos[0], d.watch_dir().join("bench-a/monday.jpg")).unwrap();
    fs::copy(&photos[1], d.watch_dir().join("bench-a/tuesday.jpg")).unwrap();
    fs::copy(&photos[2], d.watch_dir().join("bench-b/monday.jpg")).unwrap();

    // What the poll endpoint said while the sessions lived: each photo's count.
    let mut counts = std::collections::BTreeMap::new();
    let mut sessions = Vec::new();
    wait_for("every photo counted", Duration::from_secs(60), || {
        for s in d.sessions() {
            let id = s["upload_session_id"].as_str().unwrap().to_owned();
            let (code, body) = d.get(&format!("/api/v1/photos/jobs/status?upload_session_id={id}"));
            if code != 200 {
                continue;
            }
            if !sessions.contains(&id) {
                sessions.push(id);
            }
            for j in body["jobs"].as_array().unwrap() {
                if let Some(n) = j["result"]["total_detected"].as_u64() {
                    counts.insert(j["filename"].as_str().unwrap().to_owned(), n);
                }
            }
        }
        (counts.len() == 3).then_some(())
    });

    // Monitoring fades: the sessions answer 404 and the jobs are gone...
    wait_for("the sessions and jobs swept", Duration::from_secs(30), || {
        let gone =
            sessions.iter().all(|id| d.get(&format!("/api/v1/photos/jobs/status?upload_session_id={id}")).0 == 404);
        (gone && d.sessions().is_empty()).then_some(())
    });
    // ...the results stay, per location, with count, boxes, model and timestamps, also for a
    // photo deleted from the folder since.
    fs::remove_file(d.watch_dir().join("bench-a/monday.jpg")).unwrap();
    d.request("POST", "/admin/cleanup-sessions").call().unwrap();
    let (code, page) = d.get("/api/v1/results?location=bench-a");
    assert_eq!(code, 200, "{page}");
    let results = page["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{page:#}");
    assert!(page["next_cursor"].is_null());
    for r in results {
        let name = r["filename"].as_str().unwrap();
        assert!(name.starts_with("bench-a/"), "{name}");
        assert_eq!(r["total_detected"].as_u64(), counts.get(name).copied(), "{name}: the count the poll showed");
        assert_eq!(r["boxes"].as_array().unwrap().len() as u64, counts[name]);
        assert_eq!(r["location_id"], "bench-a");
        assert_eq!(r["location_rule"], "subfolder");
        assert_eq!(r["model_name"], "plant-exg");
        assert_eq!(r["model_sha256"].as_str().unwrap().len(), 64);
        assert_eq!(r["content_hash"].as_str().unwrap().len(), 16);
        for t in ["taken_at", "processed_at"] {
            assert!(chrono::DateTime::parse_from_rfc3339(r[t].as_str().unwrap()).is_ok(), "{t}: {r}");
        }
        // The thumbnail outlives the job's.
        let thumb = d.request("GET", r["thumbnail_url"].as_str().unwrap()).call().unwrap();
        assert_eq!(thumb.header("content-type"), Some("image/jpeg"));
    }
    let (_, other) = d.get("/api/v1/results?location=bench-b");
    assert_eq!(other["results"].as_array().unwrap().len(), 1);
    let (_, all) = d.get("/api/v1/results?limit=2");
    assert_eq!(all["results"].as_array().unwrap().len(), 2);
    let cursor = all["next_cursor"].as_str().expect("a second page").to_owned();
    let (_, rest) = d.get(&format!("/api/v1/results?limit=2&cursor={cursor}"));
    assert_eq!(rest["results"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());
    let (_, found) = d.get("/api/v1/results?q=TUESDAY");
    assert_eq!(found["results"][0]["filename"], "bench-a/tuesday.jpg");
    let (code, bad) = d.get("/api/v1/results?since=last-monday");
    assert_eq!((code, bad["error"].as_str()), (400, Some("bad_request")));

    // The CSV carries the same, by Accept header or path.
    let csv = d
        .request("GET", "/api/v1/results?location=bench-a")
        .set("accept", "text/csv")
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert_csv(&csv, &counts, 2);
    let by_path = d.request("GET", "/api/v1/results.csv?location=bench-a").call().unwrap().into_string().unwrap();
    assert_eq!(by_path, csv);

    // With the daemon stopped, `demeter export` writes the archive for spreadsheets.
    assert_eq!(d.terminate(), Some(0));
    let data = d.data_dir();
    let (code, out, err) =
        demeter(&["export", "--data", data.to_str().unwrap(), "--location", "bench-a", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    assert_csv(&out, &counts, 2);
    let (code, out, err) = demeter(&["export", "--data", data.to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let all: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(all.len(), 3);
    assert!(err.contains("3 results exported"), "{err}");
    let (code, _, err) = demeter(&["export", "--data", data.to_str().unwrap(), "--since", "monday"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--since \"monday\""), "{err}");
}

fn assert_csv(csv: &str, counts: &std::collections::BTreeMap<String, u64>, rows: usize) {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|c| *c == name).unwrap_or_else(|| panic!("no {name} column"));
    let body: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(body.len(), rows, "{csv}");
    for row in body {
        let name = row[col("filename")];
        assert_eq!(row[col("total_detected")].parse::<u64>().unwrap(), counts[name], "{name}");
        assert_eq!(row[col("location_id")], "bench-a");
        assert_eq!(row[col("model_name")], "plant-exg");
        assert_eq!(row[col("boxes")].split(';').count() as u64, counts[name]);
        assert!(!row[col("taken_at")].is_empty() && !row[col("processed_at")].is_empty());
    }
}

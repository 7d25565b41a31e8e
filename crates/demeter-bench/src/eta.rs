//! ETA accuracy: what a 50-photo session's ETA said at 25, 50 and 75 % done against when it
//! actually finished.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::{
    daemon::{wait_for, Daemon},
    fixtures,
    report::Section,
    stats::Samples,
    Opts,
};

fn session_of(d: &Daemon, subfolder: &str) -> Option<(String, serde_json::Value)> {
    let sessions = d.get("/api/v1/sessions").ok()?;
    sessions["sessions"]
        .as_array()?
        .iter()
        .find(|s| s["source"]["subfolder"] == subfolder)
        .map(|s| (s["upload_session_id"].as_str().unwrap_or_default().to_owned(), s["summary"].clone()))
}

pub fn run(opts: &Opts) -> Result<Section> {
    let mut errors = Samples::default();
    let mut rows = Vec::new();
    for rep in 0..opts.reps {
        let root = tempfile::tempdir()?;
        let (d, _) = Daemon::start(root.path(), &[("DEMETER_STABILITY_WINDOW_MS", "100")])?;
        // Warm-up: a few photos so the stage durations are learned, as on any day after the first.
        // 12-megapixel photos, what a phone takes; the day's photos are much alike.
        let big = root.path().join("twelve-mp.jpg");
        fixtures::twelve_megapixel(&big)?;
        let warm = fixtures::copies_of(&big, &root.path().join("warm-src"), 8, "warm-up")?;
        std::fs::create_dir_all(d.watch.join("warmup"))?;
        for p in &warm {
            std::fs::copy(p, d.watch.join("warmup").join(p.file_name().context("name")?))?;
        }
        wait_for("the warm-up", Duration::from_secs(300), || {
            let (_, s) = session_of(&d, "warmup")?;
            (s["completed"].as_u64()? + s["failed"].as_u64()? == warm.len() as u64).then_some(())
        })?;

        let photos = fixtures::copies_of(&big, &root.path().join("src"), 50, "eta")?;
        let staging = d.watch.join(".staging");
        std::fs::create_dir_all(&staging)?;
        for p in &photos {
            std::fs::copy(p, staging.join(p.file_name().context("name")?))?;
        }
        // The whole batch appears at once, as a folder moved in.
        std::fs::rename(&staging, d.watch.join("bench"))?;
        let n = photos.len() as f64;
        let (id, _) = wait_for("the session", Duration::from_secs(60), || session_of(&d, "bench"))?;
        // (time, share done, ETA shown) at the first poll past each mark.
        let mut marks: Vec<(f64, Option<(Instant, f64)>)> = vec![(0.25, None), (0.5, None), (0.75, None)];
        let deadline = Instant::now() + Duration::from_secs(900);
        let finished = loop {
            if Instant::now() > deadline {
                anyhow::bail!("the ETA session did not finish in 15 minutes");
            }
            let body = d.get(&format!("/api/v1/photos/jobs/status?upload_session_id={id}"))?;
            let now = Instant::now();
            let s = &body["summary"];
            let done = (s["completed"].as_u64().unwrap_or(0) + s["failed"].as_u64().unwrap_or(0)) as f64;
            for (mark, seen) in marks.iter_mut() {
                if seen.is_none() && done / n >= *mark {
                    if let Some(eta) = body["eta_seconds"].as_f64() {
                        *seen = Some((now, eta));
                    }
                }
            }
            if done >= n {
                break now;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for (mark, seen) in &marks {
            let Some((at, eta)) = seen else { continue };
            let actual = finished.duration_since(*at).as_secs_f64();
            let err = 100.0 * (eta - actual).abs() / actual.max(0.001);
            errors.push(err);
            rows.push(format!("| {} | {:.0} % | {eta:.1} | {actual:.1} | {err:.0} % |", rep + 1, mark * 100.0));
        }
    }
    Ok(Section {
        title: "ETA accuracy".into(),
        command: "demeter-bench eta".into(),
        targets: "median absolute error ≤ 10 %".into(),
        result: format!("{:.0} %: {}", errors.median(), crate::report::verdict(errors.median() <= 10.0)),
        body: format!(
            "A 50-photo session of 12-megapixel JPEGs (4000 × 3000, distinct bytes, moved into the folder at once) \
             after a warm-up session of 8 such photos on a fresh daemon (4 workers); the session's `eta_seconds` from \
             the poll endpoint (polled every 10 ms) at the first poll past 25, 50 and 75 % done, against the time it \
             actually took from then to the last photo. Median absolute error over {} readings: **{:.0} %**.\n\n\
             | run | done | ETA shown (s) | actual (s) | error |\n|---|---|---|---|---|\n{}\n",
            errors.len(),
            errors.median(),
            rows.join("\n")
        ),
    })
}

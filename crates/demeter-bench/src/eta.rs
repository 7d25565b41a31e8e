//! ETA accuracy: what a 50-photo session's ETA said at 25, 50 and 75 % done against when it
//! actually finished, for 12-megapixel JPEGs (decoded at reduced size: a short session) and the
//! same photos as PNGs (decoded in full: a session several times longer).

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

/// The readings of one photo kind over `opts.reps` sessions.
#[derive(Default)]
struct Readings {
    /// Absolute error of every reading, %.
    errors: Samples,
    /// Seconds from a session's first appearance in the API to its last photo.
    lengths: Samples,
    /// Seconds actually left at the 75 % reading.
    left_at_75: Samples,
    rows: Vec<String>,
}

/// `opts.reps` fresh daemons, each given a warm-up session of 8 photos and then the 50-photo
/// session being measured, all copies of `photo` (a 12-megapixel photo, in `ext`'s format).
fn measure(opts: &Opts, ext: &str) -> Result<Readings> {
    let mut r = Readings::default();
    for rep in 0..opts.reps {
        let root = tempfile::tempdir()?;
        let (d, _) = Daemon::start(root.path(), &[("DEMETER_STABILITY_WINDOW_MS", "100")])?;
        // Warm-up: a few photos so the stage durations are learned, as on any day after the first.
        // 12-megapixel photos, what a phone takes; the day's photos are much alike.
        let big = root.path().join(format!("twelve-mp.{ext}"));
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
        let appeared = Instant::now();
        // (time, ETA shown) at the first poll past each mark.
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
            if s["failed"].as_u64().unwrap_or(0) > 0 {
                anyhow::bail!("a photo of the ETA session failed: {body}");
            }
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
        r.lengths.push(finished.duration_since(appeared).as_secs_f64());
        for (mark, seen) in &marks {
            let Some((at, eta)) = seen else { continue };
            let actual = finished.duration_since(*at).as_secs_f64();
            let err = 100.0 * (eta - actual).abs() / actual.max(0.001);
            r.errors.push(err);
            if *mark == 0.75 {
                r.left_at_75.push(actual);
            }
            r.rows.push(format!(
                "| {} | {} | {:.0} % | {eta:.1} | {actual:.2} | {err:.0} % |",
                if ext == "png" { "PNG" } else { "JPEG" },
                rep + 1,
                mark * 100.0
            ));
        }
    }
    Ok(r)
}

pub fn run(opts: &Opts) -> Result<Section> {
    let jpeg = measure(opts, "jpg")?;
    let png = measure(opts, "png")?;
    let mut all = Samples::default();
    for e in jpeg.errors.0.iter().chain(&png.errors.0) {
        all.push(*e);
    }
    let kind = |name: &str, r: &Readings| {
        format!(
            "- {name}: a session took {} s from its first appearance in the API to its last photo; median absolute \
             error **{:.0} %** over {} readings. At 75 % done {:.2} s were left (median), so one 0.1 s step of the \
             ETA's resolution is {:.0} % of that.",
            r.lengths.spread(1),
            r.errors.median(),
            r.errors.len(),
            r.left_at_75.median(),
            10.0 / r.left_at_75.median().max(0.001)
        )
    };
    let rows: Vec<String> = jpeg.rows.iter().chain(&png.rows).cloned().collect();
    Ok(Section {
        title: "ETA accuracy".into(),
        command: "demeter-bench eta".into(),
        targets: "median absolute error ≤ 10 %".into(),
        result: format!(
            "{:.0} % (JPEG {:.0} %, PNG {:.0} %): {}",
            all.median(),
            jpeg.errors.median(),
            png.errors.median(),
            crate::report::verdict(all.median() <= 10.0)
        ),
        body: format!(
            "A 50-photo session of 12-megapixel photos (4000 × 3000, distinct bytes, moved into the folder at once) \
             after a warm-up session of 8 such photos on a fresh daemon (4 workers), {} times for each format: JPEG \
             (quality 90, decoded at reduced size: a short session) and PNG (the same pixels, decoded in full: a \
             longer one). The session's `eta_seconds` from the poll endpoint (polled every 10 ms) at the first poll \
             past 25, 50 and 75 % done, against the time it actually took from then to the last photo. Median \
             absolute error over all {} readings: **{:.0} %**.\n\n{}\n{}\n\n\
             | photos | run | done | ETA shown (s) | actual (s) | error |\n|---|---|---|---|---|---|\n{}\n",
            opts.reps,
            all.len(),
            all.median(),
            kind("JPEG", &jpeg),
            kind("PNG", &png),
            rows.join("\n")
        ),
    })
}

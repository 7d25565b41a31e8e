//! Photos per minute through the daemon with 1, 2 and 4 workers, against (a) the decode bound —
//! the same photos only read, decoded and resized by the same code on the same number of
//! threads — and (b) a Python baseline (Pillow + the `onnxruntime` package, same model, 4
//! processes, `python/baseline.py`).

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use demeter_infer::{Analyzer, DecodeLimits, Model, Runtime, Segment};

use crate::{
    daemon::{wait_for, Daemon},
    fixtures,
    report::Section,
    stats::Samples,
    Opts,
};

/// Overlays timed after each daemon run: one per real photo, so every size and format is in.
const OVERLAYS_TIMED: usize = 9;

/// Runs the daemon on a folder already holding `photos` and times them from "serving" to the
/// last job's `completed_at` (as the API reports it). Returns photos per minute. Then, with
/// the queue empty, times the first request of [`OVERLAYS_TIMED`] overlays (drawn from the
/// photo) and a second one (read back) into `overlays`, in ms.
///
/// The bench looks in every 200 ms, not faster: a client polling a session summary every few ms
/// took a sizeable share of the two cores it shares with the daemon and slowed what it measured.
fn daemon_run(photos: &[PathBuf], workers: usize, overlays: &mut (Samples, Samples)) -> Result<f64> {
    let root = tempfile::tempdir()?;
    std::fs::create_dir_all(root.path().join("photos"))?;
    for p in photos {
        std::fs::hard_link(p, root.path().join("photos").join(p.file_name().unwrap()))
            .or_else(|_| std::fs::copy(p, root.path().join("photos").join(p.file_name().unwrap())).map(|_| ()))?;
    }
    let workers_s = workers.to_string();
    let (d, _) = Daemon::start(root.path(), &[("DEMETER_WORKERS", &workers_s), ("DEMETER_STABILITY_WINDOW_MS", "50")])?;
    let serving = chrono::Utc::now();
    let n = photos.len() as u64;
    let sessions = wait_for("every photo to finish", Duration::from_secs(1800), || {
        std::thread::sleep(Duration::from_millis(200));
        let sessions = d.get("/api/v1/sessions").ok()?;
        let (mut done, mut total) = (0, 0);
        for s in sessions["sessions"].as_array()? {
            let sum = &s["summary"];
            total += sum["total_jobs"].as_u64()?;
            done += sum["completed"].as_u64()? + sum["failed"].as_u64()?;
        }
        (total == n && done == n).then_some(sessions)
    })?;
    let mut last = serving;
    let mut done = Vec::new();
    for s in sessions["sessions"].as_array().context("sessions")? {
        let id = s["upload_session_id"].as_str().context("session id")?;
        let poll = d.get(&format!("/api/v1/photos/jobs/status?upload_session_id={id}"))?;
        for j in poll["jobs"].as_array().context("jobs")? {
            if j["status"] != "completed" {
                bail!("{} failed in the pipeline benchmark: {}", j["filename"], j["error_message"]);
            }
            let at: chrono::DateTime<chrono::Utc> =
                j["completed_at"].as_str().context("completed_at")?.parse().context("completed_at")?;
            last = last.max(at);
            done.push((j["filename"].to_string(), j["job_id"].as_str().context("job_id")?.to_owned()));
        }
    }
    // Named `r<round>-<real photo>`: the first by name are one of each real photo.
    done.sort();
    for (_, id) in done.iter().take(OVERLAYS_TIMED) {
        let url = d.get(&format!("/api/v1/jobs/{id}"))?["overlay_url"].as_str().context("overlay_url")?.to_owned();
        for samples in [&mut overlays.0, &mut overlays.1] {
            let t = Instant::now();
            d.get_bytes(&url)?;
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let secs = (last - serving).as_seconds_f64();
    Ok(n as f64 * 60.0 / secs)
}

/// The decode bound: read + decode + resize to the model's input (the daemon's own code:
/// `demeter_infer::decode_for` and `Analyzer::prepare_decoded`) on `threads` threads. Photos per minute.
pub(crate) fn decode_bound(photos: &[PathBuf], threads: usize, runtime: &Runtime) -> Result<f64> {
    let model = std::sync::Arc::new(Model::builtin());
    let analyzers: Vec<Analyzer> =
        (0..threads).map(|_| Analyzer::new(runtime, model.clone(), 1)).collect::<Result<_, _>>()?;
    let limits = DecodeLimits { max_pixels: 100_000_000 };
    let next = AtomicUsize::new(0);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for analyzer in &analyzers {
            let next = &next;
            s.spawn(move || {
                while let Some(p) = photos.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let bytes = std::fs::read(p).expect("read");
                    let img = demeter_infer::decode_for(&bytes, limits, analyzer.decode_long_side()).expect("decode");
                    std::hint::black_box(analyzer.prepare_decoded(img));
                }
            });
        }
    });
    Ok(photos.len() as f64 * 60.0 / t0.elapsed().as_secs_f64())
}

/// Where one photo's time goes: each stage of the pipeline timed on its own, the same calls
/// `demeter_engine::pipeline::run` makes in the same order, one photo at a time on one thread
/// with nothing else running. Returns (stage, mean ms per photo).
fn stage_costs(photos: &[PathBuf], runtime: &Runtime, out: &Path) -> Result<Vec<(&'static str, f64)>> {
    const STAGES: [&str; 6] = [
        "read the file",
        "decode (JPEG at reduced size)",
        "resize to the model's input",
        "segment (ONNX Runtime, input tensor)",
        "detect (threshold, components, grid, trust)",
        "thumbnail (resize, encode, write)",
    ];
    let mut analyzer = Analyzer::new(runtime, std::sync::Arc::new(Model::builtin()), 1)?;
    let limits = DecodeLimits { max_pixels: 100_000_000 };
    std::fs::create_dir_all(out)?;
    let mut spent = [Duration::ZERO; STAGES.len()];
    for (i, p) in photos.iter().enumerate() {
        let mut t = Instant::now();
        let mut lap = |stage: usize| {
            spent[stage] += t.elapsed();
            t = Instant::now();
        };
        let bytes = std::fs::read(p)?;
        lap(0);
        let decoded = demeter_infer::decode_for(&bytes, limits, analyzer.decode_long_side())?;
        lap(1);
        let prepared = analyzer.prepare_decoded(decoded);
        lap(2);
        let segmentation = analyzer.segment(&prepared)?;
        lap(3);
        std::hint::black_box(analyzer.detect(&segmentation, &prepared, None));
        lap(4);
        let jpeg =
            demeter_infer::thumbnail::thumbnail_jpeg(&prepared.rgb, (prepared.orig_width, prepared.orig_height))?;
        let (part, path) = (out.join(format!("{i}.part")), out.join(format!("{i}.jpg")));
        std::fs::write(&part, jpeg)?;
        std::fs::rename(&part, &path)?;
        lap(5);
    }
    Ok(STAGES.iter().zip(spent).map(|(s, d)| (*s, d.as_secs_f64() * 1000.0 / photos.len() as f64)).collect())
}

/// `python/baseline.py` with 4 processes in the bench virtualenv. Photos per minute.
fn python_baseline(photos_dir: &Path, out_dir: &Path, python: &Path) -> Result<f64> {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/plant-exg/model.onnx");
    python_baseline_with(photos_dir, out_dir, python, &model)
}

/// [`python_baseline`] on another graph with plant-exg's inputs and outputs.
pub(crate) fn python_baseline_with(photos_dir: &Path, out_dir: &Path, python: &Path, model: &Path) -> Result<f64> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/baseline.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--processes", "4", "--model", model.to_str().unwrap()])
        .args(["--out", out_dir.to_str().unwrap(), photos_dir.to_str().unwrap()])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!("the Python baseline failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    doc["photos_per_minute"].as_f64().context("photos_per_minute")
}

/// Copies of each real photo: 360 photos, so the daemon's start (its first scan of the folder)
/// is a small part of a run of several seconds even with 4 workers.
const ROUNDS: usize = 40;

pub fn run(opts: &Opts) -> Result<Section> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("photos");
    let photos = fixtures::distinct_copies(&dir, opts.scaled(ROUNDS, 3), "pipeline")?;
    let megapixels: f64 = photos
        .iter()
        .filter_map(|p| image::image_dimensions(p).ok())
        .map(|(w, h)| f64::from(w) * f64::from(h) / 1e6)
        .sum::<f64>()
        / photos.len() as f64;
    let reps = opts.reps;
    let runtime = opts.runtime()?;
    let mut rows = Vec::new();
    let mut at4 = (0.0, 0.0);
    let mut overlays = (Samples::default(), Samples::default());
    for workers in [1usize, 2, 4] {
        let mut pipe = Samples::default();
        let mut bound = Samples::default();
        for _ in 0..reps {
            bound.push(decode_bound(&photos, workers, runtime)?);
            pipe.push(daemon_run(&photos, workers, &mut overlays)?);
        }
        let share = 100.0 * pipe.median() / bound.median();
        if workers == 4 {
            at4 = (pipe.median(), bound.median());
        }
        rows.push(format!("| {workers} | {} | {} | {share:.0} % |", pipe.spread(1), bound.spread(1)));
    }
    let stages = stage_costs(&photos, runtime, &tmp.path().join("stage-costs"))?;
    let mut python = Samples::default();
    let py = opts.python.clone();
    if let Some(py) = &py {
        for _ in 0..reps {
            python.push(python_baseline(&dir, &tmp.path().join("baseline-out"), py)?);
        }
    }
    let mut body = format!(
        "{} distinct photos (the {} real photos × {} rounds, {:.1} MP on average; bytes appended so none is \
         deduplicated), {reps} runs each, photos per minute as median (min–max). The daemon is timed from serving \
         to the last job's `completed_at` (thumbnail written, result stored); the photos are in the \
         folder before it starts, so finding and hashing them is part of the time. Overlays (the photo with its \
         plants boxed, for the detail view) are drawn when first asked for, not by the workers: most photos are \
         never opened.\n\n| workers | daemon (photos/min) | decode bound (photos/min) | share of the bound |\n|---|---|---|---|\n{}\n",
        photos.len(),
        fixtures::real_photos()?.len(),
        opts.scaled(ROUNDS, 3),
        megapixels,
        rows.join("\n")
    );
    if py.is_some() {
        body.push_str(&format!(
            "\nPython baseline (Pillow `thumbnail` + `onnxruntime` on the same `model.onnx`, connected components with \
             SciPy, as the original design counted: less work than the daemon's detection with its adaptive mask, \
             grid and trust flag, so the ratio is conservative; thumbnail and result written to files as the daemon \
             writes them, no overlay either; 4 processes): {} photos/min. Daemon with 4 workers: **{:.1}×** the baseline, \
             **{:.0} %** of the decode bound.\n",
            python.spread(1),
            at4.0 / python.median(),
            100.0 * at4.0 / at4.1
        ));
    } else {
        body.push_str("\nPython baseline: not run (no bench virtualenv; `make bench` makes one).\n");
    }
    let total: f64 = stages.iter().map(|(_, ms)| ms).sum();
    let bound: f64 = stages.iter().take(3).map(|(_, ms)| ms).sum();
    body.push_str(&format!(
        "\nWhere a photo's time goes: each stage of the pipeline timed on its own, one photo at a time on one thread \
         (the same calls in the same order, one pass over the photos above), mean ms per photo. The first three rows \
         are the decode bound's work ({:.0} % of the stages' time). Locating is left out (no rules here: nothing to do). \
         Besides these stages the daemon reads and hashes each photo at ingest, makes three flushed store writes per \
         photo (enqueue, claim, outcome) and five unflushed milestones, and with more workers than cores its threads \
         time-slice.\n\n| stage | ms per photo | share |\n|---|---|---|\n{}\n| all stages | {total:.2} | 100 % |\n",
        100.0 * bound / total,
        stages
            .iter()
            .map(|(s, ms)| format!("| {s} | {ms:.2} | {:.1} % |", 100.0 * ms / total))
            .collect::<Vec<_>>()
            .join("\n"),
    ));
    body.push_str(&format!(
        "\nOverlay of a finished photo, after each daemon run ({} requests, one per real photo and run): first \
         request (drawn from the photo at up to {} px, encoded, kept) {} ms; second (read back) {} ms.\n",
        overlays.0.len(),
        demeter_infer::overlay::OVERLAY_SIDE,
        overlays.0.spread(1),
        overlays.1.spread(1)
    ));
    Ok(Section {
        title: "Pipeline throughput".into(),
        command: "demeter-bench pipeline".into(),
        targets: "≥ 70 % of the decode bound, ≥ 2× the Python baseline (4 workers)".into(),
        result: if py.is_some() {
            let (share, times) = (at4.0 / at4.1, at4.0 / python.median());
            format!(
                "{:.0} photos/min: {:.0} % of the bound, {times:.1}× the baseline: {}",
                at4.0,
                share * 100.0,
                crate::report::verdict(share >= 0.7 && times >= 2.0)
            )
        } else {
            format!("{:.0} photos/min, {:.0} % of the bound (no baseline run)", at4.0, 100.0 * at4.0 / at4.1)
        },
        body,
    })
}

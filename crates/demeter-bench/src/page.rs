//! The status page on a 5,000-photo session in Chromium: the main-thread time to apply 1,000 real
//! events (rows patched per animation frame) against a rebuild of the whole table, measured in
//! the same page. The browser side is `tests/browser/bench-page.mjs` (playwright-core and
//! Debian's Chromium, as the browser tests use).

use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::{daemon::demeter_bin, fixtures, report::Section, stats::Samples, Opts};

#[derive(Deserialize)]
struct Run {
    rows: usize,
    load_ms: f64,
    events: usize,
    frames: usize,
    apply_ms: f64,
    longest_frame_ms: f64,
    long_tasks_ms: Vec<f64>,
    reloads: usize,
    rebuild_ms: Vec<f64>,
}

/// A small photo (320 × 240 from the first real photo), so the daemon turns out events fast.
fn small_photo(path: &Path) -> Result<()> {
    let src = fixtures::real_photos()?.into_iter().next().context("a photo")?;
    image::open(&src)?.resize(320, 240, image::imageops::FilterType::Triangle).to_rgb8().save(path)?;
    Ok(())
}

pub fn run(opts: &Opts) -> Result<Section> {
    let photos = opts.scaled(5_000, 1_000);
    let events = 1_000;
    let dir = tempfile::tempdir()?;
    let photo = dir.path().join("small.jpg");
    small_photo(&photo)?;
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    if !browser_dir.join("node_modules/playwright-core").exists() {
        bail!("playwright-core is missing in tests/browser: `make browser-deps` installs it (make bench does)");
    }
    let (mut apply, mut rebuild, mut load, mut longest) =
        (Samples::default(), Samples::default(), Samples::default(), Samples::default());
    let (mut frames, mut applied, mut rows) = (Samples::default(), Samples::default(), 0);
    let (mut long_tasks, mut longest_task, mut reloads) = (0, 0.0f64, 0);
    for _ in 0..opts.reps {
        let out = Command::new("node")
            .arg("bench-page.mjs")
            .current_dir(&browser_dir)
            .env("DEMETER_BIN", demeter_bin()?)
            .env("PHOTO", &photo)
            .env("PHOTOS", photos.to_string())
            .env("EVENTS", events.to_string())
            .output()
            .context("running node tests/browser/bench-page.mjs")?;
        if !out.status.success() {
            bail!("bench-page.mjs failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        let run: Run = serde_json::from_slice(&out.stdout).context("bench-page.mjs output")?;
        // Per 1,000 events, from the run's own count (frames apply events in groups, so the
        // count where the target was met is a little over it).
        apply.push(run.apply_ms * events as f64 / run.events as f64);
        applied.push(run.events as f64);
        frames.push(run.frames as f64);
        rebuild.push(run.rebuild_ms[run.rebuild_ms.len() / 2]);
        load.push(run.load_ms);
        longest.push(run.longest_frame_ms);
        rows = run.rows;
        long_tasks += run.long_tasks_ms.len();
        longest_task = run.long_tasks_ms.iter().copied().fold(longest_task, f64::max);
        reloads += run.reloads;
    }
    let old = rebuild.median() * events as f64;
    Ok(Section {
        title: "Status page, 5,000 photos".into(),
        command: "demeter-bench page".into(),
        targets: "responsive with 5,000 photos: time to apply 1,000 events, vs a whole-table rebuild".into(),
        result: format!(
            "{:.0} ms per 1,000 events; one rebuild {:.0} ms ({:.0}× less than a rebuild per event)",
            apply.median(),
            rebuild.median(),
            old / apply.median()
        ),
        body: format!(
            "Debian's Chromium (headless, playwright-core), signed in, on the session page of {rows} photos: the real \
             daemon's queue is paused, the photos are dropped into its folder (320 × 240 JPEGs, so events come fast), \
             the page opens the session, then the queue is resumed and the page follows the real event stream. Inside \
             the page, on its main thread, the SSE handler's time and each animation-frame callback's time with the \
             style and layout it causes are summed until 1,000 events are applied (`tests/browser/bench-page.mjs`). \
             Over {} runs:\n\n\
             | measure | value |\n|---|---|\n\
             | main-thread time to apply 1,000 events | **{} ms** |\n\
             | events applied / frames drawn at that point | {} / {} |\n\
             | longest frame (patch + layout) | {} ms |\n\
             | long tasks (≥ 50 ms, any cause) while events were applied | {long_tasks} in all runs, the longest \
             {longest_task:.0} ms |\n\
             | whole-session reloads while events were applied | {reloads} in all runs |\n\
             | baseline: the whole table rebuilt once from the same rows (median of 5), layout included | {} ms |\n\
             | the page's first load of the session (request to {rows} rows on screen) | {} ms |\n\n\
             The baseline is what every event cost when each rebuilt the table: 1,000 events would take about \
             {:.0} s of main thread ({:.0}× the patching above), during which the page could not scroll or take a \
             click. Patching touches only the rows an event names and draws at most once per frame; the rows are laid \
             out as a grid of independent rows, and those off screen are skipped (`content-visibility`). The daemon runs \
             one worker so that the browser keeps a core of its own.\n",
            opts.reps,
            apply.spread(0),
            applied.spread(0),
            frames.spread(0),
            longest.spread(1),
            rebuild.spread(0),
            load.spread(0),
            old / 1000.0,
            old / apply.median(),
        ),
    })
}

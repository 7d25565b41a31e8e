//! Peak resident memory of the daemon with 4 workers on 12-megapixel photos and 10,000 jobs
//! queued.

use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::Utc;
use demeter_store::Store;

use crate::{daemon::Daemon, fixtures, report::Section, stats::Samples, Opts};

pub fn run(opts: &Opts) -> Result<Section> {
    let root = tempfile::tempdir()?;
    let big = root.path().join("twelve-mp.jpg");
    fixtures::twelve_megapixel(&big)?;
    let queued = opts.scaled(10_000, 2_000);
    // Every queued job is a 12 MP photo (the same file under 10,000 records: the store does
    // not care), so whatever the workers pick is the heavy case.
    {
        let store = Store::open(&root.path().join("data"), 64 << 20)?;
        for (i, start) in (0..queued).step_by(1000).enumerate() {
            fixtures::fill_session(&store, Utc::now(), (queued - start).min(1000), false, &big, &format!("q{i}"))?;
        }
    }
    let secs = opts.scaled(60, 15) as u64;
    let mut peaks = Samples::default();
    let mut done = Samples::default();
    for _ in 0..opts.reps {
        let (d, _) = Daemon::start(root.path(), &[("DEMETER_WORKERS", "4")])?;
        let t0 = Instant::now();
        let start_pending = d.get("/health")?["queue"]["pending"].as_u64().unwrap_or(0);
        while t0.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_millis(250));
        }
        let h = d.get("/health")?;
        let processed = start_pending.saturating_sub(h["queue"]["pending"].as_u64().unwrap_or(0));
        peaks.push(d.peak_rss_mb().unwrap_or(f64::NAN));
        done.push(processed as f64);
    }
    Ok(Section {
        title: "Memory".into(),
        command: "demeter-bench memory".into(),
        targets: "peak RSS ≤ 512 MB".into(),
        result: format!("{:.0} MB: {}", peaks.median(), crate::report::verdict(peaks.max() <= 512.0)),
        body: format!(
            "The daemon with 4 workers on a store of {queued} queued jobs, every one a 4000 × 3000 (12 MP) JPEG, run for \
             {secs} s of processing; peak resident set (`VmHWM`) over {} runs: **{} MB**. Photos processed in that time: \
             {}.\n",
            opts.reps,
            peaks.spread(0),
            done.spread(0)
        ),
    })
}

//! One TTL sweep over 100,000 expired jobs, in the daemon as it runs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use demeter_store::Store;

use crate::{
    daemon::{wait_for, Daemon},
    fixtures,
    report::Section,
    Opts,
};

pub fn run(opts: &Opts) -> Result<Section> {
    let n = opts.scaled(100_000, 10_000);
    let root = tempfile::tempdir()?;
    let photo = fixtures::real_photos()?.into_iter().next().context("a photo")?;
    let t = Instant::now();
    {
        let store = Store::open(&root.path().join("data"), 64 << 20)?;
        // Created three days ago: past the 48 h job TTL and the 24 h session TTL.
        let old = Utc::now() - chrono::Duration::hours(72);
        for (i, start) in (0..n).step_by(1000).enumerate() {
            fixtures::fill_session(&store, old, (n - start).min(1000), false, &photo, &format!("old{i}"))?;
        }
        store.set_paused(true)?;
    }
    let filled = t.elapsed();
    // The sweeper runs once at start; time until the queue (the expired jobs) is empty, while
    // polling `/health` (queue counts) every 50 ms, whose latency is recorded too.
    let (d, startup) = Daemon::start(root.path(), &[])?;
    let t0 = Instant::now();
    // The first answer with a token may wait for the store's one-time count of its queue.
    let (mut first, mut slowest) = (None, Duration::ZERO);
    wait_for("the sweep", Duration::from_secs(1800), || {
        let q = Instant::now();
        let h = d.get("/health").ok()?;
        match first {
            None => first = Some(q.elapsed()),
            Some(_) => slowest = slowest.max(q.elapsed()),
        }
        std::thread::sleep(Duration::from_millis(50));
        (h["queue"]["pending"].as_u64()? == 0).then_some(())
    })?;
    let swept = t0.elapsed();
    Ok(Section {
        title: "TTL sweep at scale".into(),
        command: "demeter-bench scale".into(),
        targets: "".into(),
        result: format!("{n} expired jobs swept in {:.1} s", swept.as_secs_f64()),
        body: format!(
            "{n} expired jobs in sessions of 1,000 (filled in {:.0} s); the daemon started in {} ms and its sweeper \
             removed every one in **{:.1} s** (batches of 200, each followed by a pause as long as the batch took, so \
             readers wait at most one batch). `/health` with a token, asked every 50 ms meanwhile: the first answer \
             took {:.0} ms (it may wait for the store's one-time count of its queue, begun at start-up), the slowest \
             of the others {:.0} ms.\n",
            filled.as_secs_f64(),
            startup.as_millis(),
            swept.as_secs_f64(),
            first.unwrap_or_default().as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e3
        ),
    })
}

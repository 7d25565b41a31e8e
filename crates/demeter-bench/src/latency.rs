//! How long after a photo lands in the folder it shows in the API, and its first event reaches
//! a live page.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    daemon::{follow_events, wait_for, Daemon},
    fixtures,
    report::Section,
    stats::Samples,
    Opts,
};

/// (filename, when its first job event arrived) as an SSE client saw them.
type Seen = Arc<Mutex<Vec<(String, Instant)>>>;

/// Follows the event stream; returns once the stream is open.
fn follow(url: String) -> Result<Seen> {
    let seen: Seen = Arc::default();
    let out = seen.clone();
    let (opened_tx, opened) = std::sync::mpsc::channel();
    follow_events(
        url,
        move || {
            let _ = opened_tx.send(());
        },
        move |v| {
            if let Some(name) = v["job"]["filename"].as_str() {
                out.lock().unwrap().push((name.to_owned(), Instant::now()));
            }
        },
    )?;
    opened.recv_timeout(Duration::from_secs(10)).context("the event stream did not open")?;
    Ok(seen)
}

fn measure(opts: &Opts, window_ms: &str) -> Result<(Samples, Samples)> {
    let root = tempfile::tempdir()?;
    let (d, _) = Daemon::start(root.path(), &[("DEMETER_STABILITY_WINDOW_MS", window_ms)])?;
    let seen = follow(d.url("/api/v1/events"))?;
    let photo = std::fs::read(fixtures::real_photos()?.first().context("a photo")?)?;
    let (mut api, mut sse) = (Samples::default(), Samples::default());
    for i in 0..opts.scaled(10, 4) {
        let name = format!("drop-{i:02}.jpg");
        let mut bytes = photo.clone();
        bytes.extend_from_slice(format!("{i}").as_bytes());
        // Written under a temporary name and renamed, as a careful copier does.
        let tmp = d.watch.join(format!(".{name}.part"));
        std::fs::write(&tmp, &bytes)?;
        let t0 = Instant::now();
        std::fs::rename(&tmp, d.watch.join(&name))?;
        wait_for("the job in the API", Duration::from_secs(30), || {
            let sessions = d.get("/api/v1/sessions").ok()?;
            let total: u64 =
                sessions["sessions"].as_array()?.iter().filter_map(|s| s["summary"]["total_jobs"].as_u64()).sum();
            (total > i as u64).then_some(())
        })?;
        api.push(t0.elapsed().as_secs_f64() * 1e3);
        let at = wait_for("the first event", Duration::from_secs(30), || {
            seen.lock().unwrap().iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
        })?;
        sse.push(at.duration_since(t0).as_secs_f64() * 1e3);
        // Spacing, so the next drop is not timed while this photo is still being processed.
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok((api, sse))
}

pub fn run(opts: &Opts) -> Result<Section> {
    let mut rows = Vec::new();
    let mut default_window = (0.0, 0.0);
    for window in ["2000", "100"] {
        let (api, sse) = measure(opts, window)?;
        if window == "2000" {
            default_window = (api.median(), sse.median());
        }
        rows.push(format!("| {window} | {} | {} |", api.spread(0), sse.spread(0)));
    }
    Ok(Section {
        title: "Drop to API and live page".into(),
        command: "demeter-bench latency".into(),
        targets: "".into(),
        result: format!("{:.0} ms to the API, {:.0} ms to SSE (default 2 s window)", default_window.0, default_window.1),
        body: format!(
            "A real photo renamed into the watched folder, one at a time ({} drops per row); the API polled every \
             2 ms for the new job; an SSE client connected throughout. Milliseconds from the rename, median \
             (min–max). The stability window (a file must keep its size and mtime that long before it is read, so \
             a copy in progress is never processed) is most of it (the watcher wakes when a file's window ends); the \
             rest is one `stat`, sniffing, hashing and the flushed enqueue.\n\n| `stability_window_ms` | drop → job in the API (ms) | drop → first SSE event (ms) |\n|---|---|---|\n{}\n",
            opts.scaled(10, 4),
            rows.join("\n")
        ),
    })
}

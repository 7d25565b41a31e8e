//! Fan-out: 200 event-stream clients, each event's delivery time from the action that caused
//! it.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use chrono::Utc;
use demeter_store::Store;

use crate::{
    daemon::{follow_events, wait_for, Daemon},
    fixtures,
    report::Section,
    stats::Samples,
    Opts,
};

pub fn run(opts: &Opts) -> Result<Section> {
    let clients = 200;
    let events = opts.scaled(50, 20);
    let root = tempfile::tempdir()?;
    let photo = fixtures::real_photos()?.into_iter().next().context("a photo")?;
    let session = {
        let store = Store::open(&root.path().join("data"), 64 << 20)?;
        let s = fixtures::fill_session(&store, Utc::now(), events, false, &photo, "fanout")?;
        store.set_paused(true)?;
        s
    };
    let (d, _) = Daemon::start(root.path(), &[("DEMETER_MAX_EVENT_STREAMS", "256")])?;
    let jobs: Vec<String> = d.get(&format!("/api/v1/photos/jobs/status?upload_session_id={session}"))?["jobs"]
        .as_array()
        .context("jobs")?
        .iter()
        .filter_map(|j| j["job_id"].as_str().map(str::to_owned))
        .collect();

    // Every client records when it saw each job's cancellation.
    let received: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let connected = Arc::new(AtomicUsize::new(0));
    for _ in 0..clients {
        let (received, connected) = (received.clone(), connected.clone());
        follow_events(
            d.url("/api/v1/events"),
            move || {
                connected.fetch_add(1, Ordering::SeqCst);
            },
            move |v| {
                if v["job"]["status"] == "failed" {
                    if let Some(id) = v["job"]["job_id"].as_str() {
                        received.lock().unwrap().push((id.to_owned(), Instant::now()));
                    }
                }
            },
        )?;
    }
    wait_for("200 clients", Duration::from_secs(30), || (connected.load(Ordering::SeqCst) == clients).then_some(()))?;
    std::thread::sleep(Duration::from_millis(500));

    let mut sent = HashMap::new();
    for id in &jobs {
        sent.insert(id.clone(), Instant::now());
        d.post(&format!("/api/v1/jobs/{id}/cancel"))?;
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for("every delivery", Duration::from_secs(60), || {
        (received.lock().unwrap().len() >= clients * jobs.len()).then_some(())
    })?;
    let mut latency = Samples::default();
    for (id, at) in received.lock().unwrap().iter() {
        latency.push(at.duration_since(sent[id]).as_secs_f64() * 1e3);
    }
    Ok(Section {
        title: "SSE fan-out".into(),
        command: "demeter-bench sse".into(),
        targets: "delivery p99 ≤ 100 ms with 200 clients".into(),
        result: format!(
            "p99 {:.1} ms: {}",
            latency.quantile(0.99),
            crate::report::verdict(latency.quantile(0.99) <= 100.0)
        ),
        body: format!(
            "{clients} clients on `/api/v1/events` (every session), {} jobs cancelled through the API one every 20 ms; \
             delivery time from sending the cancel request to each client reading the job's event ({} deliveries, all \
             arrived): p50 **{:.1} ms**, p99 **{:.1} ms**, max {:.1} ms. The clients run in this process on the same \
             cores as the daemon.\n",
            jobs.len(),
            latency.len(),
            latency.median(),
            latency.quantile(0.99),
            latency.max()
        ),
    })
}

//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;

use axum::{extract::State, http::header, response::IntoResponse};
use demeter_domain::metrics::{EngineMetrics, Histogram};

use crate::AppState;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (le, n) in h.cumulative() {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {n}");
    }
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(out, "{name}_sum{braces} {}\n{name}_count{braces} {}", h.sum, h.count);
}

/// A model's name as a label value (backslashes and quotes escaped).
fn model_label(name: &str) -> String {
    name.replace('\\', "\\\\").replace('"', "\\\"")
}

/// One family with a sample per model: `value` gives the model's value, or `None` to leave it out
/// (a gauge of batched models only).
fn per_model(
    out: &mut String,
    m: &EngineMetrics,
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&demeter_domain::health::ModelDevice) -> Option<String>,
) {
    family(out, name, kind, help);
    for d in &m.model_devices {
        if let Some(v) = value(d) {
            let _ = writeln!(out, "{name}{{model=\"{}\"}} {v}", model_label(&d.model));
        }
    }
}

/// Renders the engine's metrics and the server's own (SSE clients).
pub fn render(m: &EngineMetrics, sse_clients: usize) -> String {
    let mut out = String::new();
    family(&mut out, "demeter_jobs", "gauge", "Jobs waiting or running now, by state.");
    let _ = writeln!(out, "demeter_jobs{{state=\"pending\"}} {}", m.jobs_pending);
    let _ = writeln!(out, "demeter_jobs{{state=\"processing\"}} {}", m.jobs_processing);
    family(&mut out, "demeter_jobs_finished_total", "counter", "Jobs finished since start, by outcome.");
    let _ = writeln!(out, "demeter_jobs_finished_total{{state=\"completed\"}} {}", m.jobs_completed);
    let _ = writeln!(out, "demeter_jobs_finished_total{{state=\"failed\"}} {}", m.jobs_failed);
    family(&mut out, "demeter_queue_depth", "gauge", "Pending jobs in the queue.");
    let _ = writeln!(out, "demeter_queue_depth {}", m.jobs_pending);
    family(&mut out, "demeter_workers", "gauge", "Inference workers, and how many are busy.");
    let _ = writeln!(out, "demeter_workers{{state=\"total\"}} {}", m.workers);
    let _ = writeln!(out, "demeter_workers{{state=\"busy\"}} {}", m.workers_busy);
    family(&mut out, "demeter_execution_provider", "gauge", "The ONNX Runtime execution provider in use (1).");
    let _ = writeln!(out, "demeter_execution_provider{{provider=\"{}\"}} 1", m.execution_provider);
    family(
        &mut out,
        "demeter_model_device",
        "gauge",
        "Where each model runs (1), as `auto` or the configuration decided.",
    );
    for d in &m.model_devices {
        let _ = writeln!(
            out,
            "demeter_model_device{{model=\"{}\",provider=\"{}\",device=\"{}\"}} 1",
            model_label(&d.model),
            d.execution_provider,
            d.device
        );
    }
    per_model(
        &mut out,
        m,
        "demeter_model_sessions",
        "gauge",
        "ONNX Runtime sessions per model: one per worker, or the batcher's.",
        |d| Some(d.sessions.to_string()),
    );
    per_model(
        &mut out,
        m,
        "demeter_model_warm_up_seconds",
        "gauge",
        "Time spent warming each model's sessions before ready.",
        |d| Some((d.warm_up_ms as f64 / 1000.0).to_string()),
    );
    family(&mut out, "demeter_batch_size", "histogram", "Photos per batched inference run, per batched model.");
    for d in &m.model_devices {
        let Some(b) = &d.batching else { continue };
        let label = model_label(&d.model);
        let mut cumulative = 0;
        for c in &b.batches {
            cumulative += c.runs;
            let _ = writeln!(out, "demeter_batch_size_bucket{{model=\"{label}\",le=\"{}\"}} {cumulative}", c.size);
        }
        let _ = writeln!(out, "demeter_batch_size_bucket{{model=\"{label}\",le=\"+Inf\"}} {cumulative}");
        let sum: u64 = b.batches.iter().map(|c| c.size as u64 * c.runs).sum();
        let _ = writeln!(out, "demeter_batch_size_sum{{model=\"{label}\"}} {sum}\ndemeter_batch_size_count{{model=\"{label}\"}} {cumulative}");
    }
    per_model(
        &mut out,
        m,
        "demeter_batch_queue_depth",
        "gauge",
        "Photos waiting for a batch, per batched model.",
        |d| d.batching.as_ref().map(|b| b.queued.to_string()),
    );
    per_model(
        &mut out,
        m,
        "demeter_batches_failed_total",
        "counter",
        "Batched runs that failed (their photos were retried).",
        |d| d.batching.as_ref().map(|b| b.failed_batches.to_string()),
    );
    family(&mut out, "demeter_stage_duration_seconds", "histogram", "Duration of each stage of completed jobs.");
    for (stage, h) in &m.stage_seconds {
        histogram(&mut out, "demeter_stage_duration_seconds", &format!("stage=\"{}\"", stage.as_str()), h);
    }
    family(&mut out, "demeter_inference_duration_seconds", "histogram", "ONNX Runtime inference (the segment stage).");
    let inference = m.stage_seconds.get(&demeter_domain::Stage::Segment).cloned().unwrap_or_default();
    histogram(&mut out, "demeter_inference_duration_seconds", "", &inference);
    family(&mut out, "demeter_watcher_events_total", "counter", "Filesystem events received.");
    let _ = writeln!(out, "demeter_watcher_events_total {}", m.watcher_events);
    family(&mut out, "demeter_watcher_rescans_total", "counter", "Full rescans of the photo folder.");
    let _ = writeln!(out, "demeter_watcher_rescans_total {}", m.watcher_rescans);
    family(&mut out, "demeter_watcher_files_ready_total", "counter", "Files that passed the readiness gate.");
    let _ = writeln!(out, "demeter_watcher_files_ready_total {}", m.watcher_files_ready);
    family(&mut out, "demeter_inference_pauses_total", "counter", "Times repeated device errors paused processing.");
    let _ = writeln!(out, "demeter_inference_pauses_total {}", m.inference_pauses);
    family(&mut out, "demeter_inference_paused", "gauge", "1 while the inference circuit breaker holds processing.");
    let _ = writeln!(out, "demeter_inference_paused {}", u8::from(m.inference_paused));
    family(&mut out, "demeter_sse_clients", "gauge", "Connected event-stream clients.");
    let _ = writeln!(out, "demeter_sse_clients {sse_clients}");
    out
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = render(&(state.metrics)(), state.hub.clients());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_in_text_format() {
        let mut m = EngineMetrics { jobs_completed: 3, execution_provider: "CPU".into(), ..Default::default() };
        m.stage_seconds.entry(demeter_domain::Stage::Segment).or_default().observe(0.02);
        let text = render(&m, 2);
        assert!(text.contains("demeter_jobs_finished_total{state=\"completed\"} 3\n"));
        assert!(text.contains("demeter_stage_duration_seconds_bucket{stage=\"segment\",le=\"0.025\"} 1\n"));
        assert!(text.contains("demeter_inference_duration_seconds_count 1\n"));
        assert!(text.contains("demeter_execution_provider{provider=\"CPU\"} 1\n"));
        assert!(text.contains("demeter_sse_clients 2\n"));
        // Every sample line belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {base} ")), "{line}");
        }
    }
}

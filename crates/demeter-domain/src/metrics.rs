//! Counters and histograms the engine keeps and `/metrics` exposes (Prometheus text format).
//! Plain data: the engine fills them, the server formats them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::job::Stage;

/// Upper bounds (seconds) of the duration histograms' buckets.
pub const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A cumulative histogram with fixed buckets, as Prometheus expects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Observations ≤ `BUCKETS[i]` (not cumulative here; the formatter accumulates).
    pub buckets: [u64; BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// `(le, cumulative count)` pairs, ending with `+Inf`.
    pub fn cumulative(&self) -> Vec<(String, u64)> {
        let mut acc = 0;
        let mut out: Vec<_> = BUCKETS
            .iter()
            .zip(self.buckets)
            .map(|(b, n)| {
                acc += n;
                (b.to_string(), acc)
            })
            .collect();
        out.push(("+Inf".into(), self.count));
        out
    }
}

/// What the engine has counted since start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineMetrics {
    pub jobs_completed: u64,
    pub jobs_failed: u64,
    pub jobs_pending: u64,
    pub jobs_processing: u64,
    pub workers: usize,
    pub workers_busy: usize,
    pub execution_provider: String,
    /// Where each model runs (as `/health` gives it).
    pub model_devices: Vec<crate::health::ModelDevice>,
    /// Per-stage durations of completed jobs; `segment` is the ONNX Runtime inference.
    pub stage_seconds: BTreeMap<Stage, Histogram>,
    pub watcher_events: u64,
    pub watcher_rescans: u64,
    pub watcher_files_ready: u64,
    /// Times the inference circuit breaker paused processing since start.
    pub inference_pauses: u64,
    /// 1 while processing is paused by the breaker.
    pub inference_paused: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_accumulate() {
        let mut h = Histogram::default();
        h.observe(0.003);
        h.observe(0.2);
        h.observe(100.0);
        let c = h.cumulative();
        assert_eq!(c[0], ("0.005".into(), 1));
        assert_eq!(c[5], ("0.25".into(), 2));
        assert_eq!(c.last().unwrap(), &("+Inf".into(), 3));
        assert!((h.sum - 100.203).abs() < 1e-9);
    }
}

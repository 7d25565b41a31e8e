//! Honest progress and ETA, from measured stage durations only.
//!
//! - Progress moves with stage milestones. Within a stage it may advance by the elapsed share of
//!   that stage's *measured* mean duration, but never reaches the next milestone: a slow photo
//!   sits just below it instead of lying.
//! - Stage means are moving averages learned from completed jobs ([`StageStats`]); the store
//!   keeps them across restarts. Until every stage has data there is no ETA (`None`, shown "—").
//! - A processing job's ETA is what is left of its stage plus the later stages' means. A pending
//!   job at queue place `p` starts when the `p mod workers`-th worker to free up is free
//!   (what the running jobs still need, [`workers_free_in`]) plus `p / workers` whole rounds of a
//!   job's mean, and ends a job's mean later. A session's ETA is its slowest unfinished job's.
//!   (Counting whole rounds only, without the running jobs' rest, under-estimated the end of a
//!   session by about a third at 75 % done: `demeter-bench eta`.)

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::{Job, JobState, Stage};

/// Weight of a new sample once a stage has 5 or more (before that: the plain mean).
const ALPHA: f64 = 0.2;

/// A moving average of one stage's duration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StageMean {
    pub mean_ms: f64,
    pub samples: u64,
}

/// Learned per-stage durations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStats {
    pub stages: BTreeMap<Stage, StageMean>,
}

impl StageStats {
    /// Folds in the stage timings of one completed job.
    pub fn record(&mut self, timings_ms: &BTreeMap<Stage, u64>) {
        for (stage, ms) in timings_ms {
            let x = *ms as f64;
            let e = self.stages.entry(*stage).or_insert(StageMean { mean_ms: x, samples: 0 });
            e.samples += 1;
            let w = (1.0 / e.samples as f64).max(ALPHA);
            e.mean_ms += w * (x - e.mean_ms);
        }
    }

    pub fn mean_ms(&self, stage: Stage) -> Option<f64> {
        self.stages.get(&stage).map(|m| m.mean_ms)
    }

    /// Mean duration of the stages from `from` (inclusive) to the end; `None` without data.
    fn remaining_from(&self, from: usize) -> Option<f64> {
        Stage::ALL[from..].iter().map(|s| self.mean_ms(*s)).sum()
    }

    /// A whole job's mean duration, once every stage has been measured.
    pub fn job_ms(&self) -> Option<f64> {
        self.remaining_from(0)
    }
}

/// A job's progress and time left, as shown to users.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub progress_percent: u8,
    /// Seconds until the job is done; `Some(0.0)` when it is; `None` when there is no data yet.
    pub eta_seconds: Option<f64>,
}

/// What comes after `stage`'s milestone.
fn next_milestone(stage: Stage) -> u8 {
    let i = Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0);
    Stage::ALL.get(i + 1).map(|s| s.milestone()).unwrap_or(100)
}

/// Milliseconds until each of `workers` workers is free, soonest first: what each running job
/// still needs (a stage without data counts as done), idle workers at 0.
pub fn workers_free_in(running: &[Job], stats: &StageStats, now: DateTime<Utc>, workers: usize) -> Vec<f64> {
    let mut free: Vec<f64> = running
        .iter()
        .filter_map(|j| match &j.state {
            JobState::Processing { stage, stage_since, .. } => {
                let idx = Stage::ALL.iter().position(|s| s == stage).unwrap_or(0);
                let elapsed = (now - *stage_since).num_milliseconds().max(0) as f64;
                let mean = stats.mean_ms(*stage).unwrap_or(0.0);
                Some((mean - elapsed).max(0.0) + stats.remaining_from(idx + 1).unwrap_or(0.0))
            }
            _ => None,
        })
        .collect();
    free.resize(free.len().max(workers.max(1)), 0.0);
    free.sort_by(f64::total_cmp);
    free.truncate(workers.max(1));
    free
}

/// Estimates one job. `queue_position` is its 0-based place among pending jobs (FIFO);
/// `free_in` is [`workers_free_in`] (one entry per worker, soonest first).
pub fn estimate(
    job: &Job,
    stats: &StageStats,
    now: DateTime<Utc>,
    queue_position: Option<usize>,
    free_in: &[f64],
) -> Estimate {
    match &job.state {
        JobState::Completed { .. } | JobState::Failed { .. } => {
            Estimate { progress_percent: job.progress_percent(), eta_seconds: Some(0.0) }
        }
        JobState::Pending { .. } => {
            let workers = free_in.len().max(1);
            let eta = queue_position.zip(stats.job_ms()).map(|(p, job_ms)| {
                let start = free_in.get(p % workers).copied().unwrap_or(0.0) + (p / workers) as f64 * job_ms;
                (start + job_ms) / 1000.0
            });
            Estimate { progress_percent: 0, eta_seconds: eta }
        }
        JobState::Processing { stage, stage_since, .. } => {
            let idx = Stage::ALL.iter().position(|s| s == stage).unwrap_or(0);
            let elapsed = (now - *stage_since).num_milliseconds().max(0) as f64;
            let Some(mean) = stats.mean_ms(*stage) else {
                return Estimate { progress_percent: stage.milestone(), eta_seconds: None };
            };
            let (lo, hi) = (stage.milestone(), next_milestone(*stage));
            let share = if mean > 0.0 { (elapsed / mean).min(1.0) } else { 1.0 };
            // Never reach the next milestone by time alone.
            let progress = lo + ((f64::from(hi - lo - 1)) * share).floor() as u8;
            let eta = stats.remaining_from(idx + 1).map(|later| ((mean - elapsed).max(0.0) + later) / 1000.0);
            Estimate { progress_percent: progress, eta_seconds: eta }
        }
    }
}

/// A session's ETA: its slowest job's, `Some(0.0)` when all are done, `None` without data.
pub fn session_eta(estimates: impl IntoIterator<Item = Estimate>) -> Option<f64> {
    let mut worst: f64 = 0.0;
    for e in estimates {
        worst = worst.max(e.eta_seconds?);
    }
    Some(worst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobId, SessionId};
    use chrono::Duration;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + Duration::milliseconds(ms)
    }

    fn stats(ms: u64) -> StageStats {
        let mut s = StageStats::default();
        s.record(&Stage::ALL.iter().map(|st| (*st, ms)).collect());
        s
    }

    fn job() -> Job {
        Job::new(JobId::new_v7(), SessionId::new_v7(), "i".into(), "/a".into(), "a".into(), 1, 1, t(0))
    }

    #[test]
    fn no_data_means_no_eta() {
        let j = job();
        let e = estimate(&j, &StageStats::default(), t(0), Some(0), &[0.0; 4]);
        assert_eq!(e, Estimate { progress_percent: 0, eta_seconds: None });
        assert_eq!(session_eta([e]), None);
    }

    #[test]
    fn moving_average_learns_and_forgets_slowly() {
        let mut s = stats(100);
        s.record(&[(Stage::Segment, 300)].into());
        assert_eq!(s.mean_ms(Stage::Segment), Some(200.0), "plain mean while samples are few");
        for _ in 0..50 {
            s.record(&[(Stage::Segment, 1000)].into());
        }
        assert!((s.mean_ms(Stage::Segment).unwrap() - 1000.0).abs() < 1.0);
        assert_eq!(s.stages[&Stage::Segment].samples, 52);
    }

    #[test]
    fn processing_progress_moves_within_a_stage_but_stops_short_of_the_next_milestone() {
        let s = stats(1000);
        let mut j = job();
        j.claim(0, t(0)).unwrap();
        j.advance(Stage::Segment, t(0)).unwrap();
        let e = estimate(&j, &s, t(500), None, &[0.0; 4]);
        assert_eq!(e.progress_percent, 40 + 14, "half of 40→70");
        assert_eq!(e.eta_seconds, Some(0.5 + 2.0), "half a stage plus detect and save");
        let late = estimate(&j, &s, t(60_000), None, &[0.0; 4]);
        assert_eq!(late.progress_percent, 69, "never 70 before the stage ends");
        assert_eq!(late.eta_seconds, Some(2.0), "an overrunning stage counts as done, no negative time");
    }

    #[test]
    fn pending_jobs_wait_in_rounds_of_workers() {
        let s = stats(500); // 3 s per job
        let j = job();
        let idle = workers_free_in(&[], &s, t(0), 4);
        assert_eq!(idle, [0.0; 4]);
        assert_eq!(estimate(&j, &s, t(0), Some(0), &idle).eta_seconds, Some(3.0));
        assert_eq!(estimate(&j, &s, t(0), Some(3), &idle).eta_seconds, Some(3.0));
        assert_eq!(estimate(&j, &s, t(0), Some(4), &idle).eta_seconds, Some(6.0));
    }

    #[test]
    fn pending_jobs_wait_for_the_running_ones_to_free_a_worker() {
        // 3 s per job, 500 ms per stage. Two workers, both busy: one two stages into its job
        // (2 s left), one just started (3 s left).
        let s = stats(500);
        let mut a = job();
        a.claim(0, t(0)).unwrap();
        for stage in [Stage::Decode, Stage::Locate] {
            a.advance(stage, t(0)).unwrap();
        }
        let mut b = job();
        b.claim(1, t(0)).unwrap();
        let free = workers_free_in(&[b, a], &s, t(0), 2);
        assert_eq!(free, [2000.0, 3000.0], "soonest first");
        let eta = |p| estimate(&job(), &s, t(0), Some(p), &free).eta_seconds.unwrap();
        assert_eq!(eta(0), 5.0, "starts when the first worker frees up, 2 s from now");
        assert_eq!(eta(1), 6.0);
        assert_eq!(eta(2), 8.0, "a round later on the first worker");
    }

    #[test]
    fn session_eta_is_the_slowest_job_and_zero_when_done() {
        let e = |x| Estimate { progress_percent: 0, eta_seconds: Some(x) };
        assert_eq!(session_eta([e(1.0), e(7.0), e(0.0)]), Some(7.0));
        assert_eq!(session_eta([e(0.0)]), Some(0.0));
    }
}

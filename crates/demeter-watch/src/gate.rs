//! The readiness gate: a file is read only after its size and mtime have stayed the same for
//! a whole stability window, so a photo still being copied (slowly, over SMB, from a phone) is
//! never processed half-written. Pure logic over an injected `Instant`.
//!
//! A file needs looking at again only when its window ends ([`StabilityGate::due`]): any write
//! in between moves its mtime, so one `stat` then tells whether it stayed the same throughout.
//! The watcher sleeps until the next window ends ([`StabilityGate::next_due`]) rather than
//! polling on a fixed tick.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observation {
    size: u64,
    mtime_ns: i128,
    /// When this exact (size, mtime) was first seen.
    since: Instant,
    /// Not due before this: a stable file that could not be read yet (still zeros where the
    /// image goes, still locked by its writer) is looked at again later, not in a busy loop.
    retry_at: Option<Instant>,
}

/// Tracks candidate files until they are stable.
#[derive(Debug)]
pub struct StabilityGate {
    window: Duration,
    seen: HashMap<PathBuf, Observation>,
}

/// The gate's answer for one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Unchanged for the whole window: read it now.
    Ready,
    /// Changed recently (or just appeared): look again later.
    Wait,
}

impl StabilityGate {
    pub fn new(window: Duration) -> Self {
        Self { window, seen: HashMap::new() }
    }

    /// Records what a `stat` of `path` returned at `now`.
    pub fn observe(&mut self, path: &Path, size: u64, mtime_ns: i128, now: Instant) -> Readiness {
        let obs = self
            .seen
            .entry(path.to_owned())
            .and_modify(|o| {
                if o.size != size || o.mtime_ns != mtime_ns {
                    *o = Observation { size, mtime_ns, since: now, retry_at: None };
                }
            })
            .or_insert(Observation { size, mtime_ns, since: now, retry_at: None });
        if now.duration_since(obs.since) >= self.window {
            Readiness::Ready
        } else {
            Readiness::Wait
        }
    }

    fn due_at(&self, o: &Observation) -> Instant {
        let stable = o.since + self.window;
        o.retry_at.map_or(stable, |r| r.max(stable))
    }

    /// When the next tracked file is due to be looked at again; `None` when none is tracked.
    pub fn next_due(&self) -> Option<Instant> {
        self.seen.values().map(|o| self.due_at(o)).min()
    }

    /// The tracked files due at `now`: their window has ended (and any retry time passed).
    pub fn due(&self, now: Instant) -> Vec<PathBuf> {
        self.seen.iter().filter(|(_, o)| self.due_at(o) <= now).map(|(p, _)| p.clone()).collect()
    }

    /// Puts off looking at a tracked file again until `at` (unless it changes before).
    pub fn retry_at(&mut self, path: &Path, at: Instant) {
        if let Some(o) = self.seen.get_mut(path) {
            o.retry_at = Some(at);
        }
    }

    /// Stops tracking a file (reported, deleted or ignored).
    pub fn forget(&mut self, path: &Path) {
        self.seen.remove(path);
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_a_full_quiet_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut g = StabilityGate::new(ms(2000));
        let p = Path::new("/w/a.jpg");
        assert_eq!(g.observe(p, 10, 1, t0), Readiness::Wait);
        assert_eq!(g.observe(p, 10, 1, t0 + ms(1999)), Readiness::Wait);
        assert_eq!(g.observe(p, 10, 1, t0 + ms(2000)), Readiness::Ready);
    }

    #[test]
    fn a_growing_file_restarts_the_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut g = StabilityGate::new(ms(2000));
        let p = Path::new("/w/a.jpg");
        g.observe(p, 10, 1, t0);
        assert_eq!(g.observe(p, 20, 1, t0 + ms(1500)), Readiness::Wait, "grew");
        assert_eq!(g.observe(p, 20, 1, t0 + ms(3000)), Readiness::Wait, "only 1.5 s since it grew");
        assert_eq!(g.observe(p, 20, 2, t0 + ms(3400)), Readiness::Wait, "touched");
        assert_eq!(g.observe(p, 20, 2, t0 + ms(5400)), Readiness::Ready);
    }

    #[test]
    fn files_are_due_when_their_window_ends_or_their_retry_comes() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut g = StabilityGate::new(ms(2000));
        let (a, b) = (Path::new("/w/a.jpg"), Path::new("/w/b.jpg"));
        assert_eq!(g.next_due(), None);
        g.observe(a, 10, 1, t0);
        g.observe(b, 10, 1, t0 + ms(500));
        assert_eq!(g.next_due(), Some(t0 + ms(2000)));
        assert!(g.due(t0 + ms(1999)).is_empty());
        assert_eq!(g.due(t0 + ms(2000)), [a.to_owned()]);
        // Stable but not readable yet: not due again before its retry, nor in a busy loop.
        g.retry_at(a, t0 + ms(2250));
        assert_eq!(g.next_due(), Some(t0 + ms(2250)));
        assert_eq!(g.due(t0 + ms(2200)), Vec::<PathBuf>::new());
        // A change starts its window over and drops the retry.
        g.observe(a, 20, 2, t0 + ms(2200));
        assert_eq!(g.next_due(), Some(t0 + ms(2500)), "b's window ends first now");
        assert_eq!(g.due(t0 + ms(4200)).len(), 2);
    }

    #[test]
    fn forgotten_files_start_over() {
        let t0 = Instant::now();
        let mut g = StabilityGate::new(Duration::from_millis(100));
        let p = Path::new("/w/a.jpg");
        g.observe(p, 1, 1, t0);
        g.forget(p);
        assert!(g.is_empty());
        assert_eq!(g.observe(p, 1, 1, t0 + Duration::from_secs(5)), Readiness::Wait);
    }
}

//! The readiness gate: a file is read only after its size and mtime have stayed the same for
//! a whole stability window, so a photo still being copied (slowly, over SMB, from a phone) is
//! never processed half-written. Pure logic over an injected `Instant`.

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
                    *o = Observation { size, mtime_ns, since: now };
                }
            })
            .or_insert(Observation { size, mtime_ns, since: now });
        if now.duration_since(obs.since) >= self.window {
            Readiness::Ready
        } else {
            Readiness::Wait
        }
    }

    /// Stops tracking a file (reported, deleted or ignored).
    pub fn forget(&mut self, path: &Path) {
        self.seen.remove(path);
    }

    pub fn tracked(&self) -> impl Iterator<Item = &Path> {
        self.seen.keys().map(PathBuf::as_path)
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

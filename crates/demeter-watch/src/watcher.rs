use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use chrono::{DateTime, Utc};
use demeter_domain::photo::{self as filter, ImageFormat, SNIFF_LEN};
use notify::{RecursiveMode, Watcher};
use tracing::{debug, info, warn};

use crate::{
    gate::{Readiness, StabilityGate},
    mounts,
};

/// Whether filesystem events are used, or rescans alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchMode {
    /// Events, unless the folder is on a network or FUSE filesystem (where files written by
    /// other machines raise no event): then rescans alone, at the rescan interval.
    #[default]
    Auto,
    /// Events even on a network filesystem (e.g. a share only this machine writes to).
    Events,
    /// Rescans alone.
    Polling,
}

/// How the watcher is set up.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub dir: PathBuf,
    pub rescan_interval: Duration,
    pub stability_window: Duration,
    /// The loop's longest sleep (it checks for a due rescan after each), and how soon a stable
    /// file that could not be read yet (unfilled, locked) is looked at again.
    pub tick: Duration,
    pub mode: WatchMode,
    /// The mount table read to recognise network filesystems (`/proc/mounts`; a test points
    /// it at its own file).
    pub mount_table: PathBuf,
    /// A stable file that still looks unfilled (allocated at its final size, zeros where the
    /// image should be) is waited for until its mtime is this old; then it is reported anyway,
    /// so a copy that died half-way becomes a failed job rather than nothing.
    pub incomplete_grace: Duration,
}

impl WatchOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            rescan_interval: Duration::from_secs(60),
            stability_window: Duration::from_secs(2),
            tick: Duration::from_millis(250),
            mode: WatchMode::Auto,
            mount_table: PathBuf::from("/proc/mounts"),
            incomplete_grace: Duration::from_secs(30),
        }
    }

    /// Whether to poll, and why: the mode, or the filesystem the folder is on.
    fn polling_reason(&self) -> Option<String> {
        match self.mode {
            WatchMode::Polling => Some("watch.mode is \"polling\"".to_owned()),
            WatchMode::Events => None,
            WatchMode::Auto => {
                mounts::detect(&self.dir, &self.mount_table).filter(mounts::Mount::is_network).map(|m| {
                    format!(
                        "{} is on a network filesystem ({} at {}), which raises no events for files written elsewhere",
                        self.dir.display(),
                        m.fstype,
                        m.point.display()
                    )
                })
            }
        }
    }
}

/// What a ready file turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Image(ImageFormat),
    /// Named like a photo, but its content is not a supported image (or it is empty).
    NotAnImage,
}

/// A file that is complete and worth a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyFile {
    pub path: PathBuf,
    /// Path relative to the watched folder, with `/` separators.
    pub rel_path: String,
    /// The first component of `rel_path` when the file is in a subfolder.
    pub top_level: Option<String>,
    pub size: u64,
    pub mtime_ns: i128,
    pub kind: FileKind,
}

/// The watcher's state for `/health`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchStatus {
    pub dir: PathBuf,
    /// "events" or "polling".
    pub mode: &'static str,
    /// Why the watcher polls instead of using events (`None` in events mode).
    pub mode_reason: Option<String>,
    pub last_scan_at: Option<DateTime<Utc>>,
    /// Files reported ready since start.
    pub files_reported: u64,
    /// Filesystem events received since start.
    pub events: u64,
    /// Full rescans since start (the one at start included).
    pub rescans: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot create the photo folder {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("the photo folder {path} is not a directory")]
    NotADir { path: PathBuf },
}

/// A running watcher. Stops when dropped or on [`FolderWatcher::stop`].
pub struct FolderWatcher {
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<WatchStatus>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FolderWatcher {
    /// Creates the folder if missing and starts watching; ready files go to `sink`.
    pub fn start(opts: WatchOptions, sink: mpsc::Sender<ReadyFile>) -> Result<Self, WatchError> {
        std::fs::create_dir_all(&opts.dir)
            .map_err(|source| WatchError::CreateDir { path: opts.dir.clone(), source })?;
        if !opts.dir.is_dir() {
            return Err(WatchError::NotADir { path: opts.dir.clone() });
        }
        let dir = opts.dir.canonicalize().unwrap_or_else(|_| opts.dir.clone());
        let opts = WatchOptions { dir, ..opts };
        let stop = Arc::new(AtomicBool::new(false));
        let mode_reason = opts.polling_reason();
        let mode = if mode_reason.is_some() { "polling" } else { "events" };
        if let Some(reason) = &mode_reason {
            info!(dir = %opts.dir.display(), "polling by rescans every {:?}: {reason}", opts.rescan_interval);
        }
        let status =
            Arc::new(Mutex::new(WatchStatus { dir: opts.dir.clone(), mode, mode_reason, ..Default::default() }));
        let thread = {
            let (stop, status) = (stop.clone(), status.clone());
            thread::Builder::new()
                .name("demeter-watch".into())
                .spawn(move || Loop::new(opts, sink, status).run(&stop))
                .expect("spawning the watcher thread")
        };
        Ok(Self { stop, status, thread: Some(thread) })
    }

    pub fn status(&self) -> WatchStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FolderWatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Loop {
    opts: WatchOptions,
    sink: mpsc::Sender<ReadyFile>,
    status: Arc<Mutex<WatchStatus>>,
    gate: StabilityGate,
    /// (size, mtime) of every file already reported, so rescans do not report it again.
    reported: HashMap<PathBuf, (u64, i128)>,
    /// Events were lost (queue overflow, watch error): rescan once the queued events are
    /// drained — one rescan per burst, not one per overflow notice.
    rescan_requested: bool,
    /// Folders that just appeared, each to be scanned once more at the time given: notify
    /// watches a new folder only after it has sent the folder's creation event, so a file made
    /// in it between our scan on that event and the watch raises no event of its own.
    new_dirs: Vec<(PathBuf, Instant)>,
}

/// A modification time as nanoseconds since the epoch (negative before it), as [`ReadyFile`]
/// reports it: with the size, what tells whether a file is still the one that was queued.
pub fn mtime_ns(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

impl Loop {
    fn new(opts: WatchOptions, sink: mpsc::Sender<ReadyFile>, status: Arc<Mutex<WatchStatus>>) -> Self {
        let gate = StabilityGate::new(opts.stability_window);
        Self { opts, sink, status, gate, reported: HashMap::new(), rescan_requested: false, new_dirs: Vec::new() }
    }

    fn set_status(&self, f: impl FnOnce(&mut WatchStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn run(mut self, stop: &AtomicBool) {
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        // Kept alive for the loop's lifetime; dropping it ends the events.
        let polling = self.status.lock().unwrap_or_else(|e| e.into_inner()).mode == "polling";
        let _watcher = if polling {
            None
        } else {
            match notify::recommended_watcher(tx).and_then(|mut w| {
                w.watch(&self.opts.dir, RecursiveMode::Recursive)?;
                Ok(w)
            }) {
                Ok(w) => Some(w),
                Err(e) => {
                    warn!(error = %e, dir = %self.opts.dir.display(), "filesystem events unavailable; polling by rescans");
                    self.set_status(|s| {
                        s.mode = "polling";
                        s.mode_reason = Some(format!("filesystem events unavailable: {e}"));
                        s.last_error = s.mode_reason.clone();
                    });
                    None
                }
            }
        };
        info!(dir = %self.opts.dir.display(), "watching for photos");
        self.rescan();
        let mut last_scan = Instant::now();
        let mut last_examined = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            // Sleep until the next candidate's window ends (a photo is reported as soon as it is
            // stable, not up to a tick later), passes at least MIN_PASS_GAP apart: a flood of
            // files becoming due one after another is taken in batches.
            let next_pass = self.gate.next_due().map(|due| due.max(last_examined + MIN_PASS_GAP));
            let next_dir = self.new_dirs.iter().map(|(_, at)| *at).min();
            let wake = next_pass.into_iter().chain(next_dir).min();
            let timeout =
                wake.map_or(self.opts.tick, |at| at.saturating_duration_since(Instant::now()).min(self.opts.tick));
            match rx.recv_timeout(timeout) {
                Ok(event) => {
                    self.on_event(event);
                    // Drain what queued up meanwhile before examining candidates.
                    while let Ok(event) = rx.try_recv() {
                        self.on_event(event);
                    }
                    self.rescan_if_requested();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => thread::sleep(timeout),
            }
            if last_scan.elapsed() >= self.opts.rescan_interval {
                self.rescan();
                last_scan = Instant::now();
            }
            self.scan_new_dirs_again(Instant::now());
            if next_pass.is_some_and(|at| at <= Instant::now()) {
                self.examine_candidates();
                last_examined = Instant::now();
            }
        }
        debug!("watcher stopped");
    }

    fn on_event(&mut self, event: notify::Result<notify::Event>) {
        self.set_status(|s| s.events += 1);
        match event {
            Ok(event) => {
                if event.need_rescan() {
                    if !self.rescan_requested {
                        warn!("filesystem events overflowed; rescanning");
                    }
                    self.rescan_requested = true;
                    return;
                }
                // Opening and reading (our own sniffing, walkdir's opendir) raise access events;
                // reacting to them would feed the loop its own echo.
                if matches!(event.kind, notify::EventKind::Access(_)) {
                    return;
                }
                for path in event.paths {
                    if path.is_dir() {
                        // A folder moved in brings files that raise no events of their own.
                        self.scan(&path);
                        if !self.new_dirs.iter().any(|(d, _)| *d == path) {
                            self.new_dirs.push((path, Instant::now() + NEW_DIR_RESCAN));
                        }
                    } else {
                        self.consider(&path);
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "watch error; rescanning");
                self.set_status(|s| s.last_error = Some(e.to_string()));
                self.rescan_requested = true;
            }
        }
    }

    /// Scans again the new folders whose time has come (see `Loop::new_dirs`).
    fn scan_new_dirs_again(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.new_dirs).into_iter().partition(|(_, at)| *at <= now);
        self.new_dirs = later;
        for (dir, _) in due {
            self.scan(&dir);
        }
    }

    fn rescan_if_requested(&mut self) {
        if std::mem::take(&mut self.rescan_requested) {
            self.rescan();
        }
    }

    fn rescan(&mut self) {
        let dir = self.opts.dir.clone();
        self.scan(&dir);
        // Forget reported files that are gone, so a photo put back later is seen again.
        self.reported.retain(|p, _| p.exists());
        self.set_status(|s| {
            s.last_scan_at = Some(Utc::now());
            s.rescans += 1;
        });
    }

    fn scan(&mut self, dir: &Path) {
        for entry in walkdir::WalkDir::new(dir).follow_links(false).into_iter().filter_map(Result::ok) {
            if entry.file_type().is_file() {
                self.consider(entry.path());
            }
        }
    }

    fn rel(&self, path: &Path) -> Option<PathBuf> {
        path.strip_prefix(&self.opts.dir).ok().map(Path::to_owned)
    }

    /// Adds a path to the gate's candidates when its name could be a photo.
    fn consider(&mut self, path: &Path) {
        let Some(rel) = self.rel(path) else { return };
        if rel.as_os_str().is_empty() || filter::is_ignored_path(&rel) {
            return;
        }
        let Ok(meta) = std::fs::metadata(path) else {
            self.gate.forget(path);
            return;
        };
        if !meta.is_file() {
            return;
        }
        let key = (meta.len(), meta.modified().map(mtime_ns).unwrap_or(0));
        if self.reported.get(path) == Some(&key) {
            return;
        }
        self.gate.observe(path, key.0, key.1, Instant::now());
    }

    /// Looks again at the candidates whose stability window has ended: one `stat` each, and
    /// those unchanged since they were first seen are sniffed and reported.
    fn examine_candidates(&mut self) {
        let now = Instant::now();
        let mut done = HashSet::new();
        for path in self.gate.due(now) {
            let Ok(meta) = std::fs::metadata(&path) else {
                done.insert(path);
                continue;
            };
            let (size, mtime) = (meta.len(), meta.modified().map(mtime_ns).unwrap_or(0));
            if self.gate.observe(&path, size, mtime, now) != Readiness::Ready {
                continue;
            }
            match self.classify(&path, size, mtime) {
                Ok(Verdict::Report(kind)) => {
                    let rel = self.rel(&path).unwrap_or_default();
                    let rel_path = rel.to_string_lossy().replace('\\', "/");
                    let top_level = (rel.components().count() > 1)
                        .then(|| rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()))
                        .flatten();
                    let file = ReadyFile { path: path.clone(), rel_path, top_level, size, mtime_ns: mtime, kind };
                    debug!(path = %path.display(), ?kind, "file ready");
                    if self.sink.send(file).is_err() {
                        return; // the engine is shutting down
                    }
                    self.reported.insert(path.clone(), (size, mtime));
                    self.set_status(|s| s.files_reported += 1);
                    done.insert(path);
                }
                Ok(Verdict::Unfilled) => {
                    debug!(path = %path.display(), "allocated but not filled yet; waiting");
                    self.gate.retry_at(&path, now + self.opts.tick);
                }
                Ok(Verdict::Skip) => {
                    // Not a photo: remember it so rescans skip it until it changes.
                    self.reported.insert(path.clone(), (size, mtime));
                    done.insert(path);
                }
                Err(e) => {
                    // Could not open it yet (permissions, still locked by the writer): retry later.
                    debug!(path = %path.display(), error = %e, "not openable yet");
                    self.gate.retry_at(&path, now + self.opts.tick);
                }
            }
        }
        for p in done {
            self.gate.forget(&p);
        }
    }

    /// Opens the file and sniffs it.
    fn classify(&self, path: &Path, size: u64, mtime_ns: i128) -> std::io::Result<Verdict> {
        let mut f = File::open(path)?;
        let mut head = [0u8; SNIFF_LEN];
        let n = read_full(&mut f, &mut head)?;
        let head = &head[..n];
        let format = filter::sniff(head);
        let mut tail = [0u8; TAIL_LEN];
        let tail = match format {
            // Compressed formats never end in a run of zeros; TIFF (raw strips) may.
            Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) if size > head.len() as u64 => {
                let len = TAIL_LEN.min((size - head.len() as u64) as usize);
                f.seek(SeekFrom::End(-(len as i64)))?;
                let read = read_full(&mut f, &mut tail[..len])?;
                &tail[..read]
            }
            _ => &[][..],
        };
        let unfilled = size > 0 && (head.iter().all(|&b| b == 0) || (!tail.is_empty() && tail.iter().all(|&b| b == 0)));
        if unfilled && filter::has_image_extension(path) {
            let age = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|now| now.as_nanos() as i128 - mtime_ns)
                .unwrap_or(i128::MAX);
            if age < self.opts.incomplete_grace.as_nanos() as i128 {
                return Ok(Verdict::Unfilled);
            }
        }
        Ok(match format {
            Some(format) if size > 0 => Verdict::Report(FileKind::Image(format)),
            _ if filter::has_image_extension(path) => Verdict::Report(FileKind::NotAnImage),
            _ => Verdict::Skip,
        })
    }
}

/// How long after a folder appears it is scanned once more (see `Loop::new_dirs`); notify adds
/// its watch right after sending the creation event, so this is ample.
const NEW_DIR_RESCAN: Duration = Duration::from_millis(500);

/// Least time between two passes over the due candidates.
const MIN_PASS_GAP: Duration = Duration::from_millis(20);

/// How many trailing bytes are checked for the zeros of a pre-allocated, unfilled file.
const TAIL_LEN: usize = 512;

/// What to do with a stable file.
enum Verdict {
    Report(FileKind),
    /// Not a photo and not named like one.
    Skip,
    /// Allocated at its final size but still zeros where the image should be: a writer that
    /// pre-sizes its file and fills it later. Looked at again a tick later.
    Unfilled,
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest file the watcher takes for a JPEG.
    const JPEG: [u8; 16] = [0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0xFF, 0xD9];

    /// A loop over `dir` with no stability wait, not running: a test drives it by hand.
    fn looped(dir: &Path) -> (Loop, mpsc::Receiver<ReadyFile>) {
        let (tx, rx) = mpsc::channel();
        let opts = WatchOptions { stability_window: Duration::ZERO, ..WatchOptions::new(dir) };
        (Loop::new(opts, tx, Arc::default()), rx)
    }

    /// Without root the kernel queue cannot be made to overflow; feed the loop the event notify
    /// sends when it does (`IN_Q_OVERFLOW` → a `Rescan` flag) for files that raised no events.
    #[test]
    fn an_overflow_event_rescans_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut looped, rx) = looped(tmp.path());
        for i in 0..20 {
            std::fs::write(tmp.path().join(format!("lost-{i}.jpg")), JPEG).unwrap();
        }
        // A burst of overflow notices costs one rescan.
        for _ in 0..3 {
            looped.on_event(Ok(notify::Event::new(notify::EventKind::Other).set_flag(notify::event::Flag::Rescan)));
        }
        looped.rescan_if_requested();
        looped.examine_candidates();
        assert_eq!(rx.try_iter().count(), 20);
        assert_eq!(looped.status.lock().unwrap().rescans, 1);
    }

    /// notify sends a new folder's creation event before it watches the folder; a file made in
    /// it in between raises no event. The folder is scanned again a little later.
    #[test]
    fn a_file_made_in_a_new_folder_before_it_is_watched_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut looped, rx) = looped(tmp.path());
        let dir = tmp.path().join("bench-a");
        std::fs::create_dir(&dir).unwrap();
        let created = notify::Event::new(notify::EventKind::Create(notify::event::CreateKind::Folder));
        looped.on_event(Ok(created.add_path(dir.clone())));
        // Written after our scan on the event, before notify's watch: no event for it.
        std::fs::write(dir.join("early.jpg"), JPEG).unwrap();
        looped.examine_candidates();
        assert_eq!(rx.try_iter().count(), 0, "not seen yet");
        looped.scan_new_dirs_again(Instant::now());
        looped.examine_candidates();
        assert_eq!(rx.try_iter().count(), 0, "the second scan waits for notify to have watched it");
        looped.scan_new_dirs_again(Instant::now() + NEW_DIR_RESCAN);
        looped.examine_candidates();
        let found: Vec<_> = rx.try_iter().map(|f| f.rel_path).collect();
        assert_eq!(found, ["bench-a/early.jpg"]);
        assert!(looped.new_dirs.is_empty(), "scanned again once");
    }
}

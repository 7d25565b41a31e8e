//! The watcher on real folders: existing files, new files, junk, subfolders, slow writers,
//! pre-sized files, renames, floods, queue overflows and network filesystems.

use std::{
    fs,
    io::Write,
    sync::mpsc,
    time::{Duration, Instant},
};

use demeter_watch::{FileKind, FolderWatcher, ImageFormat, ReadyFile, WatchMode, WatchOptions};

const JPEG_HEAD: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0];

fn opts(dir: &std::path::Path) -> WatchOptions {
    WatchOptions {
        stability_window: Duration::from_millis(300),
        tick: Duration::from_millis(50),
        ..WatchOptions::new(dir)
    }
}

fn collect(rx: &mpsc::Receiver<ReadyFile>, n: usize, within: Duration) -> Vec<ReadyFile> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(f) => out.push(f),
            Err(_) => break,
        }
    }
    out.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    out
}

#[test]
fn reports_existing_and_new_photos_once_and_skips_junk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("old.JPG"), JPEG_HEAD).unwrap();
    fs::write(dir.join(".hidden.jpg"), JPEG_HEAD).unwrap();
    fs::write(dir.join("notes.txt"), b"not a photo").unwrap();
    let (tx, rx) = mpsc::channel();
    let w = FolderWatcher::start(opts(dir), tx).unwrap();

    fs::create_dir(dir.join("bench-a")).unwrap();
    fs::write(dir.join("bench-a/new.png"), b"\x89PNG\r\n\x1a\n0000").unwrap();
    fs::write(dir.join("fake.jpg"), b"hello, this is text").unwrap();
    fs::write(dir.join("upload.jpg.part"), JPEG_HEAD).unwrap();
    fs::write(dir.join("Thumbs.db"), b"x").unwrap();

    let got = collect(&rx, 3, Duration::from_secs(10));
    let names: Vec<_> = got.iter().map(|f| (f.rel_path.as_str(), f.kind, f.top_level.as_deref())).collect();
    assert_eq!(
        names,
        vec![
            ("bench-a/new.png", FileKind::Image(ImageFormat::Png), Some("bench-a")),
            ("fake.jpg", FileKind::NotAnImage, None),
            ("old.JPG", FileKind::Image(ImageFormat::Jpeg), None),
        ]
    );
    // Nothing else arrives, and no file is reported twice.
    assert!(collect(&rx, 1, Duration::from_millis(800)).is_empty());
    assert!(w.status().files_reported >= 3);
}

#[test]
fn a_file_still_being_written_is_not_reported_early() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    // A window well above the write interval, so a loaded CI machine cannot fake a pause.
    let _w =
        FolderWatcher::start(WatchOptions { stability_window: Duration::from_millis(1500), ..opts(tmp.path()) }, tx)
            .unwrap();
    let path = tmp.path().join("slow.jpg");
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(JPEG_HEAD).unwrap();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(100));
        f.write_all(&[0x55u8; 1000]).unwrap();
        f.flush().unwrap();
        assert!(rx.try_recv().is_err(), "reported while the copy was still growing");
    }
    drop(f);
    let got = collect(&rx, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].size, JPEG_HEAD.len() as u64 + 8000, "reported with its final size");
}

#[test]
fn polling_mode_finds_photos_by_rescan() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    let w = FolderWatcher::start(
        WatchOptions { mode: WatchMode::Polling, rescan_interval: Duration::from_millis(200), ..opts(tmp.path()) },
        tx,
    )
    .unwrap();
    assert_eq!(w.status().mode, "polling");
    fs::write(tmp.path().join("a.jpeg"), JPEG_HEAD).unwrap();
    assert_eq!(collect(&rx, 1, Duration::from_secs(5)).len(), 1);
}

/// A JPEG-looking file of `len` bytes: a real header, filler, and the end-of-image marker.
fn jpeg_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut b = JPEG_HEAD.to_vec();
    b.extend(seed.to_le_bytes());
    b.resize(len - 2, 0x55);
    b.extend([0xFF, 0xD9]);
    b
}

#[test]
fn a_pre_sized_file_filled_later_is_reported_once_filled() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    let _w = FolderWatcher::start(opts(tmp.path()), tx).unwrap();
    let path = tmp.path().join("presized.jpg");
    let content = jpeg_bytes(64 * 1024, 1);
    // The way some copy tools and cameras write: allocate the final size, then fill it, here
    // with pauses far longer than the stability window (300 ms).
    let f = fs::File::create(&path).unwrap();
    f.set_len(content.len() as u64).unwrap();
    std::thread::sleep(Duration::from_millis(900));
    assert!(rx.try_recv().is_err(), "an all-zero file was reported");
    use std::os::unix::fs::FileExt;
    for (i, chunk) in content.chunks(16 * 1024).enumerate() {
        f.write_at(chunk, (i * 16 * 1024) as u64).unwrap();
        std::thread::sleep(Duration::from_millis(900));
        if i < 3 {
            assert!(rx.try_recv().is_err(), "reported after {} of 4 chunks", i + 1);
        }
    }
    drop(f);
    let mut got = collect(&rx, 1, Duration::from_secs(3));
    got.extend(collect(&rx, 1, Duration::from_millis(600)));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].kind, FileKind::Image(ImageFormat::Jpeg));
    assert_eq!(fs::read(&path).unwrap(), content);
}

#[test]
fn a_pre_sized_file_never_filled_is_reported_after_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    let _w = FolderWatcher::start(WatchOptions { incomplete_grace: Duration::from_secs(1), ..opts(tmp.path()) }, tx)
        .unwrap();
    // A copy that died after the header: reported in the end, so it becomes a failed job
    // ("truncated") instead of waiting forever.
    let f = fs::File::create(tmp.path().join("died.jpg")).unwrap();
    f.set_len(10_000).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_at(JPEG_HEAD, 0).unwrap();
    drop(f);
    let started = Instant::now();
    let got = collect(&rx, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert!(started.elapsed() >= Duration::from_millis(700), "reported before the grace period");
}

#[test]
fn temp_file_then_rename_gives_exactly_the_final_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    let _w = FolderWatcher::start(opts(tmp.path()), tx).unwrap();
    // rsync, browsers and many uploaders: write a temporary name, rename when complete.
    for (temp, fin) in [(".upload.jpg.XyZ12", "upload.jpg"), ("bench-2.jpg.part", "bench-2.jpg"), ("b3.tmp", "b3.jpg")]
    {
        fs::write(tmp.path().join(temp), jpeg_bytes(4096, fin.len() as u32)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(800));
    assert!(rx.try_recv().is_err(), "a temporary name was reported");
    for (temp, fin) in [(".upload.jpg.XyZ12", "upload.jpg"), ("bench-2.jpg.part", "bench-2.jpg"), ("b3.tmp", "b3.jpg")]
    {
        fs::rename(tmp.path().join(temp), tmp.path().join(fin)).unwrap();
    }
    let mut got = collect(&rx, 3, Duration::from_secs(3));
    got.extend(collect(&rx, 1, Duration::from_millis(600)));
    got.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    let names: Vec<_> = got.iter().map(|f| f.rel_path.as_str()).collect();
    assert_eq!(names, ["b3.jpg", "bench-2.jpg", "upload.jpg"]);
}

fn five_thousand_at_once(opts: WatchOptions, within: Duration) {
    let (tx, rx) = mpsc::channel();
    let dir = opts.dir.clone();
    let w = FolderWatcher::start(opts, tx).unwrap();
    const N: usize = 5000;
    for i in 0..N {
        fs::write(dir.join(format!("tray-{i:04}.jpg")), jpeg_bytes(600, i as u32)).unwrap();
    }
    let started = Instant::now();
    let mut got = collect(&rx, N, within);
    let took = started.elapsed();
    got.extend(collect(&rx, 1, Duration::from_secs(1)));
    eprintln!("{N} files reported in {took:?}");
    let names: std::collections::BTreeSet<_> = got.iter().map(|f| f.rel_path.clone()).collect();
    assert_eq!((got.len(), names.len()), (N, N), "every file exactly once; status {:?}", w.status());
}

#[test]
fn five_thousand_files_dropped_at_once_are_each_reported_once() {
    let tmp = tempfile::tempdir().unwrap();
    five_thousand_at_once(
        WatchOptions { rescan_interval: Duration::from_secs(3600), ..opts(tmp.path()) },
        Duration::from_secs(60),
    );
}

/// Lowers `fs.inotify.max_queued_events` while a watcher is created (the kernel reads it once,
/// when the inotify instance is made), then puts it back. `None` when not root.
struct TinyInotifyQueue(String);

impl TinyInotifyQueue {
    const PATH: &str = "/proc/sys/fs/inotify/max_queued_events";
    fn set(events: u32) -> Option<Self> {
        let old = fs::read_to_string(Self::PATH).ok()?;
        fs::write(Self::PATH, events.to_string()).ok()?;
        Some(Self(old))
    }
}

impl Drop for TinyInotifyQueue {
    fn drop(&mut self) {
        let _ = fs::write(Self::PATH, self.0.trim());
    }
}

#[test]
fn an_inotify_queue_overflow_is_recovered_by_a_rescan() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    let Some(tiny) = TinyInotifyQueue::set(1) else {
        eprintln!("not root: the overflow is simulated in the crate's unit tests instead");
        return;
    };
    // No periodic rescan within the test: only the overflow's own rescan can find the files.
    let w = FolderWatcher::start(WatchOptions { rescan_interval: Duration::from_secs(3600), ..opts(tmp.path()) }, tx)
        .unwrap();
    // The first scan follows the creation of the inotify instance.
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.status().rescans == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(tiny);
    for i in 0..500 {
        fs::write(tmp.path().join(format!("o-{i:03}.jpg")), jpeg_bytes(600, i)).unwrap();
    }
    let mut got = collect(&rx, 500, Duration::from_secs(20));
    got.extend(collect(&rx, 1, Duration::from_millis(500)));
    assert_eq!(got.len(), 500, "every file, with a kernel queue of one event: {:?}", w.status());
    // 500 files through a queue of one event overflow it: the rescan that found the files the
    // queue dropped is the overflow's own (the periodic one is an hour away).
    assert!(w.status().rescans >= 2, "the queue overflowed and was rescanned: {:?}", w.status());
}

#[test]
fn a_folder_on_a_network_filesystem_is_polled_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("share");
    fs::create_dir(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let table = tmp.path().join("mounts");
    fs::write(&table, format!("/dev/sda1 / ext4 rw 0 0\nnas:/photos {} nfs4 rw,vers=4.2 0 0\n", dir.display()))
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let w = FolderWatcher::start(
        WatchOptions { mount_table: table.clone(), rescan_interval: Duration::from_millis(300), ..opts(&dir) },
        tx,
    )
    .unwrap();
    let status = w.status();
    assert_eq!(status.mode, "polling");
    assert!(status.mode_reason.as_deref().unwrap_or("").contains("network filesystem (nfs4"), "{status:?}");
    fs::write(dir.join("from-another-machine.jpg"), jpeg_bytes(600, 7)).unwrap();
    assert_eq!(collect(&rx, 1, Duration::from_secs(5)).len(), 1);
    assert_eq!(w.status().events, 0, "no events were used");

    // `events` overrides the detection.
    let (tx, _rx) = mpsc::channel();
    let w =
        FolderWatcher::start(WatchOptions { mount_table: table, mode: WatchMode::Events, ..opts(&dir) }, tx).unwrap();
    assert_eq!((w.status().mode, w.status().mode_reason), ("events", None));
}

#[test]
fn with_events_off_every_photo_arrives_by_rescan() {
    let tmp = tempfile::tempdir().unwrap();
    five_thousand_at_once(
        WatchOptions { mode: WatchMode::Polling, rescan_interval: Duration::from_millis(500), ..opts(tmp.path()) },
        Duration::from_secs(60),
    );
}

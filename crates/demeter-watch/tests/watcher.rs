//! The watcher on real folders: existing files, new files, junk, subfolders, slow writers.

use std::{
    fs,
    io::Write,
    sync::mpsc,
    time::{Duration, Instant},
};

use demeter_watch::{FileKind, FolderWatcher, ImageFormat, ReadyFile, WatchOptions};

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
        f.write_all(&[0u8; 1000]).unwrap();
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
        WatchOptions { force_polling: true, rescan_interval: Duration::from_millis(200), ..opts(tmp.path()) },
        tx,
    )
    .unwrap();
    assert_eq!(w.status().mode, "polling");
    fs::write(tmp.path().join("a.jpeg"), JPEG_HEAD).unwrap();
    assert_eq!(collect(&rx, 1, Duration::from_secs(5)).len(), 1);
}

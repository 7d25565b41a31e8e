//! Overlays: a photo with every plant boxed and numbered, for the detail view.
//!
//! They are drawn when someone first opens a photo, not by the workers. Most photos are never
//! opened, and drawing, encoding and creating one more file per photo took a worker about
//! 1.2 ms of its ~30 ms (`demeter-bench pipeline`; file creation alone is 0.5–1 ms on the
//! journal-less ext4 of our test machines) and 47 KB of disk. Drawn on demand, an overlay is
//! also sharper: from the photo itself at up to [`OVERLAY_SIDE`] pixels, not from the model's
//! 512-pixel input.
//!
//! A drawn overlay is kept as `overlays/<job>/<result>.jpg`, named after the result whose boxes
//! it shows, so a photo reprocessed with another model never serves the old boxes; the TTL
//! sweep removes the folder with the job. When the photo is gone or has changed since it was
//! processed, the boxes are drawn on the stored thumbnail instead (not kept: it is cheap, and
//! the photo may come back).

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use demeter_domain::{Job, JobId, JobResult};
use demeter_infer::{
    overlay::{self, OVERLAY_SIDE},
    thumbnail, DecodeLimits,
};
use demeter_store::{Store, StoreError};
use image::RgbImage;
use tracing::{debug, warn};
use uuid::Uuid;

/// Why an overlay could not be produced (a job without a result is not an error: `None`).
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode the overlay: {0}")]
    Encode(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The overlay folder and the lock that serialises drawing with the sweep's removals.
pub(crate) struct Overlays {
    dir: PathBuf,
    thumbnails: PathBuf,
    limits: DecodeLimits,
    /// Held while an overlay is drawn and stored, and while the sweep removes overlays: one
    /// overlay is drawn at a time (a burst of opened photos cannot take the workers' cores),
    /// and a job swept while its overlay was being drawn cannot leave that overlay behind.
    lock: Mutex<()>,
}

impl Overlays {
    pub(crate) fn new(dir: PathBuf, thumbnails: PathBuf, limits: DecodeLimits) -> Self {
        Self { dir, thumbnails, limits, lock: Mutex::new(()) }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes swept jobs' overlays (and the `<job>.jpg` that builds before on-demand drawing
    /// wrote). Called after their records are gone, so an overlay being drawn meanwhile is
    /// removed here once stored, and none can be drawn afterwards.
    pub(crate) fn remove(&self, jobs: &[JobId]) {
        let _drawing = self.lock();
        for job in jobs {
            let _ = std::fs::remove_dir_all(self.dir.join(job.to_string()));
            let _ = std::fs::remove_file(self.dir.join(format!("{job}.jpg")));
        }
    }

    /// The overlay of the job's current result as a JPEG, with that result's id: read back if
    /// drawn before, else drawn now. `None` when the job is unknown or has no result, or when
    /// neither the photo nor its thumbnail can be read.
    pub(crate) fn get(&self, store: &Store, id: JobId) -> Result<Option<(Uuid, Vec<u8>)>, OverlayError> {
        let _drawing = self.lock();
        let Some(job) = store.read_durable(|s| s.job(id))? else { return Ok(None) };
        let Some(result) = job.result() else { return Ok(None) };
        let folder = self.dir.join(id.to_string());
        let kept = folder.join(format!("{}.jpg", result.session_id));
        if let Ok(bytes) = std::fs::read(&kept) {
            return Ok(Some((result.session_id, bytes)));
        }
        let (base, from_photo) = match self.photo(&job) {
            Some(rgb) => (rgb, true),
            None => match image::open(self.thumbnails.join(format!("{id}.jpg"))) {
                Ok(thumb) => (thumb.into_rgb8(), false),
                Err(e) => {
                    debug!(job = %id, error = %e, "neither the photo nor its thumbnail can be read: no overlay");
                    return Ok(None);
                }
            },
        };
        let jpeg = draw(base, result)?;
        if from_photo {
            keep(&folder, &kept, &jpeg);
        }
        Ok(Some((result.session_id, jpeg)))
    }

    /// The photo, upright and at most [`OVERLAY_SIDE`] on its long side, if it is still the
    /// file that was processed (same size and modification time) and decodes.
    fn photo(&self, job: &Job) -> Option<RgbImage> {
        let meta = std::fs::metadata(&job.path).ok()?;
        let same = meta.len() == job.size && meta.modified().ok().map(demeter_watch::mtime_ns) == Some(job.mtime_ns);
        if !same {
            debug!(job = %job.id, path = %job.path.display(), "the photo changed since it was processed; overlay drawn on the thumbnail");
            return None;
        }
        let decoded = std::fs::read(&job.path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| demeter_infer::decode_for(&bytes, self.limits, OVERLAY_SIDE).map_err(|e| e.to_string()));
        match decoded {
            Ok(d) => {
                let (w, h) = d.upright_dimensions();
                let (w, h) = demeter_infer::resize::fit_size(w, h, OVERLAY_SIDE.min(w.max(h)));
                Some(d.into_rgb_sized(w, h))
            }
            Err(e) => {
                debug!(job = %job.id, path = %job.path.display(), error = %e, "cannot read the photo; overlay drawn on the thumbnail");
                None
            }
        }
    }
}

/// Boxes and numbers the result's plants on `base` (any size: boxes are scaled from the
/// photo's coordinates) and encodes it.
fn draw(base: RgbImage, result: &JobResult) -> Result<Vec<u8>, OverlayError> {
    thumbnail::jpeg(&overlay::draw_result(base, result)).map_err(|e| OverlayError::Encode(Box::new(e)))
}

/// Stores a drawn overlay as the job's only one (an earlier result's goes). A failure only
/// means it is drawn again next time.
fn keep(folder: &Path, path: &Path, jpeg: &[u8]) {
    let stored = std::fs::create_dir_all(folder).and_then(|()| {
        for old in std::fs::read_dir(folder)? {
            std::fs::remove_file(old?.path())?;
        }
        crate::pipeline::write_atomically(path, jpeg)
    });
    if let Err(e) = stored {
        warn!(path = %path.display(), error = %e, "cannot keep the drawn overlay; it is drawn again when next asked for");
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use demeter_domain::{Job, JobResult, Plant, SessionId};

    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
        store: Store,
        overlays: Overlays,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), 8 << 20).unwrap();
            for sub in ["photos", "thumbnails", "overlays"] {
                std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            }
            let overlays = Overlays::new(
                dir.path().join("overlays"),
                dir.path().join("thumbnails"),
                DecodeLimits { max_pixels: 100_000_000 },
            );
            Self { dir, store, overlays }
        }

        /// A 2000 × 1500 photo processed into a result with one plant, and its thumbnail.
        fn completed_job(&self) -> JobId {
            let photo = self.dir.path().join("photos/tray.jpg");
            let rgb = RgbImage::from_pixel(2000, 1500, image::Rgb([30, 120, 40]));
            std::fs::write(&photo, thumbnail::jpeg(&rgb).unwrap()).unwrap();
            let meta = std::fs::metadata(&photo).unwrap();
            let now = Utc::now();
            let job = Job::new(
                JobId::new_v7(),
                SessionId::new_v7(),
                "0123456789abcdef".into(),
                photo,
                "tray.jpg".into(),
                meta.len(),
                demeter_watch::mtime_ns(meta.modified().unwrap()),
                now,
            );
            self.store.enqueue(&job, "hash", now + chrono::Duration::hours(1)).unwrap();
            assert_eq!(self.store.claim_next(0, now).unwrap().unwrap().id, job.id);
            self.store.update(job.id, |j| j.complete(a_result(), now)).unwrap();
            let thumb = thumbnail::thumbnail_jpeg(&rgb, rgb.dimensions()).unwrap();
            std::fs::write(self.dir.path().join(format!("thumbnails/{}.jpg", job.id)), thumb).unwrap();
            job.id
        }

        fn kept(&self, job: JobId) -> Vec<String> {
            match std::fs::read_dir(self.dir.path().join(format!("overlays/{job}"))) {
                Ok(dir) => dir.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
                Err(_) => vec![],
            }
        }
    }

    fn a_result() -> JobResult {
        JobResult {
            session_id: Uuid::now_v7(),
            total_detected: 1,
            plants: vec![Plant {
                bbox: [400, 300, 800, 600],
                centroid: [800.0, 600.0],
                area_px: 100_000,
                ..Default::default()
            }],
            width: 2000,
            height: 1500,
            ..Default::default()
        }
    }

    fn size(jpeg: &[u8]) -> (u32, u32) {
        image::load_from_memory(jpeg).unwrap().to_rgb8().dimensions()
    }

    #[test]
    fn drawn_from_the_photo_once_kept_per_result_and_removed_with_the_job() {
        let f = Fixture::new();
        let id = f.completed_job();
        let (result, first) = f.overlays.get(&f.store, id).unwrap().unwrap();
        assert_eq!(size(&first), (OVERLAY_SIDE, OVERLAY_SIDE * 3 / 4), "from the photo, not the thumbnail");
        let drawn = image::load_from_memory(&first).unwrap().to_rgb8();
        let magenta = |p: &image::Rgb<u8>| p.0[0] > 200 && p.0[1] < 80 && p.0[2] > 150;
        assert!(magenta(drawn.get_pixel(206, 300)), "the box's left edge at x = 400 × 1024 / 2000 = 205, 4 px wide");
        assert!(!magenta(drawn.get_pixel(210, 300)), "and nothing beyond");
        assert_eq!(f.kept(id), [format!("{result}.jpg")]);
        // Read back, not drawn again: the same bytes even with the photo gone.
        std::fs::remove_file(f.dir.path().join("photos/tray.jpg")).unwrap();
        assert_eq!(f.overlays.get(&f.store, id).unwrap().unwrap(), (result, first));

        // A new result (a reprocess) gets its own overlay; the old one goes. The photo is gone,
        // so it is drawn on the thumbnail and not kept.
        f.store.update(id, |j| j.reprocess(None, Utc::now())).unwrap();
        assert!(f.overlays.get(&f.store, id).unwrap().is_none(), "no result while it runs again");
        assert!(f.store.claim_next(0, Utc::now()).unwrap().is_some());
        f.store.update(id, |j| j.complete(a_result(), Utc::now())).unwrap();
        let (second, jpeg) = f.overlays.get(&f.store, id).unwrap().unwrap();
        assert_ne!(second, result);
        assert_eq!(size(&jpeg), (256, 192), "drawn on the thumbnail");
        assert_eq!(f.kept(id), [format!("{result}.jpg")], "a thumbnail overlay is not kept");

        f.overlays.remove(&[id]);
        assert!(!f.dir.path().join(format!("overlays/{id}")).exists());
    }

    #[test]
    fn a_changed_photo_is_not_drawn_on_and_without_a_thumbnail_there_is_nothing() {
        let f = Fixture::new();
        let id = f.completed_job();
        // Saved again with other content (a new size): the boxes would not fit it.
        let other = RgbImage::from_pixel(640, 480, image::Rgb([200, 200, 200]));
        std::fs::write(f.dir.path().join("photos/tray.jpg"), thumbnail::jpeg(&other).unwrap()).unwrap();
        let (_, jpeg) = f.overlays.get(&f.store, id).unwrap().unwrap();
        assert_eq!(size(&jpeg), (256, 192), "drawn on the thumbnail");
        std::fs::remove_file(f.dir.path().join(format!("thumbnails/{id}.jpg"))).unwrap();
        assert!(f.overlays.get(&f.store, id).unwrap().is_none());
        assert!(f.overlays.get(&f.store, JobId::new_v7()).unwrap().is_none(), "unknown job");
        assert!(f.kept(id).is_empty());
    }
}

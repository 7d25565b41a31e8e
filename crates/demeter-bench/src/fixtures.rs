//! Benchmark inputs: the real photos made distinct, a 12-megapixel photo, and stores filled
//! with thousands of jobs without going through the watcher.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use demeter_domain::{Job, JobId, JobResult, SessionId, SessionSource, UploadSession};
use demeter_store::Store;

/// `../shared/data/real` beside the repository, or `DEMETER_REAL_PHOTOS`.
pub fn real_photos_dir() -> PathBuf {
    std::env::var_os("DEMETER_REAL_PHOTOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/real"))
}

/// The photos listed in the real set's manifest.
pub fn real_photos() -> Result<Vec<PathBuf>> {
    let dir = real_photos_dir();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json")).with_context(|| format!("{}/manifest.json", dir.display()))?,
    )?;
    Ok(manifest["images"]
        .as_array()
        .context("images[] in the manifest")?
        .iter()
        .filter_map(|i| i["file"].as_str())
        .map(|f| dir.join(f))
        .collect())
}

/// Writes `rounds` copies of every real photo into `dir`, each with different bytes (a
/// counter appended after the image data), so content dedup treats them as distinct photos.
/// `salt` keeps two sets apart. Returns the paths, in a stable order.
pub fn distinct_copies(dir: &Path, rounds: usize, salt: &str) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for round in 0..rounds {
        for p in real_photos()? {
            let mut bytes = std::fs::read(&p)?;
            bytes.extend_from_slice(format!("demeter-bench {salt} {round}").as_bytes());
            let name = format!("r{round:02}-{}", p.file_name().unwrap().to_string_lossy());
            let dest = dir.join(name);
            std::fs::write(&dest, bytes)?;
            out.push(dest);
        }
    }
    Ok(out)
}

/// `n` copies of `photo` in `dir`, each with different trailing bytes (distinct content), with
/// the same extension.
pub fn copies_of(photo: &Path, dir: &Path, n: usize, salt: &str) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let bytes = std::fs::read(photo)?;
    let stem = photo.file_stem().and_then(|s| s.to_str()).unwrap_or("photo");
    let ext = photo.extension().and_then(|s| s.to_str()).unwrap_or("jpg");
    (0..n)
        .map(|i| {
            let mut b = bytes.clone();
            b.extend_from_slice(format!("demeter-bench {salt} {i}").as_bytes());
            let dest = dir.join(format!("{stem}-{salt}-{i:03}.{ext}"));
            std::fs::write(&dest, b)?;
            Ok(dest)
        })
        .collect()
}

/// A 12-megapixel (4000 × 3000) photo made from the largest real photo, written to `path`:
/// a JPEG (quality 90), or a PNG when `path` ends in `.png`.
pub fn twelve_megapixel(path: &Path) -> Result<()> {
    let largest = real_photos()?
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .context("no real photos")?;
    let img = image::open(&largest)?.resize_exact(4000, 3000, image::imageops::FilterType::Triangle).to_rgb8();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    if path.extension().is_some_and(|e| e == "png") {
        img.write_to(&mut out, image::ImageFormat::Png)?;
    } else {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img)?;
    }
    Ok(())
}

/// A session with `n` jobs, stored directly. `completed`: each with a result of a few plants
/// (what a poll of a finished session returns); otherwise pending. `photo`: the file every job
/// points at (the store does not care that they share it).
pub fn fill_session(
    store: &Store,
    created: DateTime<Utc>,
    n: usize,
    completed: bool,
    photo: &Path,
    tag: &str,
) -> Result<SessionId> {
    let session = UploadSession {
        id: SessionId::new_v7(),
        created_at: created,
        expires_at: Store::expires(created, 24.0),
        source: SessionSource::Folder { subfolder: Some(tag.to_owned()) },
    };
    store.insert_session(&session)?;
    for i in 0..n {
        let name = format!("{tag}/photo-{i:06}.jpg");
        let job =
            Job::new(JobId::new_v7(), session.id, format!("{tag}{i}"), photo.to_owned(), name, 1, i as i128, created);
        store.enqueue(&job, &format!("{tag}-{i}"), Store::expires(created, 48.0))?;
        if completed {
            store.update(job.id, |j| j.claim(0, created))?;
            let result = JobResult {
                session_id: uuid::Uuid::now_v7(),
                total_detected: 7,
                plant_area_fraction: 0.21,
                width: 2592,
                height: 1944,
                ..Default::default()
            };
            store.update(job.id, |j| j.complete(result, created))?;
        }
    }
    Ok(session.id)
}

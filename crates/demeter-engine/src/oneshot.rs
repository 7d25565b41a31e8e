//! `demeter process`: the same pipeline over given photos and folders, without the daemon,
//! the store or the watcher.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::Instant,
};

use demeter_domain::photo as filter;
use demeter_domain::{config::Config, JobError, JobResult};
use demeter_infer::DecodeLimits;

use crate::{
    pipeline::{self, Interrupt, PhotoInput},
    EngineError,
};

/// One photo given to [`process`], with the path used for location matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Photo {
    pub path: PathBuf,
    /// Relative to the folder argument it was found in (`/`-separated), or the file name.
    pub rel_path: String,
}

/// The outcome for one photo.
#[derive(Debug, Clone)]
pub struct PhotoReport {
    pub photo: Photo,
    pub outcome: Result<JobResult, JobError>,
    pub elapsed_ms: u64,
}

/// Expands folders (recursively, skipping junk names and non-images) and keeps files as given.
pub fn collect_photos(paths: &[PathBuf]) -> std::io::Result<Vec<Photo>> {
    let mut out = Vec::new();
    for root in paths {
        let meta =
            std::fs::metadata(root).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", root.display())))?;
        if meta.is_file() {
            let name = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            out.push(Photo { path: root.clone(), rel_path: name });
            continue;
        }
        let mut found = Vec::new();
        for entry in walkdir::WalkDir::new(root).sort_by_file_name().into_iter().filter_map(Result::ok) {
            let Ok(rel) = entry.path().strip_prefix(root) else {
                continue;
            };
            if !entry.file_type().is_file() || filter::is_ignored_path(rel) {
                continue;
            }
            if filter::has_image_extension(entry.path()) || looks_like_image(entry.path()) {
                found.push(Photo { path: entry.path().to_owned(), rel_path: rel.to_string_lossy().replace('\\', "/") });
            }
        }
        out.extend(found);
    }
    Ok(out)
}

fn looks_like_image(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; filter::SNIFF_LEN];
    std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map(|n| filter::sniff(&head[..n]).is_some())
        .unwrap_or(false)
}

/// Processes `photos` with `config.workers.count` workers (`gpu_count` when batched on a GPU); `on_done` sees each report as it
/// finishes (for a progress bar). Reports come back in input order.
pub fn process(
    config: &Config,
    photos: Vec<Photo>,
    on_done: impl Fn(&PhotoReport) + Sync,
) -> Result<Vec<PhotoReport>, EngineError> {
    // The factory holds the batchers: kept until every photo is done.
    let (mut analyzers, _factory) = crate::worker::analyzers(config, photos.len().max(1))?;
    let limits = DecodeLimits { max_pixels: config.workers.max_pixels };
    let locator = &demeter_domain::location::Locator::new(&config.locations)?;
    let next = AtomicUsize::new(0);
    let reports: Mutex<Vec<Option<PhotoReport>>> = Mutex::new(vec![None; photos.len()]);
    std::thread::scope(|s| {
        for set in analyzers.iter_mut() {
            let analyzer = set.default_model();
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(photo) = photos.get(i) else { break };
                let t = Instant::now();
                let input = PhotoInput {
                    path: &photo.path,
                    rel_path: &photo.rel_path,
                    limits,
                    thumbnail: None,
                    locator,
                    faults: config.runtime.faults.as_ref(),
                };
                let outcome = pipeline::run_guarded(analyzer, &input, |_| true).map_err(|e| match e {
                    Interrupt::Failed(e) | Interrupt::Device(e, _) => e,
                    Interrupt::Stopped => JobError::transient("stopped"),
                });
                let report = PhotoReport { photo: photo.clone(), outcome, elapsed_ms: t.elapsed().as_millis() as u64 };
                on_done(&report);
                reports.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(report);
            });
        }
    });
    Ok(reports.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().flatten().collect())
}

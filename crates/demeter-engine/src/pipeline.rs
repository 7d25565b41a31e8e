//! One photo through every stage: read → decode → locate → segment → detect → save.
//! Shared by the daemon's workers and `demeter process`, so both behave the same.

use std::{collections::BTreeMap, path::Path, time::Instant};

use demeter_domain::{location::Locator, JobError, JobResult, Stage};
use demeter_infer::{thumbnail, DecodeLimits, Segment};

/// Why a photo did not complete.
#[derive(Debug)]
pub enum Interrupt {
    /// The photo failed; the job fails with this reason.
    Failed(JobError),
    /// Inference itself failed, not because of the photo (the device or runtime): the job goes
    /// back to the queue and the circuit breaker counts it, once per batch when the photo ran in
    /// one (the batch's number).
    Device(JobError, Option<u64>),
    /// The caller asked to stop between stages (shutdown); the job goes back to the queue.
    Stopped,
}

impl From<JobError> for Interrupt {
    fn from(e: JobError) -> Self {
        Interrupt::Failed(e)
    }
}

/// What the pipeline needs besides the photo.
pub struct PhotoInput<'a> {
    pub path: &'a Path,
    /// Path relative to the watched folder (`/`-separated), for location matching.
    pub rel_path: &'a str,
    pub limits: DecodeLimits,
    /// Where to write the thumbnail, if anywhere.
    pub thumbnail: Option<&'a Path>,
    /// Storage-location rules.
    pub locator: &'a Locator,
    /// The test double's faults, when configured (`[runtime.faults]`).
    pub faults: Option<&'a demeter_domain::config::Faults>,
}

/// Runs every stage. `on_stage` is called as each stage starts (it stores and announces the
/// milestone) and may stop the run by returning `false`.
pub fn run(
    analyzer: &mut impl Segment,
    input: &PhotoInput<'_>,
    mut on_stage: impl FnMut(Stage) -> bool,
) -> Result<JobResult, Interrupt> {
    let mut timings = BTreeMap::new();
    let mut stage = |s: Stage, timings: &mut BTreeMap<Stage, u64>, started: &mut Instant, prev: Option<Stage>| {
        if let Some(prev) = prev {
            timings.insert(prev, started.elapsed().as_millis() as u64);
        }
        *started = Instant::now();
        if on_stage(s) {
            Ok(())
        } else {
            Err(Interrupt::Stopped)
        }
    };
    let mut t = Instant::now();

    stage(Stage::Read, &mut timings, &mut t, None)?;
    let bytes = std::fs::read(input.path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => JobError::permanent("the photo was deleted before it could be read"),
        _ => JobError::transient(format!("cannot read the photo: {e}")),
    })?;

    stage(Stage::Decode, &mut timings, &mut t, Some(Stage::Read))?;
    // Decoded no larger than needed: the model's input, or the QR search's 2048 px when labels
    // are read (JPEGs shrink inside the decoder, several times faster than in full).
    let wants_qr = input.locator.wants_qr();
    let need = if wants_qr { demeter_infer::qr::SEARCH_SIDE } else { analyzer.decode_long_side() };
    let decoded =
        demeter_infer::decode_for(&bytes, input.limits, need).map_err(|e| JobError::permanent(e.to_string()))?;
    let taken_at = demeter_infer::taken::taken_at(&bytes);
    drop(bytes);
    let (width, height) = (decoded.width, decoded.height);
    // Only a grey, smaller copy is kept for the QR search; the decoded photo itself becomes the
    // model's input.
    let qr_image = wants_qr.then(|| demeter_infer::qr::search_image_of(&decoded));
    let prepared = analyzer.prepare_decoded(decoded);

    // The location first: a tray configured for it decides the cells the plants are counted in.
    stage(Stage::Locate, &mut timings, &mut t, Some(Stage::Decode))?;
    let qr_texts = qr_image.as_ref().map(demeter_infer::qr::read).unwrap_or_default();
    let location = input.locator.locate(&qr_texts, input.rel_path);

    stage(Stage::Segment, &mut timings, &mut t, Some(Stage::Locate))?;
    crate::faults::before_segment(input.faults, input.rel_path)?;
    let segmentation = analyzer.segment(&prepared).map_err(device_or_photo)?;

    stage(Stage::Detect, &mut timings, &mut t, Some(Stage::Segment))?;
    let detection = analyzer.detect(&segmentation, &prepared, location.as_ref().and_then(|l| l.tray));

    stage(Stage::Save, &mut timings, &mut t, Some(Stage::Detect))?;
    if let Some(path) = input.thumbnail {
        let jpeg = thumbnail::thumbnail_jpeg(&prepared.rgb, (width, height))
            .map_err(|e| JobError::transient(format!("cannot make the thumbnail: {e}")))?;
        write_atomically(path, &jpeg).map_err(|e| JobError::transient(format!("cannot save the thumbnail: {e}")))?;
    }
    // The overlay is drawn when someone opens the photo (`overlays`), not here.
    timings.insert(Stage::Save, t.elapsed().as_millis() as u64);

    Ok(JobResult {
        session_id: uuid::Uuid::now_v7(),
        total_detected: detection.plants.len() as u32,
        plants: detection.plants,
        objects: detection.objects,
        class_counts: detection.class_counts,
        plant_area_fraction: detection.plant_area_fraction,
        storage_location_id: location.as_ref().map(|l| l.id.clone()),
        storage_location_name: location.as_ref().and_then(|l| l.name.clone()),
        location_rule: location.map(|l| l.rule),
        model: analyzer.model().reference(),
        execution_provider: analyzer.provider().as_str().to_owned(),
        device: analyzer.provider().device().to_owned(),
        timings_ms: timings,
        taken_at,
        width,
        height,
        grid: detection.grid,
        trust: detection.trust,
    })
}

/// Whose fault a failed segmentation is: a shape the model cannot take is the photo's, and an
/// output that breaks the model's contract is the model's (either way the photo fails once);
/// anything else is the device's, counted once per batch by the circuit breaker.
pub(crate) fn device_or_photo(e: demeter_infer::InferError) -> Interrupt {
    match e {
        demeter_infer::InferError::InputShape { .. } | demeter_infer::InferError::Contract(_) => {
            Interrupt::Failed(JobError::permanent(e.to_string()))
        }
        demeter_infer::InferError::Batch { batch, .. } => {
            Interrupt::Device(JobError::transient(e.to_string()), Some(batch))
        }
        e => Interrupt::Device(JobError::transient(e.to_string()), None),
    }
}

/// [`run`], with a panic anywhere inside (a decoder or runtime bug) turned into this photo's
/// failure, so the worker or `demeter process` carries on with the next one.
pub fn run_guarded(
    analyzer: &mut impl Segment,
    input: &PhotoInput<'_>,
    on_stage: impl FnMut(Stage) -> bool,
) -> Result<JobResult, Interrupt> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(analyzer, input, on_stage))).unwrap_or_else(|panic| {
        let what = panic_message(panic.as_ref());
        tracing::error!(photo = %input.path.display(), panic = %what, "panicked while processing this photo");
        Err(Interrupt::Failed(JobError::transient(format!("internal error while processing: {what}"))))
    })
}

/// The text a panic was raised with (`panic!("…")` carries a `&str` or a `String`).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Writes via a temporary file and a rename, so readers never see half a file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_device_errors_reach_the_breaker() {
        use demeter_infer::InferError;
        let photo =
            device_or_photo(InferError::InputShape { model: vec![1, 3, 224, 224], photo: vec![1, 3, 384, 512] });
        let model = device_or_photo(InferError::Contract("output \"mask\" has shape [1, 2, 384, 512]".into()));
        for i in [photo, model] {
            assert!(matches!(&i, Interrupt::Failed(e) if e.kind == demeter_domain::ErrorKind::Permanent), "{i:?}");
        }
        let device = device_or_photo(InferError::Run("CUDA failure 700".into()));
        assert!(matches!(device, Interrupt::Device(_, None)));
        let batch = device_or_photo(InferError::Batch { batch: 7, size: 4, reason: "out of memory".into() });
        assert!(matches!(batch, Interrupt::Device(_, Some(7))));
    }

    #[test]
    fn panics_become_readable_reasons() {
        let caught = std::panic::catch_unwind(|| panic!("bad huffman table at {}", 7)).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "bad huffman table at 7");
        let caught = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "plain");
        let caught = std::panic::catch_unwind(|| std::panic::panic_any(42)).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "unknown panic");
    }
}

//! `demeter eval DIR`: counting accuracy on photos with ground truth, through exactly the
//! pipeline `process` and the daemon use. Resized copies (`--sizes 400x300`) are made by
//! decoding the photo (EXIF orientation applied), resizing it to fit the box and storing it
//! losslessly, so only the resolution differs. Camera variants (`--variants all`, see
//! [`variants`]) turn, rescale, relight, blur, compress and widen each photo; the report gives
//! every photo's count and, per variant kind, the mean absolute error and the worst error.

pub mod variants;

use std::{io::Write, path::PathBuf, process::ExitCode, str::FromStr};

use anyhow::Context;
use demeter_engine::oneshot::{self, Photo};
use serde::Deserialize;
use serde_json::json;

use crate::{
    cli::{EvalArgs, Failure},
    settings,
};

/// A size to judge photos at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// As stored.
    Full,
    /// Resized to fit `width × height`, aspect ratio kept.
    Fit(u32, u32),
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("full") {
            return Ok(Size::Full);
        }
        let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("{s:?}: expected `full` or WIDTHxHEIGHT"))?;
        match (w.parse::<u32>(), h.parse::<u32>()) {
            (Ok(w), Ok(h)) if (16..=20_000).contains(&w) && (16..=20_000).contains(&h) => Ok(Size::Fit(w, h)),
            _ => Err(format!("{s:?}: width and height must be whole numbers from 16 to 20000")),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Manifest {
    images: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    file: String,
    #[serde(default)]
    ground_truth: Option<Truth>,
}

#[derive(Debug, Deserialize)]
struct Truth {
    #[serde(default)]
    plant_count: Option<u32>,
}

/// One judged photo.
struct Row {
    file: String,
    /// `full`, a size such as `400x300`, or a variant such as `rotate90`.
    size: String,
    /// The variant's kind (`scale`, `jpeg`, …); `original` for the photo as stored or resized.
    kind: &'static str,
    truth: u32,
    predicted: Result<u32, String>,
    /// `4x5 19/20` (rows × cols, occupied / cells), or `-` without a grid.
    grid: String,
    /// The trust flag's reasons, comma-separated; empty when trusted.
    flags: String,
    elapsed_ms: u64,
}

impl Row {
    fn error(&self) -> Option<u32> {
        self.predicted.as_ref().ok().map(|p| p.abs_diff(self.truth))
    }
}

pub fn eval(args: EvalArgs) -> Result<ExitCode, Failure> {
    let config = settings::load(&args.common, |_| {}).map_err(Failure::config)?;
    let manifest_path = args.manifest.clone().unwrap_or_else(|| args.dir.join("manifest.json"));
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read the manifest {}", manifest_path.display()))
        .map_err(Failure::config)?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a manifest with images[].file", manifest_path.display()))
        .map_err(Failure::config)?;
    let judged: Vec<(String, u32)> = manifest
        .images
        .into_iter()
        .filter_map(|e| e.ground_truth.and_then(|t| t.plant_count).map(|n| (e.file, n)))
        .filter(|(_, n)| *n >= args.min_count)
        .collect();
    if judged.is_empty() {
        return Err(Failure::config(anyhow::anyhow!("{} has no image with a plant_count", manifest_path.display())));
    }

    let limits = demeter_infer::DecodeLimits { max_pixels: config.workers.max_pixels };
    let chosen = match &args.variants {
        Some(list) => variants::parse_list(list).map_err(|e| Failure::config(anyhow::anyhow!("--variants: {e}")))?,
        None => Vec::new(),
    };
    let scratch = tempfile::tempdir().context("cannot make a scratch folder").map_err(Failure::runtime)?;
    let variant_dir = match &args.keep_variants {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot make {}", dir.display()))
                .map_err(Failure::config)?;
            dir.clone()
        }
        None => scratch.path().to_path_buf(),
    };
    let mut photos = Vec::new();
    let mut meta: Vec<(String, String, &'static str, u32)> = Vec::new();
    for size in &args.sizes {
        for (file, truth) in &judged {
            let original = args.dir.join(file);
            let (path, label) = match size {
                Size::Full => (original.clone(), "full".to_owned()),
                Size::Fit(w, h) => {
                    let out = scratch.path().join(format!("{w}x{h}-{file}.png"));
                    resized(&original, *w, *h, &out, limits).map_err(Failure::config)?;
                    (out, format!("{w}x{h}"))
                }
            };
            photos.push(Photo { path, rel_path: file.clone() });
            meta.push((file.clone(), label, "original", *truth));
        }
    }
    for (file, truth) in judged.iter().filter(|_| !chosen.is_empty()) {
        let original = args.dir.join(file);
        let bytes = std::fs::read(&original)
            .with_context(|| format!("cannot read {}", original.display()))
            .map_err(Failure::config)?;
        let upright = demeter_infer::decode(&bytes, limits)
            .with_context(|| format!("cannot decode {}", original.display()))
            .map_err(Failure::config)?
            .into_rgb8();
        for v in &chosen {
            let Some(made) = v.apply(&upright, limits.max_pixels) else { continue };
            let (data, ext) = made.map_err(|e| Failure::runtime(anyhow::anyhow!("{file} as {v}: {e}")))?;
            let stem = std::path::Path::new(file).file_stem().unwrap_or_default().to_string_lossy();
            let out = variant_dir.join(format!("{stem}.{v}.{ext}"));
            std::fs::write(&out, data)
                .with_context(|| format!("cannot write {}", out.display()))
                .map_err(Failure::runtime)?;
            photos.push(Photo { path: out, rel_path: file.clone() });
            meta.push((file.clone(), v.to_string(), v.kind(), *truth));
        }
    }
    let reports = oneshot::process(&config, photos, |_| {}).map_err(Failure::config)?;
    let rows: Vec<Row> = reports
        .iter()
        .zip(meta)
        .map(|(r, (file, size, kind, truth))| Row {
            file,
            size,
            kind,
            truth,
            predicted: r.outcome.as_ref().map(|res| res.total_detected).map_err(|e| e.message.clone()),
            grid: r
                .outcome
                .as_ref()
                .ok()
                .and_then(|res| res.grid.as_ref())
                .map(|g| format!("{}x{} {}/{}", g.rows, g.cols, g.occupied(), g.cells()))
                .unwrap_or_else(|| "-".to_owned()),
            flags: r
                .outcome
                .as_ref()
                .map(|res| res.trust.reasons.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            elapsed_ms: r.elapsed_ms,
        })
        .collect();

    print_table(&rows);
    let kinds = per_kind(&rows);
    if !chosen.is_empty() {
        print_kinds(&kinds);
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "manifest": manifest_path,
            "photos": rows.iter().map(|r| json!({
                "file": r.file, "size": r.size, "kind": r.kind, "true": r.truth,
                "predicted": r.predicted.as_ref().ok(), "error": r.error(),
                "grid": r.grid, "flags": r.flags,
                "failure": r.predicted.as_ref().err(), "elapsed_ms": r.elapsed_ms,
            })).collect::<Vec<_>>(),
            "kinds": kinds.iter().map(|k| json!({
                "kind": k.kind, "photos": k.n, "mean_absolute_error": k.mae, "worst": k.worst, "worst_photo": k.worst_photo,
            })).collect::<Vec<_>>(),
            "mean_absolute_error": mean_absolute_error(&rows),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc).expect("serialisable"))
            .with_context(|| format!("cannot write {}", path.display()))
            .map_err(Failure::runtime)?;
    }
    let failed = rows.iter().filter(|r| r.predicted.is_err()).count();
    let over: Vec<&Row> = match args.max_error {
        Some(max) => rows.iter().filter(|r| r.error().is_none_or(|e| e > max)).collect(),
        None => Vec::new(),
    };
    if !over.is_empty() {
        let max = args.max_error.unwrap_or(0);
        for r in &over {
            eprintln!(
                "demeter: {} at {}: off by more than {max} (true {}, predicted {})",
                r.file,
                r.size,
                r.truth,
                r.predicted.as_ref().map(u32::to_string).unwrap_or_else(|e| format!("failed: {e}"))
            );
        }
        return Ok(ExitCode::from(1));
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Decodes `src` like the pipeline does and writes it resized to fit `w × h` as PNG.
fn resized(
    src: &std::path::Path,
    w: u32,
    h: u32,
    out: &PathBuf,
    limits: demeter_infer::DecodeLimits,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
    let img = demeter_infer::decode(&bytes, limits).with_context(|| format!("cannot decode {}", src.display()))?;
    img.resize(w, h, image::imageops::FilterType::Triangle)
        .save_with_format(out, image::ImageFormat::Png)
        .with_context(|| format!("cannot write {}", out.display()))
}

fn mean_absolute_error(rows: &[Row]) -> Option<f64> {
    let errors: Vec<u32> = rows.iter().filter_map(Row::error).collect();
    (!errors.is_empty()).then(|| f64::from(errors.iter().sum::<u32>()) / errors.len() as f64)
}

/// The errors of one kind of variant.
struct Kind {
    kind: &'static str,
    n: usize,
    mae: f64,
    /// The signed error furthest from zero (predicted − true), and where.
    worst: i64,
    worst_photo: String,
}

/// Per kind, in the order the kinds first appear.
fn per_kind(rows: &[Row]) -> Vec<Kind> {
    let mut kinds: Vec<&'static str> = Vec::new();
    for r in rows {
        if !kinds.contains(&r.kind) {
            kinds.push(r.kind);
        }
    }
    kinds
        .into_iter()
        .map(|kind| {
            let judged: Vec<(&Row, i64)> = rows
                .iter()
                .filter(|r| r.kind == kind)
                .filter_map(|r| r.predicted.as_ref().ok().map(|p| (r, i64::from(*p) - i64::from(r.truth))))
                .collect();
            let n = judged.len();
            let mae = judged.iter().map(|(_, e)| e.unsigned_abs() as f64).sum::<f64>() / n.max(1) as f64;
            let (worst_row, worst) =
                judged.iter().max_by_key(|(_, e)| e.unsigned_abs()).map(|(r, e)| (Some(*r), *e)).unwrap_or((None, 0));
            Kind {
                kind,
                n,
                mae,
                worst,
                worst_photo: worst_row.map(|r| format!("{} {}", r.file, r.size)).unwrap_or_default(),
            }
        })
        .collect()
}

fn print_kinds(kinds: &[Kind]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\n{:<14}  {:>6}  {:>5}  {:>5}  WORST PHOTO", "KIND", "PHOTOS", "MAE", "WORST");
    for k in kinds {
        let _ = writeln!(out, "{:<14}  {:>6}  {:>5.2}  {:>+5}  {}", k.kind, k.n, k.mae, k.worst, k.worst_photo);
    }
}

fn print_table(rows: &[Row]) {
    let width = rows.iter().map(|r| r.file.chars().count()).max().unwrap_or(5).clamp(5, 64);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<width$}  {:>11}  {:>4}  {:>9}  {:>5}  {:>10}  {:>8}  FLAGS",
        "PHOTO", "AS", "TRUE", "PREDICTED", "ERROR", "GRID", "TIME"
    );
    for r in rows {
        let (predicted, error) = match (&r.predicted, r.error()) {
            (Ok(p), Some(e)) => (p.to_string(), e.to_string()),
            (Err(_), _) | (_, None) => ("failed".to_owned(), "-".to_owned()),
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:>11}  {:>4}  {:>9}  {:>5}  {:>10}  {:>6}ms  {}",
            r.file, r.size, r.truth, predicted, error, r.grid, r.elapsed_ms, r.flags
        );
    }
    let n = rows.len().max(1) as u64;
    let per_photo = rows.iter().map(|r| r.elapsed_ms).sum::<u64>() / n;
    match mean_absolute_error(rows) {
        Some(mae) => {
            let _ = writeln!(out, "mean absolute error {mae:.2} over {} photos; {per_photo} ms per photo", rows.len());
        }
        None => {
            let _ = writeln!(out, "no photo could be counted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!("full".parse::<Size>(), Ok(Size::Full));
        assert_eq!("400x300".parse::<Size>(), Ok(Size::Fit(400, 300)));
        assert!("400".parse::<Size>().is_err());
        assert!("0x300".parse::<Size>().is_err());
    }
}

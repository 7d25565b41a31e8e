//! `demeter process`: one-shot processing with a progress bar, a summary table and JSON.

use std::{io::Write, process::ExitCode};

use anyhow::Context;
use demeter_engine::oneshot::{self, PhotoReport};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::{
    cli::{Failure, ProcessArgs},
    settings,
};

pub fn process(args: ProcessArgs) -> Result<ExitCode, Failure> {
    let config = settings::load(&args.common, |_| {}).map_err(Failure::config)?;
    let photos =
        oneshot::collect_photos(&args.paths).context("cannot read the given paths").map_err(Failure::config)?;
    if photos.is_empty() {
        return Err(Failure::config(anyhow::anyhow!("no photos found in the given paths")));
    }
    let bar = ProgressBar::new(photos.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} photos  {elapsed_precise} (eta {eta})  {msg}")
            .expect("valid template"),
    );
    let reports = oneshot::process(&config, photos, |r| {
        bar.set_message(r.photo.rel_path.clone());
        bar.inc(1);
    })
    .map_err(Failure::config)?;
    bar.finish_and_clear();

    print_table(&reports);
    if let Some(path) = &args.json {
        let doc = json!({ "photos": reports.iter().map(to_json).collect::<Vec<_>>() });
        std::fs::write(path, serde_json::to_vec_pretty(&doc).expect("serialisable"))
            .with_context(|| format!("cannot write {}", path.display()))
            .map_err(Failure::runtime)?;
    }
    let failed = reports.iter().filter(|r| r.outcome.is_err()).count();
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn to_json(r: &PhotoReport) -> serde_json::Value {
    match &r.outcome {
        Ok(result) => json!({
            "path": r.photo.path, "status": "completed", "elapsed_ms": r.elapsed_ms, "result": result,
        }),
        Err(e) => json!({
            "path": r.photo.path, "status": "failed", "elapsed_ms": r.elapsed_ms,
            "error_message": e.message, "error_kind": e.kind,
        }),
    }
}

fn print_table(reports: &[PhotoReport]) {
    let width = reports.iter().map(|r| r.photo.rel_path.chars().count()).max().unwrap_or(5).clamp(5, 60);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{:<width$}  {:<9}  {:>6}  {:>8}  DETAIL", "PHOTO", "STATUS", "PLANTS", "TIME");
    for r in reports {
        let (status, plants, detail) = match &r.outcome {
            Ok(res) => {
                let mut detail: Vec<String> = res.storage_location_id.iter().cloned().collect();
                if let Some(g) = &res.grid {
                    detail.push(format!(
                        "{}x{} grid, {} of {} cells occupied",
                        g.rows,
                        g.cols,
                        g.occupied(),
                        g.cells()
                    ));
                }
                if !res.trust.trusted {
                    detail.push(format!("uncertain: {}", res.trust.summary()));
                }
                ("completed", res.total_detected.to_string(), detail.join("; "))
            }
            Err(e) => ("failed", "-".into(), e.message.clone()),
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:<9}  {:>6}  {:>6}ms  {}",
            r.photo.rel_path, status, plants, r.elapsed_ms, detail
        );
    }
    let ok = reports.iter().filter(|r| r.outcome.is_ok()).count();
    let plants: u32 = reports.iter().filter_map(|r| r.outcome.as_ref().ok()).map(|r| r.total_detected).sum();
    let _ = writeln!(
        out,
        "{ok} of {} photos completed, {} failed, {plants} plants counted",
        reports.len(),
        reports.len() - ok
    );
}

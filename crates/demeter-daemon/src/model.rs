//! `demeter model import FILE.onnx DIR` and `demeter model check DIR`.

use std::{path::Path, process::ExitCode, sync::Arc};

use anyhow::{anyhow, Context};
use demeter_infer::{import, Analyzer, Model, Runtime, Segment};

use crate::{
    cli::{CommonArgs, Failure, ImportArgs, ModelCommand},
    settings,
};

pub fn model(cmd: ModelCommand) -> Result<ExitCode, Failure> {
    match cmd {
        ModelCommand::Import(args) => import(args),
        ModelCommand::Check { dir, common } => {
            check(&runtime(&common)?, &dir)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// ONNX Runtime as the configuration, environment and flags say (library and device).
fn runtime(common: &CommonArgs) -> Result<Runtime, Failure> {
    let config = settings::load(common, |_| {}).map_err(Failure::config)?;
    Runtime::init(config.runtime.ort_lib.as_deref(), config.workers.device).map_err(|e| Failure::config(anyhow!(e)))
}

/// Loads the folder as the daemon would (manifest, then a session with the family's contract
/// checked) and prints what it provides. Any problem is the one line start-up would print.
fn check(runtime: &Runtime, dir: &Path) -> Result<(), Failure> {
    let model = Arc::new(Model::load_dir(dir).map_err(|e| Failure::config(anyhow!(e)))?);
    let (choice, session) = demeter_infer::choose(runtime, &model, 1).map_err(|e| Failure::config(anyhow!(e)))?;
    let m = &model.manifest;
    let graph = session.graph();
    println!("{}: {} {} ({})", dir.display(), m.name, m.version, m.family.as_str());
    if !m.description.is_empty() {
        println!("  {}", m.description);
    }
    let letterbox = if m.letterbox() { ", letterboxed to a square" } else { "" };
    println!("input   {} — photos resized to a long side of {}{letterbox}", graph.inputs[0], m.input.long_side);
    for (role, spec) in &m.outputs {
        let tensor = graph.outputs.iter().find(|t| t.name == spec.name).expect("checked at load");
        let layout = spec.layout.map(|l| format!(" ({} layout)", l.as_str())).unwrap_or_default();
        let values = match (role.as_str(), m.family) {
            ("mask", demeter_infer::Family::Mask) if m.mask_logits() => " (logits: a plant over 0)",
            ("mask", demeter_infer::Family::Mask) => " (probabilities: a plant over 0.5)",
            _ => "",
        };
        println!("output  {role}: {tensor}{layout}{values}");
    }
    if !m.family.boxes() && !m.classes.is_empty() {
        let plants = m.plant_classes.as_deref().unwrap_or_default().join(", ");
        println!(
            "classes {} (class axis; background: {}) — counted as plants: {plants}",
            m.classes.join(", "),
            m.classes[0]
        );
    }
    if m.family.boxes() {
        let plants = m.plant_classes.as_ref().map_or_else(|| "all".to_owned(), |p| p.join(", "));
        println!("classes {} — counted as plants: {plants}", m.classes.join(", "));
        println!("thresholds: confidence {}, NMS IoU {}", m.confidence(), m.iou());
    } else {
        let reference = model.reference();
        let values: Vec<String> = reference
            .thresholds
            .iter()
            .filter(|(k, _)| k.starts_with("thresholds."))
            .map(|(k, v)| format!("{} {v}", k.trim_start_matches("thresholds.")))
            .collect();
        println!("thresholds: {}", values.join(", "));
        println!("detection rules: {}", if m.detection.is_plain() { "none (plain components)" } else { "[detection]" });
    }
    println!("runs on {} ({}): {}", session.provider().as_str(), session.provider().device(), choice.reason);
    println!("sha256  {}", model.sha256);
    Ok(())
}

fn import(args: ImportArgs) -> Result<ExitCode, Failure> {
    let runtime = runtime(&args.common)?;
    let onnx = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))
        .map_err(Failure::config)?;
    let graph =
        import::inspect(&runtime, &onnx).map_err(|e| Failure::config(anyhow!("{}: {e}", args.file.display())))?;
    let hints = import::Hints {
        name: args.name,
        family: args.family,
        classes: args.classes,
        plant_classes: args.plant_classes,
        layout: args.layout,
        input_size: args.input_size,
        confidence: args.confidence,
        iou: args.iou,
    };
    let file_name = args.file.file_name().map_or_else(|| "model.onnx".into(), |n| n.to_string_lossy().into_owned());
    let inferred = import::infer_manifest(&graph, &hints, &file_name)
        .map_err(|e| Failure::config(anyhow!("cannot import {}: {e}", args.file.display())))?;
    let dir = &args.dir;
    if dir.join("manifest.toml").exists() && !args.force {
        return Err(Failure::config(anyhow!(
            "{} already holds a model (manifest.toml); give --force to replace it",
            dir.display()
        )));
    }
    // Written beside, checked, then moved in: a folder that would not load is never left behind.
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .map_err(Failure::config)?;
    let staging = tempfile::Builder::new()
        .prefix(".import-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))
        .map_err(Failure::config)?;
    std::fs::write(staging.path().join("model.onnx"), &onnx).map_err(|e| Failure::config(anyhow!(e)))?;
    std::fs::write(staging.path().join("manifest.toml"), &inferred.manifest)
        .map_err(|e| Failure::config(anyhow!(e)))?;
    let model = Model::load_dir(staging.path())
        .and_then(|m| Analyzer::new(&runtime, Arc::new(m), 1))
        .map_err(|e| Failure::config(anyhow!("the inferred manifest does not load: {e}")))?;
    drop(model);
    for file in ["model.onnx", "manifest.toml"] {
        std::fs::rename(staging.path().join(file), dir.join(file))
            .with_context(|| format!("cannot move {file} into {}", dir.display()))
            .map_err(Failure::config)?;
    }
    println!("imported {} into {}:", args.file.display(), dir.display());
    for note in &inferred.notes {
        println!("  {note}");
    }
    println!("run it with: demeter run --model {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

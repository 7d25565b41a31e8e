//! Installing a model while the appliance runs ([`Command::InstallModel`]).
//!
//! The model is checked exactly as start-up checks one (the manifest, then a session with the
//! family's contract), so a model that would stop start-up is refused with the same reason. One
//! that loads is written to `<data>/models/<name>/` (beside, synced, then moved in: a half-written
//! folder is never left where start-up reads it) and made available to every worker at once. At
//! every later start the engine loads the folders there like `model.installed`.
//!
//! [`Command::InstallModel`]: demeter_domain::command::Command::InstallModel

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use demeter_domain::command::{CommandError, InstalledModel, ModelUpload};
use demeter_infer::{import, InferError, Model, Segment};
use tracing::info;

use crate::{engine::Shared, worker::Added};

/// The folder under the data folder that holds installed models.
pub const MODELS_DIR: &str = "models";

/// The model folders installed earlier, in name order (dot-folders are installs in progress).
pub fn installed_dirs(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(data_dir.join(MODELS_DIR)) else { return Vec::new() };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Checks, stores and adds the model; the reason start-up would give when it does not load.
pub(crate) fn install(shared: &Shared, upload: ModelUpload) -> Result<InstalledModel, CommandError> {
    let ModelUpload { file_name, onnx, manifest, hints } = upload;
    let runtime = shared.factory.runtime();
    let invalid = CommandError::Invalid;
    let (manifest, notes) = match manifest {
        Some(text) => (text, Vec::new()),
        None => {
            let hints = import::Hints::from_fields(&hints).map_err(invalid)?;
            let graph = import::inspect(runtime, &onnx).map_err(|e| invalid(format!("{file_name}: {e}")))?;
            let inferred = import::infer_manifest(&graph, &hints, &file_name)
                .map_err(|e| invalid(format!("cannot import {file_name}: {}", e.for_form())))?;
            (inferred.manifest, inferred.notes)
        }
    };
    let mut model = Model::from_bytes(&manifest, onnx, Path::new(&file_name)).map_err(|e| invalid(e.to_string()))?;
    let name = model.manifest.name.clone();
    folder_name(&name).map_err(invalid)?;
    if shared.factory.names().contains(&name) {
        return Err(taken(&name));
    }
    // The session start-up would build: the family's contract is checked here.
    let (choice, session) =
        demeter_infer::choose(runtime, &Arc::new(model.clone()), shared.factory.intra).map_err(|e| match e {
            e @ InferError::Model { .. } => invalid(e.to_string()),
            e => invalid(format!("cannot start a session for {file_name}: {e}")),
        })?;
    let provider = session.provider();
    drop(session);

    let dir = store(&shared.models_dir, &name, &model, &manifest).map_err(|e| {
        CommandError::Store(format!("cannot write the model into {}: {e}", shared.models_dir.display()).into())
    })?;
    model.dir = Some(dir.clone());
    let model = Arc::new(model);
    let reason = choice.reason.clone();
    if !shared.factory.add(Added { model: model.clone(), choice, provider, sessions: Default::default() }) {
        // Another install of the same name won the race; its folder is the one kept.
        return Err(taken(&name));
    }
    info!(model = %name, version = %model.manifest.version, dir = %dir.display(), provider = provider.as_str(), "model installed");
    Ok(InstalledModel {
        name,
        version: model.manifest.version.clone(),
        family: model.manifest.family.as_str().to_owned(),
        sha256: model.sha256.clone(),
        execution_provider: provider.as_str().to_owned(),
        reason,
        notes,
    })
}

fn taken(name: &str) -> CommandError {
    CommandError::Conflict(format!("a model named {name:?} is installed already; give this one another name"))
}

/// Whether `name` can name a folder of its own (it becomes `<data>/models/<name>/`).
fn folder_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the model's name {name:?} cannot name its folder: use letters, digits, '-', '_', '.' or '+' (at most 100), \
             not starting with '.'"
        ))
    }
}

/// Writes the model's two files beside their folder, syncs them, and moves them in.
fn store(root: &Path, name: &str, model: &Model, manifest: &str) -> std::io::Result<PathBuf> {
    fs::create_dir_all(root)?;
    let staging = tempfile::Builder::new().prefix(".install-").tempdir_in(root)?;
    for (file, bytes) in [("model.onnx", &model.onnx[..]), ("manifest.toml", manifest.as_bytes())] {
        let mut f = fs::File::create(staging.path().join(file))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    let dir = root.join(name);
    if dir.exists() {
        // A folder of this name that start-up did not load cannot be here (it loads them all);
        // refuse rather than replace what someone put there.
        return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("{} exists", dir.display())));
    }
    fs::rename(staging.path(), &dir)?;
    fs::File::open(root)?.sync_all()?;
    Ok(dir)
}

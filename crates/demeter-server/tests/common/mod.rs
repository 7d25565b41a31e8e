//! What the router tests share.

/// The engine's effects of a command, not run here: the router tests check the stored change
/// and the answer; the daemon's e2e tests check what the engine announces.
pub struct NoEffects;

impl demeter_engine::commands::Effects for NoEffects {
    fn publish(&self, _: demeter_engine::EngineEvent) {}
    fn wake_workers(&self) {}
    fn sweep(&self) -> (usize, usize) {
        (0, 0)
    }
    fn install_model(
        &self,
        upload: demeter_domain::command::ModelUpload,
    ) -> Result<demeter_domain::command::InstalledModel, demeter_domain::command::CommandError> {
        // What the engine says of a file that is not a model (tests/e2e/models.rs runs the real one).
        Err(demeter_domain::command::CommandError::Invalid(format!(
            "cannot load the model in {}: ONNX Runtime cannot read it",
            upload.file_name
        )))
    }
    fn models(&self) -> Vec<String> {
        vec!["m".into(), "plant-unet".into()]
    }
}

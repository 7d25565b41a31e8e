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
}

//! What the settings window (`ui/settings.html`) may call. The main window shows the status
//! page from the local HTTP server and has no IPC access at all.

use std::{path::PathBuf, sync::Arc};

use demeter_host::settings::DesktopSettings;
use serde::{Deserialize, Serialize};
use tauri::{AppHandle, Runtime, State};
use tauri_plugin_dialog::DialogExt;

use crate::{
    autostart,
    controller::{Controller, Phase},
};

// `_app` in the commands below only tells the command macro which runtime `R` is.

/// An error for the settings page: one readable sentence.
#[derive(Debug, Serialize)]
pub struct CommandError(String);

impl<E: std::fmt::Display> From<E> for CommandError {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

/// Everything the settings window shows.
#[derive(Debug, Serialize, Deserialize)]
pub struct SettingsView {
    pub settings: DesktopSettings,
    /// The file the settings are saved to.
    pub config_path: PathBuf,
    /// No folder chosen yet: the window greets and asks for one.
    pub first_run: bool,
    /// `DEMETER_*` variables that override the file for this app (they win over what is saved).
    pub overridden_by_env: Vec<String>,
    /// "running", "starting", "stopping", "first_run" or "failed".
    pub phase: String,
    /// Why the engine could not start, if it could not.
    pub error: Option<String>,
    pub start_at_login: bool,
    /// The status page as phones reach it; `None` with LAN access off.
    pub lan_url: Option<String>,
}

/// The environment variables that decide what the settings window edits.
const ENV_OVERRIDES: [&str; 5] =
    ["DEMETER_WATCH", "DEMETER_WORKERS", "DEMETER_DEVICE", "DEMETER_LISTEN", "DEMETER_CONFIG"];

#[tauri::command]
pub fn get_settings<R: Runtime>(
    _app: AppHandle<R>,
    controller: State<'_, Arc<Controller<R>>>,
) -> Result<SettingsView, CommandError> {
    let (phase, error) = match controller.phase() {
        Phase::Running => ("running", None),
        Phase::Starting => ("starting", None),
        Phase::Stopping | Phase::Stopped => ("stopping", None),
        Phase::FirstRun => ("first_run", None),
        Phase::Failed(reason) => ("failed", Some(reason)),
    };
    let first_run = phase == "first_run";
    let settings = match controller.config() {
        Ok(c) => DesktopSettings::from_config(&c),
        Err(e) => return Err(CommandError(format!("{} — fix or remove the file", e.one_line()))),
    };
    let settings = if first_run { DesktopSettings { watch_dir: suggested_folder(), ..settings } } else { settings };
    Ok(SettingsView {
        settings,
        config_path: controller.config_path.clone(),
        first_run,
        overridden_by_env: ENV_OVERRIDES
            .iter()
            .filter(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
            .map(|v| (*v).to_owned())
            .collect(),
        phase: phase.to_owned(),
        error,
        start_at_login: autostart::enabled(),
        lan_url: controller.lan_url(),
    })
}

/// `~/Pictures/Demeter` (or `~/Demeter photos`): a sensible first suggestion.
fn suggested_folder() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let pictures = home.join("Pictures");
    if pictures.is_dir() {
        pictures.join("Demeter")
    } else {
        home.join("Demeter photos")
    }
}

/// Saves the settings into the config file and restarts the engine on them. The photo folder
/// is created if it does not exist yet.
#[tauri::command]
pub fn save_settings<R: Runtime>(
    _app: AppHandle<R>,
    controller: State<'_, Arc<Controller<R>>>,
    settings: DesktopSettings,
    start_at_login: bool,
) -> Result<(), CommandError> {
    if settings.watch_dir.as_os_str().is_empty() {
        return Err(CommandError("choose a photo folder".into()));
    }
    std::fs::create_dir_all(&settings.watch_dir)
        .map_err(|e| CommandError(format!("cannot use {} as the photo folder: {e}", settings.watch_dir.display())))?;
    let listen = controller
        .config()
        .map(|c| c.server.listen)
        .unwrap_or_else(|_| demeter_domain::config::Config::default().server.listen);
    settings.save(&controller.config_path, listen).map_err(|e| CommandError(e.one_line()))?;
    autostart::set(start_at_login).map_err(|e| CommandError(format!("cannot change start at login: {e}")))?;
    tracing::info!(config = %controller.config_path.display(), "settings saved; restarting the engine");
    controller.restart();
    Ok(())
}

/// The native folder picker; `None` when cancelled.
#[tauri::command]
pub async fn choose_folder<R: Runtime>(app: AppHandle<R>) -> Result<Option<PathBuf>, CommandError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    app.dialog().file().set_title("Choose the photo folder").pick_folder(move |picked| {
        let _ = tx.send(picked);
    });
    let picked = rx.await.map_err(|_| CommandError("the folder dialog closed unexpectedly".into()))?;
    Ok(picked.and_then(|p| p.into_path().ok()))
}

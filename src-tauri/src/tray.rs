//! The tray icon: its look says idle / processing / some failed, and its menu carries the live
//! status line (on Linux tooltips are not shown, so the status lives in the menu and title).

use std::sync::Arc;

use tauri::{
    image::Image,
    menu::{Menu, MenuEvent, MenuItem, PredefinedMenuItem},
    tray::{TrayIcon, TrayIconBuilder},
    AppHandle, Manager, Runtime,
};
use tracing::warn;

use crate::{
    controller::{Controller, Phase, Target},
    progress::{IconState, TrayText},
};

/// Menu item ids (also what the desktop test looks for).
pub mod ids {
    pub const STATUS: &str = "status";
    pub const OPEN: &str = "open";
    pub const PAUSE: &str = "pause";
    pub const FOLDER: &str = "folder";
    pub const BROWSER: &str = "browser";
    pub const LAN: &str = "lan";
    pub const SETTINGS: &str = "settings";
    pub const QUIT: &str = "quit";
}

const PAUSE_TEXT: &str = "Pause processing";
const RESUME_TEXT: &str = "Resume processing";

/// The parts of the tray that change.
pub struct TrayHandles<R: Runtime> {
    tray: TrayIcon<R>,
    status: MenuItem<R>,
    pause: MenuItem<R>,
}

fn icon(state: IconState) -> Image<'static> {
    let bytes: &'static [u8] = match state {
        IconState::Idle => include_bytes!("../icons/tray-idle.png"),
        IconState::Processing => include_bytes!("../icons/tray-busy.png"),
        IconState::SomeFailed => include_bytes!("../icons/tray-failed.png"),
    };
    Image::from_bytes(bytes).expect("the tray icons are valid PNGs")
}

/// Builds the tray; menu clicks go to the controller.
pub fn create<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<()> {
    let status = MenuItem::with_id(app, ids::STATUS, "Starting…", false, None::<&str>)?;
    let pause = MenuItem::with_id(app, ids::PAUSE, PAUSE_TEXT, false, None::<&str>)?;
    let menu = Menu::with_items(
        app,
        &[
            &status,
            &PredefinedMenuItem::separator(app)?,
            &MenuItem::with_id(app, ids::OPEN, "Open Demeter", true, None::<&str>)?,
            &pause,
            &MenuItem::with_id(app, ids::FOLDER, "Open photo folder", true, None::<&str>)?,
            &MenuItem::with_id(app, ids::BROWSER, "Open status page in browser", true, None::<&str>)?,
            &MenuItem::with_id(app, ids::LAN, "Show LAN link (QR code for phones)", true, None::<&str>)?,
            &MenuItem::with_id(app, ids::SETTINGS, "Settings…", true, None::<&str>)?,
            &PredefinedMenuItem::separator(app)?,
            &MenuItem::with_id(app, ids::QUIT, "Quit Demeter", true, None::<&str>)?,
        ],
    )?;
    let tray = TrayIconBuilder::with_id("demeter")
        .icon(icon(IconState::Idle))
        .tooltip("Demeter")
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(on_menu)
        .build(app)?;
    app.manage(TrayHandles { tray, status, pause });
    Ok(())
}

fn on_menu<R: Runtime>(app: &AppHandle<R>, event: MenuEvent) {
    let Some(controller) = app.try_state::<Arc<Controller<R>>>() else { return };
    let controller = controller.inner().clone();
    tracing::info!(item = %event.id().0, "tray menu");
    match event.id().as_ref() {
        ids::OPEN => controller.open(Target::Sessions),
        ids::PAUSE => {
            controller.set_paused(!controller.paused());
            refresh_phase(app);
        }
        ids::FOLDER => {
            if let Some(dir) = controller.photo_folder() {
                open_external(app, &dir.to_string_lossy());
            }
        }
        ids::BROWSER => {
            if let Some(url) = controller.browser_url() {
                open_external(app, &url);
            }
        }
        ids::LAN => controller.open(Target::PairPhone),
        ids::SETTINGS => controller.open_settings(),
        ids::QUIT => controller.quit(),
        _ => {}
    }
}

/// Hands a folder or URL to the desktop's default application.
fn open_external<R: Runtime>(app: &AppHandle<R>, what: &str) {
    use tauri_plugin_opener::OpenerExt;
    let opened = if what.starts_with("http") {
        app.opener().open_url(what, None::<&str>)
    } else {
        app.opener().open_path(what, None::<&str>)
    };
    if let Err(e) = opened {
        warn!(error = %e, %what, "cannot open");
    }
}

/// Shows progress while the engine runs.
pub fn show_progress<R: Runtime>(app: &AppHandle<R>, text: &TrayText, paused: bool) {
    let Some(t) = app.try_state::<TrayHandles<R>>() else { return };
    let _ = t.status.set_text(&text.status);
    let _ = t.pause.set_text(if paused { RESUME_TEXT } else { PAUSE_TEXT });
    let _ = t.pause.set_enabled(true);
    let _ = t.tray.set_icon(Some(icon(text.icon)));
    let _ = t.tray.set_title(if text.title.is_empty() { None } else { Some(text.title.as_str()) });
    let _ = t.tray.set_tooltip(Some(text.tooltip.as_str()));
}

/// Shows the engine's phase when it is not simply running (starting, failed, stopping), and
/// the pause item's current text.
pub fn refresh_phase<R: Runtime>(app: &AppHandle<R>) {
    let Some(t) = app.try_state::<TrayHandles<R>>() else { return };
    let Some(controller) = app.try_state::<Arc<Controller<R>>>() else { return };
    let line = match controller.phase() {
        Phase::Running => {
            let paused = controller.paused();
            let _ = t.pause.set_text(if paused { RESUME_TEXT } else { PAUSE_TEXT });
            let _ = t.pause.set_enabled(true);
            return;
        }
        Phase::FirstRun => "Choose a photo folder in Settings".to_owned(),
        Phase::Starting => "Starting…".to_owned(),
        Phase::Stopping | Phase::Stopped => "Stopping…".to_owned(),
        Phase::Failed(reason) => format!("Cannot start: {reason}"),
    };
    let _ = t.pause.set_enabled(false);
    let _ = t.status.set_text(&line);
    let _ =
        t.tray.set_icon(Some(icon(if line.starts_with("Cannot") { IconState::SomeFailed } else { IconState::Idle })));
}

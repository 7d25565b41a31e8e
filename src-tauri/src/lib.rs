//! `demeter-desktop`: the desktop app. It runs the very same engine and HTTP server as the
//! daemon ([`demeter_host::Host`], LAN status page included) and adds what a person at the
//! office PC needs:
//!
//! - [`tray`]: an icon that shows idle / processing / some failed, and a menu with the live
//!   status line and Open, Pause/Resume, photo folder, browser, LAN link, Settings, Quit;
//! - [`notifications`]: one native notification per finished batch, clicking opens it;
//! - [`controller`]: the engine's lifecycle — first run, restart on new settings, graceful
//!   stop on Quit — off the UI thread;
//! - [`commands`]: what the settings window (`ui/settings.html`) may call.
//!
//! The main window shows the status page (`ui/`) from the local server, signed in with a
//! one-time code; closing it keeps the app in the tray.

pub mod autostart;
pub mod commands;
pub mod controller;
pub mod notifications;
pub mod progress;
#[cfg(test)]
mod test_support;
pub mod tray;

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::Parser;
use controller::{Controller, Startup, Target, MAIN};
use tauri::{Manager, RunEvent, Runtime, WindowEvent};

/// The desktop app's command line. Everything else comes from the config file and the
/// `DEMETER_*` environment variables, exactly as for `demeter run`.
#[derive(Debug, Parser)]
#[command(
    name = "demeter-desktop",
    version,
    about = "Demeter desktop app: tray icon, notifications, live status window."
)]
pub struct Args {
    /// Config file to read and to save settings to [default: $DEMETER_CONFIG, else
    /// ~/.config/demeter/config.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Start in the tray without opening the window (used by "start when I log in").
    #[arg(long)]
    pub minimized: bool,
}

/// Adds the app's plugins, commands and window behaviour to a builder: `run` passes the real
/// one, tests `tauri::test::mock_builder()`.
pub fn configure<R: Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    builder
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_dialog::init())
        .plugin(tauri_plugin_opener::init())
        .manage(notifications::Clicks::default())
        .invoke_handler(tauri::generate_handler![
            commands::get_settings,
            commands::save_settings,
            commands::choose_folder
        ])
        .on_window_event(|window, event| {
            // Closing the status window keeps the app (and the engine) in the tray.
            if let WindowEvent::CloseRequested { api, .. } = event {
                if window.label() == MAIN {
                    api.prevent_close();
                    let _ = window.hide();
                }
            }
        })
}

/// Runs the app until Quit. Exit codes: 0 after Quit, 2 for a bad flag or config file.
pub fn run() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging();
    // A broken config file stops start-up with a message naming it, as for the daemon. A
    // missing one is a first run.
    let config_path = demeter_host::settings::config_path(args.config.as_deref()).map(|(p, _)| p);
    if let Err(e) =
        config_path.as_deref().map_or(Ok(()), |p| demeter_host::settings::load_optional(p, |_| {}).map(drop))
    {
        eprintln!("demeter-desktop: error: {}", e.one_line());
        return ExitCode::from(2);
    }
    let startup = Startup { config_flag: args.config, minimized: args.minimized };
    let app = configure(tauri::Builder::default())
        .setup(move |app| {
            let controller = Controller::new(app.handle().clone(), startup);
            app.manage(controller.clone());
            tray::create(app.handle())?;
            notifications::on_click(app.handle(), |app, session| {
                if let Some(c) = app.try_state::<Arc<Controller<tauri::Wry>>>() {
                    c.open(session.map(Target::Session).unwrap_or(Target::Sessions));
                }
            });
            controller.start();
            Ok(())
        })
        .build(tauri::generate_context!());
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            eprintln!("demeter-desktop: error: cannot start the desktop app: {e}");
            return ExitCode::from(1);
        }
    };
    app.run(|app, event| match event {
        // Closing the last window is not quitting: the tray stays. Quit (or a signal) exits.
        RunEvent::ExitRequested { api, code: None, .. } => api.prevent_exit(),
        RunEvent::Exit => {
            if let Some(c) = app.try_state::<Arc<Controller<tauri::Wry>>>() {
                c.stop_if_running();
            }
            tracing::info!("demeter-desktop exited");
        }
        _ => {}
    });
    ExitCode::SUCCESS
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DEMETER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,ort=warn,tao=warn,wry=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

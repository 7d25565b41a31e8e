// No console window on Windows release builds; a no-op on Linux.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() -> std::process::ExitCode {
    demeter_desktop::run()
}

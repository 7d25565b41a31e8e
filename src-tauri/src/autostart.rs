//! "Start when I log in": an XDG autostart entry that starts the app minimised to the tray.

use std::path::PathBuf;

const FILE: &str = "demeter-desktop.desktop";

fn entry_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("autostart").join(FILE))
}

pub fn enabled() -> bool {
    entry_path().is_some_and(|p| p.exists())
}

/// Writes or removes the entry. The entry runs this very executable with `--minimized`.
pub fn set(on: bool) -> std::io::Result<()> {
    let Some(path) = entry_path() else {
        return Err(std::io::Error::other("neither XDG_CONFIG_HOME nor HOME is set"));
    };
    if !on {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let exe = std::env::current_exe()?;
    std::fs::create_dir_all(path.parent().expect("the entry has a folder"))?;
    std::fs::write(
        &path,
        format!(
            "[Desktop Entry]\nType=Application\nName=Demeter\nComment=Counts plants in greenhouse photos (starts in the tray)\n\
             Exec=\"{}\" --minimized\nIcon=demeter-desktop\nTerminal=false\nX-GNOME-Autostart-enabled=true\n",
            exe.display()
        ),
    )
}

//! "Start when I log in": an XDG autostart entry that starts the app minimised to the tray.

use std::path::{Path, PathBuf};

const FILE: &str = "demeter-desktop.desktop";

/// `$XDG_CONFIG_HOME`, else `~/.config`.
fn config_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
}

pub fn enabled() -> bool {
    config_home().is_some_and(|base| entry(&base).exists())
}

/// Writes or removes the entry; it runs this very executable with `--minimized`.
pub fn set(on: bool) -> std::io::Result<()> {
    let base = config_home().ok_or_else(|| std::io::Error::other("neither XDG_CONFIG_HOME nor HOME is set"))?;
    set_in(&base, on, &std::env::current_exe()?)
}

fn entry(config_home: &Path) -> PathBuf {
    config_home.join("autostart").join(FILE)
}

fn set_in(config_home: &Path, on: bool, exe: &Path) -> std::io::Result<()> {
    let path = entry(config_home);
    if !on {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_starts_this_app_in_the_tray_and_goes_away_when_unticked() {
        let dir = tempfile::tempdir().unwrap();
        let exe = Path::new("/opt/demeter/demeter-desktop");
        set_in(dir.path(), true, exe).unwrap();
        let text = std::fs::read_to_string(entry(dir.path())).unwrap();
        assert!(text.contains("Exec=\"/opt/demeter/demeter-desktop\" --minimized"), "{text}");
        set_in(dir.path(), true, exe).unwrap();
        set_in(dir.path(), false, exe).unwrap();
        assert!(!entry(dir.path()).exists());
        set_in(dir.path(), false, exe).unwrap();
    }
}

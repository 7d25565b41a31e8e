//! Configuration layering for both shells: defaults < file < `DEMETER_*` environment < flags,
//! the data directory, and the desktop's settings written back into the config file.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use demeter_domain::config::{Config, Device};
use serde::{Deserialize, Serialize};

use crate::HostError;

/// The config file to read: the `--config` flag, else `DEMETER_CONFIG`, else the XDG default.
/// The flag `true` means the file was asked for explicitly and must exist.
pub fn config_path(flag: Option<&Path>) -> Option<(PathBuf, bool)> {
    if let Some(p) = flag {
        return Some((p.to_owned(), true));
    }
    if let Some(p) = std::env::var_os("DEMETER_CONFIG").filter(|v| !v.is_empty()) {
        return Some((p.into(), true));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some((base.join("demeter/config.toml"), false))
}

/// Loads the file layer (if any) and the environment layer, lets `apply_flags` set what was
/// given on the command line, and validates the result.
pub fn load(config_flag: Option<&Path>, apply_flags: impl FnOnce(&mut Config)) -> Result<Config, HostError> {
    let config = match config_path(config_flag) {
        Some((path, required)) if required || path.exists() => read_file(&path)?,
        _ => Config::default(),
    };
    layer(config, apply_flags)
}

/// Like [`load`], from a file that may not exist yet (the desktop app's first run, where the
/// settings window creates it).
pub fn load_optional(path: &Path, apply_flags: impl FnOnce(&mut Config)) -> Result<Config, HostError> {
    let config = if path.exists() { read_file(path)? } else { Config::default() };
    layer(config, apply_flags)
}

fn layer(mut config: Config, apply_flags: impl FnOnce(&mut Config)) -> Result<Config, HostError> {
    config.apply_env(std::env::vars())?;
    apply_flags(&mut config);
    config.validate()?;
    Ok(config)
}

/// Parses one config file; errors name the file, the line and its text, and what is wrong.
pub fn read_file(path: &Path) -> Result<Config, HostError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| HostError::ReadConfig { path: path.to_owned(), source })?;
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<Config, HostError> {
    toml::from_str::<Config>(text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let line = text[..span.start].matches('\n').count() + 1;
                let content = text.lines().nth(line - 1).unwrap_or("").trim();
                format!(", line {line} `{content}`")
            })
            .unwrap_or_default();
        HostError::ParseConfig { path: path.to_owned(), at, message: e.message().trim().to_owned() }
    })
}

/// The data directory: configured, else `$XDG_DATA_HOME/demeter`, else `~/.local/share/demeter`.
pub fn data_dir(config: &Config) -> PathBuf {
    if let Some(d) = &config.store.data_dir {
        return d.clone();
    }
    std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .map(|base| base.join("demeter"))
        .unwrap_or_else(|| PathBuf::from("demeter-data"))
}

/// What the desktop's settings window edits: the few choices a greenhouse office makes.
/// Everything else stays as the config file (or the defaults) say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesktopSettings {
    /// The photo folder to watch.
    pub watch_dir: PathBuf,
    /// Parallel workers (1–64).
    pub workers: usize,
    pub device: Device,
    /// Serve the status page to other devices on the network (listen on all interfaces) rather
    /// than to this computer only.
    pub lan_access: bool,
}

impl DesktopSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            watch_dir: config.watch.dir.clone(),
            workers: config.workers.count,
            device: config.workers.device,
            lan_access: !config.server.listen.ip().is_loopback(),
        }
    }

    /// The address to listen on: all interfaces with LAN access, loopback without; same port.
    pub fn listen(&self, current: SocketAddr) -> SocketAddr {
        let ip = if self.lan_access { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) };
        SocketAddr::new(ip, current.port())
    }

    /// Writes these settings into the config file at `path` (created if missing), keeping every
    /// other key and comment. The result is checked by parsing it back before it replaces the
    /// file, and the replacement is atomic, so a crash never leaves half a file.
    pub fn save(&self, path: &Path, current_listen: SocketAddr) -> Result<Config, HostError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(HostError::ReadConfig { path: path.to_owned(), source }),
        };
        let mut doc = text.parse::<toml_edit::DocumentMut>().map_err(|e| HostError::ParseConfig {
            path: path.to_owned(),
            at: String::new(),
            message: e.message().trim().to_owned(),
        })?;
        let set = |doc: &mut toml_edit::DocumentMut, section: &str, key: &str, value: toml_edit::Value| {
            if !doc.contains_table(section) {
                doc.insert(section, toml_edit::Item::Table(toml_edit::Table::new()));
            }
            doc[section][key] = toml_edit::value(value);
        };
        set(&mut doc, "watch", "dir", self.watch_dir.to_string_lossy().as_ref().into());
        set(&mut doc, "workers", "count", (self.workers as i64).into());
        let device = match self.device {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::TensorRt => "tensorrt",
        };
        set(&mut doc, "workers", "device", device.into());
        set(&mut doc, "server", "listen", self.listen(current_listen).to_string().into());
        let new_text = doc.to_string();
        let config = parse(path, &new_text)?;
        config.validate()?;
        write_atomically(path, new_text.as_bytes())
            .map_err(|source| HostError::WriteConfig { path: path.to_owned(), source })?;
        Ok(config)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("config")));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saving_keeps_other_keys_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "# greenhouse 3\n[store]\njob_ttl_hours = 40 # two days\n\n[workers]\ncount = 2\n[server]\nlisten = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let before = read_file(&path).unwrap();
        let wanted =
            DesktopSettings { watch_dir: "/srv/photos".into(), workers: 3, device: Device::Cpu, lan_access: true };
        let saved = wanted.save(&path, before.server.listen).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# greenhouse 3") && text.contains("# two days"), "{text}");
        let after = read_file(&path).unwrap();
        assert_eq!(after, saved);
        assert_eq!(after.store.job_ttl_hours, 40.0);
        assert_eq!(DesktopSettings::from_config(&after), wanted);
        assert_eq!(after.server.listen, "0.0.0.0:9000".parse().unwrap(), "the port is kept");
    }

    #[test]
    fn saving_creates_the_file_and_refuses_invalid_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let s = DesktopSettings { watch_dir: "p".into(), workers: 1, device: Device::Auto, lan_access: false };
        s.save(&path, "0.0.0.0:7878".parse().unwrap()).unwrap();
        assert_eq!(read_file(&path).unwrap().server.listen, "127.0.0.1:7878".parse().unwrap());
        let bad = DesktopSettings { workers: 0, ..s };
        let err = bad.save(&path, "127.0.0.1:7878".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("workers.count"), "{err}");
        assert_eq!(read_file(&path).unwrap().workers.count, 1, "the file is untouched by a refused save");
    }

    #[test]
    fn parse_errors_name_the_line() {
        let err = parse(Path::new("c.toml"), "[workers]\ncount = \"many\"\n").unwrap_err();
        assert!(err.to_string().starts_with("config file c.toml, line 2 `count = \"many\"`"), "{err}");
    }
}

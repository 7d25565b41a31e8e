//! Configuration layering for the binary: defaults < file < `DEMETER_*` environment < flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use demeter_domain::config::Config;

use crate::cli::CommonArgs;

/// The config file to read: `--config`, else `DEMETER_CONFIG`, else the XDG default if present.
fn config_path(flag: Option<&Path>) -> Option<(PathBuf, bool)> {
    if let Some(p) = flag {
        return Some((p.to_owned(), true));
    }
    if let Some(p) = std::env::var_os("DEMETER_CONFIG").filter(|v| !v.is_empty()) {
        return Some((p.into(), true));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some((base.join("demeter/config.toml"), false))
}

/// Loads the file layer and the environment layer, then lets `apply_flags` set what was given
/// on the command line, and validates the result.
pub fn load(common: &CommonArgs, apply_flags: impl FnOnce(&mut Config)) -> anyhow::Result<Config> {
    let mut config = match config_path(common.config.as_deref()) {
        Some((path, required)) if required || path.exists() => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            toml::from_str::<Config>(&text).map_err(|e| {
                // One line: the file, the line and its text, and what is wrong with it.
                let at = e.span().map(|span| {
                    let line = text[..span.start].matches('\n').count() + 1;
                    let content = text.lines().nth(line - 1).unwrap_or("").trim();
                    format!(", line {line} `{content}`")
                });
                anyhow::anyhow!("config file {}{}: {}", path.display(), at.unwrap_or_default(), e.message().trim())
            })?
        }
        _ => Config::default(),
    };
    config.apply_env(std::env::vars())?;
    if let Some(n) = common.workers {
        config.workers.count = n;
    }
    if let Some(d) = common.device {
        config.workers.device = d;
    }
    if let Some(m) = &common.model {
        config.model.dir = Some(m.clone());
    }
    if let Some(l) = &common.ort_lib {
        config.runtime.ort_lib = Some(l.clone());
    }
    apply_flags(&mut config);
    config.validate()?;
    Ok(config)
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

//! The daemon's flags on top of the shared layering in [`demeter_host::settings`]:
//! defaults < file < `DEMETER_*` environment < flags.

use demeter_domain::config::Config;
pub use demeter_host::settings::data_dir;

use crate::cli::CommonArgs;

/// Loads file and environment, applies the flags every command shares, then `apply_flags`
/// (the command's own), and validates.
pub fn load(common: &CommonArgs, apply_flags: impl FnOnce(&mut Config)) -> Result<Config, demeter_host::HostError> {
    demeter_host::settings::load(common.config.as_deref(), |config| {
        if let Some(n) = common.workers {
            config.workers.count = n;
        }
        if let Some(d) = common.device {
            config.workers.device = d;
        }
        if let Some(b) = common.batching {
            config.workers.batching = b;
        }
        if let Some(m) = &common.model {
            config.model.dir = Some(m.clone());
        }
        if let Some(l) = &common.ort_lib {
            config.runtime.ort_lib = Some(l.clone());
        }
        apply_flags(config);
    })
}

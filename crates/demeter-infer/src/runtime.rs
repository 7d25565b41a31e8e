//! The ONNX Runtime library and the execution provider.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use demeter_domain::config::Device;
use ort::environment::Environment;
use tracing::{info, warn};

use crate::InferError;

/// The ONNX Runtime release Demeter is built and tested against (from the `onnxruntime` wheel).
pub const ORT_VERSION: &str = "1.31.1";

/// The execution provider sessions actually use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cpu,
    Cuda,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "CPU",
            Provider::Cuda => "CUDA",
        }
    }
}

/// A loaded ONNX Runtime with the device policy. One per process.
pub struct Runtime {
    env: Environment,
    device: Device,
    /// The CPU fallback is logged once, not once per worker session.
    warned: AtomicBool,
}

/// Where the library is looked for when no path is configured, in order.
pub fn default_library_candidates() -> Vec<PathBuf> {
    let file = format!("libonnxruntime.so.{ORT_VERSION}");
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_owned)) {
        out.push(dir.join(&file));
        out.push(dir.join("../lib").join(&file));
    }
    out.push(PathBuf::from(".ort").join(&file));
    if let Some(home) = std::env::var_os("HOME") {
        out.push(PathBuf::from(home).join(".cache/demeter/onnxruntime").join(ORT_VERSION).join(&file));
    }
    out.push(PathBuf::from("/usr/lib/demeter").join(&file));
    out
}

impl Runtime {
    /// Loads the library (`configured`, or the first default candidate that exists) and
    /// creates the environment. Errors name the path and the fix; nothing panics.
    pub fn init(configured: Option<&Path>, device: Device) -> Result<Self, InferError> {
        let library = match configured {
            Some(p) => {
                if !p.exists() {
                    return Err(InferError::LibraryNotFound { searched: vec![p.to_owned()] });
                }
                p.to_owned()
            }
            None => {
                let candidates = default_library_candidates();
                candidates
                    .iter()
                    .find(|p| p.exists())
                    .cloned()
                    .ok_or(InferError::LibraryNotFound { searched: candidates })?
            }
        };
        let builder = ort::init_from(&library)
            .map_err(|e| InferError::Library { path: library.clone(), reason: e.to_string() })?;
        let env = builder
            .with_name("demeter")
            .with_telemetry(false)
            .build()
            .map_err(|e| InferError::Environment(e.to_string()))?;
        info!(library = %library.display(), %device, "ONNX Runtime loaded");
        Ok(Self { env, device, warned: AtomicBool::new(false) })
    }

    pub(crate) fn env(&self) -> &Environment {
        &self.env
    }

    /// Registers the execution provider on a session builder according to the device policy.
    /// Returns the provider in use and, for `auto` falling back to CPU, the warning to show.
    pub(crate) fn register(
        &self,
        builder: &mut ort::session::builder::SessionBuilder,
    ) -> Result<(Provider, Option<String>), InferError> {
        match self.device {
            Device::Cpu => Ok((Provider::Cpu, None)),
            Device::Auto | Device::Cuda => match register_cuda(builder) {
                Ok(()) => Ok((Provider::Cuda, None)),
                Err(reason) if self.device == Device::Cuda => Err(InferError::CudaUnavailable(reason)),
                Err(reason) => {
                    let w = format!("--device auto: CUDA not available ({reason}); running on CPU");
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        warn!("{w}");
                    }
                    Ok((Provider::Cpu, Some(w)))
                }
            },
        }
    }
}

#[cfg(feature = "cuda")]
fn register_cuda(builder: &mut ort::session::builder::SessionBuilder) -> Result<(), String> {
    use ort::ep::ExecutionProvider;
    ort::ep::CUDA::default().register(builder).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn register_cuda(_: &mut ort::session::builder::SessionBuilder) -> Result<(), String> {
    Err("this build has no CUDA support (rebuild with `--features cuda`)".into())
}

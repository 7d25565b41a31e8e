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
    TensorRt,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "CPU",
            Provider::Cuda => "CUDA",
            Provider::TensorRt => "TensorRT",
        }
    }

    /// The device sessions on this provider use ("cuda:0": the GPU providers are registered for
    /// the first GPU, their default).
    pub fn device(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda | Provider::TensorRt => "cuda:0",
        }
    }
}

/// The execution providers every build can register (`ort` with load-dynamic compiles them in
/// without CUDA installed). Whether one works is up to the machine: its GPU, driver and the
/// ONNX Runtime library loaded.
pub const COMPILED_PROVIDERS: &[&str] = &["CPU", "CUDA", "TensorRT"];

/// A loaded ONNX Runtime with the device policy. One per process.
pub struct Runtime {
    env: Environment,
    device: Device,
    /// The library loaded, for telling why a GPU provider did not register.
    library: PathBuf,
    /// The CPU fallback is logged once, not once per worker session.
    warned: AtomicBool,
}

/// Where the library is looked for when no path is configured, in order. On a machine with an
/// NVIDIA GPU the GPU build that `make run` / `make build` fetch there
/// (`scripts/fetch-ort-gpu.sh`) comes first.
pub fn default_library_candidates() -> Vec<PathBuf> {
    let file = format!("libonnxruntime.so.{ORT_VERSION}");
    let mut out = Vec::new();
    if nvidia_device_present() {
        if let Some(home) = std::env::var_os("HOME") {
            out.push(PathBuf::from(home).join(".cache/demeter/onnxruntime-gpu").join(ORT_VERSION).join(&file));
        }
    }
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
        preload_cuda(&library);
        let builder = ort::init_from(&library)
            .map_err(|e| InferError::Library { path: library.clone(), reason: e.to_string() })?;
        let env = builder
            .with_name("demeter")
            .with_telemetry(false)
            .build()
            .map_err(|e| InferError::Environment(e.to_string()))?;
        info!(library = %library.display(), %device, "ONNX Runtime loaded");
        Ok(Self { env, device, library, warned: AtomicBool::new(false) })
    }

    pub(crate) fn env(&self) -> &Environment {
        &self.env
    }

    /// The configured device policy.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Registers the execution provider for `device` on a session builder. Returns the provider
    /// in use and, for `auto` falling back to CPU, the warning to show.
    pub(crate) fn register(
        &self,
        builder: &mut ort::session::builder::SessionBuilder,
        device: Device,
    ) -> Result<(Provider, Option<String>), InferError> {
        use ort::ep::ExecutionProvider;
        match device {
            Device::Cpu => Ok((Provider::Cpu, None)),
            Device::TensorRt => {
                // TensorRT first; CUDA takes the nodes TensorRT leaves.
                ort::ep::TensorRT::default()
                    .register(builder)
                    .and_then(|()| Self::cuda_options().register(builder))
                    .map_err(|e| {
                        InferError::CudaUnavailable(self.gpu_unavailable(GpuProvider::TensorRt, &e.to_string()))
                    })?;
                Ok((Provider::TensorRt, None))
            }
            Device::Auto | Device::Cuda => match Self::cuda_options().register(builder) {
                Ok(()) => Ok((Provider::Cuda, None)),
                Err(e) => {
                    let reason = self.gpu_unavailable(GpuProvider::Cuda, &e.to_string());
                    if device == Device::Cuda {
                        return Err(InferError::CudaUnavailable(reason));
                    }
                    let w = format!("--device auto: CUDA not available ({reason}); running on CPU");
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        warn!("{w}");
                    }
                    Ok((Provider::Cpu, Some(w)))
                }
            },
        }
    }

    /// The CUDA provider as Demeter registers it, by measurement (issue 23, an H200 with a
    /// ResNet-50-sized model, ONNX Runtime 1.31.1):
    /// - cuDNN's convolution search HEURISTIC: the session in 118 ms and its first run in 148 ms, a new
    ///   input shape 151 ms once, then 3.5 ms a photo. ONNX Runtime's default, EXHAUSTIVE, took
    ///   588 ms, 1,183 ms and 544-593 ms per new shape for 3.1 ms a photo, so every camera's first
    ///   photo paid over half a second; DEFAULT skips the search but ran at 9.4 ms a photo.
    /// - TF32 on, explicitly: with it off the same model ran at half the throughput.
    fn cuda_options() -> ort::ep::CUDA {
        ort::ep::CUDA::default()
            .with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Heuristic)
            .with_tf32(true)
    }

    /// Why a GPU provider did not register, in the words a person can act on: no GPU, a CPU-only
    /// ONNX Runtime library, or a CUDA library the provider could not load (ONNX Runtime's own
    /// message names it).
    fn gpu_unavailable(&self, provider: GpuProvider, error: &str) -> String {
        gpu_unavailable_reason(nvidia_device_present(), provider_in_library(provider), &self.library, provider, error)
    }
}

/// Loads the CUDA and cuDNN libraries kept in a `cuda/` folder beside the ONNX Runtime library
/// (NVIDIA's PyPI wheels, linked there by `scripts/fetch-ort-gpu.sh` on a machine without its
/// own), globally, so the CUDA provider finds them by name when it loads, as the Python package's
/// `preload_dlls` does. Libraries that need another one first are retried until no more load.
/// Without the folder (every CPU machine) this does nothing.
fn preload_cuda(library: &Path) {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    let Some(dir) = library.parent().map(|d| d.join("cuda")) else { return };
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let mut left: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    left.sort();
    let mut loaded = 0;
    loop {
        let before = left.len();
        left.retain(|path| {
            // SAFETY: NVIDIA's CUDA and cuDNN libraries, whose initialisers only set up their
            // own state; kept loaded for the life of the process, as the provider expects.
            match unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) } {
                Ok(lib) => {
                    std::mem::forget(lib);
                    loaded += 1;
                    false
                }
                Err(_) => true,
            }
        });
        if left.is_empty() || left.len() == before {
            break;
        }
    }
    info!(dir = %dir.display(), loaded, "CUDA libraries loaded for the CUDA provider");
    if !left.is_empty() {
        warn!(dir = %dir.display(), unloaded = ?left, "some CUDA libraries did not load");
    }
}

/// The GPU providers, as ONNX Runtime names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GpuProvider {
    Cuda,
    TensorRt,
}

/// Whether the NVIDIA driver sees a GPU (its device node or its `/proc` entry).
fn nvidia_device_present() -> bool {
    Path::new("/dev/nvidia0").exists() || Path::new("/proc/driver/nvidia/version").exists()
}

/// Whether the loaded ONNX Runtime library was built with the provider (the `onnxruntime`
/// wheel has only the CPU one; `onnxruntime-gpu` has CUDA and TensorRT).
fn provider_in_library(provider: GpuProvider) -> bool {
    use ort::ep::ExecutionProvider;
    match provider {
        GpuProvider::Cuda => ort::ep::CUDA::is_available(),
        GpuProvider::TensorRt => ort::ep::TensorRT::is_available(),
    }
    .unwrap_or(false)
}

fn gpu_unavailable_reason(
    device: bool,
    in_library: bool,
    library: &Path,
    provider: GpuProvider,
    error: &str,
) -> String {
    let name = match provider {
        GpuProvider::Cuda => "CUDA",
        GpuProvider::TensorRt => "TensorRT",
    };
    if !device {
        "no CUDA device: no NVIDIA GPU or driver found (/dev/nvidia0)".to_owned()
    } else if !in_library {
        format!(
            "the ONNX Runtime library {} has no {name} provider (it is the CPU build); `make run` on this machine \
             fetches onnxruntime-gpu {ORT_VERSION}, or point runtime.ort_lib at one",
            library.display()
        )
    } else {
        let first = error.lines().next().unwrap_or(error).trim();
        format!("{name} library not found or not usable: {first}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_gpu_is_named_before_the_library() {
        let lib = Path::new("/x/libonnxruntime.so.1.31.1");
        assert_eq!(
            gpu_unavailable_reason(false, false, lib, GpuProvider::Cuda, "anything"),
            "no CUDA device: no NVIDIA GPU or driver found (/dev/nvidia0)"
        );
        let cpu_build = gpu_unavailable_reason(true, false, lib, GpuProvider::Cuda, "anything");
        assert!(cpu_build.contains("/x/libonnxruntime.so.1.31.1 has no CUDA provider"), "{cpu_build}");
        let missing = gpu_unavailable_reason(
            true,
            true,
            lib,
            GpuProvider::TensorRt,
            "libnvinfer.so.10: cannot open shared object file\nmore",
        );
        assert_eq!(
            missing,
            "TensorRT library not found or not usable: libnvinfer.so.10: cannot open shared object file"
        );
    }
}

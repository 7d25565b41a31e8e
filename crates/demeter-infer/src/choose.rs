//! `--device auto`, decided per model. A formula such as plant-exg is a few element-wise
//! operations: copying the photo to a GPU and back costs more than computing it on the CPU, and
//! on a machine with many cores the CPU wins (measured on an H200 machine: 41,918 photos/min on
//! CPU against 19,067 on CUDA with 16 workers). A network of a few GFLOP per photo is the other
//! way round. So when CUDA registers, the model's session is built on both providers and timed
//! at its working shape (the input's long side at 4:3, the usual camera aspect): one warm-up run,
//! then [`TIMED_RUNS`], median; the faster provider runs the model, and the choice and the
//! figures are reported in `/health`. When CUDA does not register, the model runs on the CPU and
//! the reason is a warning, as before. Other device settings are taken as given.

use std::{sync::Arc, time::Instant};

use demeter_domain::config::Device;
use image::RgbImage;

use crate::{Analyzer, InferError, Model, Runtime, Segment};

/// Timed runs per provider (after one warm-up run, which also pays for any algorithm search).
pub const TIMED_RUNS: usize = 5;

/// The device a model runs on, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub device: Device,
    /// For `/health`: the measurement or the rule that decided.
    pub reason: String,
    /// For `/health`'s warnings: `auto` wanted a GPU and could not have one.
    pub warning: Option<String>,
}

/// Decides where `model` runs under the runtime's device policy, and returns the session built on
/// that device while deciding, so the first worker uses it rather than building another (on a
/// machine without a GPU, `auto` costs no extra session at start-up).
pub fn choose(runtime: &Runtime, model: &Arc<Model>, intra_threads: usize) -> Result<(Choice, Analyzer), InferError> {
    let device = runtime.device();
    // The first session: on the configured device, or under `auto` CUDA if it registers, else
    // the CPU with the reason.
    let mut first = Analyzer::on(runtime, model.clone(), intra_threads, device)?;
    if device != Device::Auto {
        return Ok((Choice { device, reason: format!("--device {device} as configured"), warning: None }, first));
    }
    if first.provider() == crate::Provider::Cpu {
        let warning = first.warning().map(str::to_owned);
        let reason = warning.clone().unwrap_or_else(|| "CUDA not available; CPU".into());
        return Ok((Choice { device: Device::Cpu, reason, warning }, first));
    }
    let (w, h) = working_shape(model);
    let cuda_ms = median_run_ms(&mut first, w, h)?;
    let mut cpu = Analyzer::on(runtime, model.clone(), intra_threads, Device::Cpu)?;
    let cpu_ms = median_run_ms(&mut cpu, w, h)?;
    let choice = pick(cuda_ms, cpu_ms, w, h);
    let kept = if choice.device == Device::Cpu { cpu } else { first };
    Ok((choice, kept))
}

/// The model's input at 4:3 landscape.
fn working_shape(model: &Model) -> (u32, u32) {
    let side = model.manifest.input.long_side;
    (side, (side * 3 / 4).max(1))
}

/// The faster of the two, ties to the GPU (it leaves the CPU to the decoders).
fn pick(cuda_ms: f64, cpu_ms: f64, w: u32, h: u32) -> Choice {
    let figures =
        format!("CUDA {cuda_ms:.2} ms, CPU {cpu_ms:.2} ms a photo at {w} × {h} (median of {TIMED_RUNS} warm runs)");
    if cuda_ms <= cpu_ms {
        Choice {
            device: Device::Cuda,
            reason: format!("auto: CUDA is faster for this model: {figures}"),
            warning: None,
        }
    } else {
        Choice {
            device: Device::Cpu,
            reason: format!("auto: the CPU is faster for this model: {figures}"),
            warning: None,
        }
    }
}

/// One warm-up run, then the median of [`TIMED_RUNS`], in ms, on a synthetic photo of the shape.
fn median_run_ms(a: &mut Analyzer, w: u32, h: u32) -> Result<f64, InferError> {
    // Green on brown in a gradient: the model sees a plausible photo, not a constant.
    let rgb = RgbImage::from_fn(w, h, |x, y| {
        let g = ((x * 7 + y * 3) % 256) as u8;
        if (x / 32 + y / 32) % 3 == 0 {
            image::Rgb([60, 150u8.saturating_add(g / 4), 50])
        } else {
            image::Rgb([110, 90, g / 2])
        }
    });
    let prepared = a.prepare_decoded(crate::decode::Decoded::from_upright(image::DynamicImage::ImageRgb8(rgb)));
    a.segment(&prepared)?;
    let mut ms: Vec<f64> = (0..TIMED_RUNS)
        .map(|_| {
            let t = Instant::now();
            a.segment(&prepared).map(|_| t.elapsed().as_secs_f64() * 1000.0)
        })
        .collect::<Result<_, _>>()?;
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_faster_provider_wins_and_the_figures_are_the_reason() {
        let c = pick(3.1, 12.4, 512, 384);
        assert_eq!(c.device, Device::Cuda);
        assert!(c.reason.contains("CUDA 3.10 ms, CPU 12.40 ms a photo at 512 × 384"), "{}", c.reason);
        let c = pick(0.9, 0.4, 512, 384);
        assert_eq!(c.device, Device::Cpu, "a formula: the CPU is faster");
        assert!(c.reason.starts_with("auto: the CPU is faster"), "{}", c.reason);
        assert_eq!(pick(1.0, 1.0, 8, 6).device, Device::Cuda, "a tie goes to the GPU");
        assert!(c.warning.is_none(), "a measured choice is not a warning");
    }

    #[test]
    fn the_working_shape_is_the_input_side_at_four_by_three() {
        let m = Model::builtin();
        assert_eq!(working_shape(&m), (512, 384));
    }
}

//! One worker's model session and the three stages that use it.

use std::sync::Arc;

use image::{DynamicImage, RgbImage};
use ort::{session::Session, value::Tensor};

use crate::{detect, model::Model, runtime::Provider, InferError, Runtime};

/// A photo resized to the model's input, with its original size for mapping results back.
pub struct Prepared {
    pub rgb: RgbImage,
    pub orig_width: u32,
    pub orig_height: u32,
}

/// What the model says about a prepared photo.
pub struct Segmentation {
    /// Plant pixels, row-major, the prepared image's size.
    pub mask: Vec<bool>,
    /// The model's vegetation index at the same size, if it has that output.
    pub vegetation: Option<Vec<f32>>,
    /// The model's brightness (smoothed R+G+B) at the same size, if it has that output.
    pub brightness: Option<Vec<f32>>,
}

/// Plants found in a photo, in the photo's coordinates, with the tray's grid and whether the
/// count can be trusted.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub plants: Vec<demeter_domain::Plant>,
    pub plant_area_fraction: f32,
    pub grid: Option<demeter_domain::Grid>,
    pub trust: demeter_domain::Trust,
}

/// A model session owned by one worker (`Session::run` takes `&mut self`).
pub struct Analyzer {
    session: Session,
    model: Arc<Model>,
    provider: Provider,
    warning: Option<String>,
    /// The graph input's declared dimensions (negative: free), checked before every run so a
    /// photo the model cannot take fails as the photo's problem, not as a device error.
    input_dims: Vec<i64>,
    /// The input's scale, mean and std folded into one table per channel (index: the byte).
    input_lut: Box<[[f32; 256]; 3]>,
}

fn build_session(
    runtime: &Runtime,
    model: &Model,
    intra_threads: usize,
    device: demeter_domain::config::Device,
) -> Result<ort::Result<(Session, Provider, Option<String>)>, InferError> {
    // Builder errors hold the builder and are not `Send`: everything ort stays in here.
    // No spinning: ONNX Runtime's pool threads otherwise busy-wait after every run, taking a
    // core from the decoders of the other workers (the models are a few ms per photo).
    let mut builder = match Session::builder(runtime.env())
        .and_then(|b| Ok(b.with_intra_threads(intra_threads)?))
        .and_then(|b| Ok(b.with_intra_op_spinning(false)?))
    {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    let (provider, warning) = runtime.register(&mut builder, device)?;
    Ok(builder.commit_from_memory(&model.onnx).map(|s| (s, provider, warning)))
}

impl Analyzer {
    /// Creates a session for `model` with `intra_threads` ONNX Runtime threads, and checks that
    /// the graph has the input and output the manifest promises.
    pub fn new(runtime: &Runtime, model: Arc<Model>, intra_threads: usize) -> Result<Self, InferError> {
        Self::on(runtime, model, intra_threads, runtime.device())
    }

    /// [`Analyzer::new`] on a given device rather than the runtime's policy (what
    /// [`crate::choose`] decided for this model under `auto`).
    pub fn on(
        runtime: &Runtime,
        model: Arc<Model>,
        intra_threads: usize,
        device: demeter_domain::config::Device,
    ) -> Result<Self, InferError> {
        let at = model.dir.clone().unwrap_or_else(|| "<built-in>".into());
        let (session, provider, warning) = build_session(runtime, &model, intra_threads.max(1), device)?
            .map_err(|e| InferError::Model { path: at.clone(), reason: e.to_string() })?;
        // Every output Demeter reads must exist: the mask, and the index and brightness when the
        // manifest names them (a missing one would otherwise fail every photo at run time).
        let has_input = session.inputs().iter().any(|i| i.name() == model.manifest.input.name);
        let missing: Vec<&str> = [Some(model.mask_output()), model.vegetation_output(), model.brightness_output()]
            .into_iter()
            .flatten()
            .filter(|want| !session.outputs().iter().any(|o| o.name() == *want))
            .collect();
        if !has_input || !missing.is_empty() {
            return Err(InferError::Model {
                path: at,
                reason: format!(
                    "model.onnx has inputs [{}] and outputs [{}]; the manifest expects input {:?} and outputs {:?}",
                    session.inputs().iter().map(|i| i.name()).collect::<Vec<_>>().join(", "),
                    session.outputs().iter().map(|o| o.name()).collect::<Vec<_>>().join(", "),
                    model.manifest.input.name,
                    missing
                ),
            });
        }
        let input_dims: Vec<i64> = session
            .inputs()
            .iter()
            .find(|i| i.name() == model.manifest.input.name)
            .and_then(|i| i.dtype().tensor_shape())
            .map(|shape| shape.iter().copied().collect())
            .unwrap_or_default();
        let fits = |i: usize, want: i64| input_dims.get(i).is_none_or(|&d| d < 0 || d == want);
        if input_dims.len() != 4 || !fits(0, 1) || !fits(1, 3) {
            return Err(InferError::Model {
                path: at,
                reason: format!(
                    "model.onnx input {:?} has dimensions {input_dims:?}; Demeter feeds [1, 3, height, width] (NCHW RGB)",
                    model.manifest.input.name
                ),
            });
        }
        let spec = &model.manifest.input;
        let mut input_lut = Box::new([[0f32; 256]; 3]);
        for (c, table) in input_lut.iter_mut().enumerate() {
            for (byte, v) in table.iter_mut().enumerate() {
                *v = (byte as f32 * spec.scale - spec.mean[c]) / spec.std[c];
            }
        }
        Ok(Self { session, model, provider, warning, input_dims, input_lut })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Set when the requested device could not be used.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// Resizes the photo so its long side is the model's `long_side`, smaller photos included
    /// (upscaled), so that everything after this sees plants at the same scale whatever the
    /// camera's resolution.
    pub fn prepare(&self, img: &DynamicImage) -> Prepared {
        self.prepare_sized(img.to_rgb8(), img.width(), img.height())
    }

    /// [`Analyzer::prepare`] for a photo decoded at reduced size ([`crate::decode::decode_for`]):
    /// results and boxes still refer to the original's size. Takes the decoded photo so an RGB
    /// one is not copied before it is resized.
    pub fn prepare_decoded(&self, d: crate::decode::Decoded) -> Prepared {
        self.prepare_sized(d.image.into_rgb8(), d.width, d.height)
    }

    /// How large a photo must be decoded for this model ([`crate::decode::decode_for`]): twice
    /// the model's input side, so the final shrink still averages several pixels into one as it
    /// does from a full decode. Decoding at just the input side (1/4 instead of 1/2 scale for a
    /// 5 MP photo) would save about a tenth of a photo's time but loses the smallest seedlings:
    /// with plant-exg 1.1.0 one plant read as 6, with 2.0.0 the warm variant of the 4 × 5 tray
    /// read 17 for 19 (`make eval`); at twice the side every variant is within one.
    pub fn decode_long_side(&self) -> u32 {
        self.model.manifest.input.long_side.saturating_mul(2)
    }

    fn prepare_sized(&self, rgb: RgbImage, orig_width: u32, orig_height: u32) -> Prepared {
        let side = self.model.manifest.input.long_side;
        let rgb = if rgb.width().max(rgb.height()) == side { rgb } else { crate::resize::fit_long_side(&rgb, side) };
        Prepared { rgb, orig_width, orig_height }
    }

    /// Runs the model; returns the mask (row-major, the prepared image's size) and the
    /// vegetation index when the model has one.
    pub fn segment(&mut self, p: &Prepared) -> Result<Segmentation, InferError> {
        let spec = &self.model.manifest.input;
        let (w, h) = (p.rgb.width() as usize, p.rgb.height() as usize);
        let plane = w * h;
        let mut data = vec![0f32; 3 * plane];
        let (r, gb) = data.split_at_mut(plane);
        let (g, b) = gb.split_at_mut(plane);
        let [lr, lg, lb] = &*self.input_lut;
        for (((px, r), g), b) in p.rgb.as_raw().chunks_exact(3).zip(r).zip(g).zip(b) {
            *r = lr[usize::from(px[0])];
            *g = lg[usize::from(px[1])];
            *b = lb[usize::from(px[2])];
        }
        let dims = [1, 3, h as i64, w as i64];
        if self.input_dims.iter().zip(dims).any(|(&want, got)| want >= 0 && want != got) {
            return Err(InferError::InputShape { model: self.input_dims.clone(), photo: dims.to_vec() });
        }
        let input = Tensor::from_array(([1usize, 3, h, w], data.into_boxed_slice()))
            .map_err(|e| InferError::Run(e.to_string()))?;
        let outputs =
            self.session.run(ort::inputs![spec.name.as_str() => input]).map_err(|e| InferError::Run(e.to_string()))?;
        let map = |name: &str| -> Result<&[f32], InferError> {
            let (shape, v) = outputs[name]
                .try_extract_tensor::<f32>()
                .map_err(|e| InferError::Run(format!("output {name:?}: {e}")))?;
            if v.len() != plane {
                return Err(InferError::Run(format!("{name} has shape {shape:?}, expected [1, 1, {h}, {w}]")));
            }
            Ok(v)
        };
        let mask = map(self.model.mask_output())?.iter().map(|v| *v > 0.5).collect();
        let vegetation = self.model.vegetation_output().map(map).transpose()?.map(<[f32]>::to_vec);
        let brightness = self.model.brightness_output().map(map).transpose()?.map(<[f32]>::to_vec);
        Ok(Segmentation { mask, vegetation, brightness })
    }

    /// Turns the model's output into plants, the tray's grid and the trust flag, in the original
    /// photo's coordinates. `tray`: the rows and columns configured for the photo's location, if
    /// any (else the grid is the one found in the photo, if any).
    pub fn detect(
        &self,
        seg: &Segmentation,
        p: &Prepared,
        tray: Option<demeter_domain::location::TrayLayout>,
    ) -> Detection {
        let (w, h) = (p.rgb.width() as usize, p.rgb.height() as usize);
        let min_area = (self.model.manifest.thresholds.min_area_fraction * (w * h) as f64).ceil().max(1.0) as u64;
        let sx = f64::from(p.orig_width) / w as f64;
        let sy = f64::from(p.orig_height) / h as f64;
        let maps = detect::Maps {
            width: w,
            height: h,
            mask: &seg.mask,
            vegetation: seg.vegetation.as_deref(),
            brightness: seg.brightness.as_deref(),
        };
        let layout = tray.map(|t| detect::grid::Layout { rows: t.rows as usize, cols: t.cols as usize });
        let count = detect::count(maps, min_area, &self.model.manifest.detection, layout);
        let plants = count
            .plants
            .into_iter()
            .map(|f| {
                let c = f.component;
                demeter_domain::Plant {
                    bbox: [
                        (f64::from(c.bbox[0]) * sx) as u32,
                        (f64::from(c.bbox[1]) * sy) as u32,
                        (f64::from(c.bbox[2]) * sx).ceil() as u32,
                        (f64::from(c.bbox[3]) * sy).ceil() as u32,
                    ],
                    centroid: [((c.centroid[0] + 0.5) * sx) as f32, ((c.centroid[1] + 0.5) * sy) as f32],
                    area_px: (c.area as f64 * sx * sy).round() as u64,
                    cell: f.cell.map(|(r, c)| [r, c]),
                }
            })
            .collect();
        let grid = count.grid.map(|g| {
            let l = &g.lattice;
            let [ox, oy] = l.centre(0, 0);
            let s = (sx + sy) / 2.0;
            demeter_domain::Grid {
                rows: l.n_rows() as u32,
                cols: l.n_cols() as u32,
                origin: [((ox + 0.5) * sx) as f32, ((oy + 0.5) * sy) as f32],
                pitch: [(l.pitch[0] * s) as f32, (l.pitch[1] * s) as f32],
                angle_deg: l.angle.to_degrees() as f32,
                plants_per_cell: g.plants_per_cell,
            }
        });
        Detection {
            plants,
            plant_area_fraction: count.plant_pixels as f32 / (w * h).max(1) as f32,
            grid,
            trust: demeter_domain::Trust::from_reasons(count.reasons),
        }
    }
}

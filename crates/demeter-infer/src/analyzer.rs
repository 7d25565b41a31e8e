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
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    /// Plant pixels, row-major, the prepared image's size.
    pub mask: Vec<bool>,
    /// The model's vegetation index at the same size, if it has that output.
    pub vegetation: Option<Vec<f32>>,
    /// The model's brightness (smoothed R+G+B) at the same size, if it has that output.
    pub brightness: Option<Vec<f32>>,
    /// Each pixel's class (an index into the manifest's `classes`), for a mask model with a
    /// class axis; `mask` is then the pixels of a plant class.
    pub labels: Option<Vec<u8>>,
}

/// What a model says about one photo: a mask (family `mask`) or boxes (the `yolo-*` families,
/// after the confidence threshold and NMS, in the input tensor's pixels).
#[derive(Debug, Clone, PartialEq)]
pub enum ModelOutput {
    Mask(Segmentation),
    Boxes(Vec<crate::yolo::Detected>),
}

impl ModelOutput {
    /// The mask model's output, if this is one.
    pub fn as_mask(&self) -> Option<&Segmentation> {
        match self {
            ModelOutput::Mask(seg) => Some(seg),
            ModelOutput::Boxes(_) => None,
        }
    }
}

/// Plants found in a photo, in the photo's coordinates, with the tray's grid and whether the
/// count can be trusted.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub plants: Vec<demeter_domain::Plant>,
    /// What a multi-class model found that is not a plant (weeds, empty cells), by class.
    pub objects: Vec<demeter_domain::Plant>,
    /// Every class of a multi-class model with how many it found (plants and others); empty
    /// for a mask model without classes (its background class is never counted).
    pub class_counts: std::collections::BTreeMap<String, u32>,
    pub plant_area_fraction: f32,
    pub grid: Option<demeter_domain::Grid>,
    pub trust: demeter_domain::Trust,
}

/// What a photo's pipeline needs from inference: the model, where it runs, and a segmentation.
/// Either a worker's own session ([`Analyzer`]) or a share of one batched session
/// ([`crate::batch::BatchClient`]). Preparing and detecting are the model's, the same for both.
pub trait Segment {
    fn model(&self) -> &Model;

    fn provider(&self) -> Provider;

    /// Runs the model on a prepared photo.
    fn segment(&mut self, p: &Prepared) -> Result<ModelOutput, InferError>;

    /// Resizes the photo to the model's input ([`Model::input_size`]: the long side to
    /// `long_side`, smaller photos included, the short side in steps of `shape_multiple`), so
    /// that everything after this sees plants at the same scale whatever the camera's resolution.
    fn prepare(&self, img: &DynamicImage) -> Prepared {
        self.prepare_decoded(crate::decode::Decoded::from_upright(DynamicImage::ImageRgb8(img.to_rgb8())))
    }

    /// [`Segment::prepare`] for a photo decoded at reduced size ([`crate::decode::decode_for`]):
    /// results and boxes still refer to the original's size. Takes the decoded photo so an RGB
    /// one is not copied before it is resized.
    fn prepare_decoded(&self, d: crate::decode::Decoded) -> Prepared {
        let (orig_width, orig_height) = (d.width, d.height);
        let (w, h) = self.model().input_size(orig_width, orig_height);
        Prepared { rgb: d.into_rgb_sized(w, h), orig_width, orig_height }
    }

    /// How large a photo must be decoded for this model ([`crate::decode::decode_for`]): twice
    /// the model's input side, so the final shrink still averages several pixels into one as it
    /// does from a full decode. Decoding at just the input side (1/4 instead of 1/2 scale for a
    /// 5 MP photo) would save about a tenth of a photo's time but loses the smallest seedlings:
    /// with plant-exg 1.1.0 one plant read as 6, with 2.0.0 the warm variant of the 4 × 5 tray
    /// read 17 for 19 (`make eval`); at twice the side every variant is within one.
    fn decode_long_side(&self) -> u32 {
        self.model().manifest.input.long_side.saturating_mul(2)
    }

    /// Turns the model's output into plants, the tray's grid and the trust flag, in the original
    /// photo's coordinates. `tray`: the rows and columns configured for the photo's location, if
    /// any (else the grid is the one found in the photo, if any).
    fn detect(
        &self,
        output: &ModelOutput,
        p: &Prepared,
        tray: Option<demeter_domain::location::TrayLayout>,
    ) -> Detection {
        match output {
            ModelOutput::Mask(seg) => detect_plants(self.model(), seg, p, tray),
            ModelOutput::Boxes(boxes) => detect_boxes(self.model(), boxes, p),
        }
    }
}

/// The model's input normalisation: scale, mean and std folded into one table per channel
/// (index: the byte), writing planar NCHW.
pub struct Encoder {
    lut: Box<[[f32; 256]; 3]>,
    /// The square's side, for a letterboxed model.
    letterbox: Option<u32>,
}

impl Encoder {
    pub fn new(model: &Model) -> Self {
        let spec = &model.manifest.input;
        let mut lut = Box::new([[0f32; 256]; 3]);
        for (c, table) in lut.iter_mut().enumerate() {
            for (byte, v) in table.iter_mut().enumerate() {
                *v = (byte as f32 * spec.scale - spec.mean[c]) / spec.std[c];
            }
        }
        Self { lut, letterbox: model.manifest.letterbox().then_some(spec.long_side) }
    }

    /// The input tensor's `(width, height)` for a prepared photo.
    pub fn tensor_size(&self, rgb: &RgbImage) -> (u32, u32) {
        self.letterbox.map_or(rgb.dimensions(), |side| (side, side))
    }

    /// The photo's three planes (R, G, B): one photo's input tensor data.
    pub fn encode(&self, rgb: &RgbImage) -> Vec<f32> {
        let (w, h) = self.tensor_size(rgb);
        let mut data = Vec::with_capacity(3 * w as usize * h as usize);
        self.encode_into(rgb, &mut data);
        data
    }

    /// Appends the photo's three planes (R, G, B) to `out`; letterboxed, in the middle of the
    /// square with grey (114) around it.
    pub fn encode_into(&self, rgb: &RgbImage, out: &mut Vec<f32>) {
        let [lr, lg, lb] = &*self.lut;
        let (width, height) = (rgb.width() as usize, rgb.height() as usize);
        let Some(side) = self.letterbox.map(|s| s as usize) else {
            let plane = width * height;
            let at = out.len();
            out.resize(at + 3 * plane, 0.0);
            let (r, gb) = out[at..].split_at_mut(plane);
            let (g, b) = gb.split_at_mut(plane);
            for (((px, r), g), b) in rgb.as_raw().chunks_exact(3).zip(r).zip(g).zip(b) {
                *r = lr[usize::from(px[0])];
                *g = lg[usize::from(px[1])];
                *b = lb[usize::from(px[2])];
            }
            return;
        };
        let plane = side * side;
        let (width, height) = (width.min(side), height.min(side));
        let box_ = crate::yolo::Letterbox { side: side as u32, width: width as u32, height: height as u32 };
        let (left, top) = box_.offset();
        let (left, top) = (left as usize, top as usize);
        for (c, table) in [lr, lg, lb].into_iter().enumerate() {
            let at = out.len();
            out.resize(at + plane, table[114]);
            let dst = &mut out[at..];
            for (y, row) in rgb.as_raw().chunks_exact(3 * rgb.width() as usize).take(height).enumerate() {
                let line = &mut dst[(top + y) * side + left..][..width];
                for (v, px) in line.iter_mut().zip(row.chunks_exact(3)) {
                    *v = table[usize::from(px[c])];
                }
            }
        }
    }
}

/// A model session with Demeter's input and output contract. Owned by one worker, or by the
/// batcher that serves them all (`Session::run` takes `&mut self`).
pub struct Analyzer {
    session: Session,
    model: Arc<Model>,
    provider: Provider,
    warning: Option<String>,
    /// What the load checks learnt: the input's declared dimensions (checked before every run,
    /// so a photo the model cannot take fails as the photo's problem, not as a device error).
    contract: crate::contract::Contract,
    encoder: Encoder,
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
        let contract =
            crate::contract::check(&session, &model).map_err(|reason| InferError::Model { path: at, reason })?;
        let encoder = Encoder::new(&model);
        Ok(Self { session, model, provider, warning, contract, encoder })
    }

    /// The shared model (for a batcher's clients).
    pub fn model_arc(&self) -> &Arc<Model> {
        &self.model
    }

    /// The graph's tensors and metadata (`demeter model check`).
    pub fn graph(&self) -> crate::import::Graph {
        crate::import::describe(&self.session)
    }

    /// Set when the requested device could not be used.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// Whether the graph's batch axis is free, so one run can take several photos of a shape.
    pub fn has_batch_axis(&self) -> bool {
        self.contract.input_dims.first().is_some_and(|&d| d < 0)
    }

    /// Runs the model on `n` photos of `width` × `height`, encoded one after the other in
    /// `data` ([`Encoder::encode_into`]); one segmentation per photo, in order.
    pub fn run(
        &mut self,
        n: usize,
        (width, height): (u32, u32),
        data: Vec<f32>,
    ) -> Result<Vec<ModelOutput>, InferError> {
        let (w, h) = (width as usize, height as usize);
        let plane = w * h;
        let dims = [n as i64, 3, h as i64, w as i64];
        if self.contract.input_dims.iter().zip(dims).any(|(&want, got)| want >= 0 && want != got) {
            return Err(InferError::InputShape { model: self.contract.input_dims.clone(), photo: dims.to_vec() });
        }
        if data.len() != n * 3 * plane {
            return Err(InferError::Run(format!("{} input values for {n} photos of {w} × {h}", data.len())));
        }
        let input =
            Tensor::from_array(([n, 3, h, w], data.into_boxed_slice())).map_err(|e| InferError::Run(e.to_string()))?;
        let name = self.model.manifest.input.name.as_str();
        let outputs = self.session.run(ort::inputs![name => input]).map_err(|e| InferError::Run(e.to_string()))?;
        crate::contract::read(&self.model, &self.contract, &outputs, n, (width, height))
    }

    /// Runs every shape in `sizes` once at every batch size in `batches`, so no photo pays for a
    /// GPU's algorithm search or memory growth. Returns the time it took.
    pub fn warm_up(&mut self, sizes: &[(u32, u32)], batches: &[usize]) -> Result<std::time::Duration, InferError> {
        let t = std::time::Instant::now();
        for &(w, h) in sizes {
            for &n in batches {
                self.run(n, (w, h), vec![0.5; n * 3 * w as usize * h as usize])?;
            }
        }
        Ok(t.elapsed())
    }
}

impl Segment for Analyzer {
    fn model(&self) -> &Model {
        &self.model
    }

    fn provider(&self) -> Provider {
        self.provider
    }

    fn segment(&mut self, p: &Prepared) -> Result<ModelOutput, InferError> {
        let mut out = self.run(1, self.encoder.tensor_size(&p.rgb), self.encoder.encode(&p.rgb))?;
        Ok(out.pop().expect("one photo in, one out"))
    }
}

/// Turns the model's output into plants, the tray's grid and the trust flag, in the original
/// photo's coordinates ([`Segment::detect`]).
fn detect_plants(
    model: &Model,
    seg: &Segmentation,
    p: &Prepared,
    tray: Option<demeter_domain::location::TrayLayout>,
) -> Detection {
    let (w, h) = (p.rgb.width() as usize, p.rgb.height() as usize);
    let min_area = (model.manifest.thresholds.min_area_fraction * (w * h) as f64).ceil().max(1.0) as u64;
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
    let count = detect::count(maps, min_area, &model.manifest.detection, layout);
    let to_photo = |c: &detect::Component| demeter_domain::Plant {
        bbox: [
            (f64::from(c.bbox[0]) * sx) as u32,
            (f64::from(c.bbox[1]) * sy) as u32,
            (f64::from(c.bbox[2]) * sx).ceil() as u32,
            (f64::from(c.bbox[3]) * sy).ceil() as u32,
        ],
        centroid: [((c.centroid[0] + 0.5) * sx) as f32, ((c.centroid[1] + 0.5) * sy) as f32],
        area_px: (c.area as f64 * sx * sy).round() as u64,
        ..Default::default()
    };
    let classes = &model.manifest.classes;
    let mut class_counts = std::collections::BTreeMap::new();
    let plants: Vec<demeter_domain::Plant> = count
        .plants
        .into_iter()
        .map(|f| {
            let class = seg.labels.as_deref().map(|labels| {
                let class = majority_label(labels, &seg.mask, w, &f.component.bbox, classes.len());
                *class_counts.entry(classes[class].clone()).or_insert(0) += 1;
                classes[class].clone()
            });
            demeter_domain::Plant { cell: f.cell.map(|(r, c)| [r, c]), class, ..to_photo(&f.component) }
        })
        .collect();
    // A mask model with classes: each foreground class that is not a plant (weeds, say) is
    // counted as plain connected components of its pixels.
    let mut objects = Vec::new();
    if let Some(labels) = seg.labels.as_deref() {
        for (index, class) in classes.iter().enumerate().skip(1) {
            if model.manifest.is_plant_class(index) {
                class_counts.entry(class.clone()).or_insert(0);
                continue;
            }
            let pixels: Vec<bool> = labels.iter().map(|&l| usize::from(l) == index).collect();
            let found = detect::components(&pixels, w, h, min_area);
            class_counts.insert(class.clone(), found.len() as u32);
            objects.extend(found.iter().map(|c| demeter_domain::Plant { class: Some(class.clone()), ..to_photo(c) }));
        }
    }
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
        objects,
        class_counts,
        plant_area_fraction: count.plant_pixels as f32 / (w * h).max(1) as f32,
        grid,
        trust: demeter_domain::Trust::from_reasons(count.reasons),
    }
}

/// The plant class most of a plant's pixels have: the plant pixels inside its box (`[x, y,
/// width, height]` in mask pixels) voted by label; ties go to the lower class.
fn majority_label(labels: &[u8], mask: &[bool], width: usize, bbox: &[u32; 4], classes: usize) -> usize {
    let mut votes = vec![0usize; classes];
    let [x, y, bw, bh] = bbox.map(|v| v as usize);
    for row in y..y + bh {
        for i in row * width + x..row * width + x + bw {
            if mask[i] {
                votes[usize::from(labels[i])] += 1;
            }
        }
    }
    // Plant pixels always carry a plant class, so a plant with pixels has a winner above 0.
    votes.iter().enumerate().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0))).map_or(0, |(c, _)| c)
}

/// A box model's detections as plants (and other classes' objects) in the original photo's
/// coordinates: the letterbox's padding taken off, then scaled back ([`Segment::detect`]).
fn detect_boxes(model: &Model, boxes: &[crate::yolo::Detected], p: &Prepared) -> Detection {
    let m = &model.manifest;
    let (w, h) = p.rgb.dimensions();
    let (left, top) = model.letterbox((w, h)).map_or((0, 0), |l| l.offset());
    let (sx, sy) = (f64::from(p.orig_width) / f64::from(w), f64::from(p.orig_height) / f64::from(h));
    let (ow, oh) = (f64::from(p.orig_width), f64::from(p.orig_height));
    let mut class_counts: std::collections::BTreeMap<String, u32> = m.classes.iter().map(|c| (c.clone(), 0)).collect();
    let (mut plants, mut objects, mut plant_area) = (Vec::new(), Vec::new(), 0.0);
    for d in boxes {
        let x = |v: f32| ((f64::from(v) - f64::from(left)) * sx).clamp(0.0, ow);
        let y = |v: f32| ((f64::from(v) - f64::from(top)) * sy).clamp(0.0, oh);
        let (x0, y0, x1, y1) = (x(d.bbox[0]), y(d.bbox[1]), x(d.bbox[2]), y(d.bbox[3]));
        if x1 <= x0 || y1 <= y0 {
            continue; // entirely in the padding
        }
        let area = d.area.map_or((x1 - x0) * (y1 - y0), |a| a * sx * sy);
        // `yolo::decode` keeps only class indices the manifest names.
        let class = m.classes[d.class].clone();
        *class_counts.entry(class.clone()).or_default() += 1;
        let found = demeter_domain::Plant {
            bbox: [x0 as u32, y0 as u32, (x1 - x0).ceil() as u32, (y1 - y0).ceil() as u32],
            centroid: [((x0 + x1) / 2.0) as f32, ((y0 + y1) / 2.0) as f32],
            area_px: area.round() as u64,
            cell: None,
            class: Some(class),
            confidence: Some(d.score),
        };
        if m.is_plant_class(d.class) {
            plant_area += area;
            plants.push(found);
        } else {
            objects.push(found);
        }
    }
    let reasons = if plants.is_empty() { vec![demeter_domain::TrustReason::NoPlants] } else { vec![] };
    Detection {
        plants,
        objects,
        class_counts,
        plant_area_fraction: (plant_area / (ow * oh).max(1.0)).min(1.0) as f32,
        grid: None,
        trust: demeter_domain::Trust::from_reasons(reasons),
    }
}

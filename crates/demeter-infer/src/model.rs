//! Models: `model.onnx` plus a `manifest.toml` that says how to feed it and read it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::InferError;

/// The default model, built by `models/build.py` and compiled into the binary so the appliance
/// runs on embedded defaults from anywhere.
const DEFAULT_ONNX: &[u8] = include_bytes!("../../../models/plant-exg/model.onnx");
const DEFAULT_MANIFEST: &str = include_str!("../../../models/plant-exg/manifest.toml");

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// What kind of model this is, so Demeter knows how to read its outputs.
    #[serde(default)]
    pub family: Family,
    /// The classes a model tells apart, in the order of its class indices (a `yolo-*` model's
    /// box classes, or the channels of a mask model's class axis, the background first).
    #[serde(default)]
    pub classes: Vec<String>,
    /// Which of `classes` are plants (counted in `total_detected`); absent: all of them (box
    /// models; a mask model with classes must say).
    #[serde(default)]
    pub plant_classes: Option<Vec<String>>,
    pub input: InputSpec,
    pub outputs: BTreeMap<String, OutputSpec>,
    pub thresholds: Thresholds,
    /// How the mask becomes plants (see [`crate::detect::Rules`]); absent: plain components.
    #[serde(default)]
    pub detection: crate::detect::Rules,
    #[serde(default)]
    pub provenance: BTreeMap<String, toml::Value>,
}

impl Manifest {
    /// The family's outputs, classes and thresholds, checked before any session is built.
    fn check_family(&self) -> Result<(), String> {
        let output = |key: &str| self.outputs.get(key);
        match self.family {
            Family::Mask => {
                if output("mask").is_none() {
                    return Err("outputs.mask is missing: a mask model needs a plant mask output".into());
                }
                if self.classes.len() > 256 {
                    return Err(format!("classes names {} classes; a mask model has at most 256", self.classes.len()));
                }
                match (self.classes.len(), &self.plant_classes) {
                    (0, None) => {}
                    (0, Some(_)) => {
                        return Err("plant_classes needs classes: a mask model without classes has one \
                                    channel, plants"
                            .into())
                    }
                    (1, _) => {
                        return Err("classes names one class: a mask model's class axis has the background \
                                    first and at least one more class"
                            .into())
                    }
                    (_, None) => {
                        return Err(format!(
                            "plant_classes is missing: say which of {:?} are plants (the first, {:?}, is the \
                             background)",
                            &self.classes[1..],
                            self.classes[0]
                        ))
                    }
                    (_, Some(plants)) => {
                        if let Some(unknown) = plants.iter().find(|c| !self.classes[1..].contains(c)) {
                            return Err(format!(
                                "plant_classes names {unknown:?}, which is not one of the foreground classes {:?} \
                                 (the first class, {:?}, is the background)",
                                &self.classes[1..],
                                self.classes[0]
                            ));
                        }
                    }
                }
            }
            Family::YoloDetect | Family::YoloSeg => {
                let boxes = output("boxes").ok_or_else(|| {
                    format!("outputs.boxes is missing: a {} model needs its box output named", self.family.as_str())
                })?;
                if boxes.layout.is_none() {
                    return Err("outputs.boxes.layout is missing: \"v8\" ([1, 4+classes, N]), \"v5\" \
                                ([1, N, 5+classes]) or \"end-to-end\" ([1, N, 6], NMS in the graph)"
                        .into());
                }
                if self.family == Family::YoloSeg && output("protos").is_none() {
                    return Err("outputs.protos is missing: a yolo-seg model needs its prototype masks output".into());
                }
                if self.classes.is_empty() {
                    return Err(format!("classes is empty: a {} model names its classes", self.family.as_str()));
                }
                if let Some(plants) = &self.plant_classes {
                    if let Some(unknown) = plants.iter().find(|c| !self.classes.contains(c)) {
                        return Err(format!(
                            "plant_classes names {unknown:?}, which is not one of classes {:?}",
                            self.classes
                        ));
                    }
                }
                for (key, value) in [("confidence", self.thresholds.confidence), ("iou", self.thresholds.iou)] {
                    if value.is_some_and(|v| !(v > 0.0 && v <= 1.0)) {
                        return Err(format!("thresholds.{key} must be in (0, 1]"));
                    }
                }
                if !self.detection.is_plain() {
                    return Err("[detection] rules read a mask's vegetation index; a box model has none".into());
                }
            }
        }
        if let Some((key, _)) = self.outputs.iter().find(|(k, o)| *k != "boxes" && o.layout.is_some()) {
            return Err(format!("outputs.{key}.layout: only outputs.boxes has a layout"));
        }
        let mask_output = |k: &str| self.family == Family::Mask && k == "mask";
        if let Some((key, _)) = self.outputs.iter().find(|(k, o)| !mask_output(k) && o.activation.is_some()) {
            return Err(format!("outputs.{key}.activation: only a mask model's outputs.mask has an activation"));
        }
        Ok(())
    }

    /// Whether the photo is letterboxed into a square ([`InputSpec::letterbox`]).
    pub fn letterbox(&self) -> bool {
        self.input.letterbox.unwrap_or(self.family.boxes())
    }

    /// The confidence threshold of a box model.
    pub fn confidence(&self) -> f32 {
        self.thresholds.confidence.unwrap_or(0.25) as f32
    }

    /// The NMS IoU threshold of a box model.
    pub fn iou(&self) -> f32 {
        self.thresholds.iou.unwrap_or(0.45) as f32
    }

    /// Whether a mask model's `mask` holds logits rather than probabilities.
    pub fn mask_logits(&self) -> bool {
        self.outputs.get("mask").and_then(|o| o.activation) == Some(Activation::Logits)
    }

    /// Whether class `index` counts as a plant.
    pub fn is_plant_class(&self, index: usize) -> bool {
        match (&self.plant_classes, self.classes.get(index)) {
            (None, _) => true,
            (Some(plants), Some(name)) => plants.contains(name),
            (Some(_), None) => false,
        }
    }
}

/// The model families Demeter reads (`family` in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// A semantic mask: output `mask` is `[1, 1, H, W]`, one probability (or logit) per input
    /// pixel, or `[1, C, H, W]` with a class axis for `classes` (the first the background); and,
    /// optionally, `vegetation` and `brightness`, `[1, 1, H, W]`, for the adaptive rules.
    #[default]
    Mask,
    /// A box detector in an Ultralytics export layout: output `boxes` ([`crate::yolo::BoxLayout`]).
    YoloDetect,
    /// Instance segmentation in the YOLO-seg layout: output `boxes` with mask coefficients after
    /// the class scores, and output `protos`, `[1, nm, H/4, W/4]` prototype masks.
    YoloSeg,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Mask => "mask",
            Family::YoloDetect => "yolo-detect",
            Family::YoloSeg => "yolo-seg",
        }
    }

    /// Whether the model finds boxes (a YOLO family) rather than painting a mask.
    pub fn boxes(self) -> bool {
        self != Family::Mask
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Graph input name.
    pub name: String,
    /// Only "NCHW" is supported.
    pub layout: String,
    /// Only "RGB" is supported.
    pub channels: String,
    /// Pixel values (0..255) are multiplied by this, then `(v - mean) / std` per channel.
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// The photo is resized so its long side has this many pixels, and its short side to the
    /// nearest multiple of `shape_multiple` (see [`Model::input_size`]).
    pub long_side: u32,
    /// Input shapes come in steps of this many pixels on the short side, so a model sees a few
    /// shapes rather than one per camera (a GPU searches its algorithms once per shape, and
    /// batches hold one shape). 1: the aspect ratio exactly.
    #[serde(default = "default_shape_multiple")]
    pub shape_multiple: u32,
    /// Letterboxing: the photo, resized so it fits in `long_side` × `long_side` with its aspect
    /// kept, sits in the middle of a square of that size, padded with grey (114), as Ultralytics
    /// trains and exports its models. Absent: on for the `yolo-*` families, off for masks.
    #[serde(default)]
    pub letterbox: Option<bool>,
}

fn default_shape_multiple() -> u32 {
    32
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    #[serde(default)]
    pub meaning: String,
    /// The box output's layout (`boxes` of the `yolo-*` families): "v8", "v5" or "end-to-end".
    #[serde(default)]
    pub layout: Option<crate::yolo::BoxLayout>,
    /// What a mask model's `mask` holds ([`Activation`]); absent: probabilities.
    #[serde(default)]
    pub activation: Option<Activation>,
}

/// What the values of a mask model's `mask` output are. With one channel, a pixel is a plant
/// where its probability is over 0.5, or its logit over 0 (the same rule: sigmoid(0) = 0.5).
/// With a class axis, a pixel is the class with the highest value, whichever they are (softmax
/// keeps the order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    Probability,
    Logits,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Thresholds {
    /// Connected components smaller than this share of the model input are not plants (masks).
    #[serde(default)]
    pub min_area_fraction: f64,
    /// Boxes scoring below this are dropped (`yolo-*`; default 0.25, as Ultralytics predicts).
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Non-maximum suppression: a box overlapping a better one of its class by more than this
    /// IoU is dropped (`yolo-*`; default 0.45).
    #[serde(default)]
    pub iou: Option<f64>,
    /// Other values baked into the graph, recorded for provenance.
    #[serde(flatten)]
    pub other: BTreeMap<String, toml::Value>,
}

/// A loaded model, shared by all workers.
#[derive(Debug, Clone)]
pub struct Model {
    pub manifest: Manifest,
    pub onnx: Arc<[u8]>,
    /// SHA-256 of `model.onnx`, hex.
    pub sha256: String,
    /// SHA-256 of `manifest.toml`, hex.
    pub manifest_sha256: String,
    /// Where it came from: a folder, or `None` for the built-in default.
    pub dir: Option<PathBuf>,
}

impl Model {
    /// The model compiled into the binary.
    pub fn builtin() -> Self {
        Self::from_parts(DEFAULT_MANIFEST, DEFAULT_ONNX.into(), None, Path::new("<built-in>"))
            .expect("the built-in model's manifest is checked by tests")
    }

    /// Loads `dir/model.onnx` and `dir/manifest.toml`.
    pub fn load_dir(dir: &Path) -> Result<Self, InferError> {
        let err = |reason: String| InferError::Model { path: dir.to_owned(), reason };
        let manifest = std::fs::read_to_string(dir.join("manifest.toml"))
            .map_err(|e| err(format!("cannot read manifest.toml: {e}")))?;
        let onnx = std::fs::read(dir.join("model.onnx")).map_err(|e| err(format!("cannot read model.onnx: {e}")))?;
        Self::from_parts(&manifest, onnx.into(), Some(dir.to_owned()), dir)
    }

    /// A model from the contents of its two files, checked as [`Model::load_dir`] checks a
    /// folder; `at` names it in errors (and is its `dir` until it is given a folder).
    pub fn from_bytes(manifest_text: &str, onnx: Vec<u8>, at: &Path) -> Result<Self, InferError> {
        Self::from_parts(manifest_text, onnx.into(), Some(at.to_owned()), at)
    }

    fn from_parts(manifest_text: &str, onnx: Arc<[u8]>, dir: Option<PathBuf>, at: &Path) -> Result<Self, InferError> {
        let err = |reason: String| InferError::Model { path: at.to_owned(), reason };
        let manifest: Manifest = toml::from_str(manifest_text).map_err(|e| err(format!("manifest.toml: {e}")))?;
        if manifest.input.layout != "NCHW" {
            return Err(err(format!("input.layout {:?} is not supported (only \"NCHW\")", manifest.input.layout)));
        }
        if manifest.input.channels != "RGB" {
            return Err(err(format!("input.channels {:?} is not supported (only \"RGB\")", manifest.input.channels)));
        }
        if !(16..=4096).contains(&manifest.input.long_side) {
            return Err(err("input.long_side must be between 16 and 4096".into()));
        }
        if !(1..=manifest.input.long_side).contains(&manifest.input.shape_multiple) {
            return Err(err("input.shape_multiple must be between 1 and input.long_side".into()));
        }
        if manifest.input.std.contains(&0.0) {
            return Err(err("input.std must not contain 0".into()));
        }
        manifest.check_family().map_err(err)?;
        if !(0.0..1.0).contains(&manifest.thresholds.min_area_fraction) {
            return Err(err("thresholds.min_area_fraction must be in 0..1".into()));
        }
        manifest.detection.check().map_err(err)?;
        let sha256 = format!("{:x}", Sha256::digest(&onnx));
        let manifest_sha256 = format!("{:x}", Sha256::digest(manifest_text.as_bytes()));
        Ok(Self { manifest, onnx, sha256, manifest_sha256, dir })
    }

    pub fn mask_output(&self) -> &str {
        &self.manifest.outputs["mask"].name
    }

    /// What a result records about the model: name, version, hashes, and every number the
    /// count depends on.
    pub fn reference(&self) -> demeter_domain::ModelRef {
        let m = &self.manifest;
        let mut thresholds = std::collections::BTreeMap::new();
        thresholds.insert("input.long_side".to_owned(), f64::from(m.input.long_side));
        thresholds.insert("input.shape_multiple".to_owned(), f64::from(m.input.shape_multiple));
        thresholds.insert("thresholds.min_area_fraction".to_owned(), m.thresholds.min_area_fraction);
        if m.family.boxes() {
            thresholds.insert("thresholds.confidence".to_owned(), f64::from(m.confidence()));
            thresholds.insert("thresholds.iou".to_owned(), f64::from(m.iou()));
        }
        for (k, v) in &m.thresholds.other {
            if let Some(x) = v.as_float().or_else(|| v.as_integer().map(|i| i as f64)) {
                thresholds.insert(format!("thresholds.{k}"), x);
            }
        }
        for (key, value) in if m.family.boxes() { vec![] } else { m.detection.values() } {
            thresholds.insert(format!("detection.{key}"), value);
        }
        demeter_domain::ModelRef {
            name: m.name.clone(),
            version: m.version.clone(),
            manifest_sha256: self.manifest_sha256.clone(),
            onnx_sha256: self.sha256.clone(),
            thresholds,
            family: m.family.as_str().to_owned(),
            plant_classes: if m.family.boxes() {
                m.plant_classes.clone().unwrap_or_else(|| m.classes.clone())
            } else {
                m.plant_classes.clone().unwrap_or_default()
            },
        }
    }

    /// The model's input size for a photo of `width` × `height`: the long side is
    /// `input.long_side`; the short side keeps the aspect ratio, rounded to the nearest multiple
    /// of `input.shape_multiple` (at least one multiple, at most the long side). With the
    /// defaults (512, 32) every photo is one of 31 shapes (512 × 32k and 32k × 512) and the
    /// common cameras' are 512 × 384 (4:3), 512 × 352 (3:2, stretched 3.2 %), 512 × 288 (16:9),
    /// 512 × 512; the stretch is at most half a step (16 px, 6 % of a 256-pixel side).
    /// A letterboxed model ([`Manifest::letterbox`]) gets the photo at its exact aspect ratio
    /// (the padding, not a stretch, fills the square: [`Model::tensor_size`]).
    pub fn input_size(&self, width: u32, height: u32) -> (u32, u32) {
        let (side, step) = (self.manifest.input.long_side, self.manifest.input.shape_multiple);
        let step = if self.manifest.letterbox() { 1 } else { step };
        let (long, short) = (width.max(height).max(1), width.min(height).max(1));
        let exact = f64::from(short) * f64::from(side) / f64::from(long);
        let rounded = ((exact / f64::from(step)).round() as u32 * step).clamp(step.min(side), side);
        if width >= height {
            (side, rounded)
        } else {
            (rounded, side)
        }
    }

    /// The input tensor's `(width, height)` for a photo prepared at `size`: the square for a
    /// letterboxed model, else the size itself.
    pub fn tensor_size(&self, size: (u32, u32)) -> (u32, u32) {
        if self.manifest.letterbox() {
            (self.manifest.input.long_side, self.manifest.input.long_side)
        } else {
            size
        }
    }

    /// Where a photo prepared at `(width, height)` sits in the letterboxed square, if the model
    /// letterboxes.
    pub fn letterbox(&self, (width, height): (u32, u32)) -> Option<crate::yolo::Letterbox> {
        self.manifest.letterbox().then_some(crate::yolo::Letterbox {
            side: self.manifest.input.long_side,
            width,
            height,
        })
    }

    /// The shapes of the commonest cameras' photos (4:3, 3:2, 16:9, 1:1, landscape and portrait):
    /// what a GPU session is warmed up with before the first photo.
    pub fn common_input_sizes(&self) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        for (w, h) in [(4, 3), (3, 2), (16, 9), (1, 1), (3, 4), (2, 3), (9, 16)] {
            let size = self.tensor_size(self.input_size(w * 1000, h * 1000));
            if !out.contains(&size) {
                out.push(size);
            }
        }
        out
    }

    /// The vegetation-index output, when the model has one (the seed check, adaptive masks).
    pub fn vegetation_output(&self) -> Option<&str> {
        self.manifest.outputs.get("vegetation").map(|o| o.name.as_str())
    }

    /// The brightness output (the smoothed R+G+B), when the model has one (the dark floor).
    pub fn brightness_output(&self) -> Option<&str> {
        self.manifest.outputs.get("brightness").map(|o| o.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_parses_and_matches_its_bytes() {
        let m = Model::builtin();
        assert_eq!(m.manifest.name, "plant-exg");
        assert_eq!(m.manifest.input.long_side, 512);
        let recorded = m.manifest.provenance["sha256"].as_str().unwrap();
        assert_eq!(recorded, m.sha256, "manifest.toml and model.onnx come from the same build");
    }

    #[test]
    fn input_sizes_come_in_steps_of_the_shape_multiple() {
        let m = Model::builtin();
        assert_eq!(m.input_size(4000, 3000), (512, 384));
        assert_eq!(m.input_size(6000, 4000), (512, 352), "3:2: 341.3 rounds to 352");
        assert_eq!(m.input_size(1920, 1080), (512, 288));
        assert_eq!(m.input_size(3000, 4000), (384, 512));
        assert_eq!(m.input_size(100, 100), (512, 512), "small photos are enlarged");
        assert_eq!(m.input_size(10_000, 10), (512, 32), "never below one step");
        let sizes: std::collections::BTreeSet<_> =
            (1..=4000).step_by(7).flat_map(|h| [m.input_size(4000, h), m.input_size(h, 4000)]).collect();
        assert_eq!(sizes.len(), 31, "a finite family: {sizes:?}");
        assert_eq!(m.common_input_sizes().len(), 7);
        let mut exact = m.clone();
        exact.manifest.input.shape_multiple = 1;
        assert_eq!(exact.input_size(6000, 4000), (512, 341));
    }

    #[test]
    fn a_folder_without_manifest_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let e = Model::load_dir(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("manifest.toml"), "{e}");
        assert!(e.contains(&tmp.path().display().to_string()), "{e}");
    }

    #[test]
    fn unsupported_layouts_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("manifest.toml"), DEFAULT_MANIFEST.replace("\"NCHW\"", "\"NHWC\"")).unwrap();
        std::fs::write(tmp.path().join("model.onnx"), DEFAULT_ONNX).unwrap();
        let e = Model::load_dir(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("NHWC"), "{e}");
    }

    /// The built-in manifest with `edit` applied, loaded as a folder: the error, if any.
    fn load_edited(edit: impl Fn(&str) -> String) -> Result<Model, String> {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("manifest.toml"), edit(DEFAULT_MANIFEST)).unwrap();
        std::fs::write(tmp.path().join("model.onnx"), DEFAULT_ONNX).unwrap();
        Model::load_dir(tmp.path()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_mask_model_with_classes_names_its_background_first_and_its_plants() {
        fn with(classes: &'static str) -> impl Fn(&str) -> String {
            move |m: &str| {
                m.replacen("[input]", &format!("{classes}\n[input]"), 1).replacen(
                    "[outputs.mask]\nname = \"mask\"",
                    "[outputs.mask]\nname = \"mask\"\nactivation = \"logits\"",
                    1,
                )
            }
        }
        let ok = load_edited(with("classes = [\"soil\", \"crop\", \"weed\"]\nplant_classes = [\"crop\"]")).unwrap();
        assert!(ok.manifest.mask_logits());
        assert!(ok.manifest.is_plant_class(1) && !ok.manifest.is_plant_class(2));
        assert_eq!(ok.reference().plant_classes, vec!["crop".to_owned()]);
        let e = load_edited(with("classes = [\"soil\", \"crop\"]")).unwrap_err();
        assert!(e.contains("plant_classes is missing") && e.contains("\"soil\", is the background"), "{e}");
        let e = load_edited(with("classes = [\"soil\", \"crop\"]\nplant_classes = [\"soil\"]")).unwrap_err();
        assert!(e.contains("plant_classes names \"soil\"") && e.contains("background"), "{e}");
        let e = load_edited(with("classes = [\"crop\"]\nplant_classes = [\"crop\"]")).unwrap_err();
        assert!(e.contains("classes names one class"), "{e}");
        let e = load_edited(with("plant_classes = [\"crop\"]")).unwrap_err();
        assert!(e.contains("plant_classes needs classes"), "{e}");
        // Only a mask output has an activation.
        let e = load_edited(|m| {
            m.replacen(
                "[outputs.vegetation]\nname = \"vegetation\"",
                "[outputs.vegetation]\nname = \"vegetation\"\nactivation = \"logits\"",
                1,
            )
        })
        .unwrap_err();
        assert!(e.contains("outputs.vegetation.activation"), "{e}");
        let e = load_edited(|m| {
            m.replacen(
                "[outputs.mask]\nname = \"mask\"",
                "[outputs.mask]\nname = \"mask\"\nactivation = \"softmax\"",
                1,
            )
        })
        .unwrap_err();
        assert!(e.contains("softmax"), "{e}");
    }
}

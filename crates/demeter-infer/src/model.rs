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
    pub input: InputSpec,
    pub outputs: BTreeMap<String, OutputSpec>,
    pub thresholds: Thresholds,
    /// How the mask becomes plants (see [`crate::detect::Rules`]); absent: plain components.
    #[serde(default)]
    pub detection: crate::detect::Rules,
    #[serde(default)]
    pub provenance: BTreeMap<String, toml::Value>,
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
    /// The photo is resized so its long side has this many pixels (aspect ratio kept).
    pub long_side: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    #[serde(default)]
    pub meaning: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Thresholds {
    /// Connected components smaller than this share of the model input are not plants.
    pub min_area_fraction: f64,
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
        if manifest.input.std.contains(&0.0) {
            return Err(err("input.std must not contain 0".into()));
        }
        if !manifest.outputs.contains_key("mask") {
            return Err(err("outputs.mask is missing: Demeter needs a plant mask output".into()));
        }
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
        thresholds.insert("thresholds.min_area_fraction".to_owned(), m.thresholds.min_area_fraction);
        for (k, v) in &m.thresholds.other {
            if let Some(x) = v.as_float().or_else(|| v.as_integer().map(|i| i as f64)) {
                thresholds.insert(format!("thresholds.{k}"), x);
            }
        }
        for (key, value) in m.detection.values() {
            thresholds.insert(format!("detection.{key}"), value);
        }
        demeter_domain::ModelRef {
            name: m.name.clone(),
            version: m.version.clone(),
            manifest_sha256: self.manifest_sha256.clone(),
            onnx_sha256: self.sha256.clone(),
            thresholds,
        }
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
}

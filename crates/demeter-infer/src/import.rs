//! Turning a grower's ONNX export into a model folder (`demeter model import`), and describing
//! a folder (`demeter model check`).
//!
//! [`inspect`] reads what the graph says about itself: its tensors' names, types and shapes,
//! and the metadata Ultralytics writes into its exports (`task`, `names`, `imgsz`, `stride`,
//! `end2end`). [`infer_manifest`] then decides the family, the classes, the input size and the
//! box layout from that alone (a pure function, tested on data); whatever it cannot decide it
//! asks for by its flag.

use std::collections::BTreeMap;

use ort::session::Session;

use crate::{model::Family, yolo::BoxLayout, InferError, Runtime};

/// One graph input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    /// e.g. `f32`, as ONNX Runtime names it.
    pub element: String,
    /// Declared dimensions, negative where free.
    pub dims: Vec<i64>,
}

impl std::fmt::Display for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self.dims.iter().map(|d| if *d < 0 { "?".into() } else { d.to_string() }).collect();
        write!(f, "{} {}[{}]", self.name, self.element, dims.join(", "))
    }
}

/// What a graph says about itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
    /// The model's custom metadata (Ultralytics: task, names, imgsz, stride, end2end, …).
    pub metadata: BTreeMap<String, String>,
}

fn tensors<'a>(list: impl Iterator<Item = (&'a str, &'a ort::value::ValueType)>) -> Vec<Tensor> {
    list.map(|(name, t)| Tensor {
        name: name.to_owned(),
        element: t.tensor_type().map_or_else(|| t.to_string(), |e| format!("{e}")),
        dims: crate::contract::dims_of(t),
    })
    .collect()
}

/// Builds a CPU session for `onnx` and reads its tensors and metadata.
pub fn inspect(runtime: &Runtime, onnx: &[u8]) -> Result<Graph, InferError> {
    let run = || -> ort::Result<Graph> {
        let session = Session::builder(runtime.env())?.commit_from_memory(onnx)?;
        Ok(describe(&session))
    };
    run().map_err(|e| InferError::Run(format!("ONNX Runtime cannot load the file: {e}")))
}

/// A session's tensors and metadata.
pub fn describe(session: &Session) -> Graph {
    let metadata = session
        .metadata()
        .ok()
        .map(|m| m.custom_keys().unwrap_or_default().into_iter().filter_map(|k| m.custom(&k).map(|v| (k, v))).collect())
        .unwrap_or_default();
    Graph {
        inputs: tensors(session.inputs().iter().map(|i| (i.name(), i.dtype()))),
        outputs: tensors(session.outputs().iter().map(|o| (o.name(), o.dtype()))),
        metadata,
    }
}

/// What the grower may say on the command line, for what the file does not say.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    pub name: Option<String>,
    pub family: Option<Family>,
    pub classes: Option<Vec<String>>,
    pub plant_classes: Option<Vec<String>>,
    pub layout: Option<BoxLayout>,
    pub input_size: Option<u32>,
    pub confidence: Option<f64>,
    pub iou: Option<f64>,
}

impl Hints {
    /// The hints of a form (the install API): each field named like the `model import` flag,
    /// with underscores (`plant_classes`), lists comma-separated.
    pub fn from_fields(fields: &std::collections::BTreeMap<String, String>) -> Result<Self, String> {
        let mut hints = Hints::default();
        let list = |v: &str| v.split(',').map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect();
        let number = |key: &str, v: &str| v.trim().parse::<f64>().map_err(|_| format!("{key} {v:?} is not a number"));
        for (key, value) in fields {
            match key.as_str() {
                "name" => hints.name = Some(value.trim().to_owned()),
                "family" => hints.family = Some(parse_family(value.trim())?),
                "classes" => hints.classes = Some(list(value)),
                "plant_classes" => hints.plant_classes = Some(list(value)),
                "layout" => hints.layout = Some(parse_layout(value.trim())?),
                "input_size" => {
                    hints.input_size =
                        Some(value.trim().parse().map_err(|_| format!("input_size {value:?} is not a whole number"))?)
                }
                "confidence" => hints.confidence = Some(number(key, value)?),
                "iou" => hints.iou = Some(number(key, value)?),
                other => {
                    return Err(format!(
                        "unknown field {other:?}; the hints are {}",
                        demeter_domain::command::HINT_FIELDS.join(", ")
                    ))
                }
            }
        }
        Ok(hints)
    }
}

/// A family by its manifest name (`yolo-detect`).
pub fn parse_family(s: &str) -> Result<Family, String> {
    toml::Value::String(s.to_owned())
        .try_into()
        .map_err(|_| format!("{s:?} is not a family: mask, yolo-detect or yolo-seg"))
}

/// A box layout by its manifest name (`v8`).
pub fn parse_layout(s: &str) -> Result<BoxLayout, String> {
    toml::Value::String(s.to_owned()).try_into().map_err(|_| format!("{s:?} is not a layout: v8, v5 or end-to-end"))
}

/// Why a manifest could not be inferred, with the flag that supplies it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImportError {
    #[error("{what}; give it with {flag}")]
    Missing { what: String, flag: &'static str },
    #[error("{0}")]
    Unsupported(String),
}

impl ImportError {
    /// The same, for a form: the field that supplies what is missing rather than the flag.
    pub fn for_form(&self) -> String {
        match self {
            ImportError::Missing { what, flag } => {
                format!("{what}; give it in the form field {}", flag.trim_start_matches('-').replace('-', "_"))
            }
            ImportError::Unsupported(m) => m.clone(),
        }
    }
}

/// The manifest inferred, and a line per decision (what was read from where).
#[derive(Debug, Clone, PartialEq)]
pub struct Inferred {
    pub manifest: String,
    pub notes: Vec<String>,
}

/// Reads Ultralytics' `names` metadata, a Python dict literal such as
/// `{0: 'seedling', 1: "weed's"}`, into the class names in index order.
pub fn parse_names(text: &str) -> Option<Vec<String>> {
    let body = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut chars = body.chars().peekable();
    let mut named = BTreeMap::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut index = String::new();
        while let Some(c) = chars.next_if(|c| c.is_ascii_digit()) {
            index.push(c);
        }
        let index: usize = index.parse().ok()?;
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next()? != ':' {
            return None;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let quote = chars.next().filter(|q| *q == '\'' || *q == '"')?;
        let mut name = String::new();
        loop {
            match chars.next()? {
                '\\' => name.push(chars.next()?),
                c if c == quote => break,
                c => name.push(c),
            }
        }
        named.insert(index, name);
    }
    // indices 0..n, each once
    named.keys().copied().eq(0..named.len()).then(|| named.into_values().collect())
}

/// Ultralytics' `imgsz` metadata, `[640, 640]`: the square side, if it is one.
fn parse_imgsz(text: &str) -> Option<Vec<u32>> {
    let body = text.trim().strip_prefix('[')?.strip_suffix(']')?;
    body.split(',').map(|v| v.trim().parse().ok()).collect()
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Decides the manifest for a YOLO export from its graph and the hints.
pub fn infer_manifest(graph: &Graph, hints: &Hints, file_name: &str) -> Result<Inferred, ImportError> {
    let mut notes = Vec::new();
    let meta = |k: &str| graph.metadata.get(k).map(String::as_str);
    let family = match (hints.family, meta("task")) {
        (Some(f), _) => {
            notes.push(format!("family {} (--family)", f.as_str()));
            f
        }
        (None, Some("detect")) => {
            notes.push("family yolo-detect (metadata task = detect)".into());
            Family::YoloDetect
        }
        (None, Some("segment")) => {
            notes.push("family yolo-seg (metadata task = segment)".into());
            Family::YoloSeg
        }
        (None, Some(other)) => {
            return Err(ImportError::Unsupported(format!(
                "the export's task is {other:?}; Demeter reads detect and segment models (--family yolo-detect or yolo-seg \
                 to override)"
            )))
        }
        (None, None) => {
            return Err(ImportError::Missing {
                what: "the file has no Ultralytics task metadata, so its family is unknown".into(),
                flag: "--family yolo-detect|yolo-seg",
            })
        }
    };
    if family == Family::Mask {
        return Err(ImportError::Unsupported(
            "import makes folders for the yolo-detect and yolo-seg families; write a mask model's manifest by hand \
             (models/README.md)"
                .into(),
        ));
    }
    let classes = match (&hints.classes, meta("names").map(parse_names)) {
        (Some(c), _) => {
            notes.push(format!("{} classes (--classes)", c.len()));
            c.clone()
        }
        (None, Some(Some(c))) => {
            notes.push(format!("{} classes from metadata names: {}", c.len(), c.join(", ")));
            c
        }
        (None, Some(None)) => {
            return Err(ImportError::Missing {
                what: "the names metadata is not a {index: 'name'} dict Demeter can read".into(),
                flag: "--classes a,b,c",
            })
        }
        (None, None) => {
            return Err(ImportError::Missing {
                what: "the file does not name its classes".into(),
                flag: "--classes a,b,c",
            })
        }
    };
    if classes.is_empty() {
        return Err(ImportError::Missing { what: "the model has no classes".into(), flag: "--classes a,b,c" });
    }
    let plant_classes = match &hints.plant_classes {
        Some(p) => {
            if let Some(unknown) = p.iter().find(|c| !classes.contains(c)) {
                return Err(ImportError::Unsupported(format!(
                    "--plant-classes names {unknown:?}, which is not one of the model's classes ({})",
                    classes.join(", ")
                )));
            }
            notes.push(format!("plants: {} (--plant-classes)", p.join(", ")));
            Some(p.clone())
        }
        None => {
            notes.push("plants: every class (--plant-classes to count only some)".into());
            None
        }
    };
    let [input] = graph.inputs.as_slice() else {
        return Err(ImportError::Unsupported(format!(
            "the graph has {} inputs; Demeter feeds one image tensor",
            graph.inputs.len()
        )));
    };
    if input.dims.len() != 4 || (input.dims[1] >= 0 && input.dims[1] != 3) {
        return Err(ImportError::Unsupported(format!("input {input}; Demeter feeds [1, 3, side, side] (NCHW RGB)")));
    }
    let side = if let Some(s) = hints.input_size {
        notes.push(format!("input {s} × {s}, letterboxed (--input-size)"));
        s
    } else if let Some(sizes) = meta("imgsz").and_then(parse_imgsz) {
        match sizes.as_slice() {
            [s] | [s, _] if sizes.iter().all(|v| v == s) => {
                notes.push(format!("input {s} × {s}, letterboxed (metadata imgsz)"));
                *s
            }
            _ => {
                return Err(ImportError::Unsupported(format!(
                    "the export's imgsz is {sizes:?}; Demeter letterboxes to a square (export with a square imgsz, \
                     or give --input-size)"
                )))
            }
        }
    } else if input.dims[2] > 0 && input.dims[2] == input.dims[3] {
        notes.push(format!("input {0} × {0}, letterboxed (the graph's input)", input.dims[2]));
        input.dims[2] as u32
    } else {
        return Err(ImportError::Missing {
            what: format!("input {input} has no fixed square size and no imgsz metadata"),
            flag: "--input-size N",
        });
    };
    let [boxes, rest @ ..] = graph.outputs.as_slice() else {
        return Err(ImportError::Unsupported("the graph has no outputs".into()));
    };
    let protos = match family {
        Family::YoloSeg => {
            let Some(p) = rest.iter().find(|t| t.dims.len() == 4) else {
                return Err(ImportError::Unsupported(format!(
                    "a yolo-seg export has a second output of prototype masks [1, masks, h, w]; this one has [{}]",
                    graph.outputs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                )));
            };
            Some(p)
        }
        _ => None,
    };
    let nm = protos.map_or(0, |p| p.dims[1].max(0) as usize);
    if boxes.dims.len() != 3 {
        return Err(ImportError::Unsupported(format!(
            "output {boxes}; a YOLO export's first output is [1, 4+classes, boxes] or [1, boxes, 5+classes]"
        )));
    }
    let nc = classes.len();
    let end2end = meta("end2end").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let (d1, d2) = (boxes.dims[1], boxes.dims[2]);
    let fits = |l: BoxLayout| {
        let want = l.attributes(nc, nm) as i64;
        match l {
            BoxLayout::V8 => d1 == want,
            BoxLayout::V5 | BoxLayout::EndToEnd => d2 == want,
        }
    };
    let layout = if let Some(l) = hints.layout {
        notes.push(format!("box layout {} (--layout)", l.as_str()));
        l
    } else {
        let candidates: Vec<BoxLayout> =
            [BoxLayout::V8, BoxLayout::V5, BoxLayout::EndToEnd].into_iter().filter(|l| fits(*l)).collect();
        let chosen = match candidates.as_slice() {
            [one] => *one,
            many if end2end && many.contains(&BoxLayout::EndToEnd) => BoxLayout::EndToEnd,
            many if !end2end && many.len() == 2 && many.contains(&BoxLayout::EndToEnd) => {
                *many.iter().find(|l| **l != BoxLayout::EndToEnd).expect("two")
            }
            [] => {
                return Err(ImportError::Unsupported(format!(
                    "output {boxes} fits no Ultralytics layout for {nc} classes{}: [1, {}, N] (v8), [1, N, {}] (v5) or \
                     [1, N, {}] (end-to-end)",
                    if nm > 0 { format!(" and {nm} mask coefficients") } else { String::new() },
                    BoxLayout::V8.attributes(nc, nm),
                    BoxLayout::V5.attributes(nc, nm),
                    BoxLayout::EndToEnd.attributes(nc, nm),
                )))
            }
            _ => {
                return Err(ImportError::Missing {
                    what: format!("output {boxes} fits more than one layout"),
                    flag: "--layout v8|v5|end-to-end",
                })
            }
        };
        notes.push(format!(
            "box layout {} (output {boxes}{})",
            chosen.as_str(),
            if end2end { ", end2end" } else { "" }
        ));
        chosen
    };
    let name = hints.name.clone().unwrap_or_else(|| {
        std::path::Path::new(file_name).file_stem().map_or("model".into(), |s| s.to_string_lossy().into_owned())
    });
    let list = |v: &[String]| format!("[{}]", v.iter().map(|c| toml_str(c)).collect::<Vec<_>>().join(", "));
    let mut m = String::new();
    m.push_str(&format!("# Written by `demeter model import {file_name}`.\n"));
    m.push_str(&format!("name = {}\n", toml_str(&name)));
    m.push_str(&format!("version = {}\n", toml_str(meta("version").unwrap_or("1"))));
    if let Some(d) = meta("description") {
        m.push_str(&format!("description = {}\n", toml_str(d)));
    }
    m.push_str(&format!("family = \"{}\"\n", family.as_str()));
    m.push_str(&format!("classes = {}\n", list(&classes)));
    if let Some(p) = &plant_classes {
        m.push_str(&format!("plant_classes = {}\n", list(p)));
    }
    m.push_str("\n[input]\n");
    m.push_str(&format!("name = {}\n", toml_str(&input.name)));
    m.push_str("layout = \"NCHW\"\nchannels = \"RGB\"\n");
    m.push_str("# Ultralytics feeds pixel / 255, letterboxed with grey (114) to a square.\n");
    m.push_str(&format!("scale = {:?}\nmean = [0.0, 0.0, 0.0]\nstd = [1.0, 1.0, 1.0]\n", 1.0f64 / 255.0));
    m.push_str(&format!("long_side = {side}\nletterbox = true\n"));
    m.push_str(&format!("\n[outputs.boxes]\nname = {}\nlayout = \"{}\"\n", toml_str(&boxes.name), layout.as_str()));
    if let Some(p) = protos {
        m.push_str(&format!("\n[outputs.protos]\nname = {}\n", toml_str(&p.name)));
    }
    let confidence = hints.confidence.unwrap_or(0.25);
    let iou = hints.iou.unwrap_or(0.45);
    m.push_str(&format!("\n[thresholds]\nconfidence = {confidence:?}\niou = {iou:?}\n"));
    notes.push(format!("confidence {confidence}, NMS IoU {iou}"));
    let mut provenance: Vec<(&str, &str)> = vec![("source", file_name)];
    for key in ["author", "date", "version", "license", "stride"] {
        if let Some(v) = meta(key) {
            provenance.push((key, v));
        }
    }
    m.push_str("\n[provenance]\n");
    for (k, v) in provenance {
        m.push_str(&format!("{k} = {}\n", toml_str(v)));
    }
    Ok(Inferred { manifest: m, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, dims: &[i64]) -> Tensor {
        Tensor { name: name.into(), element: "f32".into(), dims: dims.to_vec() }
    }

    fn graph(outputs: Vec<Tensor>, meta: &[(&str, &str)]) -> Graph {
        Graph {
            inputs: vec![t("images", &[1, 3, 640, 640])],
            outputs,
            metadata: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    const NAMES: (&str, &str) = ("names", "{0: 'seedling', 1: 'weed'}");

    #[test]
    fn ultralytics_names_are_read_in_index_order() {
        assert_eq!(parse_names("{0: 'a', 1: 'b c'}"), Some(vec!["a".into(), "b c".into()]));
        assert_eq!(parse_names("{1: 'b', 0: \"it's\"}"), Some(vec!["it's".into(), "b".into()]));
        assert_eq!(parse_names(r"{0: 'a\'b', 1: 'x, y'}"), Some(vec!["a'b".into(), "x, y".into()]));
        assert_eq!(parse_names("{0: 'a', 2: 'c'}"), None, "a gap in the indices");
        assert_eq!(parse_names("['a', 'b']"), None);
    }

    #[test]
    fn v8_v5_and_end_to_end_exports_are_told_apart_by_their_shapes() {
        let hints = Hints::default();
        let cases = [
            (vec![t("output0", &[1, 6, 8400])], vec![("task", "detect"), NAMES, ("imgsz", "[640, 640]")], "v8"),
            (vec![t("output0", &[1, 25200, 7])], vec![("task", "detect"), NAMES], "v5"),
            (vec![t("output0", &[1, 300, 6])], vec![("task", "detect"), NAMES, ("end2end", "True")], "end-to-end"),
        ];
        for (outputs, meta, layout) in cases {
            let got = infer_manifest(&graph(outputs, &meta), &hints, "best.onnx").unwrap();
            let parsed: crate::Manifest = toml::from_str(&got.manifest).unwrap();
            assert_eq!(parsed.outputs["boxes"].layout.map(|l| l.as_str()), Some(layout), "{}", got.manifest);
            assert_eq!(parsed.classes, ["seedling", "weed"]);
            assert_eq!(parsed.family, Family::YoloDetect);
            assert_eq!(parsed.input.long_side, 640);
            assert_eq!(parsed.name, "best");
        }
    }

    #[test]
    fn an_ambiguous_shape_asks_for_the_layout_and_missing_facts_name_their_flag() {
        // one class: v5 has 6 values per box, like an end-to-end export
        let one = [("task", "detect"), ("names", "{0: 'plant'}")];
        let e = infer_manifest(&graph(vec![t("output0", &[1, 300, 6])], &one), &Hints::default(), "x.onnx");
        assert!(e.unwrap().manifest.contains("layout = \"v5\""), "without end2end metadata: v5");
        let e2e = [("task", "detect"), ("names", "{0: 'plant'}"), ("end2end", "True")];
        let got = infer_manifest(&graph(vec![t("output0", &[1, 300, 6])], &e2e), &Hints::default(), "x.onnx").unwrap();
        assert!(got.manifest.contains("layout = \"end-to-end\""));

        let bare = graph(vec![t("output0", &[1, 6, 8400])], &[]);
        let e = infer_manifest(&bare, &Hints::default(), "x.onnx").unwrap_err().to_string();
        assert!(e.contains("--family"), "{e}");
        let hints = Hints { family: Some(Family::YoloDetect), ..Hints::default() };
        let e = infer_manifest(&bare, &hints, "x.onnx").unwrap_err().to_string();
        assert!(e.contains("--classes"), "{e}");
        let hints = Hints { classes: Some(vec!["a".into(), "b".into()]), ..hints };
        let got = infer_manifest(&bare, &hints, "x.onnx").unwrap();
        assert!(got.manifest.contains("long_side = 640"), "from the graph's input: {}", got.manifest);

        let wrong = graph(vec![t("output0", &[1, 9, 8400])], &[("task", "detect"), NAMES]);
        let e = infer_manifest(&wrong, &Hints::default(), "x.onnx").unwrap_err().to_string();
        assert!(e.contains("fits no Ultralytics layout for 2 classes"), "{e}");
        let e = infer_manifest(
            &graph(vec![t("output0", &[1, 6, 8400])], &[("task", "classify"), NAMES]),
            &Hints::default(),
            "x.onnx",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"classify\""), "{e}");
        let hints = Hints { plant_classes: Some(vec!["tree".into()]), ..Hints::default() };
        let e = infer_manifest(&graph(vec![t("output0", &[1, 6, 8400])], &[("task", "detect"), NAMES]), &hints, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"tree\""), "{e}");
    }

    #[test]
    fn a_segmentation_export_takes_its_prototypes_into_account() {
        let outputs = vec![t("output0", &[1, 38, 8400]), t("output1", &[1, 32, 160, 160])];
        let got =
            infer_manifest(&graph(outputs, &[("task", "segment"), NAMES]), &Hints::default(), "seg.onnx").unwrap();
        let parsed: crate::Manifest = toml::from_str(&got.manifest).unwrap();
        assert_eq!(parsed.family, Family::YoloSeg);
        assert_eq!(parsed.outputs["protos"].name, "output1");
        assert_eq!(parsed.outputs["boxes"].layout, Some(BoxLayout::V8), "4 + 2 classes + 32 coefficients");
    }
}

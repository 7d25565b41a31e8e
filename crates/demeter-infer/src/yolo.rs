//! Box detectors and instance segmentation in the layouts Ultralytics exports to ONNX (YOLOv5,
//! v8, 11, and end-to-end exports with NMS in the graph): from the raw output tensor to boxes
//! above the confidence threshold, with class-aware non-maximum suppression, in the model
//! input's pixel coordinates. Pure functions on slices, so they are tested without a session.

use serde::Deserialize;

/// How a detector's box output is laid out, per photo (the batch axis comes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoxLayout {
    /// `[4 + nc (+ nm), N]`: centre x, centre y, width, height, then one score per class
    /// (then `nm` mask coefficients for instance segmentation). YOLOv8 and YOLO11.
    V8,
    /// `[N, 5 + nc (+ nm)]`: centre x, centre y, width, height, objectness, then one
    /// probability per class (then mask coefficients). YOLOv5. A box's score is objectness ×
    /// class probability.
    V5,
    /// `[N, 6 (+ nm)]`: x1, y1, x2, y2, score, class index (then mask coefficients): NMS is in
    /// the graph (end-to-end exports, `nms=True`, YOLOv10, YOLO26). Rows of score 0 are padding.
    EndToEnd,
}

impl BoxLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            BoxLayout::V8 => "v8",
            BoxLayout::V5 => "v5",
            BoxLayout::EndToEnd => "end-to-end",
        }
    }

    /// Values per box for `nc` classes and `nm` mask coefficients.
    pub fn attributes(self, nc: usize, nm: usize) -> usize {
        match self {
            BoxLayout::V8 => 4 + nc + nm,
            BoxLayout::V5 => 5 + nc + nm,
            BoxLayout::EndToEnd => 6 + nm,
        }
    }

    /// The per-photo output dimensions `[rows, cols]` for `n_boxes` boxes.
    pub fn dims(self, nc: usize, nm: usize, n_boxes: usize) -> [usize; 2] {
        match self {
            BoxLayout::V8 => [self.attributes(nc, nm), n_boxes],
            BoxLayout::V5 | BoxLayout::EndToEnd => [n_boxes, self.attributes(nc, nm)],
        }
    }

    /// The number of boxes in a per-photo output of `dims`, if the dimensions fit this layout.
    pub fn boxes_in(self, dims: [usize; 2], nc: usize, nm: usize) -> Option<usize> {
        let want = self.attributes(nc, nm);
        match self {
            BoxLayout::V8 => (dims[0] == want).then_some(dims[1]),
            BoxLayout::V5 | BoxLayout::EndToEnd => (dims[1] == want).then_some(dims[0]),
        }
    }
}

/// One box kept by [`decode`] and [`nms`], in the model input's pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    pub score: f32,
    pub class: usize,
    /// Mask coefficients (instance segmentation), else empty.
    pub coefficients: Vec<f32>,
    /// Instance mask pixels at the input's scale (instance segmentation, after
    /// [`instance_areas`]), else `None`.
    pub area: Option<f64>,
}

/// Reads one photo's box output (`data`, row-major `dims`) laid out as `layout`, for `nc` classes
/// and `nm` mask coefficients, keeping boxes whose score reaches `confidence`.
pub fn decode(
    layout: BoxLayout,
    dims: [usize; 2],
    data: &[f32],
    nc: usize,
    nm: usize,
    confidence: f32,
) -> Vec<Detected> {
    let n = layout.boxes_in(dims, nc, nm).unwrap_or(0);
    debug_assert_eq!(data.len(), dims[0] * dims[1]);
    let at = |attribute: usize, b: usize| match layout {
        BoxLayout::V8 => data[attribute * n + b],
        BoxLayout::V5 | BoxLayout::EndToEnd => data[b * dims[1] + attribute],
    };
    let mut out = Vec::new();
    for b in 0..n {
        let (bbox, score, class, first_coefficient) = match layout {
            BoxLayout::EndToEnd => {
                let class = at(5, b);
                if !class.is_finite() || class < 0.0 || class as usize >= nc {
                    continue;
                }
                ([at(0, b), at(1, b), at(2, b), at(3, b)], at(4, b), class as usize, 6)
            }
            BoxLayout::V8 | BoxLayout::V5 => {
                let (first, objectness) = if layout == BoxLayout::V5 { (5, at(4, b)) } else { (4, 1.0) };
                let (class, best) =
                    (0..nc).map(|c| (c, at(first + c, b))).fold((0, f32::MIN), |a, x| if x.1 > a.1 { x } else { a });
                let (cx, cy, w, h) = (at(0, b), at(1, b), at(2, b), at(3, b));
                ([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], objectness * best, class, first + nc)
            }
        };
        // NaN scores never pass.
        if score.is_nan()
            || score < confidence
            || bbox.iter().any(|v| !v.is_finite())
            || bbox[2] <= bbox[0]
            || bbox[3] <= bbox[1]
        {
            continue;
        }
        let coefficients = (0..nm).map(|k| at(first_coefficient + k, b)).collect();
        out.push(Detected { bbox, score, class, coefficients, area: None });
    }
    out
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Class-aware non-maximum suppression: highest score first, a box is dropped when it overlaps
/// a kept box of the same class by more than `threshold` IoU. Boxes of different classes never
/// suppress each other. Ties in score keep the earlier box, so the result is deterministic.
pub fn nms(mut boxes: Vec<Detected>, threshold: f32) -> Vec<Detected> {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detected> = Vec::with_capacity(boxes.len());
    for candidate in boxes {
        if !kept.iter().any(|k| k.class == candidate.class && iou(&k.bbox, &candidate.bbox) > threshold) {
            kept.push(candidate);
        }
    }
    kept
}

/// The prototype masks of an instance-segmentation model for one photo: one plane of
/// `width` × `height` per mask coefficient, covering the whole model input (each proto pixel is
/// `input / proto` input pixels wide).
pub struct Prototypes<'a> {
    pub data: &'a [f32],
    pub width: usize,
    pub height: usize,
}

/// Gives each detection its instance mask's area, in input pixels: the mask is
/// `sigmoid(coefficients · prototypes) > 0.5` inside the detection's box (as Ultralytics crops
/// it), counted on the prototype grid and scaled to the input.
pub fn instance_areas(boxes: &mut [Detected], protos: &Prototypes<'_>, input: (u32, u32)) {
    let (fx, fy) = (f64::from(input.0) / protos.width as f64, f64::from(input.1) / protos.height as f64);
    let plane = protos.width * protos.height;
    for d in boxes.iter_mut() {
        let x0 = ((f64::from(d.bbox[0]) / fx).floor().max(0.0) as usize).min(protos.width);
        let y0 = ((f64::from(d.bbox[1]) / fy).floor().max(0.0) as usize).min(protos.height);
        let x1 = ((f64::from(d.bbox[2]) / fx).ceil().max(0.0) as usize).min(protos.width);
        let y1 = ((f64::from(d.bbox[3]) / fy).ceil().max(0.0) as usize).min(protos.height);
        let mut pixels = 0u64;
        for y in y0..y1 {
            for x in x0..x1 {
                let i = y * protos.width + x;
                let logit: f32 = d.coefficients.iter().enumerate().map(|(k, c)| c * protos.data[k * plane + i]).sum();
                // sigmoid(v) > 0.5 ⇔ v > 0
                if logit > 0.0 {
                    pixels += 1;
                }
            }
        }
        d.area = Some(pixels as f64 * fx * fy);
    }
}

/// Where a photo sits in a letterboxed input: the model sees a `side` × `side` square with the
/// photo, resized to `width` × `height` (aspect kept), in its centre and grey around it, as
/// Ultralytics' `LetterBox(auto=False)` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Letterbox {
    pub side: u32,
    pub width: u32,
    pub height: u32,
}

impl Letterbox {
    /// The left and top padding.
    pub fn offset(&self) -> (u32, u32) {
        ((self.side - self.width) / 2, (self.side - self.height) / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Boxes as (cx, cy, w, h, class scores...) rows, written out in `layout`.
    fn encode(layout: BoxLayout, nc: usize, rows: &[(f32, f32, f32, f32, Vec<f32>)]) -> ([usize; 2], Vec<f32>) {
        let dims = layout.dims(nc, 0, rows.len());
        let mut data = vec![0.0; dims[0] * dims[1]];
        for (b, (cx, cy, w, h, scores)) in rows.iter().enumerate() {
            let values: Vec<f32> = match layout {
                BoxLayout::V8 => [*cx, *cy, *w, *h].into_iter().chain(scores.iter().copied()).collect(),
                // objectness 0.5, class probabilities doubled: the same scores
                BoxLayout::V5 => [*cx, *cy, *w, *h, 0.5].into_iter().chain(scores.iter().map(|s| s * 2.0)).collect(),
                BoxLayout::EndToEnd => {
                    let (c, s) =
                        scores.iter().enumerate().fold((0, f32::MIN), |a, (i, s)| if *s > a.1 { (i, *s) } else { a });
                    vec![cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0, s, c as f32]
                }
            };
            for (a, v) in values.into_iter().enumerate() {
                match layout {
                    BoxLayout::V8 => data[a * rows.len() + b] = v,
                    _ => data[b * dims[1] + a] = v,
                }
            }
        }
        (dims, data)
    }

    fn rows() -> Vec<(f32, f32, f32, f32, Vec<f32>)> {
        vec![
            (100.0, 100.0, 40.0, 40.0, vec![0.9, 0.1]),
            // near-duplicate of the first, same class: suppressed
            (102.0, 101.0, 40.0, 40.0, vec![0.8, 0.0]),
            // same place, other class: kept
            (101.0, 100.0, 40.0, 40.0, vec![0.0, 0.7]),
            // under the threshold
            (300.0, 300.0, 40.0, 40.0, vec![0.2, 0.1]),
            // apart
            (200.0, 100.0, 30.0, 50.0, vec![0.6, 0.3]),
        ]
    }

    #[test]
    fn every_layout_reads_the_same_boxes_and_nms_is_class_aware() {
        for layout in [BoxLayout::V8, BoxLayout::V5, BoxLayout::EndToEnd] {
            let (dims, data) = encode(layout, 2, &rows());
            assert_eq!(layout.boxes_in(dims, 2, 0), Some(5), "{layout:?}");
            let found = decode(layout, dims, &data, 2, 0, 0.25);
            assert_eq!(found.len(), 4, "{layout:?}: the box under 0.25 is dropped");
            let kept = nms(found, 0.45);
            let summary: Vec<(usize, [i32; 4])> =
                kept.iter().map(|d| (d.class, d.bbox.map(|v| v.round() as i32))).collect();
            assert_eq!(
                summary,
                vec![(0, [80, 80, 120, 120]), (1, [81, 80, 121, 120]), (0, [185, 75, 215, 125])],
                "{layout:?}"
            );
            assert!((kept[0].score - 0.9).abs() < 1e-6, "{layout:?}: v5 scores are objectness × class");
        }
    }

    #[test]
    fn a_lower_iou_threshold_suppresses_more_and_ties_are_deterministic() {
        let d = |x: f32, score: f32| Detected {
            bbox: [x, 0.0, x + 10.0, 10.0],
            score,
            class: 0,
            coefficients: vec![],
            area: None,
        };
        // IoU of boxes 3 px apart: 7/13 = 0.54
        assert_eq!(nms(vec![d(0.0, 0.5), d(3.0, 0.5)], 0.6).len(), 2);
        let one = nms(vec![d(0.0, 0.5), d(3.0, 0.5)], 0.5);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].bbox[0], 0.0, "the earlier of two equal scores stays");
    }

    #[test]
    fn padding_rows_and_broken_boxes_are_skipped() {
        // end-to-end exports pad to a fixed number of rows with zeros
        let data = [10.0, 10.0, 20.0, 20.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 5.0, 1.0, 1.0, f32::NAN, 0.0];
        let found = decode(BoxLayout::EndToEnd, [3, 6], &data, 1, 0, 0.25);
        assert_eq!(found.len(), 1);
        // a class index past the declared classes is not trusted
        let data = [10.0, 10.0, 20.0, 20.0, 0.9, 3.0];
        assert!(decode(BoxLayout::EndToEnd, [1, 6], &data, 2, 0, 0.25).is_empty());
        // a layout that does not fit reads nothing rather than garbage
        assert_eq!(BoxLayout::V8.boxes_in([7, 100], 2, 0), None);
    }

    #[test]
    fn instance_areas_count_the_mask_inside_the_box() {
        // 2 prototypes on an 8 × 8 grid for a 32 × 32 input: the first is +1 on the left half,
        // the second +1 everywhere.
        let (w, h) = (8, 8);
        let mut data = vec![0.0; 2 * w * h];
        for y in 0..h {
            for x in 0..w {
                data[y * w + x] = if x < 4 { 1.0 } else { -1.0 };
                data[w * h + y * w + x] = 1.0;
            }
        }
        let protos = Prototypes { data: &data, width: w, height: h };
        let mut boxes = vec![
            // left half only: coefficient 1 on the first prototype; box covers the whole input
            Detected { bbox: [0.0, 0.0, 32.0, 32.0], score: 1.0, class: 0, coefficients: vec![1.0, 0.0], area: None },
            // everything, but cropped to a 16 × 8 box
            Detected { bbox: [8.0, 8.0, 24.0, 16.0], score: 1.0, class: 0, coefficients: vec![0.0, 1.0], area: None },
        ];
        instance_areas(&mut boxes, &protos, (32, 32));
        assert_eq!(boxes[0].area, Some(512.0), "half of 32 × 32");
        assert_eq!(boxes[1].area, Some(128.0), "the box's 16 × 8");
    }

    #[test]
    fn letterbox_centres_the_photo() {
        assert_eq!(Letterbox { side: 640, width: 640, height: 480 }.offset(), (0, 80));
        assert_eq!(Letterbox { side: 640, width: 427, height: 640 }.offset(), (106, 0));
    }
}

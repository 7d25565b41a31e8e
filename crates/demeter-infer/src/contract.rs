//! What a model must provide, by family, checked when its session is built (so a model that
//! cannot work stops start-up with the tensor named), and how its outputs are read after a run
//! (where a free dimension that comes out wrong fails the photo as the model's fault, never the
//! device's).

use ort::session::{Session, SessionOutputs};

use crate::{
    analyzer::{ModelOutput, Segmentation},
    model::{Family, Model},
    yolo::{self, BoxLayout},
    InferError,
};

/// What the checks learnt about the graph, used at every run.
#[derive(Debug, Clone)]
pub struct Contract {
    /// The input's declared dimensions (negative: free).
    pub input_dims: Vec<i64>,
    /// Mask coefficients per box (`yolo-seg`), else 0.
    pub coefficients: usize,
}

/// A tensor's declared dimensions, negative where free.
pub(crate) fn dims_of(t: &ort::value::ValueType) -> Vec<i64> {
    t.tensor_shape().map(|s| s.iter().copied().collect()).unwrap_or_default()
}

/// Checks `session` against the manifest and the family's contract.
pub fn check(session: &Session, model: &Model) -> Result<Contract, String> {
    let m = &model.manifest;
    let input = session.inputs().iter().find(|i| i.name() == m.input.name);
    let wanted: Vec<&str> = match m.family {
        Family::Mask => [Some(model.mask_output()), model.vegetation_output(), model.brightness_output()]
            .into_iter()
            .flatten()
            .collect(),
        Family::YoloDetect => vec![m.outputs["boxes"].name.as_str()],
        Family::YoloSeg => vec![m.outputs["boxes"].name.as_str(), m.outputs["protos"].name.as_str()],
    };
    let missing: Vec<&str> =
        wanted.iter().copied().filter(|want| !session.outputs().iter().any(|o| o.name() == *want)).collect();
    let Some(input) = input.filter(|_| missing.is_empty()) else {
        return Err(format!(
            "model.onnx has inputs [{}] and outputs [{}]; the manifest expects input {:?} and outputs {:?}",
            session.inputs().iter().map(|i| i.name()).collect::<Vec<_>>().join(", "),
            session.outputs().iter().map(|o| o.name()).collect::<Vec<_>>().join(", "),
            m.input.name,
            missing
        ));
    };
    let float = Some(ort::value::TensorElementType::Float32);
    if input.dtype().tensor_type() != float {
        return Err(format!(
            "input {:?} is {}; Demeter feeds Tensor<f32>(1, 3, height, width)",
            m.input.name,
            input.dtype()
        ));
    }
    let input_dims = dims_of(input.dtype());
    let fits = |i: usize, want: i64| input_dims.get(i).is_none_or(|&d| d < 0 || d == want);
    if input_dims.len() != 4 || !fits(0, 1) || !fits(1, 3) {
        return Err(format!(
            "input {:?} has dimensions {input_dims:?}; Demeter feeds [1, 3, height, width] (NCHW RGB)",
            m.input.name
        ));
    }
    if m.letterbox() {
        let side = i64::from(m.input.long_side);
        if !fits(2, side) || !fits(3, side) {
            return Err(format!(
                "input {:?} has dimensions {input_dims:?}; the manifest letterboxes to input.long_side = {side}, \
                 so it feeds [1, 3, {side}, {side}]",
                m.input.name
            ));
        }
    }
    let output =
        |name: &str| session.outputs().iter().find(|o| o.name() == name).map(|o| o.dtype()).expect("found above");
    let free_or = |dims: &[i64], i: usize, want: i64| dims.get(i).is_some_and(|&d| d < 0 || d == want);
    let mut coefficients = 0;
    match m.family {
        Family::Mask => {
            let classes = m.classes.len();
            for name in wanted {
                let dtype = output(name);
                let dims = dims_of(dtype);
                let channels = if name == model.mask_output() { classes.max(1) } else { 1 };
                if dtype.tensor_type() != float
                    || dims.len() != 4
                    || !free_or(&dims, 0, 1)
                    || !free_or(&dims, 1, channels as i64)
                {
                    return Err(match channels {
                        1 if name == model.mask_output() => format!(
                            "output {name:?} is {dtype}; a mask model without classes gives Tensor<f32>(1, 1, height, \
                             width), one value per input pixel (a class axis needs the classes in the manifest)"
                        ),
                        1 => format!(
                            "output {name:?} is {dtype}; a mask model's {name} output is Tensor<f32>(1, 1, height, width)"
                        ),
                        c => format!(
                            "output {name:?} is {dtype}; a mask model with {c} classes gives Tensor<f32>(1, {c}, height, \
                             width), one value per class and input pixel"
                        ),
                    });
                }
            }
        }
        Family::YoloDetect | Family::YoloSeg => {
            if m.family == Family::YoloSeg {
                let name = m.outputs["protos"].name.as_str();
                let dtype = output(name);
                let dims = dims_of(dtype);
                if dtype.tensor_type() != float || dims.len() != 4 || !free_or(&dims, 0, 1) || dims[1] <= 0 {
                    return Err(format!(
                        "output {name:?} is {dtype}; a yolo-seg model's prototypes are Tensor<f32>(1, masks, height, width) \
                         with a fixed number of masks"
                    ));
                }
                coefficients = dims[1] as usize;
            }
            let name = m.outputs["boxes"].name.as_str();
            let layout = m.outputs["boxes"].layout.expect("checked with the manifest");
            let dtype = output(name);
            let dims = dims_of(dtype);
            let want = layout.attributes(m.classes.len(), coefficients) as i64;
            let axis = if layout == BoxLayout::V8 { 1 } else { 2 };
            if dtype.tensor_type() != float || dims.len() != 3 || !free_or(&dims, 0, 1) || !free_or(&dims, axis, want) {
                let shape = match layout {
                    BoxLayout::V8 => format!("(1, {want}, boxes)"),
                    _ => format!("(1, boxes, {want})"),
                };
                return Err(format!(
                    "output {name:?} is {dtype}; a {} model with {} classes{} in the {} layout gives Tensor<f32>{shape}",
                    m.family.as_str(),
                    m.classes.len(),
                    if coefficients > 0 { format!(" and {coefficients} mask coefficients") } else { String::new() },
                    layout.as_str(),
                ));
            }
        }
    }
    Ok(Contract { input_dims, coefficients })
}

/// Reads `n` photos' outputs of a run on inputs of `width` × `height`.
pub fn read(
    model: &Model,
    contract: &Contract,
    outputs: &SessionOutputs<'_>,
    n: usize,
    (width, height): (u32, u32),
) -> Result<Vec<ModelOutput>, InferError> {
    let m = &model.manifest;
    let tensor = |name: &str| -> Result<(Vec<usize>, &[f32]), InferError> {
        let (shape, v) = outputs[name]
            .try_extract_tensor::<f32>()
            .map_err(|e| InferError::Contract(format!("output {name:?}: {e}")))?;
        Ok((shape.iter().map(|&d| d.max(0) as usize).collect(), v))
    };
    let (w, h) = (width as usize, height as usize);
    match m.family {
        Family::Mask => {
            let plane = w * h;
            let map = |name: &str, channels: usize| -> Result<&[f32], InferError> {
                let (shape, v) = tensor(name)?;
                if v.len() != n * channels * plane {
                    return Err(InferError::Contract(format!(
                        "output {name:?} has shape {shape:?} for an input of [{n}, 3, {h}, {w}]; expected \
                         [{n}, {channels}, {h}, {w}]"
                    )));
                }
                Ok(v)
            };
            let classes = m.classes.len();
            let mask = map(model.mask_output(), classes.max(1))?;
            let vegetation = model.vegetation_output().map(|o| map(o, 1)).transpose()?;
            let brightness = model.brightness_output().map(|o| map(o, 1)).transpose()?;
            let photo = |v: &[f32], i: usize| v[i * plane..(i + 1) * plane].to_vec();
            let cut = if m.mask_logits() { 0.0 } else { 0.5 };
            Ok((0..n)
                .map(|i| {
                    let (mask, labels) = if classes == 0 {
                        (mask[i * plane..(i + 1) * plane].iter().map(|v| *v > cut).collect(), None)
                    } else {
                        let labels = argmax(&mask[i * classes * plane..(i + 1) * classes * plane], classes, plane);
                        let plant: Vec<bool> = (0..classes).map(|c| m.is_plant_class(c)).collect();
                        (labels.iter().map(|&c| plant[c as usize]).collect(), Some(labels))
                    };
                    ModelOutput::Mask(Segmentation {
                        mask,
                        vegetation: vegetation.map(|v| photo(v, i)),
                        brightness: brightness.map(|v| photo(v, i)),
                        labels,
                    })
                })
                .collect())
        }
        Family::YoloDetect | Family::YoloSeg => {
            let boxes_name = m.outputs["boxes"].name.as_str();
            let layout = m.outputs["boxes"].layout.expect("checked with the manifest");
            let (shape, data) = tensor(boxes_name)?;
            let (nc, nm) = (m.classes.len(), contract.coefficients);
            let per_photo = [shape.get(1).copied().unwrap_or(0), shape.get(2).copied().unwrap_or(0)];
            if shape.len() != 3 || shape[0] != n || layout.boxes_in(per_photo, nc, nm).is_none() {
                return Err(InferError::Contract(format!(
                    "output {boxes_name:?} has shape {shape:?}; expected {n} photos of {} boxes",
                    layout.as_str()
                )));
            }
            let protos = if m.family == Family::YoloSeg {
                let name = m.outputs["protos"].name.as_str();
                let (shape, data) = tensor(name)?;
                if shape.len() != 4 || shape[0] != n || shape[1] != nm {
                    return Err(InferError::Contract(format!(
                        "output {name:?} has shape {shape:?}; expected [{n}, {nm}, height, width]"
                    )));
                }
                Some((shape, data))
            } else {
                None
            };
            let size = per_photo[0] * per_photo[1];
            Ok((0..n)
                .map(|i| {
                    let found =
                        yolo::decode(layout, per_photo, &data[i * size..(i + 1) * size], nc, nm, m.confidence());
                    let mut kept = if layout == BoxLayout::EndToEnd { found } else { yolo::nms(found, m.iou()) };
                    if let Some((shape, data)) = &protos {
                        let plane = shape[1] * shape[2] * shape[3];
                        let p = yolo::Prototypes {
                            data: &data[i * plane..(i + 1) * plane],
                            width: shape[3],
                            height: shape[2],
                        };
                        yolo::instance_areas(&mut kept, &p, (width, height));
                    }
                    ModelOutput::Boxes(kept)
                })
                .collect())
        }
    }
}

/// Each pixel's class: the channel with the highest value of `classes` planes of `plane`
/// values (ties go to the lower class, so a flat output is background). NaN never wins.
fn argmax(planes: &[f32], classes: usize, plane: usize) -> Vec<u8> {
    let mut best: Vec<f32> = planes[..plane].to_vec();
    let mut labels = vec![0u8; plane];
    for c in 1..classes {
        for ((v, b), l) in planes[c * plane..(c + 1) * plane].iter().zip(&mut best).zip(&mut labels) {
            if *v > *b || b.is_nan() && !v.is_nan() {
                *b = *v;
                *l = c as u8;
            }
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_picks_the_highest_channel_per_pixel_and_ties_go_to_the_background() {
        // 3 classes over 4 pixels.
        let planes = [
            0.0,
            0.5,
            0.2,
            f32::NAN, // background
            0.0,
            0.9,
            0.1,
            1.0, // crop
            0.0,
            0.1,
            0.7,
            2.0, // weed
        ];
        assert_eq!(argmax(&planes, 3, 4), vec![0, 1, 2, 2]);
    }
}

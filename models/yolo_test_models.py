"""Test models for the yolo-detect and yolo-seg families, written by models/build.py.

Each is a graph whose box output is a constant table of known boxes (plus 0 x the input's mean,
so the input is really read) in one of the Ultralytics export layouts, with the metadata
Ultralytics writes into its ONNX exports (task, names, imgsz, stride), so `demeter model import`
is tested on what it meets in the field. The input is letterboxed to 320 x 320.

The boxes (centre x, centre y, width, height in the 320 x 320 input; class; score), chosen so
every rule shows in the count:

    seedling  (60, 120)  0.90   kept
    seedling  (62, 121)  0.85   near-duplicate of the first (IoU 0.84): NMS drops it
    seedling (120, 120)  0.80   kept
    seedling (180, 120)  0.70   kept
    seedling (240, 120)  0.20   under the 0.25 confidence threshold
    weed      (60, 180)  0.90   kept
    seedling  (61, 180)  0.60   on the weed, another class: class-aware NMS keeps it
    weed     (120, 180)  0.50   kept
    empty    (180, 180)  0.95   kept
    empty    (240, 180)  0.30   kept
    empty    (241, 181)  0.29   near-duplicate: dropped

So every model here counts 4 plants (seedlings), 2 weeds and 2 empty cells. The end-to-end
variant carries what its in-graph NMS would have left (plus the sub-threshold box and zero rows
of padding). The yolo-seg variant adds 2 mask coefficients per box and prototypes on an 80 x 80
grid: prototype 0 is +1 left of x = 180 and -1 right of it, prototype 1 is +1 everywhere. The
(180, 120) seedling uses prototype 0 only, so its mask is the left half of its box; all others
use prototype 1, so their mask is their whole box (on the 4-pixel prototype grid).
"""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

SIDE = 320
CLASSES = ["seedling", "weed", "empty_cell"]
BOXES = [
    # cx, cy, w, h, class, score
    (60, 120, 30, 30, 0, 0.90),
    (62, 121, 30, 30, 0, 0.85),
    (120, 120, 30, 30, 0, 0.80),
    (180, 120, 30, 30, 0, 0.70),
    (240, 120, 30, 30, 0, 0.20),
    (60, 180, 30, 30, 1, 0.90),
    (61, 180, 30, 30, 0, 0.60),
    (120, 180, 30, 30, 1, 0.50),
    (180, 180, 30, 30, 2, 0.95),
    (240, 180, 30, 30, 2, 0.30),
    (241, 181, 30, 30, 2, 0.29),
]
# What an in-graph NMS leaves: the duplicates gone, the sub-threshold box still there.
END_TO_END_KEEP = [0, 2, 3, 4, 5, 6, 7, 8, 9]
N_MASKS = 2
PROTO = SIDE // 4
# Per box: the mask coefficients of the yolo-seg variant.
COEFFICIENTS = {3: (1.0, 0.0)}


def _coefficients(i):
    return COEFFICIENTS.get(i, (0.0, 1.0))


def table(layout: str, seg: bool = False) -> np.ndarray:
    """The box output for one photo, [1, ...] in `layout`."""
    nc = len(CLASSES)
    rows = []
    if layout == "end-to-end":
        for i in END_TO_END_KEEP:
            cx, cy, w, h, c, s = BOXES[i]
            rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, s, c])
        rows += [[0.0] * 6] * 3  # padding rows, as exports pad to a fixed count
        out = np.array(rows, dtype=np.float32)[None]
        return out
    for i, (cx, cy, w, h, c, s) in enumerate(BOXES):
        scores = [0.0] * nc
        if layout == "v5":
            # objectness 0.95, class probability s / 0.95: the same score
            scores[c] = s / 0.95
            row = [cx, cy, w, h, 0.95] + scores
        else:
            scores[c] = s
            row = [cx, cy, w, h] + scores
        if seg:
            row += list(_coefficients(i))
        rows.append(row)
    out = np.array(rows, dtype=np.float32)
    return (out.T if layout == "v8" else out)[None].copy()


def prototypes() -> np.ndarray:
    p = np.ones((1, N_MASKS, PROTO, PROTO), dtype=np.float32)
    p[0, 0, :, 180 // 4:] = -1.0
    return p


def build(layout: str, seg: bool = False):
    nodes, inits = [], []
    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIDE, SIDE])
    nodes.append(helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=1, name="mean"))
    nodes.append(helper.make_node("Mul", ["mean", "zero"], ["nothing"], name="times_zero"))
    inits.append(helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]))
    boxes = table(layout, seg)
    inits.append(numpy_helper.from_array(boxes, "box_table"))
    nodes.append(helper.make_node("Reshape", ["nothing", "scalar_shape"], ["nothing_boxes"], name="to_scalar"))
    nodes.append(helper.make_node("Add", ["box_table", "nothing_boxes"], ["output0"], name="boxes"))
    inits.append(numpy_helper.from_array(np.array([1, 1, 1], dtype=np.int64), "scalar_shape"))
    outputs = [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(boxes.shape))]
    if seg:
        inits.append(numpy_helper.from_array(prototypes(), "proto_table"))
        nodes.append(helper.make_node("Reshape", ["nothing", "proto_shape"], ["nothing_protos"], name="to_scalar4"))
        inits.append(numpy_helper.from_array(np.array([1, 1, 1, 1], dtype=np.int64), "proto_shape"))
        nodes.append(helper.make_node("Add", ["proto_table", "nothing_protos"], ["output1"], name="protos"))
        outputs.append(helper.make_tensor_value_info("output1", TensorProto.FLOAT, [1, N_MASKS, PROTO, PROTO]))
    graph = helper.make_graph(nodes, f"yolo_{layout}", [image], outputs, inits)
    model = helper.make_model(graph, producer_name="demeter models/yolo_test_models.py",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    names = "{" + ", ".join(f"{i}: '{n}'" for i, n in enumerate(CLASSES)) + "}"
    meta = {
        "description": f"Demeter test model: known boxes in the Ultralytics {layout} layout",
        "author": "Demeter",
        "task": "segment" if seg else "detect",
        "stride": "32",
        "batch": "1",
        "imgsz": f"[{SIDE}, {SIDE}]",
        "names": names,
    }
    if layout == "end-to-end":
        meta["end2end"] = "True"
    for k, v in meta.items():
        helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, k: v})
    return model


def manifest(name: str, layout: str, seg: bool, sha256: str) -> str:
    family = "yolo-seg" if seg else "yolo-detect"
    protos = '\n[outputs.protos]\nname = "output1"\n' if seg else ""
    return f"""# Generated by models/build.py (models/yolo_test_models.py); do not edit by hand.
name = "{name}"
version = "1.0.0"
description = "Known boxes in the Ultralytics {layout} layout: 4 seedlings, 2 weeds, 2 empty cells."
family = "{family}"
classes = {CLASSES!r}
plant_classes = ["seedling"]

[input]
name = "images"
layout = "NCHW"
channels = "RGB"
scale = {1 / 255!r}
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
long_side = {SIDE}

[outputs.boxes]
name = "output0"
layout = "{layout}"
{protos}
[thresholds]
confidence = 0.25
iou = 0.45

[provenance]
sha256 = "{sha256}"
script = "models/yolo_test_models.py"
""".replace("'", '"')


VARIANTS = [
    ("yolo-detect-v8", "v8", False),
    ("yolo-detect-v5", "v5", False),
    ("yolo-detect-end-to-end", "end-to-end", False),
    ("yolo-seg-v8", "v8", True),
]

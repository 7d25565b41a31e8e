#!/usr/bin/env python3
"""Builds Demeter's default plant-segmentation model, byte-for-byte reproducibly.

The model is a vegetation index computed inside the ONNX graph, not a trained network:

    R, G, B  = AveragePool_5x5(image)                     (smoothing first: noise, JPEG blocks,
                                                           and a steadier ratio in dark pixels)
    s        = R + G + B                                  (brightness)
    exg      = (2G - R - B) / (s + eps)                   (chromatic excess green, robust to light)
    mask     = (exg > EXG_THRESHOLD) and (s > MIN_BRIGHTNESS)
    mask     = dilate_3x3(erode_3x3(mask))                (opening: drops single-pixel specks)

Input ``image``: float32 [1, 3, H, W], RGB scaled to 0..1, any H and W (Demeter resizes the
long side to ``input.long_side``). Outputs ``mask`` (float32 0/1, [1, 1, H, W]), ``vegetation``
(the index, [1, 1, H, W]) and ``brightness`` (s, [1, 1, H, W]). Demeter's detection stage
re-thresholds the index per photo (adaptive seed and mask, a dark floor) and turns it into
plants, cells and a trust flag outside the graph (crates/demeter-infer/src/detect/).

Usage:  python3 models/build.py            # writes models/plant-exg/{model.onnx,manifest.toml}
        python3 models/build.py --check    # fails if the checked-in files differ from a rebuild

It also writes a test variant, tests/models/plant-exg-fixed-224/: the same graph exported with a
fixed 224 x 224 input, as some exported networks are. Demeter must fail a photo that does not fit
such a model once, as the photo's problem, without retries and without blaming the device.
And two heavy test variants, tests/models/plant-exg-heavy/ and plant-exg-heavy-batch/: the same
graph plus a convolutional trunk on the image (3x3 convolutions 3->32 with stride 2, 32->64, 64->64,
ReLU; about 5.5 GFLOP for a 512 x 384 input; random weights from a fixed seed) whose per-photo
mean, multiplied by zero, is added to the index. The outputs are exactly plant-exg's, so counts
are asserted exactly on any device, while a device must really run a network-sized model. The
-batch variant has a free batch axis ([N, 3, H, W]; the trunk reduces per photo).
And tests/models/plant-exg-two-channel-mask/: the graph with its mask output doubled along the
channel axis ([1, 2, H, W]), which breaks the mask contract: Demeter must refuse it at load,
naming the output, rather than fail every photo as a device error.
And the YOLO family test models (tests/models/yolo-*), from models/yolo_test_models.py, and the
mask family's class-axis and logits test models (tests/models/mask-*), from models/mask_test_models.py.
Requirements are pinned in models/requirements.txt.
"""

import argparse
import hashlib
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import mask_test_models
import yolo_test_models

NAME = "plant-exg"
VERSION = "2.0.0"
LONG_SIDE = 512
EXG_THRESHOLD = 0.15
MIN_BRIGHTNESS = 0.20  # R+G+B, i.e. a mean channel value of about 0.067
SMOOTH = 5
# Components smaller than this share of the resized image are noise (a few pixels): the floor
# only; which components are plants is decided by DETECTION below, relative to the photo.
MIN_AREA_FRACTION = 0.00008
# How Demeter's detection stage turns the index into plants (crates/demeter-infer/src/detect/).
# Chosen on the dev photos of ../shared/data/real, their camera variants (demeter eval
# --variants) and generated scenes, never per image; every value is relative to the photo's own
# colour levels, plants or cells. See models/README.md for what each measures and why.
DETECTION = {
    # The seed (a plant must reach it somewhere): 0.4 x the photo's 99.5th-percentile index,
    # within [0.13, 0.25]. Follows contrast, compression and smoothing of small seedlings; the
    # floor keeps soil from seeding when there are no plants.
    "seed_vegetation": 0.25,
    "seed_fraction": 0.4,
    "seed_quantile": 0.995,
    "seed_min": 0.13,
    # The mask: index above 0.65 x the seed, at least 0.09 (the graph's own mask uses 0.15).
    "mask_ratio": 0.65,
    "mask_min": 0.09,
    # Pixels darker than 12 % of the photo's 99th-percentile brightness are never plant: their
    # chromaticity is noise (shadows on bark and soil outdoors).
    "dark_fraction": 0.12,
    # Candidates: at least 0.5 % of the largest (a seedling among rosettes is 1.5-3 %); a piece
    # at most 30 % of a plant within 0.35 x sqrt(its area) joins it.
    "relative_min_area": 0.005,
    "merge_gap": 0.35,
    "merge_max_ratio": 0.3,
    # A component 1.8 x the median or more is split: by the cells it spans, or at its cores.
    "split_min_median": 1.8,
    # Find the tray's grid and count per cell; pieces more than 0.25 of a pitch apart within a
    # cell are separate plants.
    "grid": True,
    "cell_gap": 0.25,
    # Without a grid: a plant is at least 10 % of the largest (moss and weeds beside a plant are
    # 1-4 %), and pieces up to half its size within 0.5 x sqrt(area) join it (an oblique stem).
    "isolated_min_area": 0.1,
    "isolated_merge_gap": 0.5,
    "isolated_merge_max_ratio": 0.5,
    # Plants covering half the growing area or more: a closed canopy, flagged.
    "canopy_cover": 0.5,
}
OPSET = 17

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / NAME
FIXED = 224
FIXED_NAME = f"{NAME}-fixed-{FIXED}"
FIXED_OUT = HERE.parent / "tests" / "models" / FIXED_NAME
HEAVY_NAME = f"{NAME}-heavy"
HEAVY_OUT = HERE.parent / "tests" / "models" / HEAVY_NAME
HEAVY_BATCH_NAME = f"{NAME}-heavy-batch"
HEAVY_BATCH_OUT = HERE.parent / "tests" / "models" / HEAVY_BATCH_NAME
# A model that breaks the mask contract: its mask has two channels ([1, 2, H, W]).
TWO_CHANNEL_NAME = f"{NAME}-two-channel-mask"
TWO_CHANNEL_OUT = HERE.parent / "tests" / "models" / TWO_CHANNEL_NAME
# (in, out, stride) of the heavy trunk's 3x3 convolutions.
TRUNK = [(3, 32, 2), (32, 64, 1), (64, 64, 1)]


def const(name, value):
    return helper.make_tensor(name, TensorProto.FLOAT, [], [value])


def heavy_trunk(nodes: list, inits: list) -> None:
    """Appends the trunk: image -> convolutions -> per-photo mean x 0 -> added to the index."""
    rng = np.random.default_rng(20261205)
    x = "image"
    for i, (cin, cout, stride) in enumerate(TRUNK):
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"trunk_w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"trunk_w{i}"], [f"trunk_c{i}"], kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1], strides=[stride, stride], name=f"trunk_conv{i}"))
        nodes.append(helper.make_node("Relu", [f"trunk_c{i}"], [f"trunk_r{i}"], name=f"trunk_relu{i}"))
        x = f"trunk_r{i}"
    nodes.append(helper.make_node("ReduceMean", [x], ["trunk_mean"], axes=[1, 2, 3], keepdims=1, name="trunk_mean"))
    nodes.append(helper.make_node("Mul", ["trunk_mean", "zero"], ["trunk_zero"], name="trunk_times_zero"))
    inits.append(const("zero", 0.0))


def build_model(
    fixed: int | None = None, heavy: bool = False, batch: bool = False, two_channel_mask: bool = False
) -> onnx.ModelProto:
    nodes = [
        helper.make_node(
            "AveragePool",
            ["image"],
            ["smoothed"],
            kernel_shape=[SMOOTH, SMOOTH],
            pads=[SMOOTH // 2] * 4,
            count_include_pad=0,
            name="smooth",
        ),
        helper.make_node("Split", ["smoothed", "split_sizes"], ["R", "G", "B"], axis=1, name="split_rgb"),
        helper.make_node("Add", ["R", "G"], ["rg"], name="sum_rg"),
        helper.make_node("Add", ["rg", "B"], ["brightness"], name="brightness"),
        # 2G - R - B = (G - R) + (G - B)
        helper.make_node("Sub", ["G", "R"], ["g_r"], name="g_minus_r"),
        helper.make_node("Sub", ["G", "B"], ["g_b"], name="g_minus_b"),
        helper.make_node("Add", ["g_r", "g_b"], ["exg_raw"], name="excess_green"),
        helper.make_node("Add", ["brightness", "eps"], ["s_eps"], name="safe_brightness"),
        helper.make_node("Div", ["exg_raw", "s_eps"], ["vegetation" if not heavy else "vegetation_exg"], name="chromatic_exg"),
        helper.make_node("Greater", ["vegetation", "exg_threshold"], ["green"], name="threshold"),
        helper.make_node("Greater", ["brightness", "min_brightness"], ["lit"], name="not_dark"),
        helper.make_node("And", ["green", "lit"], ["raw_mask_b"], name="green_and_lit"),
        helper.make_node("Cast", ["raw_mask_b"], ["raw_mask"], to=TensorProto.FLOAT, name="to_float"),
        # Opening: erode (min filter = -maxpool(-x)), then dilate (maxpool).
        helper.make_node("Neg", ["raw_mask"], ["neg_mask"], name="negate"),
        helper.make_node("MaxPool", ["neg_mask"], ["neg_eroded"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="erode_max"),
        helper.make_node("Neg", ["neg_eroded"], ["eroded"], name="erode"),
        helper.make_node("MaxPool", ["eroded"], ["mask"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="dilate"),
    ]
    inits = [
        helper.make_tensor("split_sizes", TensorProto.INT64, [3], [1, 1, 1]),
        const("eps", 1e-6),
        const("exg_threshold", EXG_THRESHOLD),
        const("min_brightness", MIN_BRIGHTNESS),
    ]
    if heavy:
        # Right after the index, before anything reads it.
        trunk: list = []
        heavy_trunk(trunk, inits)
        trunk.append(helper.make_node("Add", ["vegetation_exg", "trunk_zero"], ["vegetation"], name="plus_trunk"))
        at = next(i for i, node in enumerate(nodes) if node.name == "chromatic_exg") + 1
        nodes[at:at] = trunk
    if two_channel_mask:
        dilate = next(node for node in nodes if node.name == "dilate")
        dilate.output[0] = "mask_one"
        nodes.append(helper.make_node("Concat", ["mask_one", "mask_one"], ["mask"], axis=1, name="two_channels"))
    h, w = (fixed, fixed) if fixed else ("height", "width")
    n = "batch" if batch else 1
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [n, 3, h, w])
    outputs = [
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, [n, 2 if two_channel_mask else 1, h, w]),
        helper.make_tensor_value_info("vegetation", TensorProto.FLOAT, [n, 1, h, w]),
        helper.make_tensor_value_info("brightness", TensorProto.FLOAT, [n, 1, h, w]),
    ]
    graph = helper.make_graph(nodes, "plant_exg", [image], outputs, inits)
    model = helper.make_model(
        graph,
        producer_name="demeter models/build.py",
        producer_version=VERSION,
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = 8
    model.doc_string = "Chromatic excess-green index of the smoothed image, its brightness, and a plant mask. See models/README.md."
    onnx.checker.check_model(model, full_check=True)
    return model


def detection_toml() -> str:
    def value(v):
        return ("true" if v else "false") if isinstance(v, bool) else repr(v)

    return "\n".join(f"{k} = {value(v)}" for k, v in DETECTION.items())


def manifest(model_bytes: bytes, name: str = NAME) -> str:
    return f"""# Generated by models/build.py; do not edit by hand.
name = "{name}"
version = "{VERSION}"
description = "Chromatic excess-green index of the 5x5-smoothed image, its brightness, and a thresholded, opened plant mask."

[input]
name = "image"
# NCHW, RGB, float32 scaled to 0..1 (pixel / 255, no mean or std).
layout = "NCHW"
channels = "RGB"
scale = {1 / 255!r}
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
# The photo is resized (aspect ratio kept) so that its long side is this many pixels.
long_side = {LONG_SIDE}

[outputs.mask]
name = "mask"
meaning = "plant mask, 1.0 where a plant is, 0.0 elsewhere; [1, 1, H, W]"

[outputs.vegetation]
name = "vegetation"
meaning = "chromatic excess-green index (2G-R-B)/(R+G+B) of the smoothed image; [1, 1, H, W]"

[outputs.brightness]
name = "brightness"
meaning = "R+G+B of the smoothed image, 0..3; [1, 1, H, W]"

[thresholds]
# Baked into the graph; listed here so results can record them.
exg = {EXG_THRESHOLD}
min_brightness = {MIN_BRIGHTNESS}
# Used by Demeter's detection stage: connected components (8-neighbour) of the mask smaller
# than this share of the resized image are dropped before the [detection] rules.
min_area_fraction = {MIN_AREA_FRACTION}

[detection]
# How Demeter turns the index into plants, cells and a trust flag; see models/build.py and
# crates/demeter-infer/src/detect/.
{detection_toml()}

[provenance]
sha256 = "{hashlib.sha256(model_bytes).hexdigest()}"
script = "models/build.py"
opset = {OPSET}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the checked-in files instead of writing them")
    args = parser.parse_args()
    model_bytes = build_model().SerializeToString(deterministic=True)
    fixed_bytes = build_model(FIXED).SerializeToString(deterministic=True)
    heavy_bytes = build_model(heavy=True).SerializeToString(deterministic=True)
    heavy_batch_bytes = build_model(heavy=True, batch=True).SerializeToString(deterministic=True)
    two_channel_bytes = build_model(two_channel_mask=True).SerializeToString(deterministic=True)
    files = {
        OUT / "model.onnx": model_bytes,
        OUT / "manifest.toml": manifest(model_bytes).encode(),
        FIXED_OUT / "model.onnx": fixed_bytes,
        FIXED_OUT / "manifest.toml": manifest(fixed_bytes, FIXED_NAME).encode(),
        HEAVY_OUT / "model.onnx": heavy_bytes,
        HEAVY_OUT / "manifest.toml": manifest(heavy_bytes, HEAVY_NAME).encode(),
        HEAVY_BATCH_OUT / "model.onnx": heavy_batch_bytes,
        HEAVY_BATCH_OUT / "manifest.toml": manifest(heavy_batch_bytes, HEAVY_BATCH_NAME).encode(),
        TWO_CHANNEL_OUT / "model.onnx": two_channel_bytes,
        TWO_CHANNEL_OUT / "manifest.toml": manifest(two_channel_bytes, TWO_CHANNEL_NAME).encode(),
    }
    for name, layout, seg in yolo_test_models.VARIANTS:
        model = yolo_test_models.build(layout, seg)
        onnx.checker.check_model(model, full_check=True)
        b = model.SerializeToString(deterministic=True)
        out = HERE.parent / "tests" / "models" / name
        files[out / "model.onnx"] = b
        files[out / "manifest.toml"] = yolo_test_models.manifest(name, layout, seg, hashlib.sha256(b).hexdigest()).encode()
    for name in mask_test_models.VARIANTS:
        model = mask_test_models.build(name)
        onnx.checker.check_model(model, full_check=True)
        b = model.SerializeToString(deterministic=True)
        out = HERE.parent / "tests" / "models" / name
        files[out / "model.onnx"] = b
        files[out / "manifest.toml"] = mask_test_models.manifest(name, hashlib.sha256(b).hexdigest()).encode()
    if args.check:
        stale = [p for p, b in files.items() if not p.exists() or p.read_bytes() != b]
        for p in stale:
            print(f"{p.relative_to(HERE.parent)} differs from a rebuild; run python3 models/build.py", file=sys.stderr)
        if not stale:
            print(
                f"models/{NAME} and tests/models/{{{FIXED_NAME},{HEAVY_NAME},{HEAVY_BATCH_NAME},{TWO_CHANNEL_NAME},"
                f"{','.join(v[0] for v in yolo_test_models.VARIANTS)},{','.join(mask_test_models.VARIANTS)}}}: "
                "model.onnx and manifest.toml rebuild byte-for-byte"
            )
        return 1 if stale else 0
    for p, b in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b)
        print(f"wrote {p.relative_to(HERE.parent)} ({len(b)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The Python baseline of Demeter's pipeline benchmark: the same job, the way a competent
Python service (like the seed's Celery workers) would do it.

Per photo: read and decode with Pillow (EXIF orientation applied; `thumbnail` decodes JPEGs at
reduced size through libjpeg's DCT scaling, as Pillow does by default), resize so the long side
is the model's 512 px, run the same `model.onnx` with the `onnxruntime` package (one intra-op
thread per process), count the plants as connected components of the mask above the model's
minimum area (SciPy), and write what the daemon writes per photo: a JPEG thumbnail and the
result with every plant's box (JSON). Like the daemon, it leaves the overlay (the photo with the
plants boxed) to be drawn when someone opens the photo. N processes share the photos.

Prints one JSON object: photos, seconds, photos_per_minute.

usage: baseline.py [--processes 4] --model models/plant-exg/model.onnx [--out DIR] PHOTO_DIR
"""

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps
from scipy import ndimage

LONG_SIDE = 512
MIN_AREA_FRACTION = 0.00008

_session = None
_out = None


def _init(model_path, out_dir):
    global _session, _out
    _out = out_dir
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    _session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])


def process(path):
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.BILINEAR)
        rgb = im.convert("RGB")
    x = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
    mask, _vegetation = _session.run(["mask", "vegetation"], {"image": x})
    labels, n = ndimage.label(mask[0, 0] > 0.5, structure=np.ones((3, 3)))
    min_area = max(1, int(np.ceil(MIN_AREA_FRACTION * labels.size)))
    areas = np.bincount(labels.ravel())[1:]
    boxes = [
        (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
        for sl, area in zip(ndimage.find_objects(labels), areas)
        if sl is not None and area >= min_area
    ]
    name = os.path.splitext(os.path.basename(path))[0]
    thumb = rgb.copy()
    thumb.thumbnail((256, 256))
    thumb.save(os.path.join(_out, name + ".thumb.jpg"), "JPEG", quality=80)
    with open(os.path.join(_out, name + ".json"), "w") as f:
        json.dump({"photo": os.path.basename(path), "total_detected": len(boxes), "boxes": boxes}, f)
    return len(boxes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", help="where thumbnails and results go (default: a temporary folder)")
    ap.add_argument("dir")
    args = ap.parse_args()
    photos = sorted(
        os.path.join(args.dir, f) for f in os.listdir(args.dir) if f.lower().endswith((".jpg", ".jpeg", ".png"))
    )
    out_dir = args.out or tempfile.mkdtemp(prefix="baseline-")
    os.makedirs(out_dir, exist_ok=True)
    with mp.Pool(args.processes, initializer=_init, initargs=(args.model, out_dir)) as pool:
        # Sessions are built before the clock starts, as the daemon's are.
        pool.map(time.sleep, [0.2] * args.processes)
        t0 = time.perf_counter()
        counts = pool.map(process, photos, chunksize=1)
        secs = time.perf_counter() - t0
    print(json.dumps({"photos": len(photos), "seconds": secs, "photos_per_minute": len(photos) * 60 / secs,
                      "plants": sum(counts)}))


if __name__ == "__main__":
    main()

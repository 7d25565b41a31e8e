#!/usr/bin/env python3
"""Writes the few bad-input fixtures that Rust's `image` crate cannot encode itself.

The bad-input corpus test (tests/e2e/corpus.rs) generates most of its >200 files at run time
(truncations, random bytes, lying headers, 16-bit, alpha, TIFF, GIF...). These need an encoder
that writes CMYK or progressive JPEG, animated WebP and animated GIF, so they are made once with Pillow and
checked in (a few KB each). Regenerate with:

    python3 -m venv /tmp/pil && /tmp/pil/bin/pip install pillow==13.0.0
    /tmp/pil/bin/python tests/corpus/make-fixtures.py
"""
import os

from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))


def scene(size=(320, 240)):
    """A small 'tray': brown soil with a few green rosettes."""
    im = Image.new("RGB", size, (92, 64, 40))
    d = ImageDraw.Draw(im)
    for i, (x, y) in enumerate([(60, 60), (160, 60), (260, 60), (110, 170), (210, 170)]):
        r = 18 + 4 * (i % 3)
        d.ellipse([x - r, y - r, x + r, y + r], fill=(70, 170, 60))
    return im


def main():
    im = scene()
    im.convert("CMYK").save(os.path.join(HERE, "cmyk.jpg"), quality=85)
    im.save(os.path.join(HERE, "progressive.jpg"), quality=85, progressive=True)
    frames = [scene(), scene().transpose(Image.FLIP_LEFT_RIGHT)]
    frames[0].save(os.path.join(HERE, "animated.webp"), save_all=True, append_images=frames[1:], duration=200, loop=0)
    frames[0].save(os.path.join(HERE, "animated.gif"), save_all=True, append_images=frames[1:], duration=200, loop=0)
    for name in ("cmyk.jpg", "progressive.jpg", "animated.webp", "animated.gif"):
        print(name, os.path.getsize(os.path.join(HERE, name)), "bytes")


if __name__ == "__main__":
    main()

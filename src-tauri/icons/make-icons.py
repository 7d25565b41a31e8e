#!/usr/bin/env python3
"""Draws Demeter's app and tray icons (a leaf in a disc) with the standard library only.

Run from anywhere: `python3 src-tauri/icons/make-icons.py`. The PNGs are checked in; this
script is how they were made, so they can be changed without an image editor.

- icon.png, 32x32.png, 128x128.png, 128x128@2x.png: the app icon (window, .deb, menus).
- tray-idle.png: nothing to do (green leaf).
- tray-busy.png: photos being processed (leaf with a blue dot).
- tray-failed.png: the last batch had failures (leaf with a red dot).
"""
import math
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def png(path, size, pixel):
    rows = []
    for y in range(size):
        row = bytearray([0])
        for x in range(size):
            # 4x4 supersampling for smooth edges.
            acc = [0.0, 0.0, 0.0, 0.0]
            for sy in range(4):
                for sx in range(4):
                    u = (x + (sx + 0.5) / 4) / size
                    v = (y + (sy + 0.5) / 4) / size
                    r, g, b, a = pixel(u, v)
                    acc[0] += r * a
                    acc[1] += g * a
                    acc[2] += b * a
                    acc[3] += a
            a = acc[3] / 16
            if a > 0:
                row += bytes(int(round(c / acc[3])) for c in acc[:3]) + bytes([int(round(a * 255))])
            else:
                row += bytes(4)
        rows.append(bytes(row))
    raw = b"".join(rows)

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(os.path.join(HERE, path), "wb") as f:
        f.write(data)


def leaf(u, v):
    """A leaf pointing up-right: the intersection of two discs, with a midrib."""
    # Rotate by 45 degrees around the centre so the leaf is diagonal.
    x, y = u - 0.5, v - 0.5
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    rx, ry = c * x + s * y, -s * x + c * y
    d = 0.36
    in_leaf = (rx - d) ** 2 + ry ** 2 < 0.5 ** 2 and (rx + d) ** 2 + ry ** 2 < 0.5 ** 2 and abs(ry) < 0.34
    rib = abs(rx) < 0.018 and abs(ry) < 0.30
    return in_leaf, rib


def app_icon(u, v):
    x, y = u - 0.5, v - 0.5
    if x * x + y * y > 0.48 ** 2:
        return (0, 0, 0, 0)
    in_leaf, rib = leaf(u, v)
    if rib:
        return (236, 247, 229, 1)
    if in_leaf:
        return (92, 184, 92, 1)
    return (32, 58, 44, 1)


def tray(dot):
    def pixel(u, v):
        if dot is not None and (u - 0.78) ** 2 + (v - 0.78) ** 2 < 0.2 ** 2:
            return dot + (1,)
        in_leaf, rib = leaf(u, v)
        if rib:
            return (32, 58, 44, 1)
        if in_leaf:
            return (92, 184, 92, 1)
        return (0, 0, 0, 0)

    return pixel


if __name__ == "__main__":
    for name, size in [("icon.png", 512), ("32x32.png", 32), ("128x128.png", 128), ("128x128@2x.png", 256)]:
        png(name, size, app_icon)
    png("tray-idle.png", 64, tray(None))
    png("tray-busy.png", 64, tray((52, 120, 246)))
    png("tray-failed.png", 64, tray((220, 53, 69)))

#!/usr/bin/python3
"""make_clahe_fixture.py: writes OpenCV's CLAHE results as the fixture that
spec/c/test_image.c compares fovea's CLAHE against (spec/fixtures/clahe/).

Needs Debian's OpenCV for the system python: apt-get install -y python3-opencv, then
    /usr/bin/python3 tools/make_clahe_fixture.py
Inputs are deterministic (numpy's legacy RandomState), so the files are reproducible.
Writes <name>.png inputs, <case>.png outputs and cases.txt, one case per line:
    input output clip_limit tiles_x tiles_y mode
mode: gray (1 channel), lab (L of COLOR_RGB2LAB) or green (channel 1 of RGB).
All PNGs are 8-bit; colour ones are RGB in the file.
"""
import os
import sys

import cv2
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "spec", "fixtures", "clahe")


def gray_gradient(h, w, seed):
    """A diagonal gradient with a dark disc and noise: uneven local contrast."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = 40 + 120 * (x + y) / (w + h)
    img -= 60 * (((x - w * 0.3) ** 2 + (y - h * 0.6) ** 2) < (min(h, w) * 0.25) ** 2)
    img += rs.normal(0, 12, (h, w))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def colour(h, w, seed):
    """Smooth colour fields with noise, like a dim fundus photograph."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 90 + 60 * np.sin(x / 9.0) * np.cos(y / 13.0)
    g = 50 + 40 * np.cos((x + y) / 11.0)
    b = 20 + 15 * np.sin(y / 7.0)
    img = np.stack([r, g, b], axis=2) + rs.normal(0, 8, (h, w, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_png(path, img):
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(path, img):
        sys.exit("cannot write " + path)


def clahe(img, clip, tiles_x, tiles_y, mode):
    op = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles_x, tiles_y))
    if mode == "gray":
        return op.apply(img)
    if mode == "green":
        out = img.copy()
        out[:, :, 1] = op.apply(np.ascontiguousarray(img[:, :, 1]))
        return out
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = op.apply(np.ascontiguousarray(lab[:, :, 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def main():
    os.makedirs(OUT, exist_ok=True)
    inputs = {
        "grad64": gray_gradient(64, 64, 1),       # divisible by 8 and 4
        "odd100x75": gray_gradient(75, 100, 2),   # W = 100, H = 75: padded for most grids
        "tiny7x5": gray_gradient(5, 7, 3),        # smaller than the grid
        "rgb80x60": colour(60, 80, 4),
    }
    cases = [
        ("grad64", 2.0, 8, 8, "gray"),
        ("grad64", 40.0, 8, 8, "gray"),
        ("grad64", 4.0, 4, 4, "gray"),
        ("grad64", 0.0, 8, 8, "gray"),
        ("grad64", 1.0, 3, 5, "gray"),
        ("odd100x75", 2.0, 8, 8, "gray"),
        ("odd100x75", 4.0, 5, 5, "gray"),
        ("odd100x75", 3.0, 4, 7, "gray"),      # W divisible, H not: OpenCV pads a full tile of columns
        ("odd100x75", 40.0, 8, 8, "gray"),
        ("tiny7x5", 2.0, 8, 8, "gray"),
        ("tiny7x5", 2.0, 16, 16, "gray"),
        ("rgb80x60", 2.0, 8, 8, "lab"),
        ("rgb80x60", 4.0, 4, 4, "lab"),
        ("rgb80x60", 2.0, 8, 8, "green"),
    ]
    for name, img in inputs.items():
        write_png(os.path.join(OUT, name + ".png"), img)
    lines = []
    for name, clip, tx, ty, mode in cases:
        out_name = "%s_clip%g_%dx%d_%s.png" % (name, clip, tx, ty, mode)
        write_png(os.path.join(OUT, out_name), clahe(inputs[name], clip, tx, ty, mode))
        lines.append("%s.png %s %g %d %d %s" % (name, out_name, clip, tx, ty, mode))
    with open(os.path.join(OUT, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %d cases to %s (OpenCV %s)" % (len(cases), os.path.normpath(OUT), cv2.__version__))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""make_png_fixtures.py: writes small PNGs of every colour type, bit depth, tRNS and
Adam7 interlacing, encoded here by hand (zlib and struct only, no imaging library),
with the pixels a reader must return, for spec/c/test_image.c (spec/fixtures/png/).

    python3 tools/make_png_fixtures.py

For each case NAME: NAME.png, and NAME.expect = one text line "H W C BITS\n" then the
decoded samples row-major (H, W, C): bytes when BITS is 8, big-endian 16-bit words when
16. Expectations follow fovea's documented reading: palettes expand to RGB (RGBA with
tRNS), gray of 1/2/4 bits scales to 0..255, a tRNS colour key adds alpha 0/255.
"""
import os
import struct
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "spec", "fixtures", "png")
H, W = 11, 13  # odd sizes leave partial Adam7 blocks

# Adam7 passes: (x start, y start, x step, y step)
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def pack_row(samples, bits):
    """Samples of one row (ints) packed at `bits` per sample, MSB first."""
    if bits == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    if bits == 8:
        return bytes(samples)
    out, acc, n = bytearray(), 0, 0
    for s in samples:
        acc = (acc << bits) | s
        n += bits
        if n == 8:
            out.append(acc)
            acc, n = 0, 0
    if n:
        out.append(acc << (8 - n))
    return bytes(out)


def encode(pixels, channels, bits, color_type, interlace, extra=b""):
    """pixels[y][x] is a tuple of `channels` raw samples."""
    h, w = len(pixels), len(pixels[0])
    raw = bytearray()
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        xs = list(range(x0, w, dx))
        if not xs:
            continue
        for y in range(y0, h, dy):
            samples = [s for x in xs for s in pixels[y][x]]
            raw += b"\x00" + pack_row(samples, bits)  # filter type 0
    ihdr = struct.pack(">IIBBBBB", w, h, bits, color_type, 0, 0, 1 if interlace else 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) +
            chunk(b"IEND", b""))


def value(y, x, c, top):
    """A deterministic sample in 0..top that varies in x, y and channel."""
    v = y * 37 + x * 101 + c * 59 + (x * y) % 7 * 13
    if top == 65535:
        v = v * 641 + x * y * 3  # spread over 0..65535, mostly not multiples of 257
    return v % (top + 1)


def write(name, png, expect, h, w, c, bits):
    with open(os.path.join(OUT, name + ".png"), "wb") as f:
        f.write(png)
    with open(os.path.join(OUT, name + ".expect"), "wb") as f:
        f.write(("%d %d %d %d\n" % (h, w, c, bits)).encode())
        for row in expect:
            for px in row:
                f.write(pack_row(list(px), bits))


def plain(name, color_type, channels, bits, interlace=False):
    top = (1 << bits) - 1
    pixels = [[tuple(value(y, x, c, top) for c in range(channels)) for x in range(W)] for y in range(H)]
    scale = 255 // top if bits < 8 else 1
    expect = [[tuple(s * scale for s in px) for px in row] for row in pixels]
    write(name, encode(pixels, channels, bits, color_type, interlace), expect, H, W, channels, max(bits, 8))


def keyed(name, color_type, channels, bits):
    """tRNS colour key: the key colour becomes alpha 0, every other pixel alpha 255."""
    top = (1 << bits) - 1
    pixels = [[tuple(value(y, x, c, top) for c in range(channels)) for x in range(W)] for y in range(H)]
    key = pixels[3][4]
    trns = b"".join(struct.pack(">H", s) for s in key)
    expect = [[px + ((0 if px == key else top),) for px in row] for row in pixels]
    write(name, encode(pixels, channels, bits, color_type, False, chunk(b"tRNS", trns)), expect, H, W,
          channels + 1, bits)


def palette(name, bits, transparent=False, interlace=False):
    n = 1 << bits
    colours = [((i * 71) % 256, (i * 29 + 40) % 256, (255 - i * 13) % 256) for i in range(n)]
    alpha = [(i * 50) % 256 for i in range(n // 2 + 1)] if transparent else []  # shorter than PLTE
    pixels = [[(value(y, x, 0, n - 1),) for x in range(W)] for y in range(H)]
    extra = chunk(b"PLTE", b"".join(bytes(c) for c in colours))
    if transparent:
        extra += chunk(b"tRNS", bytes(alpha))

    def colour(i):
        rgb = colours[i]
        return rgb + ((alpha[i] if i < len(alpha) else 255),) if transparent else rgb

    expect = [[colour(px[0]) for px in row] for row in pixels]
    write(name, encode(pixels, 1, bits, 3, interlace, extra), expect, H, W, 4 if transparent else 3, 8)


def main():
    os.makedirs(OUT, exist_ok=True)
    for bits in (1, 2, 4, 8, 16):
        plain("gray%d" % bits, 0, 1, bits)
    plain("ga8", 4, 2, 8)
    plain("ga16", 4, 2, 16)
    plain("rgb8", 2, 3, 8)
    plain("rgb16", 2, 3, 16)
    plain("rgba8", 6, 4, 8)
    plain("rgba16", 6, 4, 16)
    keyed("gray8_trns", 0, 1, 8)
    keyed("rgb8_trns", 2, 3, 8)
    keyed("rgb16_trns", 2, 3, 16)
    for bits in (1, 2, 4, 8):
        palette("pal%d" % bits, bits)
    palette("pal8_trns", 8, transparent=True)
    palette("pal4_trns", 4, transparent=True)
    plain("gray1_adam7", 0, 1, 1, interlace=True)
    plain("gray16_adam7", 0, 1, 16, interlace=True)
    plain("rgba8_adam7", 6, 4, 8, interlace=True)
    palette("pal4_adam7", 4, interlace=True)
    print("wrote PNG fixtures to", os.path.normpath(OUT))


if __name__ == "__main__":
    main()

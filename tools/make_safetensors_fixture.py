#!/usr/bin/env python3
"""make_safetensors_fixture.py: writes spec/fixtures/safetensors/torch_small.safetensors
with PyTorch tensors of every dtype fovea reads (float32, float64, int64, uint8; a 0-dim
tensor, a 2x3x4 one, an empty one) and __metadata__, plus torch_small.json listing what a
reader must return. spec/serialize_spec.lua reads both.

    /usr/bin/python3 tools/make_safetensors_fixture.py

Needs Debian's PyTorch (apt-get install python3-torch). The file is written by the
reference writer, safetensors.torch.save_file, when the safetensors package is there
(Debian bookworm lacks it: `pip install --user safetensors`); otherwise by the small
writer below, which follows the format exactly. Either way the file is then read back
with torch alone (header parsed by json, data by torch.frombuffer) and, when present,
with safetensors.torch.load_file, and compared with the tensors written.

torch_small.json: {"tensors": {name: {"dtype": "float32", "shape": [...], "values":
[row-major values]}}, "metadata": {...}}. Float values are exact (JSON numbers of the
doubles the stored values equal); int64 values are decimal strings (exact beyond 2^53).
"""
import json
import os
import struct
import sys

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "spec", "fixtures", "safetensors")

DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.uint8: "U8"}
NAMES = {torch.float32: "float32", torch.float64: "float64", torch.int64: "int64", torch.uint8: "uint8"}


def tensors():
    return {
        "scalar_f32": torch.tensor(3.25, dtype=torch.float32),
        "cube_f32": (torch.arange(24, dtype=torch.float32) * 0.5 - 3.0).reshape(2, 3, 4),
        "vec_f32": torch.tensor([0.1, -1e-30, 65504.0, 3.4e38], dtype=torch.float32),
        "matrix_f64": torch.tensor([[0.1, -2.5, 1e-300], [1.0 / 3.0, 2.0 ** 60, -0.0]], dtype=torch.float64),
        "index_i64": torch.tensor([0, -1, 2 ** 53 + 1, -(2 ** 62) - 3, 2 ** 63 - 1, -(2 ** 63)], dtype=torch.int64),
        "image_u8": torch.tensor([[0, 1, 127], [128, 254, 255]], dtype=torch.uint8),
        "empty_f32": torch.zeros(0, 3, dtype=torch.float32),
        "layer.1.weight": torch.tensor([[1.5, -2.0]], dtype=torch.float32),
    }


METADATA = {"framework": "pytorch", "note": 'caf\u00e9 \u2713 "quoted" back\\slash\nnewline', "epoch": "7"}


def write_plain(path, ts, metadata):
    """The format by hand: u64 header length, JSON header padded to 8 bytes, data."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(ts):
        t = ts[name].contiguous()
        data = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_with_torch(path):
    """The file read back with torch and json only."""
    torch_dtypes = {v: k for k, v in DTYPES.items()}
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = torch_dtypes[info["dtype"]]
        buf = bytearray(data[b:e])
        t = torch.frombuffer(buf, dtype=dt) if buf else torch.zeros(0, dtype=dt)
        out[name] = t.reshape(info["shape"])
    return out, metadata


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b) and \
        (a.dtype not in (torch.float32, torch.float64) or
         torch.equal(torch.signbit(a), torch.signbit(b)))


def expected(ts):
    out = {}
    for name, t in ts.items():
        flat = t.reshape(-1).tolist()
        values = [str(v) for v in flat] if t.dtype == torch.int64 else flat
        out[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "values": values}
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "torch_small.safetensors")
    ts = tensors()
    try:
        from safetensors.torch import save_file, load_file
    except ImportError:
        save_file = load_file = None
    if save_file:
        save_file(ts, path, metadata=METADATA)
        writer = "safetensors.torch.save_file"
    else:
        write_plain(path, ts, METADATA)
        writer = "the plain writer in this script"
    back, metadata = read_with_torch(path)
    assert metadata == METADATA, metadata
    assert set(back) == set(ts), sorted(back)
    for name, t in ts.items():
        assert same(back[name], t), (name, back[name], t)
    if load_file:
        ref = load_file(path)
        for name, t in ts.items():
            assert same(ref[name], t), (name, ref[name], t)
    with open(os.path.join(OUT, "torch_small.json"), "w", encoding="utf-8") as f:
        json.dump({"tensors": expected(ts), "metadata": METADATA}, f, indent=1, sort_keys=True, ensure_ascii=True)
        f.write("\n")
    print("wrote %s with %s (torch %s); read back equal%s" % (
        path, writer, torch.__version__, " by torch and safetensors" if load_file else " by torch"))


if __name__ == "__main__":
    sys.exit(main())

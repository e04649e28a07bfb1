#!/usr/bin/env python3
"""convert_torchvision.py: a torchvision checkpoint (.pth) to a safetensors file fovea reads.

    /usr/bin/python3 tools/convert_torchvision.py resnet18-f37072fd.pth resnet18.safetensors

    /usr/bin/python3 tools/convert_torchvision.py [--arch ARCH] INPUT.pth OUTPUT.safetensors
    /usr/bin/python3 tools/convert_torchvision.py --arch ARCH --pretrained-from INPUT.pth OUTPUT.safetensors

INPUT is what torch.save wrote: a state_dict (name -> tensor), a dict holding one under
"state_dict", "model" or "model_state_dict" (training checkpoints), or a whole pickled
nn.Module (its state_dict() is taken). A "module." prefix on every name (DataParallel)
is dropped. ARCH (resnet18, shufflenet_v2_x1_0, shufflenet_v2_x0_5) makes the converter
build torchvision's model and load the weights into it with strict=True first, so a
checkpoint of another architecture is refused here rather than in fovea; it needs
torchvision (apt-get install python3-torchvision). The names are kept as they are
(torchvision's names are fovea's): in fovea
    require('models.resnet').resnet18{classes = 1000}:load('resnet18.safetensors')

Output: safetensors, written without the `safetensors` package (write_safetensors
below): an 8-byte little-endian header length, a JSON header {name: {"dtype", "shape",
"data_offsets"}, "__metadata__": {...}} padded with spaces to a multiple of 8 bytes, then
the tensors' raw little-endian bytes, contiguous, in the state_dict's order. Floating
tensors are stored as F32 (float16/bfloat16/float64 are converted), integer ones
(num_batches_tracked, 0-dim) as I64. The file is written to a temporary name and renamed,
then read back (read_safetensors) and compared with the tensors converted.
Prints a summary: tensors, parameters (elements of the floating tensors other than BN
running statistics), and bytes.

A whole pickled model, or a file that is not a plain tensor checkpoint, needs Python's
full unpickler, which can run code from the file: convert only files you trust.
Exit status: 0 done, 1 a bad input (missing, not a checkpoint, unexpected contents,
wrong architecture), 2 bad arguments.
"""
import argparse
import json
import os
import struct
import sys

ARCHS = ("resnet18", "shufflenet_v2_x1_0", "shufflenet_v2_x0_5")
DTYPE_SIZES = {"F32": 4, "F64": 8, "I64": 8}
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


class ConvertError(Exception):
    """A problem with the input, reported as one line without a traceback."""


def fail(msg):
    raise ConvertError(msg)


def _np_dtype(tag):
    import numpy as np
    return {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8")}[tag]


def write_safetensors(path, tensors, metadata=None):
    """tensors: an ordered dict name -> torch tensor of dtype float32, float64 or int64
    (CPU). Writes path atomically (path + '.tmp', then rename)."""
    import torch
    tags = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        if t.dtype not in tags:
            fail("%s: cannot store dtype %s (float32, float64, int64 only)" % (name, t.dtype))
        tag = tags[t.dtype]
        data = t.detach().cpu().contiguous().numpy().astype(_np_dtype(tag), copy=False).tobytes()
        header[name] = {"dtype": tag, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for b in blobs:
                f.write(b)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        fail("cannot write %s: %s" % (path, e.strerror or e))
    return 8 + len(text) + offset


def read_safetensors(path):
    """The file as (dict name -> torch tensor, metadata dict); F32, F64 and I64 only."""
    import torch
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        fail("%s: too short for a safetensors file" % path)
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        fail("%s: header length %d runs past the end of the file" % (path, n))
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except ValueError as e:
        fail("%s: the header is not JSON: %s" % (path, e))
    metadata = header.pop("__metadata__", {}) or {}
    data = raw[8 + n:]
    torch_dtypes = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}
    out = {}
    for name, info in header.items():
        tag = info["dtype"]
        if tag not in torch_dtypes:
            fail("%s: %s has dtype %s (this reader knows F32, F64, I64)" % (path, name, tag))
        b, e = info["data_offsets"]
        count = 1
        for s in info["shape"]:
            count *= s
        if e - b != count * DTYPE_SIZES[tag] or e > len(data):
            fail("%s: %s: data_offsets %s do not fit shape %s" % (path, name, info["data_offsets"], info["shape"]))
        buf = bytearray(data[b:e])
        t = torch.frombuffer(buf, dtype=torch_dtypes[tag]) if buf else torch.zeros(0, dtype=torch_dtypes[tag])
        out[name] = t.reshape(info["shape"])
    return out, metadata


def _load_pth(path):
    """torch.load of path, the tensor-only unpickler first, the full one for whole models."""
    import pickle
    import torch
    if not os.path.exists(path):
        fail("%s: no such file" % path)
    if os.path.isdir(path):
        fail("%s: is a directory, not a checkpoint file" % path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # not weights-only: a pickled module, or not a checkpoint at all
        first_msg = str(first).splitlines()[0] if str(first) else type(first).__name__
    try:
        return torch.load(path, map_location="cpu")
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, UnicodeDecodeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        fail("%s: not a PyTorch checkpoint (torch.load: %s)" % (path, msg or first_msg))
    except (ModuleNotFoundError, AttributeError) as e:
        fail("%s: a pickled object whose class cannot be loaded here (%s); install the package "
             "that defines it, or save model.state_dict() instead" % (path, e))


def _state_dict_of(obj, path):
    import torch
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict(), "a pickled %s" % type(obj).__name__
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, torch.nn.Module):
                return inner.state_dict(), "a checkpoint with a pickled %s under %r" % (type(inner).__name__, key)
            if isinstance(inner, dict) and inner and all(torch.is_tensor(v) for v in inner.values()):
                return inner, "a checkpoint with a state_dict under %r" % key
        if obj and all(isinstance(k, str) for k in obj) and all(torch.is_tensor(v) for v in obj.values()):
            return obj, "a state_dict"
        if not obj:
            fail("%s: the checkpoint is an empty dict" % path)
        bad = [k for k, v in obj.items() if not torch.is_tensor(v)][:5]
        fail("%s: unexpected format: a dict that is not a state_dict (entries that are not tensors: %s); "
             "expected a state_dict, a dict with one under 'state_dict' or 'model', or a pickled nn.Module"
             % (path, ", ".join("%r (%s)" % (k, type(obj[k]).__name__) for k in bad)))
    fail("%s: unexpected format: torch.load gave a %s; expected a state_dict, a dict with one "
         "under 'state_dict' or 'model', or a pickled nn.Module" % (path, type(obj).__name__))


def _strip_module_prefix(sd):
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}, True
    return sd, False


def _through_arch(arch, sd, path):
    """Loads sd into torchvision's arch (strict) and returns that model's state_dict."""
    try:
        import torchvision
    except ImportError as e:
        fail("--arch needs torchvision (apt-get install python3-torchvision): %s" % e)
    builder = getattr(torchvision.models, arch)
    try:
        model = builder(weights=None)
    except TypeError:  # torchvision before 0.13
        model = builder(pretrained=False)
    want = model.state_dict()

    def some(names):
        names = sorted(names)
        return ", ".join(names[:4]) + (", ... (%d in all)" % len(names) if len(names) > 4 else "")

    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    shapes = ["%s %s (model %s)" % (k, tuple(sd[k].shape), tuple(want[k].shape))
              for k in want if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append("missing " + some(missing))
        if unexpected:
            parts.append("unexpected " + some(unexpected))
        if shapes:
            parts.append("shape mismatch " + some(shapes))
        fail("%s: not a torchvision %s checkpoint: %s" % (path, arch, "; ".join(parts)))
    model.load_state_dict(sd, strict=True)
    return model.state_dict()


def convert(src, dst, arch=None, quiet=False):
    import torch
    obj = _load_pth(src)
    sd, kind = _state_dict_of(obj, src)
    sd, stripped = _strip_module_prefix(sd)
    if arch:
        sd = _through_arch(arch, sd, src)
    out, params, source_dtypes = {}, 0, set()
    for name, t in sd.items():
        t = t.detach().cpu()
        source_dtypes.add(str(t.dtype).replace("torch.", ""))
        if t.is_floating_point():
            t = t.to(torch.float32)
            if not name.endswith(BUFFER_SUFFIXES):
                params += t.numel()
        elif t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
            t = t.to(torch.int64)
        else:
            fail("%s: %s has dtype %s, which fovea cannot store" % (src, name, t.dtype))
        if t.is_sparse or t.is_quantized:
            fail("%s: %s is a sparse or quantized tensor" % (src, name))
        out[name] = t.contiguous()
    meta = {"format": "pt", "source": os.path.basename(src), "converter": "tools/convert_torchvision.py"}
    if arch:
        meta["arch"] = arch
    size = write_safetensors(dst, out, meta)
    back, _ = read_safetensors(dst)
    if list(back) != list(out) or any(not torch.equal(back[k], out[k]) or back[k].dtype != out[k].dtype for k in out):
        fail("%s: read back differs from what was written" % dst)
    if not quiet:
        ints = sum(1 for t in out.values() if t.dtype == torch.int64)
        print("%s (%s%s%s) -> %s" % (src, kind, ", 'module.' prefix dropped" if stripped else "",
                                      ", checked against torchvision %s" % arch if arch else "", dst))
        print("%d tensors (%d F32, %d I64; source dtypes %s), %d parameters, %d bytes" % (
            len(out), len(out) - ints, ints, "/".join(sorted(source_dtypes)), params, size))
    return out, params


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="convert_torchvision.py",
        description="Convert a torchvision checkpoint (.pth) to a safetensors file fovea reads.",
        epilog="example: /usr/bin/python3 tools/convert_torchvision.py resnet18-f37072fd.pth resnet18.safetensors")
    p.add_argument("paths", nargs="+", metavar="PATH", help="INPUT.pth OUTPUT.safetensors (OUTPUT only with --pretrained-from)")
    p.add_argument("--arch", choices=ARCHS, help="check the weights against torchvision's model of this architecture")
    p.add_argument("--pretrained-from", metavar="INPUT", help="the checkpoint to convert (with --arch)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary")
    a = p.parse_args(argv)
    if a.pretrained_from:
        if not a.arch:
            p.error("--pretrained-from needs --arch")
        if len(a.paths) != 1:
            p.error("with --pretrained-from, give only the output path")
        src, dst = a.pretrained_from, a.paths[0]
    else:
        if len(a.paths) != 2:
            p.error("expected INPUT.pth OUTPUT.safetensors")
        src, dst = a.paths
    if not os.path.exists(src):  # before importing torch: quick and clear
        print("convert_torchvision: %s: no such file" % src, file=sys.stderr)
        return 1
    if os.path.abspath(src) == os.path.abspath(dst):
        p.error("the output would overwrite the input")
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print("convert_torchvision: needs PyTorch (apt-get install python3-torch): %s" % e, file=sys.stderr)
        return 1
    try:
        convert(src, dst, a.arch, a.quiet)
    except ConvertError as e:
        print("convert_torchvision: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

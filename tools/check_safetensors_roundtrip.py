#!/usr/bin/env python3
"""check_safetensors_roundtrip.py: reads a safetensors file (one fovea wrote) with the
reference reader and prints what it holds as JSON, for spec/serialize_spec.lua.

    /usr/bin/python3 tools/check_safetensors_roundtrip.py FILE
    /usr/bin/python3 tools/check_safetensors_roundtrip.py --probe   # exit 0 when usable

The reader is safetensors.numpy.load_file (the tensors) and safetensors.safe_open (the
metadata), from the `safetensors` Python package (pip install --user safetensors;
Debian bookworm has no package for it). Output: {"tensors": {name: {"dtype": "float32",
"shape": [...], "values": [...]}}, "metadata": {...}}, values row-major; floats are
JSON numbers with Python's shortest round-trip repr (non-finite ones as the strings
"nan", "inf", "-inf"), int64 values decimal strings. Exit status 3 when the package is
missing, 1 when the file does not read.
"""
import json
import math
import sys

try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file
except ImportError as e:
    print("safetensors reference reader not available: %s" % e, file=sys.stderr)
    sys.exit(3)

NAMES = {"float32": "float32", "float64": "float64", "int64": "int64", "uint8": "uint8"}


def value(v, dtype):
    if dtype == "int64":
        return str(int(v))
    if dtype == "uint8":
        return int(v)
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    if argv[1] == "--probe":
        return 0
    path = argv[1]
    try:
        arrays = load_file(path)
        with safe_open(path, framework="np") as f:
            metadata = f.metadata() or {}
    except Exception as e:  # the reference reader's own error
        print("reference reader refused %s: %s" % (path, e), file=sys.stderr)
        return 1
    out = {}
    for name, a in arrays.items():
        dtype = NAMES.get(str(a.dtype), str(a.dtype))
        out[name] = {"dtype": dtype, "shape": list(a.shape),
                     "values": [value(v, dtype) for v in np.asarray(a).reshape(-1).tolist()]}
    json.dump({"tensors": out, "metadata": metadata}, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""MNIST-format IDX files for the Python checks (check_onnx.py, check_pytorch.py): the one
reader both use, with kiln's rule for file names (gzipped or not)."""
import gzip
import os
import struct

import numpy as np


def find_file(directory, gz_name):
    """directory/name if it is a file, else the same without .gz (kiln's rule); None if neither."""
    for p in (os.path.join(directory, gz_name), os.path.join(directory, gz_name[:-3])):
        if os.path.isfile(p):
            return p
    return None


def read_idx(path):
    """An IDX file (gzipped or not) as a uint8 numpy array of its dims."""
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    dims = raw[3]
    shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)

"""MNIST-format IDX files for the Python scripts (check_onnx.py, check_pytorch.py,
web_driver.py): the one reader they use, with kiln's rule for file names (gzipped or not).
numpy only for read_idx: web_driver.py runs without it."""
import gzip
import os
import struct


def find_file(directory, gz_name):
    """directory/name if it is a file, else the same without .gz (kiln's rule); None if neither."""
    for p in (os.path.join(directory, gz_name), os.path.join(directory, gz_name[:-3])):
        if os.path.isfile(p):
            return p
    return None


def read_idx_bytes(path):
    """An IDX file (gzipped or not): (its dims, the bytes of its body)."""
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    n = raw[3]
    dims = struct.unpack(">" + "I" * n, raw[4:4 + 4 * n])
    return dims, raw[4 + 4 * n:]


def read_idx(path):
    """An IDX file (gzipped or not) as a uint8 numpy array of its dims."""
    import numpy as np

    dims, body = read_idx_bytes(path)
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)

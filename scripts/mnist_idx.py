"""MNIST-format IDX files for the Python scripts (check_onnx.py, check_pytorch.py,
web_driver.py, benches/peers/): the one reader they use, with kiln's rule for file names
(gzipped or not). numpy only for read_idx: web_driver.py runs without it."""
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


def load_split(directory, dataset):
    """((train images, labels), (test images, labels)) as uint8 arrays, by kiln's rules:
    mnist and fashion are the four standard files, mnist10k trains on the first 8,000 test
    images and tests on the last 2,000."""
    def get(name):
        path = find_file(directory, name)
        if path is None:
            raise SystemExit(f"{os.path.join(directory, name)} (or without .gz) is missing: --data-dir must hold the {dataset} IDX files")
        return read_idx(path)

    x, y = get("t10k-images-idx3-ubyte.gz"), get("t10k-labels-idx1-ubyte.gz")
    if dataset == "mnist10k":
        return (x[:8000], y[:8000]), (x[8000:], y[8000:])
    return (get("train-images-idx3-ubyte.gz"), get("train-labels-idx1-ubyte.gz")), (x, y)

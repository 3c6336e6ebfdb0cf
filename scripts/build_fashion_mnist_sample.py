""" Rebuild the embedded Fashion-MNIST sample, bit for bit, from the official idx files.

The sample is the first 600 images of each class of the official training split and the first 100 of each class
of the official test split, in file order. The official files come with Debian's `dataset-fashion-mnist`:

    apt-get install dataset-fashion-mnist
    python scripts/build_fashion_mnist_sample.py --source /usr/share/datasets/fashion-mnist
"""
import argparse
import hashlib
from pathlib import Path

import numpy as np

from timm_frozenmix.data.datasets import FASHION_MNIST_FILES, SAMPLE_DIR, SAMPLE_PER_CLASS
from timm_frozenmix.data.idx import read_idx, write_idx


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    return np.sort(keep)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--source', default='/usr/share/datasets/fashion-mnist', help='folder of the official files')
    parser.add_argument('--dest', default=str(SAMPLE_DIR), help='where the sample is written')
    args = parser.parse_args()
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    for split, (images_file, labels_file) in FASHION_MNIST_FILES.items():
        images = read_idx(Path(args.source) / images_file)
        labels = read_idx(Path(args.source) / labels_file)
        keep = first_per_class(labels, SAMPLE_PER_CLASS[split])
        for name, array in ((images_file, images[keep]), (labels_file, labels[keep])):
            write_idx(dest / name, array)
            digest = hashlib.sha256((dest / name).read_bytes()).hexdigest()[:16]
            print(f'{dest / name}: {array.shape} sha256 {digest}')


if __name__ == '__main__':
    main()

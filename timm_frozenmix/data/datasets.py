""" Datasets: the embedded Fashion-MNIST sample, the official Fashion-MNIST files, and everything timm knows

`fashion-mnist-sample` ships inside the package (600 training and 100 test images per class), so training and
evaluation run on a machine with no network and no data. Their splits take a slice, as timm's HF and TFDS readers
do: `train[:55000]` and `train[55000:]` hold a validation set out of the training images. `fashion-mnist` reads the official idx files, which
Debian's `dataset-fashion-mnist` puts in /usr/share/datasets/fashion-mnist. Every other name goes to timm's
`create_dataset` unchanged (`torch/cifar10`, `torch/mnist`, ImageNet-style folders, `hfds/...`, ...).

All pipelines hand the model pixels in [0, 1]; normalization lives inside the model (`Normalized`), so
adversarial examples and pixel permutations are made in pixel space.
"""
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from timm.data import create_dataset as timm_create_dataset, create_loader

from timm_frozenmix.core.constants import CIFAR_MEAN, CIFAR_STD, FASHION_MNIST_MEAN, FASHION_MNIST_STD
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.data.idx import read_idx

__all__ = [
    'SAMPLE', 'FASHION_MNIST', 'DEBIAN_FASHION_MNIST', 'DatasetInfo', 'IdxImageDataset', 'Normalized', 'ImageSubset',
    'create_dataset', 'create_eval_loader', 'dataset_info', 'drop_unreadable', 'is_known_dataset', 'parse_split',
]

SAMPLE = 'fashion-mnist-sample'
FASHION_MNIST = 'fashion-mnist'
DEBIAN_FASHION_MNIST = Path('/usr/share/datasets/fashion-mnist')
SAMPLE_DIR = Path(__file__).parent / 'sample'
SAMPLE_PER_CLASS = {'train': 600, 'test': 100}
FASHION_MNIST_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
FASHION_MNIST_CLASSES = (
    'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')


_TRAIN_SPLITS = ('train', 'training')
_EVAL_SPLITS = ('test', 'val', 'valid', 'validation', 'eval', 'evaluation')
_HUB_READERS = ('hfds', 'hfids')  # timm's Hugging Face datasets readers: no local folder needed
# what timm's create_dataset takes that the embedded and official Fashion-MNIST files have no use for
_TIMM_ONLY_KWARGS = ('class_map', 'input_key', 'target_key', 'num_samples', 'trust_remote_code')


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and its data config need to know of a dataset; None defers to the model's config."""
    in_chans: int = 3
    num_classes: Optional[int] = None
    input_size: Optional[Tuple[int, int, int]] = None
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None


_FASHION_MNIST_INFO = DatasetInfo(1, 10, (1, 28, 28), FASHION_MNIST_MEAN, FASHION_MNIST_STD)
_KNOWN_INFO = {
    SAMPLE: _FASHION_MNIST_INFO,
    FASHION_MNIST: _FASHION_MNIST_INFO,
    'torch/fashion_mnist': _FASHION_MNIST_INFO,
    'torch/mnist': DatasetInfo(1, 10, (1, 28, 28), (0.1307,), (0.3081,)),
    'torch/kmnist': DatasetInfo(1, 10, (1, 28, 28), (0.1918,), (0.3483,)),
    'torch/qmnist': DatasetInfo(1, 10, (1, 28, 28), (0.1307,), (0.3081,)),
    'torch/cifar10': DatasetInfo(3, 10, (3, 32, 32), CIFAR_MEAN, CIFAR_STD),
    'torch/cifar100': DatasetInfo(3, 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class IdxImageDataset(torch.utils.data.Dataset):
    """Grayscale images and labels from idx arrays; `transform` is set by timm's create_loader."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None):
        if len(images) != len(labels):
            raise UsageError(f'{len(images)} images but {len(labels)} labels')
        self.images = images
        self.labels = labels
        self.transform = transform
        self.classes = FASHION_MNIST_CLASSES

    @classmethod
    def from_folder(cls, folder: Path, split: str) -> 'IdxImageDataset':
        """The images of `split`: 'train' or 'test' (or a synonym), optionally sliced: 'train[55000:]'."""
        kind, rows = parse_split(split)
        images_file, labels_file = FASHION_MNIST_FILES[kind]
        images, labels = read_idx(folder / images_file), read_idx(folder / labels_file)
        if not len(labels[rows]):
            raise UsageError(f'split {split!r} holds no image: the {kind} split has {len(labels)}')
        return cls(images[rows], labels[rows])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


class Normalized(nn.Module):
    """A model that takes [0, 1] pixels: (x - mean) / std happens inside, as its first layer."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


class ImageSubset(torch.utils.data.Subset):
    """A subset whose `transform` is its dataset's, so timm's create_loader can set it."""

    @classmethod
    def random(cls, dataset, num_samples: int, seed: int = 0) -> 'ImageSubset':
        """A seeded, fixed random subset of `num_samples` images (UsageError if the split has fewer)."""
        if not 0 < num_samples <= len(dataset):
            raise UsageError(f'--num-samples must lie in [1, {len(dataset)}] for this split, got {num_samples}')
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
        return cls(dataset, sorted(order[:num_samples].tolist()))

    @property
    def transform(self):
        return self.dataset.transform

    @transform.setter
    def transform(self, transform):
        self.dataset.transform = transform


class _Readability(torch.utils.data.Dataset):
    """Whether each image of a timm folder dataset opens and decodes, as its loader would read it."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> bool:
        file = self.dataset.reader[self.indices[i]][0]
        try:
            with Image.open(file) as image:
                image.convert(self.dataset.input_img_mode or 'RGB')
        except (OSError, ValueError):  # what timm's ImageDataset skips, plus PIL's errors on bad headers
            return False
        finally:
            if hasattr(file, 'close'):
                file.close()
        return True


def drop_unreadable(dataset, workers: int = 0) -> Tuple[ImageSubset, List[str]]:
    """`dataset` without the images that cannot be read, and the files left out.

    timm's folder datasets replace an unreadable image by the next one with a warning, so a count of samples
    would include the substitute. Here each image is opened first (with `workers` processes) and only the
    readable ones are kept. Datasets read from arrays (Fashion-MNIST, torchvision's) are returned whole.
    """
    base, indices = (dataset.dataset, list(dataset.indices)) if isinstance(dataset, torch.utils.data.Subset) \
        else (dataset, list(range(len(dataset))))
    if not (hasattr(base, 'reader') and hasattr(base, 'filename') and hasattr(base, 'input_img_mode')):
        return ImageSubset(base, indices), []
    loader = torch.utils.data.DataLoader(_Readability(base, indices), batch_size=64, num_workers=workers)
    readable = torch.cat([batch for batch in loader]).tolist()
    kept = [i for i, ok in zip(indices, readable) if ok]
    return ImageSubset(base, kept), [base.filename(i) for i, ok in zip(indices, readable) if not ok]


def create_eval_loader(dataset, data_config: dict, batch_size: int, workers: int, device: torch.device,
                       distributed: bool = False, pin_memory: bool = False, persistent_workers: bool = False):
    """timm's eval loader (resize, centre crop) yielding [0, 1] pixels: normalization belongs to the model."""
    chans = data_config['input_size'][0]
    return create_loader(
        dataset, input_size=data_config['input_size'], batch_size=batch_size, is_training=False,
        interpolation=data_config['interpolation'], crop_pct=data_config['crop_pct'],
        mean=(0.,) * chans, std=(1.,) * chans, num_workers=workers, distributed=distributed,
        pin_memory=pin_memory, device=device, use_prefetcher=device.type == 'cuda',
        persistent_workers=persistent_workers and workers > 0)


_SLICED_SPLIT = re.compile(r'^(\w+)(?:\[(-?\d+)?:(-?\d+)?\])?$')


def parse_split(split: str) -> Tuple[str, slice]:
    """'train', 'test' or a synonym, with an optional slice of image indices: 'train[:55000]' is
    ('train', slice(None, 55000)). Raises UsageError on anything else."""
    match = _SLICED_SPLIT.match(split.strip())
    name = match.group(1) if match else None
    if name not in _TRAIN_SPLITS + _EVAL_SPLITS:
        raise UsageError(f'unknown split {split!r}: use one of {", ".join(_TRAIN_SPLITS + _EVAL_SPLITS)}, '
                         f'optionally sliced as in train[:55000]')
    start, stop = (int(v) if v else None for v in match.group(2, 3))
    return 'train' if name in _TRAIN_SPLITS else 'test', slice(start, stop)


def _fashion_mnist_folder(root: Optional[str]) -> Path:
    folder = Path(root) if root else DEBIAN_FASHION_MNIST
    missing = [f for pair in FASHION_MNIST_FILES.values() for f in pair if not (folder / f).is_file()]
    if missing:
        raise UsageError(
            f'Fashion-MNIST idx files not found in {folder} (missing {", ".join(missing)}): '
            f'run `apt-get install dataset-fashion-mnist` or pass --data-dir with the official files')
    return folder


def _prefix(name: str) -> str:
    prefix, sep, _ = name.partition('/')
    return prefix.lower() if sep else ''


def check_dataset(name: str, root: Optional[str] = None, download: bool = False) -> None:
    """Fail early, in one line, on a missing data folder. Names are timm's to judge: anything its
    create_dataset takes is taken (a name it refuses becomes one line when the dataset is made)."""
    if name == SAMPLE:
        return
    if name == FASHION_MNIST:
        _fashion_mnist_folder(root)
        return
    if _prefix(name) in _HUB_READERS:
        return  # Hugging Face datasets come from the Hub (or its cache); --data-dir only moves the cache
    if not root:
        raise UsageError(f'dataset {name!r} needs --data-dir (the folder that holds or receives its files)')
    if not download and not Path(root).exists():
        raise UsageError(f'--data-dir {root} does not exist (add --dataset-download for torch/ datasets)')


def create_dataset(name: str, root: Optional[str] = None, split: str = 'train', **kwargs):
    """Our two Fashion-MNIST datasets, or timm's create_dataset with the same arguments (class_map, input_key,
    target_key, num_samples, seed, trust_remote_code, ... pass through; those timm's datasets take and ours do
    not raise UsageError for ours)."""
    check_dataset(name, root, kwargs.get('download', False))
    if name in (SAMPLE, FASHION_MNIST):
        given = sorted(k for k in _TIMM_ONLY_KWARGS if kwargs.get(k) is not None)
        if given:
            raise UsageError(f'{", ".join("--" + k.replace("_", "-") for k in given)} apply to timm\'s datasets, '
                             f'not to {name}: drop them')
        return IdxImageDataset.from_folder(SAMPLE_DIR if name == SAMPLE else _fashion_mnist_folder(root), split)
    try:
        dataset = timm_create_dataset(name, root=root, split=split, **kwargs)
    except AssertionError as e:  # timm refuses names and settings by assertion ("Unknown torchvision dataset x")
        reason = str(e) or "refused by timm's create_dataset"
        raise UsageError(f'timm cannot make dataset {name!r} ({reason})') from None
    except RuntimeError as e:
        if not str(e).startswith('Found 0 images'):
            raise
        raise UsageError(f'dataset {name!r} has no image in {root} for split {split!r}: put images in class '
                         f'subfolders (root/{split}/CLASS/*.png), or pass the folder that holds them') from None
    if _prefix(name) == 'hfds':
        check_hfds_fields(name, dataset.reader)
    return dataset


def check_hfds_fields(name: str, reader) -> None:
    """UsageError naming the image or label field (timm's `ReaderHfds.image_key` / `label_key`) that the Hugging
    Face dataset lacks: timm's reader looks them up per sample, so a wrong name would fail mid-run."""
    if not len(reader.dataset):
        return
    row = reader.dataset[0]  # the reader's cast adds an empty column of a missing image field: read the values
    columns = [column for column, value in row.items() if value is not None]
    keys = [reader.image_key, *(reader.label_key or '').split(',')]
    missing = [key for key in keys if key not in columns]
    if missing:
        raise UsageError(f'dataset {name!r} has no field {missing[0]!r} (its fields: {", ".join(columns)}): name its '
                         f'image and label fields with --input-key and --target-key')


def is_known_dataset(name: str) -> bool:
    """Whether channels, classes and normalization of `name` are known without reading its files."""
    return name.lower() in _KNOWN_INFO


def dataset_info(name: str, dataset=None, input_img_mode: Optional[str] = None) -> DatasetInfo:
    """Channels, classes and normalization of a dataset; for folders, counted from the data."""
    if is_known_dataset(name):
        return _KNOWN_INFO[name.lower()]
    num_classes = None
    if dataset is not None:
        reader = getattr(dataset, 'reader', None)
        class_to_idx = getattr(reader, 'class_to_idx', None) or getattr(dataset, 'class_to_idx', None)
        num_classes = len(class_to_idx) if class_to_idx else None
    return DatasetInfo(in_chans=1 if input_img_mode == 'L' else 3, num_classes=num_classes)

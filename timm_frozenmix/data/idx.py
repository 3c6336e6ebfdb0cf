""" Reading and writing the idx format of MNIST and Fashion-MNIST (optionally gzip-compressed) """
import gzip
import struct
from pathlib import Path

import numpy as np

from timm_frozenmix.core.errors import UsageError

__all__ = ['read_idx', 'write_idx']


def read_idx(path) -> np.ndarray:
    """An unsigned-byte idx file as a numpy array, with a clear error for anything else."""
    path = Path(path)
    opener = gzip.open if path.suffix == '.gz' else open
    try:
        with opener(path, 'rb') as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise UsageError(f'cannot read idx file {path}: {e}') from None
    if len(data) < 4 or data[:2] != b'\x00\x00' or data[2] != 0x08:
        raise UsageError(f'{path} is not an unsigned-byte idx file (bad magic number)')
    ndim = data[3]
    shape = struct.unpack(f'>{ndim}I', data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise UsageError(f'{path} is truncated: header says {shape}, found {body.size} bytes of data')
    return body.reshape(shape)


def write_idx(path, array: np.ndarray) -> None:
    """Write a uint8 array as gzip-compressed idx, byte for byte reproducible (no timestamp, no name)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f'>{array.ndim}I', *array.shape)
    with open(path, 'wb') as raw, gzip.GzipFile(filename='', mode='wb', fileobj=raw, mtime=0, compresslevel=9) as f:
        f.write(header + array.tobytes())

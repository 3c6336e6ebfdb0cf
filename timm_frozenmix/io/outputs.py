""" Where commands write: checked before any work, replaced atomically, never beyond what they created

A command checks its output folder before it builds or computes anything, writes each file under a fresh
temporary name beside its target and renames it into place, so readers see the old file or the whole new one
and no file of the user's is ever overwritten or deleted by a temporary name.
"""
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from timm_frozenmix.core.errors import UsageError

__all__ = ['check_output_folder', 'replace_atomically', 'staging_folder']


def check_output_folder(path, flag: str = '--output') -> Path:
    """The absolute folder a command will write into, checked now: a folder or creatable, and writable.

    Raises UsageError when `path` is a file, lies under a file, or its nearest existing folder is read-only.
    Creates nothing.
    """
    path = Path(path).resolve()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        what = 'is a file' if existing == path else f'lies under the file {existing}'
        raise UsageError(f'{flag} {path} {what}: pass a folder')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f'{flag} {path} cannot be written ({existing} is read-only): pass a writable folder')
    return path


def replace_atomically(path, write) -> None:
    """Call write(tmp_path) on a fresh temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # the permissions a plain open() would give, not mkstemp's 0600
    try:
        write(tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def staging_folder(parent: Path):
    """A fresh, empty folder inside `parent` (created if needed) that is removed, with what is left in it, on exit."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix='.staging-', dir=parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)

""" A training run's folder, whose files of one epoch change together or not at all

Each file is written atomically, but an epoch writes several (last, best, its safetensors weights, the summary),
and a run killed between two of them would leave files that disagree. So an epoch's files are first written
into a pending folder, then a marker commits them, then they are moved into place one rename at a time. A run
killed before the marker loses that epoch whole (resume trains it again); one killed after it has its moves
finished by `recover`, which resume calls first. Either way last, best, weights and summary agree.
"""
import os
import shutil
from pathlib import Path
from typing import Callable, Dict, Optional

from timm_frozenmix.io.outputs import replace_atomically

__all__ = ['RunFolder', 'LAST', 'BEST', 'WEIGHTS', 'SUMMARY', 'SETTINGS', 'history_name']

LAST, BEST, WEIGHTS, SUMMARY, SETTINGS = (
    'last.pth.tar', 'model_best.pth.tar', 'model.safetensors', 'summary.csv', 'args.yaml')
_HISTORY_PREFIX, _HISTORY_SUFFIX = 'checkpoint-', '.pth.tar'


def history_name(epoch: int) -> str:
    """The file of an epoch kept by --checkpoint-hist, named as timm's CheckpointSaver names it."""
    return f'{_HISTORY_PREFIX}{epoch}{_HISTORY_SUFFIX}'
_PENDING, _COMMITTED = '.pending-epoch', 'COMMITTED'

# Test hook: called with the name of each step that changes the folder, so a test can kill the process there.
fault_injection: Optional[Callable[[str], None]] = None


def _step(name: str) -> None:
    if fault_injection is not None:
        fault_injection(name)


class RunFolder:
    """The folder of one training run; `commit` replaces a set of its files as one."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def _pending(self) -> Path:
        return self.path / _PENDING

    def recover(self) -> None:
        """Finish the moves of a committed set, or drop a set that was never committed.

        Every step may have been done already, by an earlier recovery or by another rank recovering at the same
        time: a file another process moved or removed first is skipped.
        """
        for stray in self.path.glob(f'.{SETTINGS}.*.tmp'):  # args.yaml is written alone, atomically
            stray.unlink(missing_ok=True)
        if not self._pending.is_dir():
            return
        try:
            names = (self._pending / _COMMITTED).read_text().split()
        except FileNotFoundError:
            names = []  # never committed: the previous files stand
        for name in names:
            _step(f'move {name}')
            try:
                os.replace(self._pending / name, self.path / name)
            except FileNotFoundError:
                pass
        _step('clean up')
        shutil.rmtree(self._pending, ignore_errors=True)

    def commit(self, writers: Dict[str, Callable[[Path], None]]) -> None:
        """Replace the files named by `writers` together: each writer writes its file's new content to the path
        it is given. After a kill at any instant, `recover` leaves either every old file or every new one."""
        self.recover()
        self._pending.mkdir()
        for name, write in writers.items():
            _step(f'write {name}')
            write(self._pending / name)
            with open(self._pending / name, 'rb') as f:
                os.fsync(f.fileno())
        _step('commit')
        replace_atomically(self._pending / _COMMITTED, lambda tmp: tmp.write_text('\n'.join(writers)))
        self.recover()

    def history(self) -> Dict[int, Path]:
        """The epoch checkpoints kept by --checkpoint-hist, by epoch."""
        kept = {}
        for path in self.path.glob(f'{_HISTORY_PREFIX}*{_HISTORY_SUFFIX}'):
            number = path.name[len(_HISTORY_PREFIX):-len(_HISTORY_SUFFIX)]
            if number.isdigit():
                kept[int(number)] = path
        return kept

    def prune_history(self, keep) -> None:
        """Remove the epoch checkpoints of every epoch not in `keep` (after a commit: a kill in between leaves
        one file too many, never one too few)."""
        for epoch, path in self.history().items():
            if epoch not in keep:
                path.unlink(missing_ok=True)

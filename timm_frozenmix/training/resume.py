""" Resuming a run as it was recorded: what may change, what is refused

A checkpoint records every setting of its run. Resuming continues that run, so what defines it (the model, its
frozen mixing, the data, the optimizer, the schedule, augmentation, the task) must stay as recorded; a flag that
would change one of them is refused by name instead of being recorded while the old value runs. What only
affects how the run executes (where it runs, how fast, how long, how it logs) may change, and the new value is
recorded.
"""
from dataclasses import fields
from typing import Any, Dict

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io.checkpoint import Checkpoint
from timm_frozenmix.training.config import TrainConfig, flag_name

__all__ = ['MAY_CHANGE_ON_RESUME', 'NOT_INHERITED', 'recorded_settings', 'check_resume']

# settings that a resumed run may change: they do not change what is learned
MAY_CHANGE_ON_RESUME = frozenset({
    'epochs', 'resume', 'no_resume_opt', 'start_epoch', 'device', 'workers', 'pin_mem', 'log_interval', 'output',
    'experiment', 'validation_batch_size', 'torchcompile', 'torchcompile_mode', 'tune_executions', 'channels_last',
    'amp', 'amp_dtype', 'dist_bn', 'sync_bn', 'data_dir', 'dataset_download',  # the same data may lie elsewhere
    'log_wandb', 'checkpoint_hist',
})
# settings the command line does not take from the checkpoint: where the run writes and runs is this machine's
NOT_INHERITED = frozenset({'resume', 'output', 'experiment', 'device', 'start_epoch'})


def recorded_settings(checkpoint: Checkpoint) -> Dict[str, Any]:
    """The checkpoint's recorded settings that a resumed TrainConfig starts from."""
    known = set(TrainConfig.field_names()) - NOT_INHERITED
    return {k: v for k, v in checkpoint.settings.items() if k in known}


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def check_resume(config: TrainConfig, checkpoint: Checkpoint) -> None:
    """UsageError naming the first flag whose value differs from the one the checkpoint's run recorded."""
    recorded = TrainConfig(**recorded_settings(checkpoint)) if checkpoint.settings else None
    for f in fields(TrainConfig):
        if f.name in MAY_CHANGE_ON_RESUME or f.name not in checkpoint.settings:
            continue
        old, new = getattr(recorded, f.name), getattr(config, f.name)
        if not _same(old, new):
            raise UsageError(
                f'{flag_name(f.name)} {new!r} differs from {old!r}, which {config.resume} was trained with: a '
                f'resumed run continues as recorded, so drop {flag_name(f.name)} (or start a new run without --resume)')
    if checkpoint.epoch is None:
        raise UsageError(f'checkpoint {config.resume} holds weights only; resume needs last.pth.tar')

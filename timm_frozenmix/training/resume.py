""" Resuming a run as it was recorded: what may change, what is refused

A checkpoint records every setting of its run. Resuming continues that run, so what defines it (the model, its
frozen mixing, the data, the optimizer, the schedule, augmentation, the task) must stay as recorded; a flag that
would change one of them is refused by name instead of being recorded while the old value runs. What only
affects how the run executes (where it runs, how fast, how long, how it logs) may change, and the new value is
recorded.

A checkpoint of timm's own train.py resumes too: its pickled flags are read as `-c` reads timm's args.yaml (timm's
defaults where ours differ; a setting this train.py does not have is refused unless off), so the run continues
with timm's optimizer, schedule and augmentation.
"""
from dataclasses import fields
from typing import Any, Dict

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io.checkpoint import WRITTEN_BY, Checkpoint
from timm_frozenmix.training.config import TrainConfig, flag_name, timm_settings

__all__ = ['MAY_CHANGE_ON_RESUME', 'NOT_INHERITED', 'recorded_settings', 'check_resume']

# settings that a resumed run may change: they do not change what is learned
MAY_CHANGE_ON_RESUME = frozenset({
    'epochs', 'resume', 'no_resume_opt', 'start_epoch', 'device', 'workers', 'pin_mem', 'log_interval', 'output',
    'experiment', 'validation_batch_size', 'torchcompile', 'torchcompile_mode', 'tune_executions', 'channels_last',
    'amp', 'amp_dtype', 'dist_bn', 'sync_bn', 'data_dir', 'dataset_download',  # the same data may lie elsewhere
    'log_wandb', 'checkpoint_hist', 'adv_val_pgd_steps',  # what is measured, not what is learned
})
# settings the command line does not take from the checkpoint: where the run writes and runs is this machine's
NOT_INHERITED = frozenset({'resume', 'output', 'experiment', 'device', 'start_epoch'})


def recorded_settings(checkpoint: Checkpoint) -> Dict[str, Any]:
    """The checkpoint's recorded settings that a resumed TrainConfig starts from. UsageError when a checkpoint
    of timm's train.py used a setting this train.py does not have."""
    settings = checkpoint.settings
    if checkpoint.written_by != WRITTEN_BY:
        settings = timm_settings(settings, f"{checkpoint.written_by}'s checkpoint",
                                 f'resume it with {checkpoint.written_by} (eval_robust.py and the Hub export read it)')
    known = set(TrainConfig.field_names()) - NOT_INHERITED
    return {k: v for k, v in settings.items() if k in known}


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def check_resume(config: TrainConfig, checkpoint: Checkpoint) -> None:
    """UsageError naming the first flag whose value differs from the one the checkpoint's run recorded.

    A setting that our older files do not record (it is newer than they are) is not compared; timm's train.py
    lacks our settings, so its run had our defaults of them (timm's where `TIMM_DEFAULTS` says they differ)."""
    if checkpoint.epoch is None:
        raise UsageError(f'checkpoint {config.resume} holds weights only; resume needs last.pth.tar')
    settings = recorded_settings(checkpoint)
    recorded = TrainConfig(**settings)
    ours = checkpoint.written_by == WRITTEN_BY
    for f in fields(TrainConfig):
        if f.name in MAY_CHANGE_ON_RESUME or (ours and f.name not in settings):
            continue
        old, new = getattr(recorded, f.name), getattr(config, f.name)
        if not _same(old, new):
            raise UsageError(
                f'{flag_name(f.name)} {new!r} differs from {old!r}, which {config.resume} was trained with: a '
                f'resumed run continues as recorded, so drop {flag_name(f.name)} (or start a new run without --resume)')

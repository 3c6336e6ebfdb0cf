""" Where computation runs: a --device value checked before any work """
import torch

from timm_frozenmix.core.errors import UsageError

__all__ = ['check_device']


def check_device(device: str) -> None:
    """UsageError unless `device` names a torch device this machine has (cpu, cuda, cuda:N, ...)."""
    try:
        device = torch.device(device)
    except RuntimeError:
        raise UsageError(f'--device {device!r} is not a torch device: use cpu, cuda or cuda:N') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UsageError(f'--device {device} asks for CUDA, which this machine does not have: use --device cpu')

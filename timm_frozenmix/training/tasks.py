""" What a training run learns: classification, FGSM-adversarial classification, pixel un-shuffling

A `Task` owns everything that differs between them, so the training loop has no task-name branches: the
checks of the settings that apply to it, the training step (a `timm.task.TrainingTask` around the network), the
batch transform (mixup), the validation metrics, and the output at the end of a run. `task_for(config)` picks it.
"""
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from timm.data import Mixup
from timm.task import ClassificationTask, TrainingTask
from timm.utils import accuracy, unwrap_model

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.evaluation.unshuffle import PixelPermutation, psnr, save_unshuffle_grid

__all__ = ['Task', 'Classification', 'FGSMClassification', 'Unshuffling', 'task_for', 'pgd_examples',
           'FGSMClassificationTask', 'UnshuffleTask']


class FGSMClassificationTask(ClassificationTask):
    """Classification on FGSM examples made in [0, 1] pixel space: x + eps * sign(grad_x loss), clipped (Eq. 4)."""

    def __init__(self, model, eps: float, **kwargs):
        super().__init__(model, **kwargs)
        self.eps = eps

    def forward(self, input, target):
        # the attack goes through the unwrapped model: no DDP gradient hooks for a gradient w.r.t. the input
        attack_model = unwrap_model(self.trainable_module)
        x = input.detach().requires_grad_(True)
        grad, = torch.autograd.grad(self.criterion(attack_model(x), target), x)
        adversarial = (input + self.eps * grad.sign()).clamp(0, 1).detach()
        return super().forward(adversarial, target)


class UnshuffleTask(TrainingTask):
    """Permute the pixels of [0, 1] images, reconstruct them, MSE against the originals (paper Sec. 4.4)."""

    def __init__(self, model: nn.Module, permutation: PixelPermutation, **kwargs):
        super().__init__(**kwargs)
        self.trainable_module = model
        self.permutation = permutation

    def prepare_distributed(self, device_ids=None, **ddp_kwargs) -> 'UnshuffleTask':
        from torch.nn.parallel import DistributedDataParallel as DDP
        self.trainable_module = DDP(self.trainable_module, device_ids=device_ids, **ddp_kwargs)
        return self

    def forward(self, input: torch.Tensor, target=None):
        output = self.trainable_module(self.permutation(input))
        return {'loss': nn.functional.mse_loss(output.float(), input.float()), 'output': output}


class Task:
    """The part of a training run that depends on what is learned. Subclasses set `metrics`: the validation
    metrics, loss first; `--eval-metric` picks the best epoch by one of the others (higher is better)."""
    metrics: Tuple[str, ...] = ()

    def check(self, config) -> None:
        """UsageError for a setting that does not apply to this task."""
        if config.eval_metric not in self.metrics[1:]:
            raise UsageError(f'--eval-metric {config.eval_metric} is not measured for --task {config.task}: '
                             f'choose {" or ".join(self.metrics[1:])}')

    def check_data(self, config, info) -> None:
        """UsageError where the dataset (its `data.datasets.DatasetInfo`) cannot serve this task."""

    def training_step(self, net: nn.Module, config, data_config: dict, num_classes: int,
                      device: torch.device) -> TrainingTask:
        """The module whose forward(input, target) returns {'loss': ...} for one training batch."""
        raise NotImplementedError

    def prepare_batch(self, input: torch.Tensor, target: torch.Tensor, epoch: int):
        return input, target

    def evaluate(self, net: nn.Module, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        """This task's metrics on one validation batch (means over the batch)."""
        raise NotImplementedError

    def finish(self, net: nn.Module, loader_eval, output_dir) -> Optional[str]:
        """Output at the end of a run, in its folder; a line saying what was written, or None."""
        return None


class Classification(Task):
    metrics = ('loss', 'top1', 'top5')

    def __init__(self):
        self.mixup: Optional[Mixup] = None
        self.mixup_off_epoch = 0

    def check_data(self, config, info) -> None:
        if not (config.num_classes or info.num_classes):
            raise UsageError(f'cannot tell the number of classes of {config.dataset!r}: pass --num-classes')
        if (config.num_classes or info.num_classes) < 2:
            raise UsageError(f'{config.dataset!r} holds one class: a classifier needs at least 2 (check --data-dir '
                             f'and the split folders)')

    def training_step(self, net, config, data_config, num_classes, device):
        if config.mixup > 0 or config.cutmix > 0 or config.cutmix_minmax is not None:
            self.mixup = Mixup(
                mixup_alpha=config.mixup, cutmix_alpha=config.cutmix, cutmix_minmax=config.cutmix_minmax,
                prob=config.mixup_prob, switch_prob=config.mixup_switch_prob, mode=config.mixup_mode,
                label_smoothing=config.smoothing, num_classes=num_classes)
            self.mixup_off_epoch = config.mixup_off_epoch
        criterion_kwargs = dict(smoothing=config.smoothing, soft_targets=self.mixup is not None)
        return self._step(net, config, criterion_kwargs=criterion_kwargs, device=device, verbose=False)

    def _step(self, net, config, **kwargs) -> TrainingTask:
        return ClassificationTask(net, **kwargs)

    def prepare_batch(self, input, target, epoch):
        if self.mixup is None:
            return input, target
        if self.mixup_off_epoch and epoch >= self.mixup_off_epoch:
            self.mixup.mixup_enabled = False
        return self.mixup(input, target)

    def evaluate(self, net, input, target):
        output = net(input).float()
        top1, top5 = accuracy(output, target, topk=(1, min(5, output.shape[-1])))
        return OrderedDict(loss=nn.functional.cross_entropy(output, target), top1=top1, top5=top5)


def pgd_examples(net: nn.Module, input: torch.Tensor, target: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """l-inf PGD in [0, 1] pixel space from a random start in the eps ball, step 2.5 eps / steps (Madry et al.
    2018): the attack of the catastrophic-overfitting monitor, gradients enabled inside `torch.no_grad`."""
    alpha = 2.5 * eps / steps
    x = (input + torch.empty_like(input).uniform_(-eps, eps)).clamp(0, 1)
    with torch.enable_grad():
        for _ in range(steps):
            x = x.detach().requires_grad_(True)
            grad, = torch.autograd.grad(nn.functional.cross_entropy(net(x).float(), target), x)
            x = torch.min(torch.max(x + alpha * grad.sign(), input - eps), input + eps).clamp(0, 1)
    return x.detach()


class FGSMClassification(Classification):
    """Classification trained on FGSM examples ("FGSM-defended"), validated on clean images and, with
    `pgd_steps`, under PGD at the training eps (`pgd_top1`): FGSM training can collapse into catastrophic
    overfitting (robust to FGSM, not to PGD) within one epoch, which only a multi-step attack shows."""

    def __init__(self, eps: float = 8 / 255, pgd_steps: int = 0):
        super().__init__()
        self.eps, self.pgd_steps = eps, pgd_steps
        self.metrics = Classification.metrics + (('pgd_top1',) if pgd_steps else ())

    def _step(self, net, config, **kwargs) -> TrainingTask:
        return FGSMClassificationTask(net, eps=self.eps, **kwargs)

    def evaluate(self, net, input, target):
        metrics = super().evaluate(net, input, target)
        if self.pgd_steps:
            adversarial = pgd_examples(net, input, target, self.eps, self.pgd_steps)
            metrics['pgd_top1'] = accuracy(net(adversarial).float(), target, topk=(1,))[0]
        return metrics


class Unshuffling(Task):
    metrics = ('loss', 'psnr')

    def __init__(self):
        self.permutation: Optional[PixelPermutation] = None

    def check(self, config) -> None:
        super().check(config)
        if config.adv_train != 'none':
            raise UsageError('--adv-train applies to classification, not to --task unshuffle')
        if config.mixup > 0 or config.cutmix > 0 or config.cutmix_minmax is not None:
            raise UsageError('--mixup / --cutmix apply to classification, not to --task unshuffle')

    def training_step(self, net, config, data_config, num_classes, device):
        self.permutation = PixelPermutation(*data_config['input_size'][1:], seed=config.perm_seed).to(device)
        return UnshuffleTask(net, self.permutation, device=device)

    def evaluate(self, net, input, target):
        output = net(self.permutation(input)).float()
        return OrderedDict(loss=nn.functional.mse_loss(output, input), psnr=psnr(output, input).mean())

    def finish(self, net, loader_eval, output_dir):
        images = next(iter(loader_eval))[0][:8]
        grid = save_unshuffle_grid({'reconstruction': net}, self.permutation, images, output_dir / 'unshuffle.png')
        return f'Reconstructions of test images: {grid}'


def task_for(config) -> Task:
    """The task that `config.task` and `config.adv_train` describe."""
    if config.task == 'unshuffle':
        return Unshuffling()
    if config.adv_train == 'fgsm':
        return FGSMClassification(config.adv_eps, config.adv_val_pgd_steps)
    return Classification()

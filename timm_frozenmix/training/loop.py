""" Training frozen-mixing (or any timm) models, from one CPU to many GPUs, on timm's training parts

The library behind train.py: `setup` checks a `TrainConfig`, builds the model from its `ModelSpec`, the data,
optimizer, schedule, EMA and the run's `Task`, and `train` runs the epochs. Each epoch's files (last, best, its
safetensors weights, summary.csv) are committed as one set by `RunFolder`, so a run killed at any moment resumes
from files that agree.

    run = setup(TrainConfig(model='convmixer_128_4_ks5_p2_chans', epochs=7))
    train(run)   # run.output_dir holds last.pth.tar, model_best.pth.tar, model.safetensors, summary.csv

Models see [0, 1] pixels; normalization is their first layer (`Normalized`), as in the robustness evaluation.
"""
import csv
import logging
import shutil
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn as nn
import yaml
from timm.layers import convert_sync_batchnorm
from timm.data import create_loader, resolve_data_config
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.task import TrainingTask
from timm.utils import (
    AverageMeter, ModelEmaV3, NativeScaler, dispatch_clip_grad, distribute_bn, get_outdir, random_seed, reduce_tensor,
    update_summary,
)
from timm.utils.distributed import init_distributed_device_so

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.data.datasets import Normalized, create_dataset, create_eval_loader, dataset_info
from timm_frozenmix.io.checkpoint import WRITTEN_BY, Checkpoint, save_safetensors
from timm_frozenmix.io.outputs import replace_atomically
from timm_frozenmix.io.run_folder import BEST, LAST, SETTINGS, SUMMARY, WEIGHTS, RunFolder, history_name
from timm_frozenmix.layers.tuning import tune_executions
from timm_frozenmix.models.convert import format_summary, summarize
from timm_frozenmix.models.spec import ModelSpec, build_model
from timm_frozenmix.models.unshuffle_net import UnshuffleNet
from timm_frozenmix.training.config import TrainConfig, check_config, learning_rate
from timm_frozenmix.training.resume import check_resume
from timm_frozenmix.training.tasks import Task, task_for

__all__ = ['TrainingRun', 'setup', 'train', 'load_resume']

_logger = logging.getLogger('train')


@dataclass
class TrainingRun:
    """Everything a training run is made of, built once by `setup`; `train` advances it epoch by epoch."""
    config: TrainConfig
    spec: ModelSpec  # with the dataset's channels and classes filled in
    command: Optional[str]  # the command line that started the run, recorded in its checkpoints
    device: torch.device
    rank: int
    world_size: int
    distributed: bool
    model: nn.Module  # what checkpoints hold: takes normalized input
    net: nn.Module  # model behind `Normalized`: takes [0, 1] pixels
    data_config: Dict[str, Any]
    optimizer: torch.optim.Optimizer
    autocast: Callable
    scaler: Optional[NativeScaler]
    ema: Optional[ModelEmaV3]
    task: Task
    step: TrainingTask  # the task's training step around the (compiled, distributed) net
    loader_train: Any
    loader_eval: Any
    scheduler: Any
    num_epochs: int
    output_dir: Optional[Path]  # None on every rank but the first
    start_epoch: int = 0
    best_metric: Optional[float] = None
    best_epoch: Optional[int] = None

    @property
    def primary(self) -> bool:
        return self.rank == 0


def load_resume(path, into_its_folder: bool = True) -> Checkpoint:
    """The checkpoint to resume from. A run that continues in the checkpoint's folder first finishes (or drops)
    an epoch it was killed writing; one that goes to another folder (--experiment) leaves that folder alone, as
    its run may still be going. Recovery touches only a set of files this package was writing: the folder of
    timm's train.py stays as timm left it (a run resumed from it writes to a new folder)."""
    if into_its_folder:
        RunFolder(Path(path).resolve().parent).recover()
    return Checkpoint.load(path)


def setup(config: TrainConfig, command: Optional[str] = None) -> TrainingRun:
    """Check `config`, then build the model, data, optimizer, schedule, EMA and task of the run.

    Raises UsageError (before anything is built or written) on bad settings, or when a `resume` checkpoint was
    trained with settings this config changes (see `training.resume`). The run folder is created here on the
    first rank; `command` is the command line to record in its checkpoints.
    """
    task = task_for(config)
    check_config(config, task)
    resume = load_resume(config.resume, into_its_folder=not config.experiment) if config.resume else None
    if resume is not None:
        check_resume(config, resume)
    dist = init_distributed_device_so(device=config.device)
    device = torch.device(dist['device'])
    # timm's rule when --lr is not given; the rate used is the one recorded, as timm's train.py records it
    config = replace(config, lr=learning_rate(config, dist['world_size']))

    dataset_kwargs = dict(root=config.data_dir, download=config.dataset_download, batch_size=config.batch_size,
                          **timm_dataset_kwargs(config))
    if config.input_img_mode:
        dataset_kwargs['input_img_mode'] = config.input_img_mode
    dataset_train = create_dataset(config.dataset, split=config.train_split, is_training=True,
                                   num_samples=config.train_num_samples, **dataset_kwargs)
    dataset_eval = create_dataset(config.dataset, split=config.val_split, num_samples=config.val_num_samples,
                                  **dataset_kwargs)
    info = dataset_info(config.dataset, dataset_train, config.input_img_mode)
    task.check_data(config, info)
    spec = config.model_spec().with_data(info.in_chans, info.num_classes)
    if resume is not None and spec != resume.spec:
        raise UsageError(f'checkpoint {config.resume} holds another model ({resume.spec}) than these settings build '
                         f'({spec}): resume with the settings it was trained with')

    torch.manual_seed(config.seed)  # frozen random filters must agree across ranks before DDP's broadcast
    # a resumed run takes its weights from the checkpoint: pretrained ones need not be fetched again
    model = build_model(spec, pretrained=config.pretrained and resume is None, drop_rate=config.drop,
                        drop_path_rate=config.drop_path)
    if dist['global_rank'] == 0:
        _logger.info(f'Model {config.model} created, parameters by role:\n'
                     + format_summary(summarize(model, print_table=False)))
    data_config = resolve_data(config, model, info)
    model = sync_batchnorm(model, config, dist['distributed'], device).to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    net = Normalized(model, data_config['mean'], data_config['std']).to(device)

    optimizer = create_optimizer_v2(net, **optimizer_kwargs(cfg=config))
    autocast, scaler = make_amp(config, device)
    if config.tune_executions:  # on every rank, before DDP: one collective, the same choices everywhere
        with autocast():
            tune_executions(net, torch.rand(config.batch_size, *data_config['input_size'], device=device))
    ema = ModelEmaV3(net, decay=config.model_ema_decay, use_warmup=config.model_ema_warmup) \
        if config.model_ema else None
    progress = restore(resume, config, model, optimizer, scaler, ema) if resume is not None else {}

    # the training forward is compiled; evaluation, EMA and checkpoints use the plain modules
    trained = torch.compile(net, backend=config.torchcompile, mode=config.torchcompile_mode) \
        if config.torchcompile else net
    step = task.training_step(trained, config, data_config, spec.num_classes, device)
    if dist['distributed']:
        step.prepare_distributed(device_ids=[device.index] if device.type == 'cuda' else None)

    random_seed(config.seed, dist['global_rank'])  # augmentation differs per rank; the model was built before
    loader_train, loader_eval = make_loaders(config, data_config, device, dist['distributed'], dataset_train,
                                             dataset_eval)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, **scheduler_kwargs(config), updates_per_epoch=updates_per_epoch(len(loader_train), config))
    start_epoch = config.start_epoch if config.start_epoch is not None else progress.get('start_epoch', 0)
    if start_epoch > 0:
        scheduler.step(start_epoch)

    output_dir = make_output_dir(config, resume) if dist['global_rank'] == 0 else None
    return TrainingRun(
        config=config, spec=spec, command=command, device=device, rank=dist['global_rank'],
        world_size=dist['world_size'], distributed=dist['distributed'], model=model, net=net,
        data_config=data_config, optimizer=optimizer, autocast=autocast, scaler=scaler, ema=ema, task=task,
        step=step, loader_train=loader_train, loader_eval=loader_eval, scheduler=scheduler, num_epochs=num_epochs,
        output_dir=output_dir, start_epoch=start_epoch, best_metric=progress.get('best_metric'),
        best_epoch=progress.get('best_epoch'))


def sync_batchnorm(model: nn.Module, config: TrainConfig, distributed: bool, device: torch.device) -> nn.Module:
    """With --sync-bn in a distributed run, the model with its BatchNorm layers turned into torch's SyncBatchNorm
    (timm's convert_sync_batchnorm); UsageError off CUDA, where SyncBatchNorm does not run. Otherwise unchanged."""
    if not config.sync_bn:
        return model
    if not distributed:
        _logger.info('--sync-bn applies to distributed runs: this one runs in one process, so BatchNorm stays as it is')
        return model
    if device.type != 'cuda':
        raise UsageError(f'--sync-bn synchronizes BatchNorm with torch\'s SyncBatchNorm, which runs on CUDA devices, '
                         f'not {device.type}: drop --sync-bn (--dist-bn still shares the statistics after each epoch)')
    return convert_sync_batchnorm(model)


def timm_dataset_kwargs(config: TrainConfig) -> dict:
    """What timm's train.py hands its create_dataset beside the name and split (those left unset stay out)."""
    kwargs = dict(class_map=config.class_map or None, input_key=config.input_key, target_key=config.target_key,
                  seed=config.seed, trust_remote_code=config.dataset_trust_remote_code or None)
    return {k: v for k, v in kwargs.items() if v is not None}


def resolve_data(config: TrainConfig, model: nn.Module, info) -> dict:
    """timm's data config for the model, with size and normalization following the dataset by default."""
    overrides = dict(input_size=config.input_size, img_size=config.img_size, crop_pct=config.crop_pct,
                     interpolation=config.interpolation, mean=config.mean, std=config.std)
    if config.input_size is None and config.img_size is None and info.input_size:
        overrides['input_size'] = info.input_size
    if config.mean is None and info.mean:
        overrides['mean'], overrides['std'] = info.mean, config.std or info.std
    data_config = resolve_data_config(overrides, model=model.backbone if isinstance(model, UnshuffleNet) else model)
    in_chans = config.in_chans or info.in_chans
    data_config['input_size'] = (in_chans,) + tuple(data_config['input_size'][1:])
    if len(data_config['mean']) != in_chans:
        mean, std = data_config['mean'], data_config['std']
        data_config['mean'] = (sum(mean) / len(mean),) * in_chans
        data_config['std'] = (sum(std) / len(std),) * in_chans
    return data_config


def make_amp(config: TrainConfig, device: torch.device):
    """The autocast context and (for float16) the loss scaler that --amp asks for."""
    if not config.amp:
        return nullcontext, None
    dtype = config.amp_dtype or ('float16' if device.type == 'cuda' else 'bfloat16')
    autocast = partial(torch.autocast, device_type=device.type, dtype=getattr(torch, dtype))
    return autocast, NativeScaler(device=device.type) if dtype == 'float16' else None


def make_loaders(config: TrainConfig, data_config: dict, device: torch.device, distributed: bool,
                 dataset_train, dataset_eval):
    chans = data_config['input_size'][0]
    loader_train = create_loader(
        dataset_train, input_size=data_config['input_size'], batch_size=config.batch_size, is_training=True,
        no_aug=config.no_aug, re_prob=config.reprob, re_mode=config.remode, re_count=config.recount,
        scale=config.scale, ratio=config.ratio, hflip=config.hflip, vflip=config.vflip,
        color_jitter=config.color_jitter, auto_augment=config.aa, interpolation=config.train_interpolation,
        mean=(0.,) * chans, std=(1.,) * chans,  # [0, 1] inputs
        num_workers=config.workers, distributed=distributed, pin_memory=config.pin_mem, device=device,
        use_prefetcher=device.type == 'cuda', persistent_workers=config.workers > 0)
    loader_eval = create_eval_loader(
        dataset_eval, data_config, config.validation_batch_size or config.batch_size, config.workers, device,
        distributed=distributed, pin_memory=config.pin_mem, persistent_workers=True)
    return loader_train, loader_eval


def make_output_dir(config: TrainConfig, resume: Optional[Checkpoint]) -> Path:
    """The run folder: a resumed run of ours continues in its checkpoint's folder (unless --experiment names
    another); a new run, or one resumed from timm's train.py, gets a new folder under --output."""
    if resume is not None and resume.written_by == WRITTEN_BY and not config.experiment:
        return Path(config.resume).resolve().parent
    name = config.experiment or '-'.join([
        datetime.now().strftime('%Y%m%d-%H%M%S'), config.model.replace('/', '_'), config.task])
    return Path(get_outdir(config.output, name, inc=not (resume is not None and config.experiment))).resolve()


def restore(checkpoint: Checkpoint, config: TrainConfig, model, optimizer, scaler, ema) -> dict:
    """Model, optimizer, scaler and EMA state from a train.py checkpoint (ours or timm's); the epoch to start at
    and the best. UsageError when the optimizer state does not fit the optimizer these settings build."""
    model.load_state_dict(checkpoint.state_dict)
    if not config.no_resume_opt:
        try:
            optimizer.load_state_dict(checkpoint.optimizer)
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f'the optimizer state in {config.resume} does not fit a {config.opt} optimizer of this '
                             f'model ({e}); resume with --no-resume-opt to start the optimizer afresh') from None
        if scaler is not None and checkpoint.scaler is not None:
            scaler.load_state_dict(checkpoint.scaler)
    if ema is not None and checkpoint.state_dict_ema is not None:
        ema.module.model.load_state_dict(checkpoint.state_dict_ema)
    start_epoch = checkpoint.epoch + 1
    _logger.info(f'Resumed from {config.resume} ({checkpoint.written_by}) at epoch {start_epoch}')
    return dict(start_epoch=start_epoch, best_metric=checkpoint.best_metric, best_epoch=checkpoint.best_epoch)


def updates_per_epoch(num_batches: int, config: TrainConfig) -> int:
    """Optimizer updates in an epoch of `num_batches` batches: one per --grad-accum-steps batches, and a last
    one for the rest."""
    return (num_batches + config.grad_accum_steps - 1) // config.grad_accum_steps


def train_one_epoch(run: TrainingRun, epoch: int) -> OrderedDict:
    """One pass over the training data; with --grad-accum-steps N, the gradients of N batches add up to one
    update (the loss divided by N, the epoch's last update by the batches it has), as in timm's train.py."""
    config = run.config
    run.step.train()
    if run.distributed and hasattr(run.loader_train.sampler, 'set_epoch'):
        run.loader_train.sampler.set_epoch(epoch)
    # the running loss stays on the device: reading it every step would sync a GPU every step
    loss_sum, seen, batch_time = torch.zeros((), device=run.device), 0, AverageMeter()
    accum, num_batches = config.grad_accum_steps, len(run.loader_train)
    num_updates = epoch * updates_per_epoch(num_batches, config)
    last_idx = num_batches - 1
    last_accum = num_batches - (num_batches - 1) // accum * accum  # batches in the epoch's last update
    run.optimizer.zero_grad(set_to_none=True)
    end = time.time()
    for batch_idx, (input, target) in enumerate(run.loader_train):
        update_now = (batch_idx + 1) % accum == 0 or batch_idx == last_idx
        batches_in_update = last_accum if batch_idx >= num_batches - last_accum else accum
        input, target = run.task.prepare_batch(input.to(run.device), target.to(run.device), epoch)
        if config.channels_last:
            input = input.contiguous(memory_format=torch.channels_last)
        with _gradient_sync(run.step, update_now), run.autocast():
            loss = run.step(input, target)['loss']
        scaled = loss / batches_in_update
        if run.scaler is not None:
            run.scaler(scaled, run.optimizer, clip_grad=config.clip_grad, clip_mode=config.clip_mode,
                       parameters=run.net.parameters(), need_update=update_now)
        else:
            scaled.backward()
            if update_now:
                if config.clip_grad is not None:
                    dispatch_clip_grad(run.net.parameters(), value=config.clip_grad, mode=config.clip_mode)
                run.optimizer.step()
        if update_now:
            run.optimizer.zero_grad(set_to_none=True)
            num_updates += 1
            if run.ema is not None:
                run.ema.update(run.net, step=num_updates)
            run.scheduler.step_update(num_updates=num_updates)
        loss_sum += loss.detach().float() * input.size(0)
        seen += input.size(0)
        batch_time.update(time.time() - end)
        end = time.time()
        if batch_idx % config.log_interval == 0 or batch_idx == last_idx:  # on every rank: all stop together
            check_finite(loss_sum, epoch, batch_idx, config)
        if run.primary and (batch_idx % config.log_interval == 0 or batch_idx == last_idx):
            lr = run.optimizer.param_groups[0]['lr']
            rate = input.size(0) * run.world_size / batch_time.avg
            _logger.info(
                f'Train: {epoch} [{batch_idx:>4d}/{last_idx} ({100. * batch_idx / max(last_idx, 1):>3.0f}%)]  '
                f'Loss: {loss.item():#.4g} ({loss_sum.item() / seen:#.4g})  '
                f'Time: {batch_time.val:.3f}s, {rate:>7.1f}/s  LR: {lr:.3e}')
    return OrderedDict(loss=loss_sum.item() / max(seen, 1))


def _gradient_sync(step: TrainingTask, update_now: bool):
    """DDP's no_sync between the batches of one accumulated update: gradients are all-reduced once, at its end."""
    module = getattr(step, 'trainable_module', None)
    is_ddp = isinstance(module, torch.nn.parallel.DistributedDataParallel)
    return module.no_sync() if is_ddp and not update_now else nullcontext()


def check_finite(loss_sum: torch.Tensor, epoch: int, batch_idx: int, config: TrainConfig) -> None:
    """UsageError once the running training loss is NaN or infinite: training diverged, and every later step
    would only train on NaN."""
    if not torch.isfinite(loss_sum):
        raise UsageError(f'the training loss became {loss_sum.item()} in epoch {epoch} by step {batch_idx}: '
                         f'training diverged; lower --lr (now {config.lr:g}) or add --clip-grad')


@torch.no_grad()
def validate(run: TrainingRun, net: nn.Module, log_suffix: str = '') -> OrderedDict:
    """The task's validation metrics, averaged over all ranks."""
    net.eval()
    meters = OrderedDict((k, AverageMeter()) for k in run.task.metrics)
    for input, target in run.loader_eval:
        input, target = input.to(run.device), target.to(run.device)
        if run.config.channels_last:
            input = input.contiguous(memory_format=torch.channels_last)
        with run.autocast():
            values = run.task.evaluate(net, input, target)
        for key, value in values.items():
            if run.distributed:
                value = reduce_tensor(value.detach(), run.world_size)
            meters[key].update(value.item(), input.size(0))
    metrics = OrderedDict((k, m.avg) for k, m in meters.items())
    if run.primary:
        _logger.info(f'Eval{log_suffix}: ' + '  '.join(f'{k}: {v:.4f}' for k, v in metrics.items()))
    return metrics


def epoch_checkpoint(run: TrainingRun, epoch: int) -> Checkpoint:
    """What a checkpoint of this epoch holds: weights and training state, the spec, and how it was trained."""
    return Checkpoint(
        spec=run.spec, state_dict=run.model.state_dict(), data_config=dict(run.data_config),
        settings=asdict(run.config), command=run.command, epoch=epoch, best_metric=run.best_metric,
        best_epoch=run.best_epoch, optimizer=run.optimizer.state_dict(),
        scaler=run.scaler.state_dict() if run.scaler is not None else None,
        state_dict_ema=run.ema.module.model.state_dict() if run.ema is not None else None)


def save_epoch(run: TrainingRun, epoch: int, train_metrics: dict, eval_metrics: dict, lr: float) -> None:
    """Commit this epoch's files as one set: last and a summary row every epoch; best and its safetensors
    weights (EMA weights where kept) when the eval metric improves; with --checkpoint-hist N, this epoch's
    checkpoint while it is among the N best. Then log the row to Weights & Biases with --log-wandb."""
    metric = eval_metrics[run.config.eval_metric]
    improved = run.best_metric is None or metric > run.best_metric
    if improved:
        run.best_metric, run.best_epoch = metric, epoch
    checkpoint = epoch_checkpoint(run, epoch)
    folder = RunFolder(run.output_dir)
    summary = run.output_dir / SUMMARY

    def write_summary(path: Path) -> None:
        if summary.exists():
            shutil.copyfile(summary, path)
        update_summary(epoch, train_metrics, eval_metrics, filename=path, lr=lr, write_header=not summary.exists())

    writers = {LAST: checkpoint.save, SUMMARY: write_summary}
    if improved:
        writers[BEST] = checkpoint.save
        writers[WEIGHTS] = partial(save_safetensors, checkpoint.weights(use_ema=run.ema is not None),
                                   metadata={'arch': run.spec.architecture})
    keep = best_epochs(run, folder, epoch, metric)
    if epoch in keep:
        writers[history_name(epoch)] = checkpoint.save
    folder.commit(writers)
    if run.config.checkpoint_hist:  # without a history to keep, earlier runs' epoch checkpoints are left alone
        folder.prune_history(keep)
    if run.config.log_wandb:
        import wandb
        wandb.log({'epoch': epoch, **{f'train_{k}': v for k, v in train_metrics.items()},
                   **{f'eval_{k}': v for k, v in eval_metrics.items()}, 'lr': lr})


def best_epochs(run: TrainingRun, folder: RunFolder, epoch: int, metric: float) -> set:
    """The --checkpoint-hist epochs to keep: the highest eval metric among the kept ones (read back from the
    summary) and this epoch, the later epoch first on ties."""
    if not run.config.checkpoint_hist:
        return set()
    column = f'eval_{run.config.eval_metric}'
    metrics = {epoch: metric}
    if (run.output_dir / SUMMARY).exists():
        with open(run.output_dir / SUMMARY, newline='') as f:
            rows = {int(row['epoch']): float(row[column]) for row in csv.DictReader(f)}
        metrics.update({e: rows[e] for e in folder.history() if e in rows and e != epoch})
    ranked = sorted(metrics, key=lambda e: (metrics[e], e), reverse=True)
    return set(ranked[:run.config.checkpoint_hist])


def train(run: TrainingRun) -> None:
    """Every epoch from `run.start_epoch`: train, validate (EMA too), step the schedule, checkpoint on rank 0."""
    config = run.config
    if run.primary:
        settings = yaml.safe_dump(asdict(config), sort_keys=False)
        replace_atomically(run.output_dir / SETTINGS, lambda tmp: tmp.write_text(settings))
        if config.log_wandb:
            import wandb
            wandb.init(project=config.experiment or None, name=run.output_dir.name, config=asdict(config),
                       resume='allow' if config.resume else None)
        _logger.info(f'Training {config.model} on {config.dataset} for {run.num_epochs} epochs, '
                     f'writing to {run.output_dir}')
        if run.start_epoch >= run.num_epochs:  # schedules add cooldown epochs to --epochs: count those too
            _logger.info(f'All {run.num_epochs} epochs are finished: nothing is left to train (raise --epochs to '
                         f'train on); the run is completed')
    for epoch in range(run.start_epoch, run.num_epochs):
        lrs = [group['lr'] for group in run.optimizer.param_groups]  # the rate this epoch starts with
        train_metrics = train_one_epoch(run, epoch)
        if run.distributed and config.dist_bn in ('broadcast', 'reduce'):
            distribute_bn(run.net, run.world_size, config.dist_bn == 'reduce')
        eval_metrics = validate(run, run.net)
        if run.ema is not None:
            if run.distributed and config.dist_bn in ('broadcast', 'reduce'):
                distribute_bn(run.ema, run.world_size, config.dist_bn == 'reduce')
            eval_metrics = validate(run, run.ema.module, log_suffix=' (EMA)')
        run.scheduler.step(epoch + 1, eval_metrics[config.eval_metric])
        if run.primary:
            save_epoch(run, epoch, train_metrics, eval_metrics, sum(lrs) / len(lrs))
    if run.primary:
        if run.best_epoch is not None:
            _logger.info(f'*** Best {config.eval_metric}: {run.best_metric:.4f} (epoch {run.best_epoch})')
        written = run.task.finish(run.net, run.loader_eval, run.output_dir)
        if written:
            _logger.info(written)

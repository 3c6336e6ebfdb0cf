""" The study's training runs, trained through timm_frozenmix's library and cached by name

Every model is trained by train.py's library (`TrainConfig`, `training.setup` / `training.train`) on a slice of
the training images, with its best epoch chosen on a validation split held out from the training images; the
test set is read once per model, at the end, by the checkpoint that validation chose. Every configuration is
trained with each of the recipe's seeds; one seed fixes the initialization and the data order, so the modes
of one seed are paired.

Parts share training runs by name, and a finished run is reused by any later part or invocation with the same
settings.
"""
import csv
import json
import logging
import os
import platform
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import timm
import torch

from timm_frozenmix.io.checkpoint import Checkpoint
from timm_frozenmix.io.run_folder import BEST
from timm_frozenmix.training import loop as training
from timm_frozenmix.training.config import TrainConfig, check_config
from timm_frozenmix.training.tasks import task_for
from timm_frozenmix.data.datasets import create_dataset, create_eval_loader
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io.reporting import write_json

from .recipe import TRAIN_SETTINGS, Recipe, RecipeReads, as_flags

_logger = logging.getLogger('study')


@dataclass(frozen=True)
class Job:
    """One training run of the study: its name (one per seed) and its TrainConfig fields beyond the shared ones."""
    name: str
    model: str
    model_kwargs: dict
    seed: int
    extra: dict = field(default_factory=dict)


class Study:
    """Trains (or reuses) the runs of one study and collects what each experiment measured."""

    def __init__(self, recipe: Recipe, output: Path, workers: int):
        self.recipe, self.output, self.workers = recipe, output, workers
        self.runs: Dict[str, dict] = {}
        self.reused: List[str] = []
        self.trained: List[str] = []

    def settings(self, job: Job) -> dict:
        """The TrainConfig fields of one run of this study (JSON, so a finished run can be recognised); the job's
        `extra` fields override the recipe's (a convergence run's training split and length)."""
        r = self.recipe
        return {**dict(model=job.model, model_kwargs=job.model_kwargs, dataset=r.dataset, train_split=r.train_split,
                       val_split=r.val_split, epochs=r.epochs, seed=job.seed, workers=self.workers, **TRAIN_SETTINGS),
                **job.extra}

    def train_all(self, part: str, jobs: List[Job]) -> Dict[str, dict]:
        """Every job of a part, finished runs reused; logs progress with the expected time left."""
        jobs = list({job.name: job for job in jobs}.values())
        todo = [job for job in jobs if self.finished(job) is None]
        _logger.info(f'Part {part}: {len(jobs)} runs, {len(jobs) - len(todo)} already trained')
        start = time.perf_counter()
        for i, job in enumerate(todo):
            self.train(job)
            elapsed = time.perf_counter() - start
            left = elapsed / (i + 1) * (len(todo) - i - 1)
            _logger.info(f'Part {part}: {i + 1}/{len(todo)} runs trained in {elapsed / 60:.1f} min, '
                         f'about {left / 60:.0f} min of training left')
        return {job.name: self.train(job) for job in jobs}

    def finished(self, job: Job) -> Optional[dict]:
        """The record of a finished run with these settings (loader workers aside: they change no number)."""
        record = self.output / 'runs' / job.name / 'study_run.json'
        if record.exists():
            cached = json.loads(record.read_text())
            if same_settings(cached.get('settings', {}), self.settings(job)):
                return cached
        return None

    def train(self, job: Job) -> dict:
        """One training run, then its test metric from the checkpoint validation chose; reused if finished."""
        settings = self.settings(job)
        if job.name in self.runs:  # shared by several experiments of this study
            if not same_settings(self.runs[job.name]['settings'], settings):
                raise UsageError(f'run {job.name} is already part of the study with other arguments: rename one')
            return self.runs[job.name]
        cached = self.finished(job)
        if cached is not None:
            self.runs[job.name] = cached
            self.reused.append(job.name)
            return cached
        folder = self.output / 'runs' / job.name
        config = TrainConfig(**settings, output=str(folder.parent), experiment=job.name)
        check_config(config, task_for(config))  # a bad setting must not cost the folder below
        if folder.exists():  # a run of this study that did not finish, or of another recipe
            if not any((folder / name).is_file() for name in ('study_run.json', 'args.yaml')):
                raise UsageError(f'{folder} exists but is no training run of this study: move it out of the way')
            shutil.rmtree(folder)
        _logger.info(f'Run {job.name}: {settings}')
        readings, start = cpu_readings(), time.perf_counter()
        run = training.setup(config)
        training.train(run)
        test = self.test_metric(run)
        result = dict(
            name=job.name, settings=settings, model=job.model, seed=job.seed, eval_metric=config.eval_metric,
            val_metric=run.best_metric, best_epoch=run.best_epoch,
            val_curve=validation_curve(folder, config.eval_metric),
            # FGSM training's catastrophic-overfitting monitor: validation top-1 under PGD, every epoch
            val_pgd_curve=validation_curve(folder, 'pgd_top1'),
            test_metric=test, checkpoint=str(folder / BEST),
            trainable_params=sum(p.numel() for p in run.model.parameters() if p.requires_grad),
            params=sum(p.numel() for p in run.model.parameters()), wall_time_s=time.perf_counter() - start,
            optimizer_steps=config.epochs * training.updates_per_epoch(len(run.loader_train), config))
        result['others_cpu_share'] = others_cpu_share(readings, result['wall_time_s'])
        write_json(folder / 'study_run.json', result)
        self.runs[job.name] = result
        self.trained.append(job.name)
        return result

    def test_metric(self, run: training.TrainingRun) -> float:
        """The test-set metric of the run's best checkpoint (chosen on validation): the test set's one reading."""
        run.model.load_state_dict(Checkpoint.load(run.output_dir / BEST).state_dict)
        loader = create_eval_loader(create_dataset(self.recipe.dataset, split='test'), run.data_config, 500,
                                    self.workers, run.device)
        return training.validate(replace(run, loader_eval=loader), run.net)[run.config.eval_metric]

    def seeds(self, name: str, model: str, kwargs: dict, **extra) -> List[Job]:
        return [Job(f'{name}-s{seed}', model, kwargs, seed, extra) for seed in self.recipe.seeds]

    def row(self, runs: Dict[str, dict], name: str) -> dict:
        """Per seed: validation and test metric, best epoch; one run name for all seeds."""
        by_seed = {seed: runs[f'{name}-s{seed}'] for seed in self.recipe.seeds}
        return dict(run=name, test={str(s): r['test_metric'] for s, r in by_seed.items()},
                    val={str(s): r['val_metric'] for s, r in by_seed.items()},
                    best_epoch={str(s): r['best_epoch'] for s, r in by_seed.items()},
                    trainable_params=by_seed[self.recipe.seeds[0]]['trainable_params'],
                    params=by_seed[self.recipe.seeds[0]]['params'])


def same_settings(a: dict, b: dict) -> bool:
    """Two runs' settings agree on everything but the loader workers (JSON round trip: tuples are lists)."""
    def key(settings):
        return json.loads(json.dumps({k: v for k, v in settings.items() if k != 'workers'}))
    return key(a) == key(b)


def validation_curve(folder: Path, metric: str) -> List[float]:
    """The validation `metric` after every epoch, from the run's summary.csv ([] where it was not measured)."""
    with open(folder / 'summary.csv', newline='') as f:
        return [float(row[f'eval_{metric}']) for row in csv.DictReader(f) if row.get(f'eval_{metric}')]


def machine() -> dict:
    return dict(platform=platform.platform(), processor=platform.machine(), cpus=os.cpu_count(),
                threads=torch.get_num_threads(), python=platform.python_version(), torch=torch.__version__,
                timm=timm.__version__, device=TrainConfig().device,
                gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)


def busy_seconds(stat_line: str, ticks_per_second: int) -> float:
    """The busy CPU seconds of the "cpu" line of Linux's /proc/stat: user, nice, system, irq, softirq and steal
    (time the hypervisor gave to others slows a part as much as a process beside it); not idle, iowait, guest
    (already counted in user)."""
    ticks = [int(v) for v in stat_line.split()[1:]]
    return (sum(ticks[:3]) + sum(ticks[5:8])) / ticks_per_second


def cpu_readings() -> Tuple[Optional[float], float]:
    """(busy CPU seconds of the whole machine since boot, None off Linux; CPU seconds of this process and its
    reaped children, such as joined data loader workers). Containers see the host's CPUs in /proc/stat."""
    try:
        busy = busy_seconds(Path('/proc/stat').read_text().split('\n', 1)[0], os.sysconf('SC_CLK_TCK'))
    except (OSError, ValueError, IndexError):
        busy = None
    own = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))
    return busy, own


def others_cpu_share(before: Tuple[Optional[float], float], seconds: float) -> Optional[float]:
    """The share (0-1) of the machine's CPU time that other processes used over the last `seconds`, from the
    `cpu_readings()` taken at their start: whether a run or part ran alone (None off Linux)."""
    (busy_before, own_before), (busy, own) = before, cpu_readings()
    if busy is None or busy_before is None or seconds <= 0:
        return None
    others = (busy - busy_before) - (own - own_before)
    return min(1.0, max(0.0, others / (seconds * (os.cpu_count() or 1))))


def run_part(measure: Callable[[Study], dict], recipe: Recipe, output: Path, workers: int) -> dict:
    """One part's numbers (what `measure` returns), with its recipe and the fields of it that `measure` read
    (`recipe_read`), machine and times: `wall_time_s` of this invocation, of which `training_s` trained the runs in
    `trained_runs` (every run records its own training time), and `others_cpu_share`, the share of the machine's
    CPU time other processes used meanwhile (every run records its own too)."""
    tracked = RecipeReads(recipe)
    study = Study(tracked, output, workers)
    started = datetime.now(timezone.utc)
    readings = cpu_readings()
    start = time.perf_counter()
    numbers = measure(study)
    elapsed = time.perf_counter() - start
    part = dict(numbers, recipe=asdict(recipe), recipe_read=sorted(tracked.read),
                train_flags=as_flags(TRAIN_SETTINGS), machine=machine(),
                started=started.isoformat(timespec='seconds'), wall_time_s=elapsed,
                others_cpu_share=others_cpu_share(readings, elapsed),
                reused_runs=study.reused, trained_runs=study.trained,
                training_s=sum(study.runs[name]['wall_time_s'] for name in study.trained), runs=study.runs)
    return json.loads(json.dumps(part))  # as JSON holds it (tuples as lists): equal to the part read back from disk

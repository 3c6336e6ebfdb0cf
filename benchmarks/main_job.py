""" 6. Where the main job's time goes: data, forward, backward and optimizer of `python train.py`'s steps

    python -m benchmarks.main_job

The run is set up exactly as train.py sets it up (its default TrainConfig, loader workers included) in a temporary
folder; each step is split into waiting for the next batch, the task's forward (loss included), the backward and
the optimizer step, timed with `StepTimer` on the run's device.
"""
import statistics
import tempfile

from timm_frozenmix.io.reporting import markdown_table
from timm_frozenmix.layers.timing import StepTimer
from timm_frozenmix.training.config import TrainConfig
from timm_frozenmix.training.loop import setup
from benchmarks._harness import machine

STEPS, WARMUP = 40, 5
PARTS = ('data', 'forward', 'backward', 'optimizer')


def run() -> dict:
    """Median milliseconds of each part of a training step, over STEPS steps after WARMUP."""
    with tempfile.TemporaryDirectory() as folder:
        run = setup(TrainConfig(output=folder, experiment='profile'))
        timer, batches = StepTimer(run.device), iter(run.loader_train)
        run.step.train()
        times = {part: [] for part in PARTS}
        for step in range(WARMUP + STEPS):
            batch, loss = {}, {}
            seconds = dict(
                data=timer(lambda: batch.update(zip(('x', 'y'), next(batches)))),
                forward=timer(lambda: loss.update(run.step(batch['x'], batch['y']))),
                backward=timer(lambda: (run.optimizer.zero_grad(set_to_none=True), loss['loss'].backward())),
                optimizer=timer(run.optimizer.step))
            if step >= WARMUP:
                for part in PARTS:
                    times[part].append(seconds[part])
    return {part: 1000 * statistics.median(t) for part, t in times.items()}


if __name__ == '__main__':
    ms = run()
    total = sum(ms.values())
    print(f'train.py defaults ({TrainConfig().model}, batch {TrainConfig().batch_size}, '
          f'{TrainConfig().workers} loader workers), median of {STEPS} steps after {WARMUP}; {machine()}')
    print(markdown_table(['part', 'ms per step', 'share'],
                         [[part, f'{value:.1f}', f'{100 * value / total:.1f}%'] for part, value in ms.items()]))

""" Train the shipped Fashion-MNIST weights, evaluate them, ship them with their model cards, check they reproduce

    python scripts/train_fashion_mnist_weights.py train       # every model; resumes a run cut short
    python scripts/train_fashion_mnist_weights.py evaluate    # test set: clean, FGSM, PGD-10; AutoAttack on a subset
    python scripts/train_fashion_mnist_weights.py ship        # export: weights into the package, cards to model_cards/
    python scripts/train_fashion_mnist_weights.py verify --architecture convmixer_512_7 --mode chans  # bit for bit

Each shipped mode of each architecture (`SHIPPED` in timm_frozenmix/models/pretrained.py) is trained by train.py
with the study's recipe on the official `train[:55000]`, the best epoch chosen on the held-out `train[55000:]`
(training never reads the test set); only the epoch count differs between architectures (`EPOCHS`).
The command, seed and thread count are fixed below, so a rerun on the same torch and CPU computes the same
weights: `verify` retrains one mode into a temporary folder and compares every tensor with the shipped file.
A run resumed from `last.pth.tar` continues the same schedule, but its data order after the cut comes from
a fresh loader, so only uninterrupted runs are bit for bit.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from timm_frozenmix.io.hub import export  # noqa: E402
from timm_frozenmix.models.pretrained import SHIPPED, TAG, weights_path  # noqa: E402

DATA_DIR = '/usr/share/datasets/fashion-mnist'
OUTPUT = REPO / 'output' / 'fashion_mnist_weights'
CARDS = REPO / 'model_cards'
REPO_NAMESPACE = 'timm-frozenmix'  # the Hub namespace the exports name in their cards
EPOCHS = {'convmixer_128_4_ks5_p2': 6, 'convmixer_512_7': 15}
SEED = 0
THREADS = 2  # the thread count is part of what makes CPU training bit for bit
# the study's recipe (study/recipe.py TRAIN_SETTINGS), full training split, no loader workers, and the data config
# the `.fashion_mnist` tags register (28x28 without resizing or cropping)
FLAGS = ['--dataset', 'fashion-mnist', '--data-dir', DATA_DIR, '--train-split', 'train[:55000]',
         '--val-split', 'train[55000:]', '--seed', str(SEED), '--sched', 'cosine',
         '--sched-on-updates', '--opt', 'adamw', '--lr', '3e-3', '--weight-decay', '0.05', '--smoothing', '0.1',
         '--no-aug', '--batch-size', '128', '--channels-last', '--workers', '0', '--log-interval', '100',
         '--crop-pct', '1.0', '--interpolation', 'bilinear']
TIMES = 'train_seconds.json'
EPS = '8/255'
AUTOATTACK_SAMPLES = 500  # a fixed random subset of the test set (seed 0)
ROBUST = {'whole': ['--attacks', 'fgsm,pgd', '--pgd-steps', '10'],  # all 10,000 test images
          'subset': ['--attacks', 'autoattack', '--num-samples', str(AUTOATTACK_SAMPLES)]}


def command(architecture: str, mode: str, output: Path) -> list:
    """The train.py command of one model, writing into output/MODEL. It runs in REPO, and a folder inside REPO is
    named relative to it, so the command a model card quotes holds no path of the machine it was trained on."""
    shown = output.relative_to(REPO) if output.is_relative_to(REPO) else output
    model = f'{architecture}_{mode}'
    return ['python', 'train.py', '--model', model, *FLAGS, '--epochs', str(EPOCHS[architecture]),
            '--output', str(shown), '--experiment', model]


def finished_epochs(run_dir: Path) -> int:
    last = run_dir / 'last.pth.tar'
    return torch.load(last, map_location='cpu', weights_only=False)['epoch'] + 1 if last.exists() else 0


def run_command(argv: list) -> None:
    """Runs train.py or eval_robust.py as `argv` says, with THREADS threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    subprocess.run([sys.executable, *argv[1:]], cwd=REPO, env=env, check=True)


def train(architecture: str, mode: str, output: Path = OUTPUT) -> Path:
    """Trains one model to its EPOCHS, resuming a cut run; the wall time of every invocation, cut or not, lands in
    TIMES. A run cut before its first epoch ended is started again from scratch in the same folder."""
    run_dir, epochs = output / f'{architecture}_{mode}', EPOCHS[architecture]
    done = finished_epochs(run_dir)
    if done >= epochs:
        print(f'{run_dir.name}: all {epochs} epochs already trained in {run_dir}')
        return run_dir
    times = json.loads((run_dir / TIMES).read_text()) if (run_dir / TIMES).exists() else []
    if not done and run_dir.exists():
        shutil.rmtree(run_dir)  # train.py would otherwise start a new folder beside it
    argv = command(architecture, mode, output) + (['--resume', str(run_dir / 'last.pth.tar')] if done else [])
    print(f'{run_dir.name}: training epochs {done + 1}-{epochs}: {" ".join(argv)}', flush=True)
    start = time.perf_counter()
    try:
        run_command(argv)
    finally:
        run_dir.mkdir(parents=True, exist_ok=True)
        times.append(dict(epochs=[done, finished_epochs(run_dir)], seconds=time.perf_counter() - start))
        (run_dir / TIMES).write_text(json.dumps(times, indent=1))
    return run_dir


def check_trained(models, output: Path = OUTPUT) -> None:
    for architecture, mode in models:
        run_dir = output / f'{architecture}_{mode}'
        if finished_epochs(run_dir) < EPOCHS[architecture]:
            sys.exit(f'{run_dir.name}: {run_dir} has not finished its {EPOCHS[architecture]} epochs; run `train` first')


def robust_json(run_dir: Path, part: str) -> Path:
    return run_dir / f'robust_{part}' / 'robust.json'


def evaluate(models, output: Path = OUTPUT) -> None:
    """eval_robust.py on each best checkpoint: FGSM and PGD-10 on the whole test set, AutoAttack on a subset."""
    check_trained(models, output)
    for architecture, mode in models:
        run_dir = output / f'{architecture}_{mode}'
        for part, flags in ROBUST.items():
            argv = ['python', 'eval_robust.py', '--checkpoint', str(run_dir / 'model_best.pth.tar'),
                    '--dataset', 'fashion-mnist', '--data-dir', DATA_DIR, '--split', 'test', '--eps', EPS,
                    '--seed', '0', '--workers', '0', *flags, '--output', str(robust_json(run_dir, part).parent)]
            print(' '.join(argv), flush=True)
            run_command(argv)


def machine() -> str:
    return (f'{os.cpu_count()} CPU cores ({platform.machine()}), {THREADS} threads, torch {torch.__version__}, '
            f'Python {platform.python_version()}')


def ship(architecture: str, mode: str, output: Path = OUTPUT) -> Path:
    """Exports the best checkpoint as `python -m timm_frozenmix.cli.hub` does: weights into the package, card into CARDS."""
    check_trained([(architecture, mode)], output)
    run_dir, name = output / f'{architecture}_{mode}', f'{architecture}_{mode}.{TAG}'
    path = weights_path(architecture, mode)
    robust = [robust_json(run_dir, part) for part in ROBUST]
    best = run_dir / 'model_best.pth.tar'
    if not all(result.exists() and result.stat().st_mtime > best.stat().st_mtime for result in robust):
        sys.exit(f'{run_dir.name}: robustness results missing or older than {best}; run `evaluate` first')
    times = json.loads((run_dir / TIMES).read_text())
    if len(times) > 1:
        print(f'{run_dir.name}: trained in {len(times)} invocations (resumed), so `verify` cannot reproduce it bit for bit')
    provenance = dict(pretrained_name=name, train_time_s=sum(t['seconds'] for t in times), machine=machine())
    with tempfile.TemporaryDirectory() as folder:
        exported = export(best, Path(folder) / name, f'{REPO_NAMESPACE}/{name}', robust, provenance=provenance)
        path.parent.mkdir(exist_ok=True)
        shutil.copyfile(exported / 'model.safetensors', path)
        path.chmod(0o644)
        CARDS.mkdir(exist_ok=True)
        shutil.copyfile(exported / 'README.md', CARDS / f'{name}.md')
    print(f'{run_dir.name}: {path.relative_to(REPO)} ({path.stat().st_size / 1e6:.2f} MB), model_cards/{name}.md')
    return path


def verify(architecture: str, mode: str) -> bool:
    """Retrains one model from scratch and says whether every tensor equals the shipped file bit for bit."""
    shipped = load_file(weights_path(architecture, mode))
    with tempfile.TemporaryDirectory() as folder:
        run_command(command(architecture, mode, Path(folder)))
        rebuilt = load_file(Path(folder) / f'{architecture}_{mode}' / 'model.safetensors')
    differing = [name for name in shipped if name not in rebuilt or not torch.equal(shipped[name], rebuilt[name])]
    extra = sorted(set(rebuilt) - set(shipped))
    label = f'{architecture}_{mode}'
    if differing or extra:
        worst = max((float((shipped[n] - rebuilt[n]).abs().max()) for n in differing if n in rebuilt), default=0.0)
        print(f'{label}: {len(differing)} tensors differ (largest difference {worst:.3g}), {len(extra)} extra')
        return False
    print(f'{label}: all {len(shipped)} tensors equal the shipped weights bit for bit')
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('action', choices=('train', 'evaluate', 'ship', 'verify'))
    parser.add_argument('--architecture', choices=list(SHIPPED), action='append',
                        help='one architecture (repeatable); default: all')
    parser.add_argument('--mode', choices=('full', 'chans', 'space'), action='append',
                        help='one mode (repeatable); default: every mode the architecture ships')
    args = parser.parse_args()
    if not Path(DATA_DIR).is_dir():
        sys.exit(f'{DATA_DIR} not found: apt-get install dataset-fashion-mnist')
    models = [(architecture, mode) for architecture in args.architecture or list(SHIPPED)
              for mode in SHIPPED[architecture] if not args.mode or mode in args.mode]
    if not models:
        sys.exit(f'no shipped model has mode {args.mode} in {args.architecture or list(SHIPPED)}: see SHIPPED')
    if args.action == 'train':
        for architecture, mode in models:
            train(architecture, mode)
    elif args.action == 'evaluate':
        evaluate(models)
    elif args.action == 'ship':
        for architecture, mode in models:
            ship(architecture, mode)
    else:
        sys.exit(0 if all([verify(architecture, mode) for architecture, mode in models]) else 1)


if __name__ == '__main__':
    main()

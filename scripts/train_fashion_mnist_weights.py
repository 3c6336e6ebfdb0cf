""" Train the shipped Fashion-MNIST weights, evaluate them, ship them with their model cards, check they reproduce

    python scripts/train_fashion_mnist_weights.py train       # every mode; resumes a run cut short
    python scripts/train_fashion_mnist_weights.py evaluate    # test set: clean, FGSM, PGD-10; AutoAttack on a subset
    python scripts/train_fashion_mnist_weights.py ship        # export: weights into the package, cards to model_cards/
    python scripts/train_fashion_mnist_weights.py verify --mode chans   # retrain, compare bit for bit

Each mode of `convmixer_128_4_ks5_p2` is trained by train.py with the study's recipe on the official
`train[:55000]`, the best epoch chosen on the held-out `train[55000:]` (training never reads the test set).
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
from timm_frozenmix.models.pretrained import ARCHITECTURE, MODES, TAG, weights_path  # noqa: E402

DATA_DIR = '/usr/share/datasets/fashion-mnist'
OUTPUT = REPO / 'output' / 'fashion_mnist_weights'
CARDS = REPO / 'model_cards'
REPO_NAMESPACE = 'timm-frozenmix'  # the Hub namespace the exports name in their cards
EPOCHS = 6
SEED = 0
THREADS = 2  # the thread count is part of what makes CPU training bit for bit
# the study's recipe (study/recipe.py TRAIN_SETTINGS), full training split, no loader workers
FLAGS = ['--dataset', 'fashion-mnist', '--data-dir', DATA_DIR, '--train-split', 'train[:55000]',
         '--val-split', 'train[55000:]', '--epochs', str(EPOCHS), '--seed', str(SEED), '--sched', 'cosine',
         '--sched-on-updates', '--opt', 'adamw', '--lr', '3e-3', '--weight-decay', '0.05', '--smoothing', '0.1',
         '--no-aug', '--batch-size', '128', '--channels-last', '--workers', '0', '--log-interval', '100']
TIMES = 'train_seconds.json'
EPS = '8/255'
AUTOATTACK_SAMPLES = 500  # a fixed random subset of the test set (seed 0)
ROBUST = {'whole': ['--attacks', 'fgsm,pgd', '--pgd-steps', '10'],  # all 10,000 test images
          'subset': ['--attacks', 'autoattack', '--num-samples', str(AUTOATTACK_SAMPLES)]}


def command(mode: str, output: Path) -> list:
    """The train.py command of one mode, writing into output/mode. It runs in REPO, and a folder inside REPO is
    named relative to it, so the command a model card quotes holds no path of the machine it was trained on."""
    shown = output.relative_to(REPO) if output.is_relative_to(REPO) else output
    return ['python', 'train.py', '--model', f'{ARCHITECTURE}_{mode}', *FLAGS, '--output', str(shown),
            '--experiment', mode]


def finished_epochs(run_dir: Path) -> int:
    last = run_dir / 'last.pth.tar'
    return torch.load(last, map_location='cpu', weights_only=False)['epoch'] + 1 if last.exists() else 0


def run_command(argv: list) -> None:
    """Runs train.py or eval_robust.py as `argv` says, with THREADS threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    subprocess.run([sys.executable, *argv[1:]], cwd=REPO, env=env, check=True)


def train(mode: str, output: Path = OUTPUT) -> Path:
    """Trains one mode to EPOCHS, resuming a cut run; the wall time of every invocation, cut or not, lands in
    TIMES. A run cut before its first epoch ended is started again from scratch in the same folder."""
    run_dir = output / mode
    done = finished_epochs(run_dir)
    if done >= EPOCHS:
        print(f'{mode}: all {EPOCHS} epochs already trained in {run_dir}')
        return run_dir
    times = json.loads((run_dir / TIMES).read_text()) if (run_dir / TIMES).exists() else []
    if not done and run_dir.exists():
        shutil.rmtree(run_dir)  # train.py would otherwise start a new folder beside it
    argv = command(mode, output) + (['--resume', str(run_dir / 'last.pth.tar')] if done else [])
    print(f'{mode}: training epochs {done + 1}-{EPOCHS}: {" ".join(argv)}', flush=True)
    start = time.perf_counter()
    try:
        run_command(argv)
    finally:
        run_dir.mkdir(parents=True, exist_ok=True)
        times.append(dict(epochs=[done, finished_epochs(run_dir)], seconds=time.perf_counter() - start))
        (run_dir / TIMES).write_text(json.dumps(times, indent=1))
    return run_dir


def check_trained(modes, output: Path = OUTPUT) -> None:
    for mode in modes:
        if finished_epochs(output / mode) < EPOCHS:
            sys.exit(f'{mode}: {output / mode} has not finished its {EPOCHS} epochs; run `train` first')


def robust_json(mode: str, part: str, output: Path = OUTPUT) -> Path:
    return output / mode / f'robust_{part}' / 'robust.json'


def evaluate(modes, output: Path = OUTPUT) -> None:
    """eval_robust.py on each best checkpoint: FGSM and PGD-10 on the whole test set, AutoAttack on a subset."""
    check_trained(modes, output)
    for mode in modes:
        for part, flags in ROBUST.items():
            argv = ['python', 'eval_robust.py', '--checkpoint', str(output / mode / 'model_best.pth.tar'),
                    '--dataset', 'fashion-mnist', '--data-dir', DATA_DIR, '--split', 'test', '--eps', EPS,
                    '--seed', '0', '--workers', '0', *flags, '--output', str(robust_json(mode, part, output).parent)]
            print(' '.join(argv), flush=True)
            run_command(argv)


def machine() -> str:
    return (f'{os.cpu_count()} CPU cores ({platform.machine()}), {THREADS} threads, torch {torch.__version__}, '
            f'Python {platform.python_version()}')


def ship(mode: str, output: Path = OUTPUT) -> Path:
    """Exports the best checkpoint as `python -m timm_frozenmix.cli.hub` does: weights into the package, card into CARDS."""
    check_trained([mode], output)
    run_dir, name = output / mode, f'{ARCHITECTURE}_{mode}.{TAG}'
    robust = [robust_json(mode, part, output) for part in ROBUST]
    best = run_dir / 'model_best.pth.tar'
    if not all(path.exists() and path.stat().st_mtime > best.stat().st_mtime for path in robust):
        sys.exit(f'{mode}: robustness results missing or older than {best}; run `evaluate --mode {mode}` first')
    times = json.loads((run_dir / TIMES).read_text())
    if len(times) > 1:
        print(f'{mode}: trained in {len(times)} invocations (resumed), so `verify` cannot reproduce it bit for bit')
    provenance = dict(pretrained_name=name, train_time_s=sum(t['seconds'] for t in times), machine=machine())
    with tempfile.TemporaryDirectory() as folder:
        exported = export(best, Path(folder) / name, f'{REPO_NAMESPACE}/{name}', robust, provenance=provenance)
        weights_path(mode).parent.mkdir(exist_ok=True)
        shutil.copyfile(exported / 'model.safetensors', weights_path(mode))
        weights_path(mode).chmod(0o644)
        CARDS.mkdir(exist_ok=True)
        shutil.copyfile(exported / 'README.md', CARDS / f'{name}.md')
    size = weights_path(mode).stat().st_size / 1e6
    print(f'{mode}: {weights_path(mode).relative_to(REPO)} ({size:.2f} MB), model_cards/{name}.md')
    return weights_path(mode)


def verify(mode: str) -> bool:
    """Retrains one mode from scratch and says whether every tensor equals the shipped one bit for bit."""
    shipped = load_file(weights_path(mode))
    with tempfile.TemporaryDirectory() as folder:
        run_command(command(mode, Path(folder)))
        rebuilt = load_file(Path(folder) / mode / 'model.safetensors')
    differing = [name for name in shipped if name not in rebuilt or not torch.equal(shipped[name], rebuilt[name])]
    extra = sorted(set(rebuilt) - set(shipped))
    if differing or extra:
        worst = max((float((shipped[n] - rebuilt[n]).abs().max()) for n in differing if n in rebuilt), default=0.0)
        print(f'{mode}: {len(differing)} tensors differ (largest difference {worst:.3g}), {len(extra)} extra')
        return False
    print(f'{mode}: all {len(shipped)} tensors equal the shipped weights bit for bit')
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('action', choices=('train', 'evaluate', 'ship', 'verify'))
    parser.add_argument('--mode', choices=MODES, action='append', help='one mode (repeatable); default: all')
    args = parser.parse_args()
    if not Path(DATA_DIR).is_dir():
        sys.exit(f'{DATA_DIR} not found: apt-get install dataset-fashion-mnist')
    modes = args.mode or list(MODES)
    if args.action == 'train':
        for mode in modes:
            train(mode)
    elif args.action == 'evaluate':
        evaluate(modes)
    elif args.action == 'ship':
        for mode in modes:
            ship(mode)
    else:
        sys.exit(0 if all([verify(mode) for mode in modes]) else 1)


if __name__ == '__main__':
    main()

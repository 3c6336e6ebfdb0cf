""" Run any of timm's scripts with this plugin's models registered

timm's `train.py` imports plugins itself (`--device-modules timm_frozenmix`); its `validate.py`,
`inference.py` and `benchmark.py` do not, so they cannot find a name like `sep_resnet20_cifar_chans`. This
launcher imports the plugin, then runs the script as `python SCRIPT ARGS...` would:

    python -m timm_frozenmix.cli.launch pytorch-image-models/validate.py --model convmixer_512_7_chans ...
    torchrun --nproc_per_node=8 -m timm_frozenmix.cli.launch pytorch-image-models/validate.py ...
"""
import runpy
import sys
from pathlib import Path

import timm_frozenmix  # noqa: F401  registers the models with timm

from timm_frozenmix.core.errors import UsageError, exit_on_usage_error

USAGE = 'usage: python -m timm_frozenmix.cli.launch SCRIPT.py [ARGS ...]  (e.g. timm\'s validate.py)'


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ('-h', '--help'):
        print(f'{USAGE}\n\n{__doc__.strip()}')
        return
    with exit_on_usage_error('timm_frozenmix.cli.launch'):
        if not argv:
            raise UsageError(f'name the script to run: {USAGE}')
        script = Path(argv[0])
        if not script.is_file():
            raise UsageError(f'script {script} not found: pass the path of a timm script such as validate.py')
    sys.argv = [str(script), *argv[1:]]
    sys.path.insert(0, str(script.resolve().parent))  # the script's own folder, as `python script.py` sets it
    runpy.run_path(str(script), run_name='__main__')


if __name__ == '__main__':
    main()

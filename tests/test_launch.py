"""timm's scripts that have no --device-modules flag see the plugin's models through the launcher."""
import subprocess
import sys

# stands in for timm's validate.py: parses its flags, builds a registered model by name, runs it
SCRIPT = '''
import argparse, sys, timm, torch
parser = argparse.ArgumentParser()
parser.add_argument('--model', required=True)
parser.add_argument('--num-classes', type=int, default=None)
args = parser.parse_args()
model = timm.create_model(args.model, num_classes=args.num_classes).eval()
with torch.no_grad():
    out = model(torch.rand(2, *model.pretrained_cfg['input_size']))
print(f'{type(model).__name__} {tuple(out.shape)} run as {sys.argv[0]} from {__name__}')
'''


def run(*argv, cwd):
    return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True)


def test_a_timm_script_builds_a_registered_model_through_the_launcher(tmp_path):
    script = tmp_path / 'validate.py'
    script.write_text(SCRIPT)
    plain = run(str(script), '--model', 'sep_resnet20_cifar_chans', cwd=tmp_path)
    assert plain.returncode != 0 and 'Unknown model' in plain.stderr  # why the launcher exists
    launched = run('-m', 'timm_frozenmix.cli.launch', str(script), '--model', 'sep_resnet20_cifar_chans',
                   '--num-classes', '7', cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr[-2000:]
    assert launched.stdout.strip() == f'SeparableResNetV2 (2, 7) run as {script} from __main__'


def test_the_launcher_explains_a_missing_script(tmp_path):
    result = run('-m', 'timm_frozenmix.cli.launch', str(tmp_path / 'validate.py'), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith('timm_frozenmix.cli.launch: error: script ')
    result = run('-m', 'timm_frozenmix.cli.launch', cwd=tmp_path)
    assert result.returncode == 2 and 'name the script to run' in result.stderr

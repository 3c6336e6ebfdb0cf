"""What a fresh install needs: every module imports, every command starts, every import is a declared dependency."""
import ast
import importlib
import importlib.metadata as metadata
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import timm_frozenmix

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(timm_frozenmix.__file__).parent
MODULES = sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix='timm_frozenmix.'))


def declared_distributions(extra: str = '') -> set:
    """The distributions timm-frozenmix requires, by normalized name: the required ones, and those of `extra`."""
    names = set()
    for text in metadata.requires('timm-frozenmix') or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({'extra': extra}):
            names.add(requirement.name.lower().replace('_', '-'))
    return names


# optional features: imported only when asked for, a one-line error without them (train.py --log-wandb)
OPTIONAL_IMPORTS = {'wandb': 'wandb'}


def imported_top_level_modules(folder: Path) -> set:
    modules = set()
    for path in folder.rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split('.')[0])
    return modules


@pytest.mark.parametrize('module', MODULES)
def test_every_module_imports(module):
    importlib.import_module(module)


def test_every_console_script_loads():
    scripts = [ep for ep in metadata.entry_points(group='console_scripts') if ep.value.startswith('timm_frozenmix.')]
    assert {ep.name for ep in scripts} >= {
        'timm-frozenmix-train', 'timm-frozenmix-eval-robust', 'timm-frozenmix-spectral', 'timm-frozenmix-hub',
        'timm-frozenmix-launch'}
    for ep in scripts:
        assert callable(ep.load()), ep.name


@pytest.mark.parametrize('command', [
    ['train.py'], ['eval_robust.py'], ['-m', 'timm_frozenmix.cli.spectral'], ['-m', 'timm_frozenmix.cli.hub'],
    ['-m', 'timm_frozenmix.cli.launch'], ['-m', 'study']])
def test_every_command_starts(command, tmp_path):
    argv = [str(REPO / command[0])] if command[0].endswith('.py') else command
    cwd = REPO if command == ['-m', 'study'] else tmp_path  # the study runs from the repository
    result = subprocess.run([sys.executable, *argv, '--help'], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'usage' in result.stdout.lower()


@pytest.mark.parametrize('source', ['timm_frozenmix', 'torchattacks'])
def test_every_third_party_import_is_a_declared_dependency(source):
    """Ours, and torchattacks' (installed with --no-deps, so we declare what it imports)."""
    folder = PACKAGE_DIR if source == 'timm_frozenmix' else Path(importlib.import_module(source).__file__).parent
    providers = metadata.packages_distributions()
    declared = declared_distributions()
    missing = {}
    ignored = {source, 'torchattacks', '__future__'}  # torchattacks is installed by README's command, --no-deps
    for module in imported_top_level_modules(folder) - set(sys.stdlib_module_names) - ignored:
        if module in OPTIONAL_IMPORTS and source == 'timm_frozenmix':
            assert module in declared_distributions(extra=OPTIONAL_IMPORTS[module]), f'extra {module} undeclared'
            continue
        distributions = {d.lower().replace('_', '-') for d in providers.get(module, [])}
        if not distributions & declared:
            missing[module] = sorted(distributions) or 'not installed'
    assert not missing, f'imported by {source} but not declared in pyproject.toml: {missing}'


def test_ci_runs_readmes_test_command_in_a_fresh_virtual_environment():
    readme = (REPO / 'README.md').read_text()
    command = next(line for line in readme.splitlines() if line.endswith('python -m pytest'))
    ci = (REPO / '.ci' / 'run').read_text().splitlines()
    assert command in ci
    assert any(line.startswith('python3 -m venv') for line in ci[:ci.index(command)])
    assert any(line.startswith('source ') and 'activate' in line for line in ci[:ci.index(command)])

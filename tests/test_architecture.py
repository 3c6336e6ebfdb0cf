"""The package's shape: layers whose imports point down, commands on top, and a wheel without the study."""
import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import timm_frozenmix

PACKAGE_DIR = Path(timm_frozenmix.__file__).parent
REPO = PACKAGE_DIR.parent
# the layers, bottom first: a module imports only from its own layer or the layers below it
LAYERS = ('core', 'layers', 'models', 'data', 'io', 'evaluation', 'training', 'cli')


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def is_main_guard(node) -> bool:
    return isinstance(node, ast.If) and 'if __name__ ==' in ast.unparse(node)[:30]


def package_imports(path: Path, name: str = '') -> set:
    """Modules of the package that `path` (the module `name`, by default as its place says) imports."""
    name, tree = name or module_name(path), ast.parse(path.read_text())
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()

    def visit(node):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.rsplit('.', node.level - 1)[0] if node.level > 1 else package
                base = f'{anchor}.{base}' if base else anchor
            if base.startswith('timm_frozenmix'):
                found.add(base)
                found.update(f'{base}.{a.name}' for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith('timm_frozenmix'))
        for child in ast.iter_child_nodes(node):
            visit(child)
    visit(tree)
    modules = {module_name(p) for p in PACKAGE_DIR.rglob('*.py')}
    return {m for m in found if m in modules and m != name}


GRAPH = {module_name(p): package_imports(p) for p in PACKAGE_DIR.rglob('*.py')}


def test_the_import_graph_has_no_cycle():
    done, active = set(), []

    def walk(module):
        if module in active:
            pytest.fail('import cycle: ' + ' -> '.join(active[active.index(module):] + [module]))
        if module in done:
            return
        active.append(module)
        for target in GRAPH.get(module, ()):
            if target != 'timm_frozenmix':  # the package __init__ only re-exports
                walk(target)
        active.pop()
        done.add(module)
    for module in GRAPH:
        walk(module)


def layer_of(module: str) -> int:
    """The index in LAYERS of a package module's folder; the package __init__ sits on top (it re-exports)."""
    parts = module.split('.')
    if len(parts) == 1:
        return len(LAYERS)
    assert parts[1] in LAYERS, f'{module} lies outside the layer folders {LAYERS}'
    return LAYERS.index(parts[1])


def test_every_module_lives_in_a_layer_folder():
    for module in GRAPH:
        layer_of(module)


def test_imports_point_down_the_layers():
    """No module imports from a layer above its own, lazy (function-level) imports included."""
    upward = [f'{module} -> {target}' for module, targets in GRAPH.items() for target in targets
              if target != 'timm_frozenmix' and layer_of(target) > layer_of(module)]
    assert not upward, 'imports that point up the layers:\n' + '\n'.join(upward)


def test_nothing_outside_the_commands_imports_them_and_no_library_module_runs_one():
    for module, targets in GRAPH.items():
        if not module.startswith('timm_frozenmix.cli'):
            assert not any(t.startswith('timm_frozenmix.cli') for t in targets), f'{module} imports a command'
    for path in PACKAGE_DIR.rglob('*.py'):
        if 'cli' not in path.relative_to(PACKAGE_DIR).parts:
            assert "__name__ == '__main__'" not in path.read_text(), f'{path} runs as a command outside cli/'


def test_the_layer_test_sees_a_lazy_upward_import(tmp_path):
    """A relative import inside a function of a bottom-layer module is read as the upward import it is."""
    probe = tmp_path / 'errors.py'
    probe.write_text((PACKAGE_DIR / 'core' / 'errors.py').read_text()
                     + '\n\ndef late():\n    from ..training.loop import train\n')
    targets = package_imports(probe, name='timm_frozenmix.core.errors')
    assert 'timm_frozenmix.training.loop' in targets
    assert layer_of('timm_frozenmix.training.loop') > layer_of('timm_frozenmix.core.errors')


# library modules that may name argparse: only to read what timm's train.py pickles (its flags, a Namespace)
READS_TIMM_NAMESPACES = {'io/checkpoint.py'}


def test_no_library_function_takes_an_argparse_namespace():
    for path in PACKAGE_DIR.rglob('*.py'):
        if 'cli' in path.relative_to(PACKAGE_DIR).parts:
            continue
        source = path.read_text()
        if path.relative_to(PACKAGE_DIR).as_posix() in READS_TIMM_NAMESPACES:
            functions = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)]
            annotations = [ast.unparse(a.annotation) for f in functions for a in f.args.args if a.annotation]
            assert not any('Namespace' in a for a in annotations), path.name
        else:
            assert 'argparse' not in source and 'Namespace' not in source, path.name
        assert '._actions' not in source and 'timm.models._' not in source, path.name


@pytest.mark.slow
def test_the_wheel_ships_the_plugin_and_not_the_study(tmp_path):
    source = tmp_path / 'source'  # setuptools builds in the source tree: a copy keeps the checkout clean
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns('.git', 'build', '*.egg-info', 'output'))
    result = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-w',
                             str(tmp_path), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob('timm_frozenmix-*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith(('study/', 'benchmarks/', 'tests/'))]
    for expected in ('timm_frozenmix/cli/train.py', 'timm_frozenmix/models/spec.py',
                     'timm_frozenmix/io/model_card_template.md', 'timm_frozenmix/data/sample/train-images-idx3-ubyte.gz',
                     *(f'timm_frozenmix/models/weights/convmixer_128_4_ks5_p2_{mode}.fashion_mnist.safetensors'
                       for mode in ('full', 'chans', 'space'))):
        assert expected in names, expected

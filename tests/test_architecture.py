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
LIBRARY_TOOLS = ('training', 'robust', 'spectral', 'hub')  # one layer: none of them builds on another


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def is_main_guard(node) -> bool:
    return isinstance(node, ast.If) and 'if __name__ ==' in ast.unparse(node)[:30]


def package_imports(path: Path) -> set:
    """Modules of the package that `path` imports, leaving out a `__main__` guard handing over to its command."""
    name, tree = module_name(path), ast.parse(path.read_text())
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()

    def visit(node):
        if is_main_guard(node):
            return
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


def test_commands_sit_on_top_and_library_tools_do_not_build_on_each_other():
    for module, targets in GRAPH.items():
        if not module.startswith('timm_frozenmix.cli'):
            assert not any(t.startswith('timm_frozenmix.cli') for t in targets), f'{module} imports a command'
    for tool in LIBRARY_TOOLS:
        others = {f'timm_frozenmix.{t}' for t in LIBRARY_TOOLS} - {f'timm_frozenmix.{tool}'}
        assert not GRAPH[f'timm_frozenmix.{tool}'] & others, tool


def test_no_library_function_takes_an_argparse_namespace():
    for path in PACKAGE_DIR.rglob('*.py'):
        if 'cli' in path.relative_to(PACKAGE_DIR).parts:
            continue
        source = path.read_text()
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
    for expected in ('timm_frozenmix/cli/train.py', 'timm_frozenmix/spec.py', 'timm_frozenmix/model_card_template.md',
                     'timm_frozenmix/sample/train-images-idx3-ubyte.gz',
                     *(f'timm_frozenmix/weights/convmixer_128_4_ks5_p2_{mode}.fashion_mnist.safetensors'
                       for mode in ('full', 'chans', 'space'))):
        assert expected in names, expected

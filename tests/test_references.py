""" local-dir: / hf-hub: exports that timm cannot build or load: one line each, before anything is allocated """
import json
import struct

import pytest
import timm
from safetensors.torch import load_file, save_file
from timm.models import save_for_hf

import timm_frozenmix  # noqa: F401  registers the models
from timm_frozenmix.cli.eval_robust import main as eval_robust_main
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io.loading import load_model
from timm_frozenmix.io.references import check_reference

ARCH, KWARGS = 'convmixer_128_4_ks5_p2_chans', dict(dim=16, depth=1)


@pytest.fixture
def export(tmp_path):
    """A good export of a tiny model, written by timm's save_for_hf (safetensors)."""
    folder = tmp_path / 'export'
    save_for_hf(timm.create_model(ARCH, **KWARGS), str(folder), model_args=KWARGS, safe_serialization=True)
    return folder


def edit_config(folder, change):
    path = folder / 'config.json'
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def test_a_good_export_passes_and_loads(export):
    check_reference(f'local-dir:{export}')
    assert load_model(f'local-dir:{export}').num_classes == 10


def truncated(folder):
    data = (folder / 'model.safetensors').read_bytes()
    (folder / 'model.safetensors').write_bytes(data[:len(data) // 2])


def garbage(folder):
    (folder / 'model.safetensors').write_bytes(b'not a safetensors file at all')


def huge_header(folder):
    (folder / 'model.safetensors').write_bytes(struct.pack('<Q', 2 ** 40) + b'{}')


def missing_key(folder):
    weights = load_file(folder / 'model.safetensors')
    weights.pop('head.bias')
    save_file(weights, folder / 'model.safetensors')


def no_config(folder):
    (folder / 'config.json').unlink()


def config_text(text):
    return lambda folder: (folder / 'config.json').write_text(text)


@pytest.mark.parametrize('break_it, message', [
    (truncated, 'model.safetensors cannot be read as weights'),
    (garbage, 'model.safetensors cannot be read as weights'),
    (huge_header, 'model.safetensors cannot be read as weights'),
    (missing_key, "1 missing (e.g. ['head.bias'])"),
    (no_config, 'has no config.json'),
    (config_text('{"architecture": "convmixer'), 'config.json is not valid JSON'),
    (config_text('[1, 2, 3]'), 'config.json holds a list'),
    (lambda f: edit_config(f, lambda c: c.update(architecture='sep_resnet20_cifar_chans')),
     'do not build sep_resnet20_cifar_chans'),
    (lambda f: edit_config(f, lambda c: c.update(architecture='convmixer_512_7_chans')), 'stem.0.weight has shape'),
    (lambda f: edit_config(f, lambda c: c.update(architecture='no_such_net')), 'does not know'),
    (lambda f: edit_config(f, lambda c: c['model_args'].update(colour='blue')), 'do not build'),
    (lambda f: edit_config(f, lambda c: c['model_args'].update(dim=10 ** 9)), 'asks for dim=1000000000'),
    (lambda f: edit_config(f, lambda c: c['model_args'].update(depth=10 ** 7)), 'asks for depth=10000000'),
    (lambda f: edit_config(f, lambda c: c['model_args'].update(num_classes=5)), 'says num_classes=5 but the weights\' head'),
])
def test_a_broken_export_is_one_line(export, break_it, message):
    break_it(export)
    with pytest.raises(UsageError, match=message.replace('(', r'\(').replace(')', r'\)').replace('[', r'\[')):
        load_model(f'local-dir:{export}')


def test_eval_robust_refuses_a_broken_export_and_writes_nothing(export, tmp_path, capsys):
    huge_header(export)
    with pytest.raises(SystemExit) as exit_info:
        eval_robust_main(['--model', f'local-dir:{export}', '--attacks', 'fgsm', '-j', '0',
                          '--output', str(tmp_path / 'out')])
    assert exit_info.value.code == 2 and not (tmp_path / 'out').exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'cannot be read as weights' in err[0]


def test_hf_hub_references_are_checked_from_the_cache(export, tmp_path, monkeypatch):
    """hf-hub:org/repo offline: the files come from the Hugging Face cache the test fills."""
    import huggingface_hub

    def from_cache(repo_id, filename, revision=None, **kwargs):
        assert repo_id == 'me/tiny'
        path = export / filename
        if not path.exists():
            raise huggingface_hub.errors.EntryNotFoundError(filename)
        return str(path)
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', from_cache)
    check_reference('hf-hub:me/tiny')
    edit_config(export, lambda c: c['model_args'].update(num_classes=3))
    with pytest.raises(UsageError, match='says num_classes=3'):
        check_reference('hf-hub:me/tiny')
    with pytest.raises(UsageError, match="hf-hub:other/x cannot be read"):
        monkeypatch.undo()
        monkeypatch.setenv('HF_HUB_OFFLINE', '1')
        monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
        monkeypatch.setenv('HF_HOME', str(tmp_path / 'empty-hf'))
        check_reference('hf-hub:other/x')

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import timm
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from timm_frozenmix.io import hub
from timm_frozenmix.cli.hub import main as hub_main
from timm_frozenmix.io.checkpoint import Checkpoint
from timm_frozenmix.io.loading import load_model
from timm_frozenmix.evaluation.robust import RobustConfig, evaluate, write_results
from timm_frozenmix.cli.train import main as train_main

ARCH = 'convmixer_128_4_ks5_p2_chans'
REPO_ID = f'me/{ARCH}'  # the repo the model card loads from
FAKE_COMMIT = 'a' * 40


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A registry-sized Chans ConvMixer with smoothed frozen filters, one epoch on the sample, plus its robust.json."""
    root = tmp_path_factory.mktemp('hub')
    train_main(['--output', str(root), '--experiment', 'run', '--model', ARCH, '--smooth-sigma', '0.5',
                '-j', '0', '--epochs', '1', '--log-interval', '1000'])
    checkpoint = root / 'run' / 'model_best.pth.tar'
    config = RobustConfig(checkpoint=[str(checkpoint)], workers=0, num_samples=32, attacks=['fgsm'],
                          eps=[('0', 0.0), ('0.1', 0.1)])
    write_results(evaluate(config), root / 'robust')
    return checkpoint, root / 'robust' / 'robust.json'


@pytest.fixture(scope='module')
def exported(trained, tmp_path_factory):
    checkpoint, robust_json = trained
    return hub.export(checkpoint, tmp_path_factory.mktemp('export') / 'model', REPO_ID, robust_json=robust_json)


def test_export_holds_safetensors_weights_config_and_card(trained, exported):
    checkpoint = Checkpoint.load(trained[0])
    assert sorted(p.name for p in exported.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    weights = load_file(exported / 'model.safetensors')
    assert weights.keys() == checkpoint.state_dict.keys()
    assert all(torch.equal(weights[k], v) for k, v in checkpoint.state_dict.items())
    config = json.loads((exported / 'config.json').read_text())
    assert config['architecture'] == ARCH and config['num_classes'] == 10 and config['num_features'] == 128
    assert config['model_args'] == {'in_chans': 1, 'smooth_sigma': 0.5}
    cfg = config['pretrained_cfg']
    assert cfg['input_size'] == [1, 28, 28] and cfg['mean'] == [0.286] and cfg['std'] == [0.353]
    assert cfg['interpolation'] == 'bilinear' and cfg['crop_pct'] == 1.0
    assert (cfg['first_conv'], cfg['classifier'], cfg['paper_ids']) == ('stem.0', 'head', 'arxiv:2503.16760')
    assert cfg['license'] == 'mit'
    assert config['label_names'][0] == 'T-shirt/top'


def test_model_card_parses_with_metadata_and_robust_model_index(trained, exported):
    robust = json.loads(trained[1].read_text())
    (entry,) = robust['models'].values()
    card = ModelCard.load(exported / 'README.md')
    data = card.data
    assert data.library_name == 'timm' and data.pipeline_tag == 'image-classification' and data.license == 'mit'
    assert {'image-classification', 'timm', 'learn-channels'} <= set(data.tags)
    assert data.datasets == ['zalando-datasets/fashion_mnist']
    results = {r.metric_name: r.metric_value for r in data.eval_results}
    assert results['top-1 accuracy'] == round(Checkpoint.load(trained[0]).best_metric, 2)
    assert results['top-1 accuracy under FGSM, eps 0.1'] == round(entry['accuracy']['FGSM'][1], 2)
    assert len(data.eval_results) == 3
    huggingface_hub.ModelCardData(**data.to_dict())  # the metadata round-trips through the Hub's own schema
    for section in ('## What is frozen, and why', 'import timm_frozenmix', f'hf-hub:{REPO_ID}',
                    f'--model {ARCH}', '--smooth-sigma 0.5', '| spatial |', '| FGSM |', '@article{cazenavette2025'):
        assert section in card.text, section


def test_card_reads_several_robust_runs_and_says_where_it_trained(tmp_path):
    """Epoch chosen on held-out training images; FGSM on the whole test split and PGD on 16 of its images: the
    card reports validation and test accuracy apart, both attacks with their image counts, and the provenance."""
    train_main(['--output', str(tmp_path), '--experiment', 'run', '--model', ARCH, '--model-kwargs', 'dim=16',
                'depth=1', '--train-split', 'train[:1024]', '--val-split', 'train[5900:]', '-j', '0', '--epochs', '1',
                '--log-interval', '1000'])
    checkpoint = tmp_path / 'run' / 'model_best.pth.tar'
    for name, kwargs in (('whole', dict(attacks=['fgsm'])), ('subset', dict(attacks=['pgd'], num_samples=16))):
        config = RobustConfig(checkpoint=[str(checkpoint)], workers=0, pgd_steps=2, eps=[('0.1', 0.1)], **kwargs)
        write_results(evaluate(config), tmp_path / name)
    hub_main(['--checkpoint', str(checkpoint), '--output', str(tmp_path / 'export'), '--repo-id', 'me/tagged',
              '--robust-json', str(tmp_path / 'whole' / 'robust.json'), str(tmp_path / 'subset' / 'robust.json'),
              '--pretrained-name', f'{ARCH}.my_tag', '--train-time-s', '600', '--machine', '2 CPU cores'])
    card = ModelCard.load(tmp_path / 'export' / 'README.md')
    whole = next(iter(json.loads((tmp_path / 'whole' / 'robust.json').read_text())['models'].values()))
    results = {(r.dataset_split, r.metric_name): r for r in card.data.eval_results}
    best = Checkpoint.load(checkpoint).best_metric
    assert results['train[5900:]', 'top-1 accuracy'].metric_value == round(best, 2)
    assert results['test', 'top-1 accuracy'].metric_value == round(whole['clean_accuracy'], 2)
    assert results['test', 'top-1 accuracy'].metric_args['num_samples'] == whole['num_samples'] == 1000
    assert results['test', 'top-1 accuracy under PGD-2, eps 0.1'].metric_args['num_samples'] == 16
    assert results['test', 'top-1 accuracy under FGSM, eps 0.1'].metric_args['num_samples'] == 1000
    assert 'Training took 10.0 minutes on 2 CPU cores.' in card.text
    assert f'timm.create_model("{ARCH}.my_tag", pretrained=True)' in card.text
    assert '| PGD-2 | 0.1 | 16 of test |' in card.text and '| FGSM | 0.1 | 1,000 of test |' in card.text
    assert f'on 1,000 images of the test split, read once with the chosen epoch: **{whole["clean_accuracy"]:.2f}%**' \
        in card.text


def _hf_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """A Hugging Face cache entry for `repo_id` holding the export, as hf_hub_download leaves it."""
    repo = cache / f'models--{repo_id.replace("/", "--")}'
    snapshot = repo / 'snapshots' / FAKE_COMMIT
    shutil.copytree(folder, snapshot)
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(FAKE_COMMIT)  # no trailing newline, as the Hub client writes it


LOAD_ALL_WAYS = '''
import sys, timm, torch, timm_frozenmix
x, expected = torch.load(sys.argv[1])
for name in ("hf-hub:" + sys.argv[2], "local-dir:" + sys.argv[3]):
    model = timm.create_model(name, pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(model(x), expected), name
    assert not model.stem[0].weight.requires_grad, name
    print("loaded", name)
try:  # a registered name without weights: an error, never a random model
    timm.create_model("convmixer_512_7_space", pretrained=True)
except ValueError as e:
    print("refused", e)
'''


def test_offline_loading_by_hub_reference_and_local_dir(trained, exported, tmp_path):
    model = load_model(checkpoint_path=str(trained[0])).model
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.save((x, model(x)), tmp_path / 'expected.pt')
    _hf_cache(tmp_path / 'cache', REPO_ID, exported)
    env = {**__import__('os').environ, 'HF_HUB_OFFLINE': '1', 'HF_HUB_CACHE': str(tmp_path / 'cache')}
    result = subprocess.run(
        [sys.executable, '-c', LOAD_ALL_WAYS, str(tmp_path / 'expected.pt'), REPO_ID, str(exported)],
        env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('loaded') == 2
    assert "refused no pretrained weights exist for 'convmixer_512_7_space'" in result.stdout


class RecordedHub:
    """Stands in for HfApi's network calls and keeps what would have been uploaded."""

    def __init__(self, monkeypatch, tmp_path):
        self.calls, self.uploaded, self.repo_files = [], tmp_path / 'uploaded', set()
        monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', False)
        monkeypatch.setenv('HF_TOKEN', 'hf_test_token')
        monkeypatch.setattr(huggingface_hub.HfApi, 'create_repo', self.create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, 'upload_folder', self.upload_folder)
        monkeypatch.setattr(huggingface_hub.HfApi, 'create_branch', self.create_branch)
        monkeypatch.setattr(huggingface_hub.HfApi, 'file_exists', self.file_exists)

    def create_repo(self, repo_id, private=False, exist_ok=False, **kwargs):
        self.calls.append(('create_repo', repo_id, private, exist_ok))
        return f'https://huggingface.co/{repo_id}'

    def create_branch(self, repo_id, branch, exist_ok=False, **kwargs):
        self.calls.append(('create_branch', repo_id, branch, exist_ok))

    def file_exists(self, repo_id, filename, revision=None, **kwargs):
        return filename in self.repo_files

    def upload_folder(self, repo_id, folder_path, revision=None, create_pr=False, ignore_patterns=None, **kwargs):
        self.calls.append(('upload_folder', repo_id, revision, create_pr, ignore_patterns))
        shutil.copytree(folder_path, self.uploaded, ignore=shutil.ignore_patterns(*(ignore_patterns or [])))
        url = f'https://huggingface.co/{repo_id}'
        return SimpleNamespace(commit_url=f'{url}/commit/0123', pr_url=f'{url}/discussions/1' if create_pr else None)


def test_push_uploads_the_export_folder(trained, tmp_path, monkeypatch, capsys):
    recorded = RecordedHub(monkeypatch, tmp_path)
    hub_main(['--checkpoint', str(trained[0]), '--output', str(tmp_path / 'export'), '--push-to-hub', 'me/my-model',
              '--private'])
    assert recorded.calls == [('create_repo', 'me/my-model', True, True),
                              ('upload_folder', 'me/my-model', None, False, None)]
    assert sorted(p.name for p in recorded.uploaded.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert 'hf-hub:me/my-model' in (recorded.uploaded / 'README.md').read_text()
    assert 'Pushed to https://huggingface.co/me/my-model/commit/0123' in capsys.readouterr().out


def test_push_takes_timms_revision_and_create_pr_and_keeps_a_readme_only_when_told(trained, tmp_path, monkeypatch,
                                                                                   capsys):
    recorded = RecordedHub(monkeypatch, tmp_path)
    recorded.repo_files = {'README.md'}
    hub_main(['--checkpoint', str(trained[0]), '--output', str(tmp_path / 'export'), '--push-to-hub', 'me/m',
              '--revision', 'v2', '--create-pr', '--keep-readme'])
    assert recorded.calls[-1] == ('upload_folder', 'me/m', 'v2', True, ['README.md'])
    assert sorted(p.name for p in recorded.uploaded.iterdir()) == ['config.json', 'model.safetensors']
    assert 'Pushed to https://huggingface.co/me/m/discussions/1' in capsys.readouterr().out
    shutil.rmtree(recorded.uploaded)
    hub_main(['--checkpoint', str(trained[0]), '--output', str(tmp_path / 'export'), '--push-to-hub', 'me/m',
              '--revision', 'v2'])  # a commit to a branch creates it; the repo's README is replaced by default
    assert recorded.calls[-2:] == [('create_branch', 'me/m', 'v2', True), ('upload_folder', 'me/m', 'v2', False, None)]
    assert (recorded.uploaded / 'README.md').is_file()


def test_a_local_export_needs_no_repo_id_and_says_how_it_loads(trained, tmp_path):
    hub_main(['--checkpoint', str(trained[0]), '--output', str(tmp_path / 'mine')])
    card = (tmp_path / 'mine' / 'README.md').read_text()
    assert '# mine (local export)' in card and 'timm.create_model("local-dir:mine", pretrained=True)' in card
    assert 'hf-hub:' not in card
    model = timm.create_model(f'local-dir:{tmp_path / "mine"}', pretrained=True)
    best = Checkpoint.load(trained[0]).state_dict
    assert all(torch.equal(model.state_dict()[k], v) for k, v in best.items())


def test_an_earlier_exports_readme_is_kept_only_when_told(trained, tmp_path):
    folder = tmp_path / 'export'
    hub_main(['--checkpoint', str(trained[0]), '--output', str(folder), '--repo-id', 'me/x'])
    (folder / 'README.md').write_text((folder / 'README.md').read_text() + '\nEdited by hand.\n')
    hub_main(['--checkpoint', str(trained[0]), '--output', str(folder), '--repo-id', 'me/x', '--keep-readme'])
    assert 'Edited by hand.' in (folder / 'README.md').read_text()
    hub_main(['--checkpoint', str(trained[0]), '--output', str(folder), '--repo-id', 'me/x'])
    assert 'Edited by hand.' not in (folder / 'README.md').read_text()


def test_train_push_to_hub_publishes_the_best_checkpoint(tmp_path, monkeypatch):
    recorded = RecordedHub(monkeypatch, tmp_path)
    train_main(['--output', str(tmp_path), '--experiment', 'run', '--model', ARCH, '--model-kwargs', 'dim=16',
                'depth=1', '-j', '0', '--epochs', '1', '--log-interval', '1000', '--push-to-hub', 'me/tiny'])
    assert [c[0] for c in recorded.calls] == ['create_repo', 'upload_folder']
    config = json.loads((recorded.uploaded / 'config.json').read_text())
    assert config['model_args'] == {'dim': 16, 'depth': 1, 'in_chans': 1}
    weights = load_file(recorded.uploaded / 'model.safetensors')
    best = Checkpoint.load(tmp_path / 'run' / 'model_best.pth.tar').state_dict
    assert all(torch.equal(weights[k], v) for k, v in best.items())


def _fails(command, argv, capsys, match):
    with pytest.raises(SystemExit) as exit_info:
        command(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert match in err[-1], err


def test_bad_input_fails_before_any_work(trained, tmp_path, capsys, monkeypatch):
    checkpoint = str(trained[0])
    monkeypatch.delenv('HF_TOKEN', raising=False)
    monkeypatch.setattr(huggingface_hub, 'get_token', lambda: None)
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', False)
    train = ['--output', str(tmp_path / 'runs'), '--model', ARCH, '-j', '0', '--epochs', '1']
    _fails(train_main, [*train, '--push-to-hub', 'me/x'], capsys, 'no Hugging Face token')
    _fails(train_main, [*train, '--push-to-hub', 'no-slash'], capsys, 'user-or-org/name')
    _fails(train_main, [*train, '--model', 'resnet10t', '--separate', '--push-to-hub', 'me/x'], capsys,
           'not --task unshuffle or --separate')
    assert not (tmp_path / 'runs').exists()
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    _fails(hub_main, ['--checkpoint', checkpoint, '--output', str(tmp_path / 'e'), '--push-to-hub', 'me/x'], capsys,
           'HF_HUB_OFFLINE is set')
    occupied = tmp_path / 'occupied'
    occupied.mkdir()
    (occupied / 'notes.txt').write_text('mine')
    _fails(hub_main, ['--checkpoint', checkpoint, '--output', str(occupied), '--repo-id', 'me/x'], capsys,
           'holds something other than an earlier export')
    assert [p.name for p in occupied.iterdir()] == ['notes.txt']
    _fails(hub_main, ['--checkpoint', checkpoint, '--output', str(tmp_path / 'e'), '--repo-id', 'no-slash'], capsys,
           'user-or-org/name')
    _fails(hub_main, ['--checkpoint', checkpoint, '--output', str(tmp_path / 'e'), '--revision', 'v2'], capsys,
           'add --push-to-hub')
    _fails(hub_main, ['--checkpoint', checkpoint, '--output', str(tmp_path / 'e'), '--repo-id', 'me/x', '--robust-json',
                      str(tmp_path / 'missing.json')], capsys, 'cannot read robustness results')
    assert not (tmp_path / 'e').exists()


def test_export_replaces_only_an_earlier_export_and_touches_nothing_else(trained, exported, tmp_path, capsys):
    checkpoint = str(trained[0])
    readme_only = tmp_path / 'readme-only'
    readme_only.mkdir()
    (readme_only / 'README.md').write_text('my notes')
    _fails(hub_main, ['--checkpoint', checkpoint, '--output', str(readme_only), '--repo-id', 'me/x'], capsys,
           'holds something other than an earlier export')
    assert (readme_only / 'README.md').read_text() == 'my notes'
    earlier = tmp_path / 'model'
    shutil.copytree(exported, earlier)
    users_tmp = tmp_path / '.model.tmp'  # a folder of the user's with the name a staging folder might take
    users_tmp.mkdir()
    (users_tmp / 'keep.txt').write_text('mine')
    hub_main(['--checkpoint', checkpoint, '--output', str(earlier), '--repo-id', 'me/again'])
    assert 'hf-hub:me/again' in (earlier / 'README.md').read_text()
    assert (users_tmp / 'keep.txt').read_text() == 'mine'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.model.tmp', 'model', 'readme-only']


def test_a_repo_naming_an_unknown_architecture_says_to_import_or_upgrade(exported, tmp_path):
    future = tmp_path / 'future'
    shutil.copytree(exported, future)
    config = json.loads((future / 'config.json').read_text())
    config['architecture'] = 'convmixer_4096_64_future_chans'
    (future / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ValueError, match='import timm_frozenmix` first, or upgrade'):
        load_model(f'local-dir:{future}')

""" The Fashion-MNIST weights shipped in the package: listed, loaded offline by timm, as accurate as their cards say """
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import timm.data
from PIL import Image
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

import timm_frozenmix  # noqa: F401  registers the models
from timm_frozenmix.cli.eval_robust import main as eval_robust_main
from timm_frozenmix.cli.train import main as train_main
from timm_frozenmix.data.datasets import DEBIAN_FASHION_MNIST, FASHION_MNIST, FASHION_MNIST_FILES, create_dataset
from timm_frozenmix.io.hub import export
from timm_frozenmix.models.pretrained import SHIPPED, TAG, shipped_names, weights_path
from timm_frozenmix.layers.separable import SeparableConv2d
from timm_frozenmix.training.config import TrainConfig
from timm_frozenmix.training.loop import setup

REPO = Path(__file__).resolve().parents[1]
SMALL = 'convmixer_128_4_ks5_p2'
MODELS = [(architecture, mode) for architecture, modes in SHIPPED.items() for mode in modes]
TAGS = [f'{architecture}_{mode}.{TAG}' for architecture, mode in MODELS]
# top-1 (%) on the 10,000 test images; the small model's Space is shipped to compare with and has none
TARGETS = {(SMALL, 'full'): 90.0, (SMALL, 'chans'): 89.0, ('convmixer_512_7', 'full'): 90.0,
           ('convmixer_512_7', 'chans'): 90.0}
needs_debian_files = pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / FASHION_MNIST_FILES['test'][0]).is_file(),
    reason='apt-get install dataset-fashion-mnist')


def test_timm_lists_the_shipped_tags():
    assert sorted(timm.list_pretrained(f'*{TAG}*')) == sorted(TAGS) == sorted(shipped_names())
    total = sum(path.stat().st_size for path in shipped_names().values())
    assert total < 20e6, f'{total / 1e6:.1f} MB shipped'


LOAD_OFFLINE = '''
import sys, timm, torch, timm_frozenmix
from safetensors.torch import load_file
for name, path in zip(sys.argv[1::2], sys.argv[2::2]):
    model = timm.create_model(name, pretrained=True)
    shipped = load_file(path)
    state = model.state_dict()
    assert state.keys() == shipped.keys() and all(torch.equal(state[k], v) for k, v in shipped.items()), name
    frozen = {n.split('.')[0] + ('.dw' if n.startswith('blocks') and '.0.fn.0' in n else '')
              for n, p in model.named_parameters() if not p.requires_grad}
    print(name, model.pretrained_cfg['tag'], sorted(frozen))
'''


def test_each_tag_loads_offline_from_an_empty_cache_with_its_frozen_parameters(tmp_path):
    """The tag and the plain name (which takes its default tag) load the shipped file bit for bit."""
    plain = [(f'{architecture}_{mode}', weights_path(architecture, mode)) for architecture, mode in MODELS]
    names = [(f'{name}.{TAG}', path) for name, path in plain] + plain
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf'), HF_HUB_CACHE=str(tmp_path / 'hf' / 'hub'))
    argv = [str(item) for pair in names for item in pair]
    result = subprocess.run([sys.executable, '-c', LOAD_OFFLINE, *argv], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(' ', 1) for line in result.stdout.splitlines())
    frozen = {'full': '[]', 'chans': "['blocks.dw', 'stem']", 'space': "['blocks']"}  # chans: depthwise and stem
    for architecture, mode in MODELS:
        assert lines[f'{architecture}_{mode}.{TAG}'] == lines[f'{architecture}_{mode}'] == f"{TAG} {frozen[mode]}"


def card(architecture: str, mode: str) -> ModelCard:
    return ModelCard.load(REPO / 'model_cards' / f'{architecture}_{mode}.{TAG}.md')


@pytest.mark.parametrize('architecture, mode', MODELS)
def test_each_model_card_says_how_it_was_trained_and_measured(architecture, mode):
    text, results = card(architecture, mode).text, card(architecture, mode).data.eval_results
    assert f'python train.py --model {architecture}_{mode} ' in text and "--train-split 'train[:55000]'" in text
    assert 'Training took' in text and 'CPU cores' in text and f'"{architecture}_{mode}.{TAG}"' in text
    by_name = {(r.dataset_split, r.metric_name): r for r in results}
    assert by_name['train[55000:]', 'top-1 accuracy'].metric_value > 0
    assert by_name['test', 'top-1 accuracy'].metric_args['num_samples'] == 10000
    for attack in ('FGSM', 'PGD-10'):
        assert by_name['test', f'top-1 accuracy under {attack}, eps 8/255'].metric_args['num_samples'] == 10000
    autoattack = [r for r in results if 'AutoAttack' in r.metric_name]
    assert len(autoattack) == 1 and 0 < autoattack[0].metric_args['num_samples'] < 10000


@needs_debian_files
@pytest.mark.slow
@pytest.mark.parametrize('architecture, mode', MODELS)
def test_shipped_weights_reach_their_test_accuracy(architecture, mode):
    """Measured here on the official test files through timm's own eval transform (`resolve_data_config` +
    `create_transform` on the PIL images); the card's number and the issue's target must both hold."""
    test = create_dataset(FASHION_MNIST, split='test')
    model = timm.create_model(f'{architecture}_{mode}.{TAG}', pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    x = torch.stack([transform(Image.fromarray(image, mode='L')) for image in test.images])
    with torch.inference_mode():
        predicted = torch.cat([model(batch).argmax(1) for batch in x.split(1000)])
    top1 = 100 * (predicted == torch.from_numpy(test.labels).long()).float().mean().item()
    card_top1 = next(r.metric_value for r in card(architecture, mode).data.eval_results
                     if (r.dataset_split, r.metric_name) == ('test', 'top-1 accuracy'))
    assert top1 == pytest.approx(card_top1, abs=0.011)
    if (architecture, mode) in TARGETS:
        assert top1 >= TARGETS[architecture, mode]


def recipe_script():
    """scripts/train_fashion_mnist_weights.py as a module."""
    sys.path.insert(0, str(REPO / 'scripts'))
    try:
        import train_fashion_mnist_weights
    finally:
        sys.path.remove(str(REPO / 'scripts'))
    return train_fashion_mnist_weights


def test_the_weights_recipe_trains_bit_for_bit_from_its_command(tmp_path):
    """The shipped weights' command, shortened to a few steps on the embedded sample, run twice: every tensor
    equal, so the seed and thread count fix the result."""
    recipe = recipe_script()
    short = ['--dataset', 'fashion-mnist-sample', '--train-split', 'train[:384]', '--val-split', 'train[5900:]',
             '--epochs', '1']
    for run in ('a', 'b'):
        recipe.run_command(recipe.command(SMALL, 'chans', tmp_path / run) + short)
    a, b = (load_file(tmp_path / run / f'{SMALL}_chans' / 'model.safetensors') for run in ('a', 'b'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_weights_command_names_the_default_output_relative_to_the_repo():
    recipe = recipe_script()
    argv = recipe.command(SMALL, 'chans', recipe.OUTPUT)
    assert argv[argv.index('--output') + 1] == str(Path('output', 'fashion_mnist_weights'))


def test_a_run_cut_before_its_first_epoch_restarts_in_its_folder_and_keeps_its_time(tmp_path, monkeypatch):
    recipe = recipe_script()
    run_dir = tmp_path / f'{SMALL}_chans'
    run_dir.mkdir()
    (run_dir / 'args.yaml').write_text('written before the cut')
    commands = []

    def cut(argv):
        commands.append(argv)
        assert not run_dir.exists()  # else train.py would open a new folder beside it
        raise subprocess.CalledProcessError(1, argv)
    monkeypatch.setattr(recipe, 'run_command', cut)
    with pytest.raises(subprocess.CalledProcessError):
        recipe.train(SMALL, 'chans', tmp_path)
    assert '--resume' not in commands[0]
    times = json.loads((run_dir / recipe.TIMES).read_text())
    assert len(times) == 1 and times[0]['epochs'] == [0, 0] and times[0]['seconds'] >= 0


@pytest.mark.parametrize('change, expected', [(0.0, True), (1e-4, False)])
def test_verify_says_whether_a_retrained_model_equals_the_shipped_file_bit_for_bit(tmp_path, monkeypatch, change,
                                                                                   expected):
    recipe = recipe_script()
    shipped = load_file(weights_path(SMALL, 'chans'))

    def retrain(argv):  # stands in for train.py: writes where the command says, one tensor moved by `change`
        folder = Path(argv[argv.index('--output') + 1]) / argv[argv.index('--experiment') + 1]
        folder.mkdir(parents=True)
        rebuilt = dict(shipped, **{'head.bias': shipped['head.bias'] + change})
        save_file(rebuilt, folder / 'model.safetensors')
    monkeypatch.setattr(recipe, 'run_command', retrain)
    assert recipe.verify(SMALL, 'chans') is expected


def test_eval_robust_evaluates_a_shipped_tag_by_name(tmp_path, capsys):
    """`eval_robust.py --model NAME.fashion_mnist --pretrained`: its clean accuracy is the model's own."""
    name = f'{SMALL}_chans.{TAG}'
    eval_robust_main(['--model', name, '--pretrained', '--attacks', 'fgsm', '--eps', '0', '-j', '0',
                      '--output', str(tmp_path)])
    entry = json.loads((tmp_path / 'robust.json').read_text())['models'][name]
    test = create_dataset('fashion-mnist-sample', split='test')
    model = timm.create_model(name, pretrained=True).eval()
    x = (torch.tensor(test.images).float().div(255).unsqueeze(1) - model.pretrained_cfg['mean'][0]) \
        / model.pretrained_cfg['std'][0]
    with torch.no_grad():
        top1 = 100 * (model(x).argmax(1) == torch.tensor(test.labels).long()).float().mean().item()
    assert entry['num_samples'] == 1000 and entry['clean_accuracy'] == pytest.approx(top1, abs=1e-3)  # one image is 0.1


def test_train_py_keep_function_starts_from_what_the_pretrained_model_computes(tmp_path):
    """`--pretrained --separate --keep-function` on an exported dense ResNet (`local-dir:`): its 3x3 convs become
    separable, channels-only, and the function stays (Eq. 3 read the other way)."""
    dense = ['--model-kwargs', 'separable=False', 'width=1', 'layers=[1,1,1]']
    train_main(['--output', str(tmp_path), '--experiment', 'dense', '--model', 'sep_resnet20_cifar_full', *dense,
                '--train-split', 'train[:256]', '-j', '0', '--epochs', '1', '--log-interval', '1000'])
    export(tmp_path / 'dense' / 'model_best.pth.tar', tmp_path / 'export', 'me/dense')
    name = f'local-dir:{tmp_path / "export"}'
    run = setup(TrainConfig(model=name, pretrained=True, separate=True, keep_function=True, learn='channels',
                            epochs=1, workers=0, output=str(tmp_path / 'runs')))
    reference = timm.create_model(name, pretrained=True).eval()
    separable = [m for m in run.model.modules() if isinstance(m, SeparableConv2d)]
    # the two 3x3 convs of each of the 3 blocks; the stem sees one input channel, so it mixes space only already
    assert len(separable) == 3 * 2 and not any(m.depthwise.weight.requires_grad for m in separable)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        expected, got = reference(x), run.model.eval()(x)
    assert ((got - expected).norm() / expected.norm()).item() < 1e-4


def test_a_shipped_tag_adapts_its_stem_to_rgb_and_replaces_its_head():
    """timm's own overrides on the 1-channel weights: in_chans=3 adapts the stem (a gray image repeated in three
    channels gives the original features), num_classes=5 gives a new head; everything else is the shipped file."""
    name = f'{SMALL}_chans.{TAG}'
    original = timm.create_model(name, pretrained=True).eval()
    adapted = timm.create_model(name, pretrained=True, in_chans=3, num_classes=5).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        expected = original.forward_head(original.forward_features(x), pre_logits=True)
        got = adapted.forward_head(adapted.forward_features(x.expand(-1, 3, -1, -1)), pre_logits=True)
        assert adapted(x.expand(-1, 3, -1, -1)).shape == (2, 5)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)

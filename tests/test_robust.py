import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from timm_frozenmix.data.datasets import ImageSubset, Normalized, create_dataset
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io.checkpoint import Checkpoint
from timm_frozenmix.io.loading import LoadedModel, load_model
from timm_frozenmix.cli.eval_robust import build_parser, main
from timm_frozenmix.evaluation.robust import (
    RobustConfig, autoattack_components, evaluate, evaluate_model, format_table, import_torchattacks, make_attack,
    masking_warnings,
)
from timm_frozenmix.cli.train import main as train_main

TINY = ['--model-kwargs', 'dim=16', 'depth=1', '-j', '0', '--epochs', '1', '--log-interval', '1000']


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """A tiny Full and a tiny Chans ConvMixer trained for one epoch on the embedded sample."""
    root = tmp_path_factory.mktemp('runs')
    paths = {}
    for mode in ('full', 'chans'):
        train_main(['--output', str(root), '--experiment', mode, '--model', f'convmixer_128_4_ks5_p2_{mode}', *TINY])
        paths[mode] = root / mode / 'model_best.pth.tar'
    return paths


def robust_args(*argv):
    """eval_robust.py's flags as the RobustConfig they describe."""
    return RobustConfig(**vars(build_parser().parse_args(['-j', '0', '--num-samples', '64', '-b', '32', *argv])))


def test_eps_zero_is_clean_accuracy_and_examples_stay_in_the_ball(checkpoints):
    results = evaluate(robust_args('--checkpoint', str(checkpoints['chans']), '--attacks', 'fgsm,pgd',
                                   '--eps', '0,1/255,0.1', '--pgd-steps', '3'))
    (result,) = results['models'].values()
    assert results['num_samples'] == result['num_samples'] == 64
    for attack in ('FGSM', 'PGD-3'):
        assert result['accuracy'][attack][0] == result['clean_accuracy']
        for eps, perturbation in zip(results['eps'], result['max_perturbation'][attack]):
            assert perturbation <= eps + 1e-6
        assert result['max_perturbation'][attack][2] > 0.09  # the attack did move the pixels
    assert result['accuracy']['FGSM'][2] < result['clean_accuracy']


def test_same_seed_gives_identical_numbers(checkpoints):
    argv = ('--checkpoint', str(checkpoints['full']), '--attacks', 'pgd', '--eps', '0.05', '--pgd-steps', '2')
    first, second = evaluate(robust_args(*argv)), evaluate(robust_args(*argv))
    assert first['models'] == {
        label: dict(r, wall_time_s=first['models'][label]['wall_time_s']) for label, r in second['models'].items()}


def test_pgd_restarts_count_an_image_robust_only_if_every_restart_fails(checkpoints):
    """One batch, one seed: the first restart draws the single run's random start, so the restarts can only find
    more adversarial examples, and they do at a radius where PGD does not win everywhere."""
    argv = ('--checkpoint', str(checkpoints['chans']), '--attacks', 'pgd', '--eps', '0,0.03', '--pgd-steps', '2',
            '-b', '64')
    single = evaluate(robust_args(*argv))
    restarted = evaluate(robust_args(*argv, '--pgd-restarts', '4'))
    (one,), (four,) = single['models'].values(), restarted['models'].values()
    assert four['accuracy']['PGD-2'][0] == one['accuracy']['PGD-2'][0] == one['clean_accuracy']
    assert four['accuracy']['PGD-2'][1] <= one['accuracy']['PGD-2'][1]
    assert restarted['attacks']['PGD-2']['restarts'] == 4 and single['attacks']['PGD-2']['restarts'] == 1
    assert '| PGD-2 (4 restarts) |' in format_table(restarted) and '| PGD-2 |' in format_table(single)


class BatchNormNet(nn.Module):
    """Records the mode of its batch norm at every forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 10)
        self.num_classes = 10
        self.modes = []

    def forward(self, x):
        self.modes.append(self.bn.training)
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


def test_attacks_run_in_eval_mode_and_leave_batch_norm_alone():
    model = BatchNormNet().train()
    running_mean = model.bn.running_mean.clone()
    loaded = LoadedModel(model, 'bn-net', dict(input_size=(1, 28, 28), mean=(0.5,), std=(0.5,),
                                               interpolation='bilinear', crop_pct=1.0))
    dataset = create_dataset('fashion-mnist-sample', split='test')
    args = robust_args('--attacks', 'fgsm,pgd', '--eps', '0,0.1', '--pgd-steps', '2')
    result = evaluate_model('bn-net', loaded, ImageSubset.random(dataset, 16, seed=0), args, import_torchattacks())
    assert model.modes and not any(model.modes)
    assert torch.equal(model.bn.running_mean, running_mean)
    assert result['accuracy']['FGSM'][0] == result['clean_accuracy']


def test_normalization_happens_once_inside_the_model():
    torchattacks = import_torchattacks()
    args = robust_args()
    net = Normalized(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), mean=(0.5,), std=(0.25,))
    attack = make_attack(torchattacks, 'fgsm', net, 0.1, args, num_classes=3)
    assert attack.normalization_used is None
    x = torch.rand(2, 1, 2, 2)
    assert torch.equal(attack.get_logits(x), net(x))

    class RobModel(nn.Module):  # torchattacks normalizes with the mean / std of a model of this class name
        mean, std = torch.tensor([0.5]), torch.tensor([0.25])

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(RuntimeError, match='normalized twice'):
        make_attack(torchattacks, 'fgsm', RobModel(), 0.1, args, num_classes=3)


def test_autoattack_runs_and_is_at_least_as_strong_as_fgsm(checkpoints):
    results = evaluate(robust_args('--checkpoint', str(checkpoints['chans']), '--attacks', 'fgsm,autoattack',
                                   '--eps', '0,0.1', '--num-samples', '16'))
    (result,) = results['models'].values()
    assert result['accuracy']['AutoAttack'][0] == result['clean_accuracy']
    assert result['accuracy']['AutoAttack'][1] <= result['accuracy']['FGSM'][1]
    assert result['max_perturbation']['AutoAttack'][1] <= 0.1 + 1e-6
    assert results['attacks']['AutoAttack']['version'] == 'standard'
    assert len(results['indices']) == 16 and results['indices'] == sorted(set(results['indices']))


def test_command_line_writes_json_table_and_plot_with_baseline(checkpoints, tmp_path, capsys):
    main(['-j', '0', '--num-samples', '32', '--checkpoint', str(checkpoints['full']), str(checkpoints['chans']),
          '--attacks', 'fgsm,pgd', '--pgd-steps', '2', '--eps', '0,2/255,0.1', '--baseline', 'convmixer_128_4_ks5_p2_full',
          '--output', str(tmp_path / 'out')])
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / 'out' / 'robust.json').read_text())
    assert (tmp_path / 'out' / 'robust.png').read_bytes()[:4] == b'\x89PNG'
    assert (tmp_path / 'out' / 'robust.md').read_text().strip() in printed
    full, chans = results['models']['convmixer_128_4_ks5_p2_full'], results['models']['convmixer_128_4_ks5_p2_chans']
    assert results['eps_labels'] == ['0', '2/255', '0.1'] and results['eps'][1] == pytest.approx(2 / 255)
    assert chans['learn'] == 'channels' and chans['checkpoint'] == str(checkpoints['chans'].resolve())
    assert chans['num_samples'] == 32 and chans['wall_time_s'] > 0
    expected = 100 * (chans['accuracy']['FGSM'][2] - full['accuracy']['FGSM'][2]) / full['accuracy']['FGSM'][2]
    assert chans['relative_improvement']['FGSM'][2] == pytest.approx(expected)
    assert 'relative_improvement' not in full
    assert '| convmixer_128_4_ks5_p2_chans | PGD-2 |' in printed and 'Relative improvement over' in printed
    assert len(results['indices']) == 32 and all(0 <= i < 1000 for i in results['indices'])


def test_gradient_masking_is_flagged():
    eps = [('0', 0.0), ('0.1', 0.1)]
    honest = {'accuracy': {'FGSM': [90.0, 40.0], 'PGD-10': [90.0, 30.0], 'AutoAttack': [90.0, 25.0]}}
    assert masking_warnings('m', honest, eps, gap=10) == []
    masked = {'accuracy': {'FGSM': [90.0, 40.0], 'PGD-10': [90.0, 45.0], 'AutoAttack': [90.0, 20.0]}}
    warnings = masking_warnings('m', masked, eps, gap=10)
    assert len(warnings) == 2
    assert 'above FGSM' in warnings[0] and 'AutoAttack accuracy 20.00%' in warnings[1]


def test_loaded_checkpoint_computes_what_training_saved(checkpoints):
    loaded = load_model(checkpoint_path=str(checkpoints['chans']))
    state = torch.load(checkpoints['chans'], weights_only=True)['state_dict']
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
    assert not loaded.model.training and loaded.data_config['input_size'] == (1, 28, 28)
    assert not loaded.model.stem[0].weight.requires_grad  # the rebuilt model is frozen as it was trained


def _fails(argv, capsys, tmp_path, match):
    with pytest.raises(SystemExit) as exit_info:
        main(['-j', '0', '--output', str(tmp_path / 'out'), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert match in err[-1], err
    assert not (tmp_path / 'out').exists()


def test_bad_input_fails_in_one_line_and_writes_nothing(checkpoints, tmp_path, capsys, monkeypatch):
    chans = str(checkpoints['chans'])
    _fails(['--checkpoint', str(tmp_path / 'missing.pth.tar')], capsys, tmp_path, 'not found')
    _fails(['--checkpoint', chans, '--model', 'convmixer_128_4_ks5_p2_full'], capsys, tmp_path,
           "is for 'convmixer_128_4_ks5_p2_chans', not 'convmixer_128_4_ks5_p2_full'")
    _fails(['--checkpoint', chans, '--eps', '0,8/255,2'], capsys, tmp_path, 'eps 2 is outside [0, 1]')
    _fails(['--checkpoint', chans, '--attacks', 'fgsm,cw'], capsys, tmp_path, "unknown attack 'cw'")
    _fails(['--checkpoint', chans, '--pgd-restarts', '3', '--no-pgd-random-start'], capsys, tmp_path,
           'without a random start repeats one attack')
    _fails(['--checkpoint', chans, '--pgd-restarts', '0'], capsys, tmp_path, '--pgd-restarts must be >= 1')
    _fails(['--model', 'convmixer_128_4_ks5_p2_chans'], capsys, tmp_path, 'add --pretrained')
    _fails(['--model', 'convmixer_128_4_p1_chans', '--pretrained'], capsys, tmp_path,
           "no pretrained weights exist for 'convmixer_128_4_p1_chans'")
    _fails(['--model', 'not_a_model'], capsys, tmp_path, "unknown model 'not_a_model'")
    _fails(['--checkpoint', chans, '--dataset', 'fashion-mnist', '--data-dir', str(tmp_path)], capsys, tmp_path,
           'Fashion-MNIST idx files not found')
    corrupt = tmp_path / 'corrupt.pth.tar'
    corrupt.write_bytes(b'not a checkpoint')
    _fails(['--checkpoint', str(corrupt)], capsys, tmp_path, 'is corrupt')
    monkeypatch.setitem(sys.modules, 'torchattacks', None)
    _fails(['--checkpoint', chans], capsys, tmp_path, 'pip install --no-deps torchattacks==3.5.1')


def test_a_missing_torchattacks_dependency_is_named(monkeypatch):
    for name in [m for m in sys.modules if m == 'torchattacks' or m.startswith('torchattacks.')]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, 'scipy', None)
    with pytest.raises(UsageError) as info:
        import_torchattacks()
    message = str(info.value)
    assert "needs 'scipy'" in message and 'pip install scipy' in message and '--no-deps' not in message


class TinyClassifier(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.ReLU(), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize('num_classes,components', [
    (2, ['APGD-CE', 'FAB-T', 'Square']),
    (3, ['APGD-CE', 'APGD-DLR', 'FAB-T', 'Square']),
    (10, ['APGD-CE', 'APGD-T', 'FAB-T', 'Square']),
])
def test_autoattack_runs_for_any_number_of_classes(num_classes, components):
    torch.manual_seed(0)
    model = TinyClassifier(num_classes)
    loaded = LoadedModel(model, 'tiny', dict(input_size=(1, 28, 28), mean=(0.5,), std=(0.5,),
                                             interpolation='bilinear', crop_pct=1.0))
    images = ImageSubset.random(create_dataset('fashion-mnist-sample', split='test'), 8, seed=0)
    images.dataset.labels = images.dataset.labels % num_classes  # a num_classes-way task over the same images
    args = robust_args('--attacks', 'autoattack', '--eps', '0.05')
    result = evaluate_model('tiny', loaded, images, args, import_torchattacks())
    assert result['autoattack_components'] == components
    assert 0 <= result['accuracy']['AutoAttack'][0] <= result['clean_accuracy']
    assert result['max_perturbation']['AutoAttack'][0] <= 0.05 + 1e-6


def test_a_one_class_model_is_refused_before_any_work():
    with pytest.raises(UsageError, match='cannot be attacked'):
        autoattack_components(1)


def make_folder_split(root, unreadable=()):
    """An ImageNet-style folder of 2 classes x 6 RGB images, some replaced by files that are not images."""
    from PIL import Image
    generator = torch.Generator().manual_seed(0)
    for c in range(2):
        folder = root / f'class{c}'
        folder.mkdir(parents=True)
        for i in range(6):
            path = folder / f'{i}.png'
            if (c, i) in unreadable:
                path.write_bytes(b'\x89PNG\r\n\x1a\n not really a png')
            else:
                pixels = (torch.rand(20, 20, 3, generator=generator) * 255).byte().numpy()
                Image.fromarray(pixels).save(path)


@pytest.fixture(scope='module')
def folder_checkpoint(tmp_path_factory):
    """A tiny 2-class ConvMixer trained on an RGB image folder, and the folder with 2 unreadable test images."""
    root = tmp_path_factory.mktemp('folder')
    make_folder_split(root / 'data' / 'train')
    make_folder_split(root / 'data' / 'validation', unreadable={(0, 1), (1, 4)})
    train_main(['--output', str(root), '--experiment', 'run', '--dataset', 'folder', '--data-dir',
                str(root / 'data'), '-b', '4', *TINY])
    return root / 'run' / 'model_best.pth.tar', root / 'data'


def test_unreadable_images_are_left_out_and_counted(folder_checkpoint, tmp_path, capsys):
    checkpoint, data = folder_checkpoint
    main(['-j', '0', '--checkpoint', str(checkpoint), '--dataset', 'folder', '--data-dir', str(data), '--split',
          'validation', '--attacks', 'fgsm,autoattack', '--eps', '0.05', '--output', str(tmp_path)])
    results = json.loads((tmp_path / 'robust.json').read_text())
    (result,) = results['models'].values()
    assert results['requested_samples'] == 12 and results['num_samples'] == result['num_samples'] == 10
    assert sorted(Path(f).name for f in results['unreadable']) == ['1.png', '4.png']
    assert result['autoattack_components'] == ['APGD-CE', 'FAB-T', 'Square']  # a 2-class model
    assert '2 unreadable image(s) left out' in capsys.readouterr().out


def test_output_and_values_are_checked_before_any_model_is_loaded(checkpoints, tmp_path, capsys, monkeypatch):
    loads = []
    monkeypatch.setattr('timm_frozenmix.evaluation.robust.load_model', lambda *a, **k: loads.append(a))
    (tmp_path / 'file').write_text('mine')
    for argv, match in ((['--output', str(tmp_path / 'file')], 'is a file'),
                        (['--num-samples', '0'], '--num-samples must be >= 1'),
                        (['--masking-gap', '-1'], '--masking-gap must be >= 0')):
        with pytest.raises(SystemExit) as exit_info:
            main(['-j', '0', '--checkpoint', str(checkpoints['chans']), *argv])
        assert exit_info.value.code == 2 and match in capsys.readouterr().err.strip().splitlines()[-1]
    assert loads == [] and (tmp_path / 'file').read_text() == 'mine'


def test_a_genuine_failure_during_attacks_keeps_its_traceback(checkpoints, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError('simulated CUDA error')
    monkeypatch.setattr('timm_frozenmix.evaluation.robust.evaluate_model', broken)
    with pytest.raises(RuntimeError, match='simulated CUDA error'):
        main(['-j', '0', '--checkpoint', str(checkpoints['chans']), '--output', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('settings,match', [
    (dict(attacks=['PGD']), 'unknown attack PGD'), (dict(eps=[('2', 2.0)]), 'eps 2 outside'),
])
def test_a_config_from_python_is_checked_like_the_flags(checkpoints, settings, match):
    with pytest.raises(UsageError, match=match):
        evaluate(RobustConfig(checkpoint=[str(checkpoints['chans'])], **settings))


def test_a_grayscale_folder_model_is_evaluated_in_the_mode_it_was_trained(tmp_path):
    """--input-img-mode defaults to what train.py recorded: a model trained on a folder read as 'L' (1 channel)
    is evaluated on the same folder read the same way."""
    make_folder_split(tmp_path / 'data' / 'train')
    make_folder_split(tmp_path / 'data' / 'validation')
    train_main(['--output', str(tmp_path), '--experiment', 'gray', '--dataset', 'folder', '--data-dir',
                str(tmp_path / 'data'), '--input-img-mode', 'L', '-b', '4', *TINY])
    main(['-j', '0', '--checkpoint', str(tmp_path / 'gray' / 'model_best.pth.tar'), '--dataset', 'folder',
          '--data-dir', str(tmp_path / 'data'), '--split', 'validation', '--attacks', 'fgsm', '--eps', '0.05',
          '--output', str(tmp_path / 'eval')])
    results = json.loads((tmp_path / 'eval' / 'robust.json').read_text())
    assert results['input_img_mode'] == 'L' and results['num_samples'] == 12


def test_an_hfds_model_is_evaluated_with_the_field_names_it_was_trained_with(tmp_path, hf_parquet_folder, capsys):
    """--input-key/--target-key/--class-map default to what train.py recorded for the same dataset."""
    dataset = f'hfds/{hf_parquet_folder}'
    (tmp_path / 'classes.txt').write_text('c\nb\na\n')
    train_main(['--output', str(tmp_path), '--experiment', 'run', '--dataset', dataset, '--train-split', 'train[:16]',
                '--val-split', 'train[16:]', '--input-key', 'picture', '--target-key', 'kind', '--class-map',
                str(tmp_path / 'classes.txt'), '--input-img-mode', 'L', '--img-size', '28', '-b', '8', *TINY])
    checkpoint = str(tmp_path / 'run' / 'model_best.pth.tar')
    main(['-j', '0', '--checkpoint', checkpoint, '--dataset', dataset, '--split', 'train[16:]', '--attacks', 'fgsm',
          '--eps', '0.05', '--output', str(tmp_path / 'eval')])
    results = json.loads((tmp_path / 'eval' / 'robust.json').read_text())
    assert (results['input_key'], results['target_key'], results['input_img_mode']) == ('picture', 'kind', 'L')
    assert results['class_map'] == str(tmp_path / 'classes.txt') and results['num_samples'] == 8
    _fails(['--checkpoint', checkpoint, '--dataset', dataset, '--split', 'train[16:]', '--target-key', 'missing'],
           capsys, tmp_path, "has no field 'missing' (its fields: picture, kind): name its image and label fields")


def test_nan_weights_are_an_error_not_an_accuracy(checkpoints, tmp_path, capsys):
    checkpoint = Checkpoint.load(checkpoints['chans'])
    checkpoint.state_dict['head.weight'][0, 0] = float('nan')
    checkpoint.save(tmp_path / 'diverged.pth.tar')
    _fails(['--checkpoint', str(tmp_path / 'diverged.pth.tar')], capsys, tmp_path,
           'holds NaN or Inf weights (head.weight): its training diverged')

from pathlib import Path

import pytest
import timm
import torch

import timm_frozenmix  # noqa: F401  registers the models
from timm_frozenmix import SeparableConv2d, parameter_roles, smooth_filters
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.models.pretrained import WEIGHTS_DIR, shipped_names

MODES = ('full', 'chans', 'space')
CONVMIXERS = ('convmixer_512_7', 'convmixer_1536_20', 'convmixer_768_32', 'convmixer_1024_20_ks9_p14',
              'convmixer_128_4_p1', 'convmixer_128_8_p1', 'convmixer_128_16_p1', 'convmixer_128_4_ks5_p2')
SEP_RESNETS = tuple(f'sep_resnet{d}' for d in (10, 18, 26, 34, 50)) + tuple(
    f'sep_resnet{d}_cifar' for d in (20, 32, 44, 56, 110))
ALL = [f'{base}_{mode}' for base in CONVMIXERS + SEP_RESNETS for mode in MODES]


def test_every_model_is_registered():
    for mode in MODES:
        assert set(timm.list_models(f'*_{mode}')) >= {n for n in ALL if n.endswith(mode)}
    assert len(timm.list_models('*_chans')) == len(CONVMIXERS) + len(SEP_RESNETS)


def frozen_roles(model):
    roles = parameter_roles(model)
    return {roles[n] for n, p in model.named_parameters() if not p.requires_grad}


@pytest.mark.slow
@pytest.mark.parametrize('name', ALL)
def test_every_model_builds_runs_and_freezes_its_mode(name):
    model = timm.create_model(name).eval()
    chans, _, size = model.pretrained_cfg['input_size']
    size = size if size <= 32 else 64
    with torch.no_grad():
        out = model(torch.randn(1, chans, size, size))
    assert out.shape == (1, model.pretrained_cfg['num_classes'])
    expected = {'full': set(), 'chans': {'spatial'}, 'space': {'channel'}}[name.rsplit('_', 1)[1]]
    assert frozen_roles(model) == expected


def test_convmixer_configs():
    model = timm.create_model('convmixer_512_7_chans')
    assert model.stem[0].kernel_size == (7, 7) and model.stem[0].stride == (7, 7)
    assert model.blocks[0][0].fn[0].kernel_size == (8, 8) and len(model.blocks) == 7
    assert not model.stem[0].weight.requires_grad  # the Chans stem is frozen (paper)
    assert timm.create_model('convmixer_512_7_space').stem[0].weight.requires_grad  # learned in Space
    cifar = timm.create_model('convmixer_128_8_p1_full')
    assert cifar.stem[0].kernel_size == (1, 1) and cifar.num_features == 128 and cifar.num_classes == 10
    assert cifar.pretrained_cfg['input_size'] == (3, 32, 32)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['convmixer_768_32', 'convmixer_1024_20_ks9_p14', 'convmixer_1536_20'])
def test_full_convmixers_are_timms_architecture(name):
    ours = timm.create_model(f'{name}_full')
    reference = timm.create_model(name)
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours.eval(), reference.eval()
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))
    assert ours.pretrained_cfg['hf_hub_id'] == f'timm/{name}.in1k'


def test_list_pretrained_names_only_weights_that_exist():
    ours = [n for n in timm.list_pretrained() if n.split('.')[0] in ALL]
    timms = [f'{name}_full.in1k' for name in CONVMIXERS[1:4]]  # timm's own ConvMixer weights
    shipped = list(shipped_names())  # the Fashion-MNIST weights inside the package
    assert sorted(ours) == sorted(timms + shipped)
    for name in timms:
        assert timm.get_pretrained_cfg(name.split('.')[0]).hf_hub_id.startswith('timm/')
    for name in shipped:  # inside the installed package, not in a cache or download folder
        assert Path(timm.get_pretrained_cfg(name).file).parent == WEIGHTS_DIR
    for name in ('convmixer_512_7_space', 'sep_resnet20_cifar_space'):
        cfg = timm.create_model(name).pretrained_cfg
        assert cfg['paper_ids'] == 'arxiv:2503.16760' and cfg['license']
        assert cfg['first_conv'] and cfg['classifier']
        assert not (cfg.get('hf_hub_id') or cfg.get('url') or cfg.get('file'))


def test_separable_resnets_have_paper_structure():
    model = timm.create_model('sep_resnet20_cifar_chans', width=2)
    seps = [m for m in model.modules() if isinstance(m, SeparableConv2d)]
    assert len(seps) == 1 + 3 * 3 * 2  # stem plus 6n convs, n=3
    assert all(s.depth_multiplier == 9 for s in seps)
    assert model.stem.conv.depthwise.stride == (1, 1) and model.stem.conv.out_channels == 32
    assert model.num_features == 128
    assert len(model.stages) == 3
    imagenet = timm.create_model('sep_resnet10_full')
    assert len([m for m in imagenet.modules() if isinstance(m, SeparableConv2d)]) == 1 + 4 * 2
    assert imagenet.stem.conv.kernel_size == (7, 7)


def test_channel_params_equal_the_dense_resnets_conv_params():
    """Eq. 3 at model scale: with d = 9 = 3^2 the learned pointwise weights match the dense 3x3 convs.

    The 7x7 stem is separable with d = 9 too (as in the paper), so it has fewer weights than a dense one.
    """
    ours = timm.create_model('sep_resnet18_chans')
    dense = timm.create_model('resnetv2_18')
    dense_conv = sum(m.weight.numel() for n, m in dense.named_modules()
                     if isinstance(m, torch.nn.Conv2d) and not n.startswith(('head', 'stem')))
    roles = parameter_roles(ours)
    channel = sum(p.numel() for n, p in ours.named_parameters()
                  if p.requires_grad and roles[n] == 'channel' and not n.startswith('stem'))
    assert channel == dense_conv
    assert ours.stem.conv.pointwise.weight.numel() == 3 * 9 * 64


def test_separable_false_is_the_dense_resnet_of_the_same_layout():
    dense = timm.create_model('sep_resnet20_cifar_full', separable=False, num_classes=10)
    sep = timm.create_model('sep_resnet20_cifar_full', num_classes=10)
    assert not any(isinstance(m, SeparableConv2d) for m in dense.modules())
    convs = [m for m in dense.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == len([m for m in sep.modules() if isinstance(m, SeparableConv2d)]) == 1 + 3 * 3 * 2
    assert [f['num_chs'] for f in dense.feature_info] == [f['num_chs'] for f in sep.feature_info]
    assert dense(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(UsageError, match='separable=False builds dense convolutions'):
        timm.create_model('sep_resnet20_cifar_chans', separable=False)


@pytest.mark.parametrize('name', ['sep_resnet20_cifar_full', 'sep_resnet10_full'])
@pytest.mark.parametrize('separable', [True, False])
def test_first_conv_names_the_input_conv(name, separable):
    model = timm.create_model(name, separable=separable)
    first = model.get_submodule(model.pretrained_cfg['first_conv'])
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == 3


def test_model_kwargs_pass_through_create_model():
    model = timm.create_model(
        'sep_resnet20_cifar_chans', depth_multiplier=3, spatial_init='box', smooth_sigma=0.0,
        in_chans=1, num_classes=5, width=2)
    assert model.stem.conv.depthwise.in_channels == 1 and model.stem.conv.depthwise.out_channels == 3
    box = model.stages[0].blocks[0].conv1.depthwise.weight
    assert torch.all(box == box.flatten()[0])
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 5)
    mixer = timm.create_model('convmixer_128_4_p1_chans', spatial_init='same', smooth_sigma=1.0, in_chans=1)
    dw = mixer.blocks[0][0].fn[0].weight
    assert torch.equal(dw[0], dw[1])
    assert mixer(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_smoothing_changes_only_the_spectrum():
    torch.manual_seed(3)
    plain = timm.create_model('convmixer_128_4_p1_chans')
    torch.manual_seed(3)
    smooth = timm.create_model('convmixer_128_4_p1_chans', smooth_sigma=1.0)
    a, b = plain.blocks[0][0].fn[0].weight, smooth.blocks[0][0].fn[0].weight
    assert not torch.equal(a, b)
    torch.testing.assert_close(b, smooth_filters(a, 1.0))
    torch.testing.assert_close(a.flatten(1).norm(dim=1), b.flatten(1).norm(dim=1))


@pytest.mark.parametrize('kwargs,match', [
    (dict(spatial_init='gabor'), 'unknown spatial_init'),
    (dict(smooth_sigma=-1.0), 'smooth_sigma must be >= 0'),
    (dict(depth_multiplier=0), 'depth_multiplier must be an integer >= 1'),
    (dict(learn='everything'), 'unknown learn mode'),
])
def test_bad_model_kwargs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model('sep_resnet20_cifar_chans', **kwargs)


@pytest.mark.parametrize('name', ['convmixer_128_4_p1_chans', 'sep_resnet18_space', 'convmixer_1536_20_chans'])
def test_pretrained_without_weights_fails_in_one_line_instead_of_a_random_model(name):
    with pytest.raises(UsageError) as info:
        timm.create_model(name, pretrained=True)
    message = str(info.value)
    assert f'no pretrained weights exist for {name!r}' in message and 'timm.list_pretrained()' in message
    assert 'hf-hub:' in message and f'train.py --model {name}' in message
    assert 'timm-frozenmix/' not in message  # no namespace users cannot push to
    assert '\n' not in message


def test_pretrained_from_a_file_still_loads(tmp_path):
    torch.manual_seed(0)
    trained = timm.create_model('convmixer_128_4_ks5_p2_chans', dim=16)
    torch.save(trained.state_dict(), tmp_path / 'weights.pth')
    loaded = timm.create_model('convmixer_128_4_ks5_p2_chans', dim=16, pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(tmp_path / 'weights.pth')))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in trained.state_dict().items())

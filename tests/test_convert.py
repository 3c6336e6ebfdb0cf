import copy
import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
import torchvision
from timm.models.convmixer import ConvMixer
from timm.optim import create_optimizer_v2
from timm.utils import reparameterize_model

from timm_frozenmix import SeparableConv2d, freeze, parameter_roles, separate, summarize
from timm_frozenmix.layers.executions import EXECUTIONS
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.models.convert import learn_mode

REPO = Path(__file__).resolve().parents[1]

ZOO = {
    'timm/resnet50': lambda: timm.create_model('resnet50', num_classes=7),
    'timm/resnetv2_50': lambda: timm.create_model('resnetv2_50', num_classes=7),
    'timm/convnext_atto': lambda: timm.create_model('convnext_atto', num_classes=7),
    'timm/efficientnet_b0': lambda: timm.create_model('efficientnet_b0', num_classes=7),
    'timm/mobilenetv3_small_100': lambda: timm.create_model('mobilenetv3_small_100', num_classes=7),
    'timm/regnetx_002': lambda: timm.create_model('regnetx_002', num_classes=7),
    'timm/vit_tiny_patch16_224': lambda: timm.create_model('vit_tiny_patch16_224', num_classes=7, img_size=64),
    'torchvision/resnet18': lambda: torchvision.models.resnet18(num_classes=7),
    'torchvision/mobilenet_v3_small': lambda: torchvision.models.mobilenet_v3_small(num_classes=7),
    'torchvision/densenet121': lambda: torchvision.models.densenet121(num_classes=7),
}


def expected_roles(model):
    """The role rule, stated independently of the package: by module type and shape."""
    classifier = set(model.get_classifier().modules()) if hasattr(model, 'get_classifier') else set()
    roles = {}
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            name = f'{mod_name}.{p_name}' if mod_name else p_name
            if isinstance(module, nn.Conv2d) and module not in classifier:
                if module.kernel_size == (1, 1):
                    roles[name] = 'channel'
                elif module.groups == module.in_channels:
                    roles[name] = 'spatial'
                else:
                    roles[name] = 'dense'
            else:
                roles[name] = 'other'
    return roles


def frozen_names(model):
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def train_steps(model, steps=3, size=64):
    optimizer = create_optimizer_v2(model, 'adamw', lr=1e-2, weight_decay=0.05)
    model.train()
    for _ in range(steps):
        out = model(torch.randn(4, 3, size, size))
        loss = nn.functional.cross_entropy(out, torch.randint(0, 7, (4,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.slow
@pytest.mark.parametrize('name', ZOO)
@pytest.mark.parametrize('learn', ['channels', 'spatial'])
def test_zoo_separate_keeps_shapes_freezes_by_role_and_trains(name, learn):
    torch.manual_seed(0)
    model = ZOO[name]()
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    shape = model(x).shape

    separate(model, learn=learn)
    model.eval()
    assert model(x).shape == shape
    assert any(isinstance(m, SeparableConv2d) for m in model.modules())

    roles = expected_roles(model)
    assert 'dense' not in roles.values(), 'every dense conv larger than 1x1 must have been separated'
    frozen_role = 'spatial' if learn == 'channels' else 'channel'
    assert frozen_names(model) == {n for n, r in roles.items() if r == frozen_role}
    assert parameter_roles(model) == roles

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model)
    params = dict(model.named_parameters())
    for n in frozen_names(model):
        assert torch.equal(params[n], before[n]), f'frozen {n} changed'
    changed = [n for n, p in params.items() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed, 'training changed nothing'


def test_full_freezes_nothing_and_aliases_match():
    model = separate(torchvision.models.resnet18(num_classes=3), learn='full')
    assert not frozen_names(model)
    chans = separate(torchvision.models.resnet18(num_classes=3), learn='chans')
    channels = separate(torchvision.models.resnet18(num_classes=3), learn='channels')
    assert frozen_names(chans) == frozen_names(channels)


def test_separate_keeps_native_depthwise_filters_unless_asked():
    model = timm.create_model('convnext_atto')
    dw = model.stages[0].blocks[0].conv_dw.weight.detach().clone()
    separate(model)
    assert torch.equal(model.stages[0].blocks[0].conv_dw.weight, dw)
    separate_box = separate(timm.create_model('convnext_atto'), spatial_init='box')
    box = separate_box.stages[0].blocks[0].conv_dw.weight
    assert torch.all(box == box.flatten()[0])


def test_separate_keeps_conv_options():
    model = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2, dilation=1, padding_mode='reflect', bias=True))
    separate(model, depth_multiplier=4, learn='full')
    dw, pw = model[0].depthwise, model[0].pointwise
    assert dw.stride == (2, 2) and dw.padding == (2, 2) and dw.padding_mode == 'reflect'
    assert dw.out_channels == 12 and pw.bias is not None


def test_freeze_convmixer_stem_is_spatial():
    model = ConvMixer(dim=32, depth=2, kernel_size=5, patch_size=2, num_classes=4)
    freeze(model, learn='channels')
    assert not model.stem[0].weight.requires_grad and not model.stem[0].bias.requires_grad
    assert not model.blocks[0][0].fn[0].weight.requires_grad and not model.blocks[0][0].fn[0].bias.requires_grad
    assert model.blocks[0][1].weight.requires_grad and model.head.weight.requires_grad
    assert model.stem[2].weight.requires_grad  # norms are always learned
    freeze(model, learn='space')
    assert model.stem[0].weight.requires_grad and model.blocks[0][0].fn[0].weight.requires_grad
    assert not model.blocks[0][1].weight.requires_grad and not model.blocks[0][1].bias.requires_grad
    freeze(model, learn='full')
    assert all(p.requires_grad for p in model.parameters())


def test_summarize_counts_and_prints(capsys):
    model = nn.Sequential(nn.Conv2d(4, 8, 3, bias=False), nn.BatchNorm2d(8), nn.Conv2d(8, 5, 1))
    separate(model, depth_multiplier=9, learn='channels')
    counts = summarize(model)
    assert counts['spatial'] == {'trainable': 0, 'frozen': 4 * 9 * 9}
    assert counts['channel'] == {'trainable': 4 * 9 * 8 + 8 * 5 + 5, 'frozen': 0}
    assert counts['other'] == {'trainable': 16, 'frozen': 0}
    assert counts['total'] == {'trainable': 288 + 45 + 16, 'frozen': 324}
    printed = capsys.readouterr().out
    assert 'spatial' in printed and '324' in printed and 'trainable' in printed


@pytest.mark.parametrize('kwargs,match', [
    (dict(learn='both'), "unknown learn mode 'both'.*'full', 'channels', 'spatial', 'chans', 'space'"),
    (dict(spatial_init='gauss'), "unknown spatial_init 'gauss'.*'random', 'same', 'box', 'identity'"),
    (dict(depth_multiplier=0), 'depth_multiplier must be an integer >= 1, got 0'),
    (dict(smooth_sigma=-0.5), 'smooth_sigma must be >= 0.*-0.5'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        separate(torchvision.models.resnet18(), **kwargs)


def test_nothing_to_convert():
    with pytest.raises(ValueError, match='no dense convolution.*freeze'):
        separate(nn.Sequential(nn.Linear(4, 4), nn.Conv2d(4, 4, 1)))
    with pytest.raises(ValueError, match='unknown learn mode'):
        freeze(nn.Sequential(nn.Conv2d(4, 4, 1)), learn='nope')


@pytest.mark.parametrize('name', ['sep_resnet20_cifar_chans', 'sep_resnet18_space'])
def test_timms_reparameterize_model_gives_a_dense_model_with_the_same_outputs(name):
    model = timm.create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        dense = reparameterize_model(model)
        assert not any(isinstance(m, SeparableConv2d) for m in dense.modules())
        assert torch.allclose(dense(x), expected, atol=1e-4, rtol=1e-4)
    stem = dense.stem.conv
    assert isinstance(stem, torch.nn.Conv2d) and stem.groups == 1 and stem.weight.requires_grad


def test_learn_mode_reads_what_is_actually_frozen():
    assert [learn_mode(timm.create_model(f'convmixer_128_4_ks5_p2_{m}')) for m in ('full', 'chans', 'space')] == [
        'full', 'channels', 'spatial']
    assert learn_mode(freeze(timm.create_model('convmixer_128_4_ks5_p2_chans'), 'full')) == 'full'
    model = timm.create_model('convmixer_128_4_ks5_p2_full')
    model.blocks[0][0].fn[0].requires_grad_(False)  # one depthwise conv frozen by hand: no mode
    model.blocks[0][1].requires_grad_(False)
    assert learn_mode(model) is None


def _trained_looking(model: nn.Module) -> nn.Module:
    """Batch-norm statistics and affine terms away from their init, as after training; eval mode."""
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.normal_(module.bias, 0, 0.1)
    return model.eval()


@pytest.mark.parametrize('build, size, depth_multiplier', [
    # torchvision's 7x7 stem needs d = 49 for an exact factorization; timm's ResNetV2 with a 3x3 stem, d = 9
    (lambda: torchvision.models.resnet18(num_classes=10), 64, 49),
    (lambda: timm.create_model('sep_resnet20_cifar_full', separable=False, num_classes=10, width=2), 32, 9),
])
@pytest.mark.parametrize('execution', EXECUTIONS)
def test_keep_function_keeps_the_outputs(build, size, depth_multiplier, execution):
    torch.manual_seed(0)
    dense = _trained_looking(build())
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        expected = dense(x)
    model = separate(dense, depth_multiplier=depth_multiplier, learn='channels', keep_function=True).eval()
    for module in model.modules():
        if isinstance(module, SeparableConv2d):
            module.execution = execution if module.groups == 1 or execution != 'im2col' else 'fused'
    with torch.no_grad():
        out = model(x)
    assert ((out - expected).norm() / expected.norm()).item() < 1e-4


def test_keep_function_then_channels_only_fine_tuning_moves_only_pointwise_weights():
    torch.manual_seed(0)
    model = separate(_trained_looking(timm.create_model('sep_resnet20_cifar_full', separable=False, num_classes=10)),
                     keep_function=True, learn='channels').train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = create_optimizer_v2(model, 'sgd', lr=0.1)
    nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,))).backward()
    optimizer.step()
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert any('pointwise' in name for name in moved)
    assert not any('depthwise' in name for name in moved)


def test_keep_function_warns_about_least_squares_layers_it_was_allowed_to_fit():
    model = torchvision.models.resnet18(num_classes=10)
    with pytest.warns(UserWarning, match=r'1 layer\(s\) are least-squares fits, not exact: conv1 '):
        separate(model, depth_multiplier=9, keep_function=True, approximate=True)


def test_keep_function_refuses_a_depth_multiplier_too_small_to_be_exact():
    model = torchvision.models.resnet18(num_classes=10)
    with pytest.raises(UsageError, match=r'conv1 with depth_multiplier=9: its 7x7 kernel needs 49'):
        separate(model, depth_multiplier=9, keep_function=True)
    assert isinstance(model.conv1, nn.Conv2d)  # refused before anything was converted
    with pytest.raises(UsageError, match='needs keep_function=True'):
        separate(model, approximate=True)


@pytest.mark.parametrize('build, size', [
    (lambda: torchvision.models.resnet18(), 64),  # default arguments: 7x7 stem, 3x3 elsewhere
    (lambda: timm.create_model('resnetv2_50'), 64),  # README's example, without the download
])
def test_keep_function_keeps_the_outputs_with_default_arguments(build, size):
    """By default every layer gets the depth multiplier that makes it exact: d = 49 for a 7x7 stem, 9 for 3x3."""
    torch.manual_seed(0)
    dense = _trained_looking(build())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = dense(x)
    model = separate(dense, learn='channels', keep_function=True).eval()
    multipliers = {m.kernel_size: m.depth_multiplier for m in model.modules() if isinstance(m, SeparableConv2d)}
    assert multipliers.get((7, 7)) == 49 and multipliers[(3, 3)] == 9
    with torch.no_grad():
        out = model(x)
    assert ((out - expected).norm() / expected.norm()).item() < 1e-4


def keep_function_blocks():
    """Every python block of README.md and docs/*.md that calls keep_function=True."""
    pages = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
    blocks = [(page.name, block) for page in pages
              for block in re.findall(r'```python\n(.*?)```', page.read_text(), flags=re.S)]
    return [pytest.param(block, id=name) for name, block in blocks if 'keep_function=True' in block]


@pytest.mark.parametrize('block', keep_function_blocks())
def test_documented_keep_function_calls_keep_the_function(block, monkeypatch):
    """Each documented call, run as written but offline (pretrained weights replaced by trained-looking random
    ones), computes what the model it converted did: within 1e-4 relative."""
    originals = []
    create_model = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        model = _trained_looking(create_model(name, pretrained=False, **kwargs)).eval()
        originals.append(copy.deepcopy(model))
        return model
    monkeypatch.setattr(timm, 'create_model', offline)
    torch.manual_seed(0)
    namespace = {'timm': timm, 'separate': separate}
    exec(block, namespace)
    (original,) = originals
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, out = original(x), namespace['model'].eval()(x)
    assert ((out - expected).norm() / expected.norm()).item() < 1e-4


def test_ill_conditioned_random_banks_are_redrawn_before_the_solve():
    """The tail of random 9x9 banks (condition numbers above 10,000) would amplify float32 rounding: such banks
    are redrawn from the same init, and the factorization is then exact to float32 precision."""
    from timm_frozenmix.layers.filters import MAX_CONDITION, condition_random_banks_
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 32, 3, padding=1, bias=False)
    sep = SeparableConv2d.from_conv(conv, learn='channels')
    banks = sep.depthwise.weight.data.view(32, 9, 9)
    u, _, v = torch.linalg.svd(banks[:4].double())
    singular = torch.logspace(0, -6, 9, dtype=torch.float64)  # condition number 1e6
    banks[:4] = (u @ torch.diag_embed(singular.expand(4, 9)) @ v).float() * banks[:4].norm(dim=(1, 2), keepdim=True)
    assert (torch.linalg.cond(banks.double()) > MAX_CONDITION).sum() >= 4
    inexact = sep.factorize_(conv.weight)
    assert condition_random_banks_(sep.depthwise) >= 4
    assert (torch.linalg.cond(banks.double()) <= MAX_CONDITION).all()
    exact = sep.factorize_(conv.weight)
    assert exact < 1e-5 < inexact


def test_keep_function_needs_a_dense_kernel_of_the_layers_shape():
    sep = SeparableConv2d(8, 16, 3)
    with pytest.raises(ValueError, match='does not fit this layer'):
        sep.factorize_(torch.randn(16, 8, 5, 5))


@pytest.mark.parametrize('model, kwargs, match', [
    (lambda: timm.create_model('resnetv2_50x1_bit', num_classes=10), {}, 'StdConv2d transforms its weight'),
    (lambda: torchvision.models.resnet18(num_classes=10), dict(smooth_sigma=1.0), 'leave spatial_init and smooth'),
])
def test_keep_function_refuses_what_it_could_not_keep(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        separate(model(), keep_function=True, **kwargs)


def test_factorize_without_a_dense_bias_zeroes_the_pointwise_bias():
    from timm_frozenmix.layers.filters import condition_random_banks_
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    sep = SeparableConv2d(4, 8, 3, padding=1, bias=True)
    condition_random_banks_(sep.depthwise)
    sep.factorize_(conv.weight)
    assert torch.equal(sep.pointwise.bias, torch.zeros(8))
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(sep(x), conv(x), atol=1e-5, rtol=1e-4)

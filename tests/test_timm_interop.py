"""timm's model API on every family of the registry: features, intermediates, TorchScript, compile, checkpointing,
save_for_hf and local-dir, in_chans adaptation of pretrained weights."""
import pytest
import timm
import torch
from timm.models import adapt_input_conv, save_for_hf

import timm_frozenmix  # noqa: F401  registers the models
from timm_frozenmix import separate
from timm_frozenmix.core.errors import UsageError

# one small member of each family, with an input it accepts: (name, kwargs, input shape)
FAMILIES = {
    'convmixer': ('convmixer_128_4_ks5_p2_chans', dict(dim=16), (2, 1, 28, 28)),
    'convmixer-shallow': ('convmixer_128_4_p1_space', dict(dim=16, depth=2), (2, 3, 16, 16)),
    'sep-resnet-basic': ('sep_resnet10_chans', dict(channels=(8, 16, 32, 64)), (2, 3, 64, 64)),
    'sep-resnet-bottleneck': ('sep_resnet50_full', dict(channels=(16, 32, 64, 128), layers=(1, 1, 1, 1)),
                              (2, 3, 64, 64)),
    'sep-resnet-cifar': ('sep_resnet20_cifar_chans', dict(layers=(1, 1, 1)), (2, 3, 32, 32)),
}


def create(family, **kwargs):
    name, model_kwargs, shape = FAMILIES[family]
    torch.manual_seed(0)
    return timm.create_model(name, **model_kwargs, **kwargs), torch.rand(shape)


@pytest.mark.parametrize('family', FAMILIES)
def test_features_only_with_default_arguments(family):
    model, x = create(family, features_only=True)
    features = model(x)
    assert len(features) == len(model.feature_info.out_indices) == len(model.feature_info.channels())
    assert [f.shape[1] for f in features] == model.feature_info.channels()
    assert [x.shape[-1] // f.shape[-1] for f in features] == model.feature_info.reduction()


@pytest.mark.parametrize('family', FAMILIES)
def test_forward_intermediates_end_where_forward_features_ends(family):
    model, x = create(family)
    model.eval()
    final, intermediates = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    assert len(intermediates) >= 2 and all(t.dim() == 4 for t in intermediates)


@pytest.mark.parametrize('family', FAMILIES)
def test_torchscript_computes_the_same(family):
    model, x = create(family)
    model.eval()
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), model(x))


def test_torchscript_of_a_separated_timm_model_with_same_padding():
    model = separate(timm.create_model('tf_efficientnet_b0', num_classes=3), learn='chans').eval()
    x = torch.rand(1, 3, 33, 33)  # odd size: timm's dynamic SAME padding is asymmetric here
    torch.testing.assert_close(torch.jit.script(model)(x), model(x))


@pytest.mark.parametrize('family', FAMILIES)
def test_torch_compile_captures_one_graph_forward_and_backward(family):
    model, x = create(family)
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    compiled(x).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    model(x).square().mean().backward()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, model.get_parameter(name).grad, msg=name)


@pytest.mark.slow
def test_torch_compile_with_inductor():
    model, x = create('sep-resnet-cifar')
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('family', FAMILIES)
def test_grad_checkpointing_gives_the_same_gradients(family):
    model, x = create(family)
    model.eval()  # batch norm in eval mode: the recomputed forward sees the same statistics
    model(x).sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    assert expected
    for name, grad in expected.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, msg=name)


@pytest.mark.parametrize('family', FAMILIES)
def test_reset_classifier_keeps_what_is_frozen(family):
    model, x = create(family)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen
    assert all(p.requires_grad for p in model.get_classifier().parameters())


@pytest.mark.parametrize('family', FAMILIES)
def test_timms_save_for_hf_writes_safetensors_that_local_dir_reloads(family, tmp_path):
    """timm.models.save_for_hf (safetensors only) and create_model('local-dir:...', pretrained=True): same tensors."""
    model, _ = create(family)
    save_for_hf(model, str(tmp_path), model_args=FAMILIES[family][1], safe_serialization=True)
    assert (tmp_path / 'model.safetensors').is_file() and not (tmp_path / 'pytorch_model.bin').exists()
    reloaded = timm.create_model(f'local-dir:{tmp_path}', pretrained=True)
    assert reloaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in reloaded.state_dict().items())


def exported(family, tmp_path, in_chans):
    """A family's model with `in_chans` input channels, saved by timm's save_for_hf; its `local-dir:` name."""
    model, _ = create(family, in_chans=in_chans)
    save_for_hf(model.eval(), str(tmp_path), model_args=FAMILIES[family][1], safe_serialization=True)
    return model, f'local-dir:{tmp_path}'


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('in_chans', [3, 2, 4])
def test_one_channel_weights_load_for_more_channels_and_see_a_gray_image_the_same(family, in_chans, tmp_path):
    """timm's in_chans adaptation on 1-channel weights (the shipped ones, grayscale exports): the adapted model
    on a gray image repeated in every channel computes what the original computes on the gray image."""
    gray, name = exported(family, tmp_path, in_chans=1)
    adapted = timm.create_model(name, pretrained=True, in_chans=in_chans).eval()
    x = torch.rand(2, 1, *FAMILIES[family][2][2:])
    with torch.no_grad():
        expected, got = gray(x), adapted(x.expand(-1, in_chans, -1, -1))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('family', ['sep-resnet-basic', 'sep-resnet-cifar'])
@pytest.mark.parametrize('in_chans', [2, 4])
def test_a_separable_stem_adapts_from_rgb_by_timms_rule(family, in_chans, tmp_path):
    """From 3 channels, the separable stem's dense equivalent is what timm's adapt_input_conv makes of the
    original's (channels repeated, scaled by 3 / in_chans)."""
    rgb, name = exported(family, tmp_path, in_chans=3)
    adapted = timm.create_model(name, pretrained=True, in_chans=in_chans)
    expected = adapt_input_conv(in_chans, rgb.stem.conv.dense_weight())
    torch.testing.assert_close(adapted.stem.conv.dense_weight(), expected, rtol=1e-5, atol=1e-6)


def test_a_separable_stem_cannot_sum_rgb_filters_into_one_channel(tmp_path):
    _, name = exported('sep-resnet-cifar', tmp_path, in_chans=3)
    with pytest.raises(UsageError, match='load with in_chans=3 and repeat the gray channel 3 times'):
        timm.create_model(name, pretrained=True, in_chans=1)


def test_a_dense_stem_takes_timms_own_rgb_to_gray_sum(tmp_path):
    rgb, name = exported('convmixer-shallow', tmp_path, in_chans=3)
    gray = timm.create_model(name, pretrained=True, in_chans=1).eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)

"""timm's model API on every family of the registry: features, intermediates, TorchScript, compile, checkpointing."""
import pytest
import timm
import torch

import timm_frozenmix  # noqa: F401  registers the models
from timm_frozenmix import separate

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

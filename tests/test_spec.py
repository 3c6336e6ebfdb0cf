"""The model spec: parsed once, serializable, and enough to rebuild a model exactly."""
import pytest
import torch

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix import SeparableConv2d
from timm_frozenmix.models.spec import ModelSpec, build_model


def test_learn_is_parsed_once_into_the_canonical_vocabulary():
    assert ModelSpec('resnet10t', learn='chans').learn == 'channels'
    assert ModelSpec('resnet10t', learn='space').learn == 'spatial'
    with pytest.raises(UsageError, match='unknown learn mode'):
        ModelSpec('resnet10t', learn='everything')


def test_to_dict_round_trips_and_refuses_a_newer_version():
    spec = ModelSpec('resnet10t', {'drop_rate': 0.0}, in_chans=1, num_classes=3, separate=True, learn='chans',
                     depth_multiplier=4, spatial_init='box', smooth_sigma=0.5)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(UsageError, match='newer timm-frozenmix'):
        ModelSpec.from_dict({**spec.to_dict(), 'version': 99})
    with pytest.raises(UsageError, match='newer timm-frozenmix'):
        ModelSpec.from_dict({**spec.to_dict(), 'kernel_budget': 3})


def test_build_model_rebuilds_the_same_structure_and_freezing():
    spec = ModelSpec('resnet10t', in_chans=1, num_classes=3, separate=True, learn='chans', depth_multiplier=4)
    torch.manual_seed(0)
    first = build_model(spec)
    second = build_model(ModelSpec.from_dict(spec.to_dict()))
    second.load_state_dict(first.state_dict())
    assert [(n, p.requires_grad) for n, p in first.named_parameters()] == \
        [(n, p.requires_grad) for n, p in second.named_parameters()]
    x = torch.rand(2, 1, 32, 32)
    first.eval(), second.eval()
    with torch.no_grad():
        assert torch.equal(first(x), second(x))


def test_an_open_spec_is_filled_from_the_data():
    spec = ModelSpec('convmixer_128_4_ks5_p2_chans', task='unshuffle')
    with pytest.raises(UsageError, match='with_data'):
        build_model(spec)
    assert spec.with_data(in_chans=1, num_classes=10).num_classes == 0  # an un-shuffling backbone has no classes


def test_depth_multiplier_reaches_a_registered_separable_resnet():
    model = build_model(ModelSpec('sep_resnet20_cifar_chans', {'width': 1}, in_chans=1, num_classes=10,
                                  depth_multiplier=4))
    layers = [m for m in model.modules() if isinstance(m, SeparableConv2d)]
    assert layers and all(m.depth_multiplier == 4 for m in layers)


def test_depth_multiplier_is_refused_where_no_layer_takes_it():
    with pytest.raises(UsageError, match='has no separable convolutions that take --depth-multiplier'):
        build_model(ModelSpec('convmixer_128_4_ks5_p2_chans', {'dim': 8, 'depth': 1}, in_chans=1, num_classes=10,
                              depth_multiplier=4))


def test_a_version_1_spec_drops_the_depth_multiplier_it_never_used():
    spec = ModelSpec.from_dict({'version': 1, 'architecture': 'convmixer_128_4_ks5_p2_chans', 'depth_multiplier': 9,
                                'in_chans': 1, 'num_classes': 10})
    assert spec.depth_multiplier is None
    build_model(spec)


def test_a_depth_multiplier_travels_to_the_hub_config_of_a_separable_resnet():
    import inspect
    from timm_frozenmix.models.sep_resnet import SeparableResNetV2
    spec = ModelSpec('sep_resnet20_cifar_chans', {'width': 1}, in_chans=1, num_classes=10, depth_multiplier=4)
    kwargs = spec.registered_kwargs(inspect.signature(SeparableResNetV2.__init__).parameters)
    assert kwargs == {'width': 1, 'in_chans': 1, 'depth_multiplier': 4}


def test_a_keep_function_spec_rebuilds_the_same_layers_without_pretrained_weights():
    """keep_function gives a 7x7 stem d = 49; a checkpoint of such a model rebuilds (no download) with the same."""
    from timm_frozenmix.io.checkpoint import Checkpoint
    from timm_frozenmix.io.loading import model_from_checkpoint
    spec = ModelSpec('resnet18', in_chans=3, num_classes=10, separate=True, keep_function=True)
    model = build_model(spec)
    assert model.conv1.depth_multiplier == 49
    rebuilt = model_from_checkpoint(Checkpoint(spec, model.state_dict()))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), rebuilt.state_dict().values()))


def test_a_keep_function_spec_of_an_earlier_version_rebuilds_with_the_multiplier_it_recorded():
    """Version 1 specs recorded d = 9 for a keep_function conversion; their checkpoints hold a 7x7 stem with d = 9,
    which must rebuild as it was (nothing is solved without pretrained weights)."""
    spec = ModelSpec.from_dict({'version': 1, 'architecture': 'resnet18', 'in_chans': 3, 'num_classes': 10,
                                'separate': True, 'keep_function': True, 'depth_multiplier': 9})
    assert build_model(spec).conv1.depth_multiplier == 9


def test_a_depth_multiplier_the_model_sets_itself_is_refused_in_one_line():
    with pytest.raises(UsageError, match='has no separable convolutions that take --depth-multiplier'):
        build_model(ModelSpec('efficientnet_b0', in_chans=3, num_classes=10, depth_multiplier=2))

import pytest
import timm
import torch

import timm_frozenmix  # noqa: F401
from timm_frozenmix.evaluation.unshuffle import PixelPermutation, psnr
from timm_frozenmix.training.tasks import UnshuffleTask
from timm_frozenmix.models.unshuffle_net import UnshuffleNet


def test_permutation_is_fixed_by_seed_and_invertible():
    x = torch.rand(3, 2, 8, 8)
    perm = PixelPermutation(8, 8, seed=5)
    assert torch.equal(perm(x), PixelPermutation(8, 8, seed=5)(x))
    assert not torch.equal(perm(x), PixelPermutation(8, 8, seed=6)(x))
    assert not torch.equal(perm(x), x)
    assert torch.equal(perm.inverse(perm(x)), x)
    # the same permutation of positions for every image and channel
    flat = perm(x).flatten(2)
    assert torch.equal(flat[0, 0].sort().values, x.flatten(2)[0, 0].sort().values)
    ramp = torch.arange(64.).view(1, 1, 8, 8).expand(3, 2, 8, 8)
    assert all(torch.equal(perm(ramp)[i, c], perm(ramp)[0, 0]) for i in range(3) for c in range(2))


def test_psnr_values():
    target = torch.zeros(2, 1, 4, 4)
    assert psnr(target + 0.1, target).tolist() == pytest.approx([20.0, 20.0], rel=1e-5)
    assert psnr(target, target).min() > 90


@pytest.mark.parametrize('mode', ['full', 'chans', 'space'])
def test_unshuffle_net_reconstructs_image_channels(mode):
    backbone = timm.create_model(f'convmixer_128_4_p1_{mode}', dim=16, depth=1, in_chans=1)
    net = UnshuffleNet(backbone, out_chans=1)
    assert net(torch.rand(2, 1, 12, 12)).shape == (2, 1, 12, 12)
    task = UnshuffleTask(net, PixelPermutation(12, 12, seed=0))
    result = task(torch.rand(2, 1, 12, 12))
    result['loss'].backward()
    assert net.proj.weight.grad is not None
    assert not any(n.startswith('backbone.head') for n, _ in net.named_parameters())


def test_unshuffle_needs_patch_one():
    with pytest.raises(ValueError, match='patch-size-1 ConvMixer'):
        UnshuffleNet(timm.create_model('convmixer_512_7_chans', dim=16, depth=1), out_chans=3)

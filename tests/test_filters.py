import math

import pytest
import torch
import torch.nn as nn

from timm_frozenmix import init_spatial_, smooth_filters, spectral_coverage, spectral_envelope


def depthwise(channels=64, multiplier=9, k=3):
    return nn.Conv2d(channels, channels * multiplier, k, groups=channels, padding='same', bias=False)


def energies(conv):
    return conv.weight.detach().flatten(1).pow(2).sum(1)


def test_random_is_pytorch_default_and_differs_per_channel():
    conv = init_spatial_(depthwise(k=5), 'random')
    bound = 1 / math.sqrt(25)
    assert conv.weight.abs().max() <= bound
    assert conv.weight.abs().max() > 0.9 * bound
    per_channel = conv.weight.reshape(64, 9, 25)
    assert not torch.equal(per_channel[0], per_channel[1])


def test_same_repeats_d_kernels_for_every_input_channel():
    conv = init_spatial_(depthwise(channels=8, multiplier=9), 'same')
    per_channel = conv.weight.reshape(8, 9, 3, 3)
    for c in range(1, 8):
        assert torch.equal(per_channel[c], per_channel[0])
    assert len({tuple(k.flatten().tolist()) for k in per_channel[0]}) == 9


def test_box_is_constant_and_identity_is_a_centred_delta():
    box = init_spatial_(depthwise(k=3), 'box').weight
    assert torch.all(box == box.flatten()[0]) and box.flatten()[0] > 0
    ident = init_spatial_(depthwise(k=5), 'identity').weight
    assert torch.count_nonzero(ident[:, :, 2, 2]) == ident.shape[0]
    assert torch.count_nonzero(ident) == ident.shape[0]


@pytest.mark.parametrize('k', [3, 8])
def test_identity_filters_pass_the_input_through_with_same_padding(k):
    conv = init_spatial_(nn.Conv2d(4, 4, k, groups=4, padding='same', bias=False), 'identity')
    x = torch.randn(1, 4, 12, 12)
    scale = conv.weight.abs().max()
    torch.testing.assert_close(conv(x), x * scale)


@pytest.mark.parametrize('k', [3, 8])
@pytest.mark.parametrize('init', ['same', 'box', 'identity'])
def test_every_init_has_the_expected_energy_of_random(init, k):
    torch.manual_seed(0)
    random_mean = energies(init_spatial_(depthwise(channels=256, k=k), 'random')).mean()
    other = energies(init_spatial_(depthwise(channels=256, k=k), init))
    expected = 1 / 3  # fan_in * (1 / sqrt(fan_in))^2 / 3
    assert random_mean == pytest.approx(expected, rel=0.05)
    assert other.mean() == pytest.approx(expected, rel=0.05 if init == 'same' else 1e-5)


def high_frequency_fraction(filters, size=32):
    spectrum = torch.fft.fft2(filters.detach().reshape(-1, *filters.shape[-2:]), s=(size, size)).abs() ** 2
    f = torch.fft.fftfreq(size).abs()
    high = (f[:, None] > 0.25) | (f[None, :] > 0.25)
    return (spectrum[:, high].sum() / spectrum.sum()).item()


@pytest.mark.parametrize('sigma', [0.5, 1.0, 2.0])
def test_smoothing_keeps_each_norm_and_removes_high_frequencies(sigma):
    conv = init_spatial_(depthwise(k=8), 'random')
    smoothed = smooth_filters(conv.weight, sigma)
    torch.testing.assert_close(smoothed.flatten(1).norm(dim=1), conv.weight.flatten(1).norm(dim=1))
    assert high_frequency_fraction(smoothed) < 0.8 * high_frequency_fraction(conv.weight)


def test_stronger_smoothing_removes_more():
    conv = init_spatial_(depthwise(k=8), 'random')
    fractions = [high_frequency_fraction(smooth_filters(conv.weight, s)) for s in (0.5, 1.0, 2.0)]
    assert fractions[0] > fractions[1] > fractions[2]


def test_init_with_smoothing_applies_both():
    torch.manual_seed(1)
    plain = init_spatial_(depthwise(k=8), 'random').weight.clone()
    torch.manual_seed(1)
    smoothed = init_spatial_(depthwise(k=8), 'random', smooth_sigma=1.0).weight
    torch.testing.assert_close(smoothed, smooth_filters(plain, 1.0))


def test_bad_options():
    with pytest.raises(ValueError, match="unknown spatial_init 'gabor'.*'random'"):
        init_spatial_(depthwise(), 'gabor')
    with pytest.raises(ValueError, match='smooth_sigma must be >= 0.*-1'):
        init_spatial_(depthwise(), 'random', smooth_sigma=-1)


def test_envelope_of_a_delta_is_flat_and_parseval_holds_for_any_filter():
    delta = torch.zeros(1, 1, 5, 5)
    delta[..., 2, 2] = 3.0  # the scale does not matter: filters are compared at unit norm
    envelope = spectral_envelope(delta, size=64)
    assert envelope.shape == (64, 64)
    assert torch.allclose(envelope, torch.ones(64, 64), atol=1e-6)
    assert spectral_coverage(envelope) == 1.0
    one_filter = torch.randn(1, 1, 7, 7)
    assert spectral_envelope(one_filter, size=128).pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)


def test_envelope_puts_zero_frequency_at_the_centre():
    box = init_spatial_(depthwise(channels=1, multiplier=1, k=5), 'box').weight
    envelope = spectral_envelope(box, size=64)
    assert envelope.argmax().item() == 32 * 64 + 32
    assert envelope[32, 32].item() == pytest.approx(5.0, rel=1e-5)  # a unit-norm 5x5 box passes DC with gain 5


def test_coverage_grows_with_random_filters_and_shrinks_with_structure_or_smoothing():
    torch.manual_seed(0)
    bank = torch.rand(64, 1, 8, 8) * 2 - 1
    coverage = [spectral_coverage(spectral_envelope(bank[:n], size=64)) for n in (1, 2, 4, 8, 64)]
    assert coverage == sorted(coverage) and coverage[0] < 0.6 and coverage[-1] == 1.0
    random = spectral_coverage(spectral_envelope(init_spatial_(depthwise(16, k=8), 'random').weight, size=64))
    box = spectral_coverage(spectral_envelope(init_spatial_(depthwise(16, k=8), 'box').weight, size=64))
    smoothed = spectral_coverage(spectral_envelope(init_spatial_(depthwise(16, k=8), 'random', 2.0).weight, size=64))
    assert box < smoothed < random


def test_spectral_arguments_are_checked():
    with pytest.raises(ValueError, match='at least the filter size'):
        spectral_envelope(torch.randn(2, 1, 9, 9), size=8)
    with pytest.raises(ValueError, match='threshold must be > 0'):
        spectral_coverage(torch.ones(4, 4), threshold=0)

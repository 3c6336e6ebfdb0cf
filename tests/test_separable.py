import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file
from timm.layers import create_conv2d

from timm_frozenmix import SeparableConv2d
from timm_frozenmix.io.checkpoint import save_safetensors
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.layers import tuning
from timm_frozenmix.layers.executions import EXECUTIONS
from timm_frozenmix.layers.tuning import candidate_executions, tune_executions

CONVS = {
    'int_padding': lambda: nn.Conv2d(6, 10, 3, padding=1),
    'tuple_padding_stride': lambda: nn.Conv2d(6, 10, (3, 5), stride=2, padding=(1, 2)),
    'same_odd': lambda: nn.Conv2d(6, 10, 5, padding='same'),
    'same_even': lambda: nn.Conv2d(6, 10, 8, padding='same', bias=False),
    'valid': lambda: nn.Conv2d(6, 10, 3, padding='valid'),
    'dilated': lambda: nn.Conv2d(6, 10, 3, padding=2, dilation=2),
    'grouped': lambda: nn.Conv2d(6, 12, 3, padding=1, groups=3),
    'reflect': lambda: nn.Conv2d(6, 10, 3, padding=1, padding_mode='reflect'),
    'circular_stride': lambda: nn.Conv2d(6, 10, 3, stride=2, padding=1, padding_mode='circular'),
    'timm_same_dynamic': lambda: create_conv2d(6, 10, 3, stride=2, padding='same'),
    'timm_symmetric': lambda: create_conv2d(6, 10, 7, stride=2),
}


@pytest.mark.parametrize('name', CONVS)
@pytest.mark.parametrize('size', [(15, 15), (16, 21)])
def test_output_shape_matches_original_conv(name, size):
    conv = CONVS[name]()
    sep = SeparableConv2d.from_conv(conv, depth_multiplier=4)
    x = torch.randn(2, 6, *size)
    assert sep(x).shape == conv(x).shape


@pytest.mark.parametrize('name', CONVS)
@pytest.mark.parametrize('execution', EXECUTIONS)
def test_fuse_computes_the_same_function(name, execution):
    sep = SeparableConv2d.from_conv(CONVS[name](), depth_multiplier=3)
    sep.execution = execution if sep.groups == 1 or execution != 'im2col' else 'unfused'
    dense = sep.fuse()
    assert isinstance(dense, nn.Conv2d)
    x = torch.randn(2, 6, 17, 19)
    torch.testing.assert_close(dense(x), sep(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('learn', ['full', 'channels', 'spatial'])
@pytest.mark.parametrize('name', ['int_padding', 'tuple_padding_stride', 'dilated', 'grouped', 'reflect',
                                  'timm_same_dynamic', 'same_even'])
def test_every_execution_agrees_in_forward_and_gradients(learn, name):
    sep = SeparableConv2d.from_conv(CONVS[name](), depth_multiplier=9, learn=learn)
    x = torch.randn(2, 6, 13, 13, requires_grad=True)
    results = {}
    for execution in EXECUTIONS if sep.groups == 1 else ('fused', 'unfused'):
        sep.zero_grad(set_to_none=True)
        x.grad = None
        out = sep.execute(execution, x)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        grads = {n: p.grad.clone() for n, p in sep.named_parameters() if p.requires_grad}
        assert all(sep.get_parameter(n).grad.stride() == sep.get_parameter(n).stride() for n in grads)
        results[execution] = (out.detach(), x.grad.clone(), grads)
    out_f, gx_f, g_f = results.pop('fused')
    assert g_f
    for out, gx, g in results.values():
        torch.testing.assert_close(out, out_f, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(gx, gx_f, atol=1e-5, rtol=1e-4)
        assert g.keys() == g_f.keys()
        for key in g_f:
            torch.testing.assert_close(g[key], g_f[key], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('batch, size', [(2, 5), (8, 2)])  # columns: unfolded patches, then the pixels themselves
def test_im2col_keeps_the_input_memory_format(batch, size):
    sep = SeparableConv2d.from_conv(nn.Conv2d(6, 10, 3, padding=1))
    x = torch.randn(batch, 6, size, size)
    out = sep.execute('im2col', x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert sep.execute('im2col', x).is_contiguous()
    torch.testing.assert_close(out, sep.execute('fused', x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('learn', ['full', 'channels', 'spatial'])
def test_im2col_on_tiny_maps_unfolds_nothing_and_keeps_the_depthwise_product_only_for_the_pointwise_gradient(learn):
    sep = SeparableConv2d.from_conv(nn.Conv2d(6, 10, 3, padding=1), depth_multiplier=9, learn=learn)
    x = torch.randn(8, 6, 2, 2, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t), \
            torch.profiler.profile(record_shapes=True) as prof:
        out = sep.execute('im2col', x)
        out.sum().backward()
    assert 'aten::col2im' not in {event.name for event in prof.events()}  # no fold back in the backward
    unfolded = [event.input_shapes[0] for event in prof.events() if event.name == 'aten::im2col']
    assert unfolded == [[4, 1, 2, 2]]  # only the 4 one-hot images of the tap selection, never the input
    z_shape = (6 * 9, 2 * 2 * 8)  # (in * d, L * N)
    assert (z_shape in saved) == (learn != 'spatial')
    assert (6, 9, 2 * 2 * 8) not in saved  # where the bank learns, the columns kept are the pixels, not patches


@pytest.mark.parametrize('learn', ['full', 'channels', 'spatial'])
@pytest.mark.parametrize('size, stride', [((2, 2), 1), ((4, 4), 2), ((3, 3), 1), ((1, 1), 1)])
def test_im2col_on_tiny_maps_agrees_with_fused_in_forward_and_gradients(learn, size, stride):
    sep = SeparableConv2d.from_conv(nn.Conv2d(6, 10, 3, stride=stride, padding=1), depth_multiplier=9, learn=learn)
    x = torch.randn(16, 6, *size, requires_grad=True)
    results = []
    for execution in ('fused', 'im2col'):
        sep.zero_grad(set_to_none=True)
        x.grad = None
        out = sep.execute(execution, x)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        results.append([out.detach(), x.grad] + [p.grad for p in sep.parameters() if p.requires_grad])
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('learn', ['full', 'channels'])
@pytest.mark.parametrize('batch, size', [(1, 5), (4, 2)])  # columns: unfolded patches, then the pixels themselves
def test_im2col_supports_double_backward(learn, batch, size):
    sep = SeparableConv2d.from_conv(nn.Conv2d(3, 4, 3, padding=1), depth_multiplier=2, learn=learn).double()
    x = torch.randn(batch, 3, size, size, dtype=torch.float64, requires_grad=True)
    inputs = (x,) + tuple(p for p in sep.parameters() if p.requires_grad)
    assert torch.autograd.gradgradcheck(lambda x, *_: sep.execute('im2col', x), inputs)


def test_fused_supports_double_backward():
    sep = SeparableConv2d.from_conv(nn.Conv2d(3, 4, 3, padding=1), depth_multiplier=2, learn='full').double()
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    inputs = (x, sep.depthwise.weight, sep.pointwise.weight, sep.pointwise.bias)
    assert torch.autograd.gradgradcheck(lambda x, *_: sep.execute('fused', x), inputs)


@pytest.mark.parametrize('execution, batch, size', [('fused', 2, 6), ('im2col', 2, 6), ('im2col', 16, 2)])
def test_under_autocast_an_execution_computes_in_the_autocast_dtype(execution, batch, size):
    sep = SeparableConv2d.from_conv(nn.Conv2d(8, 8, 3, padding=1))
    sep.execution = execution
    x = torch.randn(batch, 8, size, size)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = sep(x)
        out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and sep.pointwise.weight.grad.dtype == torch.float32
    torch.testing.assert_close(out.float(), sep.execute('unfused', x), rtol=0.05, atol=0.05)


def test_every_execution_runs_on_the_meta_device():
    """Shape-only runs (FLOP counters, memory planners) time and run the layer without data."""
    sep = SeparableConv2d.from_conv(nn.Conv2d(8, 8, 3, padding=1), learn='full').to('meta')
    x = torch.empty(2, 8, 2, 2, device='meta', requires_grad=True)
    for execution in EXECUTIONS:
        out = sep.execute(execution, x)
        out.sum().backward()
        assert out.shape == (2, 8, 2, 2) and x.grad.shape == x.shape
    assert sep(x).device.type == 'meta'


def test_pointwise_weight_is_contiguous_and_round_trips_through_safetensors(tmp_path):
    """safetensors (and timm's save_for_hf on it) refuse non-contiguous tensors."""
    sep = SeparableConv2d.from_conv(nn.Conv2d(6, 10, 3, padding=1))
    assert sep.pointwise.weight.shape == (10, 54, 1, 1)
    assert all(tensor.is_contiguous() for tensor in sep.state_dict().values())
    save_safetensors(sep.state_dict(), tmp_path / 'model.safetensors')
    reloaded = SeparableConv2d.from_conv(nn.Conv2d(6, 10, 3, padding=1))
    reloaded.load_state_dict(load_file(str(tmp_path / 'model.safetensors')))
    torch.testing.assert_close(reloaded.state_dict(), sep.state_dict(), rtol=0, atol=0)


def test_cost_model_fuses_wide_multipliers_on_large_feature_maps_only():
    wide = SeparableConv2d(64, 64, 3, padding=1, depth_multiplier=9)
    narrow = SeparableConv2d(64, 64, 3, padding=1, depth_multiplier=1)
    feature_map, small = torch.empty(32, 64, 32, 32), torch.empty(1, 64, 3, 3)
    assert wide.auto_execution(feature_map) == 'fused' and narrow.auto_execution(feature_map) == 'unfused'
    assert wide.auto_execution(small) == 'unfused'  # composing the weight would cost more than the wider activation


def test_cost_model_takes_im2col_on_tiny_cpu_maps_of_one_group_only():
    layer = SeparableConv2d(64, 64, 3, padding=1)
    tiny = torch.empty(32, 64, 2, 2)
    assert layer.auto_execution(tiny) == 'im2col'
    assert layer.auto_execution(tiny.to('meta')) != 'im2col'  # measured on the CPU only
    assert layer.auto_execution(tiny, im2col_allowed=False) != 'im2col'
    assert SeparableConv2d(64, 64, 3, padding=1, groups=2).auto_execution(tiny) != 'im2col'
    assert layer.auto_execution(torch.empty(32, 64, 4, 4)) == 'fused'
    assert layer.auto_execution(torch.empty(512, 64, 2, 2)) != 'im2col'  # its unfolded input would dwarf the weight


def count_paths(monkeypatch, layer):
    """Which execution each forward of `layer` takes."""
    taken = []
    monkeypatch.setattr(layer, 'execute', lambda execution, x: taken.append(execution) or SeparableConv2d.execute(
        layer, execution, x))
    return taken


def test_auto_never_times_and_is_the_same_for_the_same_shape(monkeypatch):
    monkeypatch.setattr(tuning, 'execution_seconds', lambda *a: pytest.fail('auto must not time anything'))
    layer = SeparableConv2d(64, 64, 3, padding=1)
    taken = count_paths(monkeypatch, layer)
    for batch in (32, 32, 3, 32):
        layer(torch.randn(batch, 64, 2, 2)).sum().backward()
    assert taken == ['im2col', 'im2col', 'im2col', 'im2col'] and layer.execution == 'auto'
    with torch.autocast('cpu', dtype=torch.bfloat16):
        layer(torch.randn(32, 64, 2, 2))
    assert taken[-1] != 'im2col'  # its advantage was measured in float32
    traced = torch.jit.trace(layer, torch.randn(1, 64, 8, 8), check_trace=False)
    assert traced(torch.randn(1, 64, 8, 8)).shape == (1, 64, 8, 8)


@pytest.mark.parametrize('execution', EXECUTIONS)
def test_a_forced_execution_is_taken_at_every_shape(monkeypatch, execution):
    layer = SeparableConv2d(8, 8, 3, padding=1, execution=execution)
    taken = count_paths(monkeypatch, layer)
    layer(torch.randn(2, 8, 2, 2))
    layer(torch.randn(4, 8, 32, 32))
    assert taken == [execution, execution]


def test_bad_execution_settings_are_refused_in_one_line():
    with pytest.raises(UsageError, match="execution 'fastest': choose one of auto, fused, unfused, im2col"):
        SeparableConv2d(8, 8, 3, execution='fastest')
    with pytest.raises(UsageError, match='needs groups=1'):
        SeparableConv2d(8, 8, 3, groups=2, execution='im2col')


class RecordedTimings:
    """Stands in for tuning.execution_seconds: fixed seconds per execution, and a record of the timings."""

    def __init__(self, monkeypatch, **seconds):
        self.seconds, self.calls = seconds, []
        monkeypatch.setattr(tuning, 'execution_seconds', self.time)

    def time(self, layer, execution, x, train):
        self.calls.append((execution, tuple(x.shape), train))
        return self.seconds[execution]


@pytest.mark.parametrize('winner', EXECUTIONS)
def test_tuning_times_each_layer_once_and_fixes_the_fastest(monkeypatch, winner):
    timings = RecordedTimings(monkeypatch, **{e: 1.0 if e == winner else 2.0 for e in EXECUTIONS})
    model = nn.Sequential(SeparableConv2d(8, 8, 5, padding=2), nn.BatchNorm2d(8), SeparableConv2d(8, 8, 5, padding=2))
    model.train()
    chosen = tune_executions(model, torch.randn(2, 8, 2, 2))  # d = 9 < 25, a tiny map: all three are timed
    assert chosen == {'0': winner, '2': winner} and model[0].execution == winner and model[2].execution == winner
    assert timings.calls == [(e, (2, 8, 2, 2), True) for e in EXECUTIONS] * 2
    assert model.training and model[1].num_batches_tracked == 0  # the probing forward ran in eval mode
    taken = count_paths(monkeypatch, model[0])
    model(torch.randn(3, 8, 9, 9))  # another shape: the fixed choice, no new timing
    assert taken == [winner] and len(timings.calls) == 6


def test_executions_whose_extra_tensor_dwarfs_the_weight_are_not_timed():
    layer = SeparableConv2d(8, 8, 3, padding=1)
    large = torch.randn(4, 8, 16, 16)  # the 9x wider activation and the unfolded input are 128 composed weights
    assert candidate_executions(layer, large) == ('fused',)
    tiny = torch.randn(1, 8, 2, 2)
    assert candidate_executions(layer, tiny.to('meta')) == EXECUTIONS  # off the CPU, all three are timed
    narrow = SeparableConv2d(8, 8, 5, padding=2)  # d = 9 < 25: unfused's activation is the narrower one
    assert candidate_executions(narrow, tiny) == EXECUTIONS
    grouped = SeparableConv2d(8, 8, 3, padding=1, groups=2)
    assert candidate_executions(grouped, torch.randn(1, 8, 2, 2)) == ('fused', 'unfused')  # im2col: one group
    assert candidate_executions(layer, tiny) == ('fused', 'im2col')  # on the CPU im2col stands in for unfused
    wide = SeparableConv2d(8, 8, 1, depth_multiplier=16)  # its patches are small, its 16x wider Z is not
    assert candidate_executions(wide, torch.randn(1, 8, 2, 2)) == ('fused',)


def test_every_rank_fixes_the_choice_on_the_timings_of_all_ranks(monkeypatch):
    RecordedTimings(monkeypatch, fused=1.0, unfused=2.0, im2col=3.0)  # this rank alone would fuse
    reduced = []

    def all_reduce(tensor):  # the other rank measured fused 5 s, unfused 1 s, im2col 1 s: together unfused wins
        reduced.append(tensor.clone())
        tensor += torch.tensor([[5.0, 1.0, 1.0]], dtype=tensor.dtype)
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: True)
    monkeypatch.setattr(torch.distributed, 'get_backend', lambda: 'gloo')
    monkeypatch.setattr(torch.distributed, 'all_reduce', all_reduce)
    layer = SeparableConv2d(8, 8, 5, padding=2)
    assert tune_executions(layer, torch.randn(2, 8, 2, 2)) == {'': 'unfused'}
    assert [t.tolist() for t in reduced] == [[[1.0, 2.0, 3.0]]]


def test_real_tuning_leaves_gradients_alone_and_picks_a_candidate():
    layer = SeparableConv2d(8, 8, 3, padding=1)
    x = torch.randn(2, 8, 6, 6)
    (chosen,) = tune_executions(layer, x).values()
    assert chosen in candidate_executions(layer, x)
    assert all(p.grad is None for p in layer.parameters())


def test_state_dict_keys():
    sep = SeparableConv2d.from_conv(nn.Conv2d(4, 8, 3, padding=1))
    assert set(sep.state_dict()) == {'depthwise.weight', 'pointwise.weight', 'pointwise.bias'}
    no_bias = SeparableConv2d.from_conv(nn.Conv2d(4, 8, 3, bias=False))
    assert set(no_bias.state_dict()) == {'depthwise.weight', 'pointwise.weight'}


@pytest.mark.parametrize('c_in,c_out,k,d', [(16, 32, 3, 9), (3, 64, 7, 9), (8, 8, 5, 2)])
def test_parameter_counts_are_eq2(c_in, c_out, k, d):
    sep = SeparableConv2d.from_conv(nn.Conv2d(c_in, c_out, k, bias=False), depth_multiplier=d)
    assert sep.depthwise.weight.numel() == c_in * k ** 2 * d
    assert sep.pointwise.weight.numel() == c_in * d * c_out
    assert sum(p.numel() for p in sep.parameters()) == c_in * k ** 2 * d + c_in * d * c_out


def test_pointwise_matches_dense_count_when_d_is_k_squared():
    dense = nn.Conv2d(32, 48, 3, bias=False)
    sep = SeparableConv2d.from_conv(dense, depth_multiplier=9)
    assert sep.pointwise.weight.numel() == dense.weight.numel()


@pytest.mark.parametrize('learn,depthwise_learned,pointwise_learned', [
    ('full', True, True), ('channels', False, True), ('chans', False, True),
    ('spatial', True, False), ('space', True, False)])
def test_from_conv_freezes_per_learn(learn, depthwise_learned, pointwise_learned):
    sep = SeparableConv2d.from_conv(nn.Conv2d(4, 8, 3), learn=learn)
    assert sep.depthwise.weight.requires_grad == depthwise_learned
    assert sep.pointwise.weight.requires_grad == pointwise_learned
    assert sep.pointwise.bias.requires_grad == pointwise_learned


def test_bad_depth_multiplier():
    with pytest.raises(ValueError, match='depth_multiplier'):
        SeparableConv2d.from_conv(nn.Conv2d(4, 8, 3), depth_multiplier=0)


def test_frozen_depthwise_gets_no_weight_gradient():
    sep = SeparableConv2d.from_conv(nn.Conv2d(8, 8, 3, padding=1), learn='channels')
    sep.execution = 'unfused'
    sep(torch.randn(2, 8, 6, 6)).sum().backward()
    assert sep.depthwise.weight.grad is None and sep.pointwise.weight.grad is not None


@pytest.mark.slow
def test_uneven_batches_and_rank_local_forwards_under_torchrun(tmp_path):
    """No collective inside forward: uneven last batches and a rank-0-only forward neither hang nor abort."""
    worker = Path(__file__).resolve().parent / 'ddp_layers_worker.py'
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                             str(worker), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob('*.done')) == ['rank0.done', 'rank1.done']


def test_timms_model_ema_tracks_every_learned_weight_of_a_separable_layer():
    """ModelEmaV3 updates the EMA through state_dict() tensors in place: a state dict that handed out copies (to
    make a weight contiguous, say) would leave that weight's EMA at its init."""
    from timm.utils import ModelEmaV3
    torch.manual_seed(0)
    model = nn.Sequential(SeparableConv2d(4, 8, 3, padding=1))
    ema = ModelEmaV3(model, decay=0.5)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, step=100)
    after = ema.module.state_dict()
    assert all(not torch.equal(after[k], before[k]) for k in before), 'an EMA weight did not move'

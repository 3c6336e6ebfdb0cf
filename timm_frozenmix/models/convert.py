""" Turn any torch / timm model into one that learns only some of its mixing

`separate` replaces every convolution with a kernel larger than 1x1 by a `SeparableConv2d`, `freeze` freezes
the parameters whose role the chosen `learn` mode keeps at init, `summarize` counts parameters per role.

Roles: *spatial* = depthwise convolutions (groups == in_channels, kernel > 1) and the patch-projection stem
of a ConvMixer; *channel* = pointwise 1x1 convolutions; *other* = everything else (norms, the classifier),
which is always learned. A frozen convolution is frozen whole, weight and bias.
"""
import logging
import warnings
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.nn as nn
from timm.layers import Conv2dSame
from timm.models.convmixer import ConvMixer

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.layers.filters import check_spatial_options, condition_random_banks_, init_spatial_, smooth_filters
from timm_frozenmix.core.learn import ROLES, is_learned, resolve_learn
from timm_frozenmix.core.parsing import check_depth_multiplier
from timm_frozenmix.layers.separable import SeparableConv2d, is_depthwise

_logger = logging.getLogger(__name__)

RESIDUAL_WARNING = 1e-3  # relative residual of a keep_function factorization worth a warning

__all__ = [
    'conv_roles', 'parameter_roles', 'init_depthwise_', 'freeze', 'separate', 'summarize',
    'format_summary', 'learn_mode',
]


def _classifier_modules(model: nn.Module) -> set:
    get_classifier = getattr(model, 'get_classifier', None)
    classifier = get_classifier() if callable(get_classifier) else None
    return set(classifier.modules()) if isinstance(classifier, nn.Module) else set()


def conv_roles(model: nn.Module) -> Iterator[Tuple[str, nn.Conv2d, str]]:
    """Yield (name, conv, role) for every plain conv of the model that has a spatial or channel role."""
    classifier = _classifier_modules(model)
    stem = model.stem[0] if isinstance(model, ConvMixer) else None
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d) or module in classifier:
            continue
        if module is stem:
            yield name, module, 'spatial'
        elif module.kernel_size == (1, 1):
            yield name, module, 'channel'
        elif is_depthwise(module):
            yield name, module, 'spatial'


def parameter_roles(model: nn.Module) -> Dict[str, str]:
    """Role of every parameter, by name."""
    roles = {name: 'other' for name, _ in model.named_parameters()}
    for conv_name, conv, role in conv_roles(model):
        for param_name, _ in conv.named_parameters():
            roles[f'{conv_name}.{param_name}' if conv_name else param_name] = role
    return roles


def init_depthwise_(model: nn.Module, spatial_init: str = 'random', smooth_sigma: float = 0.0) -> nn.Module:
    """Re-init a model's existing depthwise filters with `spatial_init`, then smooth them if asked.

    `random` keeps the filters that are there (pretrained ones too); smoothing low-passes whatever is there,
    so the same seed gives the same filters, smoothed.
    """
    check_spatial_options(spatial_init, smooth_sigma)
    for _, conv, role in conv_roles(model):
        if role != 'spatial' or not is_depthwise(conv):
            continue
        if spatial_init != 'random':
            init_spatial_(conv, spatial_init, smooth_sigma)
        elif smooth_sigma > 0:
            with torch.no_grad():
                conv.weight.copy_(smooth_filters(conv.weight, smooth_sigma))
    return model


def freeze(model: nn.Module, learn: str = 'channels') -> nn.Module:
    """Set requires_grad of every spatial and channel conv per `learn`, whole convs; others untouched."""
    mode = resolve_learn(learn)
    for _, conv, role in conv_roles(model):
        conv.requires_grad_(is_learned(role, mode))
    return model


def separate(
        model: nn.Module,
        depth_multiplier: Optional[int] = None,
        learn: str = 'channels',
        spatial_init: str = 'random',
        smooth_sigma: float = 0.0,
        keep_function: bool = False,
        approximate: bool = False,
        factorize: bool = True,
) -> nn.Module:
    """Make every conv with a kernel larger than 1x1 separable, in place, then freeze per `learn`.

    Already-depthwise and 1x1 convs stay as they are (they already mix only space or only channels); the
    filters of already-depthwise convs are kept (pretrained ones included) unless a non-default
    `spatial_init` or a smoothing is asked for. The classifier is never converted.

    `depth_multiplier` (d, depthwise filters per input channel): None gives every layer the paper's 9, or with
    `keep_function` the least d that keeps its function exactly, max(9, kernel height x width).

    `keep_function=True` keeps what the model computes: each new layer's pointwise weights are solved from the
    dense kernel it replaces (`SeparableConv2d.factorize_`), so a pretrained CNN becomes a separable one with the
    same outputs, ready for channels-only fine-tuning. With d >= k^2 and full-rank random banks the factorization
    is exact (Eq. 3 read the other way); random banks above `filters.MAX_CONDITION` are redrawn first so rounding
    stays small. An explicit d below some layer's k^2 cannot be exact there: it raises UsageError, unless
    `approximate=True` accepts least-squares fits, whose layers above `RESIDUAL_WARNING` relative residual a
    warning names. Each layer's residual is logged. `factorize=False` builds the layers keep_function would
    (their depth multipliers) without solving their weights, to load a checkpoint of such a model into.
    Raises UsageError on bad options.
    """
    learn = resolve_learn(learn)
    check_spatial_options(spatial_init, smooth_sigma)
    if depth_multiplier is not None:
        check_depth_multiplier(depth_multiplier)
    if approximate and not keep_function:
        raise UsageError('approximate=True accepts inexact keep_function fits: it needs keep_function=True')

    classifier = _classifier_modules(model)
    to_convert = [
        name for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m not in classifier and m.kernel_size != (1, 1) and not is_depthwise(m)
    ]
    if not to_convert:
        raise UsageError(
            f'{type(model).__name__} has no dense convolution with a kernel larger than 1x1 to separate; '
            f'for a natively separable model use freeze(model, learn=...)')
    multipliers = {name: layer_depth_multiplier(model.get_submodule(name), depth_multiplier, keep_function)
                   for name in to_convert}
    solve = keep_function and factorize
    if solve:
        check_keeps_function(model, to_convert, spatial_init, smooth_sigma)
        if not approximate:
            check_exact(model, multipliers)
    init_depthwise_(model, spatial_init, smooth_sigma)
    residuals = {}
    for name in to_convert:
        parent_name, _, child_name = name.rpartition('.')
        parent = model.get_submodule(parent_name)
        conv = getattr(parent, child_name)
        sep = SeparableConv2d.from_conv(
            conv, depth_multiplier=multipliers[name], learn=learn, spatial_init=spatial_init,
            smooth_sigma=smooth_sigma)
        if solve:
            if spatial_init == 'random' and not smooth_sigma:
                condition_random_banks_(sep.depthwise)
            residuals[name] = sep.factorize_(conv.weight, conv.bias)
        setattr(parent, child_name, sep)
    if solve:
        report_residuals(residuals)
    return freeze(model, learn)


def layer_depth_multiplier(conv: nn.Conv2d, depth_multiplier: Optional[int], keep_function: bool) -> int:
    """The d a converted conv gets: the one asked for, else 9 (the paper's), raised to k_h * k_w where the
    layer must keep its function (the least d whose factorization is exact)."""
    if depth_multiplier is not None:
        return depth_multiplier
    kh, kw = conv.kernel_size
    return max(9, kh * kw) if keep_function else 9


def check_exact(model: nn.Module, multipliers: Dict[str, int]) -> None:
    """UsageError naming the first layer whose d is below its k_h * k_w: keep_function could not be exact there."""
    for name, d in multipliers.items():
        kh, kw = model.get_submodule(name).kernel_size
        if d < kh * kw:
            raise UsageError(
                f'keep_function cannot keep the function of {name} with depth_multiplier={d}: its {kh}x{kw} kernel '
                f'needs {kh * kw}. Leave depth_multiplier unset (each layer then gets one large enough), or pass '
                f'approximate=True to accept least-squares fits')


def check_keeps_function(model: nn.Module, names, spatial_init: str, smooth_sigma: float) -> None:
    """UsageError where keep_function could not keep the function: re-initialized or smoothed depthwise filters
    (they belong to the pretrained function too), or a conv whose forward changes its weight (timm's StdConv2d
    standardizes it), so the stored kernel is not the one applied."""
    if spatial_init != 'random' or smooth_sigma:
        raise UsageError('keep_function keeps a pretrained model\'s function: leave spatial_init and smooth_sigma at '
                         'their defaults (random, 0), which keep its existing depthwise filters')
    plain = (nn.Conv2d.forward, Conv2dSame.forward)
    custom = [name for name in names if type(model.get_submodule(name)).forward not in plain]
    if custom:
        raise UsageError(f'keep_function cannot factorize {", ".join(custom)}: '
                         f'{type(model.get_submodule(custom[0])).__name__} transforms its weight in forward, so the '
                         f'stored kernel is not the one it applies')


def report_residuals(residuals: Dict[str, float]) -> None:
    """Log every layer's relative factorization residual; warn about those above RESIDUAL_WARNING."""
    for name, residual in residuals.items():
        _logger.info(f'keep_function: {name} relative residual {residual:.2e}')
    inexact = {name: r for name, r in residuals.items() if r > RESIDUAL_WARNING}
    if inexact:
        warnings.warn(
            f'keep_function: {len(inexact)} layer(s) are least-squares fits, not exact: '
            + ', '.join(f'{name} ({r:.1e})' for name, r in inexact.items())
            + ' (relative residual; exact needs depth_multiplier >= kernel height x width and random filters)',
            stacklevel=3)


def summarize(model: nn.Module, print_table: bool = True) -> Dict[str, Dict[str, int]]:
    """Trainable and frozen parameter counts per role (plus a total), optionally printed as a table."""
    counts = {role: {'trainable': 0, 'frozen': 0} for role in ROLES + ('total',)}
    roles = parameter_roles(model)
    for name, param in model.named_parameters():
        state = 'trainable' if param.requires_grad else 'frozen'
        counts[roles[name]][state] += param.numel()
        counts['total'][state] += param.numel()
    if print_table:
        print(format_summary(counts))
    return counts


def learn_mode(model: nn.Module) -> Optional[str]:
    """The learn mode the model's parameters are actually in ('full', 'channels', 'spatial'), from what is frozen.

    None when the frozen set matches no mode (e.g. a hand-picked freeze).
    """
    counts = summarize(model, print_table=False)
    spatial_frozen, channel_frozen = counts['spatial']['frozen'], counts['channel']['frozen']
    if not spatial_frozen and not channel_frozen:
        return 'full'
    if spatial_frozen and not counts['spatial']['trainable'] and not channel_frozen:
        return 'channels'
    if channel_frozen and not counts['channel']['trainable'] and not spatial_frozen:
        return 'spatial'
    return None


def format_summary(counts: Dict[str, Dict[str, int]]) -> str:
    lines = [f'{"role":<8} {"trainable":>14} {"frozen":>14}']
    for role, c in counts.items():
        lines.append(f'{role:<8} {c["trainable"]:>14,} {c["frozen"]:>14,}')
    return '\n'.join(lines)

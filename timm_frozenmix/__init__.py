""" timm-frozenmix: vision models whose spatial mixing is frozen at random init

Importing this package registers its models with timm (`timm.list_models('*_chans')`).
"""
from timm_frozenmix.models.convert import format_summary, freeze, init_depthwise_, parameter_roles, separate, summarize
from timm_frozenmix.layers.filters import SPATIAL_INITS, init_spatial_, smooth_filters, spectral_coverage, spectral_envelope
from timm_frozenmix.core.learn import LEARN_MODES, resolve_learn
from timm_frozenmix.models import FrozenMixConvMixer, SeparableResNetV2
from timm_frozenmix.layers.separable import SeparableConv2d
from timm_frozenmix.layers.tuning import tune_executions

__version__ = '0.4.8'  # the one place the version is written (pyproject reads it)

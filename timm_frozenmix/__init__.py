""" timm-frozenmix: vision models whose spatial mixing is frozen at random init

Importing this package registers its models with timm (`timm.list_models('*_chans')`).
"""
from .convert import format_summary, freeze, init_depthwise_, parameter_roles, separate, summarize
from .filters import SPATIAL_INITS, init_spatial_, smooth_filters, spectral_coverage, spectral_envelope
from .learn import LEARN_MODES, resolve_learn
from .models import FrozenMixConvMixer, SeparableResNetV2
from .separable import SeparableConv2d

__version__ = '0.1.0'

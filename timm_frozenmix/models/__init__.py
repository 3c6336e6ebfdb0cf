"""Registry modules: importing them registers every model with timm."""
from timm_frozenmix.models.frozen_convmixer import FrozenMixConvMixer
from timm_frozenmix.models.sep_resnet import SeparableResNetV2, create_separable_conv2d

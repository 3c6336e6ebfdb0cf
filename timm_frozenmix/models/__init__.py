"""Registry modules: importing them registers every model with timm."""
from .frozen_convmixer import FrozenMixConvMixer
from .sep_resnet import SeparableResNetV2, create_separable_conv2d

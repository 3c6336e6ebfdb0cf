""" The weights shipped inside the package: Fashion-MNIST ConvMixers in all three learn modes

`scripts/train_fashion_mnist_weights.py` trains them; their model cards are under `model_cards/`. They load
through timm's pretrained machinery, offline: `timm.create_model('convmixer_128_4_ks5_p2_chans.fashion_mnist',
pretrained=True)`.
"""
from pathlib import Path

ARCHITECTURE = 'convmixer_128_4_ks5_p2'
MODES = ('full', 'chans', 'space')
TAG = 'fashion_mnist'
WEIGHTS_DIR = Path(__file__).resolve().parent / 'weights'


def weights_path(mode: str) -> Path:
    """The safetensors file of `ARCHITECTURE`'s mode (full, chans or space), shipped or not."""
    return WEIGHTS_DIR / f'{ARCHITECTURE}_{mode}.{TAG}.safetensors'

""" The weights shipped inside the package: Fashion-MNIST ConvMixers, each in the learn modes it was trained in

`scripts/train_fashion_mnist_weights.py` trains them; their model cards are under `model_cards/`. They load
through timm's pretrained machinery, offline: `timm.create_model('convmixer_512_7_chans', pretrained=True)`.
"""
from pathlib import Path
from typing import Dict, Tuple

TAG = 'fashion_mnist'
SHIPPED: Dict[str, Tuple[str, ...]] = {
    'convmixer_128_4_ks5_p2': ('full', 'chans', 'space'),  # a small ConvMixer for 28x28 images
    'convmixer_512_7': ('full', 'chans'),  # the paper's ImageNet ConvMixer (Sec. 4), trained on 28x28 images
}
WEIGHTS_DIR = Path(__file__).resolve().parent / 'weights'


def weights_path(architecture: str, mode: str) -> Path:
    """The safetensors file of `architecture`'s mode (full, chans or space), shipped or not."""
    return WEIGHTS_DIR / f'{architecture}_{mode}.{TAG}.safetensors'


def shipped_names() -> Dict[str, Path]:
    """Every tagged model name whose weights file is in the package, with that file."""
    return {f'{architecture}_{mode}.{TAG}': weights_path(architecture, mode)
            for architecture, modes in SHIPPED.items() for mode in modes
            if weights_path(architecture, mode).exists()}

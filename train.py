#!/usr/bin/env python3
"""Train a frozen-mixing (or any timm) model: see `python train.py --help`."""
from timm_frozenmix.cli.train import main

if __name__ == '__main__':
    main()

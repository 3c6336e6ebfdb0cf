#!/usr/bin/env python3
"""Evaluate adversarial robustness of timm models with torchattacks: see `python eval_robust.py --help`."""
from timm_frozenmix.cli.eval_robust import main

if __name__ == '__main__':
    main()

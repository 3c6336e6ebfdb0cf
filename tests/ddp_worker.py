"""Run under torchrun by test_training: trains through the same setup/train as train.py, then dumps each
rank's freshly built and final weights so the test can compare ranks."""
import sys

import torch

from timm_frozenmix.training import build_model, parse_args, setup, train

out_dir, argv = sys.argv[1], sys.argv[2:]
args = parse_args(argv)
run = setup(args)
fresh = build_model(args, in_chans=1, num_classes=10).state_dict()  # what this rank builds before any broadcast
train(run)
torch.save({
    'fresh': fresh,
    'final': {k: v.detach().clone() for k, v in run.model.state_dict().items()},
    'frozen': [n for n, p in run.model.named_parameters() if not p.requires_grad],
    'trainable': [n for n, p in run.model.named_parameters() if p.requires_grad],
}, f'{out_dir}/rank{args.rank}.pt')

"""Run under torchrun by test_training: trains through the same setup/train as train.py, then dumps each
rank's freshly built and final weights so the test can compare ranks."""
import sys

import torch

from timm_frozenmix.cli.train import parse_config
from timm_frozenmix.models.spec import build_model
from timm_frozenmix.training.loop import setup, train

out_dir, argv = sys.argv[1], sys.argv[2:]
config, _, _ = parse_config(argv)
run = setup(config)
torch.manual_seed(config.seed)
fresh = build_model(run.spec).state_dict()  # what this rank builds before any broadcast
train(run)
torch.save({
    'fresh': fresh,
    'final': {k: v.detach().clone() for k, v in run.model.state_dict().items()},
    'frozen': [n for n, p in run.model.named_parameters() if not p.requires_grad],
    'trainable': [n for n, p in run.model.named_parameters() if p.requires_grad],
}, f'{out_dir}/rank{run.rank}.pt')
if run.distributed:  # as train.py ends: gloo's threads are joined before the interpreter exits
    torch.distributed.destroy_process_group()

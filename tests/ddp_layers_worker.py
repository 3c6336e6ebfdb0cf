"""Run under torchrun by test_separable: separable layers in a DDP job whose ranks see different batch sizes,
then a forward on rank 0 alone at a shape no rank has seen, while rank 1 stays out of every collective.

A collective inside forward would leave rank 0 waiting for rank 1: the process group's timeout turns that hang
into an error. Both ranks leave together afterwards (barrier, then destroy), so gloo's teardown never sees a
peer that has gone."""
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from timm_frozenmix import SeparableConv2d, freeze

out = Path(sys.argv[1])
dist.init_process_group('gloo', timeout=timedelta(seconds=60))
rank = dist.get_rank()
torch.manual_seed(0)
# small maps and wide layers: shapes where several executions are candidates, so a timing layer would time
model = freeze(nn.Sequential(SeparableConv2d(32, 32, 3, padding=1), nn.ReLU(), SeparableConv2d(32, 32, 3, padding=1)),
               learn='channels')
ddp = DDP(model)
optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
for batch in ((8, 8), (8, 3)):  # an even step, then an uneven last batch
    ddp(torch.rand(batch[rank], 32, 4, 4)).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()
if rank == 0:
    with torch.no_grad():
        model(torch.rand(1, 32, 5, 5))  # validation on rank 0 only
    (out / 'rank0.validated').write_text('ok')
else:  # rank 1 joins no collective until rank 0's forward has finished
    deadline = time.monotonic() + 120
    while not (out / 'rank0.validated').exists():
        if time.monotonic() > deadline:
            sys.exit('rank 0 never finished its rank-local forward')
        time.sleep(0.1)
(out / f'rank{rank}.done').write_text('ok')
del ddp
dist.barrier()
dist.destroy_process_group()

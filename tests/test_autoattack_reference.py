""" Our standard AutoAttack against the reference implementation (fra31's code, the `pyautoattack` package) """
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from timm_frozenmix.data.datasets import create_dataset
from timm_frozenmix.evaluation.robust import import_torchattacks, make_autoattack

pyautoattack = pytest.importorskip('pyautoattack', reason='the reference AutoAttack is a test dependency')


def images(split: str, count: int):
    """Fashion-MNIST sample images at 14x14 (a small model keeps the 100-iteration attacks affordable)."""
    data = create_dataset('fashion-mnist-sample', split=split)
    x = F.avg_pool2d(torch.from_numpy(data.images[:count]).float().div(255).unsqueeze(1), 2)
    return x, torch.from_numpy(data.labels[:count]).long()


@pytest.mark.slow
def test_standard_autoattack_finds_what_the_reference_finds_on_the_same_images():
    torch.manual_seed(0)
    x_train, y_train = images('train', 6000)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(800):
        batch = torch.randint(0, len(x_train), (64,))
        loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    x, y = images('test', 32)
    eps = 8 / 255
    ours = make_autoattack(import_torchattacks(), model, eps, num_classes=10, seed=0)(x, y)
    reference, _ = pyautoattack.AutoAttack(model, eps=eps, norm='Linf', version='standard', seed=0) \
        .run_standard_evaluation(x, y, batch_size=len(x))
    with torch.no_grad():
        clean, robust_ours, robust_reference = (model(v).argmax(1) == y for v in (x, ours, reference))
    assert (ours - x).abs().max() <= eps + 1e-6
    # the images survive both or neither, and the attack does break some: the comparison can tell them apart
    assert torch.equal(robust_ours, robust_reference)
    assert 0 < robust_ours.sum() < clean.sum()

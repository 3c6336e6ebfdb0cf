"""Files written by timm-frozenmix 0.1.0 (tests/fixtures/v0_1_0, see its README) keep loading unchanged."""
import json
from pathlib import Path

import timm
import torch

from timm_frozenmix.io import hub
from timm_frozenmix.io.checkpoint import Checkpoint
from timm_frozenmix.cli.eval_robust import main as eval_robust_main
from timm_frozenmix.io.loading import load_model
from timm_frozenmix.models.spec import ModelSpec

V010 = Path(__file__).resolve().parent / 'fixtures' / 'v0_1_0'
EXPECTED = torch.load(V010 / 'expected_logits.pt', weights_only=True)


def test_a_v010_checkpoint_gives_its_spec_and_the_same_logits():
    spec = Checkpoint.load(V010 / 'model_best.pth.tar').spec
    assert spec == ModelSpec('convmixer_128_4_ks5_p2_chans', {'dim': 8, 'depth': 1}, in_chans=1, num_classes=10,
                             smooth_sigma=0.5)
    loaded = load_model(checkpoint_path=str(V010 / 'model_best.pth.tar'))
    with torch.no_grad():
        assert torch.equal(loaded.model(EXPECTED['input']), EXPECTED['logits'])
    assert not loaded.model.stem[0].weight.requires_grad and loaded.training['epochs'] == 1


def test_a_v010_hub_export_loads_with_local_dir():
    model = timm.create_model(f'local-dir:{V010 / "export"}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(model(EXPECTED['input']), EXPECTED['logits'])


def test_eval_robust_reads_a_v010_checkpoint(tmp_path):
    eval_robust_main(['-j', '0', '--checkpoint', str(V010 / 'model_best.pth.tar'), '--num-samples', '16',
                      '--attacks', 'fgsm', '--eps', '0,0.1', '--output', str(tmp_path)])
    (result,) = json.loads((tmp_path / 'robust.json').read_text())['models'].values()
    assert result['model'] == 'convmixer_128_4_ks5_p2_chans' and result['learn'] == 'channels'


def test_a_v010_checkpoint_exports_with_its_spec(tmp_path):
    folder = hub.export(V010 / 'model_best.pth.tar', tmp_path / 'export', 'me/old')
    config = json.loads((folder / 'config.json').read_text())
    assert ModelSpec.from_dict(config['model_spec']).smooth_sigma == 0.5
    assert config['model_args'] == {'dim': 8, 'depth': 1, 'in_chans': 1, 'smooth_sigma': 0.5}
    assert 'not recorded by the checkpoint' in (folder / 'README.md').read_text()
    model = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(model(EXPECTED['input']), EXPECTED['logits'])

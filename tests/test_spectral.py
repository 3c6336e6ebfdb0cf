import json

import pytest

from timm_frozenmix.cli.spectral import main
from timm_frozenmix.cli.train import main as train_main


def test_compare_writes_reference_banks_and_growth_curve(tmp_path, capsys):
    main(['--compare', '--size', '64', '--output', str(tmp_path)])
    results = json.loads((tmp_path / 'spectral.json').read_text())
    coverage = results['reference']['coverage']
    assert set(coverage) == {'random', 'same', 'box', 'identity', 'random, sigma 1', 'random, sigma 2'}
    assert coverage['identity'] == 1.0 and coverage['box'] < coverage['random, sigma 2'] < coverage['random']
    growth = results['reference']['coverage_by_filters']
    assert growth['random'] == sorted(growth['random'])
    assert (tmp_path / 'spectral_compare.png').read_bytes()[:4] == b'\x89PNG'
    assert 'box' in capsys.readouterr().out


def test_model_layers_are_listed_with_their_coverage(tmp_path, capsys):
    main(['--model', 'convmixer_128_4_ks5_p2_chans', '--size', '32', '--output', str(tmp_path)])
    results = json.loads((tmp_path / 'spectral.json').read_text())
    names = [layer['layer'] for layer in results['layers']]
    assert names == ['stem.0'] + [f'blocks.{i}.0.fn.0' for i in range(4)]
    assert all(layer['frozen'] for layer in results['layers'])
    assert results['layers'][1]['filters'] == 128 and results['layers'][1]['kernel'] == [5, 5]
    printed = capsys.readouterr().out
    assert 'blocks.3.0.fn.0' in printed
    assert (tmp_path / 'spectral_layers.png').is_file()


def test_bad_input_fails_in_one_line(tmp_path, capsys):
    for argv, match in ((['--model', 'nope'], "unknown model 'nope'"),
                        ([], 'nothing to analyse'),
                        (['--checkpoint', str(tmp_path / 'x.pth.tar')], 'not found'),
                        (['--compare', '--sigmas', 'nan'], '--sigmas must be finite numbers > 0'),
                        (['--compare', '--threshold', 'inf'], '--threshold must be a finite number > 0'),
                        (['--compare', '--size', '100000'], '--size 100000 would take 75 GiB per filter')):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, '--output', str(tmp_path / 'out')])
        assert exit_info.value.code == 2
        assert match in capsys.readouterr().err
        assert not (tmp_path / 'out').exists()


def test_an_unwritable_output_is_refused_before_the_analysis(tmp_path, capsys, monkeypatch):
    analysed = []
    monkeypatch.setattr('timm_frozenmix.cli.spectral.analyse_model', lambda *args: analysed.append(args))
    (tmp_path / 'file').write_text('mine')
    with pytest.raises(SystemExit) as exit_info:
        main(['--model', 'convmixer_128_4_ks5_p2_chans', '--output', str(tmp_path / 'file' / 'out')])
    assert exit_info.value.code == 2 and 'lies under the file' in capsys.readouterr().err
    assert analysed == []


def test_an_unshuffling_checkpoint_is_analysed_too(tmp_path, capsys):
    train_main(['--output', str(tmp_path), '--experiment', 'run', '--task', 'unshuffle', '--model',
                'convmixer_128_4_p1_chans', '--model-kwargs', 'dim=16', 'depth=1',
                '-j', '0', '--epochs', '1', '--log-interval', '1000'])
    main(['--checkpoint', str(tmp_path / 'run' / 'model_best.pth.tar'), '--size', '32', '--output', str(tmp_path / 'out')])
    results = json.loads((tmp_path / 'out' / 'spectral.json').read_text())
    assert [layer['layer'] for layer in results['layers']] == ['backbone.blocks.0.0.fn.0']
    assert results['layers'][0]['frozen']

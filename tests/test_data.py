import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from timm_frozenmix.data.datasets import (
    DEBIAN_FASHION_MNIST, FASHION_MNIST_FILES, SAMPLE, SAMPLE_DIR, Normalized, create_dataset, dataset_info)
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.data.idx import read_idx, write_idx

REPO = Path(__file__).resolve().parents[1]
needs_debian_files = pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / FASHION_MNIST_FILES['train'][0]).is_file(),
    reason='apt-get install dataset-fashion-mnist')


def test_sample_is_stratified_and_licensed():
    train = create_dataset(SAMPLE, split='train')
    test = create_dataset(SAMPLE, split='validation')
    assert len(train) == 6000 and len(test) == 1000
    assert np.bincount(train.labels).tolist() == [600] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    image, label = train[0]
    assert image.size == (28, 28) and image.mode == 'L' and 0 <= label < 10
    assert '2017 Zalando SE' in (SAMPLE_DIR / 'LICENSE').read_text()


def test_sliced_splits_hold_out_disjoint_images():
    whole = create_dataset(SAMPLE, split='train')
    train = create_dataset(SAMPLE, split='train[:5000]')
    held_out = create_dataset(SAMPLE, split='training[5000:]')
    assert len(train) == 5000 and len(held_out) == 1000
    assert np.array_equal(np.concatenate([train.images, held_out.images]), whole.images)
    assert np.array_equal(np.concatenate([train.labels, held_out.labels]), whole.labels)
    assert len(create_dataset(SAMPLE, split='test[-10:]')) == 10


@pytest.mark.parametrize('split, message', [
    ('train[1:2:3]', 'unknown split'), ('dev', 'unknown split'), ('train[a:]', 'unknown split'),
    ('train[7000:]', 'holds no image')])
def test_bad_split_is_one_usage_error(split, message):
    with pytest.raises(UsageError, match=message):
        create_dataset(SAMPLE, split=split)


@needs_debian_files
def test_sample_rebuilds_bit_for_bit(tmp_path):
    subprocess.run([sys.executable, str(REPO / 'scripts' / 'build_fashion_mnist_sample.py'),
                    '--dest', str(tmp_path)], check=True, capture_output=True)
    for split in FASHION_MNIST_FILES.values():
        for name in split:
            assert hashlib.sha256((tmp_path / name).read_bytes()).digest() == \
                hashlib.sha256((SAMPLE_DIR / name).read_bytes()).digest(), name


@needs_debian_files
def test_full_fashion_mnist_from_official_files():
    train = create_dataset('fashion-mnist', root=str(DEBIAN_FASHION_MNIST), split='train')
    test = create_dataset('fashion-mnist', split='test')  # Debian's folder is the default
    assert len(train) == 60000 and len(test) == 10000
    sample = create_dataset(SAMPLE, split='train')
    first_sneaker = int(np.flatnonzero(train.labels == 7)[0])
    assert np.array_equal(train.images[first_sneaker], sample.images[np.flatnonzero(sample.labels == 7)[0]])


def test_idx_roundtrip_and_corrupt_files(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / 'a.gz', array)
    assert np.array_equal(read_idx(tmp_path / 'a.gz'), array)
    (tmp_path / 'bad.gz').write_bytes(b'not gzip at all')
    with pytest.raises(ValueError, match='cannot read idx file'):
        read_idx(tmp_path / 'bad.gz')
    (tmp_path / 'short').write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(ValueError, match='truncated'):
        read_idx(tmp_path / 'short')


def test_missing_fashion_mnist_folder_names_the_fix(tmp_path):
    with pytest.raises(UsageError, match='apt-get install dataset-fashion-mnist'):
        create_dataset('fashion-mnist', root=str(tmp_path / 'nowhere'))


def test_unknown_dataset_and_missing_data_dir():
    with pytest.raises(UsageError, match="needs --data-dir"):  # timm would read it as a folder: it needs one
        create_dataset('cifar-11')
    with pytest.raises(UsageError, match=r"timm cannot make dataset 'torch/cifar11' \(Unknown torchvision"):
        create_dataset('torch/cifar11', root='/tmp')
    with pytest.raises(ValueError, match='needs --data-dir'):
        create_dataset('torch/cifar10')
    with pytest.raises(UsageError, match='does not exist'):
        create_dataset('folder', root='/definitely/not/here')


def test_timm_datasets_pass_through_unchanged(monkeypatch):
    calls = []
    monkeypatch.setattr('timm_frozenmix.data.datasets.timm_create_dataset', lambda name, **kw: calls.append((name, kw)))
    create_dataset('torch/cifar10', root='/data/cifar', split='train', download=True, is_training=True)
    assert calls == [('torch/cifar10', dict(root='/data/cifar', split='train', download=True, is_training=True))]


def test_dataset_info_follows_the_data():
    assert dataset_info(SAMPLE).in_chans == 1 and dataset_info(SAMPLE).input_size == (1, 28, 28)
    assert dataset_info('torch/cifar100').num_classes == 100
    assert dataset_info('folder', input_img_mode='L').in_chans == 1


def test_normalized_applies_mean_and_std_inside():
    net = Normalized(torch.nn.Identity(), mean=(0.5,), std=(0.25,))
    torch.testing.assert_close(net(torch.ones(1, 1, 2, 2)), torch.full((1, 1, 2, 2), 2.0))
    assert not net.state_dict()  # normalization is not part of the weights


def test_hfds_takes_timms_keys_and_class_map_without_a_data_dir(tmp_path, hf_parquet_folder):
    folder = hf_parquet_folder
    (tmp_path / 'classes.txt').write_text('c\nb\na\n')
    dataset = create_dataset(f'hfds/{folder}', split='train', input_key='picture', target_key='kind',
                             class_map=str(tmp_path / 'classes.txt'))
    image, label = dataset[0]
    assert len(dataset) == 24 and image.size == (28, 28)
    assert dataset.reader.class_to_idx == {'c': 0, 'b': 1, 'a': 2}  # the class map's order, not the data's
    with pytest.raises(UsageError, match=r"has no field 'image' \(its fields: picture, kind\): name its image and "
                                         r"label fields with --input-key"):
        create_dataset(f'hfds/{folder}', split='train', target_key='kind')  # timm's default input key
    with pytest.raises(UsageError, match="--class-map, --input-key apply to timm's datasets"):
        create_dataset('fashion-mnist-sample', input_key='x', class_map='m.txt')


def test_train_py_trains_on_an_hfds_folder_with_its_own_field_names(tmp_path, hf_parquet_folder):
    from timm_frozenmix.cli.train import main
    from timm_frozenmix.io.checkpoint import Checkpoint
    folder = hf_parquet_folder
    main(['--dataset', f'hfds/{folder}', '--train-split', 'train[:16]', '--val-split', 'train[16:]',
          '--input-key', 'picture', '--target-key', 'kind', '--input-img-mode', 'L', '--img-size', '28',
          '--model', 'convmixer_128_4_ks5_p2_chans', '--model-kwargs', 'dim=16', 'depth=1', '-b', '8', '-j', '0',
          '--epochs', '1', '--output', str(tmp_path / 'out'), '--experiment', 'hf'])
    checkpoint = Checkpoint.load(tmp_path / 'out' / 'hf' / 'last.pth.tar')
    assert checkpoint.spec.num_classes == 3 and checkpoint.settings['input_key'] == 'picture'


def test_train_py_names_a_missing_hfds_field_in_one_line_and_writes_nothing(tmp_path, hf_parquet_folder, capsys):
    from timm_frozenmix.cli.train import main
    with pytest.raises(SystemExit) as exit_info:
        main(['--dataset', f'hfds/{hf_parquet_folder}', '--train-split', 'train[:16]', '--val-split', 'train[16:]',
              '--input-key', 'picture', '--target-key', 'label', '--input-img-mode', 'L', '--img-size', '28',
              '--model', 'convmixer_128_4_ks5_p2_chans', '--model-kwargs', 'dim=16', 'depth=1', '-j', '0',
              '--output', str(tmp_path / 'out')])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and "has no field 'label' (its fields: picture, kind)" in err[-1], err
    assert not (tmp_path / 'out').exists()

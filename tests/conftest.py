import os

import pytest

# Tests never touch the network; huggingface_hub reads this once, at import.
os.environ['HF_HUB_OFFLINE'] = '1'


@pytest.fixture
def hf_parquet_folder(tmp_path):
    """A Hugging Face `datasets` folder (parquet, 24 Fashion-MNIST images of 3 classes) with timm-foreign field
    names: 'picture' and 'kind'."""
    datasets = pytest.importorskip('datasets')
    from PIL import Image
    from timm_frozenmix.data.datasets import create_dataset
    sample = create_dataset('fashion-mnist-sample', split='train')
    features = datasets.Features({'picture': datasets.Image(), 'kind': datasets.ClassLabel(names=['a', 'b', 'c'])})
    data = datasets.Dataset.from_dict(
        {'picture': [Image.fromarray(sample.images[i]) for i in range(24)],
         'kind': [int(sample.labels[i]) % 3 for i in range(24)]}, features=features)
    folder = tmp_path / 'hf'
    folder.mkdir()
    data.to_parquet(str(folder / 'train.parquet'))
    return folder

"""The data registry: deterministic splits, calibration never from test, user data forms."""
from __future__ import annotations

import numpy as np
import pytest

from compress.data import BUILTIN_DATASETS, load_dataset, resolve_data


@pytest.mark.parametrize("name", list(BUILTIN_DATASETS))
def test_builtin_datasets_are_real_and_split_deterministically(name):
    dataset = load_dataset(name)
    assert dataset.size in (1797, 442)
    a, b = dataset.split(0), dataset.split(0)
    assert a.test.fingerprint() == b.test.fingerprint()
    assert a.test.fingerprint() != dataset.split(1).test.fingerprint()
    assert a.train.size + a.val.size + a.test.size == dataset.size


def test_digits_are_sklearns_without_importing_it():
    """compress reads load_digits()'s file itself (scikit-learn's import costs more than the data): the same arrays."""
    from sklearn.datasets import load_digits

    images, labels = load_dataset("digits8").x[0][:, 0], load_dataset("digits8").y[0]
    bunch = load_digits()
    assert np.array_equal(images, (bunch.images / 16.0).astype(np.float32)) and np.array_equal(labels, bunch.target)


def test_calibration_never_overlaps_test():
    splits = load_dataset("digits8").split(0)
    calibration = splits.calibration(300, seed=0)
    test_rows = {row.tobytes() for row in splits.test.x[0]}
    train_rows = {row.tobytes() for row in np.concatenate([splits.train.x[0], splits.val.x[0]])}
    assert all(row.tobytes() in train_rows for row in calibration.x[0])
    assert calibration.size == 300 and splits.test.size == 359
    assert len(test_rows) > 300


def test_npz_with_labels_and_two_inputs(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.random.rand(20, 4).astype(np.float64), x1=np.arange(40).reshape(20, 2), y=np.arange(20) % 3)
    dataset = resolve_data(str(path))
    assert [a.dtype for a in dataset.x] == [np.float32, np.int64]
    assert dataset.heads[0].kind == "classification" and dataset.heads[0].classes == 3


def test_image_folder(tmp_path):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray((np.random.rand(10, 12) * 255).astype(np.uint8)).save(tmp_path / label / f"{i}.png")
    dataset = resolve_data(str(tmp_path), image_shape=(1, 8, 8))
    assert dataset.x[0].shape == (6, 1, 8, 8)
    assert list(dataset.y[0]) == [0, 0, 0, 1, 1, 1]


def test_python_callable(tmp_path, monkeypatch):
    (tmp_path / "userdata.py").write_text(
        "import numpy as np\n"
        "def batches():\n"
        "    for i in range(3):\n"
        "        yield {'x': np.full((4, 2), i, np.float32), 'y': np.full(4, i)}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    dataset = resolve_data("userdata:batches")
    assert dataset.size == 12 and dataset.labeled

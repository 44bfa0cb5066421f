"""Bad input: one clear line and exit 2, through the real CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.cli_checks import one_line


def test_missing_file(cli, tmp_path):
    result = cli("zoo", "eval", tmp_path / "nope.pt")
    assert result.exit_code == 2
    assert "not found" in one_line(result)


def test_corrupt_checkpoint(cli, tmp_path, zoo_checkpoint):
    good = zoo_checkpoint("multitask", epochs=1).read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(good[: len(good) // 2])
    result = cli("zoo", "eval", bad)
    assert result.exit_code == 2
    assert "corrupt or truncated" in one_line(result)


def test_garbage_file(cli, tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"\x00not a model at all" * 10)
    result = cli("zoo", "eval", bad)
    assert result.exit_code == 2
    one_line(result)


def test_unknown_zoo_name(cli):
    result = cli("zoo", "train", "resnet9000")
    assert result.exit_code == 2
    assert "unknown zoo model 'resnet9000'" in one_line(result)


def test_npz_without_x(tmp_path):
    from compress.data import resolve_data
    from compress.errors import UsageError

    path = tmp_path / "data.npz"
    np.savez(path, inputs=np.zeros((4, 2)))
    with pytest.raises(UsageError, match="no 'x' array"):
        resolve_data(str(path))


def test_pickled_module_refused_without_trust(tmp_path):
    from compress.errors import UsageError
    from compress.loading.model import load_model

    path = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UsageError, match="execute code"):
        load_model(path)
    handle = load_model(path, trust_pickle=True, input_shapes=["1x2"])
    assert handle.source_format == "pickle"


def test_a_file_that_is_no_model_at_all_is_called_corrupt_not_a_pickle(cli, tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("these are not weights\n")
    result = cli("quantize", bad, "--no-bench", "--out", tmp_path / "run")
    assert result.exit_code == 2
    message = one_line(result)
    assert "corrupt or truncated" in message and "pickled" not in message

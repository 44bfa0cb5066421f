"""The zoo: every seed model trains, saves, reloads safely and gives the same outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compress.data import load_dataset
from compress.loading.model import load_model
from compress.passes.training import predict
from compress.zoo import ZOO

SHORT_EPOCHS = {"linreg": 50, "lstm": 2, "rnn": 2, "attention": 2, "multitask": 2, "transformer": 1, "cnn_same": 1, "mnist_cnn": 1, "cnn64": 1}
SHORT_WIDTH = {"transformer": 0.25, "cnn64": 0.25}


@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_model_trains_saves_and_reloads_identically(name, zoo_checkpoint):
    path = zoo_checkpoint(name, epochs=SHORT_EPOCHS[name], width=SHORT_WIDTH.get(name, 1.0))
    payload = torch.load(path, weights_only=True)  # safe: no pickled code
    assert payload["arch"] == name and payload["dataset"]["name"] == ZOO[name].dataset
    assert {"config", "state_dict", "input_spec", "metrics", "versions", "seed"} <= set(payload)
    handle = load_model(path)
    assert handle.source_format == "zoo"
    test = load_dataset(handle.dataset["name"]).split(handle.dataset["split_seed"]).test.take(64)
    rebuilt = predict(handle.module, test)
    again = predict(load_model(path).module, test)
    for a, b in zip(rebuilt, again):
        np.testing.assert_array_equal(a, b)
    assert payload["metrics"]["task"]["value"] is not None


def test_training_is_deterministic(tmp_path):
    from compress.zoo import train_zoo_model

    first = train_zoo_model("multitask", out=tmp_path / "a.pt", epochs=2, reuse=False)
    second = train_zoo_model("multitask", out=tmp_path / "b.pt", epochs=2, reuse=False)
    for key, value in first.model.state_dict().items():
        torch.testing.assert_close(value, second.model.state_dict()[key], rtol=0, atol=0)


def test_mnist_cnn_default_training_reaches_097(zoo_checkpoint):
    metrics = torch.load(zoo_checkpoint("mnist_cnn"), weights_only=True)["metrics"]
    assert metrics["task"]["name"] == "accuracy" and metrics["task"]["value"] >= 0.97


def test_zoo_cli_list_train_eval_json(cli, tmp_path):
    listed = cli("zoo", "list", "--json")
    assert listed.exit_code == 0
    models = {m["name"]: m for m in json.loads(listed.stdout)["models"]}
    assert set(models) == set(ZOO) and models["mnist_cnn"]["parameters"] == 93322
    out = tmp_path / "m.pt"
    trained = cli("zoo", "train", "multitask", "--epochs", "2", "--out", out, "--json")
    assert trained.exit_code == 0, trained.output
    document = json.loads(trained.stdout)
    assert document["path"] == str(out) and out.exists()
    evaluated = cli("zoo", "eval", out, "--json")
    assert evaluated.exit_code == 0
    heads = json.loads(evaluated.stdout)["metrics"]["task"]["heads"]
    assert set(heads) == {"digit", "digit_pair"}


def test_width_multiplier_makes_smaller_students():
    full = sum(p.numel() for p in ZOO["mnist_cnn"].build(1.0).parameters())
    quarter = sum(p.numel() for p in ZOO["mnist_cnn"].build(0.25).parameters())
    assert quarter * 4 < full

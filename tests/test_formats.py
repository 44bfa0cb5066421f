"""The format, precision and calibration registries: every list derives from them, and a new format is one registration."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest


def test_the_device_runner_table_agrees_with_the_format_registry():
    from compress.backends import runtime_by_suffix
    from compress.targets import device_runner

    assert device_runner.SUFFIX_RUNTIME == runtime_by_suffix()


def test_configs_cli_and_report_schema_list_the_registered_names(cli):
    from pydantic import ValidationError

    from compress.backends import PRECISIONS, formats
    from compress.backends.calibration import CALIBRATIONS
    from compress.passes.quantize import QuantizeConfig
    from compress.report.model import report_json_schema

    artifact = report_json_schema()["$defs"]["Artifact"]["properties"]
    assert artifact["format"]["enum"] == [f.name for f in formats()]
    assert artifact["precision"]["enum"] == list(PRECISIONS)
    assert PRECISIONS["int4-weight"].formats == ("onnx", "tflite") and PRECISIONS["int4-weight"].block_size == 32
    with pytest.raises(ValidationError, match="unknown format 'openvino'; choose from onnx, tflite"):
        QuantizeConfig(formats=["openvino"])
    with pytest.raises(ValidationError, match="minmax"):
        QuantizeConfig(calibration="kl")
    help_text = cli("quantize", "--help").output
    assert "entropy" in help_text and "int4-weight" in help_text
    assert CALIBRATIONS["percentile"].knobs["percentile"] == 99.999
    assert "KL" in CALIBRATIONS["entropy"].runs_as["onnxruntime"] and "L2" in CALIBRATIONS["entropy"].runs_as["litert"]


def test_recipe_calib_samples_reaches_each_quantize_stage():
    from compress.recipe.schema import recipe_model

    recipe = recipe_model().model_validate({"model": {"source": "zoo:mnist_cnn"}, "data": {"calib_samples": 64},
                                            "stages": [{"quantize": {}}, {"quantize": {"calib_samples": 32}}]})
    assert [config.calib_samples for _, config in recipe.stage_list] == [64, 32]


@pytest.fixture
def toy_format():
    """``onnxtoy``: ONNX bytes under another suffix, registered from this file only, removed afterwards."""
    from compress.backends import get, register, unregister

    onnx = get("onnx")
    yield register(replace(onnx, name="onnxtoy", suffixes=(".onnxtoy",), default=False,
                           quantizers={p: onnx.quantizers[p] for p in ("int8", "fp16")}))
    unregister("onnxtoy")


def test_a_toy_format_registered_from_a_test_quantizes_verifies_and_reports(toy_format, zoo_checkpoint, tmp_path, cli):
    from compress.backends import format_of
    from compress.loading.model import load_model
    from compress.passes.quantize import QuantizeConfig, quantize
    from compress.report import validate_report
    from compress.runtimes import open_runner

    handle = load_model(zoo_checkpoint("mnist_cnn", epochs=1, width=0.5))
    config = QuantizeConfig(formats=["onnxtoy"], precisions=["int8"], bench=False, calib_samples=64)
    report = quantize(handle, config, out_dir=tmp_path / "run").report
    assert validate_report(json.loads((tmp_path / "run" / "report.json").read_text())) == 2
    entries = {a["name"]: a for a in report["artifacts"]}
    assert set(entries) == {"fp32-onnxtoy", "int8-onnxtoy"}
    int8 = entries["int8-onnxtoy"]
    assert int8["path"] == "model.int8.onnxtoy" and int8["format"] == "onnxtoy" and int8["verified_in"] == ["onnxruntime"]
    assert int8["metrics"]["fidelity"]["top1_agreement"] >= 0.9 and int8["size_bytes"] < entries["fp32-onnxtoy"]["size_bytes"]
    runner = open_runner(tmp_path / "run" / "model.int8.onnxtoy")
    assert runner.name == "onnxruntime" and format_of(runner.path) is toy_format
    assert runner.run((np.zeros((2, 1, 28, 28), np.float32),))[0].shape == (2, 10)

    result = cli("verify", tmp_path / "run" / "model.int8.onnxtoy", "--samples", "64", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["targets"][0]["passed"]


def test_a_multi_file_artifact_is_sized_and_hashed_over_all_its_files(tmp_path):
    from compress.backends import ArtifactFormat, artifact_sha256, artifact_size, register, unregister
    from compress.safety.io import sha256_file

    register(ArtifactFormat("twofile", (".xml",), ("onnxruntime",), files=lambda path: [path, path.with_suffix(".bin")]))
    try:
        (tmp_path / "m.xml").write_text("<net/>")
        (tmp_path / "m.bin").write_bytes(b"\0" * 10)
        assert artifact_size(tmp_path / "m.xml") == 16
        assert artifact_sha256(tmp_path / "m.xml") not in (sha256_file(tmp_path / "m.xml"), sha256_file(tmp_path / "m.bin"))
    finally:
        unregister("twofile")

"""Hostile input through the real CLI: exit 2 (bad input) or 3 (environment) with one line, never a traceback,
never garbage accepted with exit 0; with --json exactly one error document on stdout. Property tests feed the
parsers (--input-shape, --set, .npz contents) arbitrary input: a result or a UsageError, nothing else."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compress.errors import UsageError
from tests.cli_checks import one_line

PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def refused(result, exit_code: int = 2, json_out: bool = False) -> str:
    """Assert the exit code, one stderr line without traceback (and the JSON error document); the line."""
    assert result.exit_code == exit_code, result.output
    line = one_line(result)
    assert "Traceback" not in result.output
    if json_out:
        assert json.loads(result.stdout) == {"error": line.removeprefix("error: "), "exit_code": exit_code}
    else:
        assert result.stdout.strip() == ""
    return line


@pytest.fixture(scope="module")
def mnist(zoo_checkpoint) -> Path:
    return zoo_checkpoint("mnist_cnn", epochs=1)


def quantize(cli, model, tmp_path, *args):
    return cli("quantize", model, "--no-bench", "--format", "onnx", "--out", tmp_path / "run", *args)


def npz(tmp_path, **arrays) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def digits(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, 28, 28)).astype(np.float32)


# --- data ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arrays, message", [
    (lambda: {"x": np.zeros((0, 1, 28, 28), np.float32), "y": np.zeros(0, np.int64)}, "has no samples"),
    (lambda: {"x": np.array([["a"] * 4] * 20)}, "array 'x' holds strings"),
    (lambda: {"x": np.zeros((20, 1, 28, 28), np.complex64)}, "array 'x' holds complex numbers"),
    (lambda: {"x": digits(), "y": np.array([b"cat"] * 40)}, "array 'y' holds bytes"),
    (lambda: {"x": np.where(np.arange(40)[:, None, None, None] < 3, np.nan, digits())}, "array 'x' has 2352 non-finite value(s)"),
    (lambda: {"x": np.where(np.arange(40)[:, None, None, None] == 5, np.inf, digits()), "y": np.arange(40) % 10},
     "in 1 of 40 samples"),
    (lambda: {"x": digits(), "y": np.where(np.arange(40) == 7, np.nan, 1.0)}, "array 'y' has 1 non-finite"),
    (lambda: {"x": digits(), "y": 100 + np.arange(40) * 20}, "40 label(s) outside the 10 classes"),
    (lambda: {"x": digits(), "y": -(np.arange(40) % 10) - 1}, "class labels count from 0"),
])
def test_bad_npz_is_refused_naming_the_array(cli, mnist, tmp_path, arrays, message):
    result = quantize(cli, mnist, tmp_path, "--data", npz(tmp_path, **arrays()), "--json")
    assert message in refused(result, json_out=True)
    assert not (tmp_path / "run" / "report.json").exists()


def test_object_arrays_are_not_unpickled(cli, mnist, tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}] * 20, dtype=object))
    assert "not a readable .npz" in refused(quantize(cli, mnist, tmp_path, "--data", path))


def test_corrupt_image_in_folder_is_named(cli, mnist, tmp_path):
    from PIL import Image

    for name in ("zero", "one"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((28, 28), i * 40, np.uint8)).save(tmp_path / "images" / name / f"{i}.png")
    bad = tmp_path / "images" / "one" / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    assert str(bad) in refused(quantize(cli, mnist, tmp_path, "--data", tmp_path / "images"))


@pytest.fixture
def data_module(tmp_path, monkeypatch):
    (tmp_path / "hostile_data.py").write_text(
        "def strings():\n    yield 'hello'\n\n"
        "def raising():\n    raise OSError('sensor offline')\n    yield\n\n"
        "def ragged():\n    yield __import__('numpy').zeros((2, 1, 28, 28))\n    yield __import__('numpy').zeros((2, 3))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "hostile_data"


@pytest.mark.parametrize("function, message", [
    ("strings", "array 'x' holds strings"),
    ("raising", "failed: OSError: sensor offline"),
    ("ragged", "its batches do not stack"),
])
def test_data_callable_yielding_garbage(cli, mnist, tmp_path, data_module, function, message):
    assert message in refused(quantize(cli, mnist, tmp_path, "--data", f"{data_module}:{function}"))


# --- models ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_named_before_any_export(cli, mnist, tmp_path, value):
    payload = torch.load(mnist, weights_only=True)
    payload["state_dict"]["classifier.3.bias"][2] = value
    bad = tmp_path / "diverged.pt"
    torch.save(payload, bad)
    assert "non-finite weights (NaN or infinite) in classifier.3.bias" in refused(quantize(cli, bad, tmp_path))
    assert not (tmp_path / "run").exists()


def test_tflite_is_not_an_input(cli, tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    assert "TFLite file is an output of compress, not an input" in refused(quantize(cli, model, tmp_path))


def test_int64_input_shape_for_a_float_model(cli, mnist, tmp_path):
    line = refused(quantize(cli, mnist, tmp_path, "--input-shape", "1x1x28x28:int64", "--json"), json_out=True)
    assert "does not run on --input-shape 1x1x28x28:int64" in line


@pytest.mark.parametrize("shape", ["1x", "1x3:int64:9-2", "1x2:a:b:c", "99999x99999x99999"])
def test_bad_input_shape_text(cli, mnist, tmp_path, shape):
    assert "--input-shape" in refused(quantize(cli, mnist, tmp_path, "--input-shape", shape))


def test_bad_arch_kwargs_yaml(cli, mnist, tmp_path):
    assert "not a YAML value" in refused(quantize(cli, mnist, tmp_path, "--arch-kwargs", "width=[0.5"))


def test_malformed_pt2_prints_no_torch_traceback(tmp_path, mnist):
    """torch.export.load logs a traceback through torch's logger before raising; a real process shows what a user sees."""
    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2

    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(Double(), (torch.zeros(2, 3),)), good)
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(bad, "w") as target:
        for name in source.namelist():
            target.writestr(name, b"garbage{" if name.endswith(".data/version") else source.read(name))
    done = subprocess.run([sys.executable, "-m", "compress.cli", "quantize", str(bad), "--no-bench", "--json",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not a loadable torch.export program" in errors[0]
    assert "Traceback" not in done.stderr and "File \"" not in done.stderr
    assert json.loads(done.stdout)["exit_code"] == 2


# --- options and configs ---------------------------------------------------------------------------------------------

def test_out_naming_an_existing_file(cli, mnist, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert "is an existing file" in refused(cli("quantize", mnist, "--no-bench", "--out", taken, "--json"), json_out=True)
    assert "part of the path is an existing file" in refused(cli("quantize", mnist, "--no-bench", "--out", taken / "sub"))
    assert taken.read_text() == "mine"


@pytest.mark.parametrize("args, message", [
    (("prune", "--finetune-epochs", "1000000000000"), "--finetune-epochs: give 0 to 10,000 epochs (got 1000000000000)"),
    (("qat", "--epochs", "99999999"), "--epochs: give 1 to 10,000 epochs (got 99999999)"),
    (("distill", "--student", "mnist_cnn:width=0.5", "--epochs", "20000"), "--epochs: give 1 to 10,000 epochs (got 20000)"),
])
def test_runaway_epochs_are_refused(cli, mnist, tmp_path, args, message):
    verb, *rest = args
    extra = ("--teacher", mnist) if verb == "distill" else (mnist,)
    assert message in refused(cli(verb, *extra, *rest, "--no-bench", "--out", tmp_path / "run", "--json"), json_out=True)


@pytest.mark.parametrize("args, message", [
    (("quantize", "MODEL", "--runs", "abc"), "Invalid value for '--runs'"),
    (("quantize", "MODEL", "--no-such-option"), "No such option: --no-such-option"),
    (("quantise", "MODEL"), "No such command 'quantise'"),
])
def test_parse_errors_with_json_are_one_json_document(cli, mnist, tmp_path, args, message):
    args = [mnist if a == "MODEL" else a for a in args]
    assert message in refused(cli(*args, "--out", tmp_path / "run", "--json"), json_out=True)
    assert not (tmp_path / "run").exists()


def test_zoo_train_with_runaway_epochs(cli, tmp_path):
    assert "give 1 to 10,000 epochs" in refused(cli("zoo", "train", "mnist_cnn", "--epochs", "1000000000000", "--out", tmp_path / "m.pt"))


def test_missing_tool_is_exit_3_with_a_json_document(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb on it
    from onnx import TensorProto, helper

    artifact = tmp_path / "model.onnx"  # a real ONNX file (random bytes are refused first, exit 2)
    x, y = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in "xy")
    artifact.write_bytes(helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])).SerializeToString())
    assert "adb not found" in refused(cli("bench", artifact, "--target", "adb", "--json"), exit_code=3, json_out=True)


# --- recipes ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text("model: {source: zoo:mnist_cnn}\nstages:\n  - quantize: {formats: [onnx]}\n")
    return path


@pytest.mark.parametrize("override, message", [
    ("seed=[1,2", "--set 'seed=[1,2': the value is not valid YAML"),
    (".=1", "write it as dotted.path=value"),
    ("stages.9.quantize.calibration=entropy", "the recipe has no 'stages.9.quantize.calibration'"),
    ("stages.0.quantize.calib_samples=1000000000000", "less than or equal to 1000000"),
])
def test_bad_set_override(cli, recipe, override, message):
    assert message in refused(cli("run", recipe, "--set", override, "--json"), json_out=True)


def test_set_on_a_recipe_with_a_syntax_error_names_the_line(cli, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: {source: zoo:mnist_cnn}\nstages: [\n")
    plain, with_set = refused(cli("run", broken)), refused(cli("run", broken, "--set", "seed=1"))
    assert plain == with_set and f"{broken}:3:1: not valid YAML" in plain


def test_non_utf8_recipe(cli, tmp_path):
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("model: {source: zoo:mnist_cnn}\n# café\n".encode("latin-1"))
    assert "is not UTF-8 text" in refused(cli("run", latin))
    assert "is not UTF-8 text" in refused(cli("recipe", "validate", latin, "--json"), json_out=True)


def test_runaway_epochs_in_a_recipe(cli, tmp_path):
    path = tmp_path / "runaway.yaml"
    path.write_text("model: {source: zoo:mnist_cnn}\nstages:\n  - prune: {finetune_epochs: 1000000000000}\n")
    assert "finetune_epochs: Input should be less than or equal to 10000" in refused(cli("recipe", "validate", path))


# --- reports: standard JSON only -------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    (b'{"schema_version": NaN}', "NaN is not standard JSON"),
    (b'{"schema_version": Infinity}', "Infinity is not standard JSON"),
    ('{"tool": "café"}'.encode("latin-1"), "is not UTF-8 text"),
    (b'{"schema_version": 1,', "is not JSON"),
])
def test_report_validate_rejects_non_standard_json(cli, tmp_path, content, message):
    path = tmp_path / "report.json"
    path.write_bytes(content)
    assert message in refused(cli("report", "validate", path))
    assert message in refused(cli("report", "compare", tmp_path, tmp_path, "--json"), json_out=True)


def test_non_finite_figures_become_null_with_a_note(cli, tmp_path):
    from compress.report import new_report, write_report

    report = new_report({"path": "m.pt", "format": "zoo", "sha256": "0" * 64}, None,
                        {"metrics": {"task": {"name": "r2", "value": float("-inf"), "higher_is_better": True}}, "size_bytes": 1})
    from compress.safety.jsonsafe import read_json

    written = read_json(write_report(tmp_path, report))  # raises on a NaN or Infinity literal
    assert written["reference"]["metrics"]["task"]["value"] is None
    assert written["notes"] == ["reference.metrics.task.value was not finite (NaN or infinite): written as null"]
    assert cli("report", "validate", tmp_path).exit_code == 0


# --- properties: parsers return a result or raise UsageError, nothing else -----------------------------------------

SHAPE_TEXT = st.one_of(
    st.text(max_size=40),
    st.builds(lambda name, dims, tail: f"{name}{'x'.join(dims)}{tail}",
              st.sampled_from(["", "ids=", "=", "a=b="]),
              st.lists(st.sampled_from(["1", "3", "0", "-2", "28", "", "x", "99999999", "1e3", " 4"]), min_size=1, max_size=5),
              st.sampled_from(["", ":int64", ":float32", ":int64:0-50", ":int64:5-1", ":int64:-", ":bool:0-1", ":complex", ":int32:0-3:9"])),
)


@PROPERTY
@given(SHAPE_TEXT)
def test_input_shape_parsing_is_a_spec_or_a_usage_error(text):
    from compress.loading.spec import DTYPES, InputSpec

    try:
        spec = InputSpec.parse([text])
    except UsageError:
        return
    tensor = spec.tensors[0]
    assert tensor.shape[0] == -1 and all(d > 0 for d in tensor.shape[1:]) and tensor.low < tensor.high
    assert tensor.dtype in DTYPES and tensor.name


@PROPERTY
@given(st.one_of(st.text(max_size=40), st.builds("{}={}".format, st.text(max_size=15), st.text(max_size=15))))
@example("²=")  # a digit to str.isdigit, not to int()
def test_set_parsing_is_parsed_or_a_usage_error(override):
    from compress.recipe.loader import apply_overrides, parse_override

    try:
        keys, _ = parse_override(override)
    except UsageError:
        return
    assert keys and all(key != "" for key in keys)
    try:
        apply_overrides("seed: 0\nstages:\n  - quantize: {}\n", [override])
    except UsageError:
        pass


ARRAYS = hnp.arrays(
    dtype=st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.complex_number_dtypes(), hnp.unicode_string_dtypes(),
                    hnp.byte_string_dtypes(), st.just(np.dtype(bool))),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
)


@PROPERTY
@given(x=ARRAYS, y=st.one_of(st.none(), ARRAYS))
def test_npz_contents_load_valid_or_raise_usage_error(tmp_path_factory, x, y):
    from compress.data import resolve_data

    path = tmp_path_factory.mktemp("npz") / "data.npz"
    np.savez(path, **({"x": x} if y is None else {"x": x, "y": y}))
    try:
        dataset = resolve_data(str(path))
    except UsageError:
        return
    assert dataset.size > 0
    for array in (*dataset.x, *(dataset.y or ())):
        assert array.dtype.kind in "fi" and (array.dtype.kind != "f" or np.isfinite(array).all())

"""Where a run's time goes (report.json ``timings``, report.md, ``--verbose``), and the conversions one run shares."""
from __future__ import annotations

import json

import pytest

import compress.backends.tflite.export as tflite
from compress.backends.reuse import conversions
from compress.catalog import QuantizeJob
from compress.loading.model import load_model
from compress.steps.phases import PhaseClock
from compress.report import validate_report


@pytest.fixture(scope="module")
def tflite_run(zoo_checkpoint, cli, tmp_path_factory):
    """`compress --verbose quantize mnist_cnn --format tflite`, counting litert-torch conversions (static int8 ones apart)."""
    run_dir = tmp_path_factory.mktemp("tflite-run")
    converted = []
    real = tflite.convert

    def counting(module, example, quant_config=None):
        converted.append("int8" if quant_config is not None else "fp32")
        return real(module, example, quant_config)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tflite, "convert", counting)
        result = cli("--verbose", "quantize", zoo_checkpoint("mnist_cnn"), "--format", "tflite", "--no-bench", "--out", run_dir)
    assert result.exit_code == 0, result.output
    return run_dir, result.output, converted


def test_report_says_where_the_time_went(tflite_run):
    run_dir, output, _ = tflite_run
    report = json.loads((run_dir / "report.json").read_text())
    validate_report(report)
    timings = report["timings"]
    phases = [row["phase"] for row in timings["phases"]]
    assert phases[:2] == ["loading data", "pre-flight"]
    assert {"fp32 tflite: export and verify", "int8 tflite: quantize and verify"} <= set(phases)
    assert all(row["wall_s"] >= 0 and row["cpu_s"] >= 0 for row in timings["phases"])
    assert sum(row["wall_s"] for row in timings["phases"]) <= timings["total"]["wall_s"]
    assert sum(row["cpu_s"] for row in timings["phases"]) <= timings["total"]["cpu_s"]
    assert timings["total"]["cpu_s"] > 0  # a conversion is real work
    assert "## Time per phase" in (run_dir / "report.md").read_text()
    assert "time per phase" in output and "int8 tflite: quantize and verify" in output  # --verbose: the table


def test_the_preflight_dry_run_is_the_int8_conversion(tflite_run):
    """The pre-flight converts to static int8 with the run's calibration set; the real export reuses that file."""
    _, _, converted = tflite_run
    assert sorted(converted) == ["fp32", "int8"]


def test_outside_a_run_every_export_converts(zoo_checkpoint, tmp_path, monkeypatch):
    handle = load_model(zoo_checkpoint("mnist_cnn"))
    converted = []
    real = tflite.convert
    monkeypatch.setattr(tflite, "convert", lambda *args, **kwargs: converted.append(1) or real(*args, **kwargs))
    first = tflite.export_tflite(QuantizeJob(handle, "fp32", tmp_path / "a.tflite"))
    tflite.export_tflite(QuantizeJob(handle, "fp32", tmp_path / "b.tflite"))
    with conversions():
        tflite.export_tflite(QuantizeJob(handle, "fp32", tmp_path / "c.tflite"))
        handle.module.classifier[1].weight.data.mul_(0.5)  # a model changed in place is converted again
        tflite.export_tflite(QuantizeJob(handle, "fp32", tmp_path / "d.tflite"))
        tflite.export_tflite(QuantizeJob(handle, "fp32", tmp_path / "e.tflite"))
    assert len(converted) == 4
    assert (tmp_path / "c.tflite").read_bytes() == first.path.read_bytes()
    assert (tmp_path / "e.tflite").read_bytes() == (tmp_path / "d.tflite").read_bytes() != first.path.read_bytes()


def test_phase_clock_adds_a_repeated_phase_and_never_exceeds_its_total():
    clock = PhaseClock()
    step = clock.wrap(None)
    for phase in ("a", "b", "a"):
        step(phase)
        sum(range(20_000))
    record = clock.record()
    assert [row["phase"] for row in record["phases"]] == ["a", "b"]
    assert sum(row["wall_s"] for row in record["phases"]) <= record["total"]["wall_s"]


def test_one_run_calibrates_an_onnx_file_once_per_data_and_method(zoo_checkpoint, tmp_path, monkeypatch):
    import compress.backends.onnx.quantize as onnx_quantize
    from compress.data import load_dataset
    from compress.backends.onnx.export import export_onnx

    handle = load_model(zoo_checkpoint("mnist_cnn"))
    calibration = load_dataset(handle.dataset["name"]).split(handle.dataset["split_seed"]).calibration(32)
    fp32 = export_onnx(handle, tmp_path / "model.fp32.onnx")
    measured = []
    real = onnx_quantize._measure_ranges
    monkeypatch.setattr(onnx_quantize, "_measure_ranges", lambda *args: measured.append(args[2]) or real(*args))
    alone = onnx_quantize.quantize_onnx(QuantizeJob(None, "int8", tmp_path / "alone.onnx", fp32, calibration))
    with conversions():  # repair's keep-float attempts: same file, data and method
        onnx_quantize.quantize_onnx(QuantizeJob(None, "int8", tmp_path / "a.onnx", fp32, calibration))
        onnx_quantize.quantize_onnx(QuantizeJob(None, "int8", tmp_path / "b.onnx", fp32, calibration,
                                                exclude=["classifier.1"]))
        onnx_quantize.quantize_onnx(QuantizeJob(None, "int8", tmp_path / "c.onnx", fp32, calibration,
                                                calibration="percentile"))
    assert measured == ["minmax", "minmax", "percentile"]
    assert (tmp_path / "a.onnx").read_bytes() == alone.path.read_bytes()


def test_live_figures_in_brackets_do_not_split_a_phase():
    clock = PhaseClock()
    step = clock.wrap(None)
    step("repair 1/3: per-channel weights [0:00 of the 10:00 repair budget]")
    step("repair 1/3: per-channel weights [0:07 of the 10:00 repair budget]")
    assert [p["phase"] for p in clock.record()["phases"]] == ["repair 1/3: per-channel weights"]

"""bench.cost times `compress quantize` as a child process and reports what it measured, phases when known."""
from bench.cost import _cells, markdown, slowest_phases, timed_quantize


def test_a_failed_quantize_run_is_timed_and_its_error_line_kept(tmp_path):
    timing = timed_quantize(tmp_path / "missing.pt", tmp_path / "run", timeout_s=300)
    assert timing["exit_code"] == 2 and "not found" in timing["last_line"]
    assert timing["wall_s"] > 0 and timing["cpu_s"] > 0 and timing["phases"] == []  # no report.json: totals only


def test_the_table_names_the_slowest_phases_when_the_report_has_them():
    row = {"model": "m", "parameters": 10, "wall_s": 20.0, "cpu_s": 30.0, "target_s": 15, "met": False, "exit_code": 0,
           "source": "zoo", "phases": [{"phase": "export-onnx", "wall_s": 2.0, "cpu_s": 2.0}, {"phase": "bench", "wall_s": 9.5, "cpu_s": 9.0},
                                       {"phase": "calibrate", "wall_s": 0.5, "cpu_s": 0.4}, {"phase": "tflite", "wall_s": 7.0, "cpu_s": 8.0}]}
    assert slowest_phases(row) == "bench 9.5 s · tflite 7.0 s · export-onnx 2.0 s"
    assert _cells({**row, "phases": []})[-2:] == ["not met", "-"]
    text = markdown({"date": "2026-12-03", "machine": {"description": "x86_64, 2 cpus", "loadavg_1m_at_start": 1.0, "loadavg_1m_at_end": 1.2},
                     "models": [row]})
    assert "| m | 10 | 20.0 | 30.0 | ≤ 15 | not met | bench 9.5 s · tflite 7.0 s · export-onnx 2.0 s |" in text

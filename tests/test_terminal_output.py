"""What a user reads: results on stdout at full width, progress on stderr, no third-party noise, a --help that teaches."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from compress.commands._common import PIPE_WIDTH
from compress.build import AHEAD_PHASE

PROGRESS_LINE = re.compile(r"^\[\d+:\d\d(:\d\d)?\] ")  # "[0:04] int8 onnx: quantize and verify" in a pipe or a CI log


def test_readme_quantize_prints_its_table_on_stdout_and_only_compress_lines_on_stderr(zoo_checkpoint, tmp_path):
    """README's quantize command, piped as in CI: the whole table on stdout, nothing but compress's progress on stderr."""
    model = zoo_checkpoint("mnist_cnn", epochs=1)
    done = subprocess.run([sys.executable, "-m", "compress.cli", "quantize", str(model), "--max-degradation", "0.005",
                           "--out", str(tmp_path / "mnist"), "--no-bench"], capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads((tmp_path / "mnist" / "report.json").read_text())
    for artifact in report["artifacts"]:
        assert re.search(rf"{artifact['name']}\s.*{artifact['size_bytes']:,}", done.stdout), done.stdout  # not cut to "322,6…"
    assert "…" not in done.stdout and "run directory:" in done.stdout
    foreign = [line for line in done.stderr.splitlines() if line.strip() and not PROGRESS_LINE.match(line)
               and not line.startswith("error: ")]  # exit 1 (the gate on a 1-epoch model) ends with compress's own line
    assert foreign == [], f"{len(foreign)} stderr lines are not compress's:\n" + "\n".join(foreign)
    # steps over 2 s print: the wait for the second process's TFLite conversions (compress.steps.ahead)
    assert any(AHEAD_PHASE in line for line in done.stderr.splitlines()), done.stderr


def test_native_logs_and_foreign_warnings_are_kept_off_stderr():
    script = ("import os, sys, warnings\n"
              "from compress.safety.quiet import native_log_tail, silence_third_party\n"
              "log = silence_third_party()\n"
              "os.write(2, b'I0000 flatbuffer_export.cc:4410] Estimated count of arithmetic ops\\n')\n"
              "warnings.warn('isinstance(treespec, LeafSpec) is deprecated', FutureWarning)\n"
              "print('compress: ours', file=sys.stderr)\n"
              "print(native_log_tail(log))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stderr == "compress: ours\n"
    assert "flatbuffer_export.cc" in done.stdout  # kept for an exit-3 message, not lost


def test_tables_go_to_stdout_at_full_width_when_piped(cli):
    result = cli("zoo", "list")
    assert result.exit_code == 0 and result.stderr == ""
    from compress.zoo import ZOO

    for entry in ZOO.values():
        assert entry.article in result.stdout  # a pipe gets the whole cell, not "…"
    assert max(map(len, result.stdout.splitlines())) > 80 and PIPE_WIDTH > 1000


def test_a_cached_zoo_train_draws_no_epoch_bar(cli):
    first = cli("zoo", "train", "linreg", "--epochs", "1", "--force")
    assert first.exit_code == 0 and "training linreg: epoch 1/1  loss" in first.stderr
    again = cli("zoo", "train", "linreg", "--epochs", "1")
    assert again.exit_code == 0 and "epoch" not in again.stderr and "reused cached checkpoint" in again.stdout


@pytest.mark.parametrize("verb", [["quantize"], ["prune"], ["tune"], ["zoo", "train"], ["report", "compare"], ["run"], []])
def test_help_shows_no_bool_metavar(cli, verb):
    text = cli(*verb, "--help").stdout
    assert "<bool>" not in text and "--help" in text


def test_help_describes_tune_seed_and_prune_sparsity_default(cli):
    tune = " ".join(cli("tune", "--help").stdout.split())
    assert re.search(r"--seed\s+<int>\s+Seed of the search", tune), tune
    prune = " ".join(cli("prune", "--help").stdout.split())
    assert re.search(r"--sparsity.*\[default: \(?0\.5", prune), prune

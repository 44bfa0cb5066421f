"""The first ten minutes of a new user: `--help` in a pipe, `compress demo`, a recipe for their own model.

Each test runs the real console entry point (``python -m compress``) as a user's shell would.
"""
from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

BOX = set("╭╮╰╯│─┏┓┗┛┃━")
REPO = str(Path(__file__).parents[1])


def compress(*args, **options) -> subprocess.CompletedProcess:
    """``python -m compress ARGS`` with stdout and stderr piped (as in CI, or ``| less``)."""
    env = {**os.environ, "PYTHONPATH": REPO, **options.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "compress", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=options.pop("timeout", 120), **options)


@pytest.mark.parametrize("verb", [(), ("quantize",), ("recipe", "init"), ("bench",)])
def test_help_into_a_pipe_is_plain_text(verb):
    done = compress(*verb, "--help")
    assert done.returncode == 0, done.stderr
    assert not BOX & set(done.stdout), done.stdout  # no rich box: a CI log or `less` shows plain lines
    assert done.stdout.startswith("Usage: ") and "Options:" in done.stdout and "--help" in done.stdout
    assert max(map(len, done.stdout.splitlines())) <= 80
    if not verb:
        assert "Commands:" in done.stdout and "quantize" in done.stdout and "recipe" in done.stdout


def test_help_on_a_terminal_keeps_the_rich_layout():
    main, child = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "compress", "quantize", "--help"], stdout=child, stderr=child,
                               env={**os.environ, "PYTHONPATH": REPO, "COLUMNS": "100"})
    os.close(child)
    text = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        text += chunk
    os.close(main)
    assert process.wait(timeout=60) == 0
    shown = re.sub(r"\x1b\[[0-9;]*m", "", text.decode(errors="replace"))  # colours off: the words as seen
    assert "╭" in shown and "--format" in shown


def test_demo_ends_with_every_file_written_and_what_to_do_next(tmp_path):
    out = tmp_path / "demo"
    done = compress("demo", "--model", "linreg", "--out", out, env={"COMPRESS_CACHE": str(tmp_path / "cache")}, timeout=900)
    assert done.returncode == 0, done.stderr
    listing = done.stdout.split(f"files written in {out}:", 1)[1]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert {"report.html", "report.json", "report.md", "manifest.json"} <= set(written)
    for name in written:
        assert f"  {name} " in listing, (name, listing)
    following = listing.split("next:", 1)[1]
    assert f"open {out / 'report.html'}" in following
    assert "compress quantize my.pt2 --data my.npz" in following and "compress recipe init --model my.pt2" in following


TWO_INPUTS = """\
import torch


class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.head = torch.nn.Linear(8 + 6, 3)

    def forward(self, tokens, features):
        return self.head(torch.cat([self.embed(tokens).mean(1), features], 1))


torch.manual_seed(0)
batch = torch.export.Dim("batch", min=1, max=1024)
program = torch.export.export(TwoInputs().eval(), (torch.randint(0, 50, (2, 5)), torch.randn(2, 6)),
                              dynamic_shapes=({0: batch}, {0: batch}))
torch.export.save(program, "two.pt2")
"""


def test_recipe_for_your_own_model_names_its_data_and_validate_checks_it(tmp_path):
    """`recipe init --model my.pt2` tells which arrays to save; `recipe validate` checks them, one line per mismatch."""
    import numpy as np

    subprocess.run([sys.executable, "-c", TWO_INPUTS], cwd=tmp_path, check=True, timeout=120)
    starter = compress("recipe", "init", "--model", "two.pt2", cwd=tmp_path)
    assert starter.returncode == 0, starter.stderr
    assert "x = int64 (N, 5) for input tokens; x1 = float32 (N, 6) for input features" in starter.stdout
    assert "  name: two_data.npz" in starter.stdout
    (tmp_path / "recipe.yaml").write_text(starter.stdout)

    missing = compress("recipe", "validate", "recipe.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [
        "error: recipe.yaml: data two_data.npz: no such file: save it with numpy.savez: x = int64 (N, 5) for input tokens; "
        "x1 = float32 (N, 6) for input features; y = labels (optional)"]

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "two_data.npz", x=rng.random((200, 5), dtype=np.float32), features=rng.random((200, 7), dtype=np.float32))
    wrong = compress("recipe", "validate", "recipe.yaml", "--json", cwd=tmp_path)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert json.loads(wrong.stdout)["exit_code"] == 2  # one JSON document, the error
    lines = [line.removeprefix("error: ") for line in wrong.stderr.strip().splitlines()]
    assert lines == ["recipe.yaml: data two_data.npz: array 'x' (input 'tokens'): dtype float32, but the input takes int64 (integer values)",
                     "recipe.yaml: data two_data.npz: no array 'x1' for input 'features': save x1 = float32 (N, 6)",
                     "recipe.yaml: data two_data.npz: array 'features' is not read: inputs are saved by position "
                     "(x = tokens, x1 = features), labels as y"]

    np.savez(tmp_path / "two_data.npz", x=rng.integers(0, 50, (200, 5)), x1=rng.random((200, 6), dtype=np.float32),
             y=rng.integers(0, 3, 200))
    fits = compress("recipe", "validate", "recipe.yaml", cwd=tmp_path)
    assert fits.returncode == 0, fits.stderr
    assert "data two_data.npz fits the model's inputs (tokens, features)" in fits.stdout
    ran = compress("run", "recipe.yaml", "--set", "stages.0.quantize.formats=[onnx]", "--out", "run", cwd=tmp_path, timeout=900)
    assert ran.returncode in (0, 1), ran.stderr  # 1: a gate judged the random-label model; it ran on the validated data
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["dataset"]["name"] == "two_data" and report["artifacts"]

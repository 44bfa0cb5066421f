"""The first ten minutes of a new user: `--help` in a pipe, `compress demo`, a recipe for their own model.

Each test runs the real console entry point (``python -m compress``) as a user's shell would.
"""
from __future__ import annotations

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
    assert {"report.html", "report.json", "report.md"} <= set(written)
    for name in written:
        assert f"  {name} " in listing, (name, listing)
    following = listing.split("next:", 1)[1]
    assert f"open {out / 'report.html'}" in following
    assert "compress quantize my.pt2 --data my.npz" in following and "compress recipe init --model my.pt2" in following

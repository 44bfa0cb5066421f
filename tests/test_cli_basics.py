"""`compress --version`, `--help` and every verb's help teach: a summary and an example."""
from __future__ import annotations

import subprocess
import sys

import typer.main

from compress import __version__
from compress.cli import app


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def _verbs(group, prefix=()):
    command = typer.main.get_command(group) if not hasattr(group, "commands") else group
    for name, sub in command.commands.items():
        if hasattr(sub, "commands"):
            yield from _verbs(sub, (*prefix, name))
        else:
            yield (*prefix, name)


def test_every_verb_help_has_summary_and_example(cli):
    verbs = list(_verbs(app))
    assert ("zoo", "train") in verbs and ("quantize",) in verbs
    for verb in verbs:
        result = cli(*verb, "--help")
        assert result.exit_code == 0, verb
        assert "Example:" in result.stdout, f"{' '.join(verb)} --help has no example"


def test_console_script_installed():
    result = subprocess.run([sys.executable, "-m", "compress.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0

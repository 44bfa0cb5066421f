"""Option groups that several verbs share, declared once: ``@shared_options("load", "output")`` appends the groups'
options to a command's own parameters (in `--help` after them) and hands their values to it as one ``opts``.

Example:
    >>> @shared_options("load", "output")
    ... def verb(model: Path = typer.Argument(...), *, opts: Options) -> None:
    ...     with handle_errors(opts.debug, opts.json_out):
    ...         handle = load_model(model, arch=opts.arch)
"""
from __future__ import annotations

import functools
import inspect
from pathlib import Path
from types import SimpleNamespace

import typer

from compress.commands._common import (ARCH_KWARGS_OPTION, ARCH_OPTION, DEBUG_OPTION, INPUT_SHAPE_OPTION, JSON_OPTION,
                                     NO_BENCH_OPTION, NO_GATE_OPTION, OUTPUT_KIND_OPTION, RUNS_OPTION, SEED_OPTION,
                                     THREADS_OPTION, TRUST_PICKLE_OPTION, handle_errors)
from compress.model_file import check_model_file


class Options(SimpleNamespace):
    """The values of a command's shared options, by parameter name (``opts.json_out``, ``opts.arch``)."""


GROUPS: dict[str, dict[str, tuple[type, typer.models.OptionInfo]]] = {
    # how artifacts are judged (compress.gates)
    "judge": {"output_kind": (list[str], OUTPUT_KIND_OPTION), "no_gate": (bool, NO_GATE_OPTION)},
    # how a model is loaded (compress.model.load_model)
    "load": {"arch": (str, ARCH_OPTION), "arch_kwargs": (list[str], ARCH_KWARGS_OPTION),
             "input_shape": (list[str], INPUT_SHAPE_OPTION), "trust_pickle": (bool, TRUST_PICKLE_OPTION)},
    # how artifacts are timed, and the seed of everything random
    "time": {"no_bench": (bool, NO_BENCH_OPTION), "runs": (int, RUNS_OPTION), "threads": (int, THREADS_OPTION),
             "seed": (int, SEED_OPTION)},
    # where a target other than this machine is reached (compress.targets)
    "target": {
        "insecure": (bool, typer.Option(False, "--insecure", help="ssh: skip host key checking (the report says so).")),
        "identity": (Path, typer.Option(None, "--identity", help="ssh: private key file (key authentication only).")),
        "known_hosts": (Path, typer.Option(None, "--known-hosts", help="ssh: known_hosts file to check the host key against.")),
        "remote_python": (str, typer.Option(None, "--remote-python", help="ssh/adb: the device's Python (default python3).")),
        "benchmark_model": (str, typer.Option(None, "--benchmark-model", help=(
            "adb: path of TFLite's benchmark_model on the device (default /data/local/tmp/benchmark_model)."))),
        "executor_runner": (str, typer.Option(None, "--executor-runner", help=(
            "adb: path of ExecuTorch's executor_runner (built with XNNPACK) on the device, for .pte timing "
            "(default /data/local/tmp/executor_runner)."))),
        "qemu_cpu": (str, typer.Option(None, "--qemu-cpu", help="qemu-arm64: the emulated core (default cortex-a76).")),
        "timeout": (float, typer.Option(None, "--timeout", help="Seconds one runner call may take on the target (default 600; qemu 1800).")),
    },
    # what the verb prints
    "output": {"json_out": (bool, JSON_OPTION), "debug": (bool, DEBUG_OPTION)},
}


def shared_options(*groups: str):
    """Decorate a typer command whose last parameter is ``*, opts: Options`` with the options of ``groups``."""
    shared = {name: spec for group in groups for name, spec in GROUPS[group].items()}

    def wrap(command):
        own = inspect.signature(command, eval_str=True)
        params = [p for p in own.parameters.values() if p.name != "opts"]
        params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
                   for name, (kind, option) in shared.items()]

        @functools.wraps(command)
        def run(**values):
            opts = Options(**{name: values.pop(name) for name in shared})
            if "load" in groups:
                _check_model_paths(values, opts)
            return command(**values, opts=opts)

        run.__signature__ = own.replace(parameters=params)
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return wrap


MODEL_PARAMETERS = ("model", "teacher")  # a verb's parameters that name a model file


def _check_model_paths(values: dict, opts: Options) -> None:
    """A missing, unreadable or foreign model file is answered before the verb imports torch (exit 2)."""
    with handle_errors(getattr(opts, "debug", False), getattr(opts, "json_out", False)):
        for name in MODEL_PARAMETERS:
            if isinstance(values.get(name), Path):
                check_model_file(values[name])


def target_options(opts: Options) -> dict:
    """The target options the user set (each target takes the ones that apply to it)."""
    options = {"insecure": opts.insecure or None, "identity": opts.identity, "known_hosts": opts.known_hosts,
               "python": opts.remote_python, "benchmark_model": opts.benchmark_model,
               "executor_runner": opts.executor_runner, "cpu": opts.qemu_cpu,
               "timeout_s": opts.timeout}
    return {k: v for k, v in options.items() if v is not None}

"""Option groups that several verbs share, declared once: ``@shared_options("load", "output")`` appends the groups'
options to a command's own parameters (in `--help` after them) and hands their values to it as one ``opts``.
The range of every numeric option of every verb is declared once too, in OPTION_BOUNDS (see :func:`bound_options`).

Example:
    >>> @shared_options("load", "output")
    ... def verb(model: Path = typer.Argument(...), *, opts: Options) -> None:
    ...     with handle_errors(opts.debug, opts.json_out):
    ...         handle = load_model(model, arch=opts.arch)
    $ compress bench model.onnx --runs 1000000000
    error: --runs: give 1 to 100,000 runs (got 1000000000)
"""
from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import typer

from compress.errors import UsageError
from compress.steps.gates import MAX_DEGRADATION_HELP
from compress.limits import (MAX_BATCH, MAX_EPOCHS, MAX_RUNS, MAX_SAMPLES, MAX_SECONDS, MAX_SEED, MAX_THREADS, MAX_TRIALS,
                            MAX_WORKERS)
from compress.commands._common import (ARCH_KWARGS_OPTION, ARCH_OPTION, DEBUG_OPTION, FORMAT_OPTION, INPUT_SHAPE_OPTION, JSON_OPTION,
                                     NO_BENCH_OPTION, NO_GATE_OPTION, OUTPUT_KIND_OPTION, RUNS_OPTION, SEED_OPTION,
                                     THREADS_OPTION, TRUST_PICKLE_OPTION, handle_errors)
from compress.loading.model_file import check_data_file, check_model_file


MAX_DEGRADATION_OPTION = typer.Option(None, "--max-degradation", help=f"{MAX_DEGRADATION_HELP} Exit 1 if missed.")


class Options(SimpleNamespace):
    """The values of a command's shared options, by parameter name (``opts.json_out``, ``opts.arch``)."""


GROUPS: dict[str, dict[str, tuple[type, typer.models.OptionInfo]]] = {
    # how artifacts are judged (compress.steps.gates)
    "judge": {"output_kind": (list[str], OUTPUT_KIND_OPTION), "no_gate": (bool, NO_GATE_OPTION)},
    # how a model is loaded (compress.loading.model.load_model)
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
    # what a training pass (prune, distill) trains on, the files it exports and the gate they are held to
    "pass": {
        "data": (str, typer.Option(None, "--data", "-d", help=(
            "Dataset name, .npz, image folder or package.module:function (default: the model's own)."))),
        "formats": (list[str], FORMAT_OPTION),
        "no_int8": (bool, typer.Option(False, "--no-int8", help=(
            "Export fp32 files only (default: also int8, by the same PTQ as `compress quantize`)."))),
        "max_degradation": (float, MAX_DEGRADATION_OPTION),
    },
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
                _check_input_paths(values, opts)
            return command(**values, opts=opts)

        run.__signature__ = own.replace(parameters=params)
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return wrap


MODEL_PARAMETERS = ("model", "teacher")  # a verb's parameters that name a model file


def _check_input_paths(values: dict, opts: Options) -> None:
    """A missing, unreadable or foreign model file, or a missing ``--data`` .npz, is answered before the verb imports
    torch (exit 2)."""
    with handle_errors(getattr(opts, "debug", False), getattr(opts, "json_out", False)):
        for name in MODEL_PARAMETERS:
            if isinstance(values.get(name), Path):
                check_model_file(values[name])
        data = values.get("data", getattr(opts, "data", None))
        if isinstance(data, str):
            check_data_file(data)


def target_options(opts: Options) -> dict:
    """The target options the user set (each target takes the ones that apply to it)."""
    options = {"insecure": opts.insecure or None, "identity": opts.identity, "known_hosts": opts.known_hosts,
               "python": opts.remote_python, "benchmark_model": opts.benchmark_model,
               "executor_runner": opts.executor_runner, "cpu": opts.qemu_cpu,
               "timeout_s": opts.timeout}
    return {k: v for k, v in options.items() if v is not None}


@dataclass(frozen=True)
class Bound:
    """The values a numeric option takes: finite, from ``low`` to ``high`` (``low`` itself excluded when ``above``)."""

    low: float
    high: float
    unit: str = ""
    above: bool = False

    def refusal(self, value: float) -> str | None:
        """Why ``value`` is refused (None when it is in range)."""
        finite = isinstance(value, int) or math.isfinite(value)
        inside = finite and (value > self.low if self.above else value >= self.low) and value <= self.high
        got = repr(value) if len(repr(value)) <= 24 else f"{repr(value)[:20]}..."
        return None if inside else f"give {self.text()} (got {got})"

    def text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.above:
            return f"a number above {_number(self.low)}, at most {_number(self.high)}{unit}"
        return f"{_number(self.low)} to {_number(self.high)}{unit}"


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


FRACTION = Bound(0, 1)
POSITIVE = Bound(0, 1e9, above=True)
SECONDS = Bound(0, MAX_SECONDS, "seconds", above=True)
EPOCHS = Bound(1, MAX_EPOCHS, "epochs")
OPTION_BOUNDS: dict[str, Bound] = {
    # how long and how much is timed
    "--runs": Bound(1, MAX_RUNS, "runs"), "--warmup": Bound(0, MAX_RUNS, "runs"), "--batch": Bound(1, MAX_BATCH, "samples"),
    "--seconds": SECONDS, "--timeout": SECONDS, "--repair-budget": SECONDS, "--threads": Bound(1, MAX_THREADS, "threads"),
    "--peak-gops": POSITIVE, "--bandwidth-gbs": POSITIVE,
    # how much data and training
    "--samples": Bound(1, MAX_SAMPLES, "samples"), "--calib-samples": Bound(1, MAX_SAMPLES, "samples"),
    "--seed": Bound(0, MAX_SEED), "--epochs": EPOCHS, "--finetune-epochs": Bound(0, MAX_EPOCHS, "epochs"),
    "--freeze-bn-after": EPOCHS, "--freeze-observers-after": EPOCHS,
    "--lr": Bound(0, 10, above=True), "--temperature": Bound(0, 1_000, above=True), "--alpha": FRACTION,
    "--feature-weight": Bound(0, 1_000), "--width": Bound(0, 16, above=True), "--weight-bits": Bound(2, 8, "bits"),
    "--sparsity": Bound(0, 0.999), "--max-degradation": FRACTION,
    # tolerances of verify
    "--min-top1": FRACTION, "--min-agreement": FRACTION, "--min-sqnr": Bound(-1_000, 1_000, "dB"),
    "--max-abs-error": Bound(0, 1e30),
    # how many at once
    "--trials": Bound(1, MAX_TRIALS, "trials"), "--workers": Bound(1, MAX_WORKERS, "workers"),
    "--cpus-per-recipe": Bound(1, MAX_THREADS, "CPUs"),
    # how much a language model generates
    "--max-new-tokens": Bound(1, 4096, "tokens"), "--max-context": Bound(2, 32_768, "positions"),
    "--block-size": Bound(16, 256, "weights"),
}


class OptionOutOfRange(UsageError):
    """A numeric option outside its OPTION_BOUNDS range (one line, exit 2, raised while the line is parsed)."""


def _checked(flag: str, bound: Bound, callback):
    def check(ctx, param, value):
        reason = None if value is None else bound.refusal(value)
        if reason:
            raise OptionOutOfRange(f"{flag}: {reason}")
        return callback(ctx, param, value) if callback else value

    return check


def bound_options(command) -> None:
    """Give every int/float option under ``command`` (a click command or group) its OPTION_BOUNDS range: a value
    outside it, NaN or infinity is OptionOutOfRange, one line naming the option and its range (exit 2, before
    anything is imported or written; with --json one error document too; JsonErrorsGroup prints it). A numeric option missing from OPTION_BOUNDS is a
    KeyError here, so a new option cannot go unbounded."""
    for param in getattr(command, "params", []):
        annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        if annotation not in (int, float) or getattr(param, "bound", None) or param.param_type_name != "option":
            continue
        flag = next(opt for opt in param.opts if opt.startswith("--"))
        if flag not in OPTION_BOUNDS:
            raise KeyError(f"{command.name} {flag}: a numeric option needs its range in OPTION_BOUNDS")
        param.bound = OPTION_BOUNDS[flag]
        param.callback = _checked(flag, param.bound, param.callback)
        param.help = f"{param.help or ''} [{param.bound.text()}]".strip()
    for sub in getattr(command, "commands", {}).values():
        bound_options(sub)

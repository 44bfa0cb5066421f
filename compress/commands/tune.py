"""`compress tune`: find the smallest or fastest model within a degradation budget."""
from __future__ import annotations

from pathlib import Path

import typer

from compress.commands._common import (DEBUG_OPTION, JSON_OPTION, OUTPUT_KIND_OPTION, console, declare_output_kinds, emit, handle_errors,
                                     stdout_console)
from compress.commands._options import MAX_DEGRADATION_OPTION
from compress.backends import quantizable


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)


def _describe(result: dict) -> str:
    if "error" in result:
        return f"trial {result['number']} failed: {result['error']} — {result['params']}"
    if "repeat_of" in result:
        return f"trial {result['number']}: same configuration as trial {result['repeat_of']}, not run again"
    from compress.tune.outputs import quality

    return (f"trial {result['number']}: {result['size_bytes']:,} bytes, p50 {result['p50_ms'] or 0:.3f} ms, "
            f"{quality(result)} — {result['params']}")


def _search_block(path: Path | None) -> dict:
    """The ``search:`` mapping of a YAML file (a recipe or a file of its own); {} without --search."""
    import yaml

    from compress.safety import yamlsafe
    from compress.errors import UsageError

    if path is None:
        return {}
    if not path.is_file():
        raise UsageError(f"--search {path}: no such file")
    try:
        document = yamlsafe.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"--search {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--search {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(document, dict) or not isinstance(document.get("search"), dict):
        raise UsageError(f"--search {path}: needs a 'search:' mapping (e.g. search: {{prune_methods: [l1-structured]}})")
    return document["search"]


def tune_command(
    model: Path = typer.Argument(..., help="Model to compress (zoo checkpoint, .pt2, TorchScript, ...)."),
    data: str = typer.Option(None, "--data", "-d", help="Dataset (zoo default: its own)."),
    max_degradation: float = MAX_DEGRADATION_OPTION,
    objective: str = typer.Option("both", "--objective", help="size, latency or both (Pareto; wins: smallest no slower than int8 PTQ)."),
    fmt: str = typer.Option("onnx", "--format", help=f"The format trials write: {', '.join(quantizable())}."),
    target: str = typer.Option("local", "--target", help="Where latency is measured (local, ssh://user@host, adb, ...)."),
    budget: str = typer.Option(None, "--budget", help="Wall-clock budget for the whole command: 90s, 10m, 1h "
                                "(a trial starts only while one as slow as the slowest so far fits; none is cut)."),
    trials: int = typer.Option(None, "--trials", help="Completed trials wanted in the study (default 20 when no --budget)."),
    workers: int = typer.Option(1, "--workers", help="Trials in parallel."),
    executor: str = typer.Option("local", "--executor", help="local (worker processes) or ray."),
    address: str = typer.Option(None, "--address", help="Ray cluster address (auto: a running cluster)."),
    search: Path = typer.Option(None, "--search", help="YAML file whose `search:` block narrows or widens the search space."),
    out: Path = typer.Option(Path("runs/tune"), "--out", "-o", help="Study directory (resumes when it exists)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the search (Optuna's sampler) and of each trial's data split and calibration."),
    output_kind: list[str] = OUTPUT_KIND_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Search quantization and pruning settings for the smallest/fastest model within --max-degradation.

    Example: compress tune mnist_cnn.pt --max-degradation 0.005 --budget 10m --workers 2 --out runs/tune
    """
    from compress.lm.model import is_language_model
    from compress.loading.model_file import check_data_file, check_model_file

    if is_language_model(model):  # a model directory or .gguf: per-layer precision is the search space
        _tune_language_model(model, data, max_degradation, objective, fmt, target, budget, trials, workers, executor,
                             search, out, seed, json_out, debug)
        return
    with handle_errors(debug, json_out):  # a wrong path is answered before torch loads
        check_model_file(model)
        if data:
            check_data_file(data)
    from pydantic import ValidationError

    from compress.errors import GateFailed
    from compress.loading.model import load_model
    from compress.tune import TuneConfig, tune
    from compress.tune.outputs import judged_by, quality

    with handle_errors(debug, json_out):
        try:
            config = TuneConfig(max_degradation=max_degradation, objective=objective, format=fmt, target=target, budget=budget,
                                trials=trials, workers=workers, executor=executor, address=address, seed=seed,
                                search=_search_block(search))
        except ValidationError as exc:
            raise _config_error(exc, search) from None
        handle = declare_output_kinds(load_model(model), output_kind)
        result = tune(handle, config, data, out, on_trial=lambda r: console.print(_describe(r), highlight=False, soft_wrap=True))
        document = {"best": result.best, "closest": result.closest, "baseline": result.baseline, "pareto": result.pareto,
                    "out": str(out), "trials": len(result.trials), "converged": result.converged}
        emit(document, json_out, lambda: stdout_console.print((out / "pareto.md").read_text(), highlight=False, soft_wrap=True))
        if result.best is None and result.closest is None:
            raise GateFailed(f"no trial finished (see the errors above); the study in {out} resumes on the next run")
        if result.best is None:
            raise GateFailed(f"no trial met its gates ({judged_by(config)}); the closest (trial #{result.closest['number']}, "
                             f"{quality(result.closest)}) is kept in {out / 'closest'}")


def _config_error(exc, search) -> Exception:
    """The one-line UsageError for TuneConfig's first validation error, named by its option or --search entry."""
    from compress.errors import UsageError

    error = exc.errors()[0]
    loc = [str(p) for p in error["loc"]]
    message = error["msg"].removeprefix("Value error, ")
    if not loc and message.startswith("search "):  # a choice the format cannot take (TuneConfig's checks)
        return UsageError(f"--search {search}: {message}")
    where = f"--search {search}: {'.'.join(loc[1:])}" if loc[:1] == ["search"] else f"--{'-'.join(loc).replace('_', '-') or 'options'}"
    return UsageError(f"{where}: {message}")


def _describe_lm(result: dict) -> str:
    p = result["params"]
    what = (f"{p['precision']} {p['algorithm']} g{p['block_size']}, {p['keep_float']} float + {p['keep_int8']} int8 of the "
            f"most sensitive, embeddings {p['embeddings']}")
    if "error" in result:
        return f"trial {result['number']} failed: {result['error']} — {what}"
    speed = f", {result['decode_tokens_per_s']:.1f} tok/s" if result["decode_tokens_per_s"] else ""
    return (f"trial {result['number']}: {result['size_bytes']:,} bytes, perplexity x{result['perplexity_ratio']:.4f} "
            f"({'pass' if result['passed'] else 'FAIL'}){speed} — {what}")


def _tune_language_model(model: Path, data, max_degradation, objective, fmt, target, budget, trials, workers, executor,
                         search, out: Path, seed: int, json_out: bool, debug: bool) -> None:
    """`compress tune` of a decoder LM (compress.tune.lm_search): per-layer precision searched against the perplexity gate."""
    from pydantic import ValidationError

    from compress.commands._progress import step_progress
    from compress.errors import GateFailed
    from compress.lm.model import load_lm
    from compress.tune import TuneConfig
    from compress.tune.lm_search import check_lm_tune, tune_lm

    with handle_errors(debug, json_out):
        try:
            config = TuneConfig(max_degradation=max_degradation, objective=objective, format=fmt, target=target,
                                budget=budget, trials=trials, workers=workers, executor=executor, seed=seed,
                                search=_search_block(search))
        except ValidationError as exc:
            raise _config_error(exc, search) from None
        check_lm_tune(config, data)
        with step_progress(transient=json_out) as step:
            step("loading the language model")
            lm = load_lm(model)
            result = tune_lm(lm, config, out, step=step,
                             on_trial=lambda r: console.print(_describe_lm(r), highlight=False, soft_wrap=True, markup=False))
        document = {"language_model": True, "best": result.best, "closest": result.closest, "out": str(out),
                    "trials": len(result.trials), "ranking": result.ranking[:10]}
        emit(document, json_out, lambda: stdout_console.print((out / "pareto.md").read_text(), highlight=False, soft_wrap=True))
        if result.best is None and result.closest is None:
            raise GateFailed(f"no trial finished (see the errors above); trials are in {out / 'trials'}")
        if result.best is None:
            raise GateFailed(f"no trial passed its perplexity gate; the closest (trial #{result.closest['number']}, "
                             f"perplexity x{result.closest['perplexity_ratio']:.4f}) is kept in {out / 'closest'}")

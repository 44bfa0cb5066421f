"""A fleet: many recipes at once, each its own task (local worker process or Ray task), failures isolated.

Every recipe runs on a worker in a temporary directory of its own: its YAML and input files (a model file, a .npz)
are shipped as bytes, its run directory comes back as bytes and lands in ``<out>/<recipe name>/`` on the driver with
every sha256 checked (compress.targets.shipping). A recipe that fails (bad input, a gate, a crash) is one row with its exit
code; the others go on. Latency figures are only compared within a recipe (one node timed all of them); the summary
names the host that timed each recipe's recommendation.

Exit code of the fleet, most fundamental problem first: 2 (some recipe or input is bad: fix it before trusting
anything) > 3 (an environment or internal failure) > 1 (some gate failed) > 0 (every gate of every recipe held).

Example:
    >>> result = run_fleet(["recipes/a.yaml", "recipes/b.yaml"], "runs/fleet", executor="ray", address="auto")
    >>> result.exit_code, [r["exit_code"] for r in result.rows]
    (1, [0, 1])
"""
from __future__ import annotations

import concurrent.futures as cf
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from compress.safety import yamlsafe
from compress.errors import CompressError, UsageError
from compress.recipe.trust import Trust
from compress.targets.shipping import collect, land, pack, unpack, workdir, worker_identity

PRECEDENCE = (2, 3, 1)  # the fleet's exit code: the first of these any recipe had, else 0
SKIPPED = (".stages",)  # the stage cache stays on the worker: only the run directory's results come back


@dataclass
class FleetTask:
    name: str
    recipe: dict          # the parsed YAML; shipped inputs replace their fields on the worker
    inputs: dict          # {"model.source" | "data.name": (file name, bytes)}
    trust: Trust


@dataclass
class FleetResult:
    out_dir: Path
    rows: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    compare: str | None = None   # <out>/compare.html over the landed runs

    @property
    def exit_code(self) -> int:
        codes = {r["exit_code"] for r in self.rows}
        return next((c for c in PRECEDENCE if c in codes), 0)

    def document(self) -> dict:
        return {"out": str(self.out_dir), "exit_code": self.exit_code, "wall_s": self.wall_s, "compare": self.compare,
                "recipes": self.rows}


def run_fleet_task(task: FleetTask) -> dict:
    """On the worker: run one recipe in a fresh temporary directory; never raises for the recipe's own failures."""
    from compress.recipe.loader import parse_recipe
    from compress.recipe.run import run_recipe

    with workdir("compress-fleet-") as work:
        data = _with_inputs(task.recipe, unpack(task.inputs, work))
        worker = worker_identity(work)
        try:
            result = run_recipe(parse_recipe(yaml.safe_dump(data, sort_keys=False), task.name), work / "run",
                                recipe_path=None, trust=task.trust)
        except CompressError as exc:
            return {"name": task.name, "exit_code": exc.exit_code, "error": str(exc), "worker": worker}
        except Exception as exc:  # an internal failure of this recipe only
            cause = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
            return {"name": task.name, "exit_code": 3, "error": cause, "traceback": traceback.format_exc(limit=5), "worker": worker}
        bundle = collect(work / "run", skip=SKIPPED)
        return {"name": task.name, "exit_code": 0 if result.report["passed"] else 1, "worker": worker, **bundle}


def _with_inputs(recipe: dict, paths: dict[str, Path]) -> dict:
    """The recipe with each shipped field (``model.source``, ``data.name``) pointing at the worker-local copy."""
    data = {**recipe, "model": dict(recipe.get("model") or {}), "data": dict(recipe.get("data") or {})}
    for dotted, path in paths.items():
        section, key = dotted.split(".")
        data[section][key] = str(path)
    return data


def prepare(recipe_file: Path, trust: Trust) -> FleetTask:
    """Validate a recipe on the driver (UsageError: exit 2 for this recipe) and pack what its worker needs."""
    from compress.recipe import load_recipe
    from compress.recipe.trust import check_trust

    recipe = load_recipe(recipe_file)
    check_trust(recipe, trust, str(recipe_file))
    files = {}
    if not recipe.model.source.startswith("zoo:"):
        if not Path(recipe.model.source).is_file():
            raise UsageError(f"{recipe_file}: model.source {recipe.model.source} not found; give a model file or zoo:NAME")
        files["model.source"] = recipe.model.source
    if recipe.data.name and Path(recipe.data.name).is_file():
        files["data.name"] = recipe.data.name
    elif recipe.data.name and Path(recipe.data.name).is_dir():
        raise UsageError(f"{recipe_file}: data.name {recipe.data.name} is a folder; a fleet ships files only: make it an .npz")
    inputs = pack(files)
    # the task holds no driver path: shipped fields name the file only, the worker points them at its own copy
    data = _with_inputs(yamlsafe.safe_load(recipe_file.read_text(encoding="utf-8")), {k: Path(name) for k, (name, _) in inputs.items()})
    return FleetTask(recipe_file.stem, data, inputs, trust)


def _names(files: list[Path]) -> list[str]:
    """Run directory names: the recipe file stems, numbered when two recipes share one."""
    names, seen = [], {}
    for file in files:
        seen[file.stem] = seen.get(file.stem, 0) + 1
        names.append(file.stem if seen[file.stem] == 1 else f"{file.stem}-{seen[file.stem]}")
    return names


def run_fleet(recipe_files: list[str | Path], out_dir: str | Path, executor: str = "local", workers: int = 2,
              address: str | None = None, trust: Trust = Trust(), cpus_per_recipe: int = 1,
              progress: Callable[[str, int, list[str]], None] | None = None) -> FleetResult:
    """Run every recipe as its own task; land each run directory under ``out_dir``; one row per recipe.

    ``progress(event, done, running)`` is called as recipes start and finish.
    """
    from compress.tune.executors import open_executor

    started = time.monotonic()
    out_dir = Path(out_dir)
    files = [Path(f) for f in recipe_files]
    result = FleetResult(out_dir)
    rows: dict[str, dict] = {}
    notify = progress or (lambda event, done, running: None)
    with open_executor(executor, workers, address) as pool:
        running: dict[cf.Future, str] = {}
        for name, file in zip(_names(files), files):
            try:
                task = prepare(file, trust)
            except UsageError as exc:
                rows[name] = {"name": name, "recipe": str(file), "exit_code": exc.exit_code, "error": str(exc)}
                continue
            task.name = name
            running[pool.submit(run_fleet_task, task, resources={"num_cpus": cpus_per_recipe})] = name
            rows[name] = {"name": name, "recipe": str(file)}
        notify("started", len(rows) - len(running), list(running.values()))
        while running:
            done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                rows[name].update(_finished(future, out_dir / name))
                notify(name, len(rows) - len(running), list(running.values()))
    result.rows = [rows[name] for name in _names(files)]
    result.compare = _compare(out_dir, [r["run_dir"] for r in result.rows if "run_dir" in r])
    result.wall_s = round(time.monotonic() - started, 2)
    return result


def _compare(out_dir: Path, run_dirs: list[str]) -> str | None:
    """``<out>/compare.html``: the landed runs side by side (`compress report compare` over them)."""
    from compress.safety.io import write_text_atomic
    from compress.report.compare import compare_runs

    if not run_dirs:
        return None
    write_text_atomic(out_dir / "compare.html", compare_runs(run_dirs)[1])
    return str(out_dir / "compare.html")


def _finished(future: cf.Future, run_dir: Path) -> dict:
    """Land a finished recipe's run directory (sha256 checked) and summarize it; a crashed task is exit 3."""
    try:
        outcome = future.result()
    except Exception as exc:  # the worker died or Ray lost the task: this recipe only
        return {"exit_code": 3, "error": f"the task failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"}
    row = {k: v for k, v in outcome.items() if k not in ("files", "sha256", "name")}
    if "files" not in outcome:
        return row
    try:
        land(outcome, run_dir)
    except CompressError as exc:
        return {**row, "exit_code": exc.exit_code, "error": str(exc)}
    return {**row, **summary(run_dir), "verified_sha256": len(outcome["files"])}


def summary(run_dir: Path) -> dict:
    """What the fleet table shows for one landed run: the recommended artifact, its size and loss, the gates."""
    from compress.safety.jsonsafe import read_json

    report = read_json(run_dir / "report.json")
    pick = (report.get("recommended") or {}).get("local-cpu")
    artifacts = {a["name"]: a for a in report["artifacts"]}
    how = "fastest-and-smallest within the limit"
    if pick is None:  # nothing timed (bench off): the smallest artifact that passed its gates
        failed = {g["artifact"] for g in report["gates"] if not g["passed"]}
        passing = [a for a in report["artifacts"] if a["name"] not in failed and a["precision"] != "fp32"]
        chosen = min(passing, key=lambda a: a["size_bytes"], default=None)
        how = "smallest passing its gates (not timed)"
    else:
        chosen = artifacts.get(pick["artifact"])
    timed_on = sorted({(l.get("measured_on") or {}).get("host") for a in report["artifacts"] for l in a["latency"]} - {None})
    return {
        "run_dir": str(run_dir),
        "recommended": None if chosen is None else {"artifact": chosen["name"], "path": chosen["path"], "size_bytes": chosen["size_bytes"],
                                                    "degradation": chosen["metrics"]["degradation"], "how": how, "timed_on": timed_on},
        "gates": {"passed": sum(g["passed"] for g in report["gates"]), "total": len(report["gates"]),
                  "failed": [f"{g['name']}:{g['artifact']}" for g in report["gates"] if not g["passed"]]},
    }

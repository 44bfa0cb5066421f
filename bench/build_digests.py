"""`python -m bench.build_digests`: the sha256 of every artifact compress builds, for "behaviour unchanged" (issue 28).

Runs a fixed matrix through the real CLI (subprocesses of ``python -m compress``): ``zoo train`` of every zoo model
(--epochs 1, seed 0, a fresh checkpoint cache), ``quantize`` of each checkpoint to every format at every precision
that format takes (compress.backends), plus one ``prune``, ``distill`` and ``qat`` of mnist_cnn and one recipe
(recipes/linreg.yaml). Every model and checkpoint file a run writes (.onnx .tflite .pte .pt .pt2) is recorded as
``{run, file, sha256, bytes}``; reports are not (they carry timings).

    --out FILE       write the digests (default bench/results/build_digests.json)
    --check FILE     build again and compare: a table of same/changed/missing/new, exit 1 on any difference
                     (artifacts the stored file marks ``"deterministic": false`` are compared but not counted)
    --only RUN...    only these runs (names as in the JSON, e.g. quantize-mnist_cnn-onnx); their train run comes along
    --twice          build the matrix a second time in a fresh directory and mark what differs as not deterministic
    --keep DIR       build under DIR (first/, second/, check/) and keep the files and each run's log
    --built DIR      with --check: compare the files of an earlier build (DIR = a --keep folder's first/), no building

Example:
    $ python -m bench.build_digests --only quantize-linreg-onnx --out /tmp/d.json
    $ python -m bench.build_digests --only quantize-linreg-onnx --check /tmp/d.json
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
ARTIFACT_SUFFIXES = (".onnx", ".tflite", ".pte", ".pt", ".pt2")
TRAIN_EPOCHS = 1
SEED = 0
QUICK = ["--calib-samples", "16", "--no-bench"]
PASS_MODEL = "mnist_cnn"
RECIPE = "recipes/linreg.yaml"
VERSIONED = ("torch", "numpy", "onnx", "onnxruntime", "onnxscript", "ai-edge-litert", "litert-torch", "ai-edge-quantizer",
             "executorch", "torchao")
# Why an artifact differs between two builds of the same matrix, by run kind and file suffix (found by comparing the
# files of two builds with --twice --keep). A build without --twice marks these as known, a --twice build measures.
KNOWN_CAUSES: dict[tuple[str, str], str] = {
    ("train", ".pt"): "the checkpoint stores the wall-clock training time (metrics.train_seconds, compress/zoo/train.py:90); "
                      "its weights reach the quantize runs, whose files are compared",
    ("prune", ".pt2"): "extra/compress_handle.json stores the input checkpoint's absolute path and sha256 (original_record, "
                       "compress/steps/pipeline.py:102, written by compress/passes/prune_workflow.py:48), so the build folder and the "
                       "train checkpoint's train_seconds reach it; the pruned model's exports are compared",
    ("distill", ".pt"): "the student checkpoint stores library_versions() (compress/zoo/checkpoint.py: python and every "
                        "output package's version), so it changes with the installed set; the student's exports are compared",
}
UNEXPLAINED = "differs between two builds of the same matrix on one machine (cause not identified)"


@dataclass(frozen=True)
class Run:
    """One CLI call of the matrix: ``args`` after ``python -m compress``; ``{dir}`` is the run's own folder and
    ``{ckpt:NAME}`` the checkpoint ``train-NAME`` wrote."""
    name: str
    args: tuple[str, ...]
    needs: tuple[str, ...] = ()


def _checkpoint(model: str) -> str:
    return f"{{ckpt:{model}}}"


def matrix() -> list[Run]:
    """The fixed matrix, trains first (the other runs read their checkpoints)."""
    from compress.backends import formats
    from compress.zoo import ZOO

    trains = [Run(f"train-{m}", ("zoo", "train", m, "--epochs", str(TRAIN_EPOCHS), "--seed", str(SEED),
                                 "--out", f"{{dir}}/{m}.pt")) for m in ZOO]
    quantizes = [Run(f"quantize-{m}-{f.name}", ("quantize", _checkpoint(m), "--format", f.name, "--precision",
                                                ",".join(f.precisions), *QUICK, "--seed", str(SEED), "--out", "{dir}"),
                     (f"train-{m}",))
                 for m in ZOO for f in formats() if f.precisions]
    ckpt, needs = _checkpoint(PASS_MODEL), (f"train-{PASS_MODEL}",)
    passes = [
        Run(f"prune-{PASS_MODEL}", ("prune", ckpt, "--method", "l1-structured", "--sparsity", "0.5", "--finetune-epochs", "1",
                                    "--no-bench", "--out", "{dir}"), needs),
        Run(f"distill-{PASS_MODEL}", ("distill", "--teacher", ckpt, "--student", f"{PASS_MODEL}:width=0.25", "--epochs", "1",
                                      "--no-baseline", "--no-bench", "--out", "{dir}"), needs),
        Run(f"qat-{PASS_MODEL}", ("qat", ckpt, "--epochs", "1", "--no-bench", "--out", "{dir}"), needs),
        Run(f"recipe-{Path(RECIPE).stem}", ("run", str(REPO / RECIPE), "--out", "{dir}", "--set", "stages.1.benchmark.runs=3")),
    ]
    return trains + quantizes + passes


def usage_error(message: str) -> None:
    """Bad input: one line on stderr that says what to do, exit 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def select(runs: list[Run], only: list[str] | None) -> list[Run]:
    """``only`` and the runs they need; an unknown name is a one-line error."""
    if not only:
        return runs
    names = {r.name for r in runs}
    unknown = [n for n in only if n not in names]
    if unknown:
        usage_error(f"--only {unknown[0]}: no such run; pick from: {', '.join(sorted(names))}")
    wanted = set(only) | {need for r in runs if r.name in only for need in r.needs}
    return [r for r in runs if r.name in wanted]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifacts(run_dir: Path) -> list[Path]:
    """The model and checkpoint files a run wrote: not reports, logs or locks, and not hidden folders (a recipe's
    .stages/ cache holds copies of its files under a key that names the stage's inputs)."""
    return sorted(p for p in run_dir.rglob("*") if p.is_file() and p.suffix in ARTIFACT_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(run_dir).parts))


def _resolve(arg: str, run_dir: Path, workdir: Path) -> str:
    """``{dir}`` → the run's folder, ``{ckpt:NAME}`` → the checkpoint ``train-NAME`` wrote."""
    if arg.startswith("{ckpt:"):
        model = arg[len("{ckpt:"):-1]
        return str(workdir / f"train-{model}" / f"{model}.pt")
    return arg.replace("{dir}", str(run_dir))


def build(runs: list[Run], workdir: Path, console: Console) -> tuple[list[dict], list[dict]]:
    """Run ``runs`` under ``workdir`` (its own checkpoint cache) and hash what they wrote: (records, failures)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COMPRESS_CACHE": str(workdir / "cache"), "NO_COLOR": "1"}
    records, failures = [], []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("build", total=len(runs))
        for run in runs:
            progress.update(task, description=run.name)
            run_dir = workdir / run.name
            run_dir.mkdir(parents=True)
            args = [_resolve(a, run_dir, workdir) for a in run.args]
            with (workdir / f"{run.name}.log").open("w") as log:
                code = subprocess.run([sys.executable, "-m", "compress", *args], cwd=workdir, env=env,
                                      stdout=log, stderr=subprocess.STDOUT).returncode
            if code not in (0, 1):  # 1 = a quality gate failed: the artifacts are still written
                last = ((workdir / f"{run.name}.log").read_text().strip().splitlines() or [""])[-1]
                failures.append({"run": run.name, "exit": code, "error": last[:300]})
                console.print(f"[red]{run.name} failed (exit {code}):[/] {last[:300]}")
            records += [{"run": run.name, "file": str(p.relative_to(run_dir)), "sha256": sha256(p),
                         "bytes": p.stat().st_size} for p in artifacts(run_dir)]
            progress.advance(task)
    return records, failures


def _key(record: dict) -> tuple[str, str]:
    return record["run"], record["file"]


def known_cause(record: dict) -> str | None:
    """Why ``record``'s file is known not to be reproducible (KNOWN_CAUSES by run kind and suffix), or None."""
    return KNOWN_CAUSES.get((record["run"].split("-")[0], Path(record["file"]).suffix))


def mark_known(records: list[dict]) -> list[dict]:
    """``records`` with ``deterministic: false`` and the reason where KNOWN_CAUSES names one (a build without --twice)."""
    return [{**r, "deterministic": False, "why": f"known: {known_cause(r)}"} if known_cause(r) else r for r in records]


def mark_nondeterministic(first: list[dict], second: list[dict]) -> list[dict]:
    """``first`` with ``deterministic``/``why`` on every record whose file differs (or is absent) in ``second``."""
    again = {_key(r): r["sha256"] for r in second}
    out = []
    for record in first:
        same = again.get(_key(record)) == record["sha256"]
        out.append({**record, "deterministic": same} | ({} if same else {"why": known_cause(record) or UNEXPLAINED}))
    return out


def compare(stored: list[dict], fresh: list[dict], runs: set[str]) -> list[dict]:
    """One row per artifact of ``runs``: same, changed, missing (stored, not built) or new (built, not stored);
    ``ignored`` where the stored record says the file is not deterministic."""
    old = {_key(r): r for r in stored if r["run"] in runs}
    new = {_key(r): r for r in fresh}
    rows = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        status = ("new" if before is None else "missing" if after is None
                  else "same" if before["sha256"] == after["sha256"] else "changed")
        ignored = status == "changed" and before.get("deterministic") is False
        rows.append({"run": key[0], "file": key[1], "status": status, "ignored": ignored,
                     "why": before.get("why", "") if ignored else ""})
    return rows


def conditions() -> dict:
    """The machine and library versions the digests hold for (a different torch or onnxruntime builds other bytes)."""
    from compress.backends.onnx.cpu_features import cpu_int8_features

    features = cpu_int8_features()
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "cpu": features.get("model", "CPU"),
                        "vnni": bool(features.get("avx512_vnni") or features.get("avx_vnni")),
                        "loadavg_1m_at_start": round(os.getloadavg()[0], 2)},
            "versions": versions,
            "settings": {"train_epochs": TRAIN_EPOCHS, "seed": SEED, "quantize": QUICK, "pass_model": PASS_MODEL,
                         "recipe": RECIPE}}


def _print_check(rows: list[dict], console: Console) -> None:
    table = Table(title="build digests vs stored")
    for column in ("run", "file", "status", "note"):
        table.add_column(column)
    style = {"same": "green", "changed": "red", "missing": "red", "new": "yellow"}
    for row in rows:
        status = "changed (ignored)" if row["ignored"] else row["status"]
        table.add_row(row["run"], row["file"], f"[{'dim' if row['ignored'] else style[row['status']]}]{status}[/]",
                      "not deterministic (why below)" if row["ignored"] else "")
    console.print(table)
    for why in dict.fromkeys(row["why"] for row in rows if row["ignored"]):
        console.print(f"[dim]ignored, not deterministic: {why}[/]")
    counts = {s: sum(r["status"] == s and not r["ignored"] for r in rows) for s in ("same", "changed", "missing", "new")}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items())
                  + f", {sum(r['ignored'] for r in rows)} changed but marked not deterministic (ignored)")


def hashed(runs: list[Run], workdir: Path) -> list[dict]:
    """The records of files already built under ``workdir`` (a --keep folder's ``first``), without building."""
    return [{"run": run.name, "file": str(p.relative_to(workdir / run.name)), "sha256": sha256(p), "bytes": p.stat().st_size}
            for run in runs for p in artifacts(workdir / run.name)]


def check(stored_path: Path, runs: list[Run], workdir: Path, console: Console, built: Path | None = None) -> int:
    """Build ``runs`` (or hash what ``built`` holds) and compare with ``stored_path``: 0 when every deterministic
    artifact is the same, else 1."""
    stored = json.loads(stored_path.read_text())
    fresh, failures = (hashed(runs, built), []) if built else build(runs, workdir, console)
    here = conditions()
    for name, version in stored.get("versions", {}).items():
        if here["versions"].get(name) != version:
            console.print(f"[yellow]{name} {here['versions'].get(name)} here, {version} when stored: bytes may differ for that reason[/]")
    if here["machine"]["vnni"] != stored["machine"].get("vnni"):
        console.print("[yellow]int8 dot-product instructions (VNNI) differ from the stored machine's: ONNX int8 files differ "
                      "for that reason (reduce_range is chosen per CPU)[/]")
    rows = compare(stored["artifacts"], fresh, {r.name for r in runs})
    _print_check(rows, console)
    different = [r for r in rows if r["status"] != "same" and not r["ignored"]]
    for row in different:
        print(f"{row['status']}: {row['run']}/{row['file']}", file=sys.stderr)
    return 1 if different or failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.build_digests", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "build_digests.json")
    parser.add_argument("--check", type=Path)
    parser.add_argument("--only", nargs="+")
    parser.add_argument("--twice", action="store_true")
    parser.add_argument("--keep", type=Path, help="build here and keep the files (default: a temporary folder)")
    parser.add_argument("--built", type=Path, help="with --check: compare the files of an earlier --keep FOLDER/first, "
                                                   "without building")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    if args.keep and args.keep.exists():
        usage_error(f"--keep {args.keep}: already exists; name a new folder (every build starts fresh)")
    if args.built and not (args.check and args.built.is_dir()):
        usage_error(f"--built {args.built}: needs --check FILE and a folder a --keep build left (its 'first')")
    if args.check and not args.check.is_file():
        usage_error(f"--check {args.check}: no such file; write one first with --out")
    runs = select(matrix(), args.only)
    with tempfile.TemporaryDirectory(prefix="build-digests-") as tmp:
        workdir = args.keep or Path(tmp)
        if args.check:
            return check(args.check, runs, workdir / "check", console, args.built)
        header = conditions()
        records, failures = build(runs, workdir / "first", console)
        write(args.out, header, runs, failures, mark_known(records), twice=False)
        if args.twice:
            console.rule("second build, fresh folder, same seeds")
            second, _ = build(runs, workdir / "second", console)
            records = mark_nondeterministic(records, second)
            for r in records:
                if not r["deterministic"]:
                    console.print(f"[yellow]not reproducible:[/] {r['run']}/{r['file']}: {r['why']}")
            write(args.out, header, runs, failures, records, twice=True)
    console.print(f"{len(records)} artifacts from {len(runs)} runs ({len(failures)} failed) → {args.out}")
    return 1 if failures else 0


def write(out: Path, header: dict, runs: list[Run], failures: list[dict], records: list[dict], twice: bool) -> None:
    """The digests document, renamed into place (``twice``: whether ``deterministic`` was measured)."""
    header["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    document = {**header, "twice": twice, "runs": [r.name for r in runs], "failures": failures, "artifacts": records}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(document, indent=1) + "\n")
    partial.replace(out)


if __name__ == "__main__":
    sys.exit(main())

"""Trials on a Ray cluster with no shared filesystem: the model (and a data file) go through the object store, the
trial's files come back as bytes and land in the driver's study directory with their sha256 checked.

The local executor runs ``run_trial`` on the driver's paths (same machine); ``open_runner`` picks the way.

Example:
    >>> runner = open_runner("ray", pool, handle.source_path, data, out_dir)
    >>> future = runner.submit(spec)                # the spec sent holds no driver path
    >>> result = runner.land(future.result())       # files written to out_dir/trials/trial-0003, paths point there
"""
from __future__ import annotations

import concurrent.futures as cf
from dataclasses import replace
from pathlib import Path

from compress.targets.shipping import collect, land, pack, unpack, workdir, worker_identity
from compress.tune.trial import TrialSpec, run_trial


def remote_run_trial(spec: TrialSpec, inputs: dict) -> dict:
    """On the worker: write the inputs into a fresh temporary directory, run the trial there, return its files."""
    with workdir("compress-trial-") as work:
        paths = unpack(inputs, work)
        local = replace(spec, source=str(paths["model"]), data=str(paths["data"]) if "data" in paths else spec.data,
                        out_dir=str(work / "trials"))
        result = run_trial(local)
        folder = work / "trials" / f"trial-{spec.number:04d}"
        return {"result": result, **collect(folder), "worker": worker_identity(work)}


class ShippedRunner:
    """Ray: inputs put in the object store once, shared by every trial; outputs landed on the driver."""

    def __init__(self, pool, source: str, data: str | None, out_dir: Path):
        files = {"model": source, **({"data": data} if data and Path(data).is_file() else {})}
        self.pool, self.out_dir, self.shipped = pool, out_dir, set(files)
        self.inputs = pool.put(pack(files))

    def submit(self, spec: TrialSpec) -> cf.Future:
        remote = replace(spec, source=Path(spec.source).name, out_dir="",
                         data=Path(spec.data).name if "data" in self.shipped else spec.data)
        return self.pool.submit(remote_run_trial, remote, self.inputs)

    def land(self, bundle: dict) -> dict:
        result = bundle["result"]
        folder = self.out_dir / "trials" / f"trial-{result['number']:04d}"
        land(bundle, folder)
        return {**result, "artifact": str(folder / Path(result["artifact"]).name), "report": str(folder / "report.json"),
                "worker": bundle["worker"]}


class LocalRunner:
    """Worker processes on this machine read the driver's paths directly."""

    def __init__(self, pool):
        self.pool = pool

    def submit(self, spec: TrialSpec) -> cf.Future:
        return self.pool.submit(run_trial, spec)

    def land(self, result: dict) -> dict:
        return result


def open_runner(executor: str, pool, source: str, data: str | None, out_dir: Path) -> ShippedRunner | LocalRunner:
    return ShippedRunner(pool, source, data, out_dir) if executor == "ray" else LocalRunner(pool)

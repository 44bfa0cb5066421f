"""manifest.json of a run directory: every file in it with its size and sha256, and for each artifact its format,
precision, verification and whether it is recommended; ``outputs`` maps each path to its sha256 as recipe and fleet
manifests do, so one reader checks any run's copy.

Example:
    >>> manifest = write_manifest(Path("runs/mnist"), report)
    >>> manifest["outputs"]["model.int8.onnx"] == manifest["files"][2]["sha256"]
    True
    >>> [f["path"] for f in manifest["files"] if f.get("recommended")]
    ['model.int8.onnx']
"""
from __future__ import annotations

from pathlib import Path

from compress.safety.io import sha256_file, write_json_atomic

MANIFEST = "manifest.json"


def recommended_artifacts(report: dict) -> set[str]:
    """Names of the artifacts the report recommends (for this CPU or per format)."""
    recommended = report.get("recommended") or {}
    picks = [recommended.get("local-cpu"), *(recommended.get("by_format") or {}).values()]
    return {pick["artifact"] for pick in picks if pick}


def _parts(run_dir: Path, report: dict) -> dict[str, dict]:
    """Each file of each artifact (a multi-file artifact: its data files too), by path relative to ``run_dir``."""
    from compress.catalog import artifact_files

    return {part.relative_to(run_dir).as_posix(): artifact for artifact in report["artifacts"]
            if (run_dir / artifact["path"]).exists() for part in artifact_files(run_dir / artifact["path"])}


def _describe(relative: str, parts: dict[str, dict], picks: set[str]) -> dict:
    artifact = parts.get(relative)
    if artifact is not None:
        failed = artifact.get("status") == "failed"
        return {"role": "failed attempt" if failed else "artifact", "artifact": artifact["name"],
                "format": artifact["format"], "precision": artifact["precision"],
                "verified_in": list(artifact.get("verified_in") or []), "verified": not failed and bool(artifact.get("verified_in")),
                "recommended": artifact["name"] in picks}
    if relative.startswith("failed/"):
        return {"role": "failed attempt", "verified": False, "recommended": False}
    return {"role": "report" if relative.startswith("report.") else "other"}


def write_manifest(run_dir: Path, report: dict) -> dict:
    """Write ``run_dir``/manifest.json (atomically) for the files now in ``run_dir``, described by ``report``; return it."""
    run_dir = Path(run_dir)
    picks, parts = recommended_artifacts(report), _parts(run_dir, report)
    files = sorted(p for p in run_dir.rglob("*")
                   if p.is_file() and p.name != MANIFEST and not any(part.startswith(".") for part in p.relative_to(run_dir).parts))
    rows = []
    for path in files:
        relative = path.relative_to(run_dir).as_posix()
        rows.append({"path": relative, "size_bytes": path.stat().st_size, "sha256": sha256_file(path),
                     **_describe(relative, parts, picks)})
    manifest = {"command": report.get("command"), "source": report.get("source"), "passed": report.get("passed"),
                "files": rows, "outputs": {row["path"]: row["sha256"] for row in rows}}
    write_json_atomic(run_dir / MANIFEST, manifest)
    return manifest

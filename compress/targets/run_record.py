"""What the run that wrote an artifact recorded about it, read as data: the file's digest, its verdict, its data.

A run directory is data. ``compress verify`` reads its report.json (next to the artifact, or above ``failed/``) and
trusts none of it blindly: the file must still have the sha256 its run recorded (else exit 2, nothing written), a
verdict the run reached (a failed gate, failed verification) stays the file's verdict, and a dataset named as
``package.module:function`` is imported only when the command line says ``--trust-code-from``.

Example:
    >>> record = run_record(Path("runs/mnist/model.int8.onnx"))
    >>> record.check_unchanged()               # UsageError when the file's bytes differ from the report's sha256
    >>> record.failures()                       # [] when the run passed it; else ['gate max_degradation failed: ...']
    >>> record.data(Trust())                    # ('digits28', None); UsageError for code the command line did not allow
    ('digits28', None)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compress.errors import UsageError
from compress.recipe.trust import CodeImport, Trust
from compress.safety.rundir import FAILED


@dataclass(frozen=True)
class RunRecord:
    artifact: Path
    report_path: Path
    report: dict
    entry: dict | None  # the artifact's entry in report["artifacts"]; None when the report does not list the file

    def check_unchanged(self, remedy: str = "or verify a copy outside the run directory with --reference") -> None:
        """UsageError (exit 2) naming the file when its bytes are not the ones its run verified (``remedy`` ends it)."""
        from compress.backends import artifact_sha256

        recorded = (self.entry or {}).get("sha256")
        if not isinstance(recorded, str):
            return
        now = artifact_sha256(self.artifact)
        if now != recorded:
            raise UsageError(f"{self.artifact} changed since its run (sha256 {now[:12]}… now, {recorded[:12]}… in "
                             f"{self.report_path}): its figures no longer describe it; re-run the command that wrote it, "
                             f"{remedy}")

    def failures(self) -> list[str]:
        """What the run failed this file on, in words (empty: it passed, or the report does not list it)."""
        if self.entry is None:
            return []
        gates = [g for g in self.report.get("gates") or [] if isinstance(g, dict)
                 and g.get("artifact") == self.entry.get("name") and g.get("passed") is False]
        found = [str(g.get("reason")) if g.get("name") == "verified" else f"gate {g.get('name')} failed: {g.get('reason')}"
                 for g in gates]
        if self.entry.get("status") == "failed" and not any(g.get("name") == "verified" for g in gates):
            found.insert(0, f"failed verification: {self.entry.get('failure')}")
        return found

    @property
    def failed_verification(self) -> bool:
        """Whether its run could not verify the file at all (it was kept under failed/ for debugging)."""
        return (self.entry or {}).get("status") == "failed"

    def _section(self, name: str) -> dict:
        value = self.report.get(name)
        return value if isinstance(value, dict) else {}

    def reference(self) -> str | None:
        """The model the run started from (``source.path``; relative to the run directory when it is not found as given)."""
        path = self._section("source").get("path")
        if not isinstance(path, str) or not path:
            return None
        beside = self.report_path.parent / path
        return str(beside) if not Path(path).is_file() and beside.is_file() else path

    def reference_warning(self, reference: str) -> str | None:
        """A warning when ``reference`` is the run's source model and its bytes differ from the recorded sha256."""
        from compress.safety.io import sha256_file

        recorded, source = self._section("source").get("sha256"), self.reference()
        if not isinstance(recorded, str) or source is None or not _same_file(Path(source), Path(reference)):
            return None
        now = sha256_file(reference)
        if now == recorded:
            return None
        return (f"reference {reference} changed since the run (sha256 {recorded[:12]}… then, {now[:12]}… now): "
                "parity is measured against other weights than the run's")

    def split_seed(self) -> int | None:
        seed = self._section("dataset").get("split_seed")
        return seed if isinstance(seed, int) else None

    def data(self, trust: Trust) -> tuple[str | None, str | None]:
        """The ``--data`` the run used and a warning when its file changed; UsageError when it names code ``trust``
        does not allow (compress.data.origin)."""
        from compress.data.origin import recorded_data

        dataset = self._section("dataset")
        field = "source" if dataset.get("source") else "name"
        _refuse_untrusted_data(dataset.get(field), f"{self.report_path} dataset.{field}", trust)  # what recorded_data returns
        return recorded_data(dataset)


def _refuse_untrusted_data(spec: object, where: str, trust: Trust) -> None:
    """UsageError (exit 2) when ``spec``, read from a file (``where`` names the file and field), is a
    ``package.module:function`` the command line did not allow; anything else passes.

    Example:
        >>> _refuse_untrusted_data("tempfile:mkdtemp", "runs/x/report.json dataset.name", Trust())
        Traceback (most recent call last):
        compress.errors.UsageError: runs/x/report.json dataset.name names code to import and run ('tempfile:mkdtemp'): ...
    """
    from compress.data.registry import names_callable

    if spec is not None and not isinstance(spec, str):
        raise UsageError(f"{where} is not a dataset name ({type(spec).__name__}); pass --data")
    if spec is None or not names_callable(spec):
        return
    item = CodeImport(where, spec)
    if not trust.allows(item):
        raise UsageError(f"{where} names code to import and run ({spec!r}), and a file is data: pass --data, or "
                         f"--trust-code-from {item.module.split('.')[0]} if you mean to run it")


def run_record(artifact: str | Path) -> RunRecord | None:
    """The record of the run directory holding ``artifact`` (its report.json beside it, or above ``failed/``); None
    when there is none. An unreadable report.json is exit 2 (compress.safety.jsonsafe.read_json)."""
    from compress.safety.jsonsafe import read_json

    artifact = Path(artifact)
    folder = artifact.parent
    places = [folder / "report.json"] + ([folder.parent / "report.json"] if folder.name == FAILED else [])
    path = next((p for p in places if p.is_file()), None)
    if path is None:
        return None
    report = read_json(path)
    if not isinstance(report, dict):
        raise UsageError(f"{path} is not a report (a JSON object); verify a copy of {artifact.name} outside the run directory")
    entries = [a for a in report.get("artifacts") or [] if isinstance(a, dict) and isinstance(a.get("path"), str)]
    entry = next((a for a in entries if _same_file(path.parent / a["path"], artifact)), None)
    return RunRecord(artifact, path, report, entry)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a symlink loop names no file
        return False

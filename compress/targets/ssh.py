"""The ssh target: an ARM board (or any Linux box) reached with the system OpenSSH client.

Each run makes a private temporary folder on the device (``mktemp -d``), copies the device runner, the model and any
inputs there with scp, runs the runner with the device's Python, collects its JSON (and outputs), and removes the
folder. Key authentication only (``BatchMode``: never a password prompt), ``ConnectTimeout`` and keep-alives so a dead
host cannot hang the run, and host key checking on unless ``insecure=True`` (which the latency entry states). User and
host are checked (no leading ``-``) and every ssh/scp command line ends its options with ``--``.

Example:
    >>> target = SshTarget("ssh://pi@192.0.2.7:22", identity="~/.ssh/id_ed25519", python="python3")
    >>> target.run(RunRequest(Path("model.int8.tflite"), runs=100)).report["environment"]["machine"]
    'aarch64'
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from compress.errors import EnvironmentFailure, UsageError
from compress.targets.base import (
    register_target,
    DEFAULT_TIMEOUT_S, RUNNER_PATH, RunRequest, RunResult, last_line, load_outputs, parse_runner_output, quote, run_command,
    save_inputs,
)
from compress.targets.local import describe_environment

CONNECT_TIMEOUT_S = 10
UNREACHABLE = ("Connection refused", "Connection timed out", "No route to host", "Could not resolve hostname",
               "Network is unreachable", "Connection closed", "Connection reset", "timed out")


# a user or host that starts with '-' would be read by ssh/scp as an option (-oProxyCommand=... runs a command)
SAFE_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
SAFE_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")  # a name, IPv4, or IPv6


def parse_ssh_url(url: str) -> tuple[str | None, str, int]:
    """``ssh://user@host:port`` → (user, host, port); UsageError with the expected form otherwise.

    User and host are letters, digits and ``._-`` (never a leading ``-``), or an IPv6 address in brackets.
    """
    parts = urlsplit(url)
    try:
        port = parts.port or 22
    except ValueError:
        raise UsageError(f"bad port in {url!r}; write ssh://user@host:2222") from None
    if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(f"bad ssh target {url!r}; write ssh://user@host or ssh://user@host:port")
    user = unquote(parts.username) if parts.username else None
    if parts.password is not None or (user is not None and not SAFE_USER.fullmatch(user)):
        raise UsageError(f"bad user in ssh target {url!r}: use letters, digits, '.', '_' and '-' (not first); write ssh://user@host")
    if not SAFE_HOST.fullmatch(parts.hostname):
        raise UsageError(f"bad host in ssh target {url!r}: use a host name or IP address (letters, digits, '.', '-', not first)")
    return user, parts.hostname, port


@register_target("ssh://user@host[:port]", prefix="ssh://", args=lambda spec: (spec,))
class SshTarget:
    """Runs the device runner on ``ssh://user@host[:port]`` with the device's ``python``."""

    emulated = False
    OPTIONS = ("insecure", "identity", "known_hosts", "python", "timeout_s", "connect_timeout_s")

    def __init__(self, url: str, insecure: bool = False, identity: str | Path | None = None, known_hosts: str | Path | None = None,
                 python: str | None = None, timeout_s: float | None = None, connect_timeout_s: float | None = None):
        self.user, self.host, self.port = parse_ssh_url(url)
        self.name = f"ssh://{self.user + '@' if self.user else ''}{self.host}:{self.port}"
        self.insecure = bool(insecure)
        self.identity = Path(identity).expanduser() if identity else None
        if self.identity is not None and not self.identity.is_file():
            raise UsageError(f"{self.name}: identity file {self.identity} not found")
        self.known_hosts = Path(known_hosts).expanduser() if known_hosts else None
        if self.known_hosts is not None and not self.insecure and not self.known_hosts.is_file():
            raise UsageError(f"{self.name}: known_hosts file {self.known_hosts} does not exist; check the path, or create "
                             f"it with ssh-keyscan -p {self.port} {self.host} > {self.known_hosts}")
        self.python = python or "python3"
        self.timeout_s = float(timeout_s or DEFAULT_TIMEOUT_S)
        self.connect_timeout_s = int(connect_timeout_s or CONNECT_TIMEOUT_S)
        self.notes = ["host key NOT checked (--insecure): the device's identity was not verified"] if self.insecure else []

    # --- the ssh/scp command lines ---

    def _options(self) -> list[str]:
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}", "-o", "ServerAliveInterval=5",
                   "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
        if self.insecure:
            options += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        else:
            options += ["-o", "StrictHostKeyChecking=yes"]
            if self.known_hosts:
                options += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.identity:
            options += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        return options

    @property
    def _destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def _ssh(self, remote_command: str, timeout_s: float, what: str):
        command = ["ssh", *self._options(), "-p", str(self.port), "--", self._destination, remote_command]
        done = run_command(command, self.name, timeout_s, what=what)
        if done.returncode == 255:  # ssh's own failure (connection, authentication, host key)
            raise EnvironmentFailure(f"{self.name}: {self._ssh_failure(done.stderr)}")
        return done

    def _scp(self, sources: list[str], destination: str, what: str) -> None:
        command = ["scp", "-q", *self._options(), "-P", str(self.port), "--", *sources, destination]
        done = run_command(command, self.name, self.timeout_s, what=what)
        if done.returncode != 0:
            raise EnvironmentFailure(f"{self.name}: copying {what} failed: {self._ssh_failure(done.stderr)}")

    def _ssh_failure(self, stderr: str) -> str:
        text = stderr or ""
        line = last_line(text)
        if "Permission denied" in text or "Too many authentication failures" in text:
            return f"authentication refused ({line}); install your public key in the device's authorized_keys or pass --identity"
        if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "No ED25519 host key is known" in text:
            return (f"host key not known or changed ({line}); add it to known_hosts (ssh-keyscan -p {self.port} {self.host}) "
                    "or pass --insecure to skip the check")
        if any(marker in text for marker in UNREACHABLE):
            return f"unreachable ({line})"
        return line

    # --- a run ---

    def run(self, request: RunRequest) -> RunResult:
        folder = self._make_remote_folder()
        try:
            with tempfile.TemporaryDirectory(prefix="compress-ssh-") as local:
                local = Path(local)
                files = [str(RUNNER_PATH), str(Path(request.artifact).resolve())]
                if request.inputs is not None:
                    files.append(str(save_inputs(request.inputs, local / "inputs.npz")))
                self._scp(files, f"{self._scp_host()}:{folder}/", "the runner and the model")
                model = f"{folder}/{Path(request.artifact).name}"
                inputs = f"{folder}/inputs.npz" if request.inputs is not None else None
                outputs = f"{folder}/outputs.npz" if request.want_outputs else None
                args = request.runner_args(model, inputs, outputs)
                done = self._ssh(f"cd {quote([folder])} && {quote([self.python, f'{folder}/{RUNNER_PATH.name}', *args])}",
                                 self.timeout_s, "the runner")
                if done.returncode == 127:
                    raise EnvironmentFailure(f"{self.name}: {self.python} not found on the device ({last_line(done.stderr)}); "
                                             "install Python 3 there or pass --remote-python")
                report = parse_runner_output(done, self.name)
                result = RunResult(report)
                if outputs:
                    self._scp([f"{self._scp_host()}:{outputs}"], str(local / "outputs.npz"), "the outputs back")
                    result.outputs = load_outputs(local / "outputs.npz")
                return result
        finally:
            self._remove_remote_folder(folder)

    def _scp_host(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" if self.user else host

    def _make_remote_folder(self) -> str:
        done = self._ssh("mktemp -d /tmp/compress-XXXXXXXX", self.connect_timeout_s * 3 + 30, "mktemp")
        folder = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if done.returncode != 0 or not re.fullmatch(r"/tmp/compress-[A-Za-z0-9]+", folder):
            raise EnvironmentFailure(f"{self.name}: could not make a temporary folder on the device ({last_line(done.stderr or done.stdout)})")
        return folder

    def _remove_remote_folder(self, folder: str) -> None:
        try:
            self._ssh(f"rm -rf {quote([folder])}", self.connect_timeout_s * 3 + 30, "cleanup")
        except EnvironmentFailure:
            pass  # the device went away: nothing more to clean from here

    def describe(self, report: dict) -> str:
        return f"{describe_environment(report.get('environment', {}))} ({self.host})"

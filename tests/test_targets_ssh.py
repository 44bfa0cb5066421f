"""The ssh target end to end against a real OpenSSH server on 127.0.0.1 (started here, on a free port).

The fixture installs Debian's openssh-server when /usr/sbin/sshd is missing (CI runs as root), makes host and user
keys and a known_hosts file in a temporary folder, and runs ``sshd -D`` with its own config. The "device" Python is
this venv's, so numpy and the runtimes exist there.
"""
from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

SSHD = Path("/usr/sbin/sshd")


def ensure_openssh() -> None:
    if SSHD.exists() and shutil.which("ssh") and shutil.which("scp") and shutil.which("ssh-keygen"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "openssh-server", "openssh-client"], check=True, env=env,
                   capture_output=True, timeout=600)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, capture_output=True, timeout=60)
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    ensure_openssh()
    folder = tmp_path_factory.mktemp("sshd")
    folder.chmod(0o700)
    host_key, user_key, stranger_key = keygen(folder / "host_key"), keygen(folder / "id_user"), keygen(folder / "id_stranger")
    (folder / "authorized_keys").write_text(Path(f"{user_key}.pub").read_text())
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {folder}/sshd.pid
AuthorizedKeysFile {folder}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
""")
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {Path(f'{host_key}.pub').read_text().split()[0]} {Path(f'{host_key}.pub').read_text().split()[1]}\n")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation folder
    log = open(folder / "sshd.log", "w")
    server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"sshd exited: {(folder / 'sshd.log').read_text()}")
            time.sleep(0.2)
    else:
        server.kill()
        pytest.fail("sshd did not start listening within 30 s")
    yield {"url": f"ssh://{getpass.getuser()}@127.0.0.1:{port}", "port": port, "identity": user_key, "stranger": stranger_key,
           "known_hosts": known_hosts, "folder": folder}
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))

    def forward(self, x):
        return self.body(x)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    torch.onnx.export(Tiny().eval(), (torch.zeros(1, 1, 8, 8),), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return path


def remote_folders() -> set[str]:
    return {p.name for p in Path("/tmp").glob("compress-*") if p.is_dir() and re.fullmatch(r"compress-[A-Za-z0-9]{8}", p.name)}


def ssh_args(sshd, *extra):
    return ["--identity", sshd["identity"], "--known-hosts", sshd["known_hosts"], "--remote-python", sys.executable, *extra]


def test_bench_over_ssh_end_to_end_lands_in_json_and_cleans_up(sshd, tiny_onnx, cli):
    before = remote_folders()
    result = cli("bench", tiny_onnx, "--target", sshd["url"], "--runs", "30", "--warmup", "3", "--threads", "1", "--json",
                 *ssh_args(sshd))
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)["results"][0]
    assert entry["target"] == f"ssh://{getpass.getuser()}@127.0.0.1:{sshd['port']}"
    assert entry["runtime"] == "onnxruntime" and entry["emulated"] is False and entry["runs"] == 30 and entry["warmup"] == 3
    assert 0 < entry["p50_ms"] <= entry["p90_ms"] <= entry["p99_ms"]
    assert entry["median_ci95_ms"][0] <= entry["p50_ms"] <= entry["median_ci95_ms"][1]
    assert entry["load_ms"] > 0 and entry["first_inference_ms"] > 0 and entry["peak_memory_bytes"] > 0
    assert "127.0.0.1" in entry["device"] and "cpus" in entry["device"]
    assert not any("NOT checked" in w for w in entry["warnings"])
    assert remote_folders() == before  # the temporary folder on the "device" is gone


def test_ssh_parity_outputs_match_the_local_runtime(sshd, tiny_onnx):
    from compress.runtimes import open_runner
    from compress.targets.base import RunRequest, open_target

    x = np.random.default_rng(1).standard_normal((7, 1, 8, 8)).astype(np.float32)
    target = open_target(sshd["url"], identity=sshd["identity"], known_hosts=sshd["known_hosts"], python=sys.executable)
    result = target.run(RunRequest(tiny_onnx, batch=4, inputs=(x,), want_outputs=True))
    expected = open_runner(tiny_onnx).run((x,))[0]
    assert result.outputs[0].shape == (7, 5)
    np.testing.assert_allclose(result.outputs[0], expected, rtol=1e-5, atol=1e-6)


def test_pte_over_ssh_runs_in_executorch_like_locally(sshd, tmp_path, cli):
    pytest.importorskip("executorch")
    from compress.backends.pte.export import export_pte
    from compress.catalog import QuantizeJob
    from compress.loading.model import ModelHandle
    from compress.runtimes import open_runner
    from compress.loading.spec import InputSpec, TensorSpec
    from compress.targets.base import RunRequest, open_target

    handle = ModelHandle(Tiny().eval(), InputSpec((TensorSpec("image", (-1, 1, 8, 8)),)), "mem", "pickle", "")
    program = export_pte(QuantizeJob(handle, "fp32", tmp_path / "tiny.fp32.pte")).path
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)
    target = open_target(sshd["url"], identity=sshd["identity"], known_hosts=sshd["known_hosts"], python=sys.executable)
    result = target.run(RunRequest(program, batch=1, inputs=(x,), want_outputs=True))
    np.testing.assert_allclose(result.outputs[0], open_runner(program).run((x,))[0], rtol=1e-5, atol=1e-6)
    timed = cli("bench", program, "--target", sshd["url"], "--runs", "10", "--warmup", "2", "--json", *ssh_args(sshd))
    assert timed.exit_code == 0, timed.output
    entry = json.loads(timed.stdout)["results"][0]
    assert entry["runtime"] == "executorch" and entry["p50_ms"] > 0 and entry["emulated"] is False and entry["runs"] <= 10


def test_insecure_skips_host_key_check_and_says_so(sshd, tiny_onnx, cli, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    strict = cli("bench", tiny_onnx, "--target", sshd["url"], "--runs", "3", "--identity", sshd["identity"], "--known-hosts", empty,
                 "--remote-python", sys.executable)
    assert strict.exit_code == 3
    assert "host key not known" in strict.output and sshd["url"].split("@")[1] in strict.output
    loose = cli("bench", tiny_onnx, "--target", sshd["url"], "--runs", "3", "--identity", sshd["identity"], "--insecure",
                "--remote-python", sys.executable, "--json")
    assert loose.exit_code == 0, loose.output
    assert any("host key NOT checked" in w for w in json.loads(loose.stdout)["results"][0]["warnings"])


@pytest.mark.parametrize("case", ["refused auth", "unreachable", "missing runtime", "unloadable artifact"])
def test_environment_failures_exit_3_with_one_line_naming_the_target(sshd, tiny_onnx, cli, tmp_path, case):
    artifact, args, url = tiny_onnx, ssh_args(sshd), sshd["url"]
    if case == "refused auth":
        args = ["--identity", sshd["stranger"], "--known-hosts", sshd["known_hosts"], "--remote-python", sys.executable]
        expected = "authentication refused"
    elif case == "unreachable":
        url = f"ssh://{getpass.getuser()}@127.0.0.1:{free_port()}"  # nothing listens there
        expected = "unreachable"
    elif case == "missing runtime":
        bare = shutil.which("python3", path="/usr/bin")
        assert bare and subprocess.run([bare, "-c", "import onnxruntime"], capture_output=True).returncode != 0
        args = ["--identity", sshd["identity"], "--known-hosts", sshd["known_hosts"], "--remote-python", bare]
        expected = "is not installed"
    else:
        from onnx import TensorProto, helper

        artifact = tmp_path / "broken.onnx"  # an ONNX graph no runtime has an op for (random bytes are refused locally)
        x, y = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in "xy")
        artifact.write_bytes(helper.make_model(helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "g", [x], [y])).SerializeToString())
        expected = "could not load broken.onnx"
    started = time.monotonic()
    result = cli("bench", artifact, "--target", url, "--runs", "3", "--timeout", "120", *args)
    assert result.exit_code == 3, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0] and url.split("@")[1].split(":")[0] in lines[0], result.output
    assert time.monotonic() - started < 60


def test_bad_ssh_url_is_a_usage_error(cli, tiny_onnx):
    result = cli("bench", tiny_onnx, "--target", "ssh://127.0.0.1:notaport")
    assert result.exit_code == 2 and "ssh://user@host" in result.output

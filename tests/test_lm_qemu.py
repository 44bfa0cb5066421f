"""A decoder LM's ONNX files on ARM64: greedy tokens in the qemu-arm64 userspace (onnxruntime's aarch64 wheel on an
emulated cortex-a76) against this x86 machine's: the same tokens for int4 with float compute and an int8 embedding
table (MatMulNBits, GroupQueryAttention, GatherBlockQuantized); for 8da4w (int8 compute, kernels that differ by
architecture) the same tokens up to a near tie; a .pte is refused with the reason (no ExecuTorch there)."""
from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from compress.errors import UsageError
from compress.targets.qemu_lm import greedy_here, greedy_on_qemu
from tests.cli_checks import json_output
from tests.lm_models import hf_dir
from tests.test_targets_qemu import arm64, monkeypatch_module  # noqa: F401  (the cached ARM64 userspace)


@pytest.fixture(scope="module")
def run(tmp_path_factory, cli):
    source = hf_dir(tmp_path_factory.mktemp("lm") / "llama", "llama")
    out = tmp_path_factory.mktemp("run")
    report = json_output(cli("quantize", source, "--format", "onnx", "--precision", "int4-weight,8da4w", "--embeddings",
                             "int8-weight", "--no-bench", "--json", "--out", out))
    return report, out


def test_same_greedy_tokens_on_arm64(arm64, run):
    report, out = run
    prompt = Tokenizer.from_file(str(out / "tokenizer.json")).encode("The Python language is").ids
    for artifact in report["artifacts"]:
        here = greedy_here(out / artifact["path"], prompt, 16)
        arm = greedy_on_qemu(out / artifact["path"], prompt, 16)
        assert arm["machine"] == "aarch64" and here["machine"] == "x86_64"
        first = next((i for i, (a, b) in enumerate(zip(here["tokens"], arm["tokens"])) if a != b), None)
        if artifact["precision"] == "int4-weight":
            assert first is None, (artifact["name"], here, arm)
        else:  # int8 activations rounded by each architecture's kernel: a flip only where x86's choice was a near tie
            assert first is None or here["margins"][first] < 0.1, (artifact["name"], here, arm)
        assert len(set(here["tokens"])) > 1  # a real continuation, not one token repeated


def test_pte_refused_with_the_reason(tmp_path):
    program = tmp_path / "model.8da4w.pte"
    program.write_bytes(b"\0")
    with pytest.raises(UsageError, match="not ExecuTorch"):
        greedy_on_qemu(program, [1, 2], 4)

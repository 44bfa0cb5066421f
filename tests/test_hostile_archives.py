"""Hostile zip archives: one reading for every reader, and bounded work, whatever the file claims.

Model files (.pt2, TorchScript, zoo and state_dict checkpoints) are read by torch's zip reader (miniz), .npz files by
Python's zipfile. An archive whose entry names repeat reads differently in each, so a check that reads one copy proves
nothing about the copy torch loads: every such archive is refused (exit 2, one line, no sentinel, nothing written),
through every path a user takes (quantize, bench --runtime torch, a recipe, run --set, a forged stage cache). Bombs
(deflate ratio, declared sizes, sizes that lie, explosive shape expressions) are refused in seconds, naming the limit.
"""
from __future__ import annotations

import json
import os
import struct
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli_checks import json_output
from tests.test_hostile_code import (Tiny, Touch, assert_refused, poisoned_copy, rewrite, save_program, staged_run,  # noqa: F401
                                     torch_pickle)

CONSTANTS = "data/constants/model_constants_config.json"
WEIGHTS = "data/weights/model_weights_config.json"
REPEATED = "appears more than once"


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    return save_program(tmp_path_factory.mktemp("program") / "tiny.pt2")


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32))
    return path


def with_decoys(source: Path, target: Path, decoys: dict[str, bytes], extra: dict[str, bytes] | None = None) -> Path:
    """A copy of the zip ``source`` with ``decoys`` (names relative to its folder) written before the originals of the
    same names, then ``extra`` entries: the layout of the issue 25 attack."""
    with zipfile.ZipFile(source) as archive:
        prefix = archive.namelist()[0].split("/", 1)[0] + "/"
        originals = [(name, archive.read(name)) for name in archive.namelist()]
    with warnings.catch_warnings(), zipfile.ZipFile(target, "w") as out:
        warnings.simplefilter("ignore")  # zipfile warns about the repeated names this test writes on purpose
        for name, payload in [*((prefix + n, d) for n, d in decoys.items()), *originals,
                              *((prefix + n, d) for n, d in (extra or {}).items())]:
            out.writestr(name, payload)
    return target


def pickled_weight_decoy(program: Path, target: Path, sentinel: Path) -> Path:
    """The program with a first copy of its weights config that marks its first weight a pickle, stored in a new
    entry: torch's reader returns that copy, Python's zipfile the original."""
    with zipfile.ZipFile(program) as archive:
        config = json.loads(archive.read(next(n for n in archive.namelist() if n.endswith(WEIGHTS))))
    meta = next(iter(config["config"].values()))
    meta.update(use_pickle=True, path_name="weight_9")
    return with_decoys(program, target, {WEIGHTS: json.dumps(config).encode()},
                       {"data/weights/weight_9": torch_pickle(Touch(sentinel))})


def test_torch_and_zipfile_read_different_copies_of_a_repeated_entry(program, tmp_path):
    """The premise: torch's reader returns the decoy, Python's zipfile the original, so checking one proves nothing."""
    evil = pickled_weight_decoy(program, tmp_path / "evil.pt2", tmp_path / "code-ran")
    seen_by_torch = torch._C.PyTorchFileReader(str(evil)).get_record(WEIGHTS)
    with zipfile.ZipFile(evil) as archive:
        seen_by_zipfile = archive.read(next(n for n in archive.namelist() if n.endswith(WEIGHTS)))
    assert b'"use_pickle": true' in seen_by_torch and b'"use_pickle": true' not in seen_by_zipfile


@pytest.mark.parametrize("verb", ["quantize", "bench", "recipe", "run --set"])
def test_a_pt2_with_a_repeated_entry_is_refused_on_every_path(verb, program, data, tmp_path, cli):
    sentinel = tmp_path / "code-ran"
    evil = pickled_weight_decoy(program, tmp_path / "evil.pt2", sentinel)
    out = tmp_path / "out"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {{source: {evil if verb == 'recipe' else program}}}\ndata: {{name: {data}}}\n"
                      f"stages: [{{quantize: {{formats: [onnx], bench: false}}}}]\noutput: {{dir: {out}}}\n")
    args = {"quantize": ["quantize", evil, "--data", data, "--format", "onnx", "--no-bench", "--out", out],
            "bench": ["bench", evil, "--runtime", "torch", "--runs", "2", "--no-report"],
            "recipe": ["run", recipe], "run --set": ["run", recipe, "--set", f"model.source={evil}"]}[verb]
    result = cli(*args, "--json")
    assert_refused(result, out, sentinel, REPEATED, "re-save")
    assert json.loads(result.stdout)["exit_code"] == 2


def test_names_that_differ_only_in_case_are_one_name_to_torch(program, tmp_path, cli):
    """miniz looks names up ignoring case: data/constants/MODEL_constants_config.json may be the copy it reads."""
    evil = with_decoys(program, tmp_path / "evil.pt2", {CONSTANTS.replace("model_", "MODEL_"): b'{"config": {}}'})
    assert_refused(cli("quantize", evil, "--format", "onnx", "--no-bench", "--out", tmp_path / "out"), tmp_path / "out",
                   tmp_path / "code-ran", REPEATED, "ignoring case")


def test_a_torchscript_archive_with_a_repeated_entry_is_refused(tmp_path, cli):
    scripted = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(Tiny()), str(scripted))
    evil = with_decoys(scripted, tmp_path / "evil.pt", {"data.pkl": b"\x80\x02N."})
    line = assert_refused(cli("quantize", evil, "--input-shape", "1x4", "--format", "onnx", "--no-bench", "--out", tmp_path / "out"),
                          tmp_path / "out", tmp_path / "code-ran", REPEATED)
    assert "data.pkl" in line


def test_a_zoo_checkpoint_with_a_pickled_first_copy_is_refused(zoo_checkpoint, tmp_path, cli):
    sentinel = tmp_path / "code-ran"
    evil = with_decoys(zoo_checkpoint("mnist_cnn", epochs=1, width=0.25), tmp_path / "evil.pt", {"data.pkl": _pickle(Touch(sentinel))})
    assert_refused(cli("quantize", evil, "--format", "onnx", "--no-bench", "--out", tmp_path / "out"), tmp_path / "out",
                   sentinel, REPEATED)


def test_a_state_dict_with_a_repeated_entry_is_refused(tmp_path, cli):
    torch.save(Tiny().state_dict(), tmp_path / "sd.pt")
    evil = with_decoys(tmp_path / "sd.pt", tmp_path / "evil.pt", {"data.pkl": _pickle(Touch(tmp_path / "code-ran"))})
    result = cli("quantize", evil, "--arch", "tests.test_hostile_code:Tiny", "--input-shape", "1x4", "--format", "onnx",
                 "--no-bench", "--out", tmp_path / "out")
    assert_refused(result, tmp_path / "out", tmp_path / "code-ran", REPEATED)


def _pickle(obj) -> bytes:
    import pickle

    return pickle.dumps(obj, protocol=2)


def test_an_npz_with_a_repeated_array_is_refused(program, data, tmp_path, cli):
    evil = with_decoys_flat(data, tmp_path / "evil.npz", {"x.npy": b"decoy"})
    result = cli("quantize", program, "--data", evil, "--format", "onnx", "--no-bench", "--out", tmp_path / "out", "--json")
    assert_refused(result, tmp_path / "out", tmp_path / "code-ran", REPEATED, "x.npy")
    assert json.loads(result.stdout)["exit_code"] == 2


def with_decoys_flat(source: Path, target: Path, decoys: dict[str, bytes]) -> Path:
    """``with_decoys`` for an archive without a folder (.npz)."""
    with zipfile.ZipFile(source) as archive:
        originals = [(name, archive.read(name)) for name in archive.namelist()]
    with warnings.catch_warnings(), zipfile.ZipFile(target, "w") as out:
        warnings.simplefilter("ignore")
        for name, payload in [*decoys.items(), *originals]:
            out.writestr(name, payload)
    return target


def test_a_forged_stage_cache_with_a_repeated_entry_is_refused(staged_run, tmp_path, cli):
    """The stage model given a decoy weights config and its stage.json digest rewritten to match: still refused."""
    def decoy(model: Path, sentinel: Path) -> None:
        pickled_weight_decoy(model, tmp_path / "evil.pt2", sentinel).replace(model)

    recipe, copy, sentinel = poisoned_copy(staged_run, tmp_path, record_digest=True, poison=decoy)
    assert_refused(cli("run", recipe, "--out", copy, "--json"), None, sentinel, "model.pt2", REPEATED)
    assert not (copy / "report.json").exists()


# --- headers that disagree ---------------------------------------------------------------------------------------------

def test_bytes_before_the_first_entry_are_refused(program, tmp_path, cli):
    evil = tmp_path / "evil.pt2"
    evil.write_bytes(b"PK\x03\x04" + b"\x00" * 60 + program.read_bytes())  # Python's zipfile shifts its offsets; miniz does not
    assert_refused(cli("quantize", evil, "--format", "onnx", "--no-bench", "--out", tmp_path / "out"), tmp_path / "out",
                   tmp_path / "code-ran", "zip readers disagree")


def test_a_local_header_naming_another_entry_is_refused(program, tmp_path, cli):
    evil = tmp_path / "evil.pt2"
    raw = bytearray(program.read_bytes())
    first = raw.index(b"data/weights/weight_0")  # the first local header's name: now disagrees with the central directory
    raw[first:first + 4] = b"DATA"
    evil.write_bytes(bytes(raw))
    assert_refused(cli("quantize", evil, "--format", "onnx", "--no-bench", "--out", tmp_path / "out"), tmp_path / "out",
                   tmp_path / "code-ran", "local header")


# --- bounded work ---------------------------------------------------------------------------------------------------

def write_zip(path: Path, members: list[tuple[str, bytes, int, int]], hole: tuple[str, int] | None = None) -> Path:
    """A zip written by hand: ``members`` are (name, bytes as stored, method, declared size); ``hole`` is a last stored
    member of that many zero bytes, left as a hole in a sparse file (no disk used)."""
    central = b""
    with open(path, "wb") as out:
        for name, payload, method, size in [*members, *([(hole[0], b"", 0, hole[1])] if hole else [])]:
            stored = len(payload) if not (hole and name == hole[0]) else size
            crc = zlib.crc32(payload) if method == 0 and stored == len(payload) else 0
            offset = out.tell()
            encoded = name.encode()
            out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, stored, size, len(encoded), 0) + encoded)
            out.write(payload) if stored == len(payload) else out.seek(stored, os.SEEK_CUR)
            central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, stored, size, len(encoded),
                                   0, 0, 0, 0, 0, offset) + encoded
        start = out.tell()
        count = len(members) + (1 if hole else 0)
        out.write(central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), start, 0))
    return path


def deflated(payload: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(payload) + compressor.flush()


def npy_zeros(megabytes: int) -> bytes:
    """A .npy of ``megabytes`` MiB of float32 zeros."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.zeros(megabytes << 18, np.float32))
    return buffer.getvalue()


def timed(call):
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def test_an_npz_deflate_bomb_is_refused_in_seconds_naming_the_limit(program, tmp_path, cli):
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, x=np.zeros((32, 1 << 20), np.float32))  # 128 MiB of zeros in ~130 KB
    assert bomb.stat().st_size < 1 << 20
    result, seconds = timed(lambda: cli("quantize", program, "--data", bomb, "--format", "onnx", "--no-bench", "--out", tmp_path / "out"))
    assert_refused(result, tmp_path / "out", tmp_path / "code-ran", "x.npy", "MAX_INFLATE_RATIO", "numpy.savez")
    assert seconds < 30


def test_an_npz_entry_whose_declared_size_lies_stops_at_that_size(program, tmp_path, cli):
    """Declared 4 KiB, inflates to 64 MiB: numpy's reader stops at the declared size and the CRC fails."""
    liar = write_zip(tmp_path / "liar.npz", [("x.npy", deflated(npy_zeros(64)), 8, 4096)])
    assert liar.stat().st_size < 1 << 20
    result, seconds = timed(lambda: cli("quantize", program, "--data", liar, "--format", "onnx", "--no-bench", "--out", tmp_path / "out"))
    assert_refused(result, tmp_path / "out", tmp_path / "code-ran", "not a readable .npz")
    assert seconds < 30


def test_an_npz_declaring_more_than_the_data_limit_is_refused_unread(program, tmp_path, cli):
    from compress.limits import MAX_DATA_BYTES

    huge = write_zip(tmp_path / "huge.npz", [], hole=("x.npy", MAX_DATA_BYTES + 1))  # a sparse file: no disk used
    result, seconds = timed(lambda: cli("quantize", program, "--data", huge, "--format", "onnx", "--no-bench", "--out", tmp_path / "out"))
    assert_refused(result, tmp_path / "out", tmp_path / "code-ran", "MAX_DATA_BYTES", "fewer samples")
    assert seconds < 30


def program_members(program: Path, skip: str) -> list[tuple[str, bytes, int, int]]:
    with zipfile.ZipFile(program) as archive:
        return [(n, archive.read(n), 0, archive.getinfo(n).file_size) for n in archive.namelist() if not n.endswith(skip)]


SAMPLE_INPUTS = "data/sample_inputs/model.pt"


def test_a_1_gib_member_of_a_pt2_is_refused_before_it_is_read(program, tmp_path, cli):
    members = program_members(program, SAMPLE_INPUTS)
    prefix = members[0][0].split("/", 1)[0] + "/"
    evil = write_zip(tmp_path / "evil.pt2", members, hole=(prefix + SAMPLE_INPUTS, 1 << 30))
    assert os.stat(evil).st_blocks * 512 < 1 << 20  # sparse: 1 GiB declared, almost nothing on disk
    result, seconds = timed(lambda: cli("quantize", evil, "--format", "onnx", "--no-bench", "--out", tmp_path / "out"))
    assert_refused(result, tmp_path / "out", tmp_path / "code-ran", SAMPLE_INPUTS, "MAX_CHECKED_ENTRY_BYTES")
    assert seconds < 30


def test_a_pt2_deflate_bomb_is_refused_naming_the_limit(program, tmp_path, cli):
    members = program_members(program, "models/model.json")
    prefix = members[0][0].split("/", 1)[0] + "/"
    bomb = json.dumps({"pad": " " * (96 << 20)}).encode()
    evil = write_zip(tmp_path / "evil.pt2", [*members, (prefix + "models/model.json", deflated(bomb), 8, len(bomb))])
    result, seconds = timed(lambda: cli("quantize", evil, "--format", "onnx", "--no-bench", "--out", tmp_path / "out"))
    assert_refused(result, tmp_path / "out", tmp_path / "code-ran", "models/model.json", "MAX_INFLATE_RATIO")
    assert seconds < 30


def test_a_pt2_member_whose_declared_size_lies_stops_at_that_size(program, tmp_path, cli):
    members = program_members(program, "models/model.json")
    prefix = members[0][0].split("/", 1)[0] + "/"
    bomb = json.dumps({"pad": " " * (64 << 20)}).encode()
    evil = write_zip(tmp_path / "evil.pt2", [*members, (prefix + "models/model.json", deflated(bomb), 8, 4096)])
    result, seconds = timed(lambda: cli("quantize", evil, "--format", "onnx", "--no-bench", "--out", tmp_path / "out"))
    assert_refused(result, tmp_path / "out", tmp_path / "code-ran", "corrupt")
    assert seconds < 30


def test_an_explosive_shape_expression_is_refused_in_seconds(program, tmp_path, cli):
    def edit(files):
        document = json.loads(files["models/model.json"])
        symbol = document["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0]["as_expr"]
        symbol["expr_str"] = f"{symbol['expr_str']} + 10**10**9"
        files["models/model.json"] = json.dumps(document).encode()

    evil = rewrite(program, tmp_path / "evil.pt2", edit)
    result, seconds = timed(lambda: cli("quantize", evil, "--format", "onnx", "--no-bench", "--out", tmp_path / "out"))
    assert_refused(result, tmp_path / "out", tmp_path / "code-ran", "shape expression", "MAX_EXPRESSION_DIGITS")
    assert seconds < 30


# --- messages that stand alone ----------------------------------------------------------------------------------------

def test_a_corrupt_pt2_names_its_cause_not_silenced_warnings(program, tmp_path, cli):
    evil = rewrite(program, tmp_path / "bad.pt2", lambda files: files.update({".data/version": b"garbage{"}))
    result = cli("quantize", evil, "--format", "onnx", "--no-bench", "--out", tmp_path / "out", "--json")
    line = assert_refused(result, tmp_path / "out", tmp_path / "code-ran", "not a loadable torch.export program", "version")
    assert "warnings above" not in line and "warnings above" not in json.loads(result.stdout)["error"]


def test_an_npz_given_as_the_model_says_to_pass_it_as_data(data, tmp_path, cli):
    assert_refused(cli("quantize", data, "--format", "onnx", "--no-bench", "--out", tmp_path / "out"), tmp_path / "out",
                   tmp_path / "code-ran", "data file", "pass it as --data")


def test_a_plain_program_and_npz_still_quantize(program, data, tmp_path, cli):
    result = cli("quantize", program, "--data", data, "--format", "onnx", "--no-bench", "--out", tmp_path / "out", "--json")
    assert json_output(result)["artifacts"] and (tmp_path / "out" / "model.int8.onnx").is_file()

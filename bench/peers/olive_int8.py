"""Olive's static int8 with its documented defaults on an fp32 ONNX file; run by bench/.venv-olive's python.

One ``OnnxStaticQuantization`` pass in an Olive workflow (``olive.workflows.run``), every option left at Olive's
default (QDQ, int8 weights and activations, per-tensor, MinMax, ORT's quantization pre-processing on). The
calibration samples come from a dataset registered in this file (Olive's user_script mechanism), one per batch.

Example:
    $ bench/.venv-olive/bin/python bench/peers/olive_int8.py fp32.onnx calibration.npz olive.onnx
"""
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ["OLIVE_DISABLE_TELEMETRY"] = "1"  # Olive otherwise posts usage events; the benchmark sends nothing out

import numpy as np  # noqa: E402
from olive.data.registry import Registry  # noqa: E402


@Registry.register_dataset()
def npz_samples(path: str):
    """(inputs by name, dummy label) per sample of the .npz; Olive's default dataloader adds the batch axis."""
    samples = np.load(path)
    count = len(samples[samples.files[0]])
    return [({name: samples[name][i] for name in samples.files}, 0) for i in range(count)]


def main(fp32_path: str, calibration_path: str, out_path: str) -> None:
    from olive.workflows import run

    with tempfile.TemporaryDirectory(prefix="olive-") as work:
        config = {
            "input_model": {"type": "ONNXModel", "model_path": str(Path(fp32_path).resolve())},
            "data_configs": [{"name": "calibration", "user_script": str(Path(__file__).resolve()),
                              "load_dataset_config": {"type": "npz_samples", "params": {"path": str(Path(calibration_path).resolve())}}}],
            "passes": {"quantize": {"type": "OnnxStaticQuantization", "data_config": "calibration"}},
            "output_dir": work, "cache_dir": str(Path(work) / "cache"), "log_severity_level": 3,
        }
        run(config)
        written = sorted(p for p in Path(work).rglob("*.onnx") if "cache" not in p.relative_to(work).parts)
        if not written:
            raise SystemExit(f"olive wrote no .onnx under its output folder: {sorted(p.name for p in Path(work).rglob('*'))}")
        shutil.copyfile(written[0], out_path)
    print(f"olive: wrote {out_path}")


if __name__ == "__main__":
    main(*sys.argv[1:])

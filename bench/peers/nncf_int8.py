"""NNCF's int8 with its documented defaults on an fp32 ONNX file; run by bench/.venv-nncf's python, not compress's.

``nncf.quantize(model, nncf.Dataset(...))``: preset PERFORMANCE (symmetric), min/max statistics over the given
samples (subset_size 300 by default; the suite gives 256), one sample per item as NNCF's ONNX examples do.

Example:
    $ bench/.venv-nncf/bin/python bench/peers/nncf_int8.py fp32.onnx calibration.npz nncf.onnx
"""
import sys

import nncf
import numpy as np
import onnx


def main(fp32_path: str, calibration_path: str, out_path: str) -> None:
    samples = np.load(calibration_path)
    count = len(samples[samples.files[0]])
    items = [{name: samples[name][i : i + 1] for name in samples.files} for i in range(count)]
    quantized = nncf.quantize(onnx.load(fp32_path), nncf.Dataset(items))
    onnx.save(quantized, out_path)
    print(f"nncf {nncf.__version__}: wrote {out_path}")


if __name__ == "__main__":
    main(*sys.argv[1:])

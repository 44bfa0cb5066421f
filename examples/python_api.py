"""Compress a zoo model from Python and read what a CI job would read.

Run: python examples/python_api.py [run-dir]
"""
import sys

from compress.loading.model import load_model
from compress.passes.quantize import QuantizeConfig, quantize
from compress.zoo import train_zoo_model

run_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/python-api"
checkpoint = train_zoo_model("mnist_cnn").path                      # trained once, then cached
config = QuantizeConfig(formats=["onnx", "tflite"], precisions=["int8"], max_degradation=0.005)
report = quantize(load_model(checkpoint), config, out_dir=run_dir).report

for artifact in report["artifacts"]:
    task = artifact["metrics"]["task"]
    print(f"{artifact['name']:12s} {artifact['size_bytes']:>9,d} bytes  {task['name']} {task['value']:.4f}  verified in {artifact['verified_in']}")
print("recommended:", report["recommended"]["local-cpu"]["artifact"], "| gates passed:", report["passed"])
sys.exit(0 if report["passed"] else 1)

"""Runners: load an artifact file in its real runtime and run it on numpy inputs.

base holds the one protocol every runtime implements and the factory that picks one by suffix (the runtime names are
in compress.catalog); each runtime's session lives with its format, in compress/backends/<format>/session.py.

Example:
    >>> runner = open_runner("model.int8.onnx")          # onnxruntime, by suffix
    >>> outputs = run_dataset(runner, splits.test)      # one array per model output
"""
from compress.runtimes.base import Runner, open_runner, run_dataset, runtime_for

__all__ = ["Runner", "open_runner", "run_dataset", "runtime_for"]

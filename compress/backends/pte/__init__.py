"""ExecuTorch: a ``.pte`` program lowered to the XNNPACK delegate, run in ExecuTorch's runtime.

- adapter: the format's record, registered in compress.backends.
- export: torch -> one ``.pte`` program; choose: per-channel or per-tensor weight scales.
- preflight: the ops XNNPACK will not take, before calibrating; session: the program run in ExecuTorch.
"""

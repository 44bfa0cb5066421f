"""Passes: each compression technique with its config, its ``apply`` and the workflow behind its verb, side by side.

- prune, distill, qat: model -> model passes, each a config object plus ``apply(handle, config, data) -> handle``;
  ``<pass>_workflow``: the whole verb as a Python API (apply, export, verify, write the run); qat_export: a QAT or
  PT2E graph written to int8 files; schedule: sparsity schedules for gradual pruning.
- quantize: `compress quantize` (post-training quantization to every format, verified in the real runtimes).
- workflow_common: what the workflows share (data splits, verified exports, latency comparisons).
- registry: passes as registered plugins (one typed config per pass); stages: the recipe faces of the stages that
  write artifacts or measure; training: the small deterministic training loop; epochs: a training epoch in words.
"""

"""`compress recipe init`: a commented starter recipe for a zoo model or a model file.

For a model file the data section names the .npz to create and the arrays it must hold, read from the model.

Example:
    >>> print(starter_recipe("mnist_cnn"))
"""
from __future__ import annotations

TEMPLATE = """\
# compress recipe: run with `compress run {filename}`; validate with `compress recipe validate {filename}`.
# Every stage's keys are the options of the CLI verb of the same name (see `compress recipe schema`).
seed: 0                      # same seed + same inputs -> same artifacts (sha256), where the libraries allow

model:
  source: {source}           # zoo:NAME trains or reuses the zoo checkpoint; or a path (.pt, .pt2, .onnx)
  # arch: package.module:Class   # for a state_dict (imported only with `compress run --trust-code`)
  # input_shapes: [1x3x64x64]    # when the file carries no input spec

data:
{data_section}
  calib_samples: 256         # calibration comes from train+val; evaluation uses the test split

stages:
  # - prune: {{method: l1-structured, sparsity: 0.5, finetune_epochs: 3}}
  - quantize:
      formats: [{formats}]
      precisions: [int8]     # {precisions}
      calibration: minmax    # {calibrations}
  - benchmark:
      batch: [1]
      runs: 100

targets: [local]             # local, cuda, ssh://user@host, adb, qemu-arm64

gates:                       # a failed gate: exit 1, artifacts still written, the report names it
  max_degradation: 0.005     # 0.5 pt of accuracy
  # min_fidelity: {{top1_agreement: 0.99}}
  # max_size_bytes: 200000
  # max_latency_ms: {{local: 2.0}}

output:
  dir: runs/{name}
"""


ZOO_DATA = "  name: {data}               # dataset name, .npz, image folder or package.module:function (needs --trust-code)"
FILE_DATA = """\
  # your data as .npz, one array per model input, sample-first: {layout};
  # y = labels (optional: without them the verdict is fidelity to the original model). compress tests on 20 % of the
  # samples: give a few hundred, so that one sample cannot flip the verdict. `compress recipe validate` checks the file.
  name: {path}"""


def file_data_section(model: str) -> str:
    """The data section for a model file: the .npz path to create and the arrays it must hold (read from the model
    when it loads without --trust-* flags)."""
    from pathlib import Path

    from compress.errors import UsageError
    from compress.loading.model import load_model
    from compress.recipe.data_fit import npz_layout

    try:
        layout = npz_layout(load_model(model).input_spec)
    except UsageError:  # a pickle, a state_dict without --arch, a missing file: the generic layout
        layout = "x = the first input, x1, x2 ... the others, in the model's input order"
    return FILE_DATA.format(layout=layout, path=f"{Path(model).stem}_data.npz")


def starter_recipe(model: str) -> str:
    from pathlib import Path

    from compress.backends import default_formats
    from compress.backends.calibration import calibration_names
    from compress.catalog import quantized
    from compress.zoo.registry import ZOO

    choices = {"formats": ", ".join(default_formats()), "precisions": " | ".join(quantized()),
               "calibrations": " | ".join(calibration_names())}
    if model in ZOO:
        return TEMPLATE.format(filename=f"{model}.yaml", source=f"zoo:{model}", data_section=ZOO_DATA.format(data=ZOO[model].dataset),
                               name=model, **choices)
    return TEMPLATE.format(filename="recipe.yaml", source=model, data_section=file_data_section(model), name=Path(model).stem,
                           **choices)

"""Rank layers once per study (most sensitive first), so trials can keep the worst ones in float.

Example:
    >>> rank_layers(handle, None, Path("runs/tune"), config)[:2]
    ['classifier.3', 'features.0']
"""
from __future__ import annotations

from pathlib import Path

from compress.safety.io import write_json_atomic
from compress.safety.jsonsafe import read_json
from compress.loading.model import ModelHandle


def rank_layers(handle: ModelHandle, data: str | None, out_dir: Path, config) -> list[str]:
    cached = out_dir / "sensitivity.json"
    if cached.is_file():
        return read_json(cached)["ranked"]
    from compress.data.plan import plan_data
    from compress.passes.quantize import QuantizeConfig, analyze

    plan = plan_data(handle, data, 256, config.seed)
    rows = analyze(handle, plan, QuantizeConfig(formats=["onnx"], seed=config.seed), out_dir)  # fp32 in a temporary folder
    ranked = [row["layer"] for row in rows]
    write_json_atomic(cached, {"ranked": ranked, "rows": rows})
    return ranked

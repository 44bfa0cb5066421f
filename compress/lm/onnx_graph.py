"""A small ONNX graph writer: unique node names, initializers from numpy, cached int64 constants.

Example:
    >>> g = GraphWriter()
    >>> x = g.input("x", "float", ["batch", 4])
    >>> y = g.op("Mul", x, g.init("two", np.full(4, 2, np.float32)))
    >>> g.output(y, "y", "float", ["batch", 4])
    >>> model = g.model({"note": "doubles x"})
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21
MS_DOMAIN = "com.microsoft"
_TYPES = {"float": TensorProto.FLOAT, "int64": TensorProto.INT64}


class GraphWriter:
    """Collects nodes, initializers, inputs and outputs; ``model()`` returns the checked ``onnx.ModelProto``."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._count = 0
        self._consts: dict[tuple, str] = {}

    def input(self, name: str, dtype: str, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, _TYPES[dtype], shape))
        return name

    def output(self, value: str, name: str, dtype: str, shape: list) -> None:
        """Expose ``value`` as graph output ``name`` (an Identity renames it when needed)."""
        if value != name:
            self.nodes.append(helper.make_node("Identity", [value], [name], name=f"{name}/Identity"))
        self.outputs.append(helper.make_tensor_value_info(name, _TYPES[dtype], shape))

    def init(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, *values: int) -> str:
        """A cached int64 vector constant, e.g. a shape or an axes list."""
        key = ("i64",) + values
        if key not in self._consts:
            self._consts[key] = self.init(f"const_i64_{len(self._consts)}", np.array(values, np.int64))
        return self._consts[key]

    def scalar(self, value: float) -> str:
        key = ("f32", float(value))
        if key not in self._consts:
            self._consts[key] = self.init(f"const_f32_{len(self._consts)}", np.array(value, np.float32))
        return self._consts[key]

    def op(self, op_type: str, *inputs: str, outputs: int | list[str] = 1, domain: str = "", name: str | None = None,
           **attrs):
        """Append one node; returns its output name (or a list when ``outputs`` > 1). ``outputs`` may name them."""
        self._count += 1
        base = name or f"{op_type}_{self._count}"
        outs = outputs if isinstance(outputs, list) else [f"{base}/out{i}" for i in range(outputs)]
        outputs = len(outs)
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=base, domain=domain, **attrs))
        return outs[0] if outputs == 1 else outs

    def model(self, metadata: dict[str, str]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "decoder", self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
            producer_name="compress")
        model.ir_version = 10
        helper.set_model_props(model, {k: str(v) for k, v in metadata.items()})
        return model

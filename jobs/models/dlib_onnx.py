"""The ONNX graph of a parsed dlib face-recognition ResNet (see `dlib_resnet` for the reading side):
convolutions with dlib's affine layers folded in, ReLU, pooling, residual adds with zero-padded shortcuts,
global average pooling and the bias-free fully connected layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jobs.models.dlib_resnet import CHIP_SIZE, Node


@dataclass
class _GraphBuilder:
    nodes: list[Any] = field(default_factory=list)
    initializers: list[Any] = field(default_factory=list)
    tags: dict[int, tuple[str, tuple[int, int, int]]] = field(default_factory=dict)
    counter: int = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def constant(self, prefix: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], prefix: str, **attributes: Any) -> str:
        from onnx import helper

        output = self.name(prefix)
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attributes))
        return output


Shape = tuple[int, int, int]  # channels, rows, cols


def _emit(builder: _GraphBuilder, node: Node) -> tuple[str, Shape]:
    kind = node.kind
    if kind == "input":
        return "chip", (3, node.settings["size"], node.settings["size"])
    assert node.sub is not None
    if kind == "affine" and node.sub.kind == "con":
        return _emit_conv(builder, node.sub, scale=node.params["scale"], shift=node.params["shift"])
    if kind == "tag":
        result = _emit(builder, node.sub)
        builder.tags[node.settings["id"]] = result
        return result
    if kind == "skip":
        _emit(builder, node.sub)
        return builder.tags[node.settings["id"]]
    if kind == "loss":
        return _emit(builder, node.sub)
    source, shape = _emit(builder, node.sub)
    if kind == "con":
        return _emit_conv(builder, node)
    if kind == "relu":
        return builder.op("Relu", [source], "relu"), shape
    if kind in ("max_pool", "avg_pool"):
        return _emit_pool(builder, node, source, shape)
    if kind == "add_prev":
        return _emit_add(builder, (source, shape), builder.tags[node.settings["tag"]])
    if kind == "fc":
        flat = builder.op("Flatten", [source], "flatten", axis=1)
        weight = builder.constant("fc_weight", node.params["weight"].astype(np.float32))
        return builder.op("MatMul", [flat, weight], "descriptor"), (node.settings["outputs"], 1, 1)
    raise ValueError(f"no ONNX mapping for dlib layer kind {kind!r}")


def _emit_conv(
    builder: _GraphBuilder, node: Node, scale: np.ndarray | None = None, shift: np.ndarray | None = None
) -> tuple[str, Shape]:
    assert node.sub is not None
    source, (channels, rows, cols) = _emit(builder, node.sub)
    weight, bias = node.params["weight"].astype(np.float64), node.params["bias"].astype(np.float64)
    if scale is not None and shift is not None:  # fold the frozen batch-norm into the convolution
        weight = weight * scale.reshape(-1, 1, 1, 1)
        bias = bias * scale + shift
    kernel, stride = node.settings["kernel"], node.settings["stride"]
    pad_y, pad_x = node.params["pads"]
    output = builder.op(
        "Conv",
        [
            source,
            builder.constant("conv_w", weight.astype(np.float32)),
            builder.constant("conv_b", bias.astype(np.float32)),
        ],
        "conv",
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=[pad_y, pad_x, pad_y, pad_x],
    )
    out_rows = 1 + (rows + 2 * pad_y - kernel) // stride
    out_cols = 1 + (cols + 2 * pad_x - kernel) // stride
    return output, (node.settings["filters"], out_rows, out_cols)


def _emit_pool(builder: _GraphBuilder, node: Node, source: str, shape: Shape) -> tuple[str, Shape]:
    channels, rows, cols = shape
    size, stride = node.settings["size"], node.settings["stride"]
    if size == 0:
        return builder.op("GlobalAveragePool", [source], "gap"), (channels, 1, 1)
    pad_y, pad_x = node.params["pads"]
    op_type = "MaxPool" if node.kind == "max_pool" else "AveragePool"
    output = builder.op(
        op_type,
        [source],
        op_type.lower(),
        kernel_shape=[size, size],
        strides=[stride, stride],
        pads=[pad_y, pad_x, pad_y, pad_x],
    )
    return output, (channels, 1 + (rows + 2 * pad_y - size) // stride, 1 + (cols + 2 * pad_x - size) // stride)


def _emit_add(builder: _GraphBuilder, left: tuple[str, Shape], right: tuple[str, Shape]) -> tuple[str, Shape]:
    """dlib's add_prev: the output has the larger size in every dimension, missing values count as zero."""
    target: Shape = tuple(max(a, b) for a, b in zip(left[1], right[1]))  # type: ignore[assignment]
    padded = [_pad_to(builder, name, shape, target) for name, shape in (left, right)]
    return builder.op("Add", padded, "add"), target


def _pad_to(builder: _GraphBuilder, name: str, shape: Shape, target: Shape) -> str:
    if shape == target:
        return name
    extra = [t - s for s, t in zip(shape, target)]
    pads = np.array([0, 0, 0, 0, 0, *extra], dtype=np.int64)  # begin N,C,H,W then end N,C,H,W
    return builder.op("Pad", [name, builder.constant("pads", pads)], "pad", mode="constant")


def network_to_onnx(net: Node, opset: int = 17) -> bytes:
    """Serialize the parsed network as an ONNX model (input `chip` N x 3 x 150 x 150, output N x 128)."""
    import onnx
    from onnx import TensorProto, helper

    builder = _GraphBuilder()
    output, _ = _emit(builder, net)
    builder.nodes[-1].output[0] = "descriptor"
    size = CHIP_SIZE
    graph = helper.make_graph(
        builder.nodes,
        "dlib_face_recognition_resnet_v1",
        [helper.make_tensor_value_info("chip", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["batch", 128])],
        builder.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="lineup-dlib-converter"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()

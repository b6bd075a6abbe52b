"""Convert dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) to ONNX.

dlib stores a network as nested layer wrappers: each `add_layer` writes its version, then its whole
sub-network, then its own settings and parameters, so the stream reads outside-in for versions and
inside-out for layers. Tags, skips and the layer that adds a tagged output write no parameters, so the
wiring cannot be recovered from the file alone: `face_recognition_net()` spells it out exactly as dlib's
`dnn_face_recognition_ex.cpp` declares `anet_type`, and the reader checks every layer's type string
against it while reading, so a different network fails loudly instead of converting wrongly.

The ONNX graph computes the same function: convolutions with dlib's affine (frozen batch-norm) layers
folded in, ReLU, pooling, residual adds whose shortcut is zero-padded to the larger shape (as dlib's
`add_prev` does), global average pooling and a bias-free fully connected layer to 128 values. Input is an
N x 3 x 150 x 150 float tensor already preprocessed: (RGB - channel mean) / 256; the means are returned
for the pack's preprocessing settings. The output is dlib's descriptor, not normalised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jobs.models.dlib_format import DlibFormatError, DlibReader

CHIP_SIZE = 150


# ---- the network's shape, as nested nodes -------------------------------------------------------------


@dataclass
class Node:
    """One wrapper of dlib's nested network type. `kind` is the layer or wrapper type."""

    kind: str  # loss | con | affine | relu | max_pool | avg_pool | add_prev | fc | tag | skip | input
    sub: Node | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def _layer(kind: str, sub: Node, **settings: Any) -> Node:
    return Node(kind, sub, settings)


def _block(filters: int, stride: int, sub: Node) -> Node:
    first = _layer("con", sub, filters=filters, kernel=3, stride=stride)
    second = _layer("con", _layer("relu", _layer("affine", first)), filters=filters, kernel=3, stride=1)
    return _layer("affine", second)


def _ares(filters: int, sub: Node) -> Node:
    residual = _layer("add_prev", _block(filters, 1, Node("tag", sub, {"id": 1})), tag=1)
    return _layer("relu", residual)


def _ares_down(filters: int, sub: Node) -> Node:
    block = _block(filters, 2, Node("tag", sub, {"id": 1}))
    shortcut = Node("skip", Node("tag", block, {"id": 2}), {"id": 1})
    pooled = _layer("avg_pool", shortcut, size=2, stride=2)
    return _layer("relu", _layer("add_prev", pooled, tag=2))


def face_recognition_net() -> Node:
    """`anet_type` of dlib's face recognition example, outermost (loss) first."""
    net = Node("input", settings={"size": CHIP_SIZE})
    net = _layer("con", net, filters=32, kernel=7, stride=2)
    net = _layer("max_pool", _layer("relu", _layer("affine", net)), size=3, stride=2)
    for filters, downs, plain in [(32, 0, 3), (64, 1, 3), (128, 1, 2), (256, 1, 2), (256, 1, 0)]:
        net = _ares_down(filters, net) if downs else net
        for _ in range(plain):
            net = _ares(filters, net)
    net = _layer("avg_pool", net, size=0, stride=1)  # avg_pool_everything
    net = _layer("fc", net, outputs=128)
    return Node("loss", net)


# ---- reading the parameters ---------------------------------------------------------------------------


def read_network(path: Path) -> Node:
    """Parse the `.dat` file into `face_recognition_net()` with every layer's parameters filled in."""
    net = face_recognition_net()
    reader = DlibReader(Path(path).read_bytes())
    try:
        _read_node(reader, net)
    except DlibFormatError as error:
        raise DlibFormatError(f"{path}: not dlib's face recognition ResNet as expected: {error}") from None
    if reader.offset != len(reader.data):
        raise DlibFormatError(f"{path}: {len(reader.data) - reader.offset} unread bytes after the network")
    return net


def _read_node(reader: DlibReader, node: Node) -> None:
    if node.kind == "loss":
        _expect_version(reader, {1}, "add_loss_layer")
        if reader.expect_string("loss_metric_", "loss_metric_2") == "loss_metric_2":
            node.params.update(margin=reader.read_float(), distance_threshold=reader.read_float())
        assert node.sub is not None
        _read_node(reader, node.sub)
    elif node.kind in ("tag", "skip"):
        _expect_version(reader, {1}, f"add_{node.kind}_layer")
        assert node.sub is not None
        _read_node(reader, node.sub)
    else:
        _read_add_layer(reader, node)


def _read_add_layer(reader: DlibReader, node: Node) -> None:
    assert node.sub is not None
    on_input = node.sub.kind == "input"
    version = _expect_version(reader, {2, 3} if on_input else {1, 2}, "add_layer")
    if on_input:
        _read_input(reader, node.sub)
    else:
        _read_node(reader, node.sub)
    _LAYER_READERS[node.kind](reader, node)
    for _ in range(3):  # setup called, gradient stale, gradient disabled
        reader.read_bool()
    reader.read_tensor()  # x_grad
    reader.read_tensor()  # cached_output
    if on_input:
        reader.read_tensor()  # grad_final
        if version >= 3:
            reader.read_int()  # sample expansion factor
    elif version == 2:
        reader.read_tensor()  # params_grad


def _expect_version(reader: DlibReader, allowed: set[int], what: str) -> int:
    at = reader.offset
    version = reader.read_int()
    if version not in allowed:
        raise DlibFormatError(f"{what} version {version} at byte {at}, expected {sorted(allowed)}")
    return version


def _read_input(reader: DlibReader, node: Node) -> None:
    reader.expect_string("input_rgb_image_sized")
    node.params["mean_rgb"] = [reader.read_float() for _ in range(3)]
    rows, cols = reader.read_int(), reader.read_int()
    if (rows, cols) != (node.settings["size"],) * 2:
        raise DlibFormatError(f"input is {rows}x{cols}, expected {node.settings['size']}")


def _split(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    flat, parts, start = params.reshape(-1), [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        parts.append(flat[start : start + size].reshape(shape))
        start += size
    if start != flat.size:
        raise DlibFormatError(f"parameter tensor has {flat.size} values, layout needs {start}")
    return parts


def _read_con(reader: DlibReader, node: Node) -> None:
    version = reader.expect_string("con_4", "con_5", "con_6")
    params = reader.read_tensor()
    filters, rows, cols = reader.read_int(), reader.read_int(), reader.read_int()
    stride_y, stride_x, pad_y, pad_x = (reader.read_int() for _ in range(4))
    filter_shape, bias_shape = reader.read_alias_tensor(), reader.read_alias_tensor()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        reader.read_float()
    use_bias = reader.read_bool() if version in ("con_5", "con_6") else True
    if version == "con_6" and reader.read_bool():
        raise DlibFormatError("con_ with a fused relu is not part of this network")
    expected = (node.settings["filters"], node.settings["kernel"], node.settings["stride"])
    if (filters, rows, stride_y) != expected or rows != cols or stride_x != stride_y:
        raise DlibFormatError(f"con_ is {filters} {rows}x{cols}/{stride_y}, expected {expected}")
    shapes = [filter_shape] + ([bias_shape] if use_bias else [])
    parts = _split(params, *shapes)
    weight = parts[0]
    bias = parts[1].reshape(-1) if use_bias else np.zeros(filters, np.float32)
    node.params.update(weight=weight, bias=bias, pads=(pad_y, pad_x))


def _read_affine(reader: DlibReader, node: Node) -> None:
    version = reader.expect_string("affine_", "affine_2", "bn_con2")
    params = reader.read_tensor()
    gamma_shape, beta_shape = reader.read_alias_tensor(), reader.read_alias_tensor()
    if version == "bn_con2":  # a batch-norm layer saved from training: freeze it the way dlib does
        reader.read_tensor(), reader.read_tensor()  # batch means, inverse stds
        running_means, running_variances = reader.read_tensor(), reader.read_tensor()
        reader.read_int(), reader.read_int()  # update count, window size
        for _ in range(4):
            reader.read_float()
        eps = reader.read_float()
        gamma, beta = (part.reshape(-1) for part in _split(params, gamma_shape, beta_shape))
        scale = gamma / np.sqrt(running_variances.reshape(-1) + eps)
        shift = beta - scale * running_means.reshape(-1)
    else:
        mode = reader.read_int()
        if mode != 0:  # 0 = CONV_MODE: one scale and shift per channel
            raise DlibFormatError(f"affine_ in mode {mode}, expected per-channel (conv) mode")
        if version == "affine_2" and reader.read_bool():
            raise DlibFormatError("a disabled affine_ layer is not part of this network")
        scale, shift = (part.reshape(-1) for part in _split(params, gamma_shape, beta_shape))
    node.params.update(scale=scale.astype(np.float32), shift=shift.astype(np.float32))


def _read_relu(reader: DlibReader, node: Node) -> None:
    if reader.expect_string("relu_", "relu_2") == "relu_2" and reader.read_bool():
        raise DlibFormatError("a disabled relu_ layer is not part of this network")


def _read_pool(reader: DlibReader, node: Node) -> None:
    tag = "max_pool_2" if node.kind == "max_pool" else "avg_pool_2"
    reader.expect_string(tag)
    rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.read_int() for _ in range(6))
    expected = (node.settings["size"], node.settings["size"], node.settings["stride"], node.settings["stride"])
    if (rows, cols, stride_y, stride_x) != expected:
        raise DlibFormatError(f"{tag} is {rows}x{cols}/{stride_y}, expected {expected}")
    node.params["pads"] = (pad_y, pad_x)


def _read_add_prev(reader: DlibReader, node: Node) -> None:
    reader.expect_string("add_prev_")


def _read_fc(reader: DlibReader, node: Node) -> None:
    version = reader.expect_string("fc_2", "fc_3")
    outputs, inputs = reader.read_int(), reader.read_int()
    params = reader.read_tensor()
    weight_shape, _bias_shape = reader.read_alias_tensor(), reader.read_alias_tensor()
    bias_mode = reader.read_int()
    for _ in range(4):
        reader.read_float()
    if version == "fc_3":
        reader.read_bool()
    if outputs != node.settings["outputs"] or bias_mode != 1:  # 1 = FC_NO_BIAS
        raise DlibFormatError(f"fc_ with {outputs} outputs and bias mode {bias_mode}, expected 128 and no bias")
    (weight,) = _split(params, weight_shape)
    node.params["weight"] = weight.reshape(inputs, outputs)


_LAYER_READERS = {
    "con": _read_con,
    "affine": _read_affine,
    "relu": _read_relu,
    "max_pool": _read_pool,
    "avg_pool": _read_pool,
    "add_prev": _read_add_prev,
    "fc": _read_fc,
}


def input_means(net: Node) -> list[float]:
    """dlib's per-channel RGB means, subtracted before dividing by 256."""
    node = net
    while node.sub is not None:
        node = node.sub
    return [float(value) for value in node.params["mean_rgb"]]

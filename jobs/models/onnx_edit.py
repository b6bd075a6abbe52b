"""Small, checked edits to third-party ONNX graphs made while a pack is built."""

from __future__ import annotations


def make_spatial_dims_dynamic(model_bytes: bytes) -> bytes:
    """Give the graph a dynamic batch, height and width, so one file serves any padded image size.

    Detector files are often exported for one fixed input (YuNet: 1x3x640x640) although every operation
    in them works on any size that is a multiple of the largest stride. Fixed intermediate shapes are
    dropped so onnxruntime infers them again.
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    initializer_names = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializer_names]
    if len(inputs) != 1:
        raise ValueError(f"expected one image input, found {[value.name for value in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ValueError(f"expected an N x C x H x W input, found rank {len(dims)}")
    for dim, name in zip(dims, ["batch", None, "height", "width"]):
        if name is not None:
            dim.ClearField("dim_value")
            dim.dim_param = name
    for output in graph.output:
        for index, dim in enumerate(output.type.tensor_type.shape.dim):
            dim.ClearField("dim_value")
            dim.dim_param = f"{output.name}_d{index}"
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model.SerializeToString()

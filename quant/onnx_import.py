"""Weights from an ONNX SqueezeNet graph (with the ``onnx`` package)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .model import FloatModel, WeightError
from .network import Network

__all__ = ["load_onnx"]


def load_onnx(path: str | Path, net: Network) -> FloatModel:
    """Read the Conv nodes of an ONNX graph, in graph order, as the network's convolutions."""
    import onnx
    from onnx import numpy_helper
    path = Path(path)
    if path.is_dir():
        raise WeightError(f"{path}: is a directory, not an ONNX model")
    if not path.is_file():
        raise WeightError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise WeightError(f"{path}: empty file, not an ONNX model")
    try:
        m = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError and others for corrupt files
        raise WeightError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    if not m.graph.node:
        raise WeightError(f"{path}: not an ONNX model (no graph nodes)")
    inits = {t.name: t for t in m.graph.initializer}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    if len(convs) != len(net.convs):
        raise WeightError(f"{path}: has {len(convs)} Conv nodes, the {net.name} network has "
                          f"{len(net.convs)} convolutions")
    params = {}
    for node, conv in zip(convs, net.convs):
        try:
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            b = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
                 if len(node.input) > 2 else np.zeros(conv.cout, np.float32))
        except (KeyError, IndexError):
            raise WeightError(f"{path}: Conv node {node.name or conv.name} has no constant "
                              f"weights") from None
        params[conv.name] = (w, b)
    return FloatModel(net, params, str(path)).validate()

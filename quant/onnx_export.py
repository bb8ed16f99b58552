"""The quantized network as standard ONNX operators, for an independent cross-check in ONNX
Runtime and for users who want to run the int8 model elsewhere.

Operators: QLinearConv (uint8 activations, int8 per-channel weights with ``w_scale[o] = s_w[o]``
and zero points 0, int32 bias in scale ``s_in * s_w[o]``, uint8 output with zero point 0, which
saturates at 0 and so is the fused ReLU), MaxPool (on uint8, ``ceil_mode=1`` as Caffe), Concat,
and for the global average pool DequantizeLinear + GlobalAveragePool + QuantizeLinear.

ONNX Runtime has no QLinearConv kernel from int8 input to uint8 output, so the signed network
input is re-expressed exactly as uint8 with zero point 128 (DequantizeLinear then QuantizeLinear
with the same scale: every int8 value maps to itself + 128, no rounding happens).

ONNX Runtime requantizes in float32 with round-half-to-even, while the hardware multiplies by
``M / 2**shift`` and rounds half up, so rare 1-LSB differences are expected and allowed by the
cross-check (``tests/test_onnx_crosscheck.py``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .network import Concat, Conv
from .quantize import QuantModel

__all__ = ["ExportError", "layer_model", "network_model", "run_layer_ort", "export_qdq_model",
           "ort_session", "OPSET", "IR_VERSION"]

OPSET = 13        # per-axis QuantizeLinear / DequantizeLinear
IR_VERSION = 8    # what ONNX Runtime >= 1.17 accepts with opset 13


class ExportError(ValueError):
    """A quantized model that cannot be expressed in the supported ONNX operators."""


class _Graph:
    """Accumulates nodes and initializers; layer builders take and return tensor names."""

    def __init__(self, qm: QuantModel):
        self.qm = qm
        self.nodes = []
        self.inits = []
        self._n = 0

    def const(self, hint: str, value) -> str:
        from onnx import numpy_helper
        self._n += 1
        name = f"{hint}#{self._n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        from onnx import helper
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{output}:{op}", **attrs))
        return output

    def layer(self, l, ins: list[str], out: str) -> str:
        qm = self.qm
        f32 = np.float32
        if isinstance(l, Conv):
            qc = qm.convs[l.name]
            if not qc.relu:
                raise ExportError(f"{l.name}: convolution without ReLU is not exported")
            x = ins[0]
            s_in = self.const(f"{l.name}/x_scale", f32(qc.s_in))
            x_zp = 0
            if qc.signed_input:     # exact int8 -> uint8 + 128 re-zero-pointing
                x = self.node("DequantizeLinear", [x, s_in, self.const(f"{l.name}/x_zp8", np.int8(0))],
                              f"{l.name}/x_float")
                x = self.node("QuantizeLinear", [x, s_in, self.const(f"{l.name}/x_zp128", np.uint8(128))],
                              f"{l.name}/x_u8")
                x_zp = 128
            self.node("QLinearConv", [
                x, s_in, self.const(f"{l.name}/x_zp", np.uint8(x_zp)),
                self.const(f"{l.name}/w", qc.w.astype(np.int8)),
                self.const(f"{l.name}/w_scale", qc.s_w.astype(f32)),
                self.const(f"{l.name}/w_zp", np.zeros(qc.cout, np.int8)),
                self.const(f"{l.name}/y_scale", f32(qc.s_out)),
                self.const(f"{l.name}/y_zp", np.uint8(0)),
                self.const(f"{l.name}/b", qc.b.astype(np.int32)),
            ], out, kernel_shape=[l.kernel, l.kernel], strides=[l.stride, l.stride],
                pads=[l.pad] * 4)
            return out
        if isinstance(l, Concat):
            return self.node("Concat", ins, out, axis=1)
        if l.is_global:
            g = qm.gap
            s_in = self.const(f"{l.name}/x_scale", f32(g.s_in))
            s_out = self.const(f"{l.name}/y_scale", f32(g.s_out))
            zp = self.const(f"{l.name}/zp", np.uint8(0))
            x = self.node("DequantizeLinear", [ins[0], s_in, zp], f"{l.name}/x_float")
            x = self.node("GlobalAveragePool", [x], f"{l.name}/avg")
            return self.node("QuantizeLinear", [x, s_out, zp], out)
        return self.node("MaxPool", ins, out, kernel_shape=[l.kernel, l.kernel],
                         strides=[l.stride, l.stride], pads=[l.pad] * 4, ceil_mode=1)

    def model(self, inputs, outputs, name: str):
        from onnx import helper
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="squeezeforge")
        m.ir_version = IR_VERSION
        return m


def _vinfo(name: str, dtype, shape):
    from onnx import helper
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                                         [1, *shape])


def _blob_dtype(qm: QuantModel, blob: str):
    return np.int8 if qm.signed(blob) else np.uint8


def layer_model(qm: QuantModel, name: str):
    """An ONNX model of one layer: inputs named after its bottom blobs (1, C, H, W), output its top."""
    l = qm.net.layer(name)
    shapes = qm.net.shapes(qm.size)
    bottoms = list(l.bottoms) if isinstance(l, Concat) else [l.bottom]
    g = _Graph(qm)
    g.layer(l, bottoms, l.top)
    return g.model([_vinfo(b, _blob_dtype(qm, b), shapes[b]) for b in bottoms],
                   [_vinfo(l.top, _blob_dtype(qm, l.top), shapes[l.top])], name.replace("/", "_"))


def network_model(qm: QuantModel):
    """The whole quantized network: float input ``data`` (1, 3, S, S), Caffe-preprocessed,
    quantized in-graph to int8; outputs ``logits`` (dequantized GAP, (1, classes)) and ``prob``."""
    net = qm.net
    shapes = net.shapes(qm.size)
    g = _Graph(qm)
    x = g.node("QuantizeLinear", ["data", g.const("data/scale", np.float32(qm.input_scale)),
                                  g.const("data/zp", np.int8(0))], net.input_name + "/int8")
    names = {net.input_name: x}
    for l in net.layers:
        ins = [names[b] for b in (l.bottoms if isinstance(l, Concat) else (l.bottom,))]
        names[l.top] = g.layer(l, ins, l.top)
    out = names[net.output]
    f = g.node("DequantizeLinear", [out, g.const("out/scale", np.float32(qm.scales[net.output])),
                                    g.const("out/zp", np.uint8(0))], "out/float")
    logits = g.node("Flatten", [f], "logits", axis=1)
    g.node("Softmax", [logits], "prob", axis=1)
    classes = shapes[net.output][0]
    from onnx import TensorProto, helper
    return g.model([_vinfo("data", np.float32, shapes[net.input_name])],
                   [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes]),
                    helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, classes])],
                   f"{net.name}_int8")


def export_qdq_model(qm: QuantModel, path: str | Path) -> Path:
    """Write :func:`network_model` to ``path`` (checked with the ONNX checker)."""
    import onnx
    m = network_model(qm)
    onnx.checker.check_model(m)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(path))
    return path


def ort_session(model):
    """An ONNX Runtime CPU session for a ModelProto or a file path."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    src = model if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(str(src) if isinstance(src, Path) else src, opts,
                                providers=["CPUExecutionProvider"])


def run_layer_ort(qm: QuantModel, name: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Run one layer in ONNX Runtime on integer blobs (C, H, W); returns its output (C, H, W)."""
    m = layer_model(qm, name)
    sess = ort_session(m)
    feed = {i.name: np.ascontiguousarray(inputs[i.name])[None] for i in m.graph.input}
    return sess.run(None, feed)[0][0]

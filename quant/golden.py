"""The integer golden model: exactly what the hardware computes, blob by blob.

* Network input: ``numeric.quantize_input`` (signed int8).
* Convolution: im2col, then a float64 matrix product of the integer values (exact: every partial
  sum of SqueezeNet's int8 x 8-bit products stays far below 2**53), converted to int64, plus the
  int32 bias, giving the 32-bit accumulator; then ``numeric.requantize`` per output channel
  (uint8 with ReLU, int8 without).
* Max-pool: ``reference.maxpool`` on the integers (Caffe ceil rounding); concat: concatenation.
* Global average pool: ``reference.global_sum`` of the integers, then ``numeric.requantize``.

Every blob comes back as an integer array (int8 / uint8); accumulators are available per layer
through :func:`golden_conv` for hardware tests.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import numeric
from .network import Concat, Conv, Pool
from .reference import global_sum, im2col, maxpool, softmax

if TYPE_CHECKING:
    from .quantize import QConv, QGap, QuantModel

__all__ = ["run_golden", "golden_probs", "golden_conv", "golden_gap", "golden_layer", "GoldenError"]

_ACC_MIN, _ACC_MAX = -2 ** (numeric.ACC_BITS - 1), 2 ** (numeric.ACC_BITS - 1) - 1


class GoldenError(ValueError):
    """An input the golden model cannot run (wrong shape or dtype); one-line message."""


def golden_conv(qconv: "QConv", x_int: np.ndarray, stride: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """One quantized convolution. ``x_int`` (C, H, W) int8/uint8 -> (acc int32 (O,Ho,Wo), y).

    ``y`` is uint8 (ReLU) or int8. Padding is the integer 0 (zero point 0).
    """
    x_int = np.asarray(x_int)
    o, c, k, _ = qconv.w.shape
    if x_int.ndim != 3 or x_int.shape[0] != c:
        raise GoldenError(f"{qconv.name}: input has shape {x_int.shape}, expects ({c}, H, W)")
    if not np.issubdtype(x_int.dtype, np.integer):
        raise GoldenError(f"{qconv.name}: input must be an integer array, not {x_int.dtype}")
    cols, ho, wo = im2col(x_int.astype(np.float64), k, stride, pad)
    prod = qconv.w.reshape(o, c * k * k).astype(np.float64) @ cols
    acc = prod.astype(np.int64) + qconv.b.astype(np.int64)[:, None]
    if acc.size and (acc.min() < _ACC_MIN or acc.max() > _ACC_MAX):  # impossible by numeric.acc_bound
        raise AssertionError(f"{qconv.name}: accumulator leaves int32")
    acc = acc.reshape(o, ho, wo)
    y = numeric.requantize(acc, qconv.mult, qconv.shift, relu=qconv.relu)
    return acc.astype(np.int32), y


def golden_gap(qgap: "QGap", x_int: np.ndarray) -> np.ndarray:
    """Global average pool of uint8 (C, H, W): window sum, requantized to uint8 (C, 1, 1)."""
    x_int = np.asarray(x_int)
    if x_int.ndim != 3 or x_int.shape[1] * x_int.shape[2] != qgap.window:
        raise GoldenError(f"{qgap.name}: input has shape {x_int.shape}, expects a window of "
                          f"{qgap.window} elements")
    return numeric.requantize(global_sum(x_int), qgap.mult, qgap.shift, relu=True)


def golden_layer(qm: "QuantModel", name: str, inputs) -> np.ndarray:
    """Run one layer of ``qm.net`` by name on integer inputs; returns its integer output.

    ``inputs``: one array (single-input layers), a sequence in the layer's bottom order, or a
    mapping blob name -> array.
    """
    layer = qm.net.layer(name)
    bottoms = layer.bottoms if isinstance(layer, Concat) else (layer.bottom,)
    if isinstance(inputs, Mapping):
        xs = [inputs[b] for b in bottoms]
    elif isinstance(inputs, np.ndarray):
        xs = [inputs]
    elif isinstance(inputs, Sequence):
        xs = list(inputs)
    else:
        raise GoldenError(f"{name}: inputs must be an array, a sequence or a mapping")
    if len(xs) != len(bottoms):
        raise GoldenError(f"{name}: needs {len(bottoms)} input(s), got {len(xs)}")
    if isinstance(layer, Conv):
        return golden_conv(qm.convs[name], xs[0], layer.stride, layer.pad)[1]
    if isinstance(layer, Concat):
        return np.concatenate([np.asarray(x) for x in xs], axis=0)
    if layer.is_global:
        return golden_gap(qm.gap, xs[0])
    return maxpool(np.asarray(xs[0]), layer.kernel, layer.stride, layer.pad)


def run_golden(qm: "QuantModel", x_float: np.ndarray) -> dict[str, np.ndarray]:
    """Whole network on one Caffe-preprocessed float image (3, S, S): every blob as integers."""
    x_float = np.asarray(x_float)
    want = qm.net.shapes(x_float.shape[-1] if x_float.ndim == 3 else qm.size)[qm.net.input_name]
    if x_float.shape != want or x_float.shape[1] != x_float.shape[2]:
        raise GoldenError(f"input image has shape {x_float.shape}, expects {want}")
    blobs = {qm.net.input_name: numeric.quantize_input(x_float, qm.input_scale)}
    for l in qm.net.layers:
        if isinstance(l, Conv):
            blobs[l.top] = golden_conv(qm.convs[l.name], blobs[l.bottom], l.stride, l.pad)[1]
        elif isinstance(l, Concat):
            blobs[l.top] = np.concatenate([blobs[b] for b in l.bottoms], axis=0)
        elif isinstance(l, Pool) and l.is_global:
            blobs[l.top] = golden_gap(qm.gap, blobs[l.bottom])
        else:
            blobs[l.top] = maxpool(blobs[l.bottom], l.kernel, l.stride, l.pad)
    return blobs


def golden_probs(qm: "QuantModel", blobs: dict[str, np.ndarray]) -> np.ndarray:
    """Softmax of the dequantized network output (float64 (classes,))."""
    out = qm.net.output
    return softmax(blobs[out].astype(np.float64).reshape(-1) * qm.scales[out])

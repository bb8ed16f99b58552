"""Float reference forward pass with Caffe semantics, and the array kernels it shares with the
integer golden model (im2col convolution, ceil-mode max-pool, global average pool).

Everything is vectorized: no Python loop runs over pixels.
"""
from __future__ import annotations

import numpy as np

from .network import Concat, Conv, Network, Pool

__all__ = ["im2col", "conv2d", "maxpool", "global_sum", "forward_float", "softmax", "topk"]


def im2col(x: np.ndarray, k: int, stride: int, pad: int, pad_value=0) -> tuple[np.ndarray, int, int]:
    """(C, H, W) -> columns (C*k*k, Ho*Wo) in (c, kh, kw) row order, plus (Ho, Wo)."""
    c, h, w = x.shape
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), constant_values=pad_value)
    ho = (h + 2 * pad - k) // stride + 1
    wo = (w + 2 * pad - k) // stride + 1
    sc, sh, sw = x.strides
    win = np.lib.stride_tricks.as_strided(
        x, shape=(c, k, k, ho, wo), strides=(sc, sh, sw, sh * stride, sw * stride), writeable=False)
    return win.reshape(c * k * k, ho * wo), ho, wo


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, pad: int,
           dtype=np.float32) -> np.ndarray:
    """Cross-correlation as Caffe computes it: x (C,H,W), w (O,C,k,k) -> (O,Ho,Wo) in ``dtype``.

    With ``dtype=np.float64`` and integer inputs the result is exact while every partial sum
    stays below 2**53 (SqueezeNet's int8 sums stay below 2**31).
    """
    o, c, k, _ = w.shape
    cols, ho, wo = im2col(x.astype(dtype, copy=False), k, stride, pad)
    y = w.reshape(o, c * k * k).astype(dtype, copy=False) @ cols
    if b is not None:
        y += np.asarray(b, dtype=dtype)[:, None]
    return y.reshape(o, ho, wo)


def maxpool(x: np.ndarray, k: int, stride: int, pad: int = 0) -> np.ndarray:
    """Max-pool with Caffe's ceil rounding; windows are clipped at the borders."""
    c, h, w = x.shape
    p = Pool("", "", "", "max", k, stride, pad)
    ho, wo = p.out_hw(h, w)
    low = np.finfo(x.dtype).min if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    need_h = (ho - 1) * stride + k
    need_w = (wo - 1) * stride + k
    xp = np.full((c, max(need_h, h + pad), max(need_w, w + pad)), low, dtype=x.dtype)
    xp[:, pad:pad + h, pad:pad + w] = x
    out = None
    for kh in range(k):
        for kw in range(k):
            v = xp[:, kh:kh + stride * (ho - 1) + 1:stride, kw:kw + stride * (wo - 1) + 1:stride]
            out = v.copy() if out is None else np.maximum(out, v)
    return out


def global_sum(x: np.ndarray) -> np.ndarray:
    """Sum over H and W: (C, H, W) -> (C, 1, 1), int64 for integer input."""
    acc = np.int64 if np.issubdtype(x.dtype, np.integer) else np.float64
    return x.sum(axis=(1, 2), dtype=acc).reshape(-1, 1, 1)


def forward_float(net: Network, params: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run the float network on one preprocessed image (3, H, W); returns every blob (float32).

    ``params`` maps conv name -> (weight (O,I,k,k), bias (O,)). The returned dict also holds
    ``"prob"``, the softmax of the final blob, when the network ends in a Softmax.
    """
    blobs = {net.input_name: np.asarray(x, dtype=np.float32)}
    for l in net.layers:
        if isinstance(l, Conv):
            w, b = params[l.name]
            y = conv2d(blobs[l.bottom], w, b, l.stride, l.pad)
            blobs[l.top] = np.maximum(y, 0) if l.relu else y
        elif isinstance(l, Pool):
            xin = blobs[l.bottom]
            if l.is_global:
                blobs[l.top] = (global_sum(xin) / (xin.shape[1] * xin.shape[2])).astype(np.float32)
            else:
                blobs[l.top] = maxpool(xin, l.kernel, l.stride, l.pad)
        elif isinstance(l, Concat):
            blobs[l.top] = np.concatenate([blobs[b] for b in l.bottoms], axis=0)
    if net.softmax:
        blobs["prob"] = softmax(blobs[net.output].reshape(-1))
    return blobs


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    e = np.exp(z - z.max())
    return e / e.sum()


def topk(prob: np.ndarray, k: int = 5, labels: list[str] | None = None) -> list[dict]:
    """Top-k as a list of {index, label, prob}; ties broken by lower class index."""
    prob = np.asarray(prob).reshape(-1)
    order = np.lexsort((np.arange(prob.size), -prob))[:k]
    return [dict(index=int(i), label=(labels[i] if labels and i < len(labels) else f"class {i}"),
                 prob=float(prob[i])) for i in order]

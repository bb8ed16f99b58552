"""Post-training quantization of a :class:`~.model.FloatModel` to the integer format of
:mod:`.numeric` (the numeric spec is imported, never restated here).

What :func:`quantize` produces
------------------------------
* Weights: int8 symmetric per output channel, ``s_w[o] = max|W[o]| / WEIGHT_MAX``. A channel
  whose weights are all zero (the v1.0 Deep Compression model has one in fire7/expand1x1) or
  negligible gets a safe floor scale (see :func:`quantize_weights`): no division by zero, no NaN.
* Bias: int32 in the accumulator's scale ``s_in * s_w[o]``, clamped to ``+-BIAS_LIMIT``.
* Activations: one scale per blob (per tensor). The network input is signed int8 with
  ``s = max|x| / 127`` over the calibration images (the input is a mean-subtracted 8-bit image,
  bounded to [-123, 151], so it has no outliers worth clipping). Every ReLU output is uint8 with
  ``s = P / 255`` where P is the 99.999th percentile of the blob over all calibration images
  (pooled, computed exactly from the kept tail of every image).
* Max-pool and concat keep their input scale, so they are exact integer operations; therefore
  both expands of a Fire module share ONE output scale, the one calibrated on the concat blob.
* Global average pool: the integer window sum is requantized with ``numeric.avgpool_multiplier``
  to its own uint8 scale, calibrated on the maximum (not a percentile) with 25 % headroom.

Why the 99.999th percentile for hidden activations: their distributions are long-tailed, and the
maximum is set by a handful of outliers of one image, which wastes resolution for every other
element; a low percentile clips too much. Measured with :func:`sqnr_table` on v1.1 (real weights,
default calibration set) for the demo photo and two held-out photos (matplotlib's sample images),
worst / mean layer SQNR in dB:

==========  ================  ================  ================
statistic   demo photo        held-out 1        held-out 2
==========  ================  ================  ================
max         21.1 / 26.3       20.2 / 27.5       21.7 / 28.0
99.999 %    22.4 / 27.4       20.8 / 28.0       22.7 / 28.9
99.99 %     15.6 / 25.8       19.8 / 25.8       21.7 / 27.6
99.9 %       7.0 / 16.8
==========  ================  ================  ================

The logits are the exception: clipping the largest logits would tie the top classes at 255 and
destroy the ranking, so the GAP output takes the maximum plus headroom for photos with stronger
class evidence than the calibration set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import numeric
from .model import FloatModel
from .network import Concat, Conv, Network, Pool
from .reference import forward_float, softmax, topk

__all__ = [
    "QConv", "QGap", "QuantModel", "QuantizeError", "quantize", "quantize_weights", "quantize_bias",
    "calibration_images", "sqnr_db", "sqnr_table", "quant_report", "PERCENTILE", "GAP_HEADROOM",
]

PERCENTILE = 99.999       # calibration statistic for uint8 hidden activations
GAP_HEADROOM = 1.25       # the logits' scale: calibrated maximum times this
DEAD_FLOOR = 2.0 ** -16   # weight scale floor, relative to the layer's largest channel scale


class QuantizeError(ValueError):
    """A float model that cannot be quantized to the numeric spec; one-line message."""


@dataclass
class QConv:
    """One quantized convolution. Output: ``requantize(conv(x, w) + b, mult, shift, relu)``."""
    name: str
    w: np.ndarray        # int8 (O, I, k, k)
    b: np.ndarray        # int32 (O,), in scale s_in * s_w[o]
    mult: np.ndarray     # int64 (O,), each in [0, 2**MULT_BITS)
    shift: np.ndarray    # int64 (O,), each in [1, MAX_SHIFT]
    s_w: np.ndarray      # float64 (O,) weight scales
    s_in: float
    s_out: float
    relu: bool = True
    signed_input: bool = False

    @property
    def cout(self) -> int:
        return int(self.w.shape[0])


@dataclass
class QGap:
    """Quantized global average pool: ``requantize(sum over window, mult, shift)`` to uint8."""
    name: str
    mult: int
    shift: int
    s_in: float
    s_out: float
    window: int          # H * W of the pooled blob


@dataclass
class QuantModel:
    net: Network
    size: int                                  # input height = width the scales were calibrated at
    input_scale: float                         # int8 network input: x_float ~ x_int * input_scale
    scales: dict[str, float]                   # blob name -> scale (every blob, input included)
    convs: dict[str, QConv]                    # conv name -> QConv, in network order
    gap: QGap | None
    source: str
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)
    calibration: dict = field(default_factory=dict)   # how the scales were obtained

    def signed(self, blob: str) -> bool:
        """Whether a blob is signed int8 (the input, or a conv without ReLU) rather than uint8."""
        if blob == self.net.input_name:
            return True
        for l in self.net.layers:
            if l.top == blob:
                if isinstance(l, Conv):
                    return not l.relu
                if isinstance(l, Pool):
                    return self.signed(l.bottom)
                return self.signed(l.bottoms[0])
        raise KeyError(blob)

    def dequantize(self, blob: str, a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.float64) * self.scales[blob]


# -- calibration --------------------------------------------------------------------------
def calibration_images(size: int = 227, path=None) -> list[np.ndarray]:
    """The default calibration set: the demo photo and simple augmentations of it.

    Original, horizontal flip, two shifted crops (top-left and bottom-right corners of the
    256x256 resize), a brighter (+24) and a higher-contrast (x1.3 around mid-grey) version.
    All are Caffe-preprocessed float32 (3, size, size).
    """
    from PIL import Image
    from .preprocess import MEAN_BGR, RESIZE, ImageError, default_image, preprocess
    path = default_image() if path is None else path
    try:
        with Image.open(path) as im:
            full = preprocess(im.convert("RGB"), RESIZE)           # (3, 256, 256), mean subtracted
    except OSError as e:
        raise ImageError(f"{path}: cannot read calibration image ({e})") from None
    off = (RESIZE - size) // 2
    mean = MEAN_BGR.reshape(3, 1, 1)

    def crop(a, r, c):
        return np.ascontiguousarray(a[:, r:r + size, c:c + size])

    def pixels(f):  # apply f to the 0..255 pixel values, then preprocess again
        return np.clip(f(full + mean), 0, 255) - mean

    centre = crop(full, off, off)
    last = RESIZE - size
    return [
        centre,
        np.ascontiguousarray(centre[:, :, ::-1]),
        crop(full, 0, 0),
        crop(full, last, last),
        crop(pixels(lambda p: p + 24.0), off, off).astype(np.float32),
        crop(pixels(lambda p: (p - 128.0) * 1.3 + 128.0), off, off).astype(np.float32),
    ]


class _Tail:
    """Exact pooled percentile of a blob over several images, keeping only each image's top tail."""

    def __init__(self, q: float, per_image: int, n_images: int):
        self.q = q
        self.total = per_image * n_images
        # ascending rank of the percentile element (numpy's "lower" method) and how many values
        # lie at or above it: the top ``keep`` values of the pooled set hold the answer, and each
        # image can contribute at most ``keep`` of them.
        self.rank = int(math.floor(q / 100.0 * (self.total - 1)))
        self.keep = min(self.total - self.rank, per_image)
        self.parts: list[np.ndarray] = []
        self.max = 0.0

    def add(self, a: np.ndarray) -> None:
        a = np.asarray(a, dtype=np.float64).ravel()
        self.max = max(self.max, float(a.max()))
        self.parts.append(np.partition(a, a.size - self.keep)[a.size - self.keep:])

    def value(self) -> float:
        tail = np.sort(np.concatenate(self.parts))[::-1]          # descending
        return float(tail[self.total - 1 - self.rank])


def _calibrate(fm: FloatModel, calib: list[np.ndarray], size: int) -> dict[str, dict]:
    net = fm.net
    shapes = net.shapes(size)
    stats: dict[str, _Tail] = {}
    for x in calib:
        if tuple(np.shape(x)) != shapes[net.input_name]:
            raise QuantizeError(f"calibration image has shape {tuple(np.shape(x))}, the "
                                f"{net.name} network at size {size} needs {shapes[net.input_name]}")
        blobs = forward_float(net, fm.params, x)
        for name, shp in shapes.items():
            a = blobs[name]
            if name == net.input_name or not _is_relu_blob(net, name):
                a = np.abs(a)
            if name not in stats:
                stats[name] = _Tail(PERCENTILE, int(np.prod(shp)), len(calib))
            stats[name].add(a)
    return {n: dict(percentile=t.value(), max=t.max) for n, t in stats.items()}


def _is_relu_blob(net: Network, blob: str) -> bool:
    if blob == net.input_name:
        return False
    for l in net.layers:
        if l.top == blob:
            if isinstance(l, Conv):
                return l.relu
            return _is_relu_blob(net, l.bottom if isinstance(l, Pool) else l.bottoms[0])
    raise KeyError(blob)


# -- weights and bias ---------------------------------------------------------------------
def quantize_weights(w: np.ndarray, b: np.ndarray, s_in: float) -> tuple[np.ndarray, np.ndarray, int]:
    """int8 per-output-channel weights. Returns (w_q int8, s_w float64 (O,), n_floored).

    ``s_w[o] = max|W[o]| / WEIGHT_MAX``, floored so that every scale is positive and finite:
    at ``DEAD_FLOOR`` times the layer's largest channel scale (an all-zero or negligible channel:
    its weights round to 0 or stay tiny, exactly as in float), and at ``|b[o]| / (s_in * BIAS_LIMIT)``
    so that a channel with negligible weights but a real bias keeps that bias unclamped.
    ``n_floored`` counts channels whose scale was raised by the first floor.
    """
    w = np.asarray(w, dtype=np.float64)
    o = w.shape[0]
    amax = np.abs(w.reshape(o, -1)).max(axis=1)
    s_w = amax / numeric.WEIGHT_MAX
    top = float(s_w.max()) if o else 0.0
    dead_floor = top * DEAD_FLOOR if top > 0 else 1.0
    n_floored = int((s_w < dead_floor).sum())
    s_w = np.maximum(s_w, dead_floor)
    s_w = np.maximum(s_w, np.abs(np.asarray(b, dtype=np.float64)) / (s_in * numeric.BIAS_LIMIT))
    wq = np.clip(np.rint(w / s_w.reshape(o, 1, 1, 1)), -numeric.WEIGHT_MAX, numeric.WEIGHT_MAX)
    return wq.astype(np.int8), s_w, n_floored


def quantize_bias(b: np.ndarray, s_in: float, s_w: np.ndarray) -> tuple[np.ndarray, int]:
    """int32 bias in the accumulator scale ``s_in * s_w``, clamped to +-BIAS_LIMIT.

    Returns (bias int32, number of clamped channels).
    """
    q = np.rint(np.asarray(b, dtype=np.float64) / (s_in * np.asarray(s_w, dtype=np.float64)))
    clamped = int((np.abs(q) > numeric.BIAS_LIMIT).sum())
    return np.clip(q, -numeric.BIAS_LIMIT, numeric.BIAS_LIMIT).astype(np.int32), clamped


def _multipliers(name: str, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ms, ss = [], []
    for r in real:
        try:
            m, s = numeric.quantize_multiplier(float(r))
        except ValueError as e:
            raise QuantizeError(f"{name}: {e}") from None
        ms.append(m)
        ss.append(s)
    return np.array(ms, dtype=np.int64), np.array(ss, dtype=np.int64)


# -- the quantizer ------------------------------------------------------------------------
def quantize(fm: FloatModel, calib: list[np.ndarray] | None = None, size: int = 227) -> QuantModel:
    """Quantize a float model; ``calib`` = Caffe-preprocessed float images (3, size, size).

    Default calibration: :func:`calibration_images` (the demo photo and augmentations).
    """
    net = fm.net
    fm.validate()
    notes = list(fm.notes)
    if calib is None:
        calib = calibration_images(size)
        calib_desc = "demo photo + 5 augmentations"
    else:
        calib = list(calib)
        calib_desc = f"{len(calib)} user images"
    if not calib:
        raise QuantizeError("calibration needs at least one image")
    stats = _calibrate(fm, calib, size)
    shapes = net.shapes(size)

    def stat_scale(blob: str, levels: int, use_max: bool = False, headroom: float = 1.0) -> float:
        st = stats[blob]
        v = st["max"] if use_max else st["percentile"]
        if not v > 0:
            v = st["max"]
        if not (v > 0 and math.isfinite(v)):
            notes.append(f"{blob}: zero on every calibration image; given scale 1/{levels}")
            return 1.0 / levels
        return v * headroom / levels

    # 1. blob scales: input, conv outputs, then concat overrides its inputs and pools inherit
    scales: dict[str, float] = {net.input_name: stat_scale(net.input_name, numeric.INT8_MAX, use_max=True)}
    producer = {l.top: l for l in net.layers}
    for l in net.layers:
        if isinstance(l, Conv):
            scales[l.top] = stat_scale(l.top, numeric.UINT8_MAX if l.relu else numeric.INT8_MAX)
        elif isinstance(l, Concat):
            s = stat_scale(l.top, numeric.UINT8_MAX if _is_relu_blob(net, l.top) else numeric.INT8_MAX)
            for bname in l.bottoms:
                if not isinstance(producer.get(bname), Conv):
                    raise QuantizeError(f"{l.name}: concat input {bname} is not a convolution output; "
                                        f"its scale cannot be shared")
                scales[bname] = s
            scales[l.top] = s
        elif isinstance(l, Pool) and not l.is_global:
            scales[l.top] = scales[l.bottom]
        elif isinstance(l, Pool):
            if l.kind != "ave":
                raise QuantizeError(f"{l.name}: global {l.kind} pooling is not supported")
            scales[l.top] = stat_scale(l.top, numeric.UINT8_MAX, use_max=True, headroom=GAP_HEADROOM)
    # pools may follow a concat that re-scaled its input after the pool was visited: redo in order
    for l in net.layers:
        if isinstance(l, Pool) and not l.is_global:
            scales[l.top] = scales[l.bottom]

    # 2. convolutions
    convs: dict[str, QConv] = {}
    for c in net.convs:
        w, b = fm.params[c.name]
        s_in, s_out = scales[c.bottom], scales[c.top]
        wq, s_w, n_dead = quantize_weights(w, b, s_in)
        if n_dead:
            notes.append(f"{c.name}: {n_dead} output channel(s) with all-zero or negligible weights "
                         f"given the floor weight scale")
        bq, n_clamped = quantize_bias(b, s_in, s_w)
        if n_clamped:
            notes.append(f"{c.name}: bias of {n_clamped} channel(s) clamped to +-2**30")
        mult, shift = _multipliers(c.name, s_in * s_w / s_out)
        convs[c.name] = QConv(c.name, wq, bq, mult, shift, s_w, float(s_in), float(s_out), c.relu,
                              signed_input=not _is_relu_blob(net, c.bottom))

    # 3. global average pool
    gap = None
    for l in net.layers:
        if isinstance(l, Pool) and l.is_global:
            _, h, w_ = shapes[l.bottom]
            s_in, s_out = scales[l.bottom], scales[l.top]
            try:
                m, s = numeric.avgpool_multiplier(h * w_, s_in, s_out)
            except ValueError as e:
                raise QuantizeError(f"{l.name}: {e}") from None
            gap = QGap(l.name, m, s, float(s_in), float(s_out), h * w_)
    for n, s in scales.items():
        if not (s > 0 and math.isfinite(s)):
            raise QuantizeError(f"{n}: calibrated scale {s!r} is not positive and finite")
    calibration = dict(images=len(calib), set=calib_desc, statistic=f"percentile {PERCENTILE}",
                       input="max |x|", gap=f"max x {GAP_HEADROOM}")
    return QuantModel(net, size, scales[net.input_name], scales, convs, gap, fm.source,
                      fm.synthetic, notes, calibration)


# -- error measurement --------------------------------------------------------------------
def sqnr_db(ref: np.ndarray, deq: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio 10*log10(sum ref^2 / sum (ref - deq)^2) in dB.

    +inf when the two are equal; -inf when the reference is all zero but the other is not.
    """
    ref = np.asarray(ref, dtype=np.float64)
    err = ref - np.asarray(deq, dtype=np.float64)
    sig, noise = float((ref * ref).sum()), float((err * err).sum())
    if noise == 0.0:
        return math.inf
    if sig == 0.0:
        return -math.inf
    return 10.0 * math.log10(sig / noise)


def sqnr_table(qm: QuantModel, fm: FloatModel, x: np.ndarray,
               float_blobs: dict | None = None, int_blobs: dict | None = None) -> list[dict]:
    """Per layer (network order): name, kind, blob, SQNR dB of the dequantized int8 blob against the
    float network's blob, both run end to end on ``x`` (so errors compound, as they do on chip)."""
    from .golden import run_golden
    fb = float_blobs if float_blobs is not None else forward_float(fm.net, fm.params, x)
    ib = int_blobs if int_blobs is not None else run_golden(qm, x)
    rows = []
    for l in qm.net.layers:
        kind = "conv" if isinstance(l, Conv) else "concat" if isinstance(l, Concat) else f"{l.kind}pool"
        rows.append(dict(name=l.name, kind=kind, blob=l.top,
                         sqnr_db=sqnr_db(fb[l.top], qm.dequantize(l.top, ib[l.top]))))
    return rows


def quant_report(qm: QuantModel, fm: FloatModel, x: np.ndarray, k: int = 5,
                 labels: list[str] | None = None) -> dict:
    """What the CLI's ``quantize`` command prints: per-layer SQNR and float / int8 top-k."""
    from .golden import golden_probs, run_golden
    fb = forward_float(fm.net, fm.params, x)
    ib = run_golden(qm, x)
    return dict(layers=sqnr_table(qm, fm, x, fb, ib),
                float_topk=topk(softmax(fb[fm.net.output]), k, labels),
                int8_topk=topk(golden_probs(qm, ib), k, labels))

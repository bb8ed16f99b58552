"""The numeric specification of squeezeforge: the one place its integer arithmetic is written.

The quantizer, the NumPy golden model, the RTL generator and the host all import this module;
nothing else restates these rules.

Formats
-------
* Weights: int8, symmetric per output channel, in [-127, 127] (-128 is never used, so the
  negation of any weight is representable).
* Activations: 8 bits. The network input is signed int8 (Caffe's mean-subtracted BGR image);
  every convolution output passes through ReLU and is unsigned uint8 in [0, 255] (zero point 0).
  Max-pooling and concatenation keep the scale of their input, so they are exact integer ops.
* Bias: int32 in the accumulator's scale (s_in * s_w[o]), clamped to +-BIAS_LIMIT.
* Accumulator: ACC_BITS = 32 signed. Worst case for a reduction of K products is
  K * 127 * 255 + BIAS_LIMIT; for SqueezeNet's largest reduction (K = 576, fire9/expand3x3)
  that is 18,653,760 + 2**30 < 2**31, so no layer can overflow (see :func:`acc_bound`).
* Requantization (conv output and global average pool): an unsigned MULT_BITS-bit multiplier M
  and a right shift ``shift`` in [1, MAX_SHIFT]::

      y = (acc * M + 2**(shift - 1)) >> shift      # arithmetic shift: round half toward +inf
      y = clamp(y, 0, 255)                          # ReLU fused (or [-128, 127] without ReLU)

  The product needs ACC_BITS + MULT_BITS = 48 bits.
* Global average pooling: the integer sum over the H*W window, requantized with the same rule
  (M / 2**shift approximates s_in / (H * W * s_out)).
"""
from __future__ import annotations

import math

import numpy as np

WEIGHT_BITS = 8
WEIGHT_MAX = 127                  # symmetric: weights in [-127, 127]
ACT_BITS = 8
UINT8_MAX = 255
INT8_MIN, INT8_MAX = -128, 127
ACC_BITS = 32
BIAS_LIMIT = 2 ** 30              # |bias| <= BIAS_LIMIT keeps every SqueezeNet sum inside int32
MULT_BITS = 16                    # M in [2**(MULT_BITS-1), 2**MULT_BITS) when representable
MAX_SHIFT = 47
SHIFT_BITS = 6


def acc_bound(reduction: int, signed_input: bool = False) -> int:
    """Largest |accumulator| a reduction of ``reduction`` products plus bias can reach."""
    amax = 128 if signed_input else UINT8_MAX
    return reduction * WEIGHT_MAX * amax + BIAS_LIMIT


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Represent a positive real multiplier as M * 2**-shift, M < 2**MULT_BITS, shift in [1, MAX_SHIFT].

    M is normalised to [2**(MULT_BITS-1), 2**MULT_BITS) when the shift range allows; a multiplier
    too small for the range gets the largest shift and a smaller M (possibly 0, for a dead channel).
    """
    if not (real > 0 and math.isfinite(real)):
        return 0, MAX_SHIFT
    shift = (MULT_BITS - 1) - math.floor(math.log2(real))
    if shift > MAX_SHIFT:
        shift = MAX_SHIFT
    if shift < 1:
        raise ValueError(f"requantization multiplier {real:g} is too large (shift would be {shift})")
    m = int(round(real * 2.0 ** shift))
    if m >= 2 ** MULT_BITS:  # rounding carried into the next power of two
        m //= 2
        shift -= 1
        if shift < 1:
            raise ValueError(f"requantization multiplier {real:g} is too large")
    return m, shift


def requantize(acc: np.ndarray, mult, shift, relu: bool = True) -> np.ndarray:
    """Integer requantization of int32 accumulators; ``mult``/``shift`` broadcast per channel.

    ``acc`` has channels on axis 0 when ``mult`` is an array of per-channel values.
    Returns uint8 (ReLU) or int8.
    """
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if mult.ndim == 1:
        extra = (1,) * (acc.ndim - 1)
        mult = mult.reshape(mult.shape + extra)
        shift = shift.reshape(shift.shape + extra)
    y = (acc * mult + (np.int64(1) << (shift - 1))) >> shift
    if relu:
        return np.clip(y, 0, UINT8_MAX).astype(np.uint8)
    return np.clip(y, INT8_MIN, INT8_MAX).astype(np.int8)


def quantize_input(x: np.ndarray, scale: float) -> np.ndarray:
    """Float network input (Caffe-preprocessed) to signed int8: clamp(floor(x / scale + 0.5))."""
    q = np.floor(np.asarray(x, dtype=np.float64) / scale + 0.5)
    return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)


def avgpool_multiplier(window: int, s_in: float, s_out: float) -> tuple[int, int]:
    """(M, shift) for a global average pool over ``window`` elements."""
    return quantize_multiplier(s_in / (window * s_out))

"""The integer golden model against independent small-loop references, its wiring, and its speed."""
from __future__ import annotations

import time

import numpy as np
import pytest

from squeezeforge.quant import numeric
from squeezeforge.quant.golden import (
    GoldenError, golden_conv, golden_gap, golden_layer, golden_probs, run_golden,
)
from squeezeforge.quant.model import synthetic_model
from squeezeforge.quant.network import Concat, squeezenet
from squeezeforge.quant.preprocess import default_image, load_image
from squeezeforge.quant.quantize import QConv, QGap, quantize

GOLDEN_TARGET_S = 2.0


def requant_scalar(acc: int, m: int, s: int, relu: bool) -> int:
    """The spec written out for one Python integer (independent of numeric.requantize)."""
    y = (acc * m + (1 << (s - 1))) >> s          # Python >> is an arithmetic (floor) shift
    return min(max(y, 0), 255) if relu else min(max(y, -128), 127)


def loop_conv(qc: QConv, x: np.ndarray, stride: int, pad: int):
    """Direct six-nested-loop convolution on Python ints; fine on tiny tensors."""
    o_n, c_n, k, _ = qc.w.shape
    _, h, w = x.shape
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    acc = np.zeros((o_n, ho, wo), dtype=np.int64)
    y = np.zeros((o_n, ho, wo), dtype=np.int64)
    for o in range(o_n):
        for r in range(ho):
            for c in range(wo):
                s = int(qc.b[o])
                for ci in range(c_n):
                    for kh in range(k):
                        for kw in range(k):
                            ih, iw = r * stride - pad + kh, c * stride - pad + kw
                            if 0 <= ih < h and 0 <= iw < w:
                                s += int(qc.w[o, ci, kh, kw]) * int(x[ci, ih, iw])
                acc[o, r, c] = s
                y[o, r, c] = requant_scalar(s, int(qc.mult[o]), int(qc.shift[o]), qc.relu)
    return acc, y


def random_qconv(rng, o, c, k, signed_input=False, relu=True) -> QConv:
    w = rng.integers(-127, 128, size=(o, c, k, k)).astype(np.int8)
    b = rng.integers(-50000, 50000, size=o).astype(np.int32)
    mult = rng.integers(2 ** 15, 2 ** 16, size=o).astype(np.int64)
    shift = rng.integers(14, 24, size=o).astype(np.int64)
    return QConv("tiny", w, b, mult, shift, np.ones(o), 1.0, 1.0, relu, signed_input)


def mismatch(name, want, got):
    bad = np.argwhere(want != got)
    if bad.size == 0:
        return ""
    o, r, c = bad[0]
    return (f"{name}: {len(bad)} mismatches, first at channel {o} row {r} column {c}: "
            f"expected {want[o, r, c]}, got {got[o, r, c]}")


@pytest.mark.parametrize("o,c,k,stride,pad,h,signed", [
    (5, 3, 3, 2, 1, 9, False), (4, 6, 1, 1, 0, 5, False), (3, 3, 3, 2, 0, 8, True),
    (6, 4, 3, 1, 1, 6, False), (2, 2, 7, 2, 0, 11, True),
])
def test_golden_conv_matches_loops(o, c, k, stride, pad, h, signed):
    rng = np.random.default_rng(o * 100 + c * 10 + k)
    qc = random_qconv(rng, o, c, k, signed_input=signed)
    if signed:
        x = rng.integers(-128, 128, size=(c, h, h)).astype(np.int8)
    else:
        x = rng.integers(0, 256, size=(c, h, h)).astype(np.uint8)
    acc, y = golden_conv(qc, x, stride, pad)
    want_acc, want_y = loop_conv(qc, x, stride, pad)
    assert acc.dtype == np.int32 and y.dtype == np.uint8
    assert not (msg := mismatch("accumulator", want_acc, acc)), msg
    assert not (msg := mismatch("output", want_y, y)), msg
    assert 0 < np.count_nonzero(y) < y.size, "test data should exercise both clamp and pass-through"


def test_golden_conv_without_relu_is_int8():
    rng = np.random.default_rng(7)
    qc = random_qconv(rng, 3, 2, 3, relu=False)
    x = rng.integers(0, 256, size=(2, 6, 6)).astype(np.uint8)
    acc, y = golden_conv(qc, x, 1, 1)
    want_acc, want_y = loop_conv(qc, x, 1, 1)
    assert y.dtype == np.int8
    np.testing.assert_array_equal(acc, want_acc)
    np.testing.assert_array_equal(y, want_y)
    assert (y < 0).any()


def test_golden_conv_largest_accumulator_is_exact():
    """fire9/expand3x3's reduction (576) at full scale plus the largest bias: exact in float64."""
    k, c = 3, 64
    w = np.full((2, c, k, k), 127, np.int8)
    w[1] = -127
    b = np.array([numeric.BIAS_LIMIT, -numeric.BIAS_LIMIT], np.int32)
    qc = QConv("big", w, b, np.array([1, 1]), np.array([1, 1]), np.ones(2), 1.0, 1.0)
    x = np.full((c, 3, 3), 255, np.uint8)
    x[0, 0, 0] = 254                        # an odd offset: a float32 sum would lose it
    acc, _ = golden_conv(qc, x, 1, 0)
    full = 576 * 127 * 255 - 127
    np.testing.assert_array_equal(acc.reshape(-1), [full + 2 ** 30, -full - 2 ** 30])


def test_golden_gap_matches_formula():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, size=(7, 13, 13)).astype(np.uint8)
    g = QGap("pool10", 40961, 22, 1.0, 1.0, 169)
    got = golden_gap(g, x)
    want = [requant_scalar(int(x[ch].astype(np.int64).sum()), 40961, 22, True) for ch in range(7)]
    assert got.shape == (7, 1, 1) and got.dtype == np.uint8
    np.testing.assert_array_equal(got.reshape(-1), want)


@pytest.fixture(scope="module")
def demo_x():
    return load_image(default_image())[0]


@pytest.fixture(scope="module", params=["v1.1", "v1.0"])
def qm(request, demo_x):
    return quantize(synthetic_model(squeezenet(request.param)), [demo_x])


def test_run_golden_dtypes_and_shapes(qm, demo_x):
    blobs = run_golden(qm, demo_x)
    shapes = qm.net.shapes(227)
    for name, shp in shapes.items():
        assert blobs[name].shape == shp, name
        assert blobs[name].dtype == (np.int8 if name == qm.net.input_name else np.uint8), name
    np.testing.assert_array_equal(blobs["data"], numeric.quantize_input(demo_x, qm.input_scale))
    for c in qm.net.convs:
        assert np.count_nonzero(blobs[c.top]) > 0, f"{c.name} output is all zero"


def test_run_golden_equals_layer_by_layer(qm, demo_x):
    """Each blob equals golden_layer on its inputs, given as a mapping and as a sequence."""
    blobs = run_golden(qm, demo_x)
    for l in qm.net.layers:
        if isinstance(l, Concat):
            got = golden_layer(qm, l.name, [blobs[b] for b in l.bottoms])
            want = np.concatenate([blobs[b] for b in l.bottoms])
            np.testing.assert_array_equal(got, want, err_msg=l.name)
        else:
            got = golden_layer(qm, l.name, blobs)
        np.testing.assert_array_equal(got, blobs[l.top], err_msg=l.name)


def test_golden_maxpool_matches_loops(qm, demo_x):
    """pool1 (Caffe ceil rounding, windows clipped at the border) by explicit loops."""
    blobs = run_golden(qm, demo_x)
    pool = qm.net.layer("pool1")
    x = blobs[pool.bottom][:4]                 # four channels are enough
    got = golden_layer(qm, "pool1", [x])
    _, h, w = x.shape
    ho = -(-(h - 3) // 2) + 1
    want = np.zeros((4, ho, ho), np.uint8)
    for ch in range(4):
        for r in range(ho):
            for c in range(ho):
                want[ch, r, c] = x[ch, 2 * r:min(2 * r + 3, h), 2 * c:min(2 * c + 3, w)].max()
    np.testing.assert_array_equal(got, want)


def test_golden_probs(qm, demo_x):
    blobs = run_golden(qm, demo_x)
    p = golden_probs(qm, blobs)
    z = blobs[qm.net.output].reshape(-1) * qm.scales[qm.net.output]
    want = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(p, want, rtol=1e-12)


def test_golden_errors(qm):
    with pytest.raises(GoldenError, match="expects"):
        run_golden(qm, np.zeros((3, 100, 90), np.float32))
    qc = qm.convs["conv1"]
    with pytest.raises(GoldenError, match="conv1: input has shape"):
        golden_conv(qc, np.zeros((4, 20, 20), np.int8), 2, 0)
    with pytest.raises(GoldenError, match="integer array"):
        golden_conv(qc, np.zeros((3, 20, 20), np.float32), 2, 0)


def test_golden_speed(demo_x):
    """One full v1.1 inference under 2 s (the cost does not depend on the weight values)."""
    q = quantize(synthetic_model(squeezenet("v1.1")), [demo_x])
    run_golden(q, demo_x)                      # warm-up
    times = []
    for _ in range(3):
        t = time.perf_counter()
        run_golden(q, demo_x)
        times.append(time.perf_counter() - t)
    # best of three, as timeit does: other processes on the machine only ever add time
    print(f"\ngolden v1.1 inference: best {min(times):.3f} s, median {np.median(times):.3f} s")
    assert min(times) < GOLDEN_TARGET_S, f"golden inference takes {min(times):.2f} s (best of 3)"

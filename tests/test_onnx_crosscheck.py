"""Independent cross-check of the integer golden model against ONNX Runtime's quantized operators.

Per layer, in isolation: ONNX Runtime gets the golden model's own input blobs for the layer, so
differences do not compound, and its output is compared with the golden output. ONNX Runtime
requantizes in float32 (round half to even, scale s_in*s_w/s_out), the golden model with
M / 2**shift and round half up; both compute the same int32 accumulator, so they may differ only
where the rescaled value lies within float rounding of a .5 boundary: at most 1 LSB, rarely.
Rule: at least 99.9 % of the elements of every layer within 1 LSB. The counts are printed
(run pytest with -s) and put in the assertion message.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.quant.caffe import load_caffemodel
from squeezeforge.quant.golden import golden_probs, run_golden
from squeezeforge.quant.model import synthetic_model
from squeezeforge.quant.network import Conv, squeezenet
from squeezeforge.quant.onnx_export import export_qdq_model, ort_session, run_layer_ort
from squeezeforge.quant.preprocess import default_image, load_image
from squeezeforge.quant.quantize import quantize

REAL = {"v1.1": "squeezenet_v1.1/squeezenet_v1.1.caffemodel",
        "v1.0": "squeezenet_v1.0/squeezenet_v1.0_deep_compression_dense.caffemodel"}
MIN_WITHIN_1LSB = 0.999


def float_model(version: str):
    """Real weights when SQUEEZEFORGE_MODELS holds them, else seeded synthetic weights."""
    d = os.environ.get("SQUEEZEFORGE_MODELS")
    net = squeezenet(version)
    if d and (Path(d) / REAL[version]).is_file():
        return load_caffemodel(Path(d) / REAL[version], net)
    return synthetic_model(net)


@pytest.fixture(scope="module")
def demo_x():
    return load_image(default_image())[0]


@pytest.fixture(scope="module", params=["v1.1", "v1.0"])
def case(request, demo_x):
    fm = float_model(request.param)
    qm = quantize(fm, None if not fm.synthetic else [demo_x])
    return request.param, qm, run_golden(qm, demo_x)


def test_layers_match_onnxruntime(case):
    version, qm, blobs = case
    report, failures = [], []
    for l in qm.net.layers:
        got = run_layer_ort(qm, l.name, blobs)
        want = blobs[l.top]
        assert got.shape == want.shape and got.dtype == want.dtype, \
            f"{version} {l.name}: ONNX Runtime gives {got.dtype} {got.shape}, golden {want.dtype} {want.shape}"
        if isinstance(l, Conv):
            assert np.count_nonzero(want) > 0, f"{version} {l.name}: golden output all zero, check is void"
        d = np.abs(got.astype(np.int16) - want.astype(np.int16))
        one, more = int((d == 1).sum()), int((d > 1).sum())
        line = f"{version} {l.name:<20} {d.size:>8} elements, {one:>4} differ by 1 LSB, {more:>4} by more"
        report.append(line)
        if (d <= 1).mean() < MIN_WITHIN_1LSB:
            c, r, col = np.argwhere(d > 1)[0]
            failures.append(f"{line}; first at channel {c} row {r} column {col}: "
                            f"expected {want[c, r, col]}, got {got[c, r, col]}")
    print(f"\n{version} ({'synthetic' if qm.synthetic else 'real'} weights) golden vs ONNX Runtime, "
          f"per layer:\n" + "\n".join(report))
    assert not failures, "\n".join(failures)


def test_export_whole_network(case, demo_x, tmp_path):
    version, qm, blobs = case
    path = export_qdq_model(qm, tmp_path / f"squeezenet_{version}_int8.onnx")
    sess = ort_session(path)
    logits, prob = sess.run(["logits", "prob"], {"data": demo_x[None]})
    g = golden_probs(qm, blobs)
    gi, oi = int(np.argmax(g)), int(np.argmax(prob[0]))
    d = np.abs(logits[0] / qm.scales[qm.net.output] - blobs[qm.net.output].reshape(-1))
    print(f"\n{version} exported model: top-1 {oi} (golden {gi}); logits differ by at most "
          f"{d.max():.2f} LSB, {int((d > 0.5).sum())} of {d.size} differ")
    assert oi == gi, f"{version}: exported model top-1 {oi}, golden top-1 {gi}"
    assert prob.shape == (1, qm.net.shapes(qm.size)[qm.net.output][0])
    assert abs(float(prob.sum()) - 1.0) < 1e-4

"""The quantizer: guards (dead channels, bias clamp), scale invariants, calibration statistic,
per-layer SQNR and the accuracy acceptance on the demo photo."""
from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.quant import numeric
from squeezeforge.quant.caffe import load_caffemodel
from squeezeforge.quant.golden import golden_probs, run_golden
from squeezeforge.quant.model import FloatModel, synthetic_model
from squeezeforge.quant.network import Concat, Pool, squeezenet
from squeezeforge.quant.preprocess import default_image, load_image
from squeezeforge.quant.quantize import (
    QuantizeError, _Tail, calibration_images, quant_report, quantize, quantize_bias,
    quantize_weights, sqnr_db, sqnr_table,
)
from squeezeforge.quant.reference import forward_float, topk

REAL = {"v1.1": "squeezenet_v1.1/squeezenet_v1.1.caffemodel",
        "v1.0": "squeezenet_v1.0/squeezenet_v1.0_deep_compression_dense.caffemodel"}

# Worst per-layer SQNR accepted for real weights (end to end, errors compounding over 26 convs).
# 15 dB = quantization noise power at most 3 % of the signal's. Measured with the default
# calibration: v1.1 worst layer 22.4 dB on the demo photo and 20.2-22.7 dB on two held-out photos;
# v1.0 (Deep Compression) worst layer 16.9 dB (conv10). A broken calibration (99.9th percentile,
# clipping 0.1 % of every blob) drops v1.1 to 7 dB, so the bound separates right from wrong.
SQNR_MIN_DB = 15.0


def real_path(version: str) -> Path | None:
    d = os.environ.get("SQUEEZEFORGE_MODELS")
    p = Path(d) / REAL[version] if d else None
    return p if p is not None and p.is_file() else None


def real_model(version: str) -> FloatModel:
    p = real_path(version)
    if p is None:
        why = "is not set" if not os.environ.get("SQUEEZEFORGE_MODELS") else f"does not hold {REAL[version]}"
        pytest.skip(f"real {version} weights needed: SQUEEZEFORGE_MODELS {why}")
    return load_caffemodel(p, squeezenet(version))


@pytest.fixture(scope="module")
def demo_x() -> np.ndarray:
    return load_image(default_image())[0]


@pytest.fixture(scope="module")
def synth11(demo_x):
    fm = synthetic_model(squeezenet("v1.1"))
    return fm, quantize(fm, [demo_x])


@pytest.fixture(scope="module")
def real11():
    fm = real_model("v1.1")
    return fm, quantize(fm)


@pytest.fixture(scope="module")
def real10():
    fm = real_model("v1.0")
    return fm, quantize(fm)


# -- guards -----------------------------------------------------------------------------
def test_dead_and_negligible_channels_get_safe_scales(demo_x):
    fm = synthetic_model(squeezenet("v1.1"), seed=3)
    params = dict(fm.params)
    w, b = (a.copy() for a in params["fire7/expand1x1"])
    w[5] = 0.0
    b[5] = 0.0            # all-zero channel: output exactly 0
    w[9] = 1e-30
    b[9] = 0.5            # negligible weights, real bias: output is the constant relu(0.5)
    params["fire7/expand1x1"] = (w, b)
    fm = replace(fm, params=params)
    with np.errstate(all="raise"):           # no division by zero, no invalid value
        qm = quantize(fm, [demo_x])
    qc = qm.convs["fire7/expand1x1"]
    assert np.isfinite(qc.s_w).all() and (qc.s_w > 0).all()
    assert (qc.w[5] == 0).all() and qc.b[5] == 0
    assert (qc.w[9] == 0).all()
    assert abs(int(qc.b[9])) < numeric.BIAS_LIMIT, "negligible-weight channel's bias was clamped"
    assert any("fire7/expand1x1" in n and "2 output channel" in n for n in qm.notes), qm.notes
    y = run_golden(qm, demo_x)["fire7/expand1x1"]
    assert (y[5] == 0).all(), f"dead channel 5 outputs {np.unique(y[5])}"
    want = 0.5 / qc.s_out
    assert np.abs(y[9].astype(float) - want).max() <= 1.0, \
        f"channel 9: expected the bias {want:.2f} LSB everywhere, got {np.unique(y[9])}"


def test_real_v10_all_zero_channel(real10):
    fm, qm = real10
    w, _ = fm.params["fire7/expand1x1"]
    dead = np.flatnonzero(np.abs(w.reshape(w.shape[0], -1)).max(axis=1) == 0)
    assert dead.size >= 1, "the Deep Compression model should have an all-zero fire7/expand1x1 channel"
    qc = qm.convs["fire7/expand1x1"]
    assert np.isfinite(qc.s_w).all() and (qc.s_w > 0).all()
    assert (qc.w[dead] == 0).all()
    assert ((qc.mult >= 0) & (qc.mult < 2 ** numeric.MULT_BITS)).all()


def test_bias_clamp():
    b = np.array([1e12, -1e12, 3.0, -2 ** 30 - 10.0])
    q, n = quantize_bias(b, 1.0, np.array([1e-3, 1e-3, 1e-3, 1.0]))
    assert q.dtype == np.int32
    np.testing.assert_array_equal(q, [2 ** 30, -2 ** 30, 3000, -2 ** 30])
    assert n == 3


def test_weight_scale_floor_keeps_bias_representable():
    w = np.zeros((2, 1, 1, 1), np.float32)
    w[0] = 1.0
    w[1] = 1e-12
    b = np.array([0.0, 100.0])
    wq, s_w, n = quantize_weights(w, b, s_in=1e-3)
    assert n == 1
    q, clamped = quantize_bias(b, 1e-3, s_w)
    assert clamped == 0
    assert abs(q[1] * 1e-3 * s_w[1] - 100.0) < 1e-6 * 100


def test_weight_rounding_error_within_half_lsb(synth11):
    fm, qm = synth11
    for name, qc in qm.convs.items():
        w = fm.params[name][0].astype(np.float64)
        err = np.abs(qc.w * qc.s_w[:, None, None, None] - w)
        lim = qc.s_w[:, None, None, None] / 2 * (1 + 1e-9)
        bad = np.argwhere(err > lim)
        assert bad.size == 0, f"{name}: weight {tuple(bad[0])} off by {err[tuple(bad[0])]:.3g}"
        # per channel, the largest |w| maps to +-127 (full int8 range is used)
        assert (np.abs(qc.w).reshape(qc.cout, -1).max(axis=1) == numeric.WEIGHT_MAX).all(), name


# -- scale invariants ---------------------------------------------------------------------
def check_invariants(qm):
    for blob, s in qm.scales.items():
        assert s > 0 and math.isfinite(s), f"scale of {blob} is {s}"
    for name, qc in qm.convs.items():
        layer = qm.net.layer(name)
        assert qc.w.dtype == np.int8 and np.abs(qc.w.astype(int)).max() <= numeric.WEIGHT_MAX, name
        assert qc.b.dtype == np.int32 and np.abs(qc.b.astype(np.int64)).max() <= numeric.BIAS_LIMIT, name
        assert np.isfinite(qc.s_w).all() and (qc.s_w > 0).all(), name
        assert ((qc.mult >= 0) & (qc.mult < 2 ** numeric.MULT_BITS)).all(), name
        assert ((qc.shift >= 1) & (qc.shift <= numeric.MAX_SHIFT)).all(), name
        assert qc.s_in == qm.scales[layer.bottom] and qc.s_out == qm.scales[layer.top], name
        real = qc.s_in * qc.s_w / qc.s_out
        approx = qc.mult / 2.0 ** qc.shift
        assert np.allclose(approx, real, rtol=2.0 ** -(numeric.MULT_BITS - 1), atol=0), name
    for l in qm.net.layers:
        if isinstance(l, Concat):
            for b in l.bottoms:
                assert qm.scales[b] == qm.scales[l.top], f"{l.name}: {b} has its own scale"
        elif isinstance(l, Pool) and not l.is_global:
            assert qm.scales[l.top] == qm.scales[l.bottom], l.name
    g = qm.gap
    assert g is not None and g.window == np.prod(qm.net.shapes(qm.size)["conv10"][1:])
    assert abs(g.mult / 2.0 ** g.shift - g.s_in / (g.window * g.s_out)) <= \
        2.0 ** -(numeric.MULT_BITS - 1) * g.s_in / (g.window * g.s_out)


def test_invariants_synthetic_v11(synth11):
    check_invariants(synth11[1])


def test_invariants_synthetic_v10(demo_x):
    check_invariants(quantize(synthetic_model(squeezenet("v1.0")), [demo_x]))


def test_invariants_real(real11, real10):
    check_invariants(real11[1])
    check_invariants(real10[1])


def test_input_scale_uses_int8_range(synth11, demo_x):
    qm = synth11[1]
    assert qm.input_scale == pytest.approx(np.abs(demo_x).max() / 127)


def test_bad_calibration():
    fm = synthetic_model(squeezenet("v1.1"))
    with pytest.raises(QuantizeError, match="at least one image"):
        quantize(fm, [])
    with pytest.raises(QuantizeError, match=r"shape \(3, 100, 100\)"):
        quantize(fm, [np.zeros((3, 100, 100), np.float32)])


# -- calibration --------------------------------------------------------------------------
def test_tail_percentile_is_exact():
    rng = np.random.default_rng(1)
    images = [rng.exponential(1.0, 5000) * (1 + i) for i in range(4)]
    for q in (99.999, 99.99, 99.0, 100.0):
        t = _Tail(q, 5000, 4)
        for a in images:
            t.add(a)
        assert t.value() == np.percentile(np.concatenate(images), q, method="lower"), q
    # all the tail may come from one image
    images = [np.zeros(1000), np.arange(1000.0)]
    t = _Tail(99.0, 1000, 2)
    for a in images:
        t.add(a)
    assert t.value() == np.percentile(np.concatenate(images), 99.0, method="lower")


def test_calibration_images():
    ims = calibration_images(227)
    assert len(ims) == 6
    for a in ims:
        assert a.shape == (3, 227, 227) and a.dtype == np.float32 and np.isfinite(a).all()
    centre = load_image(default_image())[0]
    np.testing.assert_array_equal(ims[0], centre)
    np.testing.assert_array_equal(ims[1], centre[:, :, ::-1])
    for i in range(1, 6):
        assert not np.array_equal(ims[i], ims[0]), i
    assert ims[4].mean() > ims[0].mean()                    # brighter
    assert ims[5].std() > ims[0].std()                      # more contrast


# -- SQNR ---------------------------------------------------------------------------------
def test_sqnr_db_values():
    ref = np.ones(4)
    assert sqnr_db(ref, ref + 0.1) == pytest.approx(20.0)
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(np.zeros(3), np.ones(3)) == -math.inf


def test_sqnr_real_v11(real11, demo_x):
    fm, qm = real11
    rows = sqnr_table(qm, fm, demo_x)
    assert [r["name"] for r in rows] == [l.name for l in qm.net.layers]
    print("\nv1.1 per-layer SQNR (dB):", ", ".join(f"{r['name']} {r['sqnr_db']:.1f}" for r in rows))
    low = [(r["name"], round(r["sqnr_db"], 2)) for r in rows if not r["sqnr_db"] > SQNR_MIN_DB]
    assert not low, f"layers below {SQNR_MIN_DB} dB: {low}"


def test_sqnr_real_v10(real10, demo_x):
    fm, qm = real10
    rows = sqnr_table(qm, fm, demo_x)
    print("\nv1.0 per-layer SQNR (dB):", ", ".join(f"{r['name']} {r['sqnr_db']:.1f}" for r in rows))
    low = [(r["name"], round(r["sqnr_db"], 2)) for r in rows if not r["sqnr_db"] > SQNR_MIN_DB]
    assert not low, f"layers below {SQNR_MIN_DB} dB: {low}"


def test_sqnr_detects_a_broken_model(synth11, demo_x):
    fm, qm = synth11
    broken = replace(qm, convs=dict(qm.convs))
    c = broken.convs["fire5/expand3x3"]
    broken.convs["fire5/expand3x3"] = replace(c, w=(-c.w).astype(np.int8))
    rows = {r["name"]: r["sqnr_db"] for r in sqnr_table(broken, fm, demo_x)}
    good = {r["name"]: r["sqnr_db"] for r in sqnr_table(qm, fm, demo_x)}
    assert good["fire5/expand3x3"] > SQNR_MIN_DB
    assert rows["fire5/expand3x3"] < 3.0
    assert rows["fire4/concat"] == good["fire4/concat"]


# -- accuracy acceptance ------------------------------------------------------------------
def test_accuracy_acceptance_v11(real11, demo_x):
    fm, qm = real11
    f = topk(forward_float(fm.net, fm.params, demo_x)["prob"], 5)
    g = topk(golden_probs(qm, run_golden(qm, demo_x)), 5)
    fi, gi = [t["index"] for t in f], [t["index"] for t in g]
    print(f"\nv1.1 float top-5 {fi}, golden top-5 {gi}")
    assert fi[0] == 834, f"float top-1 is {fi[0]}, expected 834 (suit)"
    assert gi[0] == 834, f"golden top-1 is {gi[0]}, expected 834 (suit); golden top-5 {gi}"
    assert len(set(fi) & set(gi)) >= 4, f"float top-5 {fi} vs golden top-5 {gi}"


def test_accuracy_v10_top1_agrees(real10, demo_x):
    fm, qm = real10
    rep = quant_report(qm, fm, demo_x)
    fi = [t["index"] for t in rep["float_topk"]]
    gi = [t["index"] for t in rep["int8_topk"]]
    print(f"\nv1.0 float top-5 {fi}, golden top-5 {gi}")
    assert gi[0] == fi[0], f"v1.0: float top-5 {fi} vs golden top-5 {gi}"
    assert len(set(fi) & set(gi)) >= 4, f"float top-5 {fi} vs golden top-5 {gi}"


# -- artifact -----------------------------------------------------------------------------
def test_artifact_round_trip(synth11, demo_x, tmp_path):
    from squeezeforge.quant import artifact
    _, qm = synth11
    artifact.save(qm, tmp_path)
    desc = json.loads((tmp_path / "model.json").read_text())
    assert desc["format"] == "squeezeforge-quant" and desc["version"] == artifact.VERSION
    assert desc["synthetic"] is True and desc["source"] == "synthetic"
    assert [l["name"] for l in desc["network"]["layers"]] == [l.name for l in qm.net.layers]
    back = artifact.load(tmp_path)
    assert back.net == qm.net and back.size == qm.size and back.input_scale == qm.input_scale
    assert back.scales == qm.scales and back.gap == qm.gap
    for name, qc in qm.convs.items():
        b = back.convs[name]
        for f in ("w", "b", "mult", "shift", "s_w"):
            np.testing.assert_array_equal(getattr(b, f), getattr(qc, f), err_msg=f"{name}.{f}")
            assert getattr(b, f).dtype == getattr(qc, f).dtype, f"{name}.{f}"
        assert (b.s_in, b.s_out, b.relu, b.signed_input) == (qc.s_in, qc.s_out, qc.relu, qc.signed_input)
    a, z = run_golden(qm, demo_x), run_golden(back, demo_x)
    for blob in a:
        np.testing.assert_array_equal(a[blob], z[blob], err_msg=blob)


def _corrupt(path: Path, how: str):
    from squeezeforge.quant import artifact
    m, t = path / artifact.MODEL_FILE, path / artifact.TENSOR_FILE
    if how == "tensor bytes":
        data = bytearray(t.read_bytes())
        data[len(data) // 2] ^= 0xFF
        t.write_bytes(bytes(data))
    elif how == "missing tensors":
        t.unlink()
    elif how == "missing model":
        m.unlink()
    elif how == "not json":
        m.write_text("{ this is not json")
    else:
        d = json.loads(m.read_text())
        if how == "version":
            d["version"] = 99
        elif how == "format":
            d["format"] = "something-else"
        elif how == "shape":
            d["network"]["layers"][0]["cout"] += 1
        elif how == "scale":
            d["scales"]["conv1"] = -1.0
        elif how == "mult":
            d["convs"]["conv1"]["mult"][0] += 1
        m.write_text(json.dumps(d))


@pytest.mark.parametrize("how,msg", [
    ("tensor bytes", "tensors.npz: sha256 does not match"),
    ("missing tensors", "tensors.npz: no such file"),
    ("missing model", "model.json: no such file"),
    ("not json", "model.json: not readable JSON"),
    ("version", "model.json: format version 99"),
    ("format", "model.json: not a squeezeforge-quant artifact"),
    ("shape", "model.json: "),
    ("scale", "model.json: scale of conv1 is -1.0"),
    ("mult", "model.json: conv1 M/shift disagree"),
])
def test_artifact_corrupt(synth11, tmp_path, how, msg):
    from squeezeforge.quant import artifact
    artifact.save(synth11[1], tmp_path)
    _corrupt(tmp_path, how)
    with pytest.raises(artifact.ArtifactError) as e:
        artifact.load(tmp_path)
    text = str(e.value)
    assert "\n" not in text and str(tmp_path) in text and msg in text, text

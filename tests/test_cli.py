"""The command line as a user meets it: acceptance runs and every bad input of issue 2.

Each bad input must give one line on stderr naming the file and the problem, exit status 2,
and no traceback.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def run(*args, env=None):
    import os
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "squeezeforge.host.cli", *map(str, args)],
                          capture_output=True, text=True, env=e, timeout=600)


def assert_user_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("squeezeforge: error:")]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


# -- acceptance (real weights) ---------------------------------------------------------------
def test_infer_float_v11_top1_is_suit(models):
    img = models.parent / "images" / "grace_hopper.jpg"
    r = run("infer", "--model", "v1.1", "--image", img, "--backend", "float", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "v1.1" and out["backend"] == "float"
    assert out["weights"] != "synthetic"
    assert out["top"][0]["index"] == 834
    assert "suit" in out["top"][0]["label"]


def test_infer_golden_matches_float(models):
    img = models.parent / "images" / "grace_hopper.jpg"
    f = json.loads(run("infer", "--model", "v1.1", "--image", img, "--json").stdout)
    r = run("infer", "--model", "v1.1", "--image", img, "--backend", "golden", "--json")
    assert r.returncode == 0, r.stderr
    g = json.loads(r.stdout)
    assert g["top"][0]["index"] == f["top"][0]["index"] == 834
    common = {t["index"] for t in f["top"]} & {t["index"] for t in g["top"]}
    assert len(common) >= 4, (f["top"], g["top"])


@pytest.mark.slow
def test_demo_runs_the_whole_flow(models, tmp_path):
    """The README's demo: float and int8 top-5, then the z7020 engine's RTL on the whole
    network, whose top-5 block equals the golden model's, bit-exact; --out writes the Verilog."""
    r = run("demo", "--out", tmp_path / "hw")
    assert r.returncode == 0, r.stderr
    blocks = r.stdout.split("top-5:")
    assert len(blocks) == 4, r.stdout                      # header, float, int8, RTL
    rows = [[l.split()[0] for l in b.splitlines()[1:6]] for b in blocks[1:]]
    assert rows[0][0] == "834" and rows[1][0] == "834"
    assert rows[2] == rows[1], r.stdout                      # RTL top-5 = golden top-5
    assert "bit-exact against the golden model" in r.stdout
    assert (tmp_path / "hw" / "squeezeforge_engine.v").stat().st_size > 100_000
    assert (tmp_path / "hw" / "engine.json").is_file()


@pytest.mark.slow
def test_infer_rtl_equals_golden(models):
    """--backend rtl: the z7020 engine's RTL (Verilator; the build is shared with the other
    whole-network tests) gives exactly the golden model's top-5, bit-exact on every layer, and
    its top-1 is the float network's (834, suit)."""
    img = models.parent / "images" / "grace_hopper.jpg"
    g = json.loads(run("infer", "--model", "v1.1", "--image", img, "--backend", "golden",
                       "--json").stdout)
    r = run("infer", "--model", "v1.1", "--image", img, "--backend", "rtl", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["backend"] == "rtl" and out["config"] == "z7020" and out["bit_exact"] is True
    assert out["top"] == g["top"]
    assert out["top"][0]["index"] == 834
    assert out["cycles"] > 0


def test_quantize_writes_artifact_and_reports(models, tmp_path):
    r = run("quantize", "--model", "v1.1", "--out", tmp_path / "q", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (tmp_path / "q" / "model.json").is_file()
    names = [row["name"] for row in out["layers"]]
    assert "conv1" in names and "conv10" in names
    assert all(np.isfinite(row["sqnr_db"]) for row in out["layers"])
    assert out["float_top"][0]["index"] == 834


def test_synthetic_weights_are_labelled(tmp_path):
    empty = tmp_path / "nomodels"
    empty.mkdir()
    r = run("infer", "--model", "v1.1", "--no-download", "--json",
            env={"SQUEEZEFORGE_MODELS": str(empty), "SQUEEZEFORGE_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["weights"] == "synthetic" and out["synthetic"] is True
    assert "synthetic" in r.stderr


# -- bad input ------------------------------------------------------------------------------
def test_missing_weight_file(tmp_path):
    p = tmp_path / "nothere.caffemodel"
    assert_user_error(run("infer", "--weights", p), str(p))


def test_truncated_weight_file(models, tmp_path):
    src = (models / "squeezenet_v1.1" / "squeezenet_v1.1.caffemodel").read_bytes()
    p = tmp_path / "cut.caffemodel"
    p.write_bytes(src[: len(src) // 3])
    assert_user_error(run("infer", "--weights", p), str(p))


def test_corrupt_weight_file(tmp_path):
    p = tmp_path / "junk.caffemodel"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert_user_error(run("infer", "--weights", p), str(p))


def test_mismatched_weights(models):
    p = models / "squeezenet_v1.1" / "squeezenet_v1.1.caffemodel"
    assert_user_error(run("infer", "--model", "v1.0", "--weights", p), str(p), "conv1")


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture\n")
    assert_user_error(run("infer", "--image", p, "--no-download"), str(p))


def test_missing_image(tmp_path):
    p = tmp_path / "gone.png"
    assert_user_error(run("infer", "--image", p, "--no-download"), str(p))


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grayscale_and_rgba_are_converted_with_a_note(tmp_path, mode):
    p = tmp_path / f"img_{mode}.png"
    rng = np.random.default_rng(0)
    shape = (240, 250) if mode == "L" else (240, 250, 4)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(p)
    r = run("infer", "--image", p, "--no-download", "--json")
    assert r.returncode == 0, r.stderr
    assert f"{mode} image converted to RGB" in r.stderr


def test_small_image_is_resized_with_a_note(tmp_path):
    p = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(p)
    r = run("infer", "--image", p, "--no-download", "--json")
    assert r.returncode == 0, r.stderr
    assert "smaller than" in r.stderr


def test_nan_weights(tmp_path):
    from squeezeforge.quant.network import squeezenet
    from squeezeforge.quant.model import synthetic_model
    import onnx
    from onnx import helper, numpy_helper, TensorProto
    # an ONNX file carrying the v1.1 graph's convolutions with one NaN planted in fire5/expand3x3
    fm = synthetic_model(squeezenet("v1.1"))
    nodes, inits = [], []
    blob = "data"
    for c in fm.net.convs:
        w, b = fm.params[c.name]
        if c.name == "fire5/expand3x3":
            w = w.copy()
            w[3, 2, 1, 1] = np.nan
        inits += [numpy_helper.from_array(w, c.name + "_w"), numpy_helper.from_array(b, c.name + "_b")]
        nodes.append(helper.make_node("Conv", [blob, c.name + "_w", c.name + "_b"], [c.name]))
        blob = c.name
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info(blob, TensorProto.FLOAT, None)], inits)
    p = tmp_path / "nan.onnx"
    onnx.save(helper.make_model(g), str(p))
    assert_user_error(run("infer", "--weights", p), str(p), "fire5/expand3x3", "NaN")


@pytest.mark.parametrize("argv", [
    ["simulate", "--config", "z7020:in_lanes=64", "--no-download"],
    ["infer", "--backend", "rtl", "--config", "z7020:in_lanes=64", "--no-download"],
    ["demo", "--config", "z7020:in_lanes=64", "--no-download"],
])
def test_rtl_commands_refuse_a_configuration_that_does_not_fit(argv):
    """64x16 MACs on the XC7Z020: refused before any Verilog is generated, with the numbers."""
    r = run(*argv)
    assert_user_error(r, "does not fit xc7z020", "DSP 564 > 220")

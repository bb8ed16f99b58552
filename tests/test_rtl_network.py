"""Whole networks on the engine's RTL (cocotb + Verilator), bit-exact on every layer.

* SqueezeNet v1.0 and v1.1 on the ``z7020`` preset (16x16 MACs, streamed weights), real
  weights when ``SQUEEZEFORGE_MODELS`` holds them, else the seeded synthetic ones. The programs
  are compiled with ``dump=True`` so every fused squeeze output is copied to DDR too: the check
  covers the top blob of EVERY layer of the network (convolutions incl. squeeze, concats, pools,
  the classifier), not just what the next pass happens to read.
* Randomized Fire networks (hypothesis, derandomized so CI sees the same examples every run and
  the Verilator builds stay cached): odd input channels, squeeze and expand widths that are not
  multiples of the lanes, small non-square inputs with odd and even sides (an even side makes the
  3x3/2 max-pool's last window hang over the edge), an optional stem convolution (1x1; 3x3, run
  as im2col when Cin < 8; 3x3 stride 2) or none (the first squeeze then reads the signed input),
  optional pool / second Fire / classifier (3x3, 1x1, or 1x1 without ReLU: a signed output),
  streamed weights with 64 words or the tightest weight buffer the compiler accepts, or resident
  weights in a memory of exactly the words needed, on 8x8 or 8x16 MAC arrays.

Every test checks twice: ``simulate_program``'s own per-layer report (``bit_exact``,
``mismatches``, ``checked_blobs``), and independently here, from the tensors the cocotb run read
back from the DDR model, per layer against the golden model (``golden_blobs``): shape, dtype and
every value, a difference reported as layer, channel, row, column, expected, got and the
commands' cycle window. No golden tensor may be constant, so a layer the RTL never wrote (its DDR
region starts zeroed) cannot pass by accident.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from squeezeforge.host.schedule import ScheduleError, blob_shapes, compile_program
from squeezeforge.hw.config import EngineConfig, resolve_config
from squeezeforge.quant import numeric
from squeezeforge.quant.model import synthetic_model
from squeezeforge.quant.network import Concat, Conv, Network, Pool, squeezenet
from squeezeforge.quant.quantize import quantize
from squeezeforge.sim.simulate import golden_blobs, simulate, simulate_program


# ---------------------------------------------------------------- shared checks
def _rtl_tensors(workdir: Path) -> dict[str, np.ndarray]:
    """The tensors the cocotb side read back from the DDR model after the run."""
    res = json.loads((workdir / "results.json").read_text())
    with np.load(workdir / res["tensors_file"]) as z:
        return {key.replace("|", "/"): z[key] for key in z.files}


def _first_difference(got: np.ndarray, want: np.ndarray) -> str:
    c, y, x = (int(v) for v in np.argwhere(got != want)[0])
    return (f"{int((got != want).sum())} of {want.size} values differ; first at channel {c}, "
            f"row {y}, column {x}: expected {int(want[c, y, x])}, got {int(got[c, y, x])}")


def _window(r: dict, layer: str):
    """[first, last) cycle from START of the commands computing ``layer`` (None: no command)."""
    rows = [row for row in r["layers"] if layer in {n.split("[")[0] for n in row["layers"]}]
    return [rows[0]["window"][0], rows[-1]["window"][1]] if rows else None


def _check_every_layer(r: dict, qm, x_int8: np.ndarray, workdir: Path, what: str) -> None:
    """simulate_program's verdict, its coverage, and an independent per-layer comparison."""
    net = qm.net
    tops = [l.top for l in net.layers]
    assert r["mismatches"] == [], f"{what}: {json.dumps(r['mismatches'], indent=1)}"
    assert r["bit_exact"] is True, what
    assert set(r["checked_blobs"]) == set(tops), \
        f"{what}: blobs not compared: {sorted(set(tops) - set(r['checked_blobs']))}"

    gold = golden_blobs(qm, x_int8)
    got = _rtl_tensors(workdir)
    for l in net.layers:
        want = gold[l.top]
        # a constant golden tensor would not tell a written layer from an unwritten one
        assert np.unique(want).size > 1, f"{what}: golden {l.top} is constant ({want.flat[0]})"
        assert l.top in got, f"{what}: the RTL run returned no tensor for {l.top}"
        have = got[l.top]
        assert have.shape == want.shape, \
            f"{what}: {l.top} has shape {have.shape}, expected {want.shape}"
        assert have.dtype == want.dtype, f"{what}: {l.top} is {have.dtype}, expected {want.dtype}"
        if not np.array_equal(have, want):
            pytest.fail(f"{what}: layer {l.name} (blob {l.top}): {_first_difference(have, want)}"
                        f"; commands' cycle window from START {_window(r, l.name)}")


def _check_timing(r: dict, qm, size, model_slack: int = 0) -> None:
    """Per command: MACs add up to the network's, cycles at least the ideal, windows tile; the
    cycle model within 2 % of the RTL (``model_slack`` more cycles allowed per command: the
    fixed costs of the tiny random networks' commands of a few hundred cycles are modelled
    less exactly than SqueezeNet's)."""
    shapes = blob_shapes(qm.net, size)
    assert sum(row["macs"] for row in r["layers"]) == sum(
        c.cout * c.reduction * shapes[c.top][1] * shapes[c.top][2] for c in qm.net.convs)
    for row in r["layers"]:
        assert row["cycles"] > 0, row
        assert row["cycles"] >= row["ideal_cycles"], row
    w = [row["window"] for row in r["layers"]]
    assert all(a[1] == b[0] for a, b in zip(w, w[1:]))
    assert w[-1][1] <= r["cycles"]
    # the cycle model (sim/cycle_model.py) within 2 % of the RTL on every command
    for row in r["layers"]:
        assert abs(row["model_cycles"] - row["cycles"]) <= 0.02 * row["cycles"] + model_slack, \
            (row["name"], row["op"], row["cycles"], row["model_cycles"])
    assert abs(r["model_total_cycles"] - r["cycles"]) <= 0.001 * r["cycles"] + model_slack


def _summary(tag: str, r: dict) -> str:
    return (f"[{tag}] {r['cycles']:,} cycles ({r['utilization']:.0%} of the MAC array), "
            f"Verilog {r['verilog_s']:.1f} s, build {r['build_s']:.1f} s (built={r['built']}), "
            f"sim {r['sim_s']:.1f} s ({r['cycles_per_s'] / 1e3:.0f} k cycles/s), "
            f"{len(r['checked_blobs'])} blobs bit-exact")


# ---------------------------------------------------------------- SqueezeNet, whole network
def _squeezenet_input(model: str):
    """The quantized model and int8 input simulate() uses (same loader, calibration, image)."""
    from squeezeforge.quant.preprocess import default_image, load_image
    from squeezeforge.quant.weights import load_weights
    fm = load_weights(model, download=False, progress=False)
    qm = quantize(fm, size=227)
    x, _ = load_image(default_image(), 227)
    return fm, qm, numeric.quantize_input(x, qm.input_scale)


@pytest.mark.slow
def test_v10_whole_network_rtl(tmp_path, capsys):
    """SqueezeNet v1.0 through simulate() on z7020: every layer bit-exact (squeeze outputs
    included: simulate() compiles with the default dump=True)."""
    r = simulate("v1.0", config="z7020", download=False, progress=False, workdir=tmp_path)
    fm, qm, x8 = _squeezenet_input("v1.0")
    with capsys.disabled():
        print("\n" + _summary(f"v1.0 z7020 {'synthetic' if r['synthetic'] else 'real'} weights",
                              r) + f"; notes: {r['notes']}")
    assert r["synthetic"] == fm.synthetic
    assert qm.net == squeezenet("v1.0")
    _check_every_layer(r, qm, x8, tmp_path, "v1.0 z7020")
    _check_timing(r, qm, 227)
    # the DDR model is deterministic: the cycle model is exact on every command and in total,
    # here with the ring stalls v1.1 does not have (pool4's and pool8's rows wait for DDR, and
    # pool8's first wait for the weight prefetch's bursts in flight) and conv1's padded pixels
    assert [row["model_cycles"] for row in r["layers"]] == [row["cycles"] for row in r["layers"]]
    assert r["model_total_cycles"] == r["cycles"]
    # every Fire module's squeeze output was compared, fused or not
    assert {f.squeeze.top for f in qm.net.fires()} <= set(r["checked_blobs"])
    assert len(qm.net.fires()) == 8
    assert len(r["top"]) == 5


@pytest.mark.slow
def test_v11_whole_network_rtl_every_layer(tmp_path, capsys):
    """SqueezeNet v1.1 compiled with dump=True and run with simulate_program: the check
    covers every layer's top blob (the CLI test only asserts bit_exact)."""
    fm, qm, x8 = _squeezenet_input("v1.1")
    program = compile_program(qm, resolve_config("z7020"), 227, dump=True)
    assert program.notes == []                     # every Fire module runs fused
    r = simulate_program(program, qm, x8, progress=False, workdir=tmp_path)
    with capsys.disabled():
        print("\n" + _summary(f"v1.1 z7020 {'synthetic' if fm.synthetic else 'real'} weights", r))
    _check_every_layer(r, qm, x8, tmp_path, "v1.1 z7020")
    _check_timing(r, qm, 227)
    # the DDR model is deterministic: the cycle model is exact on every command and the total
    assert [row["model_cycles"] for row in r["layers"]] == [row["cycles"] for row in r["layers"]]
    assert r["model_total_cycles"] == r["cycles"]
    assert {f.squeeze.top for f in qm.net.fires()} <= set(r["checked_blobs"])
    assert any(c.op.name == "EXPAND" for c in program.commands)


@pytest.mark.slow
def test_v11_whole_network_rtl_32_input_lanes(tmp_path, capsys):
    """SqueezeNet v1.1 on zu3eg (32x16 MACs, streamed weights: a wider activation word, a
    different conv pipeline depth and DMA pattern than z7020): every layer bit-exact, and the
    cycle model exact on every command but the global average pool, which it holds to 0.2 %."""
    fm, qm, x8 = _squeezenet_input("v1.1")
    program = compile_program(qm, resolve_config("zu3eg"), 227, dump=True)
    r = simulate_program(program, qm, x8, progress=False, workdir=tmp_path)
    with capsys.disabled():
        print("\n" + _summary(f"v1.1 zu3eg {'synthetic' if fm.synthetic else 'real'} weights", r))
    _check_every_layer(r, qm, x8, tmp_path, "v1.1 zu3eg")
    _check_timing(r, qm, 227)
    for row in r["layers"]:
        if row["op"] == "GAP":
            assert abs(row["model_cycles"] - row["cycles"]) <= 0.002 * row["cycles"], row
        else:
            assert row["model_cycles"] == row["cycles"], row
    assert {f.squeeze.top for f in qm.net.fires()} <= set(r["checked_blobs"])


# ---------------------------------------------------------------- randomized Fire networks
def _fire(name: str, bottom: str, cin: int, s: int, e1: int, e3: int) -> list:
    b1, b3 = f"{name}/expand1x1", f"{name}/expand3x3"
    return [Conv(f"{name}/squeeze1x1", bottom, f"{name}/squeeze1x1", cin, s, 1),
            Conv(b1, f"{name}/squeeze1x1", b1, s, e1, 1),
            Conv(b3, f"{name}/squeeze1x1", b3, s, e3, 3, 1, 1),
            Concat(f"{name}/concat", (b1, b3), f"{name}/concat")]


def _fits(layers: list, cin: int, hw: tuple[int, int]) -> bool:
    try:
        blob_shapes(Network("probe", tuple(layers), input_channels=cin), hw)
    except ScheduleError:
        return False
    return True


# Hypothesis tries the simplest choice of every strategy first (0 for an integer, the first
# element of sampled_from), and shrinking is off below, so the orders here only decide the first
# example: the fullest network (15x13x12 input, 3x3 stem, two Fire modules of the widest odd
# widths, the pool's last window hanging over an even edge, a 3x3 classifier) instead of a
# 1-channel 3x3 one. Channel counts are never a whole number of lane groups (Pi = 8, Po = 8/16).
_SQUEEZE = st.integers(0, 22).map(lambda i: 23 - i).filter(lambda v: v % 8)   # 13x13x23 fits 4 KB
_EXPAND = st.integers(0, 19).map(lambda i: 20 - i).filter(lambda v: v % 8)
_CIN = st.integers(0, 7).map(lambda i: 15 - 2 * i)                        # 15, 13, ..., 1
_H = st.integers(0, 10).map(lambda i: 13 - i)                            # 13 .. 3
_W = st.integers(0, 10).map(lambda i: (i + 9) % 11 + 3)                  # 12, 13, 3 .. 11
_YES_NO = st.sampled_from([True, False])


@st.composite
def fire_networks(draw):
    """(Network, (H, W)): [stem] Fire [max-pool] [Fire] [classifier conv]."""
    cin = draw(_CIN)
    hw = (draw(_H), draw(_W))
    layers: list = []
    bottom, c = "data", cin
    stem = draw(st.sampled_from(["3x3", "3x3/2", "1x1", "none"]))
    if stem != "none":
        k, stride, pad = {"1x1": (1, 1, 0), "3x3": (3, 1, 1), "3x3/2": (3, 2, 0)}[stem]
        c1 = draw(_SQUEEZE)
        layers.append(Conv("conv1", bottom, "conv1", c, c1, k, stride, pad))
        bottom, c = "conv1", c1
    s, e1, e3 = draw(_SQUEEZE), draw(_EXPAND), draw(_EXPAND)
    layers += _fire("fire2", bottom, c, s, e1, e3)
    bottom, c = "fire2/concat", e1 + e3
    if draw(_YES_NO):
        pool = Pool("pool2", bottom, "pool2", "max", 3, 2)
        if _fits(layers + [pool], cin, hw):
            layers.append(pool)
            bottom = "pool2"
    if draw(_YES_NO):
        s, e1, e3 = draw(_SQUEEZE), draw(_EXPAND), draw(_EXPAND)
        layers += _fire("fire3", bottom, c, s, e1, e3)
        bottom, c = "fire3/concat", e1 + e3
    head = draw(st.sampled_from(["3x3", "1x1 linear", "1x1", "none"]))
    if head != "none":
        k, pad = (3, 1) if head == "3x3" else (1, 0)
        layers.append(Conv("conv10", bottom, "conv10", c, draw(st.integers(2, 21)), k, 1, pad,
                           relu=head != "1x1 linear"))
    return Network("fire_random", tuple(layers), input_channels=cin, softmax=False), hw


def _engine_config(qm, hw, weight_mode: str, out_lanes: int, tight: bool) -> EngineConfig:
    """An 8 x out_lanes engine with 4 KB activation and squeeze buffers. Resident: a weight
    memory of exactly the words the network needs. Streamed: 64 words, or (``tight``) the
    smallest buffer the compiler accepts: the largest single output group of any pass."""
    base = EngineConfig("rnd", "xc7z020", 8, out_lanes, weight_mode, weight_words=4096,
                        act_buffer_bytes=4096, squeeze_buffer_bytes=4096)
    probe = compile_program(qm, base, hw)
    if weight_mode == "resident":
        return base.with_(weight_words=probe.packed.n_words)
    if not tight:
        return base.with_(weight_words=64)
    pi = base.in_lanes
    need = 0
    for l in qm.net.convs:
        if l.bottom == qm.net.input_name and probe.input_layout == "im2col":
            need = max(need, -(-l.reduction // pi))                  # a 1x1 over k*k*Cin
        else:
            need = max(need, -(-l.cin // pi) * l.kernel * l.kernel)
    return base.with_(weight_words=need)


# Each example is a new Verilator build (the parameter memory and resident weights are the
# engine's initial contents), about 30-40 s here; derandomized so the same examples (and their
# cached builds) come back on every run. No shrinking: a failing example would otherwise be
# rebuilt dozens of times; the failure message names the layer, channel, row and column.
_FIRE_EXAMPLES = 4


@settings(max_examples=_FIRE_EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate], print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=fire_networks(), weight_mode=st.sampled_from(["streamed", "resident"]),
       out_lanes=st.sampled_from([16, 8]), tight=_YES_NO, seed=st.integers(0, 2**16))
def _fire_examples(seen: list, spec, weight_mode, out_lanes, tight, seed):
    net, hw = spec
    side = max(hw)
    rng = np.random.default_rng(seed)
    calib = [rng.normal(0, 40, (net.input_channels, side, side)).astype(np.float32)
             for _ in range(2)]
    qm = quantize(synthetic_model(net, seed=seed), calib, size=side)
    x8 = numeric.quantize_input(
        rng.normal(0, 40, (net.input_channels, *hw)).astype(np.float32), qm.input_scale)
    cfg = _engine_config(qm, hw, weight_mode, out_lanes, tight)
    program = compile_program(qm, cfg, hw, dump=True)
    shapes = blob_shapes(net, hw)
    what = (f"{weight_mode} 8x{out_lanes}, {cfg.weight_words} weight words, input "
            f"{net.input_channels}x{hw[0]}x{hw[1]}: " + ", ".join(
                f"{l.name} {'x'.join(map(str, shapes[l.top]))}"
                + (" linear" if isinstance(l, Conv) and not l.relu else "")
                for l in net.layers if not isinstance(l, Concat)))
    with tempfile.TemporaryDirectory(prefix="sqzf-fire-") as d:
        r = simulate_program(program, qm, x8, progress=False, workdir=d)
        print(f"\n[fire random] {what}\n  {program.input_layout} input; commands "
              + " ".join(c.name for c in program.commands if c.op.name != "END")
              + (f"; notes {program.notes}" if program.notes else "")
              + "\n  " + _summary("rtl", r))
        _check_every_layer(r, qm, x8, Path(d), what)
    _check_timing(r, qm, hw, model_slack=32)
    seen.append((weight_mode, out_lanes, program.input_layout,
                 any(c.op.name == "EXPAND" for c in program.commands)))


@pytest.mark.slow
def test_fire_random_shapes_rtl():
    """Randomized Fire networks on the RTL, every layer bit-exact; the fixed examples must
    between them cover both weight modes and both MAC array widths."""
    seen: list = []
    _fire_examples(seen)
    assert len(seen) == _FIRE_EXAMPLES
    assert {m for m, *_ in seen} == {"streamed", "resident"}, seen
    assert {po for _, po, *_ in seen} == {8, 16}, seen
    assert any(fused for *_, fused in seen), seen

"""ConvCore in Amaranth's simulator against quant/reference.conv2d + numeric.requantize.

Memories are filled with a tiny packer written here from the layout contract in
hw/memories.py (quant/pack.py will own the real one); expectations come from the NumPy
reference, never from the design.
"""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from squeezeforge.hw.conv import ConvCore
from squeezeforge.hw.memories import act_word_layout, param_word_layout, weight_word_layout
from squeezeforge.quant import numeric
from squeezeforge.quant.reference import conv2d

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


# -- packing helpers (layout contract of hw/memories.py) ----------------------------------------
def cdiv(a, b):
    return -(-a // b)


def pack_act(x, pi):
    """(C, H, W) int -> words at (y*W + x)*n_ic + icb, each Pi byte patterns."""
    c, h, w = x.shape
    n_ic = cdiv(c, pi)
    xp = np.zeros((n_ic * pi, h, w), dtype=np.int64)
    xp[:c] = x
    words = xp.reshape(n_ic, pi, h, w).transpose(2, 3, 0, 1).reshape(-1, pi) & 0xFF
    return [list(map(int, wd)) for wd in words]


def pack_weights(wt, pi, po):
    """(O, C, k, k) -> words ((og*k + kh)*k + kw)*n_ic + icb, each Po banks of Pi int8."""
    o, c, k, _ = wt.shape
    n_og, n_ic = cdiv(o, po), cdiv(c, pi)
    wp = np.zeros((n_og * po, n_ic * pi, k, k), dtype=np.int64)
    wp[:o, :c] = wt
    # (og, o, icb, i, kh, kw) -> (og, kh, kw, icb, o, i)
    arr = wp.reshape(n_og, po, n_ic, pi, k, k).transpose(0, 4, 5, 2, 1, 3).reshape(-1, po, pi)
    return [[list(map(int, bank)) for bank in wd] for wd in arr]


def pack_params(bias, mult, shift, po):
    o = len(bias)
    words = []
    for og in range(cdiv(o, po)):
        lanes = []
        for lane in range(po):
            ch = og * po + lane
            lanes.append(dict(bias=int(bias[ch]), mult=int(mult[ch]), shift=int(shift[ch]))
                         if ch < o else dict(bias=0, mult=0, shift=0))
        words.append(lanes)
    return words


class ConvBench(Elaboratable):
    """ConvCore plus its three memories (the parameter memory has two read ports)."""

    def __init__(self, core: ConvCore, act, wgt, par):
        self.core = core
        self.act = Memory(shape=act_word_layout(core.in_lanes), depth=core.act_depth, init=act)
        self.wgt = Memory(shape=weight_word_layout(core.in_lanes, core.out_lanes),
                          depth=core.weight_depth, init=wgt)
        self.par = Memory(shape=param_word_layout(core.out_lanes), depth=core.param_depth,
                          init=par)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.act = self.act
        m.submodules.wgt = self.wgt
        m.submodules.par = self.par
        # Non-transparent synchronous read ports: nothing writes these memories during a pass.
        wiring.connect(m, core.act_rd, self.act.read_port())
        wiring.connect(m, core.wgt_rd, self.wgt.read_port())
        wiring.connect(m, core.bias_rd, self.par.read_port())
        wiring.connect(m, core.scale_rd, self.par.read_port())
        return m


class Layer:
    """One random test convolution and its NumPy expectation."""

    def __init__(self, rng, cin, cout, h, w, k, stride, pad, signed=False, relu=True,
                 name="conv"):
        self.name, self.cin, self.cout, self.k, self.stride, self.pad = name, cin, cout, k, stride, pad
        self.signed, self.relu = signed, relu
        self.x = (rng.integers(-128, 128, (cin, h, w)) if signed
                  else rng.integers(0, 256, (cin, h, w)))
        self.w = rng.integers(-numeric.WEIGHT_MAX, numeric.WEIGHT_MAX + 1, (cout, cin, k, k))
        self.b = rng.integers(-2 ** 16, 2 ** 16, cout)
        acc = conv2d(self.x, self.w, self.b, stride, pad, dtype=np.float64)
        assert np.all(np.abs(acc) < 2 ** 31)
        self.acc = acc.astype(np.int64)
        # Scale each channel so its outputs spread over the 8-bit range (some saturate).
        peak = np.maximum(np.abs(self.acc).reshape(cout, -1).max(axis=1), 1)
        ms = [numeric.quantize_multiplier(float(rng.uniform(150, 400)) / p) for p in peak]
        self.mult = np.array([m for m, _ in ms])
        self.shift = np.array([s for _, s in ms])
        self.expected = numeric.requantize(self.acc, self.mult, self.shift, relu)
        self.h, self.wd = h, w
        self.ho, self.wo = self.expected.shape[1:]


def drive_pass(core: ConvCore, bench, cmd: dict, grid, ready_prob: float, seed: int,
               limit: int, name: str):
    """Run one pass of ``core`` in ``bench`` with ``cmd``: o_stream ready with probability
    ``ready_prob``; each record's lanes go to ``grid[og*Po:(og+1)*Po, y, x]``. Returns the
    cycles from start to done and the records' (y, x, og) in stream order."""
    po = core.out_lanes
    order, info = [], {}
    rng = np.random.default_rng(seed)

    async def bench_proc(ctx):
        ctx.set(core.cmd, cmd)
        ctx.set(core.start, 1)
        await ctx.tick()
        ctx.set(core.start, 0)
        cycle = 1
        assert ctx.get(core.busy)
        while True:
            ready = ready_prob >= 1.0 or rng.random() < ready_prob
            ctx.set(core.o_stream.ready, int(ready))
            if ctx.get(core.o_stream.valid) and ready:
                rec = ctx.get(core.o_stream.payload)
                y, x, og = int(rec.y), int(rec.x), int(rec.og)
                order.append((y, x, og))
                grid[og * po:(og + 1) * po, y, x] = [int(v) for v in rec.data]
            if ctx.get(core.done):
                break
            await ctx.tick()
            cycle += 1
            assert cycle < limit, f"{name}: no done after {cycle} cycles"
        info["cycles"] = cycle
        await ctx.tick()
        assert not ctx.get(core.busy)

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(bench_proc)
    sim.run()
    return info["cycles"], order


def run_conv(core: ConvCore, layers, ready_prob=1.0, seed=0, weight_base=0, param_base=0):
    """Run ``layers`` as consecutive passes of one core; return per layer the output grid
    (Cout, Ho, Wo) as uint8 bit patterns, the cycle count start -> done, and the stream order."""
    pi, po = core.in_lanes, core.out_lanes
    # All layers share the memories: weights and params one after the other from the bases;
    # each layer's activations at address 0 of its own bench (one bench per layer).
    results = []
    for layer in layers:
        act = pack_act(layer.x, pi)
        wgt = [[[0] * pi] * po] * weight_base + pack_weights(layer.w, pi, po)
        par = [[dict(bias=0, mult=0, shift=0)] * po] * param_base + \
            pack_params(layer.b, layer.mult, layer.shift, po)
        assert len(act) <= core.act_depth and len(wgt) <= core.weight_depth
        bench = ConvBench(core, act, wgt, par)
        n_og, n_ic = cdiv(layer.cout, po), cdiv(layer.cin, pi)
        grid = np.full((n_og * po, layer.ho, layer.wo), -1, dtype=np.int64)
        limit = 4 * core.pass_cycles(layer.ho, layer.wo, n_og, layer.k, n_ic) + 100
        cmd = dict(h=layer.h, w=layer.wd, n_ic=n_ic, k=layer.k, stride=layer.stride,
                   pad=layer.pad, ho=layer.ho, wo=layer.wo, n_og=n_og, weight_base=weight_base,
                   param_base=param_base, act_signed=int(layer.signed), relu=int(layer.relu))
        cycles, order = drive_pass(core, bench, cmd, grid, ready_prob, seed, limit, layer.name)
        results.append((grid, cycles, order))
    return results


def check_layers(core, layers, ready_prob=1.0, **kw):
    pi, po = core.in_lanes, core.out_lanes
    for layer, (grid, cycles, order) in zip(layers, run_conv(core, layers, ready_prob, **kw)):
        n_og, n_ic = cdiv(layer.cout, po), cdiv(layer.cin, pi)
        exp_order = [(y, x, og) for y in range(layer.ho) for x in range(layer.wo)
                     for og in range(n_og)]
        assert order == exp_order, (
            f"{layer.name}: output records out of order or missing; first difference at "
            f"{next((i, a, b) for i, (a, b) in enumerate(zip(order + [None] * len(exp_order), exp_order)) if a != b)}"
            f" (index, got, expected)")
        got = grid[:layer.cout]
        exp = layer.expected.astype(np.int64) & 0xFF
        bad = np.argwhere(got != exp)
        if bad.size:
            c, y, x = bad[0]
            raise AssertionError(
                f"{layer.name}: {len(bad)} mismatches; first at channel {c}, row {y}, column {x}: "
                f"expected {exp[c, y, x]:#04x}, got {got[c, y, x]:#04x} "
                f"(acc {layer.acc[c, y, x]}, M {layer.mult[c]}, shift {layer.shift[c]})")
        np.testing.assert_array_equal(got, exp)
        if ready_prob >= 1.0:
            formula = core.pass_cycles(layer.ho, layer.wo, n_og, layer.k, n_ic)
            assert cycles == formula, (f"{layer.name}: {cycles} cycles from start to done, "
                                       f"pass_cycles() says {formula}")
            assert formula == (ConvCore.steps(layer.ho, layer.wo, n_og, layer.k, n_ic)
                               + core.setup_cycles + core.latency + core.done_delay)


def small_core(pi=8, po=4, packing=True, **kw):
    depths = dict(act_depth=512, weight_depth=512, param_depth=16)
    depths.update(kw)
    return ConvCore(pi, po, dsp_packing=packing, **depths)


def test_1x1_odd_channels():
    rng = np.random.default_rng(1)
    check_layers(small_core(), [Layer(rng, 20, 13, 5, 4, 1, 1, 0, name="1x1 20->13")])


def test_3x3_pad1_stride1_signed_and_unsigned():
    rng = np.random.default_rng(2)
    core = small_core()
    check_layers(core, [
        Layer(rng, 3, 5, 5, 6, 3, 1, 1, name="3x3p1 3->5"),
        Layer(rng, 3, 5, 4, 5, 3, 1, 1, signed=True, name="3x3p1 signed 3->5"),
    ])


def test_3x3_stride2_pad0_non_square():
    rng = np.random.default_rng(3)
    check_layers(small_core(), [Layer(rng, 20, 13, 7, 9, 3, 2, 0, name="3x3s2 20->13")])


def test_7x7_stride2_signed_input():
    """conv1-like: signed int8 input, Cin = 3, 7x7 stride 2, with and without padding."""
    rng = np.random.default_rng(4)
    check_layers(small_core(), [
        Layer(rng, 3, 5, 11, 11, 7, 2, 0, signed=True, name="7x7s2 signed"),
        Layer(rng, 3, 4, 8, 7, 7, 2, 3, signed=True, name="7x7s2p3 signed"),
    ])


def test_no_relu_int8_output_and_bases():
    """relu off (int8 outputs), nonzero weight and parameter bases, no DSP packing."""
    rng = np.random.default_rng(5)
    check_layers(small_core(packing=False, po=5),
                 [Layer(rng, 9, 13, 4, 4, 3, 1, 1, relu=False, name="3x3p1 int8 out")],
                 weight_base=37, param_base=3)


def test_backpressure():
    """o_stream ready only 30 % of the time: same values, same order, nothing lost."""
    rng = np.random.default_rng(6)
    check_layers(small_core(), [Layer(rng, 8, 6, 4, 5, 1, 1, 0, name="1x1 backpressure"),
                                Layer(rng, 4, 4, 4, 4, 3, 1, 1, name="3x3 backpressure")],
                 ready_prob=0.3, seed=9)


def test_wide_array_16x16():
    rng = np.random.default_rng(7)
    check_layers(ConvCore(16, 16, dsp_packing=True, act_depth=256, weight_depth=64,
                          param_depth=4),
                 [Layer(rng, 20, 20, 4, 4, 3, 1, 1, name="3x3p1 Pi=16 Po=16")])


def test_bad_parameters():
    with pytest.raises(ValueError, match=r"^out_lanes must be even with dsp_packing, not 5$"):
        ConvCore(8, 5, act_depth=16, weight_depth=16, param_depth=16)
    with pytest.raises(ValueError, match=r"^act_depth must be an integer of at least 2, not 1$"):
        ConvCore(8, 4, act_depth=1, weight_depth=16, param_depth=16)


class InterleavedExpand:
    """A Fire module's two expands as one ConvCore pass (``n_og1``): a 1x1 layer whose channels
    fill whole groups, then a 3x3 pad-1 layer, over the same input; expected values from the
    two layers' own NumPy references."""

    def __init__(self, rng, cin, e1_groups, e3, h, w, po):
        self.one = Layer(rng, cin, e1_groups * po, h, w, 1, 1, 0, name="expand1x1")
        self.three = Layer(rng, cin, e3, h, w, 3, 1, 1, name="expand3x3")
        self.three.x = self.one.x          # same input: recompute the 3x3 expectation
        acc = conv2d(self.one.x, self.three.w, self.three.b, 1, 1, dtype=np.float64)
        self.three.acc = acc.astype(np.int64)
        self.three.expected = numeric.requantize(self.three.acc, self.three.mult,
                                                 self.three.shift, True)
        self.cin, self.h, self.w, self.po = cin, h, w, po
        self.n_og1, self.n_og2 = e1_groups, cdiv(e3, po)


@pytest.mark.parametrize("ready_prob", [1.0, 0.4])
def test_interleaved_expand_pass(ready_prob):
    """n_og1 > 0: per pixel the 1x1 groups (centre tap) then the 3x3 groups, weights and
    parameters consecutive; values equal both references, records in pixel-major order, and
    with a ready consumer the pass takes pass_cycles(..., n_og1) cycles."""
    rng = np.random.default_rng(12)
    core = small_core(pi=8, po=4)
    pi, po = core.in_lanes, core.out_lanes
    case = InterleavedExpand(rng, 11, 2, 7, 5, 6, po)
    one, three = case.one, case.three
    act = pack_act(one.x, pi)
    wgt = pack_weights(one.w, pi, po) + pack_weights(three.w, pi, po)
    par = (pack_params(one.b, one.mult, one.shift, po)
           + pack_params(three.b, three.mult, three.shift, po))
    bench = ConvBench(core, act, wgt, par)
    n_ic, n_og = cdiv(case.cin, pi), case.n_og1 + case.n_og2
    grid = np.full((n_og * po, case.h, case.w), -1, dtype=np.int64)
    cmd = dict(h=case.h, w=case.w, n_ic=n_ic, k=3, stride=1, pad=1, ho=case.h, wo=case.w,
               n_og=n_og, weight_base=0, param_base=0, act_signed=0, relu=1, n_og1=case.n_og1)
    cycles, order = drive_pass(core, bench, cmd, grid, ready_prob, 3, 10_000, "interleaved")
    assert order == [(y, x, og) for y in range(case.h) for x in range(case.w)
                     for og in range(n_og)]
    e1 = case.n_og1 * po
    np.testing.assert_array_equal(grid[:e1], one.expected.astype(np.int64) & 0xFF,
                                  err_msg="1x1 groups")
    np.testing.assert_array_equal(grid[e1:e1 + three.cout], three.expected.astype(np.int64) & 0xFF,
                                  err_msg="3x3 groups")
    if ready_prob >= 1.0:
        steps = case.h * case.w * n_ic * (case.n_og1 + 9 * case.n_og2)
        assert ConvCore.steps(case.h, case.w, n_og, 3, n_ic, case.n_og1) == steps
        assert cycles == core.pass_cycles(case.h, case.w, n_og, 3, n_ic, case.n_og1)

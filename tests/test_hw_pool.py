"""MaxPool and GlobalAvgPool in Amaranth's simulator against quant/reference + numeric."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from squeezeforge.hw.memories import act_word_layout
from squeezeforge.hw.pool import GlobalAvgPool, MaxPool
from squeezeforge.quant import numeric
from squeezeforge.quant.network import Pool
from squeezeforge.quant.reference import global_sum, maxpool

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def cdiv(a, b):
    return -(-a // b)


def pack_act(x, pi):
    """(C, H, W) int -> words at (y*W + x)*n_ic + icb, each Pi byte patterns (zero lanes past C)."""
    c, h, w = x.shape
    n_ic = cdiv(c, pi)
    xp = np.zeros((n_ic * pi, h, w), dtype=np.int64)
    xp[:c] = x
    words = xp.reshape(n_ic, pi, h, w).transpose(2, 3, 0, 1).reshape(-1, pi) & 0xFF
    return [list(map(int, wd)) for wd in words]


class PoolBench(Elaboratable):
    def __init__(self, core, act):
        self.core = core
        self.act = Memory(shape=act_word_layout(core.in_lanes), depth=core.act_depth, init=act)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = self.core
        m.submodules.act = self.act
        # Non-transparent synchronous read port: nothing writes the memory during a pass.
        wiring.connect(m, self.core.act_rd, self.act.read_port())
        return m


def run_pass(core, x, cmd, ready_prob=1.0, seed=0):
    """Run one pass over x (C, H, W); return the accepted records and start->done cycles."""
    bench = PoolBench(core, pack_act(x, core.in_lanes))
    records, info = [], {}
    rng = np.random.default_rng(seed)

    async def proc(ctx):
        ctx.set(core.cmd, cmd)
        ctx.set(core.start, 1)
        await ctx.tick()
        ctx.set(core.start, 0)
        cycle = 1
        while True:
            ready = ready_prob >= 1.0 or rng.random() < ready_prob
            ctx.set(core.o_stream.ready, int(ready))
            if ctx.get(core.o_stream.valid) and ready:
                rec = ctx.get(core.o_stream.payload)
                records.append({name: (list(map(int, rec.data)) if name == "data"
                                       else int(getattr(rec, name)))
                                for name in core.o_stream.payload.shape().members})
            if ctx.get(core.done):
                break
            await ctx.tick()
            cycle += 1
            assert cycle < 500_000, "no done"
        info["cycles"] = cycle

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(proc)
    sim.run()
    return records, info["cycles"]


# -- max-pool ----------------------------------------------------------------------------------
def check_maxpool(core, x, signed=False, ready_prob=1.0, name="pool"):
    c, h, w = x.shape
    pi = core.in_lanes
    n_ic = cdiv(c, pi)
    ho, wo = Pool("", "", "", "max", 3, 2).out_hw(h, w)
    exp = maxpool(x.astype(np.int8 if signed else np.uint8), 3, 2)
    assert exp.shape == (c, ho, wo)
    cmd = dict(h=h, w=w, n_ic=n_ic, ho=ho, wo=wo, act_signed=int(signed))
    records, cycles = run_pass(core, x, cmd, ready_prob)
    order = [(r["y"], r["x"], r["icb"]) for r in records]
    exp_order = [(y, xx, i) for y in range(ho) for xx in range(wo) for i in range(n_ic)]
    assert order == exp_order, f"{name}: records out of order or missing ({len(order)} of {len(exp_order)})"
    got = np.zeros((n_ic * pi, ho, wo), dtype=np.int64)
    for r in records:
        got[r["icb"] * pi:(r["icb"] + 1) * pi, r["y"], r["x"]] = r["data"]
    got = got[:c]
    want = exp.astype(np.int64) & 0xFF
    bad = np.argwhere(got != want)
    if bad.size:
        ch, y, xx = bad[0]
        raise AssertionError(f"{name}: {len(bad)} mismatches; first at channel {ch}, row {y}, "
                             f"column {xx}: expected {want[ch, y, xx]}, got {got[ch, y, xx]}")
    np.testing.assert_array_equal(got, want)
    if ready_prob >= 1.0:
        assert cycles == core.pass_cycles(ho, wo, n_ic), (
            f"{name}: {cycles} cycles start->done, pass_cycles() says {core.pass_cycles(ho, wo, n_ic)}")
        assert core.pass_cycles(ho, wo, n_ic) == (9 * ho * wo * n_ic + core.setup_cycles
                                                  + core.latency + core.done_delay)


@pytest.mark.parametrize("h,w,c", [
    (13, 13, 12),     # 13 -> 6, exact
    (14, 15, 9),      # 14 -> 7 with a clipped last window row; 15 -> 7 exact
    (8, 6, 3),        # both dimensions clipped
    (55, 55, 5),      # 55 -> 27 (SqueezeNet v1.0 pool4-like size)
])
def test_maxpool_sizes(h, w, c):
    rng = np.random.default_rng(h * 1000 + w * 10 + c)
    x = rng.integers(0, 256, (c, h, w))
    check_maxpool(MaxPool(8, act_depth=h * w * cdiv(c, 8)), x, name=f"maxpool {h}x{w}x{c}")


def test_maxpool_113():
    """113 -> 56 (v1.0 pool1 spatial size), one channel word: 28,224 cycles (about 12 s)."""
    rng = np.random.default_rng(113)
    x = rng.integers(0, 256, (8, 113, 113))
    check_maxpool(MaxPool(8, act_depth=113 * 113), x, name="maxpool 113x113")


def test_maxpool_signed_and_backpressure():
    rng = np.random.default_rng(21)
    x = rng.integers(-128, 128, (11, 7, 8))
    check_maxpool(MaxPool(8, act_depth=128), x, signed=True, name="maxpool signed")
    x = rng.integers(0, 256, (16, 9, 9))
    check_maxpool(MaxPool(16, act_depth=128), x, ready_prob=0.25, name="maxpool backpressure")


def test_maxpool_clipping_needs_lowest_value():
    """Signed input with every value negative: if the clipped taps of the last window row and
    column (6 -> 3 outputs, windows at 4..6) read as 0 instead of "lowest", the max would be 0."""
    rng = np.random.default_rng(5)
    x = rng.integers(-128, -1, (8, 6, 6))
    check_maxpool(MaxPool(8, act_depth=64), x, signed=True, name="maxpool clipped negative")


# -- global average pool -----------------------------------------------------------------------
def check_gap(core, x, mult, shift, relu=True, signed=False, ready_prob=1.0, name="gap"):
    c, h, w = x.shape
    pi = core.in_lanes
    n_ic = cdiv(c, pi)
    exp = numeric.requantize(global_sum(x.astype(np.int64)).reshape(-1), mult, shift, relu)
    cmd = dict(h=h, w=w, n_ic=n_ic, mult=mult, shift=shift, relu=int(relu),
               act_signed=int(signed))
    records, cycles = run_pass(core, x, cmd, ready_prob)
    assert [r["icb"] for r in records] == list(range(n_ic)), f"{name}: records out of order"
    got = np.array([v for r in records for v in r["data"]][:c], dtype=np.int64)
    want = exp.astype(np.int64) & 0xFF
    bad = np.flatnonzero(got != want)
    if bad.size:
        ch = bad[0]
        raise AssertionError(f"{name}: {len(bad)} mismatches; first at channel {ch}: expected "
                             f"{want[ch]}, got {got[ch]} (sum {int(global_sum(x)[ch, 0, 0])})")
    np.testing.assert_array_equal(got, want)
    if ready_prob >= 1.0:
        assert cycles == core.pass_cycles(h, w, n_ic), (
            f"{name}: {cycles} cycles start->done, pass_cycles() says {core.pass_cycles(h, w, n_ic)}")
        # a word's last read waits for the holding register: Pi + 1 cycles apart
        steps = h * w + (n_ic - 1) * max(h * w, pi + 1, 3)
        assert core.pass_cycles(h, w, n_ic) == (steps + core.setup_cycles + core.latency
                                                + core.done_delay)


@pytest.mark.parametrize("side", [13, 14, 15])
def test_gap_windows(side):
    rng = np.random.default_rng(side)
    x = rng.integers(0, 256, (20, side, side))
    x[0] = 255                           # the largest possible sum
    x[1] = 0
    s_in, s_out = 0.05, 0.04
    mult, shift = numeric.avgpool_multiplier(side * side, s_in, s_out)
    check_gap(GlobalAvgPool(8, act_depth=side * side * 3), x, mult, shift,
              name=f"gap {side}x{side}")


def test_gap_int8_signed_and_backpressure():
    rng = np.random.default_rng(99)
    x = rng.integers(-128, 128, (10, 5, 7))
    mult, shift = numeric.avgpool_multiplier(35, 1.0, 0.5)
    check_gap(GlobalAvgPool(8, act_depth=128), x, mult, shift, relu=False, signed=True,
              name="gap signed int8")
    x = rng.integers(0, 256, (40, 3, 3))
    check_gap(GlobalAvgPool(8, act_depth=64), x, 65535, 11, ready_prob=0.2,
              name="gap backpressure")


@pytest.mark.parametrize("h,w", [(1, 1), (2, 2), (1, 3)])
def test_gap_small_windows_wait_for_the_requantizer(h, w):
    """Windows of fewer pixels than Pi + 1: each word's last read waits for the one-lane
    requantizer to take the previous word (cycle count checked against pass_cycles)."""
    rng = np.random.default_rng(h * 10 + w)
    x = rng.integers(0, 256, (37, h, w))
    mult, shift = numeric.avgpool_multiplier(h * w, 0.05, 0.04)
    check_gap(GlobalAvgPool(8, act_depth=64), x, mult, shift, name=f"gap {h}x{w}")


def test_bad_parameters():
    with pytest.raises(ValueError, match=r"^in_lanes must be a positive integer, not 0$"):
        MaxPool(0, act_depth=16)
    with pytest.raises(ValueError, match=r"^act_depth must be an integer of at least 2, not 1$"):
        GlobalAvgPool(8, act_depth=1)

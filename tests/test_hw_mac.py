"""MacArray in Amaranth's simulator against NumPy integer dot products (bit-exact)."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from squeezeforge.hw.mac_array import MacArray
from squeezeforge.quant import numeric

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

INT32 = 2 ** 32


def _wrap32(v: int) -> int:
    v %= INT32
    return v - INT32 if v >= 2 ** 31 else v


def run_mac(dut: MacArray, groups, gaps=None):
    """Drive accumulation groups through ``dut``; return (sums per group, output cycles).

    ``groups`` is a list of (act (n, Pi) int, weight (n, Po, Pi) int, bias (Po,) int, signed).
    ``gaps[g]`` idle cycles are inserted before every step of group g (default none).
    Returns the list of Po-vectors read from o_stream and, per group, the cycle its ``last``
    step was presented and the cycle its output appeared.
    """
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    results, when = [], []
    schedule = []                                  # per cycle: a step dict or None
    for g, (act, wgt, bias, signed) in enumerate(groups):
        for s in range(act.shape[0]):
            schedule += [None] * (gaps[g] if gaps else 0)
            schedule.append(dict(g=g, act=act[s], weight=wgt[s], bias=bias, signed=signed,
                                 first=s == 0, last=s == act.shape[0] - 1))
    schedule += [None] * (dut.latency + 2)
    last_cycle = {}

    async def bench(ctx):
        p = dut.i_stream.payload
        for cycle, st in enumerate(schedule):
            if ctx.get(dut.o_stream.valid):
                results.append([int(v) for v in ctx.get(dut.o_stream.payload)])
                when.append(cycle)
            if st is None:
                ctx.set(dut.i_stream.valid, 0)
            else:
                ctx.set(dut.i_stream.valid, 1)
                ctx.set(p.act, [int(v) & 0xFF for v in st["act"]])
                ctx.set(p.act_signed, int(st["signed"]))
                ctx.set(p.weight, [[int(v) for v in bank] for bank in st["weight"]])
                ctx.set(p.bias, [int(v) for v in st["bias"]])
                ctx.set(p.first, int(st["first"]))
                ctx.set(p.last, int(st["last"]))
                if st["last"]:
                    last_cycle[st["g"]] = cycle
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    return results, when, [last_cycle[g] for g in range(len(groups))]


def expected(groups):
    out = []
    for act, wgt, bias, _ in groups:
        s = np.einsum("ni,noi->o", act.astype(np.int64), wgt.astype(np.int64)) + bias
        out.append([_wrap32(int(v)) for v in s])
    return out


def check(dut, groups, gaps=None):
    got, when, last = run_mac(dut, groups, gaps)
    exp = expected(groups)
    assert len(got) == len(exp), f"expected {len(exp)} outputs, got {len(got)}"
    for g, (e, r) in enumerate(zip(exp, got)):
        for o in range(dut.out_lanes):
            assert r[o] == e[o], f"group {g} lane {o}: expected {e[o]}, got {r[o]}"
    for g, (w, l) in enumerate(zip(when, last)):
        assert w - l == dut.latency, (f"group {g}: output {w - l} cycles after its last step, "
                                      f"latency property says {dut.latency}")
    return got


def random_groups(rng, pi, po, n_groups, max_steps, signed_every=3):
    groups = []
    for g in range(n_groups):
        n = int(rng.integers(1, max_steps + 1))
        signed = g % signed_every == 1
        act = (rng.integers(-128, 128, (n, pi)) if signed else rng.integers(0, 256, (n, pi)))
        wgt = rng.integers(-numeric.WEIGHT_MAX, numeric.WEIGHT_MAX + 1, (n, po, pi))
        bias = rng.integers(-numeric.BIAS_LIMIT, numeric.BIAS_LIMIT + 1, po)
        groups.append((act, wgt, bias, signed))
    return groups


@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("pi,po", [(8, 4), (16, 2), (3, 6)])
def test_random_back_to_back(pi, po, packing):
    """Random groups of 1..5 steps with no gap between them, unsigned and signed input."""
    rng = np.random.default_rng(pi * 100 + po * 10 + packing)
    groups = random_groups(rng, pi, po, 14, 5)
    groups.append((np.full((1, pi), 255), np.full((1, po, pi), -127), np.zeros(po, int), False))
    groups.append((np.full((1, pi), -128 & 0xFF) - 256, np.full((1, po, pi), -127),
                   np.zeros(po, int), True))
    check(MacArray(pi, po, dsp_packing=packing), groups)


def test_packing_on_and_off_identical_with_gaps():
    """The same stream, with idle cycles between steps, through both multiplier mappings."""
    rng = np.random.default_rng(7)
    groups = random_groups(rng, 8, 4, 8, 4, signed_every=2)
    gaps = [int(g % 3) for g in range(len(groups))]
    a = check(MacArray(8, 4, dsp_packing=True), groups, gaps)
    b = check(MacArray(8, 4, dsp_packing=False), groups, gaps)
    assert a == b


@pytest.mark.parametrize("packing", [False, True])
def test_accumulator_bound(packing):
    """K = 576 products (fire9/expand3x3) at the extremes: acc_bound is reached exactly, and a
    bias that pushes the sum to the int32 extremes gives +-(2**31) exactly (no wrap)."""
    pi, po = 8, 4
    k = 576
    n = k // pi
    top = numeric.acc_bound(k) - numeric.BIAS_LIMIT          # 576 * 127 * 255
    top_s = numeric.acc_bound(k, signed_input=True) - numeric.BIAS_LIMIT  # 576 * 127 * 128
    u = np.full((n, pi), 255)
    s = np.full((n, pi), -128)
    wp = np.full((n, po, pi), 127)
    wn = np.full((n, po, pi), -127)
    # lane pattern: alternate weight signs between lanes so packed pairs mix signs too
    wmix = wp.copy()
    wmix[:, 1::2, :] = -127
    groups = [
        (u, wp, np.full(po, numeric.BIAS_LIMIT), False),
        (u, wn, np.full(po, -numeric.BIAS_LIMIT), False),
        (s, wn, np.full(po, numeric.BIAS_LIMIT), True),
        (u, wp, np.full(po, 2 ** 31 - 1 - top), False),
        (u, wn, np.full(po, -2 ** 31 + top), False),
        (s, wn, np.full(po, 2 ** 31 - 1 - top_s), True),
        (u, wmix, np.array([2 ** 31 - 1 - top, -2 ** 31 + top] * (po // 2)), False),
    ]
    got = check(MacArray(pi, po, dsp_packing=packing), groups)
    assert got[0] == [numeric.acc_bound(k)] * po
    assert got[1] == [-numeric.acc_bound(k)] * po
    assert got[2] == [numeric.acc_bound(k, signed_input=True)] * po
    assert got[3] == [2 ** 31 - 1] * po
    assert got[4] == [-2 ** 31] * po
    assert got[5] == [2 ** 31 - 1] * po
    assert got[6] == [2 ** 31 - 1, -2 ** 31] * (po // 2)


def test_latency_properties():
    # adder levels: packing decode + ceil_log2(Pi) tree + accumulator, two per stage
    assert MacArray(8, 4, dsp_packing=False).adder_levels == 4
    assert MacArray(8, 4, dsp_packing=False).latency == 4
    assert MacArray(8, 4, dsp_packing=True).latency == 5
    assert MacArray(16, 16, dsp_packing=True).latency == 5
    assert MacArray(16, 16, dsp_packing=True).multipliers == 128
    assert MacArray(16, 16, dsp_packing=False).multipliers == 256


def test_bad_parameters():
    with pytest.raises(ValueError, match=r"^in_lanes must be a positive integer, not 0$"):
        MacArray(0, 4)
    with pytest.raises(ValueError, match=r"^out_lanes must be even with dsp_packing, not 5$"):
        MacArray(8, 5, dsp_packing=True)
    MacArray(8, 5, dsp_packing=False)

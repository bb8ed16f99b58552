"""Requant in Amaranth's simulator against ``numeric.requantize`` (bit-exact)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from amaranth.hdl import unsigned
from amaranth.sim import Simulator

from squeezeforge.hw.requant import Requant
from squeezeforge.quant import numeric

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

ACC_MAX = 2 ** 31 - 1
ACC_MIN = -2 ** 31


def run_requant(dut: Requant, words):
    """words: list of (acc[lanes], mult[lanes], shift[lanes], relu, tag); one per cycle."""
    got, cycles = [], []
    n_cycles = len(words) + dut.latency + 1

    async def bench(ctx):
        p = dut.i_stream.payload
        for cycle in range(n_cycles):
            if ctx.get(dut.o_stream.valid):
                out = ctx.get(dut.o_stream.payload)
                got.append(([int(v) for v in out.data], int(out.tag)))
                cycles.append(cycle)
            if cycle < len(words):
                acc, mult, shift, relu, tag = words[cycle]
                ctx.set(dut.i_stream.valid, 1)
                ctx.set(p.acc, [int(v) for v in acc])
                ctx.set(p.mult, [int(v) for v in mult])
                ctx.set(p.shift, [int(v) for v in shift])
                ctx.set(p.relu, int(relu))
                ctx.set(p.tag, tag)
            else:
                ctx.set(dut.i_stream.valid, 0)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, cycles


def check(lanes, words):
    dut = Requant(lanes, tag_shape=unsigned(16))
    got, cycles = run_requant(dut, words)
    assert len(got) == len(words), f"expected {len(words)} outputs, got {len(got)}"
    for n, ((acc, mult, shift, relu, tag), (data, rtag)) in enumerate(zip(words, got)):
        exp = numeric.requantize(np.array(acc), np.array(mult), np.array(shift), relu)
        exp = [int(v) & 0xFF for v in exp]
        for o in range(lanes):
            assert data[o] == exp[o], (
                f"word {n} lane {o} (acc={acc[o]}, M={mult[o]}, shift={shift[o]}, relu={relu}): "
                f"expected {exp[o]:#04x}, got {data[o]:#04x}")
        assert rtag == tag, f"word {n}: tag expected {tag}, got {rtag}"
        assert cycles[n] == n + dut.latency, (
            f"word {n} came out {cycles[n] - n} cycles after it went in, latency says "
            f"{dut.latency}")


def test_extremes():
    """Every combination of extreme acc, M and shift, with and without ReLU."""
    accs = [ACC_MAX, ACC_MIN, ACC_MIN + 1, 0, 1, -1, 2 ** 30, -2 ** 30, 127, -128, 255, 256]
    mults = [0, 1, 2 ** 15, 65535]
    shifts = [1, 2, 8, 15, 16, 17, 31, 32, 46, numeric.MAX_SHIFT]
    lanes = 4
    words = []
    for relu in (True, False):
        combos = list(itertools.product(accs, mults, shifts))
        combos += [combos[-1]] * (-len(combos) % lanes)
        for n in range(0, len(combos), lanes):
            chunk = combos[n:n + lanes]
            words.append(([c[0] for c in chunk], [c[1] for c in chunk], [c[2] for c in chunk],
                          relu, len(words)))
    check(lanes, words)


def test_rounding_boundaries():
    """Accumulators at exact half-LSB ties and one either side, for several shifts."""
    words = []
    rng = np.random.default_rng(3)
    for shift in (1, 3, 7, 12, 20, numeric.MAX_SHIFT):
        for relu in (True, False):
            m = int(rng.integers(2 ** 15, 2 ** 16))
            accs = []
            for y in (-129, -128, -1, 0, 1, 127, 128, 254, 255, 256):
                # acc*m close to (y + 0.5) * 2**shift: a tie when it divides exactly
                target = (2 * y + 1) * 2 ** (shift - 1)
                a = target // m
                accs += [a - 1, a, a + 1]
            accs = [max(ACC_MIN, min(ACC_MAX, a)) for a in accs]
            accs += [accs[-1]] * (-len(accs) % 3)
            for n in range(0, len(accs), 3):
                words.append((accs[n:n + 3], [m] * 3, [shift] * 3, relu, len(words)))
    # exact ties with M = 1
    for shift in (1, 2, 5):
        for relu in (True, False):
            accs = [(2 * y + 1) * 2 ** (shift - 1) for y in (-3, -1, 0, 2)]
            for n in range(0, 4, 3):
                a = (accs[n:n + 3] + accs[-1:] * 3)[:3]
                words.append((a, [1] * 3, [shift] * 3, relu, len(words)))
    check(3, words)


def test_random_back_to_back():
    rng = np.random.default_rng(11)
    lanes = 8
    words = []
    for n in range(300):
        acc = rng.integers(ACC_MIN, ACC_MAX, lanes, endpoint=True)
        if n % 4 == 0:
            acc = rng.integers(-2 ** 20, 2 ** 20, lanes)
        mult = rng.integers(0, 2 ** 16, lanes)
        shift = rng.integers(1, numeric.MAX_SHIFT + 1, lanes)
        words.append((acc, mult, shift, bool(n % 3), n))
    check(lanes, words)


def test_bad_parameters():
    with pytest.raises(ValueError, match=r"^lanes must be a positive integer, not -1$"):
        Requant(-1)

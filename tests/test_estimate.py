"""hw.estimate: Yosys (yowasp) resource counts on small designs whose mapping is known, the
DSP-packing claim of the architecture, fits() and the cache."""
import os

import numpy as np
import pytest
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from squeezeforge.hw.config import DEVICES, ConfigError
from squeezeforge.hw.estimate import estimate, fits


class Mul8(wiring.Component):
    """int8 x int8, inputs and output registered."""
    a: In(signed(8))
    b: In(signed(8))
    p: Out(signed(16))

    def elaborate(self, platform):
        m = Module()
        ar, br = Signal(signed(8)), Signal(signed(8))
        m.d.sync += [ar.eq(self.a), br.eq(self.b), self.p.eq(ar * br)]
        return m


class Packed9x25(wiring.Component):
    """9-bit activation x 25-bit pre-packed weight (w_hi << 17) + w_lo, registered."""
    a: In(signed(9))
    w: In(signed(25))
    p: Out(signed(34))

    def elaborate(self, platform):
        m = Module()
        ar, wr = Signal(signed(9)), Signal(signed(25))
        m.d.sync += [ar.eq(self.a), wr.eq(self.w), self.p.eq(ar * wr)]
        return m


class PackedPair(wiring.Component):
    """The dsp_packing datapath: two int8 weights packed in fabric, one multiply, unpacked:
    lo = sext(P[0:17]) = a*w_lo, hi = (P - lo) >> 17 = a*w_hi."""
    a: In(signed(9))
    w_hi: In(signed(8))
    w_lo: In(signed(8))
    hi: Out(signed(17))
    lo: Out(signed(17))

    def elaborate(self, platform):
        m = Module()
        ar, wr, p = Signal(signed(9)), Signal(signed(25)), Signal(signed(34))
        m.d.sync += [ar.eq(self.a), wr.eq((self.w_hi << 17) + self.w_lo), p.eq(ar * wr)]
        lo = Signal(signed(17))
        m.d.comb += lo.eq(p[:17])
        m.d.sync += [self.lo.eq(lo), self.hi.eq((p - lo) >> 17)]
        return m


class Mem4096x8(wiring.Component):
    waddr: In(12)
    wdata: In(8)
    we: In(1)
    raddr: In(12)
    rdata: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(8), depth=4096, init=[])
        w, r = mem.write_port(), mem.read_port()   # synchronous, non-transparent read
        m.d.comb += [w.addr.eq(self.waddr), w.data.eq(self.wdata), w.en.eq(self.we),
                     r.addr.eq(self.raddr), self.rdata.eq(r.data)]
        return m


def test_registered_mul8_is_one_dsp():
    r = estimate(Mul8(), "xc7z020", top="mul8")
    assert (r["dsp"], r["lut"], r["ramb18"], r["ramb36"]) == (1, 0, 0, 0)
    assert r["fits"] and r["over"] == {}


def test_packed_9x25_multiply_is_one_dsp():
    # the claim behind dsp_packing: a 9-bit x 25-bit signed product fits one DSP48E1 (25x18)
    r = estimate(Packed9x25(), top="packed9x25")
    assert (r["dsp"], r["lut"]) == (1, 0)


def test_packed_pair_datapath_is_one_dsp():
    # packing two int8 weights in fabric and unpacking costs carry-chain logic, not a DSP
    r = estimate(PackedPair(), top="packed_pair")
    print(f"\npacked pair: {r['dsp']} DSP48E1, {r['lut']} LUT, {r['carry4']} CARRY4, {r['ff']} FF")
    assert r["dsp"] == 1
    assert r["lut"] <= 40


def test_4096x8_memory_is_block_ram():
    r = estimate(Mem4096x8(), top="mem4096x8")
    assert r["ramb36"] + r["ramb18"] / 2 == 1    # 32 Kbit = one RAMB36
    assert r["lut_mem"] == 0


def test_packing_arithmetic_exact():
    """a*((w_hi << 17) + w_lo) unpacks exactly for every 9-bit activation (uint8 and int8)
    and every weight in [-127, 127], and the packed weight fits 25 signed bits."""
    w = np.arange(-127, 128, dtype=np.int64)
    w_hi, w_lo = np.meshgrid(w, w, indexing="ij")
    packed = (w_hi << 17) + w_lo
    assert packed.min() >= -2**24 and packed.max() < 2**24
    # -128 is excluded by the numeric spec for a reason: it overflows 25 bits
    assert (-128 << 17) + -128 < -2**24
    for a in range(-128, 256):
        p = a * packed
        lo = ((p & (2**17 - 1)) ^ 2**16) - 2**16          # sign-extend bits [0, 17)
        hi = (p - lo) >> 17
        assert np.array_equal(lo, a * w_lo) and np.array_equal(hi, a * w_hi), f"a={a}"


def test_packed_pair_hardware_matches():
    """The PackedPair datapath itself (Amaranth simulation) on random vectors."""
    dut = PackedPair()
    rng = np.random.default_rng(5)
    vecs = [(int(a), int(h), int(l)) for a, h, l in zip(
        rng.integers(-128, 256, 300), rng.integers(-127, 128, 300), rng.integers(-127, 128, 300))]

    async def bench(ctx):
        for a, h, l in vecs:
            ctx.set(dut.a, a)
            ctx.set(dut.w_hi, h)
            ctx.set(dut.w_lo, l)
            await ctx.tick().repeat(3)
            assert (ctx.get(dut.hi), ctx.get(dut.lo)) == (a * h, a * l), (a, h, l)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_fits_reports_what_does_not_fit():
    z = DEVICES["xc7z020"]
    r = {"lut": 1000, "ff": 2000, "dsp": 256, "ramb18": 10, "ramb36": 136}
    ok, over = fits(r, "xc7z020")
    assert not ok
    assert over == {"dsp": (256, z.dsp), "ramb36": (141.0, z.ramb36)}
    ok, over = fits({**r, "dsp": 128, "ramb36": 100}, z)
    assert ok and over == {}
    with pytest.raises(ConfigError, match="unknown device 'xc9'"):
        fits(r, "xc9")


def test_cache_hit():
    first = estimate(Mul8(), top="mul8")
    again = estimate(Mul8(), top="mul8")
    assert again["cached"] and again["dsp"] == first["dsp"]


@pytest.mark.slow
def test_infrastructure_estimates():
    """Register block and DMA pair: small next to the z7020 (figures printed for the report)."""
    from squeezeforge.hw.axi import AxiDma
    from squeezeforge.hw.regs import AxiLiteRegs
    for comp, top in ((AxiLiteRegs(), "sqzf_regs"), (AxiDma(), "sqzf_dma")):
        r = estimate(comp, "xc7z020", top=top)
        print(f"\n{top}: {r['lut']} LUT ({r['lut_mem']} as RAM), {r['ff']} FF, {r['dsp']} DSP, "
              f"{r['ramb36']} RAMB36 + {r['ramb18']} RAMB18, longest path {r['path_cells']} cells "
              f"/ {r['lut_levels']} LUT levels")
        assert r["fits"]
        assert r["dsp"] == 0 and r["ramb36"] == 0 and r["ramb18"] == 0
        assert r["lut"] < 1000 and r["ff"] < 1000
        assert r["lut_levels"] <= 8


def test_longest_path_names_from_ltp_listing():
    """The named signals of ltp's path listing, in order, Yosys-internal ($) names dropped."""
    from squeezeforge.hw.estimate import _ltp_named_nodes, _parse_ltp
    text = ("Longest topological path in top (length=4):\n"
            "    0: \\seq_state [2]\n    1: $abc$123$n45\n    2: \\core_en\n"
            "    3: \\core_en\n    4: \\conv.mac.acc [5]\n")
    assert _parse_ltp(text) == [4]
    assert _ltp_named_nodes(text) == ["seq_state", "core_en", "conv.mac.acc"]


@pytest.mark.slow
def test_z7020_engine_fits_the_xc7z020():
    """The real z7020 engine (not a stub) through Yosys synth_xilinx fits the XC7Z020: the
    tightest preset (its DSP budget is nearly used). Several minutes; cached by content."""
    from squeezeforge.host.cli import main
    import json as _json
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["estimate", "--config", "z7020", "--json"]) == 0
    out = _json.loads(buf.getvalue())
    used, dev = out["used"], out["device"]
    print(f"\n[z7020 estimate] {used}, longest path: {out['longest_path_signals']}")
    assert out["fits"] is True and out["over"] == {}
    assert dev["part"] == "xc7z020clg400-1"
    assert 0 < used["dsp"] <= dev["dsp"] and 0 < used["lut"] <= dev["lut"]
    assert used["ramb36"] + used["ramb18"] / 2 <= dev["ramb36"]
    # the resource model (and so the board floor and check_fit) counts what Yosys counts
    from squeezeforge.hw.config import PRESETS
    assert used["dsp"] == PRESETS["z7020"].resources()["dsp"]
    # the packed 16x16 MAC array alone needs 128 DSP48E1 and the requantizers 32
    assert used["dsp"] >= 160


_SYNTH_ALL = os.environ.get("SQUEEZEFORGE_SYNTH_ALL") == "1"


@pytest.mark.slow
@pytest.mark.skipif(not _SYNTH_ALL, reason="Yosys on every preset takes 10 to 60 minutes each on "
                    "2 cores; set SQUEEZEFORGE_SYNTH_ALL=1, and SQUEEZEFORGE_YOSYS to a native "
                    "yosys for z7045 / zu9eg (z7020 is checked above)")
@pytest.mark.parametrize("name", ["zu3eg", "z7045", "zu9eg"])
def test_preset_engine_fits_its_device(name):
    """The real engine of every other preset through Yosys fits its device, and the resource
    model counts the DSPs Yosys counts (opt-in: hours in total)."""
    from squeezeforge.hw.config import PRESETS
    from squeezeforge.hw.estimate import estimate
    from squeezeforge.hw.engine import Engine
    from squeezeforge.hw.verilog import generate_verilog
    cfg = PRESETS[name]
    r = estimate(generate_verilog(Engine(cfg), "squeezeforge_engine"), cfg.dev)
    print(f"\n[{name} estimate] LUT {r['lut']} FF {r['ff']} DSP {r['dsp']} RAMB36 {r['ramb36']} "
          f"RAMB18 {r['ramb18']} levels {r['lut_levels']} ({r['yosys_seconds']} s)")
    assert r["fits"] and r["over"] == {}
    assert r["dsp"] == cfg.resources()["dsp"]


def test_native_yosys_that_does_not_run_is_one_line(monkeypatch, tmp_path, capsys):
    """SQUEEZEFORGE_YOSYS naming a program that cannot run: estimate says so in one line and
    exits 2 (no traceback)."""
    from squeezeforge.host.cli import main
    monkeypatch.setenv("SQUEEZEFORGE_YOSYS", str(tmp_path / "no-such-yosys"))
    assert main(["estimate", "--config", "z7020"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SQUEEZEFORGE_YOSYS=" in err[0] and "does not run" in err[0]

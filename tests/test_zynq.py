"""PS integration (hw/zynq.py) and the build tree (host/build.py), without Vivado or a board.

* The register path: :class:`AxiToLite` in front of the real register block, driven as the
  PS's GP0 master drives it (AXI3, 12-bit IDs; AXI4, 16-bit IDs): IDs returned on B and R,
  single-beat reads and writes, W before AW, bursts beat by beat, SLVERR passed on.
* The HP path: WID follows the AW order on AXI3; W waits for its AW.
* Width checks: a 64-bit engine on a 32-bit HP0 cannot be built.
* For every board: ``write_tree`` with a stub engine writes a TCL that names the board's part
  and configures HP0 = 64 bits and the PL clock, Verilog that passes ``verilator --lint-only``,
  and an XDC whose ``create_clock`` period is the requested clock.
* The same tree with the real engine of each preset lints clean (z7020 and zu3eg by default,
  the 32x32 and 32x64 engines with ``SQUEEZEFORGE_SYNTH_ALL=1``).
* One fit report with a Yosys estimate (cached by hash).
"""
from __future__ import annotations

import json
import os
import re

import pytest
from amaranth import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out
from amaranth.sim import Simulator

from squeezeforge.hw.boards import BOARDS, board_preset, get_board
from squeezeforge.hw.regs import ID_VALUE, AxiLiteRegs, Reg
from squeezeforge.hw.verilog import lint
from squeezeforge.hw.zynq import (ENGINE_PORTS, AxiToLite, HpAdapter, PsConfig, StubEngine,
                                  ZynqError, ZynqTop, check_engine, lint_models)
from squeezeforge.host.build import write_tree

OKAY, SLVERR = 0, 2

# the parts the boards carry (vendor documentation), not read from the code under test
PARTS = {
    "pynq-z2": "xc7z020clg400-1", "zybo-z7-20": "xc7z020clg400-1",
    "arty-z7-20": "xc7z020clg400-1", "microzed-7020": "xc7z020clg400-1",
    "zedboard": "xc7z020clg484-1", "zc706": "xc7z045ffg900-2",
    "zcu102": "xczu9eg-ffvb1156-2-e", "ultra96-v2": "xczu3eg-sbva484-1-e",
}


# -- register path ----------------------------------------------------------------------------
class _GpBench(Elaboratable):
    def __init__(self, **kw):
        self.bridge = AxiToLite(**kw)
        self.regs = AxiLiteRegs()

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge, m.submodules.regs = self.bridge, self.regs
        for name, member in self.bridge.signature.members.items():
            if not name.startswith("m_"):
                continue
            ours, theirs = getattr(self.bridge, name), getattr(self.regs, "s_axi_" + name[2:])
            m.d.comb += (theirs.eq(ours) if member.flow == Out else ours.eq(theirs))
        return m


async def axi_write(ctx, b, addr, words, axid, *, burst=1, w_first=0):
    if w_first:                      # data offered before the address: must wait
        ctx.set(b.s_wdata, words[0])
        ctx.set(b.s_wstrb, 0xF)
        ctx.set(b.s_wlast, len(words) == 1)
        ctx.set(b.s_wvalid, 1)
        for _ in range(w_first):
            *_, ready = await ctx.tick().sample(b.s_wready)   # (clk, rst, value)
            assert not ready, "W taken before its AW"
    ctx.set(b.s_awid, axid)
    ctx.set(b.s_awaddr, addr)
    ctx.set(b.s_awlen, len(words) - 1)
    ctx.set(b.s_awsize, 2)
    ctx.set(b.s_awburst, burst)
    ctx.set(b.s_awvalid, 1)
    await ctx.tick().until(b.s_awready)
    ctx.set(b.s_awvalid, 0)
    for i, w in enumerate(words):
        ctx.set(b.s_wdata, w)
        ctx.set(b.s_wstrb, 0xF)
        ctx.set(b.s_wlast, i == len(words) - 1)
        ctx.set(b.s_wvalid, 1)
        await ctx.tick().until(b.s_wready)
    ctx.set(b.s_wvalid, 0)
    ctx.set(b.s_bready, 1)
    bid, bresp = await ctx.tick().sample(b.s_bid, b.s_bresp).until(b.s_bvalid)
    ctx.set(b.s_bready, 0)
    return bid, bresp


async def axi_read(ctx, b, addr, n, axid, *, burst=1):
    ctx.set(b.s_arid, axid)
    ctx.set(b.s_araddr, addr)
    ctx.set(b.s_arlen, n - 1)
    ctx.set(b.s_arsize, 2)
    ctx.set(b.s_arburst, burst)
    ctx.set(b.s_arvalid, 1)
    await ctx.tick().until(b.s_arready)
    ctx.set(b.s_arvalid, 0)
    ctx.set(b.s_rready, 1)
    beats = []
    for _ in range(n):
        beats.append(await ctx.tick().sample(b.s_rid, b.s_rdata, b.s_rresp, b.s_rlast)
                     .until(b.s_rvalid))
    ctx.set(b.s_rready, 0)
    return beats


def _run(bench, tb, cycles=5000):
    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run_until(cycles * 1e-8)


@pytest.mark.parametrize("axi", ["axi3", "axi4"])
def test_gp_bridge_ids_and_single_beats(axi):
    kw = dict(addr_width=32, id_width=12, len_width=4) if axi == "axi3" else \
        dict(addr_width=40, id_width=16, len_width=8)
    bench = _GpBench(**kw)
    b = bench.bridge
    base = 0x4000_0000 if axi == "axi3" else 0x80_0000_0000 >> 8   # upper bits are ignored
    done = []

    async def tb(ctx):
        assert await axi_write(ctx, b, base + Reg.CMD_BASE, [0x1234_5678], 0x5A3) == (0x5A3, OKAY)
        assert await axi_write(ctx, b, base + Reg.CMD_COUNT, [31], 0x001, w_first=3) == (1, OKAY)
        # unmapped address: the register block's SLVERR comes back with the ID
        assert await axi_write(ctx, b, base + 0x0FC, [1], 0x7FF) == (0x7FF, SLVERR)
        assert await axi_read(ctx, b, base + Reg.ID, 1, 0x123) == [(0x123, ID_VALUE, OKAY, 1)]
        assert await axi_read(ctx, b, base + Reg.CMD_BASE, 1, 0x0F0) == \
            [(0x0F0, 0x1234_5678, OKAY, 1)]
        assert await axi_read(ctx, b, base + 0x0FC, 1, 0x0AA) == [(0x0AA, 0, SLVERR, 1)]
        # 2-beat INCR burst: CMD_BASE, CMD_COUNT; RLAST only on the second beat
        assert await axi_write(ctx, b, base + Reg.CMD_BASE, [0xCAFE_0000, 77], 0x3C) == (0x3C, OKAY)
        assert await axi_read(ctx, b, base + Reg.CMD_BASE, 2, 0x3D) == \
            [(0x3D, 0xCAFE_0000, OKAY, 0), (0x3D, 77, OKAY, 1)]
        # FIXED burst: both beats read the same register
        assert await axi_read(ctx, b, base + Reg.CMD_COUNT, 2, 0x3E, burst=0) == \
            [(0x3E, 77, OKAY, 0), (0x3E, 77, OKAY, 1)]
        done.append(True)

    _run(bench, tb)
    assert done


def test_gp_bridge_burst_with_error_beat_reports_slverr():
    """B carries the first non-OKAY response of a burst's beats (AXI: one response per
    burst), whether the failing beat comes last or first."""
    bench = _GpBench()
    b = bench.bridge
    out = []

    async def tb(ctx):
        # 0x28 CONFIG (mapped, read-only: OKAY), then 0x2C (unmapped: SLVERR)
        out.append(await axi_write(ctx, b, Reg.CONFIG, [5, 6], 9))
        # 0xFC (unmapped: SLVERR), then 0x100 LAYER_CYCLES[0] (mapped: OKAY)
        out.append(await axi_write(ctx, b, 0x0FC, [5, 6], 10))
        out.append(await axi_write(ctx, b, Reg.CMD_BASE, [5, 6], 11))

    _run(bench, tb)
    assert out == [(9, SLVERR), (10, SLVERR), (11, OKAY)]


def test_gp_bridge_parameter_checks():
    with pytest.raises(ValueError, match="burst length width must be 4 \\(AXI3\\) or 8"):
        AxiToLite(len_width=6)
    with pytest.raises(ValueError, match="ID width must be an integer from 1 to 32, not 0"):
        AxiToLite(id_width=0)


# -- HP path ----------------------------------------------------------------------------------
def test_hp_adapter_wid_follows_aw_order():
    hp = HpAdapter(PsConfig("zynq7"))
    seen = []

    async def tb(ctx):
        ctx.set(hp.p_wready, 1)
        ctx.set(hp.p_awready, 1)
        # W offered first: held back until its AW has passed
        ctx.set(hp.e_wvalid, 1)
        ctx.set(hp.e_wdata, 0x1111)
        ctx.set(hp.e_wlast, 0)
        for _ in range(3):
            *_, pv, er = await ctx.tick().sample(hp.p_wvalid, hp.e_wready)
            assert (pv, er) == (0, 0)
        # two bursts: ID 1 (2 beats), then ID 0 (1 beat)
        for axid in (1, 0):
            ctx.set(hp.e_awid, axid)
            ctx.set(hp.e_awlen, 1 if axid else 0)
            ctx.set(hp.e_awvalid, 1)
            await ctx.tick().until(hp.e_awready)
        ctx.set(hp.e_awvalid, 0)
        for data, last in ((0x1111, 0), (0x2222, 1), (0x3333, 1)):
            ctx.set(hp.e_wdata, data)
            ctx.set(hp.e_wlast, last)
            seen.append(await ctx.tick().sample(hp.p_wid, hp.p_wdata, hp.p_awlen)
                        .until(hp.p_wvalid & hp.p_wready))
        ctx.set(hp.e_wvalid, 0)
        *_, pv = await ctx.tick().sample(hp.p_wvalid)
        assert pv == 0

    _run(hp, tb, 200)
    assert [(w, d) for w, d, _ in seen] == [(1, 0x1111), (1, 0x2222), (0, 0x3333)]


# -- width checks and the engine contract -----------------------------------------------------
def test_32bit_hp0_with_64bit_engine_is_refused():
    with pytest.raises(ZynqError, match=r"engine's AXI master is 64-bit \(m_axi_wdata\) but "
                                        r"S_AXI_HP0 is configured for 32 bits"):
        ZynqTop(StubEngine(), PsConfig("zynq7", 100, hp_data_width=32))
    with pytest.raises(ZynqError, match="configured for 32 bits"):
        HpAdapter(PsConfig("zynqmp", 100, hp_data_width=32))
    with pytest.raises(ZynqError, match=r"HP0 data width must be one of \(32, 64\) on zynq7, "
                                        r"not 128"):
        PsConfig("zynq7", 100, hp_data_width=128)
    with pytest.raises(ZynqError, match="at most 250 MHz on zynq7, not 300"):
        PsConfig("zynq7", 300)


class _NoIrq(wiring.Component):
    def __init__(self):
        super().__init__({n: (Out(w) if d == "out" else wiring.In(w))
                          for n, (d, w) in ENGINE_PORTS.items() if n != "irq"})

    def elaborate(self, platform):
        return Module()


def test_engine_contract_checked():
    with pytest.raises(ZynqError, match="missing irq"):
        check_engine(_NoIrq())
    ports = check_engine(StubEngine(), hp_data_width=64)
    assert ports["m_axi_wdata"] == ("out", 64) and ports["s_axi_araddr"] == ("in", 12)


# -- build trees for every board --------------------------------------------------------------
def _clock_period(xdc: str, pin: str) -> float:
    m = re.search(r"create_clock\s+-name\s+\S+\s+-period\s+([0-9.]+)\s+\[get_pins\s+(\S+)\]", xdc)
    assert m, "no create_clock in the XDC"
    assert m.group(2) == pin
    return float(m.group(1))


@pytest.mark.parametrize("name", list(PARTS))
def test_build_tree_for_board(name, tmp_path):
    board = get_board(name)
    clock = 125.0 if name != "ultra96-v2" else 150.0
    tree = write_tree(board, tmp_path, StubEngine(), board_preset(board), clock_mhz=clock,
                      synth=False, engine_kind="stub")
    tcl = (tmp_path / "squeezeforge.tcl").read_text()
    parts = re.findall(r"^create_project .* -part (\S+)$", tcl.replace("$part", PARTS[name]),
                       re.M)
    assert parts == [PARTS[name]]
    zynqmp = name in ("zcu102", "ultra96-v2")
    if zynqmp:
        assert "CONFIG.PSU__SAXIGP2__DATA_WIDTH {64}" in tcl
        assert f"CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {{{clock:g}}}" in tcl
        assert "zynq_ultra_ps_e" in tcl
    else:
        assert "CONFIG.PCW_S_AXI_HP0_DATA_WIDTH {64}" in tcl
        assert f"CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ {{{clock:g}}}" in tcl
        assert "CONFIG.PCW_FCLK_CLK0_BUF {FALSE}" in tcl          # our BUFG instead
        assert "processing_system7" in tcl
    for step in ("launch_runs synth_1", "launch_runs impl_1 -to_step write_bitstream",
                 "write_hw_platform"):
        assert step in tcl

    xdc = (tmp_path / "constraints" / "squeezeforge_top.xdc").read_text()
    period = _clock_period(xdc, "ps/pl_clk0" if zynqmp else "ps/FCLK_CLK0")
    assert period == pytest.approx(1000.0 / clock, abs=1e-3)
    leds = re.findall(r"PACKAGE_PIN (\S+) IOSTANDARD (\S+)\} \[get_ports \{led\[(\d)\]\}\]", xdc)
    expected_leds = {"pynq-z2": ["R14", "P14"], "zybo-z7-20": ["M14", "M15"],
                     "arty-z7-20": ["R14", "P14"], "zedboard": ["T22", "T21"],
                     "zc706": ["Y21", "W21"], "zcu102": ["AG14", "AF13"]}.get(name, [])
    assert [p for p, _, _ in leds] == expected_leds

    rtl = tmp_path / "rtl"
    top_v = (rtl / "squeezeforge_top.v").read_text()
    assert "squeezeforge_ps_wrapper ps (" in top_v and "squeezeforge_engine engine (" in top_v
    assert ("BUFG bufg (" in top_v) == (not zynqmp)
    lint(top_v + (rtl / "squeezeforge_engine.v").read_text() + lint_models(tree.top.ps),
         top="squeezeforge_top")
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["part"] == PARTS[name] and fit["clock_mhz"] == clock
    manifest = json.loads((tmp_path / "build.json").read_text())
    assert manifest["reg_base"] == (0x8000_0000 if zynqmp else 0x4000_0000)


_SYNTH_ALL = os.environ.get("SQUEEZEFORGE_SYNTH_ALL") == "1"
_LARGE = pytest.mark.skipif(not _SYNTH_ALL, reason="the 32x32 / 32x64 engines take 1-2 minutes "
                            "each to generate and lint; set SQUEEZEFORGE_SYNTH_ALL=1")


@pytest.mark.parametrize("name", ["pynq-z2", "ultra96-v2",
                                  pytest.param("zc706", marks=[pytest.mark.slow, _LARGE]),
                                  pytest.param("zcu102", marks=[pytest.mark.slow, _LARGE])])
def test_build_tree_with_the_real_engine_lints(name, tmp_path):
    """The tree ``build`` writes with the real engine of the board's preset (not the stub):
    top level and engine together pass ``verilator --lint-only -Wall``, with the engine's
    ports as the top level expects them; one board per preset."""
    from squeezeforge.host.build import make_engine
    board = get_board(name)
    cfg = board_preset(board)
    tree = write_tree(board, tmp_path, make_engine(cfg), cfg, synth=False)
    rtl = tmp_path / "rtl"
    top_v, eng_v = (rtl / "squeezeforge_top.v").read_text(), (rtl / "squeezeforge_engine.v").read_text()
    assert "squeezeforge_engine engine (" in top_v
    assert re.search(r"^module squeezeforge_engine\(", eng_v, re.M)
    assert lint(top_v + eng_v + lint_models(tree.top.ps), top="squeezeforge_top") == []
    assert json.loads((tmp_path / "build.json").read_text())["config"]["name"] == cfg.name


def test_lint_catches_a_broken_top(tmp_path):
    """The lint in the test above can fail: a top whose PS stand-in lacks a port is refused."""
    from squeezeforge.hw.verilog import LintError, generate_verilog
    ps = PsConfig("zynq7", 100)
    eng = StubEngine()
    top_v = generate_verilog(ZynqTop(eng, ps), "squeezeforge_top")
    models = lint_models(ps).replace("  input wire IRQ_F2P,\n", "")
    with pytest.raises(LintError):
        lint(top_v + generate_verilog(eng, "squeezeforge_engine") + models,
             top="squeezeforge_top")


def test_fit_report_with_yosys_estimate(tmp_path):
    board = get_board("pynq-z2")
    tree = write_tree(board, tmp_path, StubEngine(), board_preset(board), clock_mhz=100,
                      synth=True, engine_kind="stub")
    fit = json.loads((tmp_path / "fit.json").read_text())
    est = fit["estimate"]
    assert est["lut"] > 0 and est["ff"] > 0
    # the stub has no multipliers; the block RAMs it has are the register block's
    assert est["dsp"] == 0
    assert fit["available"] == dict(lut=53_200, ff=106_400, dsp=220, ramb36=140)   # XC7Z020
    assert fit["fits"] is True
    f = 100e6
    assert fit["fps"] == pytest.approx(f / fit["cycles"], rel=1e-3)
    assert fit["ddr"]["hp_port_gbs_per_direction"] == pytest.approx(0.8)     # 8 B x 100 MHz
    assert fit["ddr"]["board_ddr_peak_gbs"] == pytest.approx(2.1)            # 16 bit x 1050 MT/s
    rd, wr = fit["ddr"]["read_bytes"], fit["ddr"]["write_bytes"]
    assert fit["ddr"]["average_gbs"] == pytest.approx((rd + wr) * fit["fps"] / 1e9, abs=2e-3)
    text = (tmp_path / "fit.txt").read_text()
    assert "xc7z020clg400-1" in text and "frames/s" in text and "stub" in text
    assert tree.fit == fit

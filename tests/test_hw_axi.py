"""AXI infrastructure: register block and DMAs, simulated with cocotb (Verilator by default,
``SQUEEZEFORGE_SIM``) through squeezeforge.sim.rtl, plus constructor checks."""
import json
from pathlib import Path

import pytest

from squeezeforge.hw.axi import AxiDma, AxiReadDma, AxiWriteDma, split_bursts
from squeezeforge.hw.regs import VERSION, AxiLiteRegs, Reg, config_word
from squeezeforge.hw.verilog import generate_verilog
from squeezeforge.sim.rtl import run_cocotb

COCOTB_DIR = Path(__file__).parent / "cocotb"


def _report(result, label):
    print(f"\n[{label}] {result.simulator}: build {'%.1f s' % result.build_seconds if result.built else 'cached'}, "
          f"tests {result.test_seconds:.1f} s, {len(result.tests)} passed")


# ---------------------------------------------------------------- parameter checks
@pytest.mark.parametrize("kw, msg", [
    (dict(max_burst=12), "maximum burst length must be a power of two from 1 to 256 beats, not 12"),
    (dict(max_burst=512), "not 512"),
    (dict(outstanding=0), "outstanding transactions must be an integer from 1 to 64, not 0"),
    (dict(data_width=48), "AXI data width must be 32, 64, 128 or 256 bits, not 48"),
    (dict(addr_width=16), "AXI address width must be an integer from 32 to 64, not 16"),
])
@pytest.mark.parametrize("cls", [AxiReadDma, AxiWriteDma])
def test_dma_parameter_checks(cls, kw, msg):
    with pytest.raises(ValueError, match=msg):
        cls(**kw)


def test_regs_parameter_checks():
    with pytest.raises(ValueError, match="register address width must be an integer from 12 to 32, not 8"):
        AxiLiteRegs(addr_width=8)
    with pytest.raises(ValueError, match="layer cycle counters must number 1 to 64, not 65"):
        AxiLiteRegs(n_layer_cycles=65)


def test_register_map_constants():
    # the documented map (docs/architecture.md), spelled out independently
    assert [Reg.ID, Reg.VERSION, Reg.CTRL, Reg.STATUS, Reg.ERROR, Reg.CMD_BASE, Reg.CMD_COUNT,
            Reg.CYCLES_LO, Reg.CYCLES_HI, Reg.CUR_CMD, Reg.CONFIG] == list(range(0, 0x2C, 4))
    assert Reg.layer_cycles(63) == 0x1FC
    with pytest.raises(ValueError):
        Reg.layer_cycles(64)
    assert config_word(16, 16, "streamed", True) == 0x10 | 0x10 << 8 | 1 << 16 | 1 << 17
    assert config_word(32, 64, "resident") == 0x4020


def test_split_bursts_model():
    # 0xFC0: 8 beats to the 4 KB boundary, then 16, 16, and the 8-beat tail
    assert split_bursts(0xFC0, 48 * 8) == [(0xFC0, 8), (0x1000, 16), (0x1080, 16), (0x1100, 8)]
    assert split_bursts(0x1000, 0) == []


def test_dma_ports_use_xilinx_names():
    dma = AxiDma()
    for obj in (dma, dma.read_dma, dma.write_dma):
        obj._MustUse__silence = True    # only the signature is inspected
    ports = {name for name in dma.signature.members}
    for ch in ("araddr", "arlen", "arsize", "arburst", "arvalid", "arready", "rdata", "rlast",
               "rvalid", "rready", "awaddr", "awlen", "wdata", "wstrb", "wlast", "wvalid",
               "wready", "bresp", "bvalid", "bready", "arid", "rid", "awid", "bid"):
        assert f"m_axi_{ch}" in ports


# ---------------------------------------------------------------- cocotb
def test_regs_cocotb(tmp_path):
    v = generate_verilog(AxiLiteRegs(), "sqzf_regs")
    r = run_cocotb(v, "sqzf_regs", COCOTB_DIR / "cocotb_regs.py", tmp_path,
                   {"SQZF_VERSION": VERSION, "SQZF_N_LAYER": 64})
    _report(r, "regs")
    assert len(r.tests) == 8


def _run_dma(tmp_path, max_burst, outstanding, latency=20):
    top = f"sqzf_dma_b{max_burst}_o{outstanding}"
    v = generate_verilog(AxiDma(max_burst=max_burst, outstanding=outstanding), top)
    r = run_cocotb(v, top, COCOTB_DIR / "cocotb_dma.py", tmp_path,
                   {"SQZF_MAX_BURST": max_burst, "SQZF_OUTSTANDING": outstanding,
                    "SQZF_READ_LATENCY": latency})
    _report(r, top)
    m = r.metrics()
    print(json.dumps(m))
    return r, m


def test_dma_cocotb(tmp_path):
    r, m = _run_dma(tmp_path, 16, 4)
    assert len(r.tests) == 7
    # the engine needs close to one beat per cycle from DDR with 20-cycle latency
    assert m["read"]["beats_per_cycle_steady"] >= 0.95
    assert m["write"]["beats_per_cycle_steady"] >= 0.95


@pytest.mark.slow
def test_dma_cocotb_short_bursts(tmp_path):
    """Another build: 8-beat bursts, 2 outstanding (latency no longer hidden)."""
    r, m = _run_dma(tmp_path, 8, 2)
    assert len(r.tests) == 7
    assert m["read"]["beats_per_cycle_steady"] < 0.9

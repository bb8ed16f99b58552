"""cocotb tests of the integrated engine (hw.engine.Engine) on a Python AXI DDR model.

The pytest side (tests/test_hw_engine.py) compiles a program and leaves in the test directory
``ddr.bin`` (the DDR image from the base address) and ``run.json`` (addresses, sizes,
timeout). ``run_program`` loads the image, programs the registers through cocotbext-axi's
AxiLiteMaster, starts, waits for the interrupt and writes back ``ddr_out.bin`` and
``metrics.json`` (STATUS, ERROR, CYCLES, LAYER_CYCLES, simulation speed); the comparison with
the functional model and the golden model is done by pytest.

The error tests (enabled with SQZF_ERRORS=1) write their own command lists; the codes they
expect are the register contract of hw/engine.py written out here: ERROR = code | detail << 8
| command index << 16, code 1 bad opcode, 4 geometry (detail 1: input rows exceed the ring
buffer), 5 no END within CMD_COUNT.
"""
import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from squeezeforge.hw.commands import Op, encode
from squeezeforge.sim.ddr import DdrModel

CTRL, STATUS, ERROR, CMD_BASE, CMD_COUNT = 0x08, 0x0C, 0x10, 0x14, 0x18
CYC_LO, CYC_HI, CUR_CMD, CONFIG, LAYER = 0x1C, 0x20, 0x24, 0x28, 0x100
START, SOFT_RESET, IRQ_EN = 1, 2, 4
BUSY, DONE, ERR = 1, 2, 4


async def setup(dut, size, latency):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    ddr = DdrModel(dut, dut.clk, dut.rst, size=size, read_latency=latency)
    await ClockCycles(dut.clk, 5)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi"), dut.clk, dut.rst)
    return ddr, axil


async def rd(axil, addr):
    return int.from_bytes((await axil.read(addr, 4)).data, "little")


async def wr(axil, addr, value):
    await axil.write(addr, int(value).to_bytes(4, "little"))


async def run_and_wait(dut, axil, cmd_addr, cmd_count, timeout):
    await wr(axil, CMD_BASE, cmd_addr)
    await wr(axil, CMD_COUNT, cmd_count)
    t0 = time.perf_counter()
    await wr(axil, CTRL, START | IRQ_EN)
    if not dut.irq.value:
        res = await First(RisingEdge(dut.irq), ClockCycles(dut.clk, timeout))
        assert dut.irq.value, (f"no interrupt within {timeout} cycles (CUR_CMD = "
                               f"{await rd(axil, CUR_CMD)}, STATUS = {await rd(axil, STATUS):#x})")
        del res
    wall = time.perf_counter() - t0
    lo = await rd(axil, CYC_LO)
    hi = await rd(axil, CYC_HI)
    return wall, lo | hi << 32


@cocotb.test()
async def run_program(dut):
    here = Path(".")
    info = json.loads((here / "run.json").read_text())
    image = (here / "ddr.bin").read_bytes()
    size = info["ddr_model_size"]
    ddr, axil = await setup(dut, size, info["read_latency"])
    off = info["base"] % size
    ddr.mem[off:off + len(image)] = image
    wall, cycles = await run_and_wait(dut, axil, info["cmd_addr"], info["cmd_count"],
                                      info["timeout"])
    status = await rd(axil, STATUS)
    error = await rd(axil, ERROR)
    n = min(info["cmd_count"], 64)
    layer = [await rd(axil, LAYER + 4 * i) for i in range(n)]
    out = bytes(ddr.mem[off:off + info["ddr_size"]])
    (here / "ddr_out.bin").write_bytes(out)
    (here / "metrics.json").write_text(json.dumps(dict(
        status=status, error=error, cycles=cycles, layer_cycles=layer, wall_seconds=wall,
        cycles_per_second=cycles / max(wall, 1e-9), config=await rd(axil, CONFIG),
        read_bursts=ddr.read_if.bursts, read_beats=ddr.read_if.beats)))
    assert status & DONE, f"STATUS {status:#x}: DONE not set"
    assert not status & ERR, f"STATUS {status:#x}: error, ERROR = {error:#x}"
    assert not status & BUSY, f"STATUS {status:#x}: still busy after the interrupt"


ERRORS = os.environ.get("SQZF_ERRORS") == "1"


async def expect_error(dut, axil, ddr, records, count, want, what):
    base = 0x1000
    for i, rec in enumerate(records):
        ddr.mem[base + 64 * i:base + 64 * i + 64] = rec
    await run_and_wait(dut, axil, base, count, 5000)
    status = await rd(axil, STATUS)
    error = await rd(axil, ERROR)
    assert status & (DONE | ERR | BUSY) == DONE | ERR, f"{what}: STATUS {status:#x}"
    assert error == want, f"{what}: ERROR {error:#x}, expected {want:#x}"
    # soft reset clears the error and DONE; the engine runs again afterwards
    await wr(axil, CTRL, SOFT_RESET)
    await ClockCycles(dut.clk, 4)
    status = await rd(axil, STATUS)
    assert status & (DONE | ERR | BUSY) == 0, f"{what}: STATUS {status:#x} after soft reset"


@cocotb.test(skip=not ERRORS)
async def error_codes(dut):
    ddr, axil = await setup(dut, 1 << 16, 20)
    bad = bytearray(encode(op=Op.END))
    bad[0] |= 0b111                           # opcode 7 is not an Op
    await expect_error(dut, axil, ddr, [encode(op=Op.LOAD), bytes(bad)], 0, 1 | 1 << 16,
                       "bad opcode")
    ring_words = int(os.environ["SQZF_RING_WORDS"])
    # a max-pool whose 3 input rows of (ring_words // 2 + 1) words cannot all fit the ring
    w = ring_words // 2 + 1
    big = encode(op=Op.MAXPOOL, conv=dict(h=5, w=w, n_ic=1, k=3, stride=2, ho=2,
                                          wo=(w - 2) // 2 + 1),
                 in_addr=0x8000, in_pix=8, in_bytes=8, out_addr=0x9000, out_pix=8, out_bytes=8)
    await expect_error(dut, axil, ddr, [encode(op=Op.LOAD), encode(op=Op.LOAD), big], 0,
                       4 | 1 << 8 | 2 << 16, "ring overflow")
    await expect_error(dut, axil, ddr, [encode(op=Op.LOAD)] * 3 + [encode(op=Op.END)], 2,
                       5 | 2 << 16, "no END within CMD_COUNT")
    # and a clean run: LOAD, END
    for i, rec in enumerate([encode(op=Op.LOAD), encode(op=Op.END)]):
        ddr.mem[0x1000 + 64 * i:0x1000 + 64 * i + 64] = rec
    await run_and_wait(dut, axil, 0x1000, 2, 5000)
    assert await rd(axil, STATUS) & (DONE | ERR | BUSY) == DONE
    assert await rd(axil, ERROR) == 0

"""cocotb tests of hw.regs.AxiLiteRegs through cocotbext-axi's AxiLiteMaster.

Expected values come from the register map in docs/architecture.md (ID = 'SQZF', W1C done,
byte strobes, irq = done & irq_en, SLVERR for unmapped addresses), not from the RTL.
"""
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, ReadOnly
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

ID = 0x53515A46   # ASCII 'SQZF', written out independently of hw/regs.py
ID_ADDR, VERSION_ADDR, CTRL, STATUS, ERROR = 0x00, 0x04, 0x08, 0x0C, 0x10
CMD_BASE, CMD_COUNT, CYC_LO, CYC_HI, CUR_CMD, CONFIG = 0x14, 0x18, 0x1C, 0x20, 0x24, 0x28
LAYER = 0x100
N_LAYER = int(os.environ.get("SQZF_N_LAYER", "64"))


async def setup(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for name in ("busy", "done_set", "error", "error_code", "cur_cmd", "config",
                 "layer_cycles_we", "layer_cycles_index", "layer_cycles_data"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    return AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi"), dut.clk, dut.rst)


async def rd(axil, addr):
    resp = await axil.read(addr, 4)
    return int.from_bytes(resp.data, "little"), resp.resp


async def wr(axil, addr, value, nbytes=4):
    resp = await axil.write(addr, value.to_bytes(nbytes, "little"))
    return resp.resp


class PulseCounter:
    def __init__(self, clk, sig):
        self.count = 0
        cocotb.start_soon(self._run(clk, sig))

    async def _run(self, clk, sig):
        while True:
            await RisingEdge(clk)
            await ReadOnly()
            if sig.value:
                self.count += 1


@cocotb.test()
async def id_version_config(dut):
    axil = await setup(dut)
    dut.config.value = 0x0003_1010
    assert await rd(axil, ID_ADDR) == (ID, AxiResp.OKAY)
    assert await rd(axil, VERSION_ADDR) == (int(os.environ["SQZF_VERSION"]), AxiResp.OKAY)
    assert await rd(axil, CONFIG) == (0x0003_1010, AxiResp.OKAY)
    dut.error_code.value = 0xDEAD0007
    dut.cur_cmd.value = 17
    assert (await rd(axil, ERROR))[0] == 0xDEAD0007
    assert (await rd(axil, CUR_CMD))[0] == 17
    # read-only registers ignore writes but answer OKAY
    assert await wr(axil, ID_ADDR, 0x12345678) == AxiResp.OKAY
    assert (await rd(axil, ID_ADDR))[0] == ID


@cocotb.test()
async def start_pulse_and_ctrl(dut):
    axil = await setup(dut)
    starts = PulseCounter(dut.clk, dut.start)
    resets = PulseCounter(dut.clk, dut.soft_reset)
    assert await wr(axil, CTRL, 0b001) == AxiResp.OKAY
    await ClockCycles(dut.clk, 5)
    assert starts.count == 1, f"start asserted for {starts.count} cycles, expected a 1-cycle pulse"
    assert (await rd(axil, CTRL))[0] & 1 == 0, "START must read back as 0 (self-clearing)"
    await wr(axil, CTRL, 0b100)                     # irq enable only: no start
    await ClockCycles(dut.clk, 3)
    assert starts.count == 1
    assert (await rd(axil, CTRL))[0] == 0b100
    assert int(dut.irq_en.value) == 1
    # START in byte 0 but only byte 1 strobed: no effect
    await axil.write(CTRL + 1, b"\x01")
    await ClockCycles(dut.clk, 3)
    assert starts.count == 1
    await wr(axil, CTRL, 0b110)                     # soft reset, keep irq enable
    await ClockCycles(dut.clk, 3)
    assert resets.count == 1 and starts.count == 1


@cocotb.test()
async def done_sticky_w1c_and_irq(dut):
    axil = await setup(dut)
    await wr(axil, CTRL, 0b100)                     # irq enable
    assert (await rd(axil, STATUS))[0] & 0b10 == 0
    assert int(dut.irq.value) == 0
    await RisingEdge(dut.clk)
    dut.done_set.value = 1
    await RisingEdge(dut.clk)
    dut.done_set.value = 0
    await ClockCycles(dut.clk, 2)
    assert int(dut.irq.value) == 1
    for _ in range(2):                              # sticky: stays after reads
        assert (await rd(axil, STATUS))[0] & 0b10 == 0b10
    await wr(axil, STATUS, 0b101)                   # writing 0 to DONE keeps it
    assert (await rd(axil, STATUS))[0] & 0b10 == 0b10
    await wr(axil, CTRL, 0b000)                     # irq disabled: irq low, done kept
    await RisingEdge(dut.clk)
    assert int(dut.irq.value) == 0
    assert (await rd(axil, STATUS))[0] & 0b10 == 0b10
    await wr(axil, CTRL, 0b100)
    await RisingEdge(dut.clk)
    assert int(dut.irq.value) == 1
    await wr(axil, STATUS, 0b010)                   # W1C
    await RisingEdge(dut.clk)
    assert (await rd(axil, STATUS))[0] & 0b10 == 0
    assert int(dut.irq.value) == 0
    dut.busy.value = 1
    dut.error.value = 1
    await RisingEdge(dut.clk)
    assert (await rd(axil, STATUS))[0] == 0b101


@cocotb.test()
async def strobes(dut):
    axil = await setup(dut)
    await wr(axil, CMD_BASE, 0x11223344)
    assert (await rd(axil, CMD_BASE))[0] == 0x11223344
    await axil.write(CMD_BASE + 2, b"\xAA")
    assert (await rd(axil, CMD_BASE))[0] == 0x11AA3344
    await axil.write(CMD_BASE, b"\x55\x66")
    assert (await rd(axil, CMD_BASE))[0] == 0x11AA6655
    assert int(dut.cmd_base.value) == 0x11AA6655
    await wr(axil, CMD_COUNT, 26)
    assert int(dut.cmd_count.value) == 26
    await axil.write(CMD_COUNT + 3, b"\x80")
    assert (await rd(axil, CMD_COUNT))[0] == 0x8000001A


@cocotb.test()
async def unmapped_addresses(dut):
    axil = await setup(dut)
    for addr in (0x2C, 0x30, 0xFC, LAYER + 4 * N_LAYER, 0x400, 0xFFC):
        data, resp = await rd(axil, addr)
        assert (data, resp) == (0, AxiResp.SLVERR), f"read 0x{addr:03x}: {data:#x} {resp}"
        assert await wr(axil, addr, 0xFFFFFFFF) == AxiResp.SLVERR, f"write 0x{addr:03x}"
    assert await rd(axil, LAYER + 4 * (N_LAYER - 1)) == (0, AxiResp.OKAY)
    # unmapped writes changed nothing
    assert (await rd(axil, CMD_BASE))[0] == 0 and (await rd(axil, CTRL))[0] == 0


@cocotb.test()
async def layer_cycles(dut):
    axil = await setup(dut)
    rng = random.Random(3)
    values = {i: rng.getrandbits(32) for i in rng.sample(range(N_LAYER), 12)}
    for i, v in values.items():
        await RisingEdge(dut.clk)
        dut.layer_cycles_we.value = 1
        dut.layer_cycles_index.value = i
        dut.layer_cycles_data.value = v
    await RisingEdge(dut.clk)
    dut.layer_cycles_we.value = 0
    for i in range(N_LAYER):
        assert await rd(axil, LAYER + 4 * i) == (values.get(i, 0), AxiResp.OKAY), f"entry {i}"


@cocotb.test()
async def cycle_counter(dut):
    axil = await setup(dut)
    await wr(axil, CTRL, 1)
    await ClockCycles(dut.clk, 3)
    # busy for exactly 1000 rising edges
    await RisingEdge(dut.clk)
    dut.busy.value = 1
    await ClockCycles(dut.clk, 1000)
    dut.busy.value = 0
    await ClockCycles(dut.clk, 2)
    assert await rd(axil, CYC_LO) == (1000, AxiResp.OKAY)
    assert (await rd(axil, CYC_HI))[0] == 0
    assert int(dut.cycles.value) == 1000
    await wr(axil, CTRL, 1)                         # start clears the counter
    await ClockCycles(dut.clk, 2)
    assert (await rd(axil, CYC_LO))[0] == 0


@cocotb.test()
async def backpressure_random(dut):
    """Random gaps on AW, W (independent arrival), B and R; a model of the two RW registers."""
    axil = await setup(dut)
    rng = random.Random(int(os.environ.get("SQZF_SEED", "7")))

    def gen(p):
        while True:
            yield rng.random() < p

    axil.write_if.aw_channel.set_pause_generator(gen(0.5))
    axil.write_if.w_channel.set_pause_generator(gen(0.5))
    axil.write_if.b_channel.set_pause_generator(gen(0.6))
    axil.read_if.ar_channel.set_pause_generator(gen(0.3))
    axil.read_if.r_channel.set_pause_generator(gen(0.6))
    model = {CMD_BASE: 0, CMD_COUNT: 0}
    for _ in range(150):
        addr = rng.choice(list(model))
        if rng.random() < 0.5:
            off = rng.randrange(4)
            n = rng.randrange(1, 5 - off)
            data = bytes(rng.getrandbits(8) for _ in range(n))
            assert await axil.write(addr + off, data) is not None
            b = bytearray(model[addr].to_bytes(4, "little"))
            b[off:off + n] = data
            model[addr] = int.from_bytes(b, "little")
        else:
            assert await rd(axil, addr) == (model[addr], AxiResp.OKAY)
    # concurrent reads in flight at once
    tasks = [cocotb.start_soon(rd(axil, a)) for a in (CMD_BASE, CMD_COUNT, ID_ADDR) * 3]
    results = [await t for t in tasks]
    assert results == [(model[CMD_BASE], 0), (model[CMD_COUNT], 0), (ID, 0)] * 3

"""Tests for the RTL harness itself (sim/rtl.py), on a tiny counter. ``deliberately_fails``
runs only when SQZF_WANT_FAILURE=1: the harness test checks that its name and message come
back in the error."""
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles


async def start(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.en.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0


@cocotb.test()
async def counts_enabled_cycles(dut):
    await start(dut)
    dut.en.value = 1
    await ClockCycles(dut.clk, 37)
    dut.en.value = 0
    await ClockCycles(dut.clk, 3)
    assert int(dut.count.value) == 37
    with open("metrics.json", "w") as f:
        f.write('{"count": %d}' % int(dut.count.value))


@cocotb.test(skip=os.environ.get("SQZF_WANT_FAILURE") != "1")
async def deliberately_fails(dut):
    await start(dut)
    assert int(dut.count.value) == 1, "counter is 0 after reset, as it should be"

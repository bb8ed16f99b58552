"""The host runtime: one driver interface, the same host code for the simulator and a board.

A :class:`Driver` gives four primitives (32-bit register access on the engine's AXI4-Lite port,
byte access to the DDR buffer the engine masters, and waiting for ``done``). They are ``async``
so that the cocotb back end can await clock edges; a board back end simply has no awaits inside.
:func:`execute` is the whole host protocol: check the ID, write the program and the image into
DDR, set CMD_BASE / CMD_COUNT, start, wait for done (interrupt or polling with a timeout), read
status, counters and every layer's output tensor. A warm start (``warm=True``) writes only the
input and skips the program's setup commands (PARAMS, resident LOAD).

Back ends: ``sim/cocotb_driver.py`` (RTL simulation) and ``host/board.py`` (Linux on the Zynq's
ARM cores: ``/dev/mem`` or ``pynq``). :class:`RecordingDriver` wraps any driver and records
the register and memory transactions, so the two back ends can be proven to see the same
sequence.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from squeezeforge.hw.commands import COMMAND_BYTES
from squeezeforge.hw.regs import (CTRL_IRQ_EN, CTRL_SOFT_RESET, CTRL_START, ID_VALUE,
                                  MAX_LAYER_CYCLES, STATUS_DONE, STATUS_ERROR, Reg)

__all__ = ["Driver", "RecordingDriver", "EngineError", "RunResult", "execute"]


class EngineError(RuntimeError):
    """The engine reported an error, did not finish in time, or is not there (one line)."""


class Driver(abc.ABC):
    """What the host runtime needs from a back end."""

    @abc.abstractmethod
    async def write_reg(self, offset: int, value: int) -> None: ...

    @abc.abstractmethod
    async def read_reg(self, offset: int) -> int: ...

    @abc.abstractmethod
    async def write_mem(self, addr: int, data: bytes) -> None: ...

    @abc.abstractmethod
    async def read_mem(self, addr: int, length: int) -> bytes: ...

    @abc.abstractmethod
    async def wait_done(self, timeout_s: float) -> bool:
        """Wait for the engine's interrupt (or poll STATUS.DONE); False on timeout."""


class RecordingDriver(Driver):
    """Wraps a driver and records every transaction as a tuple, in order."""

    def __init__(self, inner: Driver):
        self.inner = inner
        self.log: list[tuple] = []

    async def write_reg(self, offset, value):
        self.log.append(("wr", offset, value))
        await self.inner.write_reg(offset, value)

    async def read_reg(self, offset):
        v = await self.inner.read_reg(offset)
        self.log.append(("rd", offset, v))
        return v

    async def write_mem(self, addr, data):
        self.log.append(("wmem", addr, len(data), _digest(data)))
        await self.inner.write_mem(addr, data)

    async def read_mem(self, addr, length):
        d = await self.inner.read_mem(addr, length)
        self.log.append(("rmem", addr, length, _digest(d)))
        return d

    async def wait_done(self, timeout_s):
        ok = await self.inner.wait_done(timeout_s)
        self.log.append(("wait", ok))
        return ok


def _digest(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(bytes(data)).hexdigest()[:16]


@dataclass
class RunResult:
    cycles: int
    command_cycles: list[int]
    status: int
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    first_command: int = 0           # program index of command_cycles[0] (warm starts)


async def execute(driver: Driver, program, x_int8: np.ndarray, *, timeout_s: float = 10.0,
                  read_tensors: bool = True, use_irq: bool = True,
                  warm: bool = False) -> RunResult:
    """Run ``program`` on the engine behind ``driver`` for one int8 input image.

    ``warm``: the engine already ran this program since it was configured (its parameters and
    resident weights are on chip, the command list and weights are in DDR): write only the
    input and start at ``program.warm_index``, skipping the setup commands.
    ``RunResult.command_cycles[i]`` belongs to ``program.commands[first_command + i]``.
    """
    ident = await driver.read_reg(Reg.ID)
    if ident != ID_VALUE:
        raise EngineError(f"no squeezeforge engine at the register port (ID reads {ident:#010x}, "
                          f"expected {ID_VALUE:#010x})")
    await driver.write_reg(Reg.CTRL, CTRL_SOFT_RESET)
    first = program.warm_index if warm else 0
    if warm:
        await driver.write_mem(program.region("input").addr, program.prepare_input(x_int8))
    else:
        await driver.write_mem(program.base_addr, program.ddr_image(x_int8))
    await driver.write_reg(Reg.CMD_BASE, program.cmd_addr + first * COMMAND_BYTES)
    await driver.write_reg(Reg.CMD_COUNT, len(program.commands) - first)
    await driver.write_reg(Reg.STATUS, STATUS_DONE)                 # W1C: clear a stale done
    await driver.write_reg(Reg.CTRL, (CTRL_IRQ_EN if use_irq else 0) | CTRL_START)
    finished = await driver.wait_done(timeout_s)
    status = await driver.read_reg(Reg.STATUS)
    lo = await driver.read_reg(Reg.CYCLES_LO)
    hi = await driver.read_reg(Reg.CYCLES_HI)
    cycles = hi << 32 | lo
    if not finished:
        cur = await driver.read_reg(Reg.CUR_CMD)
        raise EngineError(f"engine did not finish within {timeout_s:g} s (command {cur}, "
                          f"{cycles} cycles, status {status:#x})")
    if status & STATUS_ERROR:
        code = await driver.read_reg(Reg.ERROR)
        cur = await driver.read_reg(Reg.CUR_CMD)
        raise EngineError(f"engine error code {code:#x} at command {cur} after {cycles} cycles")
    n = min(len(program.commands) - first, MAX_LAYER_CYCLES)
    per_cmd = [await driver.read_reg(Reg.LAYER_CYCLES + 4 * i) for i in range(n)]
    await driver.write_reg(Reg.STATUS, STATUS_DONE)
    res = RunResult(cycles, per_cmd, status, first_command=first)
    if read_tensors:
        lo_addr = program.base_addr
        ddr = bytearray(program.ddr_size)
        for r in program.regions:
            ddr[r.addr - lo_addr:r.addr - lo_addr + r.size] = await driver.read_mem(r.addr, r.size)
        res.tensors = {name: program.read_tensor(ddr, name) for name in program.tensors}
    return res

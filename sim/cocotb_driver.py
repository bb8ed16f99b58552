"""A :class:`squeezeforge.host.runtime.Driver` for the cocotb system testbench (``sim/tb.py``).

* Registers: cocotbext-axi's ``AxiLiteMaster`` on the testbench's ``s_axi_*`` ports.
* ``write_mem``: the bytes become a ``$readmemh`` file (``@word`` directive, then one 64-bit
  little-endian word per line) and one ``ddr_load`` pulse loads it into the Verilog DDR model:
  no per-word traffic between Python and the simulator. Partial words at either end are
  merged with the memory's current contents (read through a dump).
* ``read_mem``: one ``ddr_dump`` pulse writes a word range with ``$writememh``; the driver
  parses the file. The dump is cached until the next register write, memory write or wait,
  and covers at least ``dump_hint`` (e.g. the program's whole DDR plan), so reading every
  tensor of a run costs one dump.
* ``trace_window=(first, last)``: ``trace_on`` rises ``first`` cycles after START (taken as
  the cycle before the START write's response: within about two cycles of the true one); at ``last`` the driver lowers it and ``wait_done`` raises
  :class:`TraceWindowEnd` if the engine is still running, so that the run (and the FST of a
  testbench built with tracing) ends there.
* ``wait_done``: waits for a rising ``irq`` (or for ``irq`` already high) with a timeout in
  clock cycles, as a single timer in the simulator: Python runs nothing per clock while the
  engine works. With ``poll_cycles`` set, it wakes every ``poll_cycles`` cycles, reads CUR_CMD
  and calls ``on_poll(cycle, cur_cmd)`` (a progress bar); that costs one register read.

The testbench must be running its clock (internal clock, or a cocotb ``Clock`` on ``clk``) and
be out of reset (:func:`start_tb`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from squeezeforge.host.runtime import Driver
from squeezeforge.hw.regs import CTRL_START, Reg

__all__ = ["CocotbDriver", "TraceWindowEnd", "start_tb", "hex_words", "parse_hex_words",
           "DEFAULT_CLOCK_HZ"]

DEFAULT_CLOCK_HZ = 100e6
BEAT = 8


class TraceWindowEnd(Exception):
    """Raised by ``wait_done`` when the trace window ended before the engine finished: the run
    stops there so that the waveform holds only the window (``cycle``: cycles since START)."""

    def __init__(self, cycle: int):
        self.cycle = cycle
        super().__init__(f"trace window ended at cycle {cycle} after START")


def hex_words(data: bytes) -> str:
    """Bytes (a multiple of 8) as ``$readmemh`` lines: one little-endian 64-bit word each."""
    a = np.frombuffer(bytes(data), dtype=np.uint8).reshape(-1, BEAT)[:, ::-1]
    h = a.tobytes().hex()
    return "\n".join(h[i:i + 16] for i in range(0, len(h), 16))


def parse_hex_words(text: str, n_words: int) -> bytes:
    """The bytes of a ``$writememh`` file of 64-bit words (``@`` lines and comments skipped;
    X/Z digits read as 0)."""
    words = []
    for line in text.split("\n"):
        line = line.split("//", 1)[0].strip()
        if not line or line[0] == "@":
            continue
        words.extend(line.split())
    if len(words) < n_words:
        raise RuntimeError(f"DDR dump holds {len(words)} words, expected {n_words}")
    joined = "".join(w.rjust(16, "0")[-16:] for w in words[:n_words])
    joined = joined.translate(str.maketrans("xXzZ", "0000"))
    a = np.frombuffer(bytes.fromhex(joined), dtype=np.uint8).reshape(-1, BEAT)[:, ::-1]
    return a.tobytes()


async def start_tb(dut, *, reset_cycles: int = 5, period_ns: int | None = None):
    """Reset the testbench; start a cocotb clock when ``clk`` is an input (external clock)."""
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles
    if os.environ.get("SQZF_CLOCK", "internal") == "external":
        period = period_ns or int(os.environ.get("SQZF_PERIOD_NS", "10"))
        cocotb.start_soon(Clock(dut.clk, period, unit="ns").start())
    for name in ("ddr_load", "ddr_dump", "ddr_dump_first", "ddr_dump_last", "trace_on"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, reset_cycles)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)


class CocotbDriver(Driver):
    """Driver over the ``sf_tb`` testbench (see the module doc).

    ``base_addr``/``mem_bytes``: the DDR model's window (default from the testbench's
    environment, ``SQZF_DDR_BASE``/``SQZF_DDR_BYTES``). ``workdir``: where the load and dump
    files are (the simulator's working directory: the DDR model opens them by relative name).
    ``timeout_cycles``: overrides ``wait_done``'s ``timeout_s`` (converted at ``clock_hz``).
    """

    def __init__(self, dut, *, base_addr: int | None = None, mem_bytes: int | None = None,
                 workdir=".", period_ns: int | None = None, clock_hz: float = DEFAULT_CLOCK_HZ,
                 timeout_cycles: int | None = None, poll_cycles: int | None = None,
                 on_poll=None, dump_hint: tuple[int, int] | None = None,
                 trace_window: tuple[int, int] | None = None):
        from cocotbext.axi import AxiLiteBus, AxiLiteMaster
        self.dut = dut
        self.base = int(os.environ.get("SQZF_DDR_BASE", 0x1000_0000)) if base_addr is None \
            else base_addr
        self.size = int(os.environ.get("SQZF_DDR_BYTES", 16 << 20)) if mem_bytes is None \
            else mem_bytes
        self.period_ns = period_ns or int(os.environ.get("SQZF_PERIOD_NS", "10"))
        self.clock_hz = clock_hz
        self.timeout_cycles = timeout_cycles
        self.poll_cycles = poll_cycles
        self.on_poll = on_poll
        self.dump_hint = dump_hint
        self.workdir = Path(workdir)
        self.load_file = self.workdir / "ddr_load.hex"
        self.dump_file = self.workdir / "ddr_dump.hex"
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi"), dut.clk, dut.rst)
        self.trace_window = trace_window
        self.start_cycle: int | None = None
        self.trace_ended: int | None = None
        self._cache: tuple[int, bytes] | None = None     # (address, bytes) of the last dump
        self.stats = dict(loads=0, load_bytes=0, dumps=0, dump_bytes=0, reg_reads=0,
                          reg_writes=0)

    # -- registers -----------------------------------------------------------------------
    async def write_reg(self, offset, value):
        self._cache = None
        self.stats["reg_writes"] += 1
        await self.axil.write(int(offset), int(value).to_bytes(4, "little"))
        if offset == Reg.CTRL and value & CTRL_START:
            # the write took effect one cycle before its response: the engine's START
            self.start_cycle = int(self.dut.cycles.value) - 1
            if self.trace_window is not None:
                import cocotb
                from cocotb.triggers import Event
                self._trace_event = Event()
                cocotb.start_soon(self._trace(*self.trace_window))

    async def _trace(self, first, last):
        """trace_on high for cycles [first, last) counted from START (testbench built with
        tracing; otherwise the signal is unused)."""
        from cocotb.triggers import Timer
        now = int(self.dut.cycles.value) - self.start_cycle
        if first > now:
            await Timer((first - now) * self.period_ns, unit="ns")
        self.dut.trace_on.value = 1
        now = int(self.dut.cycles.value) - self.start_cycle
        await Timer(max(1, last - now) * self.period_ns, unit="ns")
        self.dut.trace_on.value = 0
        self.trace_ended = int(self.dut.cycles.value) - self.start_cycle
        self._trace_event.set()

    async def read_reg(self, offset):
        self.stats["reg_reads"] += 1
        resp = await self.axil.read(int(offset), 4)
        return int.from_bytes(resp.data, "little")

    # -- memory --------------------------------------------------------------------------
    def _check(self, addr, length):
        if addr < self.base or addr + length > self.base + self.size:
            raise ValueError(f"DDR access {addr:#x}+{length} lies outside the model's "
                             f"{self.base:#x}..{self.base + self.size:#x}")

    async def _pulse(self, sig):
        from cocotb.triggers import FallingEdge, RisingEdge
        await FallingEdge(self.dut.clk)
        sig.value = 1
        await RisingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)
        sig.value = 0

    async def write_mem(self, addr, data):
        data = bytes(data)
        self._check(addr, len(data))
        if not data:
            return
        lo = addr - (addr - self.base) % BEAT
        hi = addr + len(data)
        hi += (-(hi - self.base)) % BEAT
        if lo != addr or hi != addr + len(data):       # merge partial words
            old = bytearray(await self.read_mem(lo, hi - lo))
            old[addr - lo:addr - lo + len(data)] = data
            data = bytes(old)
        self._cache = None
        first = (lo - self.base) // BEAT
        self.load_file.write_text(f"@{first:x}\n{hex_words(data)}\n")
        await self._pulse(self.dut.ddr_load)
        self.stats["loads"] += 1
        self.stats["load_bytes"] += len(data)

    async def read_mem(self, addr, length):
        self._check(addr, length)
        if length == 0:
            return b""
        if self._cache is not None:
            c0, cdata = self._cache
            if c0 <= addr and addr + length <= c0 + len(cdata):
                return cdata[addr - c0:addr - c0 + length]
        lo, hi = addr, addr + length
        if self.dump_hint is not None:
            h0, hn = self.dump_hint
            if h0 <= addr and addr + length <= h0 + hn:
                lo, hi = h0, h0 + hn
        lo -= (lo - self.base) % BEAT
        hi += (-(hi - self.base)) % BEAT
        first, last = (lo - self.base) // BEAT, (hi - self.base) // BEAT - 1
        self.dut.ddr_dump_first.value = first
        self.dut.ddr_dump_last.value = last
        if self.dump_file.exists():
            self.dump_file.unlink()
        await self._pulse(self.dut.ddr_dump)
        cdata = parse_hex_words(self.dump_file.read_text(), last - first + 1)
        self._cache = (lo, cdata)
        self.stats["dumps"] += 1
        self.stats["dump_bytes"] += len(cdata)
        return cdata[addr - lo:addr - lo + length]

    # -- completion ----------------------------------------------------------------------
    async def wait_done(self, timeout_s):
        from cocotb.triggers import First, RisingEdge, Timer
        self._cache = None
        limit = self.timeout_cycles if self.timeout_cycles is not None \
            else int(timeout_s * self.clock_hz)
        start = int(self.dut.cycles.value)
        while True:
            if int(self.dut.irq.value):
                return True
            left = limit - (int(self.dut.cycles.value) - start)
            if left <= 0:
                return False
            if self.trace_ended is not None:
                raise TraceWindowEnd(self.trace_ended)
            step = min(left, self.poll_cycles) if self.poll_cycles else left
            triggers = [RisingEdge(self.dut.irq), Timer(step * self.period_ns, unit="ns")]
            if self.trace_window is not None and self.start_cycle is not None:
                triggers.append(self._trace_event.wait())
            await First(*triggers)
            if self.on_poll is not None and not int(self.dut.irq.value):
                cur = await self.read_reg(Reg.CUR_CMD)
                self.on_poll(int(self.dut.cycles.value), cur)

"""A DDR model for cocotb: an AXI4 slave memory with a realistic read latency.

Built on cocotbext-axi. Its ``AxiRam`` answers a read burst as soon as it sees the AR beat
and serves one burst at a time, and it has no latency option (its ``pause`` generators only
insert backpressure gaps, which throttle every beat rather than delay the first one). So the
read side here is our own small slave, :class:`LatencyAxiRamRead`, built from cocotbext-axi's
AR sink and R source:

* an *acceptor* task takes AR beats (ARREADY is held by the AR sink's small queue plus a
  pending queue of ``max_outstanding`` bursts), stamping each with its acceptance time;
* a *responder* task serves the bursts in order; it starts the first beat of a burst no
  sooner than ``read_latency`` clock cycles after that burst's AR handshake, then sends one
  beat per cycle (subject to RREADY and to an optional R pause generator).

So latency is per burst and overlaps across outstanding bursts, as in a real memory
controller: a master with N bursts of L beats in flight sees ~min(1, N*L / (latency + L))
beats per cycle. The write side is cocotbext-axi's ``AxiRamWrite`` unchanged.

The memory is a host-visible ``bytearray`` (``ddr.mem``): ``ddr.write(addr, bytes)`` and
``ddr.read(addr, n)`` read and write it by byte address at any time.
"""
from __future__ import annotations

import cocotb
from cocotb.queue import Queue
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus
from cocotbext.axi.axi_ram import AxiRamRead, AxiRamWrite
from cocotbext.axi.constants import AxiBurstType, AxiResp
from cocotbext.axi.memory import Memory

__all__ = ["DdrModel", "LatencyAxiRamRead", "DEFAULT_READ_LATENCY"]

#: cycles from an AR handshake to the first beat of its burst (a Zynq-7000 HP port read of
#: PS DDR is ~20-30 PL cycles at 100-150 MHz)
DEFAULT_READ_LATENCY = 20


class LatencyAxiRamRead(AxiRamRead):
    """AXI4 read slave over a memory with a fixed per-burst read latency (see module doc).

    Statistics: ``bursts``, ``beats``, ``latencies`` (cycles from AR handshake to the first
    beat being offered, per burst), ``max_pending`` (most bursts accepted and not finished).
    Protocol errors (a burst crossing 4 KB, a size above the bus width) raise AssertionError.
    """

    def __init__(self, bus, clock, reset=None, reset_active_level=True, *, mem,
                 read_latency=DEFAULT_READ_LATENCY, max_outstanding=8):
        if not isinstance(read_latency, int) or read_latency < 1:
            raise ValueError(f"read latency must be a positive number of cycles, "
                             f"not {read_latency!r}")
        if not isinstance(max_outstanding, int) or max_outstanding < 1:
            raise ValueError(f"outstanding reads must be a positive integer, "
                             f"not {max_outstanding!r}")
        self.read_latency = read_latency
        self.max_outstanding = max_outstanding
        self.bursts = 0
        self.beats = 0
        self.latencies = []
        self.max_pending = 0
        self._pending_count = 0
        self._responder = None
        self._period = None
        super().__init__(bus, clock, reset, reset_active_level, mem=mem)

    def _handle_reset(self, state):
        if state and self._responder is not None:
            self._responder.cancel()
            self._responder = None
        super()._handle_reset(state)

    async def _process_read(self):
        """Acceptor: replaces cocotbext-axi's serial read process."""
        pending = Queue(maxsize=self.max_outstanding)
        self._pending_count = 0
        self._responder = cocotb.start_soon(self._respond(pending))
        while True:
            ar = await self.ar_channel.recv()
            stamp = get_sim_time("step")
            await pending.put((ar, stamp))
            self._pending_count += 1
            self.max_pending = max(self.max_pending, self._pending_count)

    async def _clock_period(self):
        if self._period is None:
            edge = RisingEdge(self.clock)
            await edge
            t0 = get_sim_time("step")
            await edge
            self._period = get_sim_time("step") - t0
        return self._period

    async def _respond(self, pending):
        period = await self._clock_period()
        while True:
            ar, stamp = await pending.get()
            arid = int(getattr(ar, "arid", 0))
            addr = int(ar.araddr)
            length = int(getattr(ar, "arlen", 0)) + 1
            size = int(getattr(ar, "arsize", self.max_burst_size))
            burst = AxiBurstType(int(getattr(ar, "arburst", AxiBurstType.INCR)))
            num_bytes = 2 ** size
            assert 0 < num_bytes <= self.byte_lanes, f"ARSIZE {size} exceeds the bus width"
            aligned = addr - addr % num_bytes
            if burst == AxiBurstType.INCR:
                assert (aligned % 4096) + num_bytes * length <= 4096, \
                    f"read burst at 0x{addr:08x} of {length} beats crosses a 4 KB boundary"
            elif burst != AxiBurstType.FIXED:
                raise AssertionError(f"read burst type {burst.name} not supported by the model")

            elapsed = (get_sim_time("step") - stamp) // period
            wait = self.read_latency - 1 - elapsed   # the R source drives on the next edge
            if wait > 0:
                await ClockCycles(self.clock, wait)
            self.latencies.append((get_sim_time("step") - stamp) // period + 1)

            cur = aligned
            for n in range(length):
                word = cur - cur % self.byte_lanes
                r = self.r_channel._transaction_obj()
                r.rid = arid
                r.rlast = n == length - 1
                r.rresp = AxiResp.OKAY
                r.rdata = int.from_bytes(self.read(word % self.size, self.byte_lanes), "little")
                await self.r_channel.send(r)
                if burst == AxiBurstType.INCR:
                    cur += num_bytes
            self.bursts += 1
            self.beats += length
            self._pending_count -= 1


class DdrModel(Memory):
    """AXI4 DDR model with host-visible bytes, on the ``<prefix>_*`` ports of ``dut``.

    ``size`` bytes of memory (addresses wrap modulo ``size``), ``read_latency`` cycles from
    each AR handshake to the first beat of its burst, up to ``max_outstanding`` read bursts
    accepted ahead. ``read_if``/``write_if`` expose the cocotbext-axi channel objects:
    ``ddr.read_if.r_channel.set_pause_generator(...)`` adds R gaps,
    ``ddr.write_if.w_channel.set_pause_generator(...)`` W backpressure, and so on.
    """

    def __init__(self, dut, clock, reset=None, *, prefix="m_axi", size=1 << 20,
                 read_latency=DEFAULT_READ_LATENCY, max_outstanding=8, reset_active_level=True):
        super().__init__(size=size, mem=bytearray(size))
        bus = AxiBus.from_prefix(dut, prefix)
        self.write_if = AxiRamWrite(bus.write, clock, reset, reset_active_level, mem=self.mem)
        self.read_if = LatencyAxiRamRead(bus.read, clock, reset, reset_active_level,
                                         mem=self.mem, read_latency=read_latency,
                                         max_outstanding=max_outstanding)

    def load(self, addr: int, data) -> None:
        """Copy bytes (or a NumPy array's bytes) into memory at ``addr``."""
        self.write(addr, bytes(memoryview(data).cast("B")))

    def dump(self, addr: int, length: int) -> bytes:
        return bytes(self.read(addr, length))

"""A stand-in for the engine with the engine's ports: a DMA copy machine under register control.

It exists to test the system simulation flow (testbench, Verilog DDR model, cocotb driver, host
protocol) without the real engine, and to measure simulation speed on a design of adjustable
size. Same ports as ``hw/engine.py``'s ``Engine``: ``clk``, ``rst``, the AXI4 master
``m_axi_*`` (:class:`squeezeforge.hw.axi.AxiDma`), the AXI4-Lite slave ``s_axi_*``
(:class:`squeezeforge.hw.regs.AxiLiteRegs`, same register map) and ``irq``.

Program: CMD_COUNT commands of 16 bytes from CMD_BASE, each two little-endian 64-bit words

* word 0: ``src`` (bits 0-31), ``dst`` (bits 32-63)
* word 1: ``length`` in bytes, a multiple of 8 (bits 0-31), ``delay`` in cycles (bits 32-63)

A command copies ``length`` bytes from ``src`` to ``dst`` through the read and write DMAs (the
write is complete, all B responses in, before the next command), then idles ``delay`` cycles
(a stand-in for compute). LAYER_CYCLES[i] gets command i's cycles from its fetch to its end,
CUR_CMD the index of the command running, STATUS.BUSY is high from START to the end, DONE is
set at the end (with IRQ_EN, ``irq`` rises). A DMA error response sets STATUS.ERROR with
ERROR = 1 (read) or 2 (write) and ends the program after that command's copy (CUR_CMD stays
at its index).

``macs``: that many 8x8-bit multiply-accumulators (int32) run every busy cycle on a 32-bit LFSR,
so the model's evaluation cost per cycle can be made close to a real MAC array's; their XOR is
readable in the ERROR register while no error is flagged (keeps them from being optimised away).

:class:`CopyProgram` is the host side: it has what :func:`squeezeforge.host.runtime.execute`
uses of a :class:`squeezeforge.host.schedule.Program`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from squeezeforge.hw.axi import AxiDma
from squeezeforge.hw.regs import MAX_LAYER_CYCLES, AxiLiteRegs

__all__ = ["CopyEngine", "CopyProgram", "COPY_COMMAND_BYTES"]

COPY_COMMAND_BYTES = 16


class CopyEngine(wiring.Component):
    """See the module doc. ``outstanding``: read bursts in flight of the DMA."""

    def __init__(self, *, macs: int = 0, outstanding: int = 4):
        if not isinstance(macs, int) or macs < 0:
            raise ValueError(f"MAC count must be a non-negative integer, not {macs!r}")
        self._macs = macs
        self._dma = AxiDma(outstanding=outstanding)
        self._regs = AxiLiteRegs()
        members = {k: v for k, v in self._dma.signature.members.items() if k.startswith("m_axi_")}
        members |= {k: v for k, v in self._regs.signature.members.items() if k.startswith("s_axi_")}
        members["irq"] = Out(1)
        super().__init__(members)

    macs = property(lambda self: self._macs)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma = dma = self._dma
        m.submodules.regs = regs = self._regs
        for name, member in self.signature.members.items():
            if name == "irq":
                continue
            sub = dma if name.startswith("m_axi_") else regs
            if member.flow == Out:
                m.d.comb += getattr(self, name).eq(getattr(sub, name))
            else:
                m.d.comb += getattr(sub, name).eq(getattr(self, name))
        m.d.comb += self.irq.eq(regs.irq)

        idx = Signal(32)
        ptr = Signal(32)
        w0 = Signal(64)
        w1 = Signal(64)
        got = Signal(2)                 # command beats received
        rd_sent = Signal()
        wr_sent = Signal()
        delay = Signal(32)
        cmd_cycles = Signal(32)
        busy = Signal()
        err_code = Signal(32)
        err = Signal()

        rd_accept = dma.rd_req.valid & dma.rd_req.ready
        wr_accept = dma.wr_req.valid & dma.wr_req.ready
        beat = dma.o_stream.valid & dma.o_stream.ready
        m.d.comb += [regs.busy.eq(busy), regs.cur_cmd.eq(idx), regs.error.eq(err),
                     regs.config.eq(0)]
        with m.If(busy):
            m.d.sync += cmd_cycles.eq(cmd_cycles + 1)
        with m.If(dma.rd_error & ~err):
            m.d.sync += [err.eq(1), err_code.eq(1)]
        with m.Elif(dma.wr_error & ~err):
            m.d.sync += [err.eq(1), err_code.eq(2)]

        with m.FSM(name="ctl"):
            with m.State("IDLE"):
                with m.If(regs.start):
                    m.d.sync += [idx.eq(0), ptr.eq(regs.cmd_base), busy.eq(1), cmd_cycles.eq(0)]
                    with m.If(regs.cmd_count == 0):
                        m.next = "FINISH"
                    with m.Else():
                        m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += [dma.rd_req.valid.eq(1), dma.rd_req.payload.addr.eq(ptr),
                             dma.rd_req.payload.length.eq(COPY_COMMAND_BYTES)]
                with m.If(rd_accept):
                    m.d.sync += got.eq(0)
                    m.next = "RECV"
            with m.State("RECV"):
                m.d.comb += dma.o_stream.ready.eq(1)
                with m.If(beat):
                    m.d.sync += got.eq(got + 1)
                    with m.If(got == 0):
                        m.d.sync += w0.eq(dma.o_stream.payload.data)
                    with m.Else():
                        m.d.sync += [w1.eq(dma.o_stream.payload.data), rd_sent.eq(0),
                                     wr_sent.eq(0)]
                        m.next = "COPY"
            with m.State("COPY"):
                # both requests at once; the read data feed the write DMA directly
                m.d.comb += [
                    dma.rd_req.valid.eq(~rd_sent), dma.rd_req.payload.addr.eq(w0[:32]),
                    dma.rd_req.payload.length.eq(w1[:32]),
                    dma.wr_req.valid.eq(~wr_sent), dma.wr_req.payload.addr.eq(w0[32:]),
                    dma.wr_req.payload.length.eq(w1[:32]),
                    dma.i_stream.valid.eq(dma.o_stream.valid),
                    dma.i_stream.payload.eq(dma.o_stream.payload.data),
                    dma.o_stream.ready.eq(dma.i_stream.ready),
                ]
                with m.If(rd_accept):
                    m.d.sync += rd_sent.eq(1)
                with m.If(wr_accept):
                    m.d.sync += wr_sent.eq(1)
                with m.If(rd_sent & wr_sent & ~dma.rd_busy & ~dma.wr_busy):
                    m.d.sync += delay.eq(w1[32:])
                    with m.If(err):
                        m.next = "FINISH"            # stop at the failing command
                    with m.Else():
                        m.next = "DELAY"
            with m.State("DELAY"):
                with m.If(delay != 0):
                    m.d.sync += delay.eq(delay - 1)
                with m.Else():
                    m.d.comb += [regs.layer_cycles_we.eq(idx < MAX_LAYER_CYCLES),
                                 regs.layer_cycles_index.eq(idx[:6]),
                                 regs.layer_cycles_data.eq(cmd_cycles + 1)]
                    m.d.sync += [idx.eq(idx + 1), ptr.eq(ptr + COPY_COMMAND_BYTES),
                                 cmd_cycles.eq(0)]
                    with m.If(idx + 1 == regs.cmd_count):
                        m.next = "FINISH"
                    with m.Else():
                        m.next = "FETCH"
            with m.State("FINISH"):
                m.d.comb += regs.done_set.eq(1)
                m.d.sync += busy.eq(0)
                m.next = "IDLE"

        # -- optional load: a MAC array on an LFSR ----------------------------------------
        checksum = Signal(32)
        if self._macs:
            lfsr = Signal(32, init=1)
            with m.If(busy):
                m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[1] ^ lfsr[21] ^ lfsr[31]))
            accs = []
            for i in range(self._macs):
                acc = Signal(signed(32), name=f"acc{i}")
                a = lfsr.rotate_left(i % 32)[:8].as_signed()
                b = lfsr.rotate_right((3 * i) % 32)[8:16].as_signed()
                with m.If(busy):
                    m.d.sync += acc.eq(acc + a * b)
                accs.append(acc)
            x = accs[0]
            for acc in accs[1:]:
                x = x ^ acc
            m.d.comb += checksum.eq(x)
        m.d.comb += regs.error_code.eq(Mux(err, err_code, checksum))
        return m


@dataclass
class CopyProgram:
    """Host side of :class:`CopyEngine`: what ``host.runtime.execute`` needs of a Program.

    ``copies``: (src, dst, length, delay) per command, addresses absolute. The DDR plan from
    ``base_addr``: the command list, then ``image`` (the "input", written before start), then
    nothing; ``tensors`` names destination regions read back after the run.
    """
    base_addr: int
    copies: list
    image: bytes = b""
    tensors: dict = field(default_factory=dict)      # name -> (addr, length)

    @property
    def cmd_addr(self) -> int:
        return self.base_addr

    @property
    def commands(self) -> list[str]:
        return [f"copy{i}" for i in range(len(self.copies))]

    @property
    def input_addr(self) -> int:
        return self.base_addr + -(-len(self.copies) * COPY_COMMAND_BYTES // 64) * 64

    @property
    def regions(self):
        from collections import namedtuple
        Region = namedtuple("Region", "name addr size")
        return [Region(n, a, s) for n, (a, s) in self.tensors.items()]

    @property
    def ddr_size(self) -> int:
        ends = [self.input_addr + len(self.image)] + [a + s for a, s in self.tensors.values()]
        return max(ends) - self.base_addr

    def ddr_image(self, x=None) -> bytes:
        out = bytearray()
        for src, dst, length, delay in self.copies:
            out += (src | dst << 32).to_bytes(8, "little")
            out += (length | delay << 32).to_bytes(8, "little")
        out += bytes(self.input_addr - self.base_addr - len(out))
        return bytes(out + self.image)

    def read_tensor(self, ddr, name) -> np.ndarray:
        a, s = self.tensors[name]
        off = a - self.base_addr
        return np.frombuffer(bytes(ddr[off:off + s]), dtype=np.uint8)

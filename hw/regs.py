"""The engine's control registers: an AXI4-Lite slave.

Register map (32-bit registers, byte offsets; the host imports :class:`Reg` and the bit
constants from here, so the map has one source of truth):

======  ===============  ====  ==============================================================
offset  name             mode  meaning
======  ===============  ====  ==============================================================
0x00    ID               RO    0x53515A46: ASCII "SQZF", most significant byte first
0x04    VERSION          RO    ``version`` constructor parameter (major << 16 | minor)
0x08    CTRL             RW    bit0 START (write 1: one-cycle ``start`` pulse, reads 0);
                               bit1 SOFT_RESET (write 1: one-cycle ``soft_reset`` pulse, reads
                               0; also clears DONE and CYCLES); bit2 IRQ_EN (level)
0x0C    STATUS           RO/W1C bit0 BUSY (``busy`` input); bit1 DONE (sticky: set by the
                               ``done_set`` pulse, cleared by writing 1); bit2 ERROR (``error``)
0x10    ERROR            RO    ``error_code`` input
0x14    CMD_BASE         RW    DDR address of the command list (``cmd_base`` output)
0x18    CMD_COUNT        RW    number of commands (``cmd_count`` output)
0x1C    CYCLES_LO        RO    cycle counter, low word: cleared by START, counts while ``busy``.
                               Reading it latches the high word for the next CYCLES_HI read.
0x20    CYCLES_HI        RO    high word latched by the last CYCLES_LO read (read LO, then HI:
                               the pair is consistent even while the counter runs)
0x24    CUR_CMD          RO    ``cur_cmd`` input
0x28    CONFIG           RO    ``config`` input (see :func:`config_word`)
0x100   LAYER_CYCLES[i]  RO    0x100 + 4*i, i < ``n_layer_cycles``: written by the engine
                               through ``layer_cycles_we``/``_index``/``_data``
======  ===============  ====  ==============================================================

AXI4-Lite behaviour: AW and W are accepted independently (each is held in a register until
both are present); the write takes effect the cycle after both are held and BVALID rises
with it; BVALID and RVALID are held until BREADY/RREADY (a new write or read is not
performed before the previous response is taken). Write strobes select bytes of CMD_BASE and
CMD_COUNT; CTRL and STATUS bits act only when byte 0 is strobed. Mapped addresses answer
OKAY (writes to read-only registers are ignored); unmapped addresses answer SLVERR and read
as 0. The low two address bits are ignored. Read latency: data 2 cycles after the AR
handshake.
"""
from __future__ import annotations

import enum as py_enum

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axi import AxiResp

__all__ = ["Reg", "ID_VALUE", "VERSION", "CTRL_START", "CTRL_SOFT_RESET", "CTRL_IRQ_EN",
           "STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR", "MAX_LAYER_CYCLES",
           "config_word", "AxiLiteRegs"]

ID_VALUE = int.from_bytes(b"SQZF", "big")   # 0x53515A46
VERSION = 0x0001_0000          # 1.0
MAX_LAYER_CYCLES = 64

CTRL_START = 1 << 0
CTRL_SOFT_RESET = 1 << 1
CTRL_IRQ_EN = 1 << 2
STATUS_BUSY = 1 << 0
STATUS_DONE = 1 << 1
STATUS_ERROR = 1 << 2


class Reg(py_enum.IntEnum):
    """Byte offsets of the registers."""
    ID = 0x00
    VERSION = 0x04
    CTRL = 0x08
    STATUS = 0x0C
    ERROR = 0x10
    CMD_BASE = 0x14
    CMD_COUNT = 0x18
    CYCLES_LO = 0x1C
    CYCLES_HI = 0x20
    CUR_CMD = 0x24
    CONFIG = 0x28
    LAYER_CYCLES = 0x100

    @staticmethod
    def layer_cycles(i: int) -> int:
        if not 0 <= i < MAX_LAYER_CYCLES:
            raise ValueError(f"layer cycle counter index must be 0..{MAX_LAYER_CYCLES - 1}, not {i}")
        return Reg.LAYER_CYCLES + 4 * i


def config_word(in_lanes: int, out_lanes: int, weight_mode: str, dsp_packing: bool = False) -> int:
    """The CONFIG register: bits 0-7 Pi (in_lanes), 8-15 Po (out_lanes), bit 16 weight mode
    (0 resident, 1 streamed), bit 17 DSP packing."""
    for name, v in (("in_lanes", in_lanes), ("out_lanes", out_lanes)):
        if not isinstance(v, int) or not 1 <= v <= 255:
            raise ValueError(f"{name} must be an integer from 1 to 255 to fit CONFIG, not {v!r}")
    if weight_mode not in ("resident", "streamed"):
        raise ValueError(f"weight_mode must be 'resident' or 'streamed', not {weight_mode!r}")
    return in_lanes | out_lanes << 8 | (weight_mode == "streamed") << 16 | bool(dsp_packing) << 17


class AxiLiteRegs(wiring.Component):
    """AXI4-Lite register block of the engine (map and bus behaviour: see the module doc).

    Engine side
    -----------
    start, soft_reset : Out(1)      one-cycle pulses (registered) from CTRL writes
    irq_en : Out(1)                 CTRL.IRQ_EN
    busy, error : In(1)             levels shown in STATUS
    done_set : In(1)                pulse: sets the sticky STATUS.DONE (wins over a clear in
                                    the same cycle)
    done : Out(1)                   STATUS.DONE
    error_code, cur_cmd, config : In(32)
    cmd_base, cmd_count : Out(32)
    cycles : Out(64)                the cycle counter (cleared by ``start``, counts while busy)
    layer_cycles_we : In(1), layer_cycles_index : In(range(n)), layer_cycles_data : In(32)
                                    write one LAYER_CYCLES entry (a memory, not registers)
    irq : Out(1)                    done & irq_en (combinational from two registers)

    Bus side: ``s_axi_*`` AXI4-Lite, 32-bit data, ``addr_width`` address bits (>= 12).
    """

    def __init__(self, *, addr_width=12, version=VERSION, n_layer_cycles=MAX_LAYER_CYCLES):
        if not isinstance(addr_width, int) or not 12 <= addr_width <= 32:
            raise ValueError(f"register address width must be an integer from 12 to 32, "
                             f"not {addr_width!r}")
        if not isinstance(version, int) or not 0 <= version < 2**32:
            raise ValueError(f"version must be a 32-bit unsigned integer, not {version!r}")
        if not isinstance(n_layer_cycles, int) or not 1 <= n_layer_cycles <= MAX_LAYER_CYCLES:
            raise ValueError(f"layer cycle counters must number 1 to {MAX_LAYER_CYCLES}, "
                             f"not {n_layer_cycles!r}")
        self._addr_width = addr_width
        self._version = version
        self._n_layer_cycles = n_layer_cycles
        super().__init__({
            # AXI4-Lite slave
            "s_axi_awaddr": In(addr_width), "s_axi_awprot": In(3),
            "s_axi_awvalid": In(1), "s_axi_awready": Out(1),
            "s_axi_wdata": In(32), "s_axi_wstrb": In(4),
            "s_axi_wvalid": In(1), "s_axi_wready": Out(1),
            "s_axi_bresp": Out(2), "s_axi_bvalid": Out(1), "s_axi_bready": In(1),
            "s_axi_araddr": In(addr_width), "s_axi_arprot": In(3),
            "s_axi_arvalid": In(1), "s_axi_arready": Out(1),
            "s_axi_rdata": Out(32), "s_axi_rresp": Out(2),
            "s_axi_rvalid": Out(1), "s_axi_rready": In(1),
            # engine
            "start": Out(1), "soft_reset": Out(1), "irq_en": Out(1),
            "busy": In(1), "done_set": In(1), "error": In(1), "done": Out(1),
            "error_code": In(32), "cur_cmd": In(32), "config": In(32),
            "cmd_base": Out(32), "cmd_count": Out(32), "cycles": Out(64),
            "layer_cycles_we": In(1), "layer_cycles_index": In(range(n_layer_cycles)),
            "layer_cycles_data": In(32),
            "irq": Out(1),
        })

    addr_width = property(lambda self: self._addr_width)
    version = property(lambda self: self._version)
    n_layer_cycles = property(lambda self: self._n_layer_cycles)
    #: cycles from the AR handshake to RVALID
    read_latency = 2

    def _mapped(self, addr):
        """Whether byte address ``addr`` (a Value) hits a register."""
        word = addr[2:]
        simple = Cat(*(word == r // 4 for r in Reg if r != Reg.LAYER_CYCLES)).any()
        layer = (addr >= Reg.LAYER_CYCLES) & (addr < Reg.LAYER_CYCLES + 4 * self._n_layer_cycles)
        return simple | layer

    def elaborate(self, platform):
        m = Module()
        n = self._n_layer_cycles

        # LAYER_CYCLES: a 32-bit memory (LUT RAM at 64 entries), engine write port and bus
        # read port. The read port is not transparent: a read racing an engine write of the
        # same entry returns the old count, which is harmless for a host poll.
        m.submodules.layer_cycles = mem = Memory(shape=unsigned(32), depth=n, init=[])
        mem_w = mem.write_port()
        mem_r = mem.read_port()
        m.d.comb += [
            mem_w.en.eq(self.layer_cycles_we),
            mem_w.addr.eq(self.layer_cycles_index),
            mem_w.data.eq(self.layer_cycles_data),
        ]

        # ---------------------------------------------------------------- write path
        aw_held = Signal()
        w_held = Signal()
        aw_addr = Signal(self._addr_width)
        w_data = Signal(32)
        w_strb = Signal(4)
        aw_accept = self.s_axi_awvalid & self.s_axi_awready
        w_accept = self.s_axi_wvalid & self.s_axi_wready
        b_accept = self.s_axi_bvalid & self.s_axi_bready
        do_write = aw_held & w_held & ~self.s_axi_bvalid
        m.d.comb += [
            self.s_axi_awready.eq(~aw_held),
            self.s_axi_wready.eq(~w_held),
        ]
        with m.If(aw_accept):
            m.d.sync += [aw_held.eq(1), aw_addr.eq(self.s_axi_awaddr)]
        with m.If(w_accept):
            m.d.sync += [w_held.eq(1), w_data.eq(self.s_axi_wdata), w_strb.eq(self.s_axi_wstrb)]
        with m.If(do_write):
            m.d.sync += [
                aw_held.eq(0), w_held.eq(0), self.s_axi_bvalid.eq(1),
                self.s_axi_bresp.eq(Mux(self._mapped(aw_addr), AxiResp.OKAY, AxiResp.SLVERR)),
            ]
        with m.Elif(b_accept):
            m.d.sync += self.s_axi_bvalid.eq(0)

        wr_word = aw_addr[2:]
        byte0 = do_write & w_strb[0]
        ctrl_wr = byte0 & (wr_word == Reg.CTRL // 4)
        status_wr = byte0 & (wr_word == Reg.STATUS // 4)

        def write_bytes(reg, offset):
            for i in range(4):
                with m.If(do_write & (wr_word == offset // 4) & w_strb[i]):
                    m.d.sync += reg[8 * i:8 * i + 8].eq(w_data[8 * i:8 * i + 8])

        write_bytes(self.cmd_base, Reg.CMD_BASE)
        write_bytes(self.cmd_count, Reg.CMD_COUNT)
        m.d.sync += [
            self.start.eq(ctrl_wr & w_data[0]),
            self.soft_reset.eq(ctrl_wr & w_data[1]),
        ]
        with m.If(ctrl_wr):
            m.d.sync += self.irq_en.eq(w_data[2])

        # ---------------------------------------------------------------- engine state
        with m.If(self.done_set):
            m.d.sync += self.done.eq(1)
        with m.Elif((status_wr & w_data[1]) | self.soft_reset):
            m.d.sync += self.done.eq(0)
        with m.If(self.start | self.soft_reset):
            m.d.sync += self.cycles.eq(0)
        with m.Elif(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        m.d.comb += self.irq.eq(self.done & self.irq_en)

        # ---------------------------------------------------------------- read path
        rd_addr = Signal(self._addr_width)
        cycles_hi = Signal(32)
        rd_data = Signal(32)
        rd_word = rd_addr[2:]
        with m.Switch(rd_word):
            with m.Case(Reg.ID // 4):
                m.d.comb += rd_data.eq(ID_VALUE)
            with m.Case(Reg.VERSION // 4):
                m.d.comb += rd_data.eq(self._version)
            with m.Case(Reg.CTRL // 4):
                m.d.comb += rd_data[2].eq(self.irq_en)
            with m.Case(Reg.STATUS // 4):
                m.d.comb += rd_data.eq(Cat(self.busy, self.done, self.error))
            with m.Case(Reg.ERROR // 4):
                m.d.comb += rd_data.eq(self.error_code)
            with m.Case(Reg.CMD_BASE // 4):
                m.d.comb += rd_data.eq(self.cmd_base)
            with m.Case(Reg.CMD_COUNT // 4):
                m.d.comb += rd_data.eq(self.cmd_count)
            with m.Case(Reg.CYCLES_LO // 4):
                m.d.comb += rd_data.eq(self.cycles[:32])
            with m.Case(Reg.CYCLES_HI // 4):
                m.d.comb += rd_data.eq(cycles_hi)
            with m.Case(Reg.CUR_CMD // 4):
                m.d.comb += rd_data.eq(self.cur_cmd)
            with m.Case(Reg.CONFIG // 4):
                m.d.comb += rd_data.eq(self.config)
            with m.Default():
                with m.If(self._mapped(rd_addr)):
                    m.d.comb += rd_data.eq(mem_r.data)

        with m.FSM(name="read"):
            with m.State("IDLE"):
                m.d.comb += self.s_axi_arready.eq(1)
                # the memory read port is addressed straight from the bus, so its data is
                # ready in LOOKUP
                m.d.comb += mem_r.addr.eq(self.s_axi_araddr[2:])
                with m.If(self.s_axi_arvalid):
                    m.d.sync += rd_addr.eq(self.s_axi_araddr)
                    m.next = "LOOKUP"
            with m.State("LOOKUP"):
                # register the answer: RDATA must hold while RVALID waits for RREADY
                m.d.sync += [
                    self.s_axi_rdata.eq(rd_data),
                    self.s_axi_rresp.eq(Mux(self._mapped(rd_addr), AxiResp.OKAY,
                                            AxiResp.SLVERR)),
                ]
                with m.If(rd_word == Reg.CYCLES_LO // 4):
                    m.d.sync += cycles_hi.eq(self.cycles[32:])
                m.next = "RESP"
            with m.State("RESP"):
                m.d.comb += self.s_axi_rvalid.eq(1)
                with m.If(self.s_axi_rready):
                    m.next = "IDLE"
        return m

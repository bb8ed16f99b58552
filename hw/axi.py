"""AXI4 bus masters: the engine's read and write DMA engines.

Both masters speak AXI4 with INCR bursts only, AXI3-compatible burst lengths by default
(``max_burst`` = 16 beats, the limit of the Zynq-7000 HP ports), never crossing a 4 KB
boundary, one transaction ID (so responses return in order), full-width beats
(``arsize``/``awsize`` = log2 of the data bytes) and ``*cache`` = 0b0011 (normal non-cacheable
bufferable, the value Xilinx recommends for PL masters on HP ports).

The AXI signals are plain ports named in Xilinx style (``m_axi_araddr``, ``m_axi_rready``, ...)
so that Vivado's interface inference and cocotbext-axi's ``AxiBus.from_prefix(dut, "m_axi")``
find them. Everything the engine talks to is a :mod:`amaranth.lib.stream`.

Requests are records of :func:`dma_request_layout`: ``addr`` (byte address) and ``length``
(bytes). Both must be multiples of the beat size (8 bytes with the default 64-bit bus); the
low bits are ignored (the address is rounded down, the length truncated). A zero-length
request is accepted and produces no beat.
"""
from __future__ import annotations

from amaranth import *
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

__all__ = ["AxiBurst", "AxiResp", "AXI_CACHE_NORMAL", "BOUNDARY_BYTES",
           "dma_request_layout", "read_beat_layout", "write_beat_layout", "split_bursts",
           "AxiReadDma", "AxiWriteDma", "AxiDma"]

#: AXI bursts may not cross a 4 KB address boundary (AXI spec A3.4.1).
BOUNDARY_BYTES = 4096
#: ``ARCACHE``/``AWCACHE``: normal non-cacheable bufferable.
AXI_CACHE_NORMAL = 0b0011


class AxiBurst(enum.Enum, shape=2):
    FIXED = 0
    INCR = 1
    WRAP = 2


class AxiResp(enum.Enum, shape=2):
    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


def dma_request_layout(addr_width: int = 32) -> data.StructLayout:
    """One DMA request: ``addr`` (byte address, beat aligned), ``length`` (bytes, whole beats)."""
    return data.StructLayout({"addr": unsigned(addr_width), "length": unsigned(32)})


def read_beat_layout(data_width: int = 64) -> data.StructLayout:
    """One beat from the read DMA: ``data`` (little-endian bytes), ``last`` (final beat of its
    request)."""
    return data.StructLayout({"data": unsigned(data_width), "last": unsigned(1)})


def write_beat_layout(data_width: int = 64) -> data.StructLayout:
    """One beat into a write DMA built with ``strobes=True``: ``data`` (little-endian bytes)
    and ``strb`` (one write strobe per byte, AXI WSTRB)."""
    return data.StructLayout({"data": unsigned(data_width), "strb": unsigned(data_width // 8)})


def split_bursts(addr: int, length: int, *, beat_bytes: int = 8, max_burst: int = 16):
    """The bursts (address, beats) the DMAs issue for one request: a Python model of the
    hardware's splitting rule, for tests and for the cycle model."""
    addr -= addr % beat_bytes
    beats = length // beat_bytes
    out = []
    while beats:
        to_boundary = (BOUNDARY_BYTES - addr % BOUNDARY_BYTES) // beat_bytes
        n = min(beats, max_burst, to_boundary)
        out.append((addr, n))
        addr += n * beat_bytes
        beats -= n
    return out


def _check_common(data_width, addr_width, max_burst, outstanding, id_width):
    if data_width not in (32, 64, 128, 256):
        raise ValueError(f"AXI data width must be 32, 64, 128 or 256 bits, not {data_width!r}")
    if not isinstance(addr_width, int) or not 32 <= addr_width <= 64:
        raise ValueError(f"AXI address width must be an integer from 32 to 64, not {addr_width!r}")
    if (not isinstance(max_burst, int) or max_burst < 1 or max_burst > 256
            or max_burst & (max_burst - 1)):
        raise ValueError(f"maximum burst length must be a power of two from 1 to 256 beats, "
                         f"not {max_burst!r}")
    if not isinstance(outstanding, int) or not 1 <= outstanding <= 64:
        raise ValueError(f"outstanding transactions must be an integer from 1 to 64, "
                         f"not {outstanding!r}")
    if not isinstance(id_width, int) or not 1 <= id_width <= 16:
        raise ValueError(f"AXI ID width must be an integer from 1 to 16, not {id_width!r}")


class _BurstGenerator(Elaboratable):
    """Address generator shared by both DMAs: splits the current request into bursts.

    ``start``/``start_addr``/``start_beats`` load a request; while ``active``, ``addr`` and
    ``beats`` give the next burst (``beats`` = min(remaining, max_burst, beats to the next 4 KB
    boundary)); ``step`` advances past it. ``final`` is high when the next burst is the
    request's last. Purely registered state; ``beats`` is a combinational min of three terms.
    """
    def __init__(self, *, addr_width, beat_bytes, max_burst):
        self._shift = exact_log2(beat_bytes)
        self._max_burst = max_burst
        self._boundary_beats = BOUNDARY_BYTES // beat_bytes
        self.start = Signal()
        self.start_addr = Signal(addr_width)
        self.start_beats = Signal(32 - self._shift)
        self.step = Signal()
        self.active = Signal()
        self.addr = Signal(addr_width)
        self.beats = Signal(range(max(max_burst, self._boundary_beats) + 1))
        self.final = Signal()

    def elaborate(self, platform):
        m = Module()
        remaining = Signal.like(self.start_beats)
        to_boundary = Signal(range(self._boundary_beats + 1))
        m.d.comb += to_boundary.eq(self._boundary_beats - self.addr[self._shift:12])
        limit = Signal.like(self.beats)
        m.d.comb += limit.eq(Mux(to_boundary < self._max_burst, to_boundary, self._max_burst))
        m.d.comb += [
            self.beats.eq(Mux(remaining < limit, remaining, limit)),
            self.final.eq(remaining <= limit),
        ]
        with m.If(self.start):
            m.d.sync += [
                self.addr.eq(Cat(C(0, self._shift), self.start_addr[self._shift:])),
                remaining.eq(self.start_beats),
                self.active.eq(self.start_beats != 0),
            ]
        with m.Elif(self.step):
            m.d.sync += [
                self.addr.eq(self.addr + (self.beats << self._shift)),
                remaining.eq(remaining - self.beats),
                self.active.eq(~self.final),
            ]
        return m


def _read_members(addr_width, data_width, id_width):
    return {
        "m_axi_arid": Out(id_width), "m_axi_araddr": Out(addr_width), "m_axi_arlen": Out(8),
        "m_axi_arsize": Out(3), "m_axi_arburst": Out(2), "m_axi_arcache": Out(4),
        "m_axi_arprot": Out(3), "m_axi_arvalid": Out(1), "m_axi_arready": In(1),
        "m_axi_rid": In(id_width), "m_axi_rdata": In(data_width), "m_axi_rresp": In(2),
        "m_axi_rlast": In(1), "m_axi_rvalid": In(1), "m_axi_rready": Out(1),
    }


def _write_members(addr_width, data_width, id_width):
    return {
        "m_axi_awid": Out(id_width), "m_axi_awaddr": Out(addr_width), "m_axi_awlen": Out(8),
        "m_axi_awsize": Out(3), "m_axi_awburst": Out(2), "m_axi_awcache": Out(4),
        "m_axi_awprot": Out(3), "m_axi_awvalid": Out(1), "m_axi_awready": In(1),
        "m_axi_wdata": Out(data_width), "m_axi_wstrb": Out(data_width // 8),
        "m_axi_wlast": Out(1), "m_axi_wvalid": Out(1), "m_axi_wready": In(1),
        "m_axi_bid": In(id_width), "m_axi_bresp": In(2), "m_axi_bvalid": In(1),
        "m_axi_bready": Out(1),
    }


class AxiReadDma(wiring.Component):
    """AXI4 read master: streams the bytes of each request as full-width beats.

    Ports
    -----
    req : In(stream of :func:`dma_request_layout`)
        A request is accepted once all bursts of the previous one have been issued; data of
        several requests flow back to back.
    o_stream : Out(stream of :func:`read_beat_layout`)
        The beats, in address order, little-endian (byte ``k`` of the beat = address
        ``8*i + k``); ``last`` marks the final beat of a request. ``o_stream.ready`` is passed
        to ``m_axi_rready`` combinationally (no buffering: backpressure holds the slave).
    busy : Out(1)
        A request is being split or has bursts in flight.
    error : Out(1)
        Sticky until reset: a beat came back with RRESP other than OKAY (its data is still
        forwarded).
    m_axi_* : the AXI4 read address and read data channels.

    Throughput: one beat per cycle when the slave delivers one; up to ``outstanding`` bursts
    (counting the one on the AR channel) are in flight, which hides a read latency of
    ``(outstanding - 1) * max_burst`` cycles. One idle cycle between requests on the AR side.
    """

    def __init__(self, *, data_width=64, addr_width=32, max_burst=16, outstanding=4, id_width=1):
        _check_common(data_width, addr_width, max_burst, outstanding, id_width)
        self._data_width = data_width
        self._addr_width = addr_width
        self._max_burst = max_burst
        self._outstanding = outstanding
        self._id_width = id_width
        super().__init__({
            "req": In(stream.Signature(dma_request_layout(addr_width))),
            "o_stream": Out(stream.Signature(read_beat_layout(data_width))),
            "busy": Out(1),
            "error": Out(1),
            **_read_members(addr_width, data_width, id_width),
        })

    data_width = property(lambda self: self._data_width)
    addr_width = property(lambda self: self._addr_width)
    max_burst = property(lambda self: self._max_burst)
    outstanding = property(lambda self: self._outstanding)
    beat_bytes = property(lambda self: self._data_width // 8)

    def elaborate(self, platform):
        m = Module()
        shift = exact_log2(self.beat_bytes)

        m.submodules.bursts = gen = _BurstGenerator(
            addr_width=self._addr_width, beat_bytes=self.beat_bytes, max_burst=self._max_burst)
        # One entry per burst in flight: "this burst ends its request". Its fill level is the
        # number of bursts in flight, which bounds the outstanding reads.
        m.submodules.inflight = inflight = fifo.SyncFIFO(width=1, depth=self._outstanding)

        # -- request intake --------------------------------------------------------------
        req_accept = self.req.valid & self.req.ready
        m.d.comb += [
            self.req.ready.eq(~gen.active),
            gen.start.eq(req_accept),
            gen.start_addr.eq(self.req.payload.addr),
            gen.start_beats.eq(self.req.payload.length[shift:]),
        ]

        # -- AR channel: a registered slave of the burst generator ------------------------
        ar_free = ~self.m_axi_arvalid | self.m_axi_arready
        load = gen.active & inflight.w_rdy & ar_free
        m.d.comb += [
            gen.step.eq(load),
            inflight.w_en.eq(load),
            inflight.w_data.eq(gen.final),
            self.m_axi_arid.eq(0),
            self.m_axi_arsize.eq(shift),
            self.m_axi_arburst.eq(AxiBurst.INCR),
            self.m_axi_arcache.eq(AXI_CACHE_NORMAL),
            self.m_axi_arprot.eq(0),
        ]
        with m.If(load):
            m.d.sync += [
                self.m_axi_arvalid.eq(1),
                self.m_axi_araddr.eq(gen.addr),
                self.m_axi_arlen.eq(gen.beats - 1),
            ]
        with m.Elif(self.m_axi_arready):
            m.d.sync += self.m_axi_arvalid.eq(0)

        # -- R channel: passed through to o_stream ------------------------------------------
        r_accept = self.m_axi_rvalid & self.m_axi_rready
        m.d.comb += [
            self.o_stream.valid.eq(self.m_axi_rvalid),
            self.o_stream.payload.data.eq(self.m_axi_rdata),
            self.o_stream.payload.last.eq(self.m_axi_rlast & inflight.r_data),
            self.m_axi_rready.eq(self.o_stream.ready),
            inflight.r_en.eq(r_accept & self.m_axi_rlast),
            self.busy.eq(gen.active | inflight.r_rdy),
        ]
        with m.If(r_accept & (self.m_axi_rresp != AxiResp.OKAY)):
            m.d.sync += self.error.eq(1)
        return m


class AxiWriteDma(wiring.Component):
    """AXI4 write master: writes the beats of ``i_stream`` to the region of each request.

    Ports
    -----
    req : In(stream of :func:`dma_request_layout`)
        Accepted once all bursts of the previous request have been issued on AW.
    i_stream : In(stream of ``unsigned(data_width)``)
        The data, one full-width beat per transfer, little-endian; exactly length / beat bytes
        beats per request, in request order. All byte strobes are set, unless the DMA is built
        with ``strobes=True``: then each beat is a :func:`write_beat_layout` record whose
        ``strb`` drives WSTRB (partial beats for byte-granular regions).
    busy : Out(1)
        A request is being split, or has bursts whose data or write response is pending.
        The region is in memory (all B responses received) once ``busy`` falls.
    error : Out(1)
        Sticky until reset: a write response other than OKAY.
    m_axi_* : the AXI4 write address, write data and write response channels.

    AW is issued ahead of the data (up to ``outstanding`` bursts without a write response);
    W follows ``i_stream`` with no bubble between bursts, so the write throughput is one beat
    per cycle while ``i_stream`` and the slave keep up. ``m_axi_wvalid`` = ``i_stream.valid``
    (gated by a burst being open) and ``i_stream.ready`` = ``m_axi_wready`` (gated the same
    way): no buffering.
    """

    def __init__(self, *, data_width=64, addr_width=32, max_burst=16, outstanding=4, id_width=1,
                 strobes=False):
        _check_common(data_width, addr_width, max_burst, outstanding, id_width)
        self._data_width = data_width
        self._addr_width = addr_width
        self._max_burst = max_burst
        self._outstanding = outstanding
        self._id_width = id_width
        self._strobes = bool(strobes)
        beat = write_beat_layout(data_width) if strobes else unsigned(data_width)
        super().__init__({
            "req": In(stream.Signature(dma_request_layout(addr_width))),
            "i_stream": In(stream.Signature(beat)),
            "busy": Out(1),
            "error": Out(1),
            **_write_members(addr_width, data_width, id_width),
        })

    data_width = property(lambda self: self._data_width)
    addr_width = property(lambda self: self._addr_width)
    max_burst = property(lambda self: self._max_burst)
    outstanding = property(lambda self: self._outstanding)
    beat_bytes = property(lambda self: self._data_width // 8)

    def elaborate(self, platform):
        m = Module()
        shift = exact_log2(self.beat_bytes)

        m.submodules.bursts = gen = _BurstGenerator(
            addr_width=self._addr_width, beat_bytes=self.beat_bytes, max_burst=self._max_burst)
        # Lengths of the bursts issued on AW whose data has not been sent yet.
        len_width = len(gen.beats)
        m.submodules.wlens = wlens = fifo.SyncFIFO(width=len_width, depth=self._outstanding)
        # Bursts issued (including the one on AW) without a write response yet.
        pending = Signal(range(self._outstanding + 1))

        req_accept = self.req.valid & self.req.ready
        m.d.comb += [
            self.req.ready.eq(~gen.active),
            gen.start.eq(req_accept),
            gen.start_addr.eq(self.req.payload.addr),
            gen.start_beats.eq(self.req.payload.length[shift:]),
        ]

        # -- AW channel --------------------------------------------------------------------
        aw_free = ~self.m_axi_awvalid | self.m_axi_awready
        load = gen.active & aw_free & (pending != self._outstanding) & wlens.w_rdy
        m.d.comb += [
            gen.step.eq(load),
            wlens.w_en.eq(load),
            wlens.w_data.eq(gen.beats),
            self.m_axi_awid.eq(0),
            self.m_axi_awsize.eq(shift),
            self.m_axi_awburst.eq(AxiBurst.INCR),
            self.m_axi_awcache.eq(AXI_CACHE_NORMAL),
            self.m_axi_awprot.eq(0),
        ]
        with m.If(load):
            m.d.sync += [
                self.m_axi_awvalid.eq(1),
                self.m_axi_awaddr.eq(gen.addr),
                self.m_axi_awlen.eq(gen.beats - 1),
            ]
        with m.Elif(self.m_axi_awready):
            m.d.sync += self.m_axi_awvalid.eq(0)

        # -- W channel: beats of the oldest open burst -------------------------------------
        beat = Signal(len_width)
        w_open = wlens.r_rdy
        w_accept = self.m_axi_wvalid & self.m_axi_wready
        m.d.comb += [
            self.m_axi_wvalid.eq(self.i_stream.valid & w_open),
            self.m_axi_wdata.eq(self.i_stream.payload.data if self._strobes
                                else self.i_stream.payload),
            self.m_axi_wstrb.eq(self.i_stream.payload.strb if self._strobes
                                else C(-1, self.beat_bytes)),
            self.m_axi_wlast.eq(beat == wlens.r_data - 1),
            self.i_stream.ready.eq(self.m_axi_wready & w_open),
            wlens.r_en.eq(w_accept & self.m_axi_wlast),
        ]
        with m.If(w_accept):
            m.d.sync += beat.eq(Mux(self.m_axi_wlast, 0, beat + 1))

        # -- B channel ---------------------------------------------------------------------
        b_accept = self.m_axi_bvalid & self.m_axi_bready
        m.d.comb += self.m_axi_bready.eq(1)
        with m.If(load & ~b_accept):
            m.d.sync += pending.eq(pending + 1)
        with m.Elif(b_accept & ~load & (pending != 0)):
            m.d.sync += pending.eq(pending - 1)
        with m.If(b_accept & (self.m_axi_bresp != AxiResp.OKAY)):
            m.d.sync += self.error.eq(1)
        m.d.comb += self.busy.eq(gen.active | (pending != 0))
        return m


class AxiDma(wiring.Component):
    """A read DMA and a write DMA sharing one AXI4 master port (separate read and write
    channels), as the engine uses them.

    Ports: ``rd_req``, ``o_stream``, ``rd_busy``, ``rd_error`` of :class:`AxiReadDma`;
    ``wr_req``, ``i_stream``, ``wr_busy``, ``wr_error`` of :class:`AxiWriteDma`; and all
    ``m_axi_*`` signals of both.
    """

    def __init__(self, *, data_width=64, addr_width=32, max_burst=16, outstanding=4,
                 write_outstanding=None, id_width=1, strobes=False):
        write_outstanding = outstanding if write_outstanding is None else write_outstanding
        self._read = AxiReadDma(data_width=data_width, addr_width=addr_width,
                                max_burst=max_burst, outstanding=outstanding, id_width=id_width)
        self._write = AxiWriteDma(data_width=data_width, addr_width=addr_width,
                                  max_burst=max_burst, outstanding=write_outstanding,
                                  id_width=id_width, strobes=strobes)
        rs, ws = self._read.signature.members, self._write.signature.members
        super().__init__({
            "rd_req": rs["req"], "o_stream": rs["o_stream"],
            "rd_busy": rs["busy"], "rd_error": rs["error"],
            "wr_req": ws["req"], "i_stream": ws["i_stream"],
            "wr_busy": ws["busy"], "wr_error": ws["error"],
            **{k: v for k, v in rs.items() if k.startswith("m_axi_")},
            **{k: v for k, v in ws.items() if k.startswith("m_axi_")},
        })

    read_dma = property(lambda self: self._read)
    write_dma = property(lambda self: self._write)

    def elaborate(self, platform):
        m = Module()
        m.submodules.rd = rd = self._read
        m.submodules.wr = wr = self._write
        wiring.connect(m, wiring.flipped(self.rd_req), rd.req)
        wiring.connect(m, rd.o_stream, wiring.flipped(self.o_stream))
        wiring.connect(m, wiring.flipped(self.wr_req), wr.req)
        wiring.connect(m, wiring.flipped(self.i_stream), wr.i_stream)
        m.d.comb += [self.rd_busy.eq(rd.busy), self.rd_error.eq(rd.error),
                     self.wr_busy.eq(wr.busy), self.wr_error.eq(wr.error)]
        for sub in (rd, wr):
            for name, member in sub.signature.members.items():
                if not name.startswith("m_axi_"):
                    continue
                if member.flow == Out:
                    m.d.comb += getattr(self, name).eq(getattr(sub, name))
                else:
                    m.d.comb += getattr(sub, name).eq(getattr(self, name))
        return m

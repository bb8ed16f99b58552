"""Pooling passes: 3x3/2 max-pool (Caffe ceil rounding) and global average pool.

Both read an activation memory of Pi-byte words (address ``(y*W + x)*n_ic + icb``, the layout
of :func:`~.memories.act_word_layout`) through a synchronous read port, one word per cycle, and
emit Pi-lane records through a credit-based :class:`~.memories.OutputQueue`, like
:class:`~.conv.ConvCore`. With ``o_stream`` always ready a pass takes exactly
``pass_cycles(...)`` cycles from ``start`` to ``done``.
"""
from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from squeezeforge.quant import numeric

from .conv import DIM_BITS, WORDS_BITS
from .memories import OutputQueue, act_word_layout, check_lanes
from .requant import Requant

__all__ = ["MaxPoolCommand", "MaxPool", "GapCommand", "GlobalAvgPool"]


def _addr_width(depth) -> int:
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 2:
        raise ValueError(f"act_depth must be an integer of at least 2, not {depth!r}")
    return ceil_log2(depth)


def _lane_value(byte, is_signed):
    """An 8-bit lane as a 9-bit signed number: int8 when ``is_signed``, else uint8."""
    return Mux(is_signed, byte.as_signed(), byte)


class MaxPoolCommand(data.Struct):
    """One max-pool pass: input ``h`` x ``w``, ``n_ic`` channel words, output ``ho`` x ``wo``
    (Caffe: ``ceil((h - 3) / 2) + 1``), ``act_signed`` (bytes are int8, else uint8)."""
    h: unsigned(DIM_BITS)
    w: unsigned(DIM_BITS)
    n_ic: unsigned(WORDS_BITS)
    ho: unsigned(DIM_BITS)
    wo: unsigned(DIM_BITS)
    act_signed: 1


def maxpool_output_layout(in_lanes: int) -> data.StructLayout:
    return data.StructLayout({
        "y": unsigned(DIM_BITS),
        "x": unsigned(DIM_BITS),
        "icb": unsigned(WORDS_BITS),
        "data": act_word_layout(in_lanes),
    })


class MaxPool(wiring.Component):
    """3x3 stride-2 max-pool, no padding, Caffe ceil rounding: windows clipped at the borders.

    Loop nest: for oy in Ho, ox in Wo, icb in n_ic: the 9 taps (kh, kw) of window
    (2*oy + kh, 2*ox + kw), one word read per cycle; taps past the input's bottom or right edge
    are not read (masked to the lowest value; the first tap is always inside). Lane-wise max of
    uint8 or int8 bytes.

    Parameters
    ----------
    in_lanes : int
        Pi, bytes per activation word.
    act_depth : int
        Depth of the activation memory.

    Ports
    -----
    cmd : In(MaxPoolCommand)
        Sampled with ``start`` while idle.
    start : In(1); busy : Out(1); done : Out(1)
        As :class:`~.conv.ConvCore`: ``done`` is a one-cycle pulse after the last output has
        been accepted.
    act_rd : In(ReadPort.Signature(act word))
        Synchronous read port of the activation memory.
    o_stream : Out(stream.Signature(maxpool_output_layout(Pi)))
        One record per (y, x, icb) in loop order: Pi bytes of channels icb*Pi .. icb*Pi + Pi-1.

    Timing: ``setup_cycles`` + ``Ho*Wo*n_ic*9`` issue cycles + ``latency`` + ``done_delay``.
    """

    KERNEL = 3
    STRIDE = 2
    SETUP_CYCLES = 2
    DONE_DELAY = 2

    def __init__(self, in_lanes: int, *, act_depth: int):
        self._in_lanes = check_lanes("in_lanes", in_lanes)
        self._act_depth = act_depth
        self._aw = _addr_width(act_depth)
        self._queue_depth = 1 << ceil_log2(self.latency + 4)
        super().__init__({
            "cmd": In(MaxPoolCommand),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "act_rd": In(ReadPort.Signature(addr_width=self._aw,
                                            shape=act_word_layout(in_lanes))),
            "o_stream": Out(stream.Signature(maxpool_output_layout(in_lanes))),
        })

    @property
    def in_lanes(self) -> int:
        return self._in_lanes

    @property
    def act_depth(self) -> int:
        return self._act_depth

    @property
    def latency(self) -> int:
        """Issue of a window's last tap -> ``o_stream.valid``: read, max register, queue."""
        return 2 + OutputQueue.LATENCY

    @property
    def setup_cycles(self) -> int:
        return self.SETUP_CYCLES

    @property
    def done_delay(self) -> int:
        return self.DONE_DELAY

    @classmethod
    def steps(cls, ho: int, wo: int, n_ic: int) -> int:
        return ho * wo * n_ic * cls.KERNEL * cls.KERNEL

    def pass_cycles(self, ho: int, wo: int, n_ic: int) -> int:
        """Cycles from ``start`` to ``done`` with ``o_stream`` always ready."""
        return self.setup_cycles + self.steps(ho, wo, n_ic) + self.latency + self.done_delay

    def elaborate(self, platform):
        m = Module()
        pi, aw = self._in_lanes, self._aw
        out_layout = maxpool_output_layout(pi)
        m.submodules.queue = queue = OutputQueue(out_layout, self._queue_depth)

        cmd = Signal(MaxPoolCommand)
        row_words = Signal(aw)                   # W * n_ic
        kw, kh = Signal(2), Signal(2)
        icb = Signal(WORDS_BITS)
        ox, oy = Signal(DIM_BITS), Signal(DIM_BITS)
        ix0, iy0, ix, iy = (Signal(DIM_BITS + 1, name=n) for n in ("ix0", "iy0", "ix", "iy"))
        # Addresses: current tap, kernel row start (kw = 0), window (kh = kw = 0),
        # pixel (icb = 0), output row (ox = 0).
        a_addr, a_row, a_win, a_pix, a_line = (Signal(aw, name=n) for n in
                                               ("a_addr", "a_row", "a_win", "a_pix", "a_line"))
        last_k = self.KERNEL - 1
        # Loop-end flags are registers updated with their counters (as in ConvCore): ``l_x``:
        # x is at its last value; ``u_x``: x's limit is 1 (the flag's value when x restarts).
        # The wrap chain is then a few gates instead of a chain of comparators.
        l_icb, l_ox, l_oy = (Signal(name=f"l_{n}") for n in ("icb", "ox", "oy"))
        u_icb, u_ox = Signal(name="u_icb"), Signal(name="u_ox")
        # penultimate values as registers (``x == limit - 2`` against a register is a plain
        # equality, not a borrow chain)
        nic_m2 = Signal(signed(WORDS_BITS + 2), name="nic_m2")
        wo_m2 = Signal(signed(DIM_BITS + 2), name="wo_m2")
        ho_m2 = Signal(signed(DIM_BITS + 2), name="ho_m2")
        wrap_kw = kw == last_k
        wrap_kh = wrap_kw & (kh == last_k)
        wrap_icb = wrap_kh & l_icb
        wrap_ox = wrap_icb & l_ox
        wrap_oy = wrap_ox & l_oy
        inside = (iy < cmd.h) & (ix < cmd.w)

        issue = Signal()
        m.d.comb += [
            self.act_rd.addr.eq(a_addr),
            self.act_rd.en.eq(issue),
            queue.reserve.eq(issue & wrap_kh),
        ]
        done = Signal()
        m.d.sync += done.eq(0)
        m.d.comb += self.done.eq(done)

        with m.FSM(name="maxpool"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += cmd.eq(self.cmd)
                    m.next = "SETUP"
            with m.State("SETUP"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [row_words.eq(cmd.w * cmd.n_ic),
                             u_icb.eq(cmd.n_ic == 1), u_ox.eq(cmd.wo == 1),
                             nic_m2.eq(cmd.n_ic - 2), wo_m2.eq(cmd.wo - 2),
                             ho_m2.eq(cmd.ho - 2)]
                m.next = "ORIGIN"
            with m.State("ORIGIN"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [
                    l_icb.eq(u_icb), l_ox.eq(u_ox), l_oy.eq(cmd.ho == 1),
                    kw.eq(0), kh.eq(0), icb.eq(0), ox.eq(0), oy.eq(0),
                    ix0.eq(0), iy0.eq(0), ix.eq(0), iy.eq(0),
                    a_addr.eq(0), a_row.eq(0), a_win.eq(0), a_pix.eq(0), a_line.eq(0),
                ]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), issue.eq(queue.can_reserve)]
                with m.If(issue):
                    with m.If(~wrap_kw):
                        m.d.sync += [kw.eq(kw + 1), ix.eq(ix + 1), a_addr.eq(a_addr + cmd.n_ic)]
                    with m.Elif(~wrap_kh):
                        nxt = a_row + row_words
                        m.d.sync += [kw.eq(0), kh.eq(kh + 1), ix.eq(ix0), iy.eq(iy + 1),
                                     a_row.eq(nxt), a_addr.eq(nxt)]
                    with m.Elif(~wrap_icb):
                        nxt = a_win + 1
                        m.d.sync += l_icb.eq(icb == nic_m2)
                        m.d.sync += [kw.eq(0), kh.eq(0), icb.eq(icb + 1), ix.eq(ix0),
                                     iy.eq(iy0), a_win.eq(nxt), a_row.eq(nxt), a_addr.eq(nxt)]
                    with m.Elif(~wrap_ox):
                        nxt = a_pix + (cmd.n_ic << 1)
                        nx = ix0 + self.STRIDE
                        m.d.sync += [l_icb.eq(u_icb), l_ox.eq(ox == wo_m2)]
                        m.d.sync += [kw.eq(0), kh.eq(0), icb.eq(0), ox.eq(ox + 1),
                                     ix0.eq(nx), ix.eq(nx), iy.eq(iy0),
                                     a_pix.eq(nxt), a_win.eq(nxt), a_row.eq(nxt),
                                     a_addr.eq(nxt)]
                    with m.Elif(~wrap_oy):
                        nxt = a_line + (row_words << 1)
                        ny = iy0 + self.STRIDE
                        m.d.sync += [l_icb.eq(u_icb), l_ox.eq(u_ox), l_oy.eq(oy == ho_m2)]
                        m.d.sync += [kw.eq(0), kh.eq(0), icb.eq(0), ox.eq(0), oy.eq(oy + 1),
                                     ix0.eq(0), ix.eq(0), iy0.eq(ny), iy.eq(ny),
                                     a_line.eq(nxt), a_pix.eq(nxt), a_win.eq(nxt),
                                     a_row.eq(nxt), a_addr.eq(nxt)]
                    with m.Else():
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                with m.If(queue.idle):
                    m.d.sync += done.eq(1)
                    m.next = "IDLE"

        # Read stage, then the running max (one register per lane).
        tag = data.StructLayout({"y": unsigned(DIM_BITS), "x": unsigned(DIM_BITS),
                                 "icb": unsigned(WORDS_BITS)})
        s1 = Signal(data.StructLayout({"valid": 1, "first": 1, "last": 1, "inside": 1,
                                       "tag": tag}))
        m.d.sync += [
            s1.valid.eq(issue), s1.first.eq((kw == 0) & (kh == 0)), s1.last.eq(wrap_kh),
            s1.inside.eq(inside), s1.tag.y.eq(oy), s1.tag.x.eq(ox), s1.tag.icb.eq(icb),
        ]
        lowest = -(1 << numeric.ACT_BITS)        # below every uint8 and int8 value
        out_valid = Signal()
        out_tag = Signal(tag)
        m.d.sync += out_valid.eq(s1.valid & s1.last)
        with m.If(s1.valid & s1.last):
            m.d.sync += out_tag.eq(s1.tag)
        for i in range(pi):
            v = Signal(signed(numeric.ACT_BITS + 1), name=f"v{i}")
            mx = Signal(signed(numeric.ACT_BITS + 1), name=f"max{i}", reset_less=True)
            m.d.comb += v.eq(Mux(s1.inside, _lane_value(self.act_rd.data[i], cmd.act_signed),
                                 lowest))
            with m.If(s1.valid):
                m.d.sync += mx.eq(Mux(s1.first | (v > mx), v, mx))
            m.d.comb += queue.w_stream.payload.data[i].eq(mx)
        m.d.comb += [
            queue.w_stream.valid.eq(out_valid),
            queue.w_stream.payload.y.eq(out_tag.y),
            queue.w_stream.payload.x.eq(out_tag.x),
            queue.w_stream.payload.icb.eq(out_tag.icb),
        ]
        wiring.connect(m, queue.o_stream, wiring.flipped(self.o_stream))
        return m


class GapCommand(data.Struct):
    """One global-average-pool pass: input ``h`` x ``w`` (``npix = h*w`` pixels), ``n_ic``
    channel words, requantization ``mult`` / ``shift`` (one pair for the layer, from
    ``numeric.avgpool_multiplier``), ``relu`` (clamp to uint8, else int8), ``act_signed``."""
    h: unsigned(DIM_BITS)
    w: unsigned(DIM_BITS)
    n_ic: unsigned(WORDS_BITS)
    mult: unsigned(numeric.MULT_BITS)
    shift: unsigned(numeric.SHIFT_BITS)
    relu: 1
    act_signed: 1


def gap_output_layout(in_lanes: int) -> data.StructLayout:
    return data.StructLayout({
        "icb": unsigned(WORDS_BITS),
        "data": act_word_layout(in_lanes),
    })


class GlobalAvgPool(wiring.Component):
    """Global average pool: per channel, the integer sum over all H*W pixels, requantized.

    Loop nest: for icb in n_ic: for p in H*W: one word read (address ``p*n_ic + icb``), added
    lane-wise into ``numeric.ACC_BITS``-bit accumulators (exact: 255 * 511 * 511 < 2**31).
    Each finished word of Pi sums is copied to a holding register and requantized one lane per
    cycle through a one-lane :class:`~.requant.Requant` (2 DSP48 instead of 2*Pi: the pool
    runs once per network, ``H*W`` cycles per word, so Pi cycles of requantization cost little)
    with the command's M and shift: ``numeric.requantize(global_sum(x), M, shift, relu)``; the
    bytes are collected into the output word. The last pixel of the next word waits until the
    holding register is free, so words are at least ``Pi + 1`` issue cycles apart.

    Parameters
    ----------
    in_lanes : int
        Pi, bytes per activation word.
    act_depth : int
        Depth of the activation memory.

    Ports
    -----
    cmd : In(GapCommand); start : In(1); busy : Out(1); done : Out(1)
        As :class:`MaxPool`.
    act_rd : In(ReadPort.Signature(act word))
        Synchronous read port of the activation memory.
    o_stream : Out(stream.Signature(gap_output_layout(Pi)))
        One record per channel word icb, in order: Pi 8-bit averages.

    Timing: ``setup_cycles`` + ``H*W + (n_ic - 1) * max(H*W, Pi + 1, 3)`` issue cycles +
    ``latency`` + ``done_delay``.
    """

    SETUP_CYCLES = 2
    DONE_DELAY = 2

    def __init__(self, in_lanes: int, *, act_depth: int):
        self._in_lanes = check_lanes("in_lanes", in_lanes)
        self._act_depth = act_depth
        self._aw = _addr_width(act_depth)
        self._queue_depth = 1 << ceil_log2(self.latency + 4)
        super().__init__({
            "cmd": In(GapCommand),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "act_rd": In(ReadPort.Signature(addr_width=self._aw,
                                            shape=act_word_layout(in_lanes))),
            "o_stream": Out(stream.Signature(gap_output_layout(in_lanes))),
        })

    @property
    def in_lanes(self) -> int:
        return self._in_lanes

    @property
    def act_depth(self) -> int:
        return self._act_depth

    @property
    def latency(self) -> int:
        """Issue of a channel word's last pixel -> ``o_stream.valid``: read, accumulator,
        Pi lanes through the one-lane Requant, the collected word, queue."""
        return 2 + self._in_lanes + 1 + Requant.LATENCY + OutputQueue.LATENCY

    @property
    def setup_cycles(self) -> int:
        return self.SETUP_CYCLES

    @property
    def done_delay(self) -> int:
        return self.DONE_DELAY

    @staticmethod
    def steps(h: int, w: int, n_ic: int) -> int:
        return h * w * n_ic

    def issue_cycles(self, h: int, w: int, n_ic: int) -> int:
        """Cycles of the RUN state: H*W reads per word, a word's last read at least
        ``Pi + 1`` (and 3) cycles after the previous word's (the holding register)."""
        return h * w + (n_ic - 1) * max(h * w, self._in_lanes + 1, 3)

    def pass_cycles(self, h: int, w: int, n_ic: int) -> int:
        """Cycles from ``start`` to ``done`` with ``o_stream`` always ready."""
        return self.setup_cycles + self.issue_cycles(h, w, n_ic) + self.latency + self.done_delay

    def elaborate(self, platform):
        m = Module()
        pi, aw = self._in_lanes, self._aw
        m.submodules.requant = rq = Requant(1, tag_shape=data.StructLayout(
            {"icb": unsigned(WORDS_BITS), "last": 1}))
        m.submodules.queue = queue = OutputQueue(gap_output_layout(pi), self._queue_depth)

        cmd = Signal(GapCommand)
        npix = Signal(2 * DIM_BITS)
        p = Signal(2 * DIM_BITS)
        icb = Signal(WORDS_BITS)
        a_addr, a_ch = Signal(aw), Signal(aw)       # current pixel; pixel 0 of this icb
        # loop-end flags as registers (see MaxPool): l_p: p == npix - 1, l_icb: icb == n_ic - 1
        l_p, l_icb, u_p = Signal(name="l_p"), Signal(name="l_icb"), Signal(name="u_p")
        npix_m2 = Signal(signed(2 * DIM_BITS + 2), name="npix_m2")   # x - 2 as registers
        nic_m2 = Signal(signed(WORDS_BITS + 2), name="nic_m2")
        wrap_p = l_p
        wrap_icb = wrap_p & l_icb

        issue = Signal()
        hold_busy = Signal()                 # the last pixel of a word must wait (see below)
        m.d.comb += [
            self.act_rd.addr.eq(a_addr),
            self.act_rd.en.eq(issue),
            queue.reserve.eq(issue & wrap_p),
        ]
        done = Signal()
        m.d.sync += done.eq(0)
        m.d.comb += self.done.eq(done)

        with m.FSM(name="gap"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += cmd.eq(self.cmd)
                    m.next = "SETUP"
            with m.State("SETUP"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [npix.eq(cmd.h * cmd.w), nic_m2.eq(cmd.n_ic - 2)]
                m.next = "ORIGIN"
            with m.State("ORIGIN"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [p.eq(0), icb.eq(0), a_addr.eq(0), a_ch.eq(0),
                             u_p.eq(npix == 1), l_p.eq(npix == 1), l_icb.eq(cmd.n_ic == 1),
                             npix_m2.eq(npix - 2)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), issue.eq(queue.can_reserve & ~hold_busy)]
                with m.If(issue):
                    with m.If(~wrap_p):
                        m.d.sync += [p.eq(p + 1), a_addr.eq(a_addr + cmd.n_ic),
                                     l_p.eq(p == npix_m2)]
                    with m.Elif(~wrap_icb):
                        m.d.sync += [l_p.eq(u_p), l_icb.eq(icb == nic_m2)]
                        m.d.sync += [p.eq(0), icb.eq(icb + 1), a_ch.eq(a_ch + 1),
                                     a_addr.eq(a_ch + 1)]
                    with m.Else():
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                with m.If(queue.idle):
                    m.d.sync += done.eq(1)
                    m.next = "IDLE"

        # Read stage, then the accumulators.
        s1 = Signal(data.StructLayout({"valid": 1, "first": 1, "last": 1,
                                       "icb": unsigned(WORDS_BITS)}))
        m.d.sync += [s1.valid.eq(issue), s1.first.eq(p == 0), s1.last.eq(wrap_p),
                     s1.icb.eq(icb)]
        sum_valid = Signal()
        sum_icb = Signal(WORDS_BITS)
        m.d.sync += sum_valid.eq(s1.valid & s1.last)
        with m.If(s1.valid & s1.last):
            m.d.sync += sum_icb.eq(s1.icb)
        accs = []
        for i in range(pi):
            acc = Signal(signed(numeric.ACC_BITS), name=f"sum{i}")
            v = _lane_value(self.act_rd.data[i], cmd.act_signed)
            with m.If(s1.valid):
                m.d.sync += acc.eq(Mux(s1.first, 0, acc) + v)
            accs.append(acc)
        # Holding register: the finished word, shifted down one lane per cycle into the
        # one-lane requantizer. A new sum arrives 2 cycles after its last pixel's issue, so
        # that issue waits while more than 2 lanes are left or a sum is on its way.
        hold = Signal(pi * numeric.ACC_BITS)
        left = Signal(range(pi + 1))
        hold_icb = Signal(WORDS_BITS)
        m.d.comb += hold_busy.eq(wrap_p & ((left > 2) | (s1.valid & s1.last) | sum_valid))
        with m.If(sum_valid):
            m.d.sync += [hold.eq(Cat(*accs)), left.eq(pi), hold_icb.eq(sum_icb)]
        with m.Elif(left != 0):
            m.d.sync += [hold.eq(hold >> numeric.ACC_BITS), left.eq(left - 1)]
        word = rq.i_stream.payload
        m.d.comb += [
            rq.i_stream.valid.eq(left != 0),
            word.acc[0].eq(hold[:numeric.ACC_BITS]),
            word.mult[0].eq(cmd.mult),
            word.shift[0].eq(cmd.shift),
            word.relu.eq(cmd.relu),
            word.tag.icb.eq(hold_icb),
            word.tag.last.eq(left == 1),
        ]
        # collect the bytes (lane 0 first, shifted down to the bottom) and push the word
        out = Signal(8 * pi)
        push = Signal()
        push_icb = Signal(WORDS_BITS)
        with m.If(rq.o_stream.valid):
            m.d.sync += out.eq(Cat(out[8:], rq.o_stream.payload.data[0]))
        m.d.sync += [push.eq(rq.o_stream.valid & rq.o_stream.payload.tag.last),
                     push_icb.eq(rq.o_stream.payload.tag.icb)]
        m.d.comb += [
            queue.w_stream.valid.eq(push),
            queue.w_stream.payload.icb.eq(push_icb),
            queue.w_stream.payload.data.eq(out),
        ]
        wiring.connect(m, queue.o_stream, wiring.flipped(self.o_stream))
        return m

"""ConvCore: one convolution pass from on-chip memories, one MAC-array step per cycle.

Loop nest of a pass (outermost first)::

    for oy in Ho: for ox in Wo:                 # output pixels, raster order
        for og in n_og:                          # output-channel groups of Po lanes
            for kh in k: for kw in k:            # kernel taps (og < n_og1: the centre only)
                for icb in n_ic:                 # input-channel words of Pi lanes
                    one MAC step

Each step reads one activation word (address ``(iy*W + ix)*n_ic + icb`` with
``iy = oy*stride - pad + kh``, ``ix = ox*stride - pad + kw``; a tap outside the input is a zero
word, produced here and never read) and one weight word (address
``weight_base + ((og*k + kh)*k + kw)*n_ic + icb``). With ``n_og1 > 0`` (k = 3, pad = 1,
stride 1: a Fire module's two expand convolutions interleaved per pixel) the first ``n_og1``
groups are 1x1 convolutions, computed from the centre tap only, with weight words
``weight_base + og*n_ic + icb``; groups ``og >= n_og1`` are 3x3 with words
``weight_base + n_og1*n_ic + ((og - n_og1)*9 + kh*3 + kw)*n_ic + icb``: weight addresses stay
consecutive. The first step of each output loads the bias
of its ``og`` (parameter word ``param_base + og``), the last emits Po int32 sums into the
requantizer (M and shift of the same word, ReLU per pass), whose uint8/int8 result leaves through
``o_stream``. Addresses are generated incrementally (adders, no multiplier in the loop).

Nothing stalls the datapath: outputs are reserved in an :class:`~.memories.OutputQueue` when
their last step is issued, and issue pauses only when the queue is full (``o_stream`` not
ready for long enough). With ``o_stream.ready`` held high the pass takes exactly
``pass_cycles(...) = setup_cycles + steps + latency + done_delay`` cycles from ``start`` to
``done``, ``steps = Ho*Wo*n_ic*((n_og - n_og1)*k*k + n_og1)``.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from squeezeforge.quant import numeric

from .mac_array import MacArray, mac_latency
from .memories import (OutputQueue, act_word_layout, check_lanes, param_word_layout,
                       weight_word_layout)
from .requant import Requant

__all__ = ["ConvCommand", "ConvPass", "ConvCore", "conv_overhead", "DIM_BITS", "WORDS_BITS", "KERNELS", "STRIDES"]

DIM_BITS = 9            # H, W, Ho, Wo up to 511
WORDS_BITS = 10         # n_ic, n_og up to 1023 words
WEIGHT_BASE_BITS = 20
PARAM_BASE_BITS = 16
KERNELS = (1, 3, 7)
STRIDES = (1, 2)
MAX_PAD = 3


class ConvCommand(data.Struct):
    """Parameters of one convolution pass (sampled when ``start`` is asserted).

    ``h, w``: input size; ``n_ic``: input-channel words, ceil(Cin / Pi); ``k`` in {1, 3, 7};
    ``stride`` in {1, 2}; ``pad`` in 0..3; ``ho, wo``: output size,
    ``(h + 2*pad - k) // stride + 1``; ``n_og``: output-channel groups, ceil(Cout / Po);
    ``weight_base``: weight-memory address of the pass's first word; ``param_base``: address of
    the parameter word of og 0; ``act_signed``: input bytes are int8 (else uint8); ``relu``:
    clamp outputs to uint8 (else int8). Values outside these ranges are not checked by the
    hardware and give undefined results.
    """
    h: unsigned(DIM_BITS)
    w: unsigned(DIM_BITS)
    n_ic: unsigned(WORDS_BITS)
    k: unsigned(3)
    stride: unsigned(2)
    pad: unsigned(2)
    ho: unsigned(DIM_BITS)
    wo: unsigned(DIM_BITS)
    n_og: unsigned(WORDS_BITS)
    weight_base: unsigned(WEIGHT_BASE_BITS)
    param_base: unsigned(PARAM_BASE_BITS)
    act_signed: 1
    relu: 1


#: What :class:`ConvCore` runs: the fields of :class:`ConvCommand` (same offsets) and
#: ``n_og1``, the leading output groups that are 1x1 convolutions computed from the centre tap
#: (0 for an ordinary pass; only with k = 3, pad = 1, stride = 1 and ``n_og1 <= n_og``). The
#: engine sets it for a Fire module's EXPAND, never the host.
ConvPass = data.StructLayout({**{name: f.shape for name, f in data.Layout.cast(ConvCommand)},
                              "n_og1": unsigned(WORDS_BITS)})


def conv_output_layout(out_lanes: int) -> data.StructLayout:
    """One output record: pixel (y, x), channel group og, Po 8-bit lanes (channel og*Po + o)."""
    return data.StructLayout({
        "y": unsigned(DIM_BITS),
        "x": unsigned(DIM_BITS),
        "og": unsigned(WORDS_BITS),
        "data": data.ArrayLayout(unsigned(numeric.ACT_BITS), out_lanes),
    })


def _addr_width(name: str, depth) -> int:
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 2:
        raise ValueError(f"{name} must be an integer of at least 2, not {depth!r}")
    return ceil_log2(depth)


def conv_overhead(in_lanes: int, dsp_packing: bool = True) -> int:
    """:meth:`ConvCore.pass_cycles` minus the steps (setup, last step's latency, done delay)
    without building a core: the cycle model's per-pass constant."""
    return (ConvCore.SETUP_CYCLES + 1 + mac_latency(in_lanes, dsp_packing) + Requant.LATENCY
            + OutputQueue.LATENCY + ConvCore.DONE_DELAY)


class ConvCore(wiring.Component):
    """Convolution pass engine: address generator, MacArray, Requant and output queue.

    Parameters
    ----------
    in_lanes, out_lanes, dsp_packing :
        The MAC array (see :class:`~.mac_array.MacArray`).
    act_depth, weight_depth, param_depth : int
        Depths (words) of the memories behind the three read ports.

    Ports
    -----
    cmd : In(ConvPass)
        Pass parameters, sampled in the cycle ``start`` is high while idle.
    start : In(1)
        Begin a pass (ignored while ``busy``).
    busy : Out(1)
        A pass is running (from the cycle after ``start`` until ``done``).
    done : Out(1)
        One-cycle pulse: the last output of the pass has been accepted on ``o_stream``.
    act_rd : In(ReadPort.Signature(act word))
        Synchronous (1-cycle) read port of the activation memory; transparency is irrelevant
        because the pass never writes what it reads.
    wgt_rd : In(ReadPort.Signature(weight word))
        Synchronous read port of the weight memory.
    bias_rd, scale_rd : In(ReadPort.Signature(param word))
        Two synchronous read ports of the parameter memory: ``bias_rd`` is read with the first
        step of an output (bias), ``scale_rd`` as its sum leaves the MAC array (M and shift).
    o_stream : Out(stream.Signature(conv_output_layout(Po)))
        Outputs in loop order: for each pixel (y, x), og = 0 .. n_og-1. Lanes past Cout carry
        whatever zero weights and zero parameters give.

    Timing
    ------
    ``setup_cycles`` after ``start`` the first step is issued; then one step per cycle while
    the output queue has room; the last output reaches ``o_stream`` ``latency`` cycles after
    its last step is issued; ``done`` follows ``done_delay`` cycles after that output is
    accepted.
    """

    SETUP_CYCLES = 2        # cycle 1: W*n_ic; cycle 2: strides and origin
    DONE_DELAY = 2          # accept -> credits back to zero -> done register

    def __init__(self, in_lanes: int, out_lanes: int, *, act_depth: int, weight_depth: int,
                 param_depth: int, dsp_packing: bool = True):
        self._mac_args = (check_lanes("in_lanes", in_lanes), check_lanes("out_lanes", out_lanes),
                          dsp_packing)
        self._mac = MacArray(*self._mac_args)        # checks dsp_packing against out_lanes
        self._act_aw = _addr_width("act_depth", act_depth)
        self._wgt_aw = _addr_width("weight_depth", weight_depth)
        self._par_aw = _addr_width("param_depth", param_depth)
        if self._wgt_aw > WEIGHT_BASE_BITS:
            raise ValueError(f"weight_depth must be at most {2 ** WEIGHT_BASE_BITS}, "
                             f"not {weight_depth}")
        if self._par_aw > PARAM_BASE_BITS:
            raise ValueError(f"param_depth must be at most {2 ** PARAM_BASE_BITS}, "
                             f"not {param_depth}")
        self._depths = (act_depth, weight_depth, param_depth)
        self._queue_depth = 1 << ceil_log2(self.latency + 4)
        super().__init__({
            "cmd": In(ConvPass),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "act_rd": In(ReadPort.Signature(addr_width=self._act_aw,
                                            shape=act_word_layout(in_lanes))),
            "wgt_rd": In(ReadPort.Signature(addr_width=self._wgt_aw,
                                            shape=weight_word_layout(in_lanes, out_lanes))),
            "bias_rd": In(ReadPort.Signature(addr_width=self._par_aw,
                                             shape=param_word_layout(out_lanes))),
            "scale_rd": In(ReadPort.Signature(addr_width=self._par_aw,
                                              shape=param_word_layout(out_lanes))),
            "o_stream": Out(stream.Signature(conv_output_layout(out_lanes))),
        })

    # -- read-only parameters and derived facts --------------------------------------------
    @property
    def in_lanes(self) -> int:
        return self._mac_args[0]

    @property
    def out_lanes(self) -> int:
        return self._mac_args[1]

    @property
    def dsp_packing(self) -> bool:
        return self._mac_args[2]

    @property
    def act_depth(self) -> int:
        return self._depths[0]

    @property
    def weight_depth(self) -> int:
        return self._depths[1]

    @property
    def param_depth(self) -> int:
        return self._depths[2]

    @property
    def mac_latency(self) -> int:
        return self._mac.latency

    @property
    def latency(self) -> int:
        """Cycles from issuing a step with ``last`` to its output's ``o_stream.valid``:
        memory read (1) + MacArray + Requant + output queue."""
        return 1 + self.mac_latency + Requant.LATENCY + OutputQueue.LATENCY

    @property
    def setup_cycles(self) -> int:
        return self.SETUP_CYCLES

    @property
    def done_delay(self) -> int:
        """Cycles from the last output's acceptance to ``done``."""
        return self.DONE_DELAY

    @property
    def queue_depth(self) -> int:
        return self._queue_depth

    @staticmethod
    def steps(ho: int, wo: int, n_og: int, k: int, n_ic: int, n_og1: int = 0) -> int:
        """MAC steps (cycles of issue) of a pass (``n_og1``: leading 1x1 groups)."""
        return ho * wo * n_ic * ((n_og - n_og1) * k * k + n_og1)

    def pass_cycles(self, ho: int, wo: int, n_og: int, k: int, n_ic: int,
                    n_og1: int = 0) -> int:
        """Cycles from the cycle ``start`` is asserted to the cycle ``done`` is high, when
        ``o_stream`` is always ready: setup, one cycle per step, then the last step's
        ``latency`` and ``done_delay``."""
        return (self.setup_cycles + self.steps(ho, wo, n_og, k, n_ic, n_og1) + self.latency
                + self.done_delay)

    # -- hardware ---------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        pi, po, packing = self._mac_args
        m.submodules.mac = mac = self._mac
        tag = data.StructLayout({"y": unsigned(DIM_BITS), "x": unsigned(DIM_BITS),
                                 "og": unsigned(WORDS_BITS)})
        m.submodules.requant = rq = Requant(po, tag_shape=tag)
        out_layout = conv_output_layout(po)
        m.submodules.queue = queue = OutputQueue(out_layout, self._queue_depth)

        cmd = Signal(ConvPass)
        aw = self._act_aw
        row_words = Signal(aw)        # W * n_ic
        col_step = Signal(aw)         # stride * n_ic
        line_step = Signal(aw)        # stride * W * n_ic
        ctr_step = Signal(aw)         # W * n_ic + n_ic: pixel origin -> centre tap of a 3x3
        coord = signed(DIM_BITS + 2)

        # Loop counters of the step being issued.
        icb = Signal(WORDS_BITS)
        kw = Signal(3)
        kh = Signal(3)
        og = Signal(WORDS_BITS)
        ox = Signal(DIM_BITS)
        oy = Signal(DIM_BITS)
        ix0, iy0 = Signal(coord), Signal(coord)   # window origin of (oy, ox)
        ix, iy = Signal(coord), Signal(coord)     # current tap
        # Activation addresses, modulo 2**aw (taps outside the input are never read, so the
        # wrap-around of intermediate values is harmless): current step, tap (icb = 0),
        # kernel row (kw = 0), pixel (kh = kw = 0), output row (ox = 0).
        a_addr, a_tap, a_row, a_pix, a_line = (Signal(aw, name=n) for n in
                                               ("a_addr", "a_tap", "a_row", "a_pix", "a_line"))
        w_addr = Signal(WEIGHT_BASE_BITS)

        # 1x1 groups of an interleaved pass: one tap (the centre), kh = kw = 0 in the counters
        # Loop-end flags are registers, updated with their counters (``l_x``: x is at its last
        # value), so the wrap chain below is a few gates instead of a chain of comparators:
        # the issue logic is the engine's critical path. ``u_x``: x's limit is 1 (the value a
        # flag takes when x restarts at 0); ``p_x``: x is at its penultimate value (the value
        # the flag takes when x counts up).
        l_icb, l_kw, l_kh, l_og, l_ox, l_oy = (Signal(name=f"l_{n}") for n in
                                               ("icb", "kw", "kh", "og", "ox", "oy"))
        u_icb, u_k, u_og, u_ox = (Signal(name=f"u_{n}") for n in ("icb", "k", "og", "ox"))
        one_tap = Signal()                       # og < n_og1: a 1x1 group of an interleaved pass
        next_one_tap = Signal()                  # og + 1 < n_og1: the next group (same pixel)
        starts_one_tap = Signal()                # n_og1 != 0: group 0 of a pixel
        second_one_tap = Signal()                # n_og1 > 1: group 1 of a pixel
        # the penultimate values are registers (set in SETUP): ``x == limit - 2`` with the
        # subtraction in the path maps to a borrow chain of LUTs in front of the flag
        m2 = {n: Signal(signed(len(getattr(cmd, n)) + 2), name=f"{n}_m2")
              for n in ("n_ic", "k", "n_og", "wo", "ho")}
        p_icb = icb == m2["n_ic"]
        p_kw = kw == m2["k"]
        p_kh = kh == m2["k"]
        p_og = og == m2["n_og"]
        p_ox = ox == m2["wo"]
        p_oy = oy == m2["ho"]
        wrap_icb = l_icb
        wrap_kw = wrap_icb & (one_tap | l_kw)
        wrap_kh = wrap_kw & (one_tap | l_kh)
        wrap_og = wrap_kh & l_og
        wrap_ox = wrap_og & l_ox
        wrap_oy = wrap_ox & l_oy
        # flag updates when the inner counters restart at 0 (a new tap row / group / pixel)
        restart_icb = [l_icb.eq(u_icb)]
        restart_kw = restart_icb + [l_kw.eq(u_k)]
        restart_kh = restart_kw + [l_kh.eq(u_k)]
        restart_og = restart_kh + [l_og.eq(u_og), one_tap.eq(starts_one_tap),
                                   next_one_tap.eq(second_one_tap)]
        stride2 = cmd.stride[1]
        inside = (iy >= 0) & (iy < cmd.h) & (ix >= 0) & (ix < cmd.w)
        first = (icb == 0) & (kw == 0) & (kh == 0)

        issue = Signal()
        m.d.comb += [
            self.act_rd.addr.eq(a_addr),
            self.act_rd.en.eq(issue),
            self.wgt_rd.addr.eq(w_addr),
            self.wgt_rd.en.eq(issue),
            self.bias_rd.addr.eq(cmd.param_base + og),
            self.bias_rd.en.eq(issue),
            queue.reserve.eq(issue & wrap_kh),
        ]

        done = Signal()
        m.d.sync += done.eq(0)
        m.d.comb += self.done.eq(done)

        with m.FSM(name="conv"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += cmd.eq(self.cmd)
                    m.next = "SETUP"
            with m.State("SETUP"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [
                    row_words.eq(cmd.w * cmd.n_ic),
                    col_step.eq(cmd.n_ic << stride2),
                    u_icb.eq(cmd.n_ic == 1), u_k.eq(cmd.k == 1), u_og.eq(cmd.n_og == 1),
                    u_ox.eq(cmd.wo == 1),
                    starts_one_tap.eq(cmd.n_og1 != 0), second_one_tap.eq(cmd.n_og1 > 1),
                    *(r.eq(getattr(cmd, n) - 2) for n, r in m2.items()),
                ]
                m.next = "ORIGIN"
            with m.State("ORIGIN"):
                m.d.comb += self.busy.eq(1)
                origin = Signal(aw)
                m.d.comb += origin.eq(-(cmd.pad * (row_words + cmd.n_ic)))
                m.d.sync += [
                    line_step.eq(row_words << stride2),
                    ctr_step.eq(row_words + cmd.n_ic),
                    icb.eq(0), kw.eq(0), kh.eq(0), og.eq(0), ox.eq(0), oy.eq(0),
                    ix0.eq(-cmd.pad), iy0.eq(-cmd.pad),
                    ix.eq(-cmd.pad + starts_one_tap), iy.eq(-cmd.pad + starts_one_tap),
                    a_addr.eq(origin + Mux(starts_one_tap, row_words + cmd.n_ic, 0)),
                    a_tap.eq(origin), a_row.eq(origin), a_pix.eq(origin),
                    a_line.eq(origin),
                    w_addr.eq(cmd.weight_base),
                    *restart_og, l_ox.eq(u_ox), l_oy.eq(cmd.ho == 1),
                ]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), issue.eq(queue.can_reserve)]
                with m.If(issue):
                    m.d.sync += w_addr.eq(Mux(wrap_og, cmd.weight_base, w_addr + 1))
                    with m.If(~wrap_icb):
                        m.d.sync += [icb.eq(icb + 1), a_addr.eq(a_addr + 1), l_icb.eq(p_icb)]
                    with m.Elif(~wrap_kw):
                        nxt = a_tap + cmd.n_ic
                        m.d.sync += [icb.eq(0), kw.eq(kw + 1), ix.eq(ix + 1),
                                     a_tap.eq(nxt), a_addr.eq(nxt), *restart_icb,
                                     l_kw.eq(p_kw)]
                    with m.Elif(~wrap_kh):
                        nxt = a_row + row_words
                        m.d.sync += [icb.eq(0), kw.eq(0), kh.eq(kh + 1), ix.eq(ix0),
                                     iy.eq(iy + 1),
                                     a_row.eq(nxt), a_tap.eq(nxt), a_addr.eq(nxt),
                                     *restart_kw, l_kh.eq(p_kh)]
                    with m.Elif(~wrap_og):
                        # a 1x1 group starts at the centre tap, a kxk group at its corner
                        m.d.sync += [*restart_kh, l_og.eq(p_og), one_tap.eq(next_one_tap),
                                     next_one_tap.eq(og + 2 < cmd.n_og1)]
                        m.d.sync += [icb.eq(0), kw.eq(0), kh.eq(0), og.eq(og + 1),
                                     ix.eq(ix0 + next_one_tap), iy.eq(iy0 + next_one_tap),
                                     a_row.eq(a_pix), a_tap.eq(a_pix),
                                     a_addr.eq(a_pix + Mux(next_one_tap, ctr_step, 0))]
                    with m.Elif(~wrap_ox):
                        nxt = a_pix + col_step
                        nx = ix0 + cmd.stride
                        m.d.sync += [*restart_og, l_ox.eq(p_ox)]
                        m.d.sync += [icb.eq(0), kw.eq(0), kh.eq(0), og.eq(0), ox.eq(ox + 1),
                                     ix0.eq(nx), ix.eq(nx + starts_one_tap),
                                     iy.eq(iy0 + starts_one_tap),
                                     a_pix.eq(nxt), a_row.eq(nxt), a_tap.eq(nxt),
                                     a_addr.eq(nxt + Mux(starts_one_tap, ctr_step, 0))]
                    with m.Elif(~wrap_oy):
                        nxt = a_line + line_step
                        ny = iy0 + cmd.stride
                        m.d.sync += [*restart_og, l_ox.eq(u_ox), l_oy.eq(p_oy)]
                        m.d.sync += [icb.eq(0), kw.eq(0), kh.eq(0), og.eq(0), ox.eq(0),
                                     oy.eq(oy + 1),
                                     iy0.eq(ny), iy.eq(ny + starts_one_tap), ix0.eq(-cmd.pad),
                                     ix.eq(-cmd.pad + starts_one_tap),
                                     a_line.eq(nxt), a_pix.eq(nxt), a_row.eq(nxt),
                                     a_tap.eq(nxt),
                                     a_addr.eq(nxt + Mux(starts_one_tap, ctr_step, 0))]
                    with m.Else():
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                with m.If(queue.idle):
                    m.d.sync += done.eq(1)
                    m.next = "IDLE"

        # Memory-read stage: the step's control travels beside the 1-cycle reads.
        s1 = Signal(data.StructLayout({"valid": 1, "first": 1, "last": 1, "inside": 1,
                                       "tag": tag}))
        m.d.sync += [
            s1.valid.eq(issue), s1.first.eq(first), s1.last.eq(wrap_kh), s1.inside.eq(inside),
            s1.tag.y.eq(oy), s1.tag.x.eq(ox), s1.tag.og.eq(og),
        ]
        step = mac.i_stream.payload
        m.d.comb += [
            mac.i_stream.valid.eq(s1.valid),
            step.act.eq(Mux(s1.inside, self.act_rd.data, 0)),
            step.act_signed.eq(cmd.act_signed),
            step.weight.eq(self.wgt_rd.data),
            step.first.eq(s1.first),
            step.last.eq(s1.last),
        ]
        for o in range(po):
            m.d.comb += step.bias[o].eq(self.bias_rd.data[o].bias)

        # The output tag follows the MAC array's pipeline; the scale read is issued one cycle
        # ahead so M and shift arrive with the sum.
        tags = [s1.tag]
        for n in range(1, mac.latency + 1):
            t = Signal(tag, name=f"tag_d{n}")
            m.d.sync += t.eq(tags[-1])
            tags.append(t)
        m.d.comb += [
            self.scale_rd.addr.eq(cmd.param_base + tags[mac.latency - 1].og),
            self.scale_rd.en.eq(1),
        ]
        word = rq.i_stream.payload
        m.d.comb += [
            rq.i_stream.valid.eq(mac.o_stream.valid),
            word.acc.eq(mac.o_stream.payload),
            word.relu.eq(cmd.relu),
            word.tag.eq(tags[mac.latency]),
        ]
        for o in range(po):
            m.d.comb += [word.mult[o].eq(self.scale_rd.data[o].mult),
                         word.shift[o].eq(self.scale_rd.data[o].shift)]

        res = rq.o_stream.payload
        m.d.comb += [
            queue.w_stream.valid.eq(rq.o_stream.valid),
            queue.w_stream.payload.y.eq(res.tag.y),
            queue.w_stream.payload.x.eq(res.tag.x),
            queue.w_stream.payload.og.eq(res.tag.og),
            queue.w_stream.payload.data.eq(res.data),
        ]
        wiring.connect(m, queue.o_stream, wiring.flipped(self.o_stream))
        return m

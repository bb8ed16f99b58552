"""Word layouts of the engine's on-chip memories, and the credit-based output queue.

The compute blocks (:mod:`.conv`, :mod:`.pool`) read three kinds of memory through
``lib.memory.ReadPort.Signature`` interfaces; the layouts below fix what one word holds, so that
the packer (``quant/pack.py``), the memory images and the RTL agree. All layouts are little-endian
in the sense of Amaranth's ``data.ArrayLayout``: element 0 occupies the lowest bits.

* Activation word (:func:`act_word_layout`): ``in_lanes`` (Pi) bytes, byte i = channel
  ``icb*Pi + i`` of one pixel; word address ``(y*W + x)*n_ic + icb``; lanes past the channel count
  hold zero. A byte is uint8, or int8 when the pass is flagged ``act_signed``.
* Weight word (:func:`weight_word_layout`): ``out_lanes`` (Po) banks of Pi int8; byte i of bank o
  is ``W[og*Po + o, icb*Pi + i, kh, kw]``; words of a layer in order
  ``((og*k + kh)*k + kw)*n_ic + icb`` from the layer's weight base; zero past the channel counts.
* Parameter word (:func:`param_word_layout`): Po lanes of :class:`ParamLane` (int32 bias in the
  accumulator's scale, unsigned ``numeric.MULT_BITS`` multiplier M, ``numeric.SHIFT_BITS`` shift),
  one word per output-channel group ``og`` at ``param_base + og``.
"""

from amaranth.hdl import Module, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from squeezeforge.quant import numeric

__all__ = ["act_word_layout", "weight_word_layout", "ParamLane", "param_word_layout",
           "OutputQueue", "check_lanes"]


def check_lanes(name: str, value) -> int:
    """Check a lane count (a positive integer) and return it; raise with a one-line message."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


def act_word_layout(in_lanes: int) -> data.ArrayLayout:
    """One activation word: ``in_lanes`` 8-bit lanes (uint8, or int8 for a signed pass)."""
    return data.ArrayLayout(unsigned(numeric.ACT_BITS), check_lanes("in_lanes", in_lanes))


def weight_word_layout(in_lanes: int, out_lanes: int) -> data.ArrayLayout:
    """One weight word: ``out_lanes`` banks of ``in_lanes`` int8 weights (bank o = output lane o)."""
    return data.ArrayLayout(
        data.ArrayLayout(signed(numeric.WEIGHT_BITS), check_lanes("in_lanes", in_lanes)),
        check_lanes("out_lanes", out_lanes))


class ParamLane(data.Struct):
    """Per-output-channel parameters: bias (int32, accumulator scale), multiplier M, shift."""
    bias: signed(numeric.ACC_BITS)
    mult: unsigned(numeric.MULT_BITS)
    shift: unsigned(numeric.SHIFT_BITS)


def param_word_layout(out_lanes: int) -> data.ArrayLayout:
    """One parameter word: ``out_lanes`` :class:`ParamLane` entries (lane o = channel og*Po + o)."""
    return data.ArrayLayout(ParamLane, check_lanes("out_lanes", out_lanes))


class OutputQueue(wiring.Component):
    """Output FIFO of a free-running pipeline, with credits so the pipeline never has to stall.

    A compute block reserves one credit (``reserve``) in the cycle it issues work that will
    produce one output some fixed number of cycles later, and only while ``can_reserve`` is high.
    Since at most ``depth`` outputs are ever reserved and not yet read out, the FIFO always has
    room: ``w_stream`` is always ready and its pipeline needs no clock enables. In steady state
    with ``o_stream.ready`` high the queue never blocks if ``depth`` exceeds the pipeline's
    issue-to-read-out latency plus one.

    Ports
    -----
    reserve : In(1)
        An output is issued this cycle (must only be asserted with ``can_reserve``).
    can_reserve : Out(1)
        Fewer than ``depth`` outputs are reserved and not yet read out (a function of state only).
    idle : Out(1)
        No output is reserved: everything issued has left through ``o_stream``.
    w_stream : In(stream.Signature(shape, always_ready=True))
        Outputs from the pipeline; at most as many as were reserved.
    o_stream : Out(stream.Signature(shape))
        Outputs in order; ``latency`` (2) cycles after their write at the earliest.
    """

    LATENCY = 2     # SyncFIFOBuffered: memory write, then its output register

    def __init__(self, shape, depth: int):
        # SyncFIFOBuffered of depth 2 can refuse a write while holding one entry; from 3 up
        # it accepts whenever fewer than `depth` entries are held, which the credits guarantee.
        if not isinstance(depth, int) or depth < 3:
            raise ValueError(f"output queue depth must be an integer of at least 3, not {depth!r}")
        Shape.cast(shape)
        self._shape = shape
        self._depth = depth
        super().__init__({
            "reserve": In(1),
            "can_reserve": Out(1),
            "idle": Out(1),
            "w_stream": In(stream.Signature(shape, always_ready=True)),
            "o_stream": Out(stream.Signature(shape)),
        })

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def latency(self) -> int:
        """Cycles from a write into an empty queue to ``o_stream.valid``."""
        return self.LATENCY

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(self._shape).width
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=width, depth=self._depth)
        m.d.comb += [
            fifo.w_data.eq(self.w_stream.payload.as_value()),
            fifo.w_en.eq(self.w_stream.valid),
            self.o_stream.payload.eq(fifo.r_data),
            self.o_stream.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o_stream.ready),
        ]
        pop = self.o_stream.valid & self.o_stream.ready
        credits = Signal(range(self._depth + 1))       # reserved and not yet read out
        m.d.sync += credits.eq(credits + self.reserve - pop)
        m.d.comb += [
            self.can_reserve.eq(credits < self._depth),
            self.idle.eq(credits == 0),
        ]
        return m

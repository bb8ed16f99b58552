"""Requantization: int32 accumulators to 8-bit activations, exactly as ``numeric.requantize``.

    y = (acc * M + 2**(shift - 1)) >> shift     # arithmetic shift: round half toward +inf
    y = clamp(y, 0, 255) with ReLU, else clamp(y, -128, 127)

``acc`` is int32 (``numeric.ACC_BITS``), ``M`` unsigned ``numeric.MULT_BITS`` bits, ``shift`` in
[1, ``numeric.MAX_SHIFT``] (``numeric.SHIFT_BITS`` bits; shift = 0 gives plain ``acc * M``, and
shifts above MAX_SHIFT are outside the spec but still computed as written above).
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from squeezeforge.quant import numeric

from .memories import check_lanes

__all__ = ["Requant"]

PRODUCT_BITS = numeric.ACC_BITS + numeric.MULT_BITS + 1     # signed x unsigned -> 49 bits
ROUNDED_BITS = PRODUCT_BITS + 1


class Requant(wiring.Component):
    """Pipelined requantizer for ``lanes`` accumulators, with an opaque tag carried alongside.

    Parameters
    ----------
    lanes : int
        Accumulators per word.
    tag_shape : shape-like, optional
        Shape of a value that travels with each word, unchanged (e.g. the output pixel index).

    Ports
    -----
    i_stream : In(stream.Signature(in_layout, always_ready=True))
        ``acc`` (lanes x int32), ``mult`` (lanes x uint16), ``shift`` (lanes x uint6), ``relu``
        (1: clamp to uint8 [0, 255]; 0: clamp to int8 [-128, 127]), ``tag``. One word per cycle.
    o_stream : Out(stream.Signature(out_layout, always_ready=True))
        ``data`` (lanes x 8 bits: uint8 with ReLU, two's complement int8 without), ``tag``;
        ``valid`` exactly ``latency`` cycles after the input word. The consumer must take it.

    Pipeline (``latency = 5``): input registers, 32x16 product register (two DSP48E1),
    rounding adder, barrel shifter, clamp.
    """

    LATENCY = 5

    def __init__(self, lanes: int, tag_shape=0):
        self._lanes = check_lanes("lanes", lanes)
        self._tag_shape = tag_shape
        super().__init__({
            "i_stream": In(stream.Signature(self.in_layout, always_ready=True)),
            "o_stream": Out(stream.Signature(self.out_layout, always_ready=True)),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def latency(self) -> int:
        """Cycles from an input word to its ``o_stream.valid``."""
        return self.LATENCY

    @property
    def in_layout(self) -> data.StructLayout:
        n = self._lanes
        return data.StructLayout({
            "acc": data.ArrayLayout(signed(numeric.ACC_BITS), n),
            "mult": data.ArrayLayout(unsigned(numeric.MULT_BITS), n),
            "shift": data.ArrayLayout(unsigned(numeric.SHIFT_BITS), n),
            "relu": 1,
            "tag": self._tag_shape,
        })

    @property
    def out_layout(self) -> data.StructLayout:
        return data.StructLayout({
            "data": data.ArrayLayout(unsigned(numeric.ACT_BITS), self._lanes),
            "tag": self._tag_shape,
        })

    def elaborate(self, platform):
        m = Module()
        n = self._lanes
        word = self.i_stream.payload

        def side(sig, name, reset_less=True):
            r = Signal.like(sig, name=name, reset_less=reset_less)
            m.d.sync += r.eq(sig)
            return r

        valid, relu, tag = self.i_stream.valid, word.relu, word.tag
        for stage in range(1, self.LATENCY + 1):
            valid = side(valid, f"s{stage}_valid", reset_less=False)
            if stage < self.LATENCY:                  # relu is used in the last stage
                relu = side(relu, f"s{stage}_relu")
            tag = side(tag, f"s{stage}_tag")

        for o in range(n):
            # Stage 1: input registers.
            acc = side(word.acc[o], f"acc{o}")
            mult = side(word.mult[o], f"mult{o}")
            shift = side(word.shift[o], f"shift{o}")
            # Stage 2: product.
            prod = Signal(signed(PRODUCT_BITS), name=f"prod{o}", reset_less=True)
            m.d.sync += prod.eq(acc * mult)
            shift2 = side(shift, f"shift{o}_s2")
            # Stage 3: add half an LSB of the result: 2**(shift-1), or 0 when shift is 0.
            rounded = Signal(signed(ROUNDED_BITS), name=f"rounded{o}", reset_less=True)
            m.d.sync += rounded.eq(prod + ((1 << shift2) >> 1))
            shift3 = side(shift2, f"shift{o}_s3")
            # Stage 4: arithmetic shift right.
            shifted = Signal(signed(ROUNDED_BITS), name=f"shifted{o}", reset_less=True)
            m.d.sync += shifted.eq(rounded >> shift3)
            # Stage 5: clamp to uint8 (ReLU) or int8.
            lo = Mux(relu, 0, numeric.INT8_MIN)
            hi = Mux(relu, numeric.UINT8_MAX, numeric.INT8_MAX)
            y = Signal(unsigned(numeric.ACT_BITS), name=f"y{o}", reset_less=True)
            with m.If(shifted < lo):
                m.d.sync += y.eq(lo)
            with m.Elif(shifted > hi):
                m.d.sync += y.eq(hi)
            with m.Else():
                m.d.sync += y.eq(shifted)
            m.d.comb += self.o_stream.payload.data[o].eq(y)

        m.d.comb += [
            self.o_stream.valid.eq(valid),
            self.o_stream.payload.tag.eq(tag),
        ]
        return m

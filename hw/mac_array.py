"""The MAC array: Po output lanes x Pi input lanes of 8-bit products, accumulated in int32.

Numeric format (``quant/numeric.py``): activations uint8, or int8 when ``act_signed`` (both are
extended to 9-bit signed), weights int8 in [-WEIGHT_MAX, WEIGHT_MAX], 17-bit products, int32
(``numeric.ACC_BITS``) accumulation that wraps modulo 2**32 like a DSP48 would; the numeric spec
bounds every SqueezeNet sum inside int32 (``numeric.acc_bound``), so no wrap happens in use.

DSP packing (``dsp_packing=True``): output lanes 2j and 2j+1 share each activation, so one
multiplier computes ``P = a * ((w[2j+1] << 17) + w[2j])`` (9-bit x 25-bit signed: one DSP48E1).
Then ``lo = signext(P[0:17]) = a*w[2j]`` exactly (|a*w| <= 255*127 < 2**16) and
``hi = (P - lo) >> 17 = (P >> 17) + P[16] = a*w[2j+1]`` exactly. The ``+ P[16]`` correction is
not applied per product: lane 2j+1's adder tree sums the Pi values ``P_i >> 17`` and, beside
them, the Pi bits ``P_i[16]`` (a popcount), which meet in one extra adder level at the root.
So the decode costs no wide adder per product, only one tree level. The packed multiplicand
needs no 25-bit adder either: ``(w_hi << 17) + w_lo`` is ``w_hi - sign(w_lo)`` (8 bits)
concatenated above ``w_lo`` sign-extended to 17 bits.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from squeezeforge.quant import numeric

from .memories import act_word_layout, check_lanes, weight_word_layout

__all__ = ["MacArray"]

PRODUCT_BITS = 2 * numeric.ACT_BITS + 1      # 9-bit signed x 8-bit signed -> 17 bits
PACK_SHIFT = 17                              # lane spacing inside one packed product
ADD_LEVELS_PER_STAGE = 2                     # adder levels between pipeline registers


def adder_levels(in_lanes: int, dsp_packing: bool = True) -> int:
    """Adder levels of a :class:`MacArray` with ``in_lanes`` (see its property)."""
    return ceil_log2(in_lanes * (2 if dsp_packing else 1)) + 1


def mac_latency(in_lanes: int, dsp_packing: bool = True) -> int:
    """:attr:`MacArray.latency` without building one (for the cycle model)."""
    return 2 + -(-adder_levels(in_lanes, dsp_packing) // ADD_LEVELS_PER_STAGE)


class MacArray(wiring.Component):
    """Po x Pi multiply-accumulate array with a fixed-latency, bubble-free pipeline.

    Parameters
    ----------
    in_lanes : int
        Pi, activations (input channels) consumed per step.
    out_lanes : int
        Po, output channels computed per step (even when ``dsp_packing``).
    dsp_packing : bool
        Compute two output lanes per multiplier (see the module docstring).

    Ports
    -----
    i_stream : In(stream.Signature(step_layout, always_ready=True))
        One MAC step per cycle while ``valid``: ``act`` (Pi bytes), ``act_signed`` (bytes are int8
        instead of uint8), ``weight`` (Po banks of Pi int8; bank o feeds output lane o), ``first``
        (this step starts an accumulation: the accumulator is loaded with ``bias`` plus the step's
        products instead of adding to its old value), ``last`` (this step completes it),
        ``bias`` (Po x int32, sampled only with ``first``). Steps of one accumulation need not be
        consecutive cycles; accumulations may follow each other with no gap, down to one step
        (``first`` and ``last`` together) per cycle.
    o_stream : Out(stream.Signature(ArrayLayout(signed(32), Po), always_ready=True))
        ``valid`` for one cycle exactly ``latency`` cycles after the step with ``last`` was
        presented; ``payload[o] = bias[o] + sum over steps and i of act[i] * weight[o][i]``.
        The consumer must take it in that cycle.

    Pipeline
    --------
    input registers (multiplier inputs), product registers (multiplier outputs; with the input
    registers one multiplier maps to one DSP48E1), then the adder tree and the accumulator adder:
    ``adder_levels = dsp_packing + ceil_log2(Pi) + 1`` levels, registered every
    ``ADD_LEVELS_PER_STAGE`` levels counted back from the accumulator register.
    ``latency = 2 + ceil(adder_levels / 2)``; throughput one step per cycle.
    """

    def __init__(self, in_lanes: int, out_lanes: int, dsp_packing: bool = True):
        self._in_lanes = check_lanes("in_lanes", in_lanes)
        self._out_lanes = check_lanes("out_lanes", out_lanes)
        if not isinstance(dsp_packing, bool):
            raise TypeError(f"dsp_packing must be a bool, not {dsp_packing!r}")
        if dsp_packing and out_lanes % 2:
            raise ValueError(f"out_lanes must be even with dsp_packing, not {out_lanes}")
        self._dsp_packing = dsp_packing
        super().__init__({
            "i_stream": In(stream.Signature(self.step_layout, always_ready=True)),
            "o_stream": Out(stream.Signature(self.sum_layout, always_ready=True)),
        })

    # -- read-only parameters and derived facts --------------------------------------------
    @property
    def in_lanes(self) -> int:
        return self._in_lanes

    @property
    def out_lanes(self) -> int:
        return self._out_lanes

    @property
    def dsp_packing(self) -> bool:
        return self._dsp_packing

    @property
    def step_layout(self) -> data.StructLayout:
        return data.StructLayout({
            "act": act_word_layout(self._in_lanes),
            "act_signed": 1,
            "weight": weight_word_layout(self._in_lanes, self._out_lanes),
            "bias": data.ArrayLayout(signed(numeric.ACC_BITS), self._out_lanes),
            "first": 1,
            "last": 1,
        })

    @property
    def sum_layout(self) -> data.ArrayLayout:
        return data.ArrayLayout(signed(numeric.ACC_BITS), self._out_lanes)

    @property
    def multipliers(self) -> int:
        """Hardware multipliers (DSP48E1 slices when mapped): Pi*Po, halved by packing."""
        return self._in_lanes * self._out_lanes // (2 if self._dsp_packing else 1)

    @property
    def adder_levels(self) -> int:
        """Adder levels after the product registers: the tree over Pi products (2*Pi values
        with packing: products and their correction bits), then the accumulator."""
        return adder_levels(self._in_lanes, self._dsp_packing)

    @property
    def adder_stages(self) -> int:
        return -(-self.adder_levels // ADD_LEVELS_PER_STAGE)

    @property
    def latency(self) -> int:
        """Cycles from presenting a ``last`` step to ``o_stream.valid``."""
        return mac_latency(self._in_lanes, self._dsp_packing)

    # -- hardware ---------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        pi, po = self._in_lanes, self._out_lanes
        step = self.i_stream.payload
        accept = self.i_stream.valid           # always ready: every valid step is taken

        # Control and bias travel beside the data; data registers have no reset (SRL-friendly).
        def delay(sig, name, reset_less=True):
            r = Signal.like(sig, name=name, reset_less=reset_less)
            m.d.sync += r.eq(sig)
            return r

        # Stage 1: multiplier input registers.
        a_in = [Signal(signed(numeric.ACT_BITS + 1), name=f"a{i}", reset_less=True)
                for i in range(pi)]
        for i in range(pi):
            m.d.sync += a_in[i].eq(Mux(step.act_signed, step.act[i].as_signed(), step.act[i]))
        if self._dsp_packing:
            w_in = [[Signal(signed(PACK_SHIFT + numeric.WEIGHT_BITS), name=f"wp{j}_{i}",
                            reset_less=True) for i in range(pi)] for j in range(po // 2)]
            for j in range(po // 2):
                for i in range(pi):
                    w_lo, w_hi = step.weight[2 * j][i], step.weight[2 * j + 1][i]
                    # == (w_hi << PACK_SHIFT) + w_lo, without a 25-bit adder
                    m.d.sync += w_in[j][i].eq(Cat(
                        w_lo, w_lo[-1].replicate(PACK_SHIFT - numeric.WEIGHT_BITS),
                        (w_hi - w_lo[-1])[:numeric.WEIGHT_BITS]))
        else:
            w_in = [[Signal(signed(numeric.WEIGHT_BITS), name=f"w{o}_{i}", reset_less=True)
                     for i in range(pi)] for o in range(po)]
            for o in range(po):
                for i in range(pi):
                    m.d.sync += w_in[o][i].eq(step.weight[o][i])
        ctl = {"valid": delay(accept, "s1_valid", reset_less=False),
               "first": delay(step.first, "s1_first"), "last": delay(step.last, "s1_last")}
        bias = [delay(step.bias[o], f"s1_bias{o}") for o in range(po)]

        # Stage 2: product registers (multiplier outputs).
        leaves = [[None] * pi for _ in range(po)]
        if self._dsp_packing:
            for j in range(po // 2):
                for i in range(pi):
                    p = Signal(signed(numeric.ACT_BITS + 1 + PACK_SHIFT + numeric.WEIGHT_BITS),
                               name=f"p{j}_{i}", reset_less=True)
                    m.d.sync += p.eq(a_in[i] * w_in[j][i])
                    leaves[2 * j][i] = p
                    leaves[2 * j + 1][i] = p
        else:
            for o in range(po):
                for i in range(pi):
                    p = Signal(signed(PRODUCT_BITS), name=f"p{o}_{i}", reset_less=True)
                    m.d.sync += p.eq(a_in[i] * w_in[o][i])
                    leaves[o][i] = p
        ctl = {k: delay(v, f"s2_{k}", reset_less=(k != "valid")) for k, v in ctl.items()}
        bias = [delay(b, f"s2_bias{o}") for o, b in enumerate(bias)]

        # Adder levels; a register after level L when (adder_levels - L) is a multiple of the
        # stage size, so the last stage ends in the accumulator register.
        total = self.adder_levels
        level = 0
        stage = 2

        def end_level(values):
            nonlocal level, stage, ctl, bias
            level += 1
            if (total - level) % ADD_LEVELS_PER_STAGE or level == total:
                return values
            stage += 1
            out = []
            for o, lane in enumerate(values):
                regs = []
                for n, v in enumerate(lane):
                    r = Signal.like(v, name=f"t{level}_{o}_{n}", reset_less=True)
                    m.d.sync += r.eq(v)
                    regs.append(r)
                out.append(regs)
            ctl = {k: delay(v, f"s{stage}_{k}", reset_less=(k != "valid"))
                   for k, v in ctl.items()}
            bias = [delay(b, f"s{stage}_bias{o}") for o, b in enumerate(bias)]
            return out

        values = leaves
        if self._dsp_packing:
            # even lane: the low fields; odd lane: the high fields, then their correction bits
            values = [[p[:PACK_SHIFT].as_signed() for p in lane] if o % 2 == 0 else
                      [p >> PACK_SHIFT for p in lane] + [p[PACK_SHIFT - 1] for p in lane]
                      for o, lane in enumerate(leaves)]
        while any(len(lane) > 1 for lane in values):
            values = end_level([[lane[n] + lane[n + 1] if n + 1 < len(lane) else lane[n]
                                 for n in range(0, len(lane), 2)] for lane in values])

        # Accumulator (the last adder level): load bias on `first`, emit after `last`.
        acc = [Signal(signed(numeric.ACC_BITS), name=f"acc{o}") for o in range(po)]
        with m.If(ctl["valid"]):
            for o in range(po):
                m.d.sync += acc[o].eq(Mux(ctl["first"], bias[o], acc[o]) + values[o][0])
        out_valid = Signal(name="acc_valid")
        m.d.sync += out_valid.eq(ctl["valid"] & ctl["last"])
        level += 1
        assert level == total and stage + 1 == self.latency, (level, stage)
        m.d.comb += self.o_stream.valid.eq(out_valid)
        for o in range(po):
            m.d.comb += self.o_stream.payload[o].eq(acc[o])
        return m

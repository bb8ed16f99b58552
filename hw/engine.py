"""The integrated engine: registers, DMA, sequencer, on-chip memories and compute blocks.

:class:`Engine` is the top level whose Verilog (``generate_verilog(Engine(cfg), "squeezeforge_engine")``)
has exactly ``clk``, ``rst`` (synchronous, active high), the ``m_axi_*`` AXI4 master of
:class:`~.axi.AxiDma` (64-bit, INCR bursts <= 16, 8 outstanding each way, byte strobes), the ``s_axi_*``
AXI4-Lite slave of :class:`~.regs.AxiLiteRegs` and ``irq``.

Block diagram (data flows left to right)::

    s_axi --> AxiLiteRegs --start--> sequencer --cmd--> ConvCore / MaxPool / GlobalAvgPool
                                        |                 ^ act        ^ weights   ^ params
    m_axi R --> read DMA --router--+--> command register  |            |           |
                                   +--> repacker --> ring buffer      weight memory param memory
                                   +--> weight writer -------------------^ (streamed: 2 buffers)
    ConvCore.o_stream --+--> byte packer (8 B + strobes) --> FIFO --> write DMA --> m_axi W
    MaxPool / GAP ------+--> byte packer (Pi B) --> squeeze buffer --> ConvCore (src = SQUEEZE)
    request generator (one write request per output pixel) --> write DMA AW

Sequencer FSM (one command at a time)::

    IDLE -start-> FETCH (read 64 B from CMD_BASE + 64*i) -> DECODE (END -> FINISH; bad opcode
    -> FAIL) -> SETUP1..3 (derived sizes, GAP's M/shift) -> CAP (rows the ring holds) -> CHECK
    (geometry against the memories -> FAIL) -> LAUNCH (input loader, weight prefetch) ->
    PASS_SETUP -> PASS_START -> PASS_RUN (per pass: CONV 1, EXPAND 1 interleaved or 2, MAXPOOL 1,
    GAP n_ic) ->
    DRAIN (loader, prefetch, packers, FIFO, write responses) -> NEXT (LAYER_CYCLES[i]) -> FETCH

Input ring buffer
    ``ring_depth`` words of Pi bytes (the largest power of two <= ``act_buffer_bytes / Pi``).
    Activation word ``a = (y*W + x)*n_ic + icb`` of a pass lives at ``a mod ring_depth``, the
    address arithmetic of ConvCore and MaxPool wraps there by itself. The loader reads whole
    input rows from DDR (one DMA request per row, ``W * in_pix`` bytes) as soon as the ring has
    room (row-granular producer/consumer: ``rows requested - rows freed < cap``, ``cap`` = rows
    that fit, at most 32); the repacker turns the 8-byte beats into Pi-byte words (lanes past
    ``in_bytes`` zero, zero words past ``in_pix``). The compute core is frozen (an
    ``EnableInserter`` clock enable on ConvCore / MaxPool, their memory ports and output
    handshake) in any cycle where the step it issues belongs to an output row whose last input
    row is not loaded yet: the engine counts issued steps to know that row. So DDR reads
    overlap computation and a pass never waits for more than the rows it needs.
    GAP reads one channel word per pass: the loader gathers word ``icb`` of every pixel
    (``H*W`` requests of Pi bytes: plane ``icb``), and GlobalAvgPool runs once per plane with
    ``n_ic = 1`` while the next plane loads.
Weights
    one 64-bit memory per beat of a weight word (``Pi*Po/8`` of them, read together, written
    one beat at a time). resident: ``weight_words`` words, written by LOAD commands (``pf_words``
    words from ``pf_addr`` to word ``conv.weight_base`` on; the program's setup, run once per
    model) or preloaded with ``weight_init``; streamed:
    ``2 * weight_words`` words, buffer b at word ``b * weight_words``; the prefetch writes
    ``pf_words`` words (one DMA request per word, interleaved with the input rows so the
    compute is not starved) into buffer ``1 - wbuf`` while the command computes from ``wbuf``.
    Either way the Verilog does not depend on the model.
Parameters
    ``param_depth`` words (default ``EngineConfig.PARAM_WORDS``) of Po lanes of 54 bits, in
    block RAM with a write port: the PARAMS command loads them through the same prefetch path
    (one DMA request of Po beats per word, lane o from beat o), so the Verilog does not depend
    on the model (``param_init`` can still preload them, e.g. for a bitstream with a fixed
    model).
Output
    Records (Po bytes per og group, or Pi bytes per channel word) become a byte stream per
    pixel; the DDR packer aligns it to the pixel's address (``addr mod 8``) and emits 64-bit
    beats with byte strobes; one write request per pixel covers its beats. The squeeze packer
    stores ``ceil(out_bytes / Pi)`` words per pixel in the squeeze buffer.

Latencies and where cycles go: a command costs its fetch (~ DDR latency + 8 beats + 2),
setup (5 + ``cap`` cycles, at most 32), the passes (ConvCore's ``pass_cycles`` when inputs
and outputs keep up, else the DDR bound: Pi/8 beats per input word read, ``ceil((ofs +
bytes) / 8)`` beats per output pixel written) and the drain (the last write responses).

Measured (whole v1.1 network, cocotb DDR model with 20-cycle read latency, z7020: Pi = Po = 16,
streamed): fire2 takes 151,949 cycles against an ideal of 137,984 (MACs / 256): 1.10x. Its
squeeze pass is DDR-read bound (64 input bytes per pixel = 8 beats per 4 MAC steps: 26,447
cycles for 12,544 steps); its EXPAND runs interleaved (per pixel 4 groups of 1x1, then 4 groups
of 3x3: 40 steps for 16 output beats) at one step per cycle, 125,502 cycles for 125,440 steps.
Run as two passes, the 1x1 pass alone would be DDR-write bound (64 output bytes per 4 steps).

Errors (``ERROR`` register = ``code | detail << 8 | command index << 16``, STATUS.ERROR set,
DONE and the interrupt raised): :class:`Err` codes; details of ``GEOMETRY`` in :class:`Geo`.
After an error, a SOFT_RESET (which resets everything but the register block) before the next
START; a soft reset while busy abandons AXI transactions in flight.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import (Cat, C, Const, EnableInserter, Module, Mux, ResetInserter, Signal,
                          signed, unsigned)
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from squeezeforge.quant import numeric

from .axi import AxiDma
from .commands import COMMAND_BYTES, Command, Loc, Op
from .config import EngineConfig
from .conv import DIM_BITS, KERNELS, STRIDES, WORDS_BITS, ConvCommand, ConvCore, ConvPass
from .pool import GapCommand, GlobalAvgPool, MaxPool, MaxPoolCommand
from .regs import MAX_LAYER_CYCLES, AxiLiteRegs, config_word

__all__ = ["Engine", "EngineError", "Err", "Geo", "BytePacker", "PARAM_LANE_BITS",
           "MAX_CAP_ROWS"]

PARAM_LANE_BITS = numeric.ACC_BITS + numeric.MULT_BITS + numeric.SHIFT_BITS   # 54
MAX_CAP_ROWS = 32           # the loader runs at most this many rows ahead of the compute
# Bursts in flight per direction: the HP ports' command FIFOs accept 8 reads and 8 writes
# (Zynq-7000 AFI, UG585 ch. 5; Zynq UltraScale+ "read and write command acceptance capability
# of eight", UG1085). With a 20-cycle read latency, 4 would cap short requests (GAP's 2-beat
# gathers) at 4 per ~22 cycles; 8 keeps the read channel busy.
DMA_OUTSTANDING = 8
BEAT_BYTES = 8


class EngineError(ValueError):
    """A configuration or program the engine cannot hold (one line, with the numbers)."""


class Err(enum.Enum, shape=8):
    """ERROR register, bits 0-7."""
    NONE = 0
    OPCODE = 1          # an opcode that is not an Op
    DMA_READ = 2        # a read response other than OKAY
    DMA_WRITE = 3       # a write response other than OKAY
    GEOMETRY = 4        # a command that exceeds a buffer; detail in bits 8-15 (Geo)
    NO_END = 5          # CMD_COUNT commands executed without END (CMD_COUNT = 0: no limit)


class Geo(enum.Enum, shape=8):
    """ERROR register bits 8-15 for Err.GEOMETRY."""
    NONE = 0
    RING = 1            # the rows a pass needs at once do not fit the input ring buffer
    SQUEEZE_IN = 2      # h*w*n_ic words exceed the squeeze buffer
    SQUEEZE_OUT = 3     # ho*wo*ceil(out_bytes/Pi) words exceed the squeeze buffer
    WEIGHTS = 4         # weight_base + the pass's words exceed the weight buffer
    PREFETCH = 5        # pf_words exceed a weight buffer (resident: a prefetch other than
                        # LOAD, or a LOAD past the weight memory)
    PARAMS = 6          # parameter words past the parameter memory
    ALIGN = 7           # in_addr / in_pix not a multiple of 8, or in_pix > n_ic*Pi
    KERNEL = 8          # k / stride / pad the core does not run
    OUTPUT = 9          # more output bytes than the pass computes
    SOURCE = 10         # src/dst combination the op does not have


def _check_int(name, v, lo=1):
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise EngineError(f"{name} must be an integer of at least {lo}, not {v!r}")
    return v


def _bytes_mask(bits, n):
    """A byte-enable bit vector of n bits expanded to 8*n bits."""
    return Cat(*(bits[i].replicate(8) for i in range(n)))


class BytePacker(wiring.Component):
    """Packs per-pixel records of ``in_bytes`` bytes into beats of ``out_bytes`` bytes.

    A pixel is the records from one with ``first`` to one with ``last``; a record carries its
    low ``rec_bytes`` bytes (``rec_bytes`` <= ``in_bytes``, static while records flow); the
    pixel's byte stream is the first ``nbytes`` bytes of its records (sampled with ``first``; later bytes and records
    are dropped), placed from lane ``ofs`` (sampled with ``first``) of its first beat. Beats
    carry ``strb`` (lanes holding a byte of the pixel); lanes without a byte are zero. Each
    pixel ends with a partial beat if needed, so a pixel takes ``ceil((ofs + nbytes) /
    out_bytes)`` beats. Throughput: ``out_bytes`` bytes per cycle while ``o_stream`` is ready
    (``i_stream.ready`` depends combinationally on ``o_stream.ready``: put a FIFO behind).
    ``idle``: nothing held.
    """

    def __init__(self, in_bytes: int, out_bytes: int):
        self._in = _check_int("in_bytes", in_bytes)
        self._out = _check_int("out_bytes", out_bytes)
        super().__init__({
            "i_stream": In(stream.Signature(data.StructLayout({
                "data": unsigned(8 * in_bytes), "first": 1, "last": 1}))),
            "nbytes": In(16),
            "rec_bytes": In(range(in_bytes + 1)),
            "ofs": In(range(out_bytes)),
            "o_stream": Out(stream.Signature(data.StructLayout({
                "data": unsigned(8 * out_bytes), "strb": unsigned(out_bytes)}))),
            "idle": Out(1),
        })

    in_bytes = property(lambda self: self._in)
    out_bytes = property(lambda self: self._out)

    def elaborate(self, platform):
        m = Module()
        B, L = self._out, self._in
        N = B + L
        # invariant: bytes at positions >= cnt are zero and have no strobe
        buf = Signal(8 * N)
        vld = Signal(N)
        cnt = Signal(range(N + 1))
        flush = Signal()                   # the pixel's last record is in: emit even partial
        rem = Signal(16)                   # bytes of the pixel still to take from records

        emit = (cnt >= B) | flush
        m.d.comb += [
            self.o_stream.valid.eq(emit),
            self.o_stream.payload.data.eq(buf[:8 * B]),
            self.o_stream.payload.strb.eq(vld[:B]),
            self.idle.eq((cnt == 0) & ~flush),
        ]
        do_emit = emit & self.o_stream.ready
        buf_s, vld_s, cnt_s, flush_s = Signal.like(buf), Signal.like(vld), Signal.like(cnt), Signal()
        m.d.comb += [
            buf_s.eq(Mux(do_emit, buf >> (8 * B), buf)),
            vld_s.eq(Mux(do_emit, vld >> B, vld)),
            cnt_s.eq(Mux(do_emit, Mux(cnt > B, cnt - B, 0), cnt)),
            flush_s.eq(flush & ~(do_emit & (cnt <= B))),
        ]
        m.d.comb += self.i_stream.ready.eq(~flush_s & (cnt_s < B))
        accept = self.i_stream.valid & self.i_stream.ready
        rec = self.i_stream.payload
        start = Signal(range(N))
        avail = Signal(16)
        n = Signal(range(L + 1))
        m.d.comb += [
            start.eq(Mux(rec.first, self.ofs, cnt_s)),
            avail.eq(Mux(rec.first, self.nbytes, rem)),
            n.eq(Mux(avail < self.rec_bytes, avail, self.rec_bytes)),
        ]
        new_mask = Signal(N)
        m.d.comb += new_mask.eq((((C(1, L + 1) << n) - 1) << start)[:N])
        shifted = Signal(8 * N)
        m.d.comb += shifted.eq((rec.data << (start * 8))[:8 * N])
        m.d.sync += [buf.eq(buf_s), vld.eq(vld_s), cnt.eq(cnt_s), flush.eq(flush_s)]
        with m.If(accept):
            m.d.sync += [
                buf.eq(buf_s | (shifted & _bytes_mask(new_mask, N))),
                vld.eq(vld_s | new_mask),
                cnt.eq(start + n),
                rem.eq(avail - n),
                flush.eq(rec.last & ((start + n) != 0)),
            ]
        return m


class Engine(wiring.Component):
    """The SqueezeNet engine (see the module doc for the architecture).

    Parameters
    ----------
    cfg : EngineConfig
        The MAC array, weight mode and memory sizes. ``in_lanes`` must be a power of two here.
    weight_init : array (words, Po, Pi) of uint8, optional
        Resident mode: initial contents of the weight memory (``Program.weight_image``), for a
        bitstream with a fixed model; at most ``cfg.weight_words`` words. Without it the
        program's LOAD commands fill the memory. Refused in streamed mode.
    param_init : array (entries, Po) of ``quant.pack.PARAM_DTYPE``, optional
        The parameter memory's contents (``Program.param_image``); its depth is the number of
        entries (at least 2), or ``param_depth`` when given.

    Ports: ``m_axi_*`` (AXI4 master), ``s_axi_*`` (AXI4-Lite slave), ``irq``.
    """

    def __init__(self, cfg: EngineConfig, *, weight_init=None, param_init=None,
                 param_depth: int | None = None):
        if not isinstance(cfg, EngineConfig):
            raise EngineError(f"cfg must be an EngineConfig, not {cfg!r}")
        pi, po = cfg.in_lanes, cfg.out_lanes
        if pi & (pi - 1):
            raise EngineError(f"in_lanes must be a power of two for the engine, not {pi}")
        self._cfg = cfg
        words = cfg.act_buffer_bytes // pi
        if words < 2:
            raise EngineError(f"act_buffer_bytes must hold at least 2 words of {pi} bytes, "
                              f"not {cfg.act_buffer_bytes}")
        self._ring_depth = 1 << (words.bit_length() - 1)
        self._squeeze_depth = cfg.squeeze_buffer_bytes // pi
        if self._squeeze_depth < 2:
            raise EngineError(f"squeeze_buffer_bytes must hold at least 2 words of {pi} bytes, "
                              f"not {cfg.squeeze_buffer_bytes}")
        self._weight_depth = cfg.weight_words * cfg.weight_buffers
        # weight memory contents
        if weight_init is not None:
            if cfg.weight_mode != "resident":
                raise EngineError("weight_init is for resident mode; streamed weights come "
                                  "from DDR")
            w = np.asarray(weight_init)
            if w.dtype != np.uint8 or w.ndim != 3 or w.shape[1:] != (po, pi):
                raise EngineError(f"weight_init must be uint8 (words, {po}, {pi}), not "
                                  f"{w.dtype} {w.shape}")
            if len(w) > cfg.weight_words:
                raise EngineError(f"weight_init holds {len(w)} words, the weight memory "
                                  f"{cfg.weight_words}")
            self._weight_init = [int.from_bytes(row.tobytes(), "little") for row in w]
        else:
            self._weight_init = []
        # parameter memory contents
        if param_init is not None:
            p = np.asarray(param_init)
            if p.ndim != 2 or p.shape[1] != po or p.dtype.names != ("bias", "mult", "shift"):
                raise EngineError(f"param_init must be PARAM_DTYPE (entries, {po}), not "
                                  f"{p.dtype} {p.shape}")
            self._param_init = []
            for row in p:
                v = 0
                for o in range(po - 1, -1, -1):
                    lane = ((int(row["bias"][o]) & 0xFFFF_FFFF)
                            | int(row["mult"][o]) << numeric.ACC_BITS
                            | int(row["shift"][o]) << (numeric.ACC_BITS + numeric.MULT_BITS))
                    v = (v << PARAM_LANE_BITS) | lane
                self._param_init.append(v)
        else:
            self._param_init = []
        if param_depth is None:
            param_depth = max(cfg.PARAM_WORDS, len(self._param_init))
        _check_int("param_depth", param_depth, 2)
        if len(self._param_init) > param_depth:
            raise EngineError(f"param_init holds {len(self._param_init)} entries, param_depth "
                              f"is {param_depth}")
        self._param_depth = param_depth

        self._dma = AxiDma(data_width=cfg.axi_data_width, addr_width=cfg.axi_addr_width,
                           outstanding=DMA_OUTSTANDING, strobes=True)
        self._regs = AxiLiteRegs()
        members = {k: v for k, v in self._dma.signature.members.items() if k.startswith("m_axi_")}
        members.update({k: v for k, v in self._regs.signature.members.items()
                        if k.startswith("s_axi_")})
        members["irq"] = Out(1)
        super().__init__(members)

    # -- read-only parameters and derived facts ----------------------------------------------
    cfg = property(lambda self: self._cfg)
    ring_depth = property(lambda self: self._ring_depth, doc="input ring buffer, words of Pi B")
    squeeze_depth = property(lambda self: self._squeeze_depth, doc="squeeze buffer, words")
    weight_depth = property(lambda self: self._weight_depth, doc="weight memory, words (all buffers)")
    param_depth = property(lambda self: self._param_depth, doc="parameter memory, entries")

    @property
    def buffer_words(self) -> int:
        """Words one command may address in the weight memory (a buffer, or all of it)."""
        return self._cfg.weight_words

    def ring_rows(self, row_words: int, rows: int) -> int:
        """Rows of ``row_words`` words the loader may hold at once (what CAP computes)."""
        return min(MAX_CAP_ROWS, rows, self._ring_depth // max(row_words, 1))

    def check_program(self, program) -> None:
        """Raise :class:`EngineError` (one line, with numbers) if ``program`` (a
        ``host.schedule.Program``) needs more than this engine's memories hold; the hardware
        would stop on such a command with ``Err.GEOMETRY``."""
        cfg, pi, po = self._cfg, self._cfg.in_lanes, self._cfg.out_lanes
        if (program.cfg.in_lanes, program.cfg.out_lanes, program.cfg.weight_mode) != \
                (pi, po, cfg.weight_mode):
            raise EngineError(f"program is for Pi={program.cfg.in_lanes}, Po={program.cfg.out_lanes}, "
                              f"{program.cfg.weight_mode}; the engine is Pi={pi}, Po={po}, "
                              f"{cfg.weight_mode}")
        if program.packed.n_params > self._param_depth:
            raise EngineError(f"program needs {program.packed.n_params} parameter entries, the "
                              f"parameter memory holds {self._param_depth}")
        if cfg.weight_mode == "resident" and program.packed.n_words > cfg.weight_words:
            raise EngineError(f"program needs {program.packed.n_words} resident weight words, "
                              f"the weight memory holds {cfg.weight_words}")
        for c in program.commands:
            f = c.fields
            cv, op = f["conv"], f["op"]
            where = f"command {c.index} ({c.name})"
            if op in (Op.CONV, Op.MAXPOOL, Op.GAP) and f["src"] == Loc.DDR:
                if op == Op.GAP:
                    row, rows, need = cv["h"] * cv["w"], cv["n_ic"], 1
                else:
                    row, rows = cv["w"] * cv["n_ic"], cv["h"]
                    need = min(3 if op == Op.MAXPOOL else cv["k"], rows)
                if self.ring_rows(row, rows) < need:
                    raise EngineError(f"{where}: needs {need} input rows of {row} words, the "
                                      f"ring buffer holds {self._ring_depth} words")
            if f["src"] == Loc.SQUEEZE:
                n = cv["h"] * cv["w"] * cv["n_ic"]
                if n > self._squeeze_depth:
                    raise EngineError(f"{where}: reads {n} squeeze words, the buffer holds "
                                      f"{self._squeeze_depth}")
            if op == Op.CONV and f["dst"] == Loc.SQUEEZE:
                n = cv["ho"] * cv["wo"] * -(-f["out_bytes"] // pi)
                if n > self._squeeze_depth:
                    raise EngineError(f"{where}: writes {n} squeeze words, the buffer holds "
                                      f"{self._squeeze_depth}")
            if op == Op.PARAMS:
                if cv["param_base"] + f["pf_words"] > self._param_depth:
                    raise EngineError(f"{where}: loads parameter words {cv['param_base']}.."
                                      f"{cv['param_base'] + f['pf_words'] - 1}, the memory "
                                      f"holds {self._param_depth}")
            elif cfg.weight_mode == "resident" and op == Op.LOAD:
                if cv["weight_base"] + f["pf_words"] > cfg.weight_words:
                    raise EngineError(f"{where}: loads weight words {cv['weight_base']}.."
                                      f"{cv['weight_base'] + f['pf_words'] - 1}, the memory "
                                      f"holds {cfg.weight_words}")
            elif cfg.weight_mode == "resident" and f["pf_words"]:
                raise EngineError(f"{where}: prefetches weights in resident mode (only LOAD "
                                  f"writes the weight memory)")
            elif f["pf_words"] > cfg.weight_words:
                raise EngineError(f"{where}: prefetches {f['pf_words']} words into a "
                                  f"{cfg.weight_words}-word buffer")

    # -- hardware ------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        pi, po = cfg.in_lanes, cfg.out_lanes
        m.submodules.regs = regs = self._regs
        for name, member in regs.signature.members.items():
            if name.startswith("s_axi_"):
                if member.flow == Out:
                    m.d.comb += getattr(self, name).eq(getattr(regs, name))
                else:
                    m.d.comb += getattr(regs, name).eq(getattr(self, name))
        m.d.comb += [
            self.irq.eq(regs.irq),
            regs.config.eq(config_word(pi, po, cfg.weight_mode, cfg.dsp_packing)),
        ]
        # Everything but the register block is in the soft-reset scope.
        b = Module()
        m.submodules.body = ResetInserter(regs.soft_reset)(b)
        self._body(b, regs)
        return m

    def _body(self, m, regs):
        cfg = self._cfg
        pi, po = cfg.in_lanes, cfg.out_lanes
        streamed = cfg.weight_mode == "streamed"
        beats_per_word = pi // BEAT_BYTES               # activation word, in DMA beats
        wword_bytes = pi * po
        wbeats = wword_bytes // BEAT_BYTES              # weight word, in DMA beats
        ring_aw = exact_log2(self._ring_depth)
        sq_aw = ceil_log2(self._squeeze_depth)
        w_aw = ceil_log2(max(self._weight_depth, 2))
        par_aw = ceil_log2(self._param_depth)
        p_aw = ceil_log2(self._param_depth)
        act_depth = 1 << max(ring_aw, sq_aw)
        L = max(pi, po)                                  # record width into the DDR packer

        # ---------------------------------------------------------------- DMA
        dma = self._dma
        m.submodules.dma = dma
        for name, member in dma.signature.members.items():
            if name.startswith("m_axi_"):
                if member.flow == Out:
                    m.d.comb += getattr(self, name).eq(getattr(dma, name))
                else:
                    m.d.comb += getattr(dma, name).eq(getattr(self, name))

        # ---------------------------------------------------------------- memories
        m.submodules.ring = ring = Memory(shape=unsigned(8 * pi), depth=self._ring_depth, init=[])
        ring_w = ring.write_port()
        ring_r = ring.read_port()          # not transparent: a row is never written while read
        m.submodules.squeeze = sqm = Memory(shape=unsigned(8 * pi), depth=self._squeeze_depth,
                                            init=[])
        sq_w = sqm.write_port()
        sq_r = sqm.read_port()             # not transparent: written and read by different passes
        # The weight memory is one 64-bit memory per DMA beat of a word (slice b holds bytes
        # 8b..8b+7 of every word), read together and written one beat at a time: the same
        # contents as one wide memory with a beat-granular write port, but each slice has a
        # single plain write port, which Yosys and the vendor tools map straight to block RAM
        # (a 2,048-bit port with 256 write lanes took a native Yosys over half an hour).
        w_depth = max(self._weight_depth, 2)
        w_slices = []
        for b in range(wbeats):
            init = [(v >> (64 * b)) & ((1 << 64) - 1) for v in self._weight_init]
            mem = Memory(shape=unsigned(8 * BEAT_BYTES), depth=w_depth, init=init)
            m.submodules[f"weights{b}"] = mem
            # read: not transparent, the prefetch writes the other buffer
            w_slices.append((mem.read_port(), mem.write_port()))
        w_r_addr, w_r_en, w_r_data = Signal(w_aw), Signal(), Signal(8 * wword_bytes)
        w_w_addr, w_w_en, w_w_data = Signal(w_aw), Signal(wbeats), Signal(8 * BEAT_BYTES)
        for b, (rp, wp) in enumerate(w_slices):
            m.d.comb += [rp.addr.eq(w_r_addr), rp.en.eq(w_r_en),
                         w_r_data[64 * b:64 * (b + 1)].eq(rp.data),
                         wp.addr.eq(w_w_addr), wp.en.eq(w_w_en[b]), wp.data.eq(w_w_data)]
        m.submodules.params = pmem = Memory(shape=unsigned(po * PARAM_LANE_BITS),
                                            depth=self._param_depth, init=self._param_init)
        p_w = pmem.write_port(granularity=PARAM_LANE_BITS)    # PARAMS: one lane per beat
        p_bias = pmem.read_port()          # not transparent: no pass runs while PARAMS writes
        p_scale = pmem.read_port()

        # ---------------------------------------------------------------- compute
        conv = ConvCore(pi, po, act_depth=act_depth, weight_depth=max(self._weight_depth, 2),
                        param_depth=self._param_depth, dsp_packing=cfg.dsp_packing)
        mpool = MaxPool(pi, act_depth=self._ring_depth)
        gap = GlobalAvgPool(pi, act_depth=self._ring_depth)
        core_en = Signal(init=1)           # clock enable of ConvCore and MaxPool (freeze)
        m.submodules.conv = EnableInserter(core_en)(conv)
        m.submodules.maxpool = EnableInserter(core_en)(mpool)
        m.submodules.gap = gap

        # ---------------------------------------------------------------- command register
        cmd_bits = Signal(8 * COMMAND_BYTES)
        cmd = Command(cmd_bits[:Command.as_shape().size])
        cv = cmd.conv
        op_conv = cmd.op == Op.CONV
        op_expand = cmd.op == Op.EXPAND
        op_max = cmd.op == Op.MAXPOOL
        op_gap = cmd.op == Op.GAP
        op_params = cmd.op == Op.PARAMS
        src_sq = cmd.src == Loc.SQUEEZE
        dst_sq = op_conv & (cmd.dst == Loc.SQUEEZE)
        out_ddr = ~dst_sq | cmd.dump
        uses_ring = (op_conv & ~src_sq) | op_max | op_gap

        # ---------------------------------------------------------------- read router
        class Tag(enum.Enum, shape=2):
            CMD = 0
            ACT = 1
            WGT = 2
        m.submodules.tags = tags = fifo.SyncFIFOBuffered(width=2, depth=8)
        rd = dma.o_stream
        head = Signal(Tag)
        m.d.comb += head.eq(tags.r_data)
        act_take = Signal()                # the repacker takes the head beat this cycle
        beat_for = {t: tags.r_rdy & (head == t) & rd.valid for t in Tag}
        m.d.comb += rd.ready.eq(tags.r_rdy & (
            (head == Tag.CMD) | (head == Tag.WGT) | ((head == Tag.ACT) & act_take)))
        m.d.comb += tags.r_en.eq(rd.valid & rd.ready & rd.payload.last)

        # requests: command fetch > input rows > weight words
        fetch_req = Signal()
        fetch_addr = Signal(32)
        ld_valid, ld_addr, ld_len = Signal(), Signal(32), Signal(32)
        pf_valid, pf_cur = Signal(), Signal(32)
        req = dma.rd_req
        sel = Signal(Tag)
        with m.If(fetch_req):
            m.d.comb += [sel.eq(Tag.CMD), req.payload.addr.eq(fetch_addr),
                         req.payload.length.eq(COMMAND_BYTES)]
        with m.Elif(ld_valid):
            m.d.comb += [sel.eq(Tag.ACT), req.payload.addr.eq(ld_addr),
                         req.payload.length.eq(ld_len)]
        with m.Else():      # a weight word, or (PARAMS) a parameter word of Po beats
            m.d.comb += [sel.eq(Tag.WGT), req.payload.addr.eq(pf_cur),
                         req.payload.length.eq(Mux(op_params, po * BEAT_BYTES, wword_bytes))]
        m.d.comb += req.valid.eq(tags.w_rdy & (fetch_req | ld_valid | pf_valid))
        req_acc = req.valid & req.ready
        m.d.comb += [tags.w_en.eq(req_acc), tags.w_data.eq(sel)]
        fetch_acc = req_acc & (sel == Tag.CMD)
        ld_acc = req_acc & (sel == Tag.ACT)
        pf_acc = req_acc & (sel == Tag.WGT)

        # ---------------------------------------------------------------- sequencer registers
        idx = Signal(16)
        fetch_cnt = Signal(range(COMMAND_BYTES // BEAT_BYTES + 1))
        with m.If(beat_for[Tag.CMD] & rd.ready):
            m.d.sync += [cmd_bits.eq(Cat(cmd_bits[64:], rd.payload.data)),
                         fetch_cnt.eq(fetch_cnt + 1)]
        err_code = Signal(Err)
        err_geo = Signal(Geo)
        err_idx = Signal(16)
        err_flag = Signal()
        m.d.comb += [regs.error.eq(err_flag),
                     regs.error_code.eq(Cat(err_code, err_geo, err_idx)),
                     regs.cur_cmd.eq(idx)]
        layer_cyc = Signal(32)
        done_set = Signal()
        m.d.comb += regs.done_set.eq(done_set)
        m.d.sync += done_set.eq(0)

        # derived sizes
        kk = Signal(6)
        hw = Signal(2 * DIM_BITS)
        howo = Signal(2 * DIM_BITS)
        row_words = Signal(DIM_BITS + WORDS_BITS)
        wpo = Signal(16)                    # weight words per og: k*k*n_ic
        conv_words = Signal(27)
        exp_words = Signal(27)
        steps_a = Signal(DIM_BITS + WORDS_BITS)
        steps_row = Signal(32)
        sq_in_words = Signal(2 * DIM_BITS + WORDS_BITS)
        sq_out_words = Signal(2 * DIM_BITS + 16)
        nw_out = Signal(16)
        gap_mult = Signal(numeric.MULT_BITS)
        gap_shift = Signal(numeric.SHIFT_BITS)
        nrows = Signal(WORDS_BITS)          # loader rows (input rows, or GAP planes)
        rowsz = Signal(2 * DIM_BITS + WORDS_BITS)   # words of one loader row
        cap = Signal(range(MAX_CAP_ROWS + 1))
        cap_acc = Signal(2 * DIM_BITS + WORDS_BITS + 1)
        need_rows = Signal(WORDS_BITS)
        # limits minus one as registers, so the loop ends below compare registers for
        # equality (``x == n - 1`` with the subtraction in the path maps to a borrow chain
        # of LUTs: the engine's deepest logic). Shadows follow their source one cycle late,
        # which is early enough: nrows is set in SETUP2, the command (n_ic) in FETCH_WAIT, and
        # p_nog in PASS_SETUP, each read by the loader or the output path only from LAUNCH /
        # PASS_RUN on.
        nrows_m1 = Signal(signed(WORDS_BITS + 1))
        nic_m1 = Signal(signed(WORDS_BITS + 1))
        m.d.sync += [nrows_m1.eq(nrows - 1), nic_m1.eq(cv.n_ic - 1)]

        # pass state
        pidx = Signal(WORDS_BITS)
        n_pass = Signal(WORDS_BITS + 1)
        p_nog = Signal(WORDS_BITS)
        p_nog_m1 = Signal(signed(WORDS_BITS + 1))
        m.d.sync += p_nog_m1.eq(p_nog - 1)
        p_nbytes = Signal(16)
        p_base = Signal(32)
        ccmd = Signal(ConvPass)
        ilv = Signal()                      # EXPAND as one interleaved pass (see the doc)
        plane_base = Signal(ring_aw)
        gate_on = Signal()                  # the ring gating of the running core is active
        m.d.comb += [conv.cmd.eq(ccmd)]
        m.d.comb += [
            mpool.cmd.h.eq(cv.h), mpool.cmd.w.eq(cv.w), mpool.cmd.n_ic.eq(cv.n_ic),
            mpool.cmd.ho.eq(cv.ho), mpool.cmd.wo.eq(cv.wo), mpool.cmd.act_signed.eq(cv.act_signed),
            gap.cmd.h.eq(cv.h), gap.cmd.w.eq(cv.w), gap.cmd.n_ic.eq(1),
            gap.cmd.mult.eq(gap_mult), gap.cmd.shift.eq(gap_shift), gap.cmd.relu.eq(cv.relu),
            gap.cmd.act_signed.eq(cv.act_signed),
        ]
        start_conv, start_max, start_gap = Signal(), Signal(), Signal()
        m.d.comb += [conv.start.eq(start_conv), mpool.start.eq(start_max),
                     gap.start.eq(start_gap)]

        # ---------------------------------------------------------------- ring gating
        rows_loaded = Signal(WORDS_BITS + 1)
        g_row = Signal(DIM_BITS + 1)        # output row of the step being issued
        g_step = Signal(32)
        need_lo = Signal(signed(DIM_BITS + 3))
        need_hi = Signal(signed(DIM_BITS + 3))
        g_stride = Signal(2)
        hi_clamped = Mux(need_hi > cv.h - 1, cv.h - 1, need_hi)
        m.d.comb += core_en.eq(~gate_on | (hi_clamped < rows_loaded.as_signed()))
        issued = Mux(op_max, mpool.act_rd.en, conv.act_rd.en) & core_en & gate_on
        with m.If(issued):
            with m.If(g_step == steps_row - 1):
                m.d.sync += [g_step.eq(0), g_row.eq(g_row + 1),
                             need_lo.eq(need_lo + g_stride), need_hi.eq(need_hi + g_stride)]
            with m.Else():
                m.d.sync += g_step.eq(g_step + 1)
        k_s, pad_s = Signal(signed(5)), Signal(signed(4))
        m.d.comb += [k_s.eq(cv.k), pad_s.eq(cv.pad)]
        lo0 = Signal(signed(DIM_BITS + 3))
        hi0 = Signal(signed(DIM_BITS + 3))
        m.d.comb += [lo0.eq(Mux(op_max, 0, -pad_s)), hi0.eq(Mux(op_max, 2, k_s - 1 - pad_s))]
        freed = Signal(signed(DIM_BITS + 3))
        m.d.comb += freed.eq(Mux(op_gap, pidx, Mux(need_lo < 0, 0, need_lo)))

        # ---------------------------------------------------------------- memory wiring
        # ConvCore / MaxPool / GAP -> ring or squeeze buffer; read enables follow the freeze.
        gap_addr = Signal(ring_aw)
        m.d.comb += gap_addr.eq(gap.act_rd.addr + plane_base)
        with m.If(op_max):
            m.d.comb += [ring_r.addr.eq(mpool.act_rd.addr), ring_r.en.eq(mpool.act_rd.en & core_en)]
        with m.Elif(op_gap):
            m.d.comb += [ring_r.addr.eq(gap_addr), ring_r.en.eq(gap.act_rd.en)]
        with m.Else():
            m.d.comb += [ring_r.addr.eq(conv.act_rd.addr[:ring_aw]),
                         ring_r.en.eq(conv.act_rd.en & core_en)]
        m.d.comb += [
            sq_r.addr.eq(conv.act_rd.addr[:sq_aw]),
            sq_r.en.eq(conv.act_rd.en & core_en),
            conv.act_rd.data.eq(Mux(src_sq, sq_r.data, ring_r.data)),
            mpool.act_rd.data.eq(ring_r.data),
            gap.act_rd.data.eq(ring_r.data),
        ]
        wsel = Signal()                     # weight buffer the command computes from
        if streamed:
            m.d.comb += w_r_addr.eq(conv.wgt_rd.addr[:w_aw] + Mux(wsel, cfg.weight_words, 0))
        else:
            m.d.comb += w_r_addr.eq(conv.wgt_rd.addr[:w_aw])
        m.d.comb += [w_r_en.eq(conv.wgt_rd.en & core_en), conv.wgt_rd.data.eq(w_r_data)]
        seq_par = Signal()                  # the sequencer reads the GAP parameter word
        m.d.comb += [
            p_bias.addr.eq(conv.bias_rd.addr), p_bias.en.eq(conv.bias_rd.en & core_en),
            conv.bias_rd.data.eq(p_bias.data),
            p_scale.addr.eq(Mux(seq_par, cv.param_base, conv.scale_rd.addr)),
            p_scale.en.eq(seq_par | (conv.scale_rd.en & core_en)),
            conv.scale_rd.data.eq(p_scale.data),
        ]

        # ---------------------------------------------------------------- input loader
        gather = Signal()                   # GAP: rows are channel planes, one request a pixel
        ld_active = Signal()
        ld_row = Signal(WORDS_BITS + 1)
        ld_req = Signal(2 * DIM_BITS)
        ld_req_nz = Signal()                # ld_req != 0, as a register updated with it
        ld_nreq = Signal(2 * DIM_BITS)
        ld_nreq_m1 = Signal(signed(2 * DIM_BITS + 1))     # ld_nreq - 1, set with it
        ld_row_addr = Signal(32)
        ld_row_step = Signal(32)
        ld_req_step = Signal(16)
        ld_row_bytes = Signal(32)
        ld_pixrem = Signal(signed(17))      # gather: bytes of the pixel from this plane on
        row_ok = (ld_row.as_signed() - freed) < cap
        m.d.comb += [
            ld_valid.eq(ld_active & (ld_req_nz | row_ok)),
            ld_len.eq(Mux(gather, Mux(ld_pixrem < pi, ld_pixrem, pi), ld_row_bytes)),
        ]
        with m.If(ld_acc):
            with m.If(ld_req == ld_nreq_m1):
                nxt = ld_row_addr + ld_row_step
                m.d.sync += [ld_req.eq(0), ld_req_nz.eq(0), ld_row.eq(ld_row + 1),
                             ld_row_addr.eq(nxt),
                             ld_addr.eq(nxt), ld_pixrem.eq(ld_pixrem - pi)]
                with m.If(ld_row == nrows_m1):
                    m.d.sync += ld_active.eq(0)
            with m.Else():
                m.d.sync += [ld_req.eq(ld_req + 1), ld_req_nz.eq(1),
                             ld_addr.eq(ld_addr + ld_req_step)]

        # repacker: beats -> ring words
        rp_active = Signal()
        rp_beat = Signal(WORDS_BITS + 3)    # beat of the pixel's on-chip words
        rp_sub = Signal(range(max(beats_per_word, 2)))
        rp_pix = Signal(2 * DIM_BITS)
        rp_npix = Signal(2 * DIM_BITS)
        rp_wbeats = Signal(WORDS_BITS + 3)  # on-chip beats per pixel
        rp_npix_m1 = Signal(signed(2 * DIM_BITS + 1))     # rp_npix - 1, set with it
        rp_wbeats_m1 = Signal(signed(WORDS_BITS + 4))     # rp_wbeats - 1, set with it
        rp_inbeats = Signal(signed(17))     # DDR beats per pixel (this row)
        rp_valid = Signal(signed(17))       # bytes of the pixel that are real (this row)
        rp_boff = Signal(WORDS_BITS + 6)    # byte offset of this beat in the pixel
        rp_wa = Signal(ring_aw)
        take = rp_beat < rp_inbeats
        m.d.comb += act_take.eq(rp_active & take)
        step = rp_active & (~take | beat_for[Tag.ACT])
        lane_ok = Cat(*((rp_boff + i) < rp_valid for i in range(BEAT_BYTES)))
        beat = Signal(64)
        m.d.comb += beat.eq(Mux(take, rd.payload.data & _bytes_mask(lane_ok, BEAT_BYTES), 0))
        if beats_per_word > 1:
            shreg = Signal(64 * (beats_per_word - 1))
            word = Cat(shreg, beat)
        else:
            shreg = None
            word = beat
        m.d.comb += [ring_w.addr.eq(rp_wa), ring_w.data.eq(word),
                     ring_w.en.eq(step & (rp_sub == beats_per_word - 1))]
        with m.If(step):
            if shreg is not None:
                m.d.sync += shreg.eq(Cat(shreg[64:], beat))
            with m.If(rp_sub == beats_per_word - 1):
                m.d.sync += [rp_sub.eq(0), rp_wa.eq(rp_wa + 1)]
            with m.Else():
                m.d.sync += rp_sub.eq(rp_sub + 1)
            with m.If(rp_beat == rp_wbeats_m1):
                m.d.sync += [rp_beat.eq(0), rp_boff.eq(0)]
                with m.If(rp_pix == rp_npix_m1):
                    m.d.sync += [rp_pix.eq(0), rows_loaded.eq(rows_loaded + 1)]
                    with m.If(gather):
                        m.d.sync += [rp_inbeats.eq(rp_inbeats - beats_per_word),
                                     rp_valid.eq(rp_valid - pi)]
                    with m.If(rows_loaded == nrows_m1):
                        m.d.sync += rp_active.eq(0)
                with m.Else():
                    m.d.sync += rp_pix.eq(rp_pix + 1)
            with m.Else():
                m.d.sync += [rp_beat.eq(rp_beat + 1), rp_boff.eq(rp_boff + BEAT_BYTES)]
        # gather: a pixel has Pi/8 on-chip beats and min(Pi/8, rp_inbeats) DDR beats, which
        # is what `take` gives since rp_beat < Pi/8 there.

        # ---------------------------------------------------------------- weight prefetch
        pf_left = Signal(16)                # words still to request
        pf_rx = Signal(16)                  # words still to receive
        pf_beat = Signal(range(max(wbeats, po, 2)))
        pf_word = Signal(max(w_aw, par_aw))
        pf_last_beat = Mux(op_params, po - 1, wbeats - 1)
        m.d.comb += pf_valid.eq(pf_left != 0)
        with m.If(pf_acc):
            m.d.sync += [pf_left.eq(pf_left - 1),
                         pf_cur.eq(pf_cur + Mux(op_params, po * BEAT_BYTES, wword_bytes))]
        m.d.comb += [
            w_w_addr.eq(pf_word), w_w_data.eq(rd.payload.data),
            w_w_en.eq(Mux(beat_for[Tag.WGT] & ~op_params, C(1, 1) << pf_beat, 0)),
        ]
        m.d.comb += [
            p_w.addr.eq(pf_word),
            p_w.data.eq(rd.payload.data[:PARAM_LANE_BITS].replicate(po)),
            p_w.en.eq(Mux(beat_for[Tag.WGT] & op_params, C(1, 1) << pf_beat, 0)),
        ]
        with m.If(beat_for[Tag.WGT]):
            with m.If(pf_beat == pf_last_beat):
                m.d.sync += [pf_beat.eq(0), pf_word.eq(pf_word + 1), pf_rx.eq(pf_rx - 1)]
            with m.Else():
                m.d.sync += pf_beat.eq(pf_beat + 1)

        # ---------------------------------------------------------------- output path
        ddr_pk = BytePacker(L, BEAT_BYTES)
        sq_pk = BytePacker(po, pi)
        m.submodules.ddr_packer = ddr_pk
        m.submodules.sq_packer = sq_pk
        m.submodules.wfifo = wfifo = fifo.SyncFIFOBuffered(width=64 + 8, depth=8)
        # records from the active core
        rec_valid, rec_first, rec_last = Signal(), Signal(), Signal()
        rec_data = Signal(8 * L)
        rec_ready = Signal()
        # registered copies of the op decode and of GAP's first/last pass (records flow only
        # in PASS_RUN, long after the command and pidx last changed): the record mux feeds
        # the byte packers, so it must not add the decode's levels to theirs
        rec_max, rec_gap = Signal(), Signal()
        gap_first, gap_last = Signal(), Signal()
        m.d.sync += [rec_max.eq(op_max), rec_gap.eq(op_gap),
                     gap_first.eq(pidx == 0), gap_last.eq(pidx == nic_m1)]
        with m.If(rec_max):
            m.d.comb += [rec_valid.eq(mpool.o_stream.valid & core_en),
                         rec_data.eq(mpool.o_stream.payload.data),
                         rec_first.eq(mpool.o_stream.payload.icb == 0),
                         rec_last.eq(mpool.o_stream.payload.icb == nic_m1)]
        with m.Elif(rec_gap):
            m.d.comb += [rec_valid.eq(gap.o_stream.valid),
                         rec_data.eq(gap.o_stream.payload.data),
                         rec_first.eq(gap_first),
                         rec_last.eq(gap_last)]
        with m.Else():
            m.d.comb += [rec_valid.eq(conv.o_stream.valid & core_en),
                         rec_data.eq(conv.o_stream.payload.data),
                         rec_first.eq(conv.o_stream.payload.og == 0),
                         rec_last.eq(conv.o_stream.payload.og == p_nog_m1)]
        m.d.comb += [
            mpool.o_stream.ready.eq(rec_ready & core_en & rec_max),
            gap.o_stream.ready.eq(rec_ready & rec_gap),
            conv.o_stream.ready.eq(rec_ready & core_en & ~rec_max & ~rec_gap),
        ]
        to_ddr = out_ddr
        to_sq = dst_sq
        ddr_ok = ~to_ddr | ddr_pk.i_stream.ready
        sq_ok = ~to_sq | sq_pk.i_stream.ready
        m.d.comb += [
            rec_ready.eq(ddr_ok & sq_ok),
            ddr_pk.i_stream.valid.eq(rec_valid & to_ddr & sq_ok),
            ddr_pk.i_stream.payload.data.eq(rec_data),
            ddr_pk.i_stream.payload.first.eq(rec_first),
            ddr_pk.i_stream.payload.last.eq(rec_last),
            sq_pk.i_stream.valid.eq(rec_valid & to_sq & ddr_ok),
            sq_pk.i_stream.payload.data.eq(rec_data[:8 * po]),
            sq_pk.i_stream.payload.first.eq(rec_first),
            sq_pk.i_stream.payload.last.eq(rec_last),
            sq_pk.nbytes.eq(cmd.out_bytes),
            sq_pk.ofs.eq(0),
            ddr_pk.nbytes.eq(p_nbytes),
            ddr_pk.rec_bytes.eq(Mux(rec_max | rec_gap, pi, po)),
            sq_pk.rec_bytes.eq(po),
        ]
        ofs = Signal(3)
        m.d.comb += ddr_pk.ofs.eq(ofs)
        with m.If(ddr_pk.i_stream.valid & ddr_pk.i_stream.ready & rec_last):
            m.d.sync += ofs.eq(ofs + cmd.out_pix[:3])
        # squeeze buffer writes
        sq_wa = Signal(sq_aw)
        m.d.comb += [sq_pk.o_stream.ready.eq(1), sq_w.addr.eq(sq_wa),
                     sq_w.data.eq(sq_pk.o_stream.payload.data), sq_w.en.eq(sq_pk.o_stream.valid)]
        with m.If(sq_pk.o_stream.valid):
            m.d.sync += sq_wa.eq(sq_wa + 1)
        # DDR beats -> FIFO -> write DMA
        m.d.comb += [
            wfifo.w_data.eq(Cat(ddr_pk.o_stream.payload.data, ddr_pk.o_stream.payload.strb)),
            wfifo.w_en.eq(ddr_pk.o_stream.valid),
            ddr_pk.o_stream.ready.eq(wfifo.w_rdy),
            dma.i_stream.valid.eq(wfifo.r_rdy),
            dma.i_stream.payload.data.eq(wfifo.r_data[:64]),
            dma.i_stream.payload.strb.eq(wfifo.r_data[64:]),
            wfifo.r_en.eq(dma.i_stream.ready),
        ]
        # write requests: one per output pixel
        rq_active = Signal()
        rq_addr = Signal(32)
        rq_left = Signal(2 * DIM_BITS + 1)
        rq_len = Signal(32)
        m.d.comb += [
            rq_len.eq(((rq_addr[:3] + p_nbytes + 7) >> 3) << 3),
            dma.wr_req.valid.eq(rq_active),
            dma.wr_req.payload.addr.eq(Cat(C(0, 3), rq_addr[3:])),
            dma.wr_req.payload.length.eq(rq_len),
        ]
        with m.If(dma.wr_req.valid & dma.wr_req.ready):
            m.d.sync += [rq_addr.eq(rq_addr + cmd.out_pix), rq_left.eq(rq_left - 1)]
            with m.If(rq_left == 1):
                m.d.sync += rq_active.eq(0)

        out_idle = (~rq_active & ddr_pk.idle & sq_pk.idle & (wfifo.r_level == 0)
                    & ~dma.wr_busy)

        # ---------------------------------------------------------------- sequencer
        m.d.comb += regs.layer_cycles_data.eq(layer_cyc)
        m.d.comb += regs.layer_cycles_index.eq(idx[:ceil_log2(MAX_LAYER_CYCLES)])
        busy = Signal()
        m.d.comb += regs.busy.eq(busy)
        m.d.sync += layer_cyc.eq(layer_cyc + 1)
        geo_bad = Signal(Geo)

        def fail(code, geo=Geo.NONE):
            m.d.sync += [err_code.eq(code), err_geo.eq(geo), err_idx.eq(idx), err_flag.eq(1),
                         done_set.eq(1)]
            m.next = "IDLE"

        ring_need_ok = cap >= need_rows
        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(regs.start):
                    m.d.sync += [idx.eq(0), err_flag.eq(0), err_code.eq(Err.NONE),
                                 err_geo.eq(Geo.NONE), wsel.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += busy.eq(1)
                m.d.sync += [fetch_cnt.eq(0), layer_cyc.eq(1),
                             fetch_addr.eq(regs.cmd_base + (idx << 6))]
                with m.If((regs.cmd_count != 0) & (idx == regs.cmd_count)):
                    fail(Err.NO_END)
                with m.Else():
                    m.next = "FETCH_REQ"
            with m.State("FETCH_REQ"):
                m.d.comb += [busy.eq(1), fetch_req.eq(1)]
                with m.If(fetch_acc):
                    m.next = "FETCH_WAIT"
            with m.State("FETCH_WAIT"):
                m.d.comb += busy.eq(1)
                with m.If(fetch_cnt == COMMAND_BYTES // BEAT_BYTES):
                    with m.If(dma.rd_error):
                        fail(Err.DMA_READ)
                    with m.Else():
                        m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += busy.eq(1)
                m.d.sync += [
                    kk.eq(cv.k * cv.k), hw.eq(cv.h * cv.w), howo.eq(cv.ho * cv.wo),
                    row_words.eq(cv.w * cv.n_ic),
                    nw_out.eq((cmd.out_bytes + pi - 1) >> exact_log2(pi)),
                    steps_a.eq(cv.wo * cv.n_og),
                    gather.eq(op_gap),
                    wsel.eq(cmd.wbuf),
                ]
                with m.Switch(cmd.op.as_value()):
                    with m.Case(Op.END):
                        m.d.sync += [done_set.eq(1), layer_cyc.eq(layer_cyc)]
                        m.next = "IDLE"
                    with m.Case(Op.CONV, Op.EXPAND, Op.MAXPOOL, Op.GAP, Op.LOAD, Op.PARAMS):
                        m.next = "SETUP2"
                    with m.Default():
                        fail(Err.OPCODE)
            with m.State("SETUP2"):
                m.d.comb += [busy.eq(1), seq_par.eq(1)]
                m.d.sync += [
                    wpo.eq(kk * cv.n_ic),
                    sq_in_words.eq(hw * cv.n_ic),
                    sq_out_words.eq(howo * nw_out),
                    nrows.eq(Mux(op_gap, cv.n_ic, cv.h)),
                    rowsz.eq(Mux(op_gap, hw, row_words)),
                    need_rows.eq(Mux(op_gap, 1, Mux(op_max, 3, cv.k))),
                    cap.eq(0), cap_acc.eq(0),
                ]
                m.next = "SETUP3"
            with m.State("SETUP3"):
                m.d.comb += busy.eq(1)
                m.d.sync += [
                    gap_mult.eq(p_scale.data[numeric.ACC_BITS:numeric.ACC_BITS + numeric.MULT_BITS]),
                    gap_shift.eq(p_scale.data[numeric.ACC_BITS + numeric.MULT_BITS:PARAM_LANE_BITS]),
                    conv_words.eq(cv.n_og * wpo),
                    exp_words.eq(cmd.n_og2 * (cv.n_ic * 9)),
                    # the two expands' channels are contiguous and the 1x1's fill whole
                    # groups: one pass, per pixel the 1x1 groups then the 3x3 groups
                    ilv.eq(op_expand & (cmd.out_off2 == cmd.out_bytes)
                           & (cmd.out_bytes == cv.n_og * po)),
                    steps_row.eq(Mux(op_max, cv.wo * cv.n_ic * 9, steps_a * wpo)),
                ]
                with m.If(need_rows > nrows):
                    m.d.sync += need_rows.eq(nrows)
                m.next = "CAP"
            with m.State("CAP"):
                m.d.comb += busy.eq(1)
                with m.If(uses_ring & (cap < MAX_CAP_ROWS) & (cap < nrows)
                          & (cap_acc + rowsz <= self._ring_depth)):
                    m.d.sync += [cap.eq(cap + 1), cap_acc.eq(cap_acc + rowsz)]
                with m.Else():
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += busy.eq(1)
                wtot = conv_words + Mux(op_expand, exp_words, 0)
                ptot = cv.param_base + Mux(op_gap, 1, cv.n_og + Mux(op_expand, cmd.n_og2, 0))
                uses_w = op_conv | op_expand
                uses_p = op_conv | op_expand | op_gap
                # (pad is 2 bits: 0..3, all of which ConvCore runs)
                k_ok = (((cv.k == 1) | (cv.k == 3) | (cv.k == 7))
                        & ((cv.stride == 1) | (cv.stride == 2)))
                with m.If((op_conv | op_expand) & ~k_ok | op_max & ((cv.k != 3) | (cv.stride != 2) | (cv.pad != 0))
                          | op_expand & ((cv.k != 1) | (cv.stride != 1) | (cv.pad != 0))):
                    fail(Err.GEOMETRY, Geo.KERNEL)
                with m.Elif(op_expand & (~src_sq | (cmd.dst != Loc.DDR))
                            | (op_max | op_gap) & (src_sq | (cmd.dst != Loc.DDR))):
                    fail(Err.GEOMETRY, Geo.SOURCE)
                with m.Elif(uses_ring & ((cmd.in_pix[:3] != 0) | (cmd.in_addr[:3] != 0)
                                         | (cmd.in_pix == 0)
                                         | ~op_gap & (cmd.in_pix > cv.n_ic * pi)
                                         | op_gap & (cmd.in_pix <= (cv.n_ic - 1) * pi))):
                    fail(Err.GEOMETRY, Geo.ALIGN)
                with m.Elif(uses_ring & ~ring_need_ok):
                    fail(Err.GEOMETRY, Geo.RING)
                with m.Elif((op_conv | op_expand) & src_sq & (sq_in_words > self._squeeze_depth)):
                    fail(Err.GEOMETRY, Geo.SQUEEZE_IN)
                with m.Elif(dst_sq & (sq_out_words > self._squeeze_depth)):
                    fail(Err.GEOMETRY, Geo.SQUEEZE_OUT)
                with m.Elif(uses_w & (cv.weight_base + wtot > cfg.weight_words)):
                    fail(Err.GEOMETRY, Geo.WEIGHTS)
                with m.Elif(op_params & (cv.param_base + cmd.pf_words > self._param_depth)):
                    fail(Err.GEOMETRY, Geo.PARAMS)
                with m.Elif(~op_params & ((cmd.pf_words > cfg.weight_words) if streamed
                                          else Mux(cmd.op == Op.LOAD,
                                                   cv.weight_base + cmd.pf_words
                                                   > cfg.weight_words,
                                                   cmd.pf_words != 0))):
                    fail(Err.GEOMETRY, Geo.PREFETCH)
                with m.Elif(uses_p & (ptot > self._param_depth)):
                    fail(Err.GEOMETRY, Geo.PARAMS)
                with m.Elif((op_conv | op_expand) & (cmd.out_bytes > cv.n_og * po)
                            | op_expand & (cmd.out_bytes2 > cmd.n_og2 * po)
                            | (op_max | op_gap) & (cmd.out_bytes > cv.n_ic * pi)):
                    fail(Err.GEOMETRY, Geo.OUTPUT)
                with m.Else():
                    m.next = "LAUNCH"
            with m.State("LAUNCH"):
                m.d.comb += busy.eq(1)
                # input loader
                m.d.sync += [
                    rows_loaded.eq(0), need_lo.eq(lo0), need_hi.eq(hi0), gate_on.eq(0),
                    ld_active.eq(uses_ring), rp_active.eq(uses_ring),
                    ld_row.eq(0), ld_req.eq(0), ld_req_nz.eq(0),
                    ld_addr.eq(cmd.in_addr), ld_row_addr.eq(cmd.in_addr),
                    ld_nreq.eq(Mux(op_gap, hw, 1)),
                    ld_nreq_m1.eq(Mux(op_gap, hw, 1) - 1),
                    ld_row_step.eq(Mux(op_gap, pi, cv.w * cmd.in_pix)),
                    ld_row_bytes.eq(cv.w * cmd.in_pix),
                    ld_req_step.eq(cmd.in_pix),
                    ld_pixrem.eq(cmd.in_pix),
                    rp_beat.eq(0), rp_sub.eq(0), rp_pix.eq(0), rp_boff.eq(0), rp_wa.eq(0),
                    rp_npix.eq(Mux(op_gap, hw, cv.w)),
                    rp_npix_m1.eq(Mux(op_gap, hw, cv.w) - 1),
                    rp_wbeats.eq(Mux(op_gap, beats_per_word, cv.n_ic * beats_per_word)),
                    rp_wbeats_m1.eq(Mux(op_gap, beats_per_word, cv.n_ic * beats_per_word) - 1),
                    rp_inbeats.eq(cmd.in_pix >> 3),
                    rp_valid.eq(cmd.in_bytes),
                    # weights
                    pf_left.eq(cmd.pf_words), pf_rx.eq(cmd.pf_words), pf_cur.eq(cmd.pf_addr),
                    pf_beat.eq(0),
                    pf_word.eq(Mux(op_params, cv.param_base,
                                   Mux(cmd.wbuf, 0, cfg.weight_words) if streamed
                                   else cv.weight_base)),
                    # outputs
                    sq_wa.eq(0),
                    pidx.eq(0),
                    plane_base.eq(0),
                    n_pass.eq(Mux(op_expand, Mux(ilv, 1, 2),
                                  Mux(op_gap, cv.n_ic,
                                      Mux((cmd.op == Op.LOAD) | op_params, 0, 1)))),
                ]
                m.next = "PASS_SETUP"
            with m.State("PASS_SETUP"):
                m.d.comb += busy.eq(1)
                second = op_expand & (pidx == 1)
                with m.If(pidx == n_pass):
                    m.next = "DRAIN"
                with m.Elif(~rq_active & (~op_gap | (rows_loaded > pidx))):
                    m.d.sync += [
                        *(getattr(ccmd, name).eq(getattr(cv, name))
                          for name, _ in data.Layout.cast(ConvCommand)),
                        ccmd.n_og1.eq(0),
                        p_nog.eq(cv.n_og),
                        p_nbytes.eq(cmd.out_bytes),
                        p_base.eq(cmd.out_addr),
                        g_row.eq(0), g_step.eq(0),
                        need_lo.eq(lo0), need_hi.eq(hi0),
                        g_stride.eq(Mux(op_max, 2, cv.stride)),
                    ]
                    with m.If(ilv):
                        m.d.sync += [
                            ccmd.k.eq(3), ccmd.pad.eq(1), ccmd.n_og1.eq(cv.n_og),
                            ccmd.n_og.eq(cv.n_og + cmd.n_og2),
                            p_nog.eq(cv.n_og + cmd.n_og2),
                            p_nbytes.eq(cmd.out_bytes + cmd.out_bytes2),
                        ]
                    with m.If(second):
                        m.d.sync += [
                            ccmd.k.eq(3), ccmd.pad.eq(1), ccmd.n_og.eq(cmd.n_og2),
                            ccmd.weight_base.eq(cv.weight_base + conv_words),
                            ccmd.param_base.eq(cv.param_base + cv.n_og),
                            p_nog.eq(cmd.n_og2),
                            p_nbytes.eq(cmd.out_bytes2),
                            p_base.eq(cmd.out_addr + cmd.out_off2),
                        ]
                    # one write request per output pixel (GAP: one pixel over all passes)
                    with m.If(out_ddr & (~op_gap | (pidx == 0))):
                        base = Mux(second, cmd.out_addr + cmd.out_off2, cmd.out_addr)
                        m.d.sync += [rq_active.eq(1), rq_addr.eq(base), ofs.eq(base[:3]),
                                     rq_left.eq(Mux(op_gap, 1, howo))]
                    m.next = "PASS_START"
            with m.State("PASS_START"):
                m.d.comb += busy.eq(1)
                m.d.comb += [start_conv.eq(op_conv | op_expand), start_max.eq(op_max),
                             start_gap.eq(op_gap)]
                m.d.sync += gate_on.eq(uses_ring & ~op_gap)
                m.next = "PASS_RUN"
            with m.State("PASS_RUN"):
                m.d.comb += busy.eq(1)
                fin = Mux(op_gap, gap.done, Mux(op_max, mpool.done, conv.done) & core_en)
                with m.If(fin):
                    m.d.sync += [pidx.eq(pidx + 1), gate_on.eq(0),
                                 plane_base.eq(plane_base + hw)]
                    m.next = "PASS_SETUP"
            with m.State("DRAIN"):
                m.d.comb += busy.eq(1)
                with m.If(out_idle & ~ld_active & ~rp_active & (pf_left == 0) & (pf_rx == 0)
                          & ~tags.r_rdy):
                    with m.If(dma.rd_error):
                        fail(Err.DMA_READ)
                    with m.Elif(dma.wr_error):
                        fail(Err.DMA_WRITE)
                    with m.Else():
                        m.next = "NEXT"
            with m.State("NEXT"):
                m.d.comb += [busy.eq(1), regs.layer_cycles_we.eq(idx < MAX_LAYER_CYCLES)]
                m.d.sync += idx.eq(idx + 1)
                m.next = "FETCH"

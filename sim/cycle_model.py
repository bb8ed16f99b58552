"""Analytic cycle model of the engine: predicts each pass's cycles from an EngineConfig.

The model follows the engine's loop structure (docs/architecture.md):

* a convolution pass issues one MAC-array step per cycle: ``Ho*Wo * n_og * k*k * n_ic`` steps,
  plus a fixed pipeline fill;
* its DDR traffic is the input read through the ring buffer (once per weight tile when the
  layer's weights do not fit one buffer), the output written, and, in streamed mode, the weights;
  reads and writes use the HP port's independent channels at ``BEAT_BYTES`` per cycle each, and a
  pass takes the longer of its compute and its DDR time (the ring buffer and the double-buffered
  weights decouple the two);
* a Fire module is a squeeze pass (DDR -> on-chip squeeze buffer) and an expand pass (squeeze
  buffer -> DDR, expand1x1 then expand3x3 output groups per pixel);
* the first convolution, whose 3 input channels would fill 3 of ``in_lanes`` lanes, runs on an
  input the host lays out as k*k*3-channel patches (im2col), i.e. as a 1x1 convolution;
* max-pool reads one activation word per cycle per window tap; global average pool one word per
  cycle.

It evaluates a whole network in milliseconds, so design-space sweeps are cheap.
"""
from __future__ import annotations

import functools
from collections import deque
from dataclasses import asdict, dataclass

from squeezeforge.hw.config import EngineConfig
from squeezeforge.hw.conv import conv_overhead as conv_pass_overhead
from squeezeforge.quant.network import Network

__all__ = ["PassCycles", "estimate_network", "estimate_program", "summarize", "BEAT_BYTES"]

BEAT_BYTES = 8            # 64-bit AXI data
DDR_READ_LATENCY = 20     # cycles from a read request to its first beat (model of the HP port)


def _up(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class PassCycles:
    name: str
    kind: str
    macs: int
    ideal_cycles: int          # MACs / MAC units (0 for pools)
    compute_cycles: int
    ddr_read_bytes: int
    ddr_write_bytes: int
    cycles: int

    @property
    def utilization(self) -> float:
        return self.ideal_cycles / self.cycles if self.cycles else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["utilization"] = round(self.utilization, 4)
        return d


@functools.lru_cache(maxsize=8)
def _synthetic_qm(net: Network, size: int):
    from squeezeforge.quant.model import synthetic_model
    from squeezeforge.quant.quantize import quantize
    return quantize(synthetic_model(net), size=size)


def estimate_network(net: Network, cfg: EngineConfig, size: int = 227, **compile_kw) -> list[PassCycles]:
    """Cycle estimate of ``net`` on ``cfg``: compiles the network (weights do not change the
    cycle count, so seeded synthetic ones are used) and runs :func:`estimate_program`."""
    from squeezeforge.host.schedule import compile_program
    return estimate_program(compile_program(_synthetic_qm(net, size), cfg, size, **compile_kw))


def setup_passes(passes: list[PassCycles], cfg: EngineConfig) -> int:
    """How many leading passes are the program's setup (PARAMS; resident: the weight LOAD),
    which a warm start skips (``Program.warm_index``)."""
    n = 0
    while n < len(passes) and (passes[n].kind == "params" or
                               passes[n].kind == "load" and cfg.weight_mode == "resident"):
        n += 1
    return n


def summarize(passes: list[PassCycles], cfg: EngineConfig) -> dict:
    """Totals of a cold run (``cycles``, DDR bytes: setup included) and of a warm start
    (``warm_cycles``, ``warm_ddr_read_bytes``: the setup commands skipped)."""
    total = sum(p.cycles for p in passes)
    macs = sum(p.macs for p in passes)
    rd = sum(p.ddr_read_bytes for p in passes)
    wr = sum(p.ddr_write_bytes for p in passes)
    setup = passes[:setup_passes(passes, cfg)]
    s_cyc = sum(p.cycles for p in setup) + len(setup)     # + each one's NEXT cycle
    s_rd = sum(p.ddr_read_bytes for p in setup)
    warm = total - s_cyc
    return dict(config=cfg.name, cycles=total, macs=macs, ideal_cycles=_up(macs, cfg.macs),
                mac_utilization=round(macs / (cfg.macs * total), 4) if total else 0.0,
                ddr_read_bytes=rd, ddr_write_bytes=wr,
                ms_at_clock=round(total / (cfg.clock_mhz * 1e3), 3),
                setup_cycles=s_cyc, warm_cycles=warm, warm_ddr_read_bytes=rd - s_rd,
                warm_mac_utilization=round(macs / (cfg.macs * warm), 4) if warm else 0.0,
                warm_ms_at_clock=round(warm / (cfg.clock_mhz * 1e3), 3),
                passes=[p.to_dict() for p in passes])


# -- per-command model of a compiled program ------------------------------------------------
# Fixed costs of the engine's sequencer (cycles), calibrated against the RTL (hw/engine.py, DDR
# model with READ_LATENCY cycles per read burst); `squeezeforge bench` and
# tests/test_cycle_model.py compare the model with RTL runs layer by layer.
COMMAND_FETCH = 8 + DDR_READ_LATENCY     # read one 64-byte record
SETUP = 8                                # DECODE .. LAUNCH (+ one cycle per ring row in CAP)
POOL_OVERHEAD = 8
WRITE_START = 17                         # a write-bound pass from the squeeze buffer: first output
WRITE_TAIL = 9                           # last write beat -> B response -> DRAIN ends
READ_TAIL = 5                            # last read beat (weight prefetch) -> DRAIN ends
END_CYCLES = 33                          # START -> first fetch, END's fetch -> DONE, plus one
                                         # cycle per command (its NEXT state): CYCLES counts
                                         # them, no LAYER_CYCLES entry does
GAP_ADJUST = 46                          # the GAP pass hand-over and tail (calibrated: v1.0, v1.1)
CORE_SETUP = 2                           # the core's setup, frozen with it until its first rows are in
RING_ADJUST = -2                         # gating start-up of a pass from the ring
OUTSTANDING = 8                          # read bursts in flight (hw/engine.py DMA_OUTSTANDING)
MAX_BURST = 16                           # beats per AXI burst
AR_GAP = 2                               # cycles between read requests on AR


def _ring_rows(cfg: EngineConfig, row_words: int, rows: int) -> int:
    from squeezeforge.hw.engine import MAX_CAP_ROWS
    words = cfg.act_buffer_bytes // cfg.in_lanes
    depth = 1 << (words.bit_length() - 1)
    return max(1, min(MAX_CAP_ROWS, rows, depth // max(row_words, 1)))


class _ReadPath:
    """Burst-level model of the engine's read path during one ring pass (hw/engine.py,
    hw/axi.py AxiReadDma, the DDR model): input-row requests have priority over the weight
    prefetch's one-word requests, which fill every cycle no row request is pending.

    A request accepted at cycle ``A`` loads its first burst at ``A + 1``, one burst per cycle
    while fewer than ``OUTSTANDING`` bursts are in flight (a burst leaves when its last beat is
    taken); the burst is on AR the next cycle and its first beat can be taken
    ``DDR_READ_LATENCY`` later, after every earlier burst's beats (the data come back in order,
    one beat per cycle). The next request is accepted the cycle after the previous one's last
    burst loads. A weight beat is taken as it arrives; the repacker takes an input row's beats
    one per cycle, plus ``pad`` cycles after each pixel's ``pix_beats`` beats (on-chip beats the
    pixel lacks in DDR). So a row requested while the prefetch streams waits for the weight
    bursts already in flight, which is what a row-level timeline cannot see.
    """
    __slots__ = ("t_free", "gen_free", "ends", "weights", "wi")

    def __init__(self, t0: int, weights: list):
        self.t_free = t0                 # the next beat can be taken from this cycle on
        self.gen_free = t0 - 2           # a request can be accepted from this cycle on
        self.ends = deque(maxlen=OUTSTANDING)     # last-beat cycles of the latest bursts
        self.weights = weights           # burst lengths (beats) of each weight request
        self.wi = 0

    def _issue(self, a: int, bursts, pix_beats: int = 1, pad: int = 0) -> int:
        ends, t_free = self.ends, self.t_free
        load = a
        j = 0                            # beats of the request before this burst
        for n in bursts:
            load = max(load + 1, ends[0] + 1) if len(ends) == OUTSTANDING else load + 1
            first = max(load + 1 + DDR_READ_LATENCY, t_free)
            last = first + n - 1
            if pad:
                last += ((j + n - 1) // pix_beats - j // pix_beats) * pad
                t_free = last + 1 + (pad if (j + n) % pix_beats == 0 else 0)
            else:
                t_free = last + 1
            ends.append(last)
            j += n
        self.t_free = t_free
        self.gen_free = load + 1
        return t_free

    def weights_before(self, v: int) -> None:
        """Weight requests accepted at cycles before ``v`` (when a row request turns valid)."""
        w = self.weights
        while self.wi < len(w) and self.gen_free < v:
            self._issue(self.gen_free, w[self.wi])
            self.wi += 1

    def row(self, v: int, bursts, row_cycles: int, pix_beats: int, pad: int) -> int:
        """A row request valid from cycle ``v``; returns the cycle its last beat is in."""
        self.weights_before(v)
        a = max(v, self.gen_free)
        if self.wi == len(self.weights):
            # no weight request interleaves: the row streams right after the data before it
            self.t_free = max(a + 2 + DDR_READ_LATENCY, self.t_free) + row_cycles
            self.gen_free = a            # (not needed again: only rows follow)
            return self.t_free
        return self._issue(a, bursts(), pix_beats, pad)

    def finish(self) -> int:
        """Every remaining weight request; the cycle the read channel's last beat is in."""
        self.weights_before(1 << 62)
        return self.t_free


def _ring_pass(h: int, row_bursts, row_cycles: int, pix_beats: int, pad: int, cap: int,
               ho: int, lo, hi, row_steps: int, row_wbeats: int, pix_wbeats: int,
               first_rec: int, weights: list, t0: int = 0) -> tuple[int, int, int]:
    """Row-level timeline of a pass that streams its input through the ring buffer.

    The loader requests input rows in order while fewer than ``cap`` rows are held (the read
    path: :class:`_ReadPath`; ``row_bursts(i)`` gives row ``i``'s burst lengths). Output row
    ``r`` computes (``row_steps`` cycles) once rows ``lo(r)..hi(r)`` are in; the end of row
    ``r - 1`` frees the rows below ``lo(r)``, which lets the loader request the row ``cap``
    above. Its ``row_wbeats`` output beats leave at one per cycle on the write channel as its
    records complete (the last record's ``pix_wbeats`` after the row's computation). Returns
    (compute end, the read channel's last beat, incl. the weight prefetch, last output beat)."""
    rp = _ReadPath(t0, weights)
    arrive = [0] * h                 # cycle the last beat of input row i is in the ring
    freed_at = [0] * (h + 1)         # cycle row i is freed
    t_c = t0                         # compute free
    t_w = t0                         # write channel free
    nxt = 0                          # next row to request
    freed = 0

    def request(i: int) -> int:
        v = t0 - 2 if i < cap else freed_at[i - cap]
        return rp.row(v, lambda: row_bursts(i), row_cycles, pix_beats, pad)

    for r in range(ho):
        # the last step of row r - 1 frees the rows row r no longer needs
        new_lo = max(0, min(h, lo(r)))
        while freed < new_lo:
            freed_at[freed] = t_c
            freed += 1
        need = min(h - 1, hi(r))
        while nxt <= need:
            arrive[nxt] = request(nxt)
            nxt += 1
        start = max(t_c, arrive[need]) + (CORE_SETUP if r == 0 else 0)
        t_c = start + row_steps
        if row_wbeats:
            # the row's beats leave once its first record is out, at one per cycle, and the
            # last record's after the row's computation
            t_w = max(max(t_w, start + first_rec) + row_wbeats, t_c + pix_wbeats)
    # rows no output needs (bottom rows past the last window) are still loaded
    # the last row's end frees the rows below lo(ho) (and nothing is left held at the end)
    while freed < h:
        freed_at[freed] = t_c
        freed += 1
    while nxt < h:
        request(nxt)
        nxt += 1
    return t_c, rp.finish(), t_w


def estimate_program(program) -> list[PassCycles]:
    """Cycle estimate of every command of a compiled :class:`~squeezeforge.host.schedule.Program`.

    A command costs its fetch and setup, then its pass(es): convolutions and max-pools that
    read DDR follow :func:`_ring_pass` (row-granular overlap of input loading, computation and
    output writing, the ring buffer's row capacity); passes from the squeeze buffer take the
    longer of their steps and their output beats; GAP gathers one channel word of every pixel
    per plane (short read bursts, bounded by ``OUTSTANDING`` bursts in flight). The weight
    prefetch for the next command uses the read channel when the input loader does not. MACs
    are those of the network layers the command computes (the compiler's count).
    """
    from squeezeforge.hw.axi import split_bursts
    from squeezeforge.hw.commands import Op
    cfg = program.cfg
    wb = cfg.weight_word_bytes
    pi, po = cfg.in_lanes, cfg.out_lanes
    conv_overhead = conv_pass_overhead(pi, cfg.dsp_packing)   # 2 + 13 + 2 at 16x16
    out = []
    for c in program.commands:
        f = c.fields
        op = f["op"]
        cv = f["conv"]
        macs = c.macs
        pf = _up(f["pf_words"] * wb, BEAT_BYTES)
        rd = wr = compute = 0
        if op == Op.END:
            out.append(PassCycles(c.name, "end", 0, 0, 0, 0, 0,
                                  END_CYCLES + len(program.commands) - 1))
            continue
        fixed = COMMAND_FETCH + SETUP
        in_beats = f["in_pix"] // BEAT_BYTES
        if op == Op.LOAD:
            end = DDR_READ_LATENCY + pf + READ_TAIL if pf else 0
        elif op == Op.PARAMS:       # pf_words parameter words of Po beats
            pf = f["pf_words"] * po
            end = DDR_READ_LATENCY + pf + READ_TAIL if pf else 0
        elif op in (Op.CONV, Op.EXPAND, Op.MAXPOOL):
            k, stride, pad = cv["k"], cv["stride"], cv["pad"]
            if op == Op.MAXPOOL:
                k, stride, pad = 3, 2, 0
                row_steps = 9 * cv["wo"] * cv["n_ic"]
                out_pix = [_up(f["out_bytes"], BEAT_BYTES)]
                tail = POOL_OVERHEAD
            else:
                row_steps = cv["wo"] * cv["n_og"] * k * k * cv["n_ic"]
                out_pix = [_up(f["out_addr"] % BEAT_BYTES + f["out_bytes"], BEAT_BYTES)]
                tail = conv_overhead
            compute = row_steps * cv["ho"]
            writes = f["dst"].name == "DDR" or f["dump"]
            tail += WRITE_TAIL if writes else 0
            if op == Op.EXPAND:
                e3_steps = cv["wo"] * f["n_og2"] * 9 * cv["n_ic"]
                b2 = _up((f["out_addr"] + f["out_off2"]) % BEAT_BYTES + f["out_bytes2"],
                         BEAT_BYTES)
                compute += e3_steps * cv["ho"]
                if f["out_off2"] == f["out_bytes"] == cv["n_og"] * po:   # one interleaved pass
                    row_steps += e3_steps
                    out_pix = [_up(f["out_addr"] % BEAT_BYTES + f["out_bytes"]
                                   + f["out_bytes2"], BEAT_BYTES)]
                else:                                                 # two passes
                    out_pix.append(b2)
            if f["src"].name == "DDR":
                h, w = cv["h"], cv["w"]
                # the repacker spends one cycle per on-chip beat of a pixel (n_ic words of Pi
                # bytes); beats a pixel lacks in DDR (in_pix not a multiple of the words, e.g.
                # conv1's 147-channel patches in 152 bytes) are zero cycles that hold the read
                # channel: a row occupies it for W * max(DDR beats, on-chip beats) cycles
                row_beats = w * max(in_beats, cv["n_ic"] * _up(pi, BEAT_BYTES))
                cap = _ring_rows(cfg, w * cv["n_ic"], h)
                fixed += cap
                row_bytes = w * f["in_pix"]

                def row_bursts(i, a=f["in_addr"], n=row_bytes):
                    return [b for _, b in split_bursts(a + i * n, n)]
                pf_bursts = [[b for _, b in split_bursts(f["pf_addr"] + j * wb, wb)]
                             for j in range(f["pf_words"])]
                end_c, end_r, end_w = _ring_pass(
                    h, row_bursts, row_beats, in_beats,
                    row_beats // w - in_beats, cap, cv["ho"],
                    lambda r: r * stride - pad, lambda r: r * stride - pad + k - 1,
                    row_steps, cv["wo"] * out_pix[0] if writes else 0,
                    _up(pi if op == Op.MAXPOOL else po, BEAT_BYTES),
                    9 if op == Op.MAXPOOL else k * k * cv["n_ic"], pf_bursts)
                rd = h * w * in_beats
                # a partial last record (channels not a multiple of the lanes) leaves in
                # fewer beats than a full one: a compute-bound pass ends that much earlier
                lanes, groups = (pi, cv["n_ic"]) if op == Op.MAXPOOL else (po, cv["n_og"])
                short = 0
                if writes and op != Op.EXPAND and groups:
                    short = _up(lanes, BEAT_BYTES) - _up(f["out_bytes"] - (groups - 1) * lanes,
                                                         BEAT_BYTES)
                e = max(end_c, end_w)
                if short > 0 and end_w - end_c <= _up(lanes, BEAT_BYTES):  # writes keep up
                    e -= short
                end = max(e + tail + RING_ADJUST - CORE_SETUP, end_r + READ_TAIL)
                wr = cv["ho"] * cv["wo"] * out_pix[0] if writes else 0
            else:                       # from the squeeze buffer: one or two passes
                steps = [row_steps * cv["ho"]]
                if len(out_pix) == 2:
                    steps.append(e3_steps * cv["ho"])
                # a compute-bound pass ends with the pipeline's drain and the last record's
                # beats (the first two are in WRITE_TAIL); a write-bound one WRITE_START after
                # its output beats, whatever the pipeline's depth
                rec = _up(po, BEAT_BYTES) - 2 if writes else 0
                end = 0
                for st, ob in zip(steps, out_pix):
                    pw = cv["ho"] * cv["wo"] * ob if writes else 0
                    wr += pw
                    end += max(st + conv_overhead + rec, pw + WRITE_START)
                end = max(end + tail - conv_overhead, DDR_READ_LATENCY + pf + READ_TAIL)
        else:  # GAP: per channel word, a gather of H*W short reads, then a window sum
            hw_ = cv["h"] * cv["w"]
            beats = _up(pi, BEAT_BYTES)
            per_req = max(beats, AR_GAP, _up(DDR_READ_LATENCY + beats, OUTSTANDING))
            plane = hw_ * per_req
            compute = hw_ * cv["n_ic"]
            rd = hw_ * beats * cv["n_ic"]
            wr = _up(f["out_bytes"], BEAT_BYTES)
            # the last plane's sum, then Pi + 1 cycles through the one-lane requantizer
            end = (DDR_READ_LATENCY + plane * cv["n_ic"] + hw_ + pi + 1 + POOL_OVERHEAD
                   + WRITE_TAIL + GAP_ADJUST)
            end = max(end, DDR_READ_LATENCY + rd + pf + READ_TAIL)
        cycles = end + fixed
        out.append(PassCycles(c.name, op.name.lower(), macs, _up(macs, cfg.macs), compute,
                              (rd + pf) * BEAT_BYTES, wr * BEAT_BYTES, cycles))
    return out

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

import math
from dataclasses import asdict, dataclass

from squeezeforge.hw.config import EngineConfig
from squeezeforge.quant.network import Concat, Conv, Network, Pool

__all__ = ["PassCycles", "estimate_network", "summarize", "BEAT_BYTES"]

BEAT_BYTES = 8            # 64-bit AXI data
PIPELINE_FILL = 16        # cycles from the first step of a pass to its first output (estimate)
DDR_READ_LATENCY = 20     # cycles from a read request to its first beat (model of the HP port)


def _up(a: int, b: int) -> int:
    return -(-a // b)


def _ddr_c(c: int) -> int:
    """Bytes per pixel of a C-channel tensor in DDR (channel stride rounded up to a beat)."""
    return _up(c, BEAT_BYTES) * BEAT_BYTES


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


def _conv_steps(cfg: EngineConfig, conv: Conv, ho: int, wo: int, im2col: bool) -> tuple[int, int]:
    """(MAC-array steps, weight words) of one convolution."""
    if im2col:
        k, cin = 1, conv.reduction
    else:
        k, cin = conv.kernel, conv.cin
    n_og = _up(conv.cout, cfg.out_lanes)
    n_ic = _up(cin, cfg.in_lanes)
    words = n_og * k * k * n_ic
    return ho * wo * words, words


def _pass(cfg, name, kind, macs, compute, rd, wr) -> PassCycles:
    ddr = max(_up(rd, BEAT_BYTES), _up(wr, BEAT_BYTES))
    cycles = max(compute, ddr) + PIPELINE_FILL + DDR_READ_LATENCY
    return PassCycles(name, kind, macs, _up(macs, cfg.macs), compute, rd, wr, cycles)


def estimate_network(net: Network, cfg: EngineConfig, size: int = 227) -> list[PassCycles]:
    """Cycle estimate of every pass of ``net`` on ``cfg`` at a ``size`` x ``size`` input."""
    shapes = net.shapes(size)
    fires = {f.squeeze.name: f for f in net.fires()}
    in_fire = {c.name for f in fires.values() for c in f.convs}
    first = net.convs[0].name
    out: list[PassCycles] = []
    for l in net.layers:
        if isinstance(l, Concat):
            continue
        c, h, w = shapes[l.bottom] if not isinstance(l, Concat) else (0, 0, 0)
        co, ho, wo = shapes[l.top]
        if isinstance(l, Pool):
            n_ic = _up(c, cfg.in_lanes)
            taps = h * w if l.is_global else l.kernel * l.kernel * ho * wo
            compute = taps * n_ic
            out.append(_pass(cfg, l.name, f"{l.kind}pool", 0, compute,
                             h * w * _ddr_c(c), ho * wo * _ddr_c(co)))
            continue
        if l.name in in_fire and l.name not in fires:
            continue  # expand convs are counted with their Fire module
        if l.name in fires:
            f = fires[l.name]
            s_c, s_h, s_w = shapes[f.squeeze.top]
            steps, words = _conv_steps(cfg, f.squeeze, s_h, s_w, False)
            wbytes = words * cfg.weight_word_bytes if cfg.weight_mode == "streamed" else 0
            macs = f.squeeze.cout * f.squeeze.reduction * s_h * s_w
            out.append(_pass(cfg, f.squeeze.name, "squeeze", macs, steps,
                             h * w * _ddr_c(c) + wbytes, 0))
            e_steps, e_words, e_macs = 0, 0, 0
            for e in (f.expand1x1, f.expand3x3):
                st, wd = _conv_steps(cfg, e, s_h, s_w, False)
                e_steps += st
                e_words += wd
                e_macs += e.cout * e.reduction * s_h * s_w
            c_cat, h_cat, w_cat = shapes[f.concat.top]
            wbytes = e_words * cfg.weight_word_bytes if cfg.weight_mode == "streamed" else 0
            out.append(_pass(cfg, f.name + "/expand", "expand", e_macs, e_steps,
                             wbytes, h_cat * w_cat * _ddr_c(c_cat)))
            continue
        im2col = l.name == first and l.kernel > 1 and l.cin < cfg.in_lanes
        steps, words = _conv_steps(cfg, l, ho, wo, im2col)
        macs = l.cout * l.reduction * ho * wo
        tiles = _up(words, cfg.weight_words) if cfg.weight_mode == "streamed" else 1
        in_bytes = (ho * wo * _ddr_c(l.reduction)) if im2col else h * w * _ddr_c(c)
        wbytes = words * cfg.weight_word_bytes if cfg.weight_mode == "streamed" else 0
        out.append(_pass(cfg, l.name, "conv", macs, steps, in_bytes * tiles + wbytes,
                         ho * wo * _ddr_c(co)))
    return out


def summarize(passes: list[PassCycles], cfg: EngineConfig) -> dict:
    total = sum(p.cycles for p in passes)
    macs = sum(p.macs for p in passes)
    rd = sum(p.ddr_read_bytes for p in passes)
    wr = sum(p.ddr_write_bytes for p in passes)
    return dict(config=cfg.name, cycles=total, macs=macs, ideal_cycles=_up(macs, cfg.macs),
                mac_utilization=round(macs / (cfg.macs * total), 4) if total else 0.0,
                ddr_read_bytes=rd, ddr_write_bytes=wr,
                ms_at_clock=round(total / (cfg.clock_mhz * 1e3), 3),
                passes=[p.to_dict() for p in passes])

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
from dataclasses import asdict, dataclass

from squeezeforge.hw.config import EngineConfig
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


# -- per-command model of a compiled program ------------------------------------------------
# Calibration constants of the engine's fixed costs (cycles); tests/test_cycle_model.py and the
# RTL comparison in `squeezeforge bench` keep them honest.
COMMAND_FETCH = 8 + DDR_READ_LATENCY     # read one 64-byte record
CONV_OVERHEAD = 17                       # ConvCore setup + pipeline drain (2 + 13 + 2 at 16x16)
POOL_OVERHEAD = 8


def estimate_program(program) -> list[PassCycles]:
    """Cycle estimate of every command of a compiled :class:`~squeezeforge.host.schedule.Program`.

    Each command takes ``max(compute, DDR read beats, DDR write beats) + fixed costs``: the ring
    buffer and the weight double buffer let DDR traffic overlap computation, and the HP port's
    read and write channels are independent. MACs are those of the network layers the command
    computes (the compiler's count, without lane padding).
    """
    from squeezeforge.hw.commands import Op
    cfg = program.cfg
    wb = cfg.weight_word_bytes
    out = []
    for c in program.commands:
        f = c.fields
        op = f["op"]
        cv = f["conv"]
        macs = c.macs
        pf = _up(f["pf_words"] * wb, BEAT_BYTES)
        rd = wr = 0
        if op == Op.END:
            out.append(PassCycles(c.name, "end", 0, 0, 0, 0, 0, 0))
            continue
        if op == Op.LOAD:
            compute, fixed = 0, 0
        elif op in (Op.CONV, Op.EXPAND):
            steps = cv["ho"] * cv["wo"] * cv["n_og"] * cv["k"] ** 2 * cv["n_ic"]
            if op == Op.EXPAND:
                steps += cv["ho"] * cv["wo"] * f["n_og2"] * 9 * cv["n_ic"]
            compute, fixed = steps, CONV_OVERHEAD
            if f["src"].name == "DDR":
                rd = cv["h"] * cv["w"] * _up(f["in_bytes"], BEAT_BYTES)
            if f["dst"].name == "DDR" or f["dump"]:
                wr = cv["ho"] * cv["wo"] * (_up(f["out_bytes"], BEAT_BYTES)
                                            + _up(f["out_bytes2"], BEAT_BYTES))
        elif op == Op.MAXPOOL:
            compute, fixed = 9 * cv["ho"] * cv["wo"] * cv["n_ic"], POOL_OVERHEAD
            rd = cv["h"] * cv["w"] * _up(f["in_bytes"], BEAT_BYTES)
            wr = cv["ho"] * cv["wo"] * _up(f["out_bytes"], BEAT_BYTES)
        else:  # GAP
            compute, fixed = cv["h"] * cv["w"] * cv["n_ic"], POOL_OVERHEAD
            rd = cv["h"] * cv["w"] * _up(f["in_bytes"], BEAT_BYTES)
            wr = _up(f["out_bytes"], BEAT_BYTES)
        cycles = max(compute, rd + pf, wr) + fixed + COMMAND_FETCH
        out.append(PassCycles(c.name, op.name.lower(), macs, _up(macs, cfg.macs), compute,
                              (rd + pf) * BEAT_BYTES, wr * BEAT_BYTES, cycles))
    return out


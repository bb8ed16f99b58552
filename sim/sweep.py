"""Design-space sweep: the fastest engine configuration that fits a device.

For every combination of lane counts and weight modes (and weight-buffer depths for streamed
mode) the analytic resource model (:meth:`EngineConfig.resources`) decides whether the
configuration fits the device; the cycle model (:func:`estimate_program` on the compiled
program) gives its cycles per inference. The result is sorted fastest first. Yosys confirms
the winner's resources (`squeezeforge estimate --config ...`).
"""
from __future__ import annotations

import itertools

from squeezeforge.hw.config import DEVICES, ConfigError, EngineConfig
from squeezeforge.quant.network import Network

__all__ = ["sweep", "LANES", "WEIGHT_WORDS"]

LANES = (8, 16, 32, 64)
WEIGHT_WORDS = (256, 512, 768, 1024, 1536)


def _candidates(device: str):
    for pi, po, mode, words in itertools.product(LANES, LANES, ("streamed", "resident"),
                                                 WEIGHT_WORDS):
        try:
            yield EngineConfig(f"{pi}x{po}-{mode}-{words}", device, pi, po, mode, words,
                               squeeze_buffer_bytes=(64 if pi <= 16 else 128) * 1024)
        except ConfigError:
            continue


def sweep(net: Network, device: str, size: int = 227, progress=None) -> list[dict]:
    """All fitting configurations with their estimated cycles, fastest first."""
    from squeezeforge.host.schedule import ScheduleError, compile_program
    from squeezeforge.sim.cycle_model import _synthetic_qm, estimate_program, summarize
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")
    qm = _synthetic_qm(net, size)
    rows = []
    cands = [c for c in _candidates(device)]
    for cfg in (progress(cands) if progress else cands):
        try:
            cfg.check_fit()
            prog = compile_program(qm, cfg, size)
        except (ConfigError, ScheduleError):
            continue
        s = summarize(estimate_program(prog), cfg)
        rows.append(dict(config=cfg.name, in_lanes=cfg.in_lanes, out_lanes=cfg.out_lanes,
                         weight_mode=cfg.weight_mode, weight_words=cfg.weight_words,
                         cycles=s["cycles"], mac_utilization=s["mac_utilization"],
                         ddr_bytes=s["ddr_read_bytes"] + s["ddr_write_bytes"],
                         **cfg.resources()))
    rows.sort(key=lambda r: (r["cycles"], r["dsp"], r["ramb36"]))
    return rows

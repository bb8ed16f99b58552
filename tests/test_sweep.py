"""Design-space sweep: only fitting configurations, fastest first, consistent with the model."""
import pytest

from squeezeforge.hw.config import DEVICES, ConfigError, EngineConfig
from squeezeforge.quant.network import squeezenet
from squeezeforge.sim.cycle_model import estimate_network, summarize
from squeezeforge.sim.sweep import sweep


def test_z7020_sweep():
    net = squeezenet("v1.1")
    rows = sweep(net, "xc7z020")
    dev = DEVICES["xc7z020"]
    assert rows, "nothing fits the XC7Z020"
    assert all(r["dsp"] <= dev.dsp and r["ramb36"] <= dev.ramb36 for r in rows)
    assert [r["cycles"] for r in rows] == sorted(r["cycles"] for r in rows)
    best = rows[0]
    # 256 MACs is the most the 220 DSP48E1 allow (packed 2 per DSP + 2 per requantizer lane):
    # 16x32 needs 256 + 64 = 320 DSP
    assert best["in_lanes"] * best["out_lanes"] == 256
    cfg = EngineConfig("x", "xc7z020", best["in_lanes"], best["out_lanes"], best["weight_mode"],
                       best["weight_words"])
    assert summarize(estimate_network(net, cfg), cfg)["cycles"] == best["cycles"]


def test_small_device_has_no_fit_and_unknown_device_is_refused():
    assert sweep(squeezenet("v1.1"), "xc7z007s") == []
    with pytest.raises(ConfigError, match="unknown device 'xc9'"):
        sweep(squeezenet("v1.1"), "xc9")

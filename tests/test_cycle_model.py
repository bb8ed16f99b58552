"""The analytic cycle model: consistent with the network's facts and the blocks' own formulas.

Agreement with the RTL, per layer, is measured by ``squeezeforge bench`` and the RTL tests.
"""
import pytest

from squeezeforge.hw.config import PRESETS
from squeezeforge.hw.conv import ConvCore
from squeezeforge.quant.network import squeezenet
from squeezeforge.sim.cycle_model import estimate_network, summarize


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_macs_and_bounds(version, preset):
    net = squeezenet(version)
    cfg = PRESETS[preset]
    passes = estimate_network(net, cfg)
    # every multiply-accumulate of the network is in exactly one command
    assert sum(p.macs for p in passes) == net.total_macs(227)
    for p in passes:
        assert p.cycles >= p.ideal_cycles, p
        assert p.cycles >= p.compute_cycles, p
        assert p.cycles >= p.ddr_read_bytes // 8 and p.cycles >= p.ddr_write_bytes // 8, p


def test_conv_steps_follow_the_conv_core_formula():
    cfg = PRESETS["z7020"]
    passes = {p.name: p for p in estimate_network(squeezenet("v1.1"), cfg)}
    # fire9/squeeze1x1: 14x14 pixels, 64 outputs = 4 groups of 16, 512 inputs = 32 words of 16
    assert passes["fire9/squeeze1x1"].compute_cycles == ConvCore.steps(14, 14, 4, 1, 32)
    # fire2/expand: per pixel 4 groups of 1x1 over 1 word, then 4 groups of 3x3 over 1 word
    assert passes["fire2/expand"].compute_cycles == (ConvCore.steps(56, 56, 4, 1, 1)
                                                     + ConvCore.steps(56, 56, 4, 3, 1))


def test_z7020_v11_design_point():
    """The design point the architecture document argues: under 2.5 M cycles, > 80 % busy."""
    cfg = PRESETS["z7020"]
    s = summarize(estimate_network(squeezenet("v1.1"), cfg), cfg)
    assert s["ideal_cycles"] == -(-387_747_520 // 256)
    assert s["cycles"] < 2_500_000
    assert s["mac_utilization"] > 0.8


@pytest.mark.parametrize("pi,po,packing", [(8, 8, True), (16, 16, True), (32, 64, True),
                                           (64, 16, True), (16, 16, False)])
def test_conv_overhead_is_the_cores(pi, po, packing):
    """The model's per-pass constant is the ConvCore's own (its pass_cycles formula, which
    tests/test_hw_conv.py checks against the RTL): deeper adder trees add pipeline stages."""
    from squeezeforge.hw.conv import conv_overhead
    core = ConvCore(pi, po, act_depth=64, weight_depth=64, param_depth=16, dsp_packing=packing)
    shape = (3, 5, 2, 3, 2)                       # ho, wo, n_og, k, n_ic
    assert conv_overhead(pi, packing) == core.pass_cycles(*shape) - core.steps(*shape)

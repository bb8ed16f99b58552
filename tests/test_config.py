"""Engine configurations: parameter checks, presets, and the analytic fit check."""
import pytest

from squeezeforge.hw.config import (DEVICES, PRESETS, ConfigError, EngineConfig, _bram36,
                                    resolve_config)


def test_parameter_messages():
    with pytest.raises(ConfigError, match="in_lanes must be a positive multiple of 8, not 12"):
        EngineConfig(in_lanes=12)
    with pytest.raises(ConfigError, match="out_lanes must be even with dsp_packing, not 5"):
        EngineConfig(out_lanes=5)
    with pytest.raises(ConfigError, match="weight_mode must be 'resident' or 'streamed'"):
        EngineConfig(weight_mode="cached")
    with pytest.raises(ConfigError, match="axi_data_width must be 64"):
        EngineConfig(axi_data_width=32)
    with pytest.raises(ConfigError, match="unknown configuration 'z9999'"):
        resolve_config("z9999")
    with pytest.raises(ConfigError, match="bad configuration override 'lanes=4'"):
        resolve_config("z7020:lanes=4")


def test_overrides():
    c = resolve_config("z7020:weight_mode=resident,in_lanes=8,dsp_packing=false")
    assert (c.weight_mode, c.in_lanes, c.dsp_packing, c.name) == ("resident", 8, False, "z7020+custom")


def test_bram_shapes():
    # RAMB36 aspect ratios of the 7-series: 32Kx1 ... 512x72
    assert _bram36(8, 4096) == 1
    assert _bram36(72, 512) == 1
    assert _bram36(73, 512) == 2
    assert _bram36(2048, 512) == 29          # one z7020 weight buffer
    assert _bram36(1, 32768) == 1 and _bram36(1, 32769) == 2


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_fit_their_devices(name):
    cfg = PRESETS[name]
    r = cfg.resources()
    dev = DEVICES[cfg.device]
    assert r["dsp"] <= dev.dsp and r["ramb36"] <= dev.ramb36
    assert cfg.check_fit() is cfg


def test_z7020_budget_is_the_documented_one():
    # 256 MACs packed two per DSP48E1 + 16 requantizers of 2 DSP each + the sequencer's 18
    # and the GAP's one-lane requantizer's 2 (what Yosys counts: tests/test_estimate.py's
    # real-engine run)
    assert PRESETS["z7020"].resources()["dsp"] == 128 + 32 + 20


def test_oversized_configuration_is_refused_with_numbers():
    with pytest.raises(ConfigError, match=r"does not fit xc7z020: DSP 308 > 220, RAMB36 \d+ > 140"):
        resolve_config("z7020:in_lanes=32").check_fit()
    with pytest.raises(ConfigError, match=r"DSP 564 > 220$"):
        resolve_config("z7020:dsp_packing=false,in_lanes=32,weight_words=64,"
                       "act_buffer_bytes=16384,squeeze_buffer_bytes=16384").check_fit()

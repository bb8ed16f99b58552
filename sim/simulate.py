"""Whole-network RTL simulation: the engine's Verilog, the Verilog DDR model, the host protocol.

:func:`simulate` loads weights, quantizes, compiles the program, generates the engine
(``hw/engine.py``; model-independent), wraps it in the ``sf_tb`` testbench
(``sim/tb.py``: internal clock, DDR model, cocotb sees only the register port, ``irq`` and the
DDR load/dump controls), builds it with Verilator once (cached by content hash; the build is
timed and reported separately), runs :func:`squeezeforge.host.runtime.execute` through
:class:`squeezeforge.sim.cocotb_driver.CocotbDriver` (``tests/cocotb/cocotb_system.py``), and
compares every layer's tensor with the golden model, bit for bit.

The result (a dict, JSON-ready): ``bit_exact``, ``cycles`` (the engine's CYCLES register, a
cold start), ``setup_cycles`` / ``warm_cycles`` / ``warm_index`` (see below),
``layers`` (one row per command: name, op, network layers, MACs, cycles from LAYER_CYCLES,
the cycle window [start, end) counted from START, ideal cycles = MACs / MAC units, utilization,
the cycle model's estimate, DDR bytes read and written from the functional model, mismatches),
``mismatches`` (per blob: count and the first one as layer, channel, row, column, expected,
got, and the producing command's cycle window), ``top`` (top-5 from the RTL's output tensor,
as ``infer`` prints it), ``wall_s``, ``build_s``, ``sim_s``, ``cycles_per_s``.

The engine's Verilog does not depend on the model (parameters are loaded by the program's
PARAMS command; weights by its LOAD in resident mode, streamed by prefetches otherwise), so one
Verilator build serves every model and image of a configuration. The simulated run is a cold
start (setup commands included); ``setup_cycles`` are the setup commands' LAYER_CYCLES plus
one sequencer cycle each, and ``warm_cycles`` the total minus them: what a host that keeps the
engine loaded pays per inference (``warm_input`` measures it).
"""
from __future__ import annotations

import json
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from squeezeforge.sim.tb import TbConfig, build_tb, run_tb, tb_verilog

__all__ = ["simulate", "simulate_program", "run_rtl_inference", "SimulationError",
           "golden_blobs", "compare_blobs", "COCOTB_MODULE", "ENGINE_TOP"]

COCOTB_MODULE = Path(__file__).resolve().parent.parent / "tests" / "cocotb" / "cocotb_system.py"
ENGINE_TOP = "squeezeforge_engine"
POLL_CYCLES = 20_000
MIN_DDR_BYTES = 32 << 20


class SimulationError(RuntimeError):
    """The RTL simulation could not run or the engine reported an error (one line)."""


def golden_blobs(qm, x_int8: np.ndarray) -> dict[str, np.ndarray]:
    """Every blob of the golden model, layer by layer (works for non-square inputs)."""
    from squeezeforge.quant.golden import golden_layer
    from squeezeforge.quant.network import Concat
    blobs = {qm.net.input_name: x_int8}
    for l in qm.net.layers:
        bottoms = l.bottoms if isinstance(l, Concat) else (l.bottom,)
        blobs[l.top] = golden_layer(qm, l.name, [blobs[b] for b in bottoms])
    return blobs


def compare_blobs(got: np.ndarray, want: np.ndarray) -> dict:
    """Count and first mismatch (channel, row, column, expected, got) of two (C, H, W) arrays."""
    if got.shape != want.shape:
        return dict(mismatches=int(want.size), shape=f"got {got.shape}, expected {want.shape}")
    bad = np.argwhere(got != want)
    out = dict(mismatches=int(len(bad)), values=int(want.size))
    if len(bad):
        c, y, x = (int(v) for v in bad[0])
        out["first"] = dict(channel=c, row=y, column=x, expected=int(want[c, y, x]),
                            got=int(got[c, y, x]))
    return out


def _producers(program, net) -> dict[str, list[int]]:
    """Blob -> indices of the commands that write it."""
    from squeezeforge.quant.network import Concat
    by_layer: dict[str, list[int]] = {}
    for c in program.commands:
        for name in c.layers:
            by_layer.setdefault(name.split("[")[0], []).append(c.index)
    out: dict[str, list[int]] = {}
    for l in net.layers:
        if isinstance(l, Concat):
            out[l.top] = sorted({i for b in l.bottoms for i in out.get(b, [])})
        else:
            out[l.top] = by_layer.get(l.name, [])
    return out


def _progress_thread(progress_file: Path, names: list[str], enabled: bool):
    """A function for run_tb's ``background``: a tqdm bar fed by the cocotb side's poll file."""
    def run(done):
        if not enabled:
            done.wait()
            return
        from tqdm import tqdm
        n = max(1, len(names) - 1)      # END is not a step
        bar = tqdm(total=n, file=sys.stderr, unit="cmd", dynamic_ncols=True,
                   desc="simulating", leave=True)
        pos = 0
        seen = 0
        while not done.wait(0.25):
            if not progress_file.exists():
                continue
            lines = progress_file.read_text().split("\n")
            for line in lines[seen:-1]:
                cycle, cur = (int(v) for v in line.split())
                cur = min(cur, n)
                if cur > pos:
                    bar.update(cur - pos)
                    pos = cur
                name = names[cur] if cur < len(names) else "end"
                bar.set_description(f"{name}")
                bar.set_postfix_str(f"{cycle / 1e6:.2f} M cycles")
            seen = max(seen, len(lines) - 1)
        bar.update(n - pos)
        bar.close()
    return run


def simulate_program(program, qm, x_int8: np.ndarray, *, trace=None, trace_window=None,
                     progress: bool = True, workdir=None, tb: TbConfig | None = None,
                     timeout_cycles: int = 200_000_000, labels=None, k: int = 5,
                     warm_input: np.ndarray | None = None) -> dict:
    """Run a compiled ``program`` on the engine's RTL and compare with the golden model.

    ``trace``: an FST file to write (the testbench is then built with tracing, a separate
    cached build); ``trace_window``: (first, last) cycles counted from START (default: the
    whole run). A window that ends before the engine finishes ends the run there: the result
    then has ``trace_stopped_at`` and nothing compared (``bit_exact`` None). ``workdir``: the
    simulation's working directory (default a temporary one). ``warm_input``: a second int8
    input, run after the first as a warm start (``runtime.execute(warm=True)``: only the input
    written, the setup commands skipped); the result's ``warm_run`` has its cycles, per-command
    cycles, first command, and its output tensors' mismatches against the golden model.
    """
    from squeezeforge.hw.engine import Engine, EngineError
    from squeezeforge.hw.verilog import generate_verilog
    from squeezeforge.sim.cycle_model import estimate_program
    from squeezeforge.sim.funcsim import run_program

    t_all = time.perf_counter()
    cfg = program.cfg
    try:
        # parameters and weights come from DDR (the program's PARAMS, LOAD and prefetches):
        # the Verilog, and so the Verilator build, is the same for every model and image
        engine = Engine(cfg)
        engine.check_program(program)
    except EngineError as e:
        raise SimulationError(f"engine cannot run this program: {e}") from None

    # golden model and the functional model's per-command DDR traffic (both fast)
    gold = golden_blobs(qm, x_int8)
    fstats = run_program(program, program.new_ddr(x_int8))
    model = estimate_program(program)

    # testbench: the DDR model covers the program's plan; a fixed minimum size keeps the
    # testbench text (and so the build) the same across programs of similar size
    need = program.ddr_size
    mem = MIN_DDR_BYTES
    while mem < need:
        mem *= 2
    tbc = tb or TbConfig(base_addr=program.base_addr, mem_bytes=mem, trace=bool(trace))
    if trace and not tbc.trace:
        raise SimulationError("trace requested but the testbench configuration has trace=False")
    t0 = time.perf_counter()
    verilog = tb_verilog(generate_verilog(engine, ENGINE_TOP), ENGINE_TOP, tbc)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_dir, built, _ = build_tb(verilog, tbc)
    build_s = time.perf_counter() - t0

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="sqzf-sim-")
        workdir = tmp.name
    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "program.pkl").write_bytes(pickle.dumps(program))
    np.save(wd / "input.npy", x_int8)
    progress_file = wd / "progress.txt"
    progress_file.write_text("")
    results = wd / "results.json"
    if results.exists():
        results.unlink()
    env = {"SQZF_PROGRAM": wd / "program.pkl", "SQZF_INPUT": wd / "input.npy",
           "SQZF_RESULTS": results, "SQZF_TIMEOUT_CYCLES": timeout_cycles,
           "SQZF_POLL_CYCLES": POLL_CYCLES if progress else 0,
           "SQZF_PROGRESS": progress_file}
    if warm_input is not None:
        np.save(wd / "warm_input.npy", warm_input)
        env["SQZF_WARM_INPUT"] = wd / "warm_input.npy"
    plusargs = []
    if trace:
        first, last = trace_window if trace_window else (0, 2**62)
        env["SQZF_TRACE_WINDOW"] = f"{first}:{last}"
        plusargs.append(f"+trace_file={Path(trace).resolve()}")
    names = [c.name for c in program.commands]
    t0 = time.perf_counter()
    run_tb(verilog, tbc, COCOTB_MODULE, wd, env, plusargs=plusargs,
           background=_progress_thread(progress_file, names, progress))
    sim_s = time.perf_counter() - t0
    res = json.loads(results.read_text())
    if res.get("error"):
        raise SimulationError(res["error"])
    if res.get("trace_stopped_at") is not None:
        # the run ended with the trace window: nothing to compare
        if tmp is not None:
            tmp.cleanup()
        return dict(bit_exact=None, cycles=None, layers=[], mismatches=[], checked_blobs=[],
                    top=[], trace=str(trace), trace_window=list(trace_window),
                    trace_stopped_at=res["trace_stopped_at"], config=cfg.name,
                    network=qm.net.name, size=list(program.size),
                    wall_s=round(time.perf_counter() - t_all, 3), build_s=round(build_s, 3),
                    built=built, verilog_s=round(gen_s, 3), sim_s=round(sim_s, 3),
                    build_dir=str(build_dir))
    with np.load(wd / res["tensors_file"]) as z:
        tensors = {key.replace("|", "/"): z[key] for key in z.files}
    warm_run = None
    if res.get("warm"):
        w = res["warm"]
        with np.load(wd / w["tensors_file"]) as z:
            wt = {key.replace("|", "/"): z[key] for key in z.files}
        wgold = golden_blobs(qm, warm_input)
        bad = {b: compare_blobs(wt[b], wgold[b])["mismatches"]
               for b in program.tensors if b in wt and b != program.input_blob}
        warm_run = dict(cycles=int(w["cycles"]), command_cycles=list(w["command_cycles"]),
                        first_command=int(w["first_command"]),
                        bit_exact=bool(bad) and not any(bad.values()),
                        mismatches={b: n for b, n in bad.items() if n})
    if tmp is not None:
        tmp.cleanup()

    # per command: cycles and windows from LAYER_CYCLES
    cmd_cycles = list(res["command_cycles"]) + [0] * (len(program.commands) -
                                                        len(res["command_cycles"]))
    starts = np.concatenate([[0], np.cumsum(cmd_cycles)]).astype(int).tolist()
    producers = _producers(program, qm.net)
    mismatches = []
    per_cmd_bad = [0] * len(program.commands)
    for l in qm.net.layers:
        if l.top not in program.tensors or l.top not in tensors:
            continue
        cmp = compare_blobs(tensors[l.top], gold[l.top])
        if cmp["mismatches"]:
            cmds = producers.get(l.top, [])
            entry = dict(layer=l.name, blob=l.top, **cmp,
                         commands=[names[i] for i in cmds])
            if cmds:
                entry["cycle_window"] = [starts[min(cmds)], starts[max(cmds) + 1]]
                # charge the mismatch to the first producing command
                per_cmd_bad[cmds[0]] += cmp["mismatches"]
            mismatches.append(entry)
    checked = [l.top for l in qm.net.layers if l.top in program.tensors and l.top in tensors]

    layers = []
    for c, fs, mc in zip(program.commands, fstats, model):
        if c.op.name == "END":
            continue
        cyc = cmd_cycles[c.index]
        ideal = -(-c.macs // cfg.macs)
        layers.append(dict(
            index=c.index, name=c.name, op=c.op.name, layers=list(c.layers), macs=int(c.macs),
            cycles=int(cyc), window=[starts[c.index], starts[c.index + 1]],
            ideal_cycles=int(ideal), utilization=(ideal / cyc if cyc else 0.0),
            model_cycles=int(mc.cycles), ddr_read_bytes=int(fs["ddr_read_bytes"]),
            ddr_write_bytes=int(fs["ddr_write_bytes"]), mismatches=per_cmd_bad[c.index]))

    out_blob = qm.net.output
    top = []
    if out_blob in tensors:
        from squeezeforge.quant.golden import golden_probs
        from squeezeforge.quant.reference import topk
        blobs = dict(gold)
        blobs[out_blob] = tensors[out_blob].astype(gold[out_blob].dtype)
        top = topk(golden_probs(qm, blobs), k, labels)
    total_macs = sum(r["macs"] for r in layers)
    cycles = int(res["cycles"])
    # a warm start skips the setup commands: their LAYER_CYCLES and their NEXT cycle each
    setup = int(sum(cmd_cycles[i] for i in range(program.warm_index))) + program.warm_index
    return dict(
        bit_exact=not mismatches and bool(checked), cycles=cycles,
        setup_cycles=setup, warm_cycles=cycles - setup, warm_index=program.warm_index,
        warm_run=warm_run,
        ideal_cycles=-(-total_macs // cfg.macs), macs=int(total_macs),
        utilization=(-(-total_macs // cfg.macs) / cycles) if cycles else 0.0,
        clock_mhz=cfg.clock_mhz, latency_ms=cycles / (cfg.clock_mhz * 1e3),
        layers=layers, model_total_cycles=int(sum(mc.cycles for mc in model)),
        mismatches=mismatches, checked_blobs=checked, top=top,
        config=cfg.name, network=qm.net.name, size=list(program.size),
        wall_s=round(time.perf_counter() - t_all, 3), build_s=round(build_s, 3),
        built=built, verilog_s=round(gen_s, 3), sim_s=round(sim_s, 3),
        run_s=round(res["wall_s"], 3), cycles_per_s=round(res["cycles_per_s"]),
        driver=res.get("driver", {}), trace=str(trace) if trace else None,
        build_dir=str(build_dir))


def simulate(model: str = "v1.1", weights=None, image=None, config="z7020", size=227,
             trace=None, progress: bool = True, *, trace_window=None, download: bool = True,
             labels=None, workdir=None, calib=None) -> dict:
    """Load weights, quantize, compile for ``config`` (a preset name / override string or an
    EngineConfig), and run :func:`simulate_program`. ``image``: a photograph path (default the
    demo image). Returns the result dict (see the module doc) plus ``notes``."""
    from squeezeforge.host.schedule import compile_program
    from squeezeforge.hw.config import EngineConfig, resolve_config
    from squeezeforge.quant import numeric
    from squeezeforge.quant.preprocess import default_image, load_image
    from squeezeforge.quant.quantize import quantize
    from squeezeforge.quant.weights import load_weights

    t0 = time.perf_counter()
    # a configuration that does not fit its device is refused first (ConfigError, one line)
    cfg = (config if isinstance(config, EngineConfig) else resolve_config(config)).check_fit()
    fm = load_weights(model, weights, download=download, progress=progress)
    x, notes = load_image(image or default_image(), size)
    qm = quantize(fm, calib, size=size)
    program = compile_program(qm, cfg, size)
    x_int8 = numeric.quantize_input(x, qm.input_scale)
    out = simulate_program(program, qm, x_int8, trace=trace, trace_window=trace_window,
                           progress=progress, workdir=workdir, labels=labels)
    out.update(model=model, synthetic=fm.synthetic, image=str(image or default_image()),
               notes=list(fm.notes) + list(notes) + list(program.notes),
               wall_s=round(time.perf_counter() - t0, 3))
    return out


def run_rtl_inference(qm, x_float: np.ndarray, config="z7020", size=227, *, k: int = 5,
                      labels=None, progress: bool = False) -> dict:
    """For ``squeezeforge infer --backend rtl``: classify one preprocessed float image on the
    engine's RTL. Returns ``top`` (as the other back ends), ``cycles``, ``bit_exact`` against
    the golden model, ``wall_s`` and ``build_s``."""
    from squeezeforge.host.schedule import compile_program
    from squeezeforge.hw.config import EngineConfig, resolve_config
    from squeezeforge.quant import numeric
    cfg = (config if isinstance(config, EngineConfig) else resolve_config(config)).check_fit()
    program = compile_program(qm, cfg, size)
    x_int8 = numeric.quantize_input(x_float, qm.input_scale)
    res = simulate_program(program, qm, x_int8, progress=progress, labels=labels, k=k)
    return {key: res[key] for key in ("top", "cycles", "bit_exact", "wall_s", "build_s",
                                      "sim_s", "cycles_per_s", "latency_ms")}

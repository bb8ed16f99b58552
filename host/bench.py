"""``squeezeforge bench``: benchmark figures, printed for a person and returned as a dict (JSON).

One run reports, side by side, the figures the project's issues ask for:

* wall time of one inference in the float reference and in the integer golden model (median of
  ``--repeat`` runs, after one warm-up), against the golden-model target of 2 s;
* the cycle model (``sim/cycle_model.py``): its whole-network estimate and the wall time of
  :func:`~squeezeforge.sim.cycle_model.estimate_program` on the compiled program (target < 1 s);
* unless ``--no-rtl``: one whole-network RTL simulation (:func:`squeezeforge.sim.simulate.simulate`,
  Verilator) on ``--config`` (default ``z7020``): cycles, bit-exactness, latency at the preset's
  clock, MAC utilization, DDR traffic against the Zynq HP port (64 bits = 8 bytes per cycle on
  each of the read and write channels), the comparison with SqueezeJet-2 (7.05 M cycles on the
  same Zynq-7020 at 100 MHz) and with the issue's target (at most 2.5 M cycles, aim 1.5 M);
  the simulation's own wall time (target 60 s, aim 20 s) and the Verilator build time (with
  ``--fresh-build`` into a temporary build root, so it is a first build, not a cache hit);
  the same simulation with Icarus when ``iverilog`` is on PATH;
* per Fire module: RTL cycles (the sum of its commands'), ideal cycles (MACs / MAC units) and
  their ratio, against the limit of 1.25;
* the cycle model against the RTL, per command: relative difference, the worst command, and the
  totals, against "within 2 % per command and exact in total" (the testbench's DDR model is
  deterministic, so the model can be exact).

Every target is judged from the numbers of this run ("met" / "MISSED"), never assumed.
The pure helpers (:func:`fire_modules`, :func:`ddr_fit`, :func:`model_vs_rtl`) take the rows of
a :func:`~squeezeforge.sim.simulate.simulate` result and are tested on hand-made rows.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import statistics
import sys
import tempfile
import time

__all__ = ["run_bench", "time_call", "module_of", "fire_modules", "ddr_fit", "model_vs_rtl",
           "reference_comparison", "status", "format_report"]

GOLDEN_TARGET_S = 2.0
CYCLE_MODEL_TARGET_S = 1.0          # "well under 1 s"
SIM_TARGET_S = 60.0                 # whole-network RTL simulation, after the build
SIM_AIM_S = 20.0
FIRE_LIMIT = 1.25                   # each Fire module of v1.1 at most 1.25x its ideal cycles
MODEL_LAYER_TOLERANCE = 0.02        # cycle model within 2 % of the RTL per command
HP_PORT_BYTES_PER_CYCLE = 8         # Zynq HP port, 64-bit, per channel (read and write)
SQUEEZEJET2_CYCLES = 7_050_000      # SqueezeJet-2 on Zynq-7020: 70.5 ms at 100 MHz
SQUEEZEJET2_MHZ = 100.0
TARGET_CYCLES = 2_500_000           # the issue: at most 2.5 M cycles ...
AIM_CYCLES = 1_500_000              # ... aim 1.5 M

_FIRE = re.compile(r"^(fire\d+)/")


def status(ok: bool | None) -> str:
    """How a target is printed: ``met``, ``MISSED``, or ``n/a`` when it could not be judged."""
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def time_call(fn, repeat: int) -> dict:
    """Median and min wall time of ``fn()`` over ``repeat`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return dict(median_s=round(statistics.median(times), 4), min_s=round(min(times), 4),
                runs=len(times))


# -- pure helpers on result rows ------------------------------------------------------------
def module_of(command: str) -> str | None:
    """The Fire module a command belongs to (``fire8/expand3x3[og 0:8]`` -> ``fire8``), or None."""
    m = _FIRE.match(command)
    return m.group(1) if m else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def fire_modules(rows: list[dict], limit: float = FIRE_LIMIT) -> dict:
    """Group command rows by Fire module and compare their cycles with their ideal cycles.

    ``rows``: dicts with ``name``, ``ideal_cycles`` and ``model_cycles`` and, when the RTL ran,
    ``cycles`` (a :func:`simulate` result's ``layers``). Per module, in order of appearance:
    commands, RTL cycles (None without the RTL), model cycles, ideal cycles, ``ratio`` = RTL /
    ideal, ``model_ratio`` = model / ideal, and ``meets_limit`` judged on the RTL's ratio (on the
    model's when there is no RTL, and then ``source`` says so).
    """
    rtl = bool(rows) and all(r.get("cycles") is not None for r in rows)
    mods: dict[str, dict] = {}
    for r in rows:
        name = module_of(r["name"])
        if name is None:
            continue
        g = mods.setdefault(name, dict(module=name, commands=0, cycles=0 if rtl else None,
                                       model_cycles=0, ideal_cycles=0))
        g["commands"] += 1
        if rtl:
            g["cycles"] += int(r["cycles"])
        g["model_cycles"] += int(r["model_cycles"])
        g["ideal_cycles"] += int(r["ideal_cycles"])
    out = []
    for g in mods.values():
        g["ratio"] = _ratio(g["cycles"], g["ideal_cycles"])
        g["model_ratio"] = _ratio(g["model_cycles"], g["ideal_cycles"])
        judged = g["ratio"] if rtl else g["model_ratio"]
        g["meets_limit"] = None if judged is None else judged <= limit
        out.append(g)
    worst = max(out, key=lambda g: (g["ratio"] if rtl else g["model_ratio"]) or 0.0, default=None)
    return dict(source="rtl" if rtl else "cycle model", limit=limit, modules=out,
                worst=worst["module"] if worst else None,
                all_met=(all(g["meets_limit"] for g in out) if out else None))


def ddr_fit(rows: list[dict], cycles: int,
            port_bytes_per_cycle: int = HP_PORT_BYTES_PER_CYCLE) -> dict:
    """DDR bytes per inference and whether they fit the HP port at this cycle rate.

    ``rows``: dicts with ``name``, ``cycles``, ``ddr_read_bytes``, ``ddr_write_bytes``;
    ``cycles``: the whole inference. Averages are bytes per cycle over the inference, read and
    write channels separately (each carries ``port_bytes_per_cycle``); ``busiest`` is the command
    with the highest rate on either channel, ``layers`` every command's two rates (commands of
    0 cycles left out). ``fits``: both averages and the busiest command's
    two rates at most the port's width.
    """
    rd = sum(int(r["ddr_read_bytes"]) for r in rows)
    wr = sum(int(r["ddr_write_bytes"]) for r in rows)
    avg_rd = rd / cycles if cycles else None
    avg_wr = wr / cycles if cycles else None
    busiest = None
    layers = []
    for r in rows:
        c = int(r["cycles"])
        if c <= 0:
            continue
        r_rd, r_wr = r["ddr_read_bytes"] / c, r["ddr_write_bytes"] / c
        layers.append(dict(name=r["name"], read_bytes_per_cycle=r_rd, write_bytes_per_cycle=r_wr))
        if busiest is None or max(r_rd, r_wr) > busiest["peak_bytes_per_cycle"]:
            busiest = dict(name=r["name"], cycles=c, read_bytes_per_cycle=r_rd,
                           write_bytes_per_cycle=r_wr, peak_bytes_per_cycle=max(r_rd, r_wr))
    rates = [v for v in (avg_rd, avg_wr) if v is not None]
    if busiest is not None:
        rates.append(busiest["peak_bytes_per_cycle"])
    return dict(read_bytes=rd, write_bytes=wr, cycles=int(cycles),
                port_bytes_per_cycle=port_bytes_per_cycle,
                read_bytes_per_cycle=avg_rd, write_bytes_per_cycle=avg_wr, busiest=busiest,
                layers=layers,
                fits=(max(rates) <= port_bytes_per_cycle) if rates and cycles else None)


def model_vs_rtl(rows: list[dict], tolerance: float = MODEL_LAYER_TOLERANCE, *,
                 total_rtl: int | None = None, total_model: int | None = None) -> dict:
    """The cycle model's estimate against the RTL's cycles, per command and in total.

    ``rel_diff`` = (model - RTL) / RTL (None for a command the RTL did in 0 cycles and the model
    did not; 0 when both are 0). ``worst``: the command with the largest ``|rel_diff|``.
    ``per_layer_met``: every command within ``tolerance``; ``total_exact``: the totals are equal.
    The totals are the sums of the rows unless given: the RTL's CYCLES register and the
    model's whole-program estimate also count START and the END command, which no row has.
    """
    layers = []
    for r in rows:
        rtl, mod = int(r["cycles"]), int(r["model_cycles"])
        rel = (mod - rtl) / rtl if rtl else (0.0 if mod == 0 else None)
        layers.append(dict(name=r["name"], cycles=rtl, model_cycles=mod, rel_diff=rel,
                           within=rel is not None and abs(rel) <= tolerance))
    worst = max(layers, key=lambda l: float("inf") if l["rel_diff"] is None
                else abs(l["rel_diff"]), default=None)
    t_rtl = sum(l["cycles"] for l in layers) if total_rtl is None else total_rtl
    t_mod = sum(l["model_cycles"] for l in layers) if total_model is None else total_model
    return dict(tolerance=tolerance, layers=layers, worst=worst,
                within_count=sum(l["within"] for l in layers), count=len(layers),
                per_layer_met=all(l["within"] for l in layers) if layers else None,
                total_rtl=t_rtl, total_model=t_mod, total_diff=t_mod - t_rtl,
                total_rel_diff=(t_mod - t_rtl) / t_rtl if t_rtl else None,
                total_exact=t_mod == t_rtl)


def reference_comparison(cycles: int, clock_mhz: float) -> dict:
    """Our cycles against SqueezeJet-2 (same chip) and the issue's target and aim."""
    ms = cycles / (clock_mhz * 1e3)
    sj_ms = SQUEEZEJET2_CYCLES / (SQUEEZEJET2_MHZ * 1e3)
    return dict(squeezejet2_cycles=SQUEEZEJET2_CYCLES, squeezejet2_mhz=SQUEEZEJET2_MHZ,
                squeezejet2_ms=sj_ms, speedup_cycles=SQUEEZEJET2_CYCLES / cycles,
                speedup_latency=sj_ms / ms, target_cycles=TARGET_CYCLES, aim_cycles=AIM_CYCLES,
                meets_target=cycles <= TARGET_CYCLES, meets_aim=cycles <= AIM_CYCLES)


# -- running --------------------------------------------------------------------------------
def _simulate(args, *, progress: bool, fresh_build: bool, simulator: str = "verilator") -> dict:
    """One whole-network simulation; with ``fresh_build`` in a temporary build root."""
    from squeezeforge.host.cli import find_labels
    from squeezeforge.sim.simulate import simulate
    env = dict(SQUEEZEFORGE_SIM=simulator)
    from squeezeforge.sim.rtl import environ
    with contextlib.ExitStack() as stack:
        if fresh_build:
            env["SQUEEZEFORGE_BUILD_DIR"] = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="sqzf-bench-build-"))
        stack.enter_context(environ("PATH", **env))
        return simulate(args.model, args.weights, args.image, args.config, args.size,
                        progress=progress, download=not args.no_download,
                        labels=find_labels(args.labels))


def probe_network():
    """A small network for the simulator comparison: conv1 3x3 (3 -> 16, stride 2), a Fire
    module (squeeze 16, expand 32 + 32), max-pool, conv10 1x1 (64 -> 10), GAP; 15x15 input."""
    from squeezeforge.quant.network import Concat, Conv, Network, Pool
    f = "fire2"
    layers = (Conv("conv1", "data", "conv1", 3, 16, 3, 2, 1),
              Conv(f"{f}/squeeze1x1", "conv1", f"{f}/squeeze1x1", 16, 16, 1),
              Conv(f"{f}/expand1x1", f"{f}/squeeze1x1", f"{f}/expand1x1", 16, 32, 1),
              Conv(f"{f}/expand3x3", f"{f}/squeeze1x1", f"{f}/expand3x3", 16, 32, 3, 1, 1),
              Concat(f"{f}/concat", (f"{f}/expand1x1", f"{f}/expand3x3"), f"{f}/concat"),
              Pool("pool2", f"{f}/concat", "pool2", "max", 3, 2),
              Conv("conv10", "pool2", "conv10", 64, 10, 1),
              Pool("pool10", "conv10", "pool10", "ave", is_global=True))
    return Network("probe", layers)


def _icarus(args, quiet: bool) -> dict | None:
    """Verilator and Icarus Verilog side by side on the same small program (``probe_network``
    on ``--config``, 1 MB DDR model), if ``iverilog`` is on PATH (None if not): a whole
    network on Icarus takes hours (it evaluates the 40 k-line engine at a few hundred cycles
    per second), so the whole-network time is extrapolated from the measured rate."""
    if shutil.which("iverilog") is None:
        return None
    import numpy as np
    from squeezeforge.host.cli import log
    from squeezeforge.host.schedule import compile_program
    from squeezeforge.hw.config import resolve_config
    from squeezeforge.quant import numeric
    from squeezeforge.quant.model import synthetic_model
    from squeezeforge.quant.quantize import quantize
    from squeezeforge.sim.rtl import RtlError
    from squeezeforge.sim.rtl import environ as rtl_environ
    from squeezeforge.sim.simulate import SimulationError, simulate_program
    from squeezeforge.sim.tb import TbConfig
    net = probe_network()
    x = np.random.default_rng(1).normal(0, 40, (3, 15, 15)).astype(np.float32)
    qm = quantize(synthetic_model(net, seed=2), [x], size=15)
    program = compile_program(qm, resolve_config(args.config), 15)
    x8 = numeric.quantize_input(x, qm.input_scale)
    tb = TbConfig(base_addr=program.base_addr, mem_bytes=1 << 20)
    out = {}
    for sim in ("verilator", "icarus"):
        log(f"simulator comparison: a small network on {sim} ...", quiet)
        try:
            with rtl_environ("PATH", SQUEEZEFORGE_SIM=sim):
                r = simulate_program(program, qm, x8, progress=False, tb=tb)
        except (RtlError, SimulationError) as e:
            return dict(error=f"{sim}: {str(e).splitlines()[0]}")
        out[sim] = dict(cycles=r["cycles"], sim_s=r["sim_s"], build_s=r["build_s"],
                        built=r["built"], bit_exact=r["bit_exact"],
                        cycles_per_s=r["cycles"] / r["sim_s"] if r["sim_s"] else None)
    v, i = out["verilator"], out["icarus"]
    out["speed_ratio"] = (i["sim_s"] / v["sim_s"]) if v["sim_s"] else None
    return out


def _rtl_section(sim: dict, fresh_build: bool) -> dict:
    ref = reference_comparison(sim["cycles"], sim["clock_mhz"])
    speed = dict(sim_s=sim["sim_s"], build_s=sim["build_s"], built=sim["built"],
                 fresh_build=fresh_build, verilog_s=sim["verilog_s"], wall_s=sim["wall_s"],
                 cycles_per_s=sim["cycles_per_s"], target_s=SIM_TARGET_S, aim_s=SIM_AIM_S,
                 meets_target=sim["sim_s"] <= SIM_TARGET_S, meets_aim=sim["sim_s"] <= SIM_AIM_S)
    return dict(cycles=sim["cycles"], layer_cycles=sum(l["cycles"] for l in sim["layers"]),
                bit_exact=sim["bit_exact"], mismatches=sim["mismatches"],
                clock_mhz=sim["clock_mhz"], latency_ms=sim["latency_ms"], macs=sim["macs"],
                ideal_cycles=sim["ideal_cycles"], mac_utilization=sim["utilization"],
                reference=ref, ddr=ddr_fit(sim["layers"], sim["cycles"]), speed=speed,
                top=sim["top"], notes=sim["notes"])


def run_bench(args) -> dict:
    from squeezeforge.host.cli import UserError, _load_image, _load_model, _weights_label, log
    from squeezeforge.host.schedule import compile_program
    from squeezeforge.hw.config import resolve_config
    from squeezeforge.quant.golden import run_golden
    from squeezeforge.quant.quantize import quantize
    from squeezeforge.quant.reference import forward_float
    from squeezeforge.sim.cycle_model import estimate_program
    quiet = args.json
    if args.no_rtl and args.fresh_build:
        raise UserError("--fresh-build times the RTL simulation's build: drop --no-rtl")
    cfg = resolve_config(args.config)         # a bad --config is a user error before any work
    fm = _load_model(args, quiet)
    _, x, _ = _load_image(args, quiet)
    qm = quantize(fm, None, size=args.size)
    log(f"timing {args.model} at {args.size}x{args.size}, {args.repeat} runs each ...", quiet)
    t_float = time_call(lambda: forward_float(fm.net, fm.params, x), args.repeat)
    t_golden = time_call(lambda: run_golden(qm, x), args.repeat)

    t = time.perf_counter()
    program = compile_program(qm, cfg, args.size)
    compile_s = time.perf_counter() - t
    passes = estimate_program(program)
    t_model = time_call(lambda: estimate_program(program), args.repeat)
    model_total = sum(p.cycles for p in passes)
    cycle_model = dict(eval=t_model, target_s=CYCLE_MODEL_TARGET_S,
                       meets_target=t_model["median_s"] < CYCLE_MODEL_TARGET_S,
                       compile_s=round(compile_s, 4), cycles=model_total,
                       ideal_cycles=-(-sum(p.macs for p in passes) // cfg.macs),
                       latency_ms=model_total / (cfg.clock_mhz * 1e3))

    res = dict(model=args.model, size=args.size, weights=_weights_label(fm),
               synthetic=fm.synthetic, macs=fm.net.total_macs(args.size),
               float_inference=t_float, golden_inference=t_golden,
               golden_target_s=GOLDEN_TARGET_S,
               golden_meets_target=t_golden["median_s"] < GOLDEN_TARGET_S,
               config=cfg.name, mac_units=cfg.macs, clock_mhz=cfg.clock_mhz,
               cycle_model=cycle_model, rtl_run=not args.no_rtl, rtl=None,
               icarus_installed=shutil.which("iverilog") is not None, icarus=None,
               model_vs_rtl=None)
    if args.no_rtl:
        rows = [dict(name=p.name, ideal_cycles=p.ideal_cycles, model_cycles=p.cycles)
                for p in passes]
    else:
        from squeezeforge.sim.simulate import SimulationError
        log(f"RTL simulation of {args.model} on {cfg.name}: Verilog, Verilator build"
            f"{' (fresh, temporary build root)' if args.fresh_build else ' (cached if unchanged)'}"
            f", simulation ...", quiet)
        try:
            sim = _simulate(args, progress=not quiet and sys.stderr.isatty(),
                            fresh_build=args.fresh_build)
        except SimulationError as e:
            raise UserError(str(e).splitlines()[0]) from None
        for n in sim["notes"]:
            log(f"note: {n}")
        rows = sim["layers"]
        res["rtl"] = _rtl_section(sim, args.fresh_build)
        res["model_vs_rtl"] = model_vs_rtl(rows, total_rtl=sim["cycles"],
                                           total_model=sim.get("model_total_cycles"))
        res["icarus"] = _icarus(args, quiet)
    res["fire_modules"] = fire_modules(rows)
    if not quiet:
        print(format_report(res))
    return res


# -- text -----------------------------------------------------------------------------------
def _pct(v) -> str:
    return "   n/a" if v is None else f"{v:+6.1%}"


def format_report(res: dict) -> str:
    w = 44
    L = []
    t_float, t_golden = res["float_inference"], res["golden_inference"]
    L.append(f"SqueezeNet {res['model']} at {res['size']}x{res['size']} "
             f"({res['macs'] / 1e6:.1f} M MACs), weights: {res['weights']}")
    L.append(f"  {'float reference, one inference':<{w}}{t_float['median_s']:8.3f} s "
             f"(median of {t_float['runs']})")
    L.append(f"  {'golden int8 model, one inference':<{w}}{t_golden['median_s']:8.3f} s "
             f"(median of {t_golden['runs']})   target < {res['golden_target_s']:.0f} s: "
             f"{status(res['golden_meets_target'])}")

    cm = res["cycle_model"]
    L.append("")
    L.append(f"Cycle model on {res['config']} ({res['mac_units']} MAC units, "
             f"{res['clock_mhz']:g} MHz)")
    L.append(f"  {'whole-network estimate':<{w}}{cm['cycles']:>12,} cycles = "
             f"{cm['latency_ms']:.2f} ms (ideal {cm['ideal_cycles']:,})")
    L.append(f"  {'estimate_program() wall time':<{w}}{cm['eval']['median_s'] * 1e3:8.1f} ms "
             f"(median of {cm['eval']['runs']})   target < {cm['target_s']:.0f} s: "
             f"{status(cm['meets_target'])}")

    rtl = res["rtl"]
    L.append("")
    if rtl is None:
        L.append("RTL simulation: skipped (--no-rtl)")
    else:
        ref, ddr, sp = rtl["reference"], rtl["ddr"], rtl["speed"]
        L.append(f"RTL simulation on {res['config']} (Verilator)")
        L.append(f"  {'cycles':<{w}}{rtl['cycles']:>12,}   bit-exact against the golden "
                 f"model: {'yes' if rtl['bit_exact'] else 'NO'}")
        if rtl["layer_cycles"] != rtl["cycles"]:
            L.append(f"  {'  of which in commands (LAYER_CYCLES)':<{w}}{rtl['layer_cycles']:>12,}")
        L.append(f"  {'latency at ' + format(rtl['clock_mhz'], 'g') + ' MHz':<{w}}"
                 f"{rtl['latency_ms']:12.2f} ms")
        L.append(f"  {'MAC utilization (ideal / cycles)':<{w}}{rtl['mac_utilization']:12.1%}"
                 f"   (ideal {rtl['ideal_cycles']:,} cycles)")
        L.append(f"  {'vs SqueezeJet-2 (Zynq-7020, 100 MHz)':<{w}}"
                 f"{ref['speedup_cycles']:11.2f}x  fewer cycles than its "
                 f"{ref['squeezejet2_cycles'] / 1e6:.2f} M ({ref['squeezejet2_ms']:.1f} ms)"
                 + (f"; {ref['speedup_latency']:.2f}x in latency"
                    if rtl["clock_mhz"] != ref["squeezejet2_mhz"] else ""))
        L.append(f"  {'target <= 2.5 M cycles / aim <= 1.5 M':<{w}}{status(ref['meets_target']):>12}"
                 f" / {status(ref['meets_aim'])}")
        mbps = rtl["clock_mhz"]       # bytes/cycle x MHz = MB/s
        L.append(f"  {'DDR per inference, read / written':<{w}}"
                 f"{ddr['read_bytes'] / 1e6:9.2f} MB / {ddr['write_bytes'] / 1e6:.2f} MB")
        L.append(f"  {'HP port average, read / write':<{w}}"
                 f"{ddr['read_bytes_per_cycle']:9.2f} / {ddr['write_bytes_per_cycle']:.2f} "
                 f"B/cycle of {ddr['port_bytes_per_cycle']} each "
                 f"({ddr['read_bytes_per_cycle'] * mbps:.0f} / "
                 f"{ddr['write_bytes_per_cycle'] * mbps:.0f} MB/s)")
        b = ddr["busiest"]
        if b:
            L.append(f"  {'busiest command, read / write':<{w}}"
                     f"{b['read_bytes_per_cycle']:9.2f} / {b['write_bytes_per_cycle']:.2f} "
                     f"B/cycle ({b['name']})")
        L.append(f"  {'fits the HP port (<= 8 B/cycle each way)':<{w}}"
                 f"{'yes' if ddr['fits'] else 'NO':>12}")

        L.append("")
        L.append("Simulation speed")
        built = ("fresh build in a temporary build root" if sp["fresh_build"] and sp["built"]
                 else "built now" if sp["built"] else "cached: not a first-build time")
        L.append(f"  {'Verilator build':<{w}}{sp['build_s']:8.1f} s  ({built})")
        L.append(f"  {'Verilog generation':<{w}}{sp['verilog_s']:8.1f} s")
        L.append(f"  {'simulation (after the build)':<{w}}{sp['sim_s']:8.1f} s  "
                 f"({sp['cycles_per_s'] / 1e3:.0f} k cycles/s)   target < {sp['target_s']:.0f} s: "
                 f"{status(sp['meets_target'])}; aim < {sp['aim_s']:.0f} s: "
                 f"{status(sp['meets_aim'])}")
        ic = res["icarus"]
        if ic is None:
            L.append(f"  {'icarus':<{w}}not installed")
        elif "error" in ic:
            L.append(f"  {'icarus':<{w}}failed: {ic['error']}")
        else:
            iv, vv = ic["icarus"], ic["verilator"]
            L.append(f"  {'small network, Verilator':<{w}}{vv['sim_s']:8.1f} s  "
                     f"({vv['cycles']:,} cycles, bit-exact: {'yes' if vv['bit_exact'] else 'NO'})")
            L.append(f"  {'small network, Icarus':<{w}}{iv['sim_s']:8.1f} s  "
                     f"({iv['cycles']:,} cycles, bit-exact: {'yes' if iv['bit_exact'] else 'NO'}"
                     f"; {ic['speed_ratio']:.0f}x Verilator's time)")
            if iv["cycles_per_s"] and rtl:
                L.append(f"  {'whole network on Icarus (est.)':<{w}}"
                         f"{rtl['cycles'] / iv['cycles_per_s'] / 3600:8.1f} h at "
                         f"{iv['cycles_per_s']:.0f} cycles/s")

    fm = res["fire_modules"]
    src = fm["source"]
    L.append("")
    L.append(f"Fire modules: cycles / ideal cycles, limit {fm['limit']:g}x "
             f"(judged on the {'RTL' if src == 'rtl' else 'cycle model: no RTL run'})")
    L.append(f"  {'module':<8}{'cmds':>5}{'RTL cycles':>12}{'model':>10}{'ideal':>10}"
             f"{'RTL x':>8}{'model x':>9}")
    for g in fm["modules"]:
        rc = f"{g['cycles']:>12,}" if g["cycles"] is not None else f"{'-':>12}"
        rr = f"{g['ratio']:>8.3f}" if g["ratio"] is not None else f"{'-':>8}"
        mr = f"{g['model_ratio']:>9.3f}" if g["model_ratio"] is not None else f"{'-':>9}"
        L.append(f"  {g['module']:<8}{g['commands']:>5}{rc}{g['model_cycles']:>10,}"
                 f"{g['ideal_cycles']:>10,}{rr}{mr}  {status(g['meets_limit'])}")
    n_met = sum(1 for g in fm["modules"] if g["meets_limit"])
    L.append(f"  {n_met} of {len(fm['modules'])} within {fm['limit']:g}x: "
             f"{status(fm['all_met'])}" + (f" (worst {fm['worst']})" if fm["worst"] else ""))

    mv = res["model_vs_rtl"]
    if mv is not None:
        ddr_rows = {r["name"]: r for r in res["rtl"]["ddr"]["layers"]}
        L.append("")
        L.append(f"Cycle model vs RTL, per command (target: within "
                 f"{mv['tolerance']:.0%} each, exact in total)")
        L.append(f"  {'command':<26}{'RTL':>10}{'model':>10}{'diff':>8}{'rd B/c':>8}{'wr B/c':>8}")
        for l in mv["layers"]:
            d = ddr_rows.get(l["name"])
            rates = (f"{d['read_bytes_per_cycle']:>8.2f}{d['write_bytes_per_cycle']:>8.2f}"
                     if d else "")
            L.append(f"  {l['name'][:26]:<26}{l['cycles']:>10,}{l['model_cycles']:>10,}"
                     f"{_pct(l['rel_diff']):>8}{rates}{'' if l['within'] else '  !'}")
        L.append(f"  {'total':<26}{mv['total_rtl']:>10,}{mv['total_model']:>10,}"
                 f"{_pct(mv['total_rel_diff']):>8}")
        wst = mv["worst"]
        if wst:
            L.append(f"  worst command: {wst['name']} ({_pct(wst['rel_diff']).strip()}, RTL "
                     f"{wst['cycles']:,}, model {wst['model_cycles']:,})")
        L.append(f"  within {mv['tolerance']:.0%}: {mv['within_count']} of {mv['count']} "
                 f"commands: {status(mv['per_layer_met'])}; total exact "
                 f"({mv['total_diff']:+,} cycles): {status(mv['total_exact'])}")
    return "\n".join(L)

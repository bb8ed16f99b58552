"""``squeezeforge simulate``: one whole-network inference on the engine's RTL (Verilator).

Registered by ``build_parser()`` in ``host/cli.py``.

Prints the per-command table (cycles, ideal cycles, utilization, the cycle model's estimate,
DDR traffic, mismatches), the top-5 from the RTL's output, and the times (build separately); or,
with ``--json``, one JSON object with ``bit_exact``, ``cycles``, ``layers``, ``top``, ``wall_s``,
``build_s`` and the rest of :func:`squeezeforge.sim.simulate.simulate`'s result. Exit status 1
when the RTL's tensors differ from the golden model's, 2 for a user error (one line).
"""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_parser", "cmd_simulate", "format_table"]

EXIT_MISMATCH = 1


def _window(text: str) -> tuple[int, int]:
    try:
        a, b = (int(v.replace("_", "")) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"trace window must be FIRST:LAST cycles, not {text!r}")
    if not 0 <= a < b:
        raise argparse.ArgumentTypeError(f"trace window needs 0 <= FIRST < LAST, not {text!r}")
    return a, b


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "simulate", help="run one inference on the engine's RTL (Verilator) and check every layer")
    p.add_argument("--model", choices=("v1.0", "v1.1"), default="v1.1", help="SqueezeNet version")
    p.add_argument("--weights", help="a .caffemodel, .onnx, compressed .net file, or a folder")
    p.add_argument("--no-download", action="store_true", help="never fetch weights from the network")
    p.add_argument("--image", help="photograph to classify (default: matplotlib's grace_hopper.jpg)")
    p.add_argument("--config", default="z7020",
                   help="engine configuration: a preset, optionally with :key=value overrides")
    p.add_argument("--size", type=int, choices=(227, 224), default=227, help="input crop")
    p.add_argument("--labels", help="synset_words.txt")
    p.add_argument("--trace", metavar="FILE.fst",
                   help="write an FST waveform (a separate, cached build with tracing)")
    p.add_argument("--trace-window", metavar="FIRST:LAST", type=_window,
                   help="trace only these cycles, counted from START (e.g. a mismatching "
                        "command's window from the table)")
    p.add_argument("--workdir", help="keep the simulation's files (program, DDR load/dump, "
                                     "log) in this folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_simulate)
    return p


def format_table(res: dict) -> str:
    lines = [f"{'#':>3} {'command':<26} {'op':<8} {'MACs':>11} {'cycles':>9} {'ideal':>9} "
             f"{'util':>5} {'model':>9} {'DDR rd':>9} {'DDR wr':>9} {'bad':>5}"]
    for l in res["layers"]:
        lines.append(f"{l['index']:>3} {l['name'][:26]:<26} {l['op']:<8} {l['macs']:>11,} "
                     f"{l['cycles']:>9,} {l['ideal_cycles']:>9,} {l['utilization']:>5.0%} "
                     f"{l['model_cycles']:>9,} {l['ddr_read_bytes']:>9,} "
                     f"{l['ddr_write_bytes']:>9,} {l['mismatches']:>5}")
    lines.append(f"{'':>3} {'total':<26} {'':<8} {res['macs']:>11,} {res['cycles']:>9,} "
                 f"{res['ideal_cycles']:>9,} {res['utilization']:>5.0%}")
    return "\n".join(lines)


def cmd_simulate(args) -> int:
    from squeezeforge.host.cli import UserError, find_labels
    from squeezeforge.sim.simulate import SimulationError, simulate
    if args.trace_window and not args.trace:
        raise UserError("--trace-window needs --trace FILE.fst")
    if args.trace and not args.trace.endswith(".fst"):
        raise UserError(f"--trace writes FST: the file name must end in .fst, not {args.trace!r}")
    labels = find_labels(args.labels)
    if not args.json:
        print(f"simulating {args.model} on the {args.config} engine: weights, quantization, "
              f"Verilog, Verilator build (cached after the first), RTL simulation ...",
              file=sys.stderr, flush=True)
    try:
        res = simulate(args.model, args.weights, args.image, args.config, args.size,
                       trace=args.trace, trace_window=args.trace_window,
                       progress=not args.json and sys.stderr.isatty(),
                       download=not args.no_download, labels=labels, workdir=args.workdir)
    except SimulationError as e:      # a program the engine cannot hold, an engine error
        raise UserError(str(e).splitlines()[0]) from None
    # a failing Verilator build (RtlError) is an internal error and stays loud
    for n in res["notes"]:
        print(f"note: {n}", file=sys.stderr)
    if args.json:
        print(json.dumps(res))
        return 0 if res["bit_exact"] is not False else EXIT_MISMATCH
    if res.get("trace_stopped_at") is not None:
        a, b = res["trace_window"]
        print(f"wrote {res['trace']}: cycles {a}..{b} after START; the run stopped at the "
              f"window's end (run without --trace-window to compare every layer); build "
              f"{res['build_s']:.1f} s{'' if res['built'] else ' (cached)'}, simulation "
              f"{res['sim_s']:.1f} s")
        return 0
    print(f"{res['network']} {res['model']} at {res['size'][0]}x{res['size'][1]} on "
          f"{res['config']}: RTL simulation (Verilator)")
    print(format_table(res))
    ms = res["cycles"] / (res["clock_mhz"] * 1e3)
    print(f"{res['cycles']:,} cycles = {ms:.2f} ms at {res['clock_mhz']:g} MHz; "
          f"{res['utilization']:.0%} of the MAC array's peak")
    if res.get("setup_cycles"):
        print(f"  a cold start: {res['setup_cycles']:,} of them are the setup (commands "
              f"0..{res['warm_index'] - 1}: parameters"
              f"{' and weights' if res['warm_index'] > 1 else ''} to the chip); a warm start "
              f"from command {res['warm_index']} takes {res['warm_cycles']:,}")
    if res["bit_exact"]:
        print(f"bit-exact: all {len(res['checked_blobs'])} tensors equal the golden model's")
    else:
        print(f"MISMATCH in {len(res['mismatches'])} tensors:")
        for m in res["mismatches"]:
            f = m.get("first", {})
            where = (f"first at channel {f['channel']}, row {f['row']}, column {f['column']}: "
                     f"expected {f['expected']}, got {f['got']}") if f else m.get("shape", "")
            win = m.get("cycle_window")
            print(f"  {m['layer']} ({', '.join(m['commands'])}): {m['mismatches']} values; "
                  f"{where}" + (f"; cycles {win[0]}:{win[1]} (--trace x.fst --trace-window "
                                f"{win[0]}:{win[1]})" if win else ""))
    from squeezeforge.host.cli import _print_top
    _print_top(f"RTL top-{len(res['top'])}:", res["top"], res["synthetic"])
    print(f"times: Verilog {res['verilog_s']:.1f} s, Verilator build "
          f"{res['build_s']:.1f} s{'' if res['built'] else ' (cached)'}, simulation "
          f"{res['sim_s']:.1f} s ({res['cycles_per_s'] / 1e3:.0f} k cycles/s), total "
          f"{res['wall_s']:.1f} s" + (f"; waveform {res['trace']}" if res["trace"] else ""))
    return 0 if res["bit_exact"] else EXIT_MISMATCH

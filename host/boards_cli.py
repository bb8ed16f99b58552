"""``squeezeforge boards``, ``build`` and ``run``: the Zynq deployment commands.

Registered by ``build_parser()`` in ``host/cli.py``.

Errors the user can fix are :class:`~squeezeforge.hw.config.ConfigError` subclasses (one line,
exit status 2).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

__all__ = ["add_parsers", "cmd_boards", "cmd_build", "cmd_run"]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


# -- boards -----------------------------------------------------------------------------------
def cmd_boards(args) -> int:
    from squeezeforge.hw.boards import boards_table
    rows = boards_table()
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'board':<17}{'part':<23}{'DDR':<22}{'preset':<8}{'MACs':<7}{'weights':<10}fits")
    for r in rows:
        ddr = f"{r['ddr']} {r['ddr_width']}-bit {r['ddr_mts']}"
        fits = "yes" if r["fits"] else f"NO: {r['reason']}"
        print(f"{r['board']:<17}{r['part']:<23}{ddr:<22}{r['preset']:<8}{r['lanes']:<7}"
              f"{r['weight_mode']:<10}{fits}")
    return 0


# -- build ------------------------------------------------------------------------------------
def cmd_build(args) -> int:
    from squeezeforge.hw.boards import BoardError, board_fit, board_preset, get_board
    from squeezeforge.hw.config import resolve_config
    from squeezeforge.host import build as B
    quiet = args.json
    say = (lambda m: None) if quiet else _log
    board = get_board(args.board)
    if args.config:
        try:
            cfg = resolve_config(args.config)
        except Exception:
            from squeezeforge.hw.boards import find_preset
            cfg = find_preset(args.config)
    else:
        cfg = board_preset(board)
    ok, reason = board_fit(board, cfg)
    if not ok:
        raise BoardError(f"{board.name}: {reason}")
    clock = args.clock_mhz if args.clock_mhz is not None else cfg.clock_mhz
    cfg = cfg.with_(clock_mhz=clock)
    qm = program = net = None
    if args.stub_engine:
        from squeezeforge.hw.zynq import StubEngine
        engine, kind = StubEngine(), "stub engine (not the engine: flow check only)"
        _log("warning: --stub-engine: the bitstream will not run inferences")
    else:
        from squeezeforge.quant.quantize import quantize
        from squeezeforge.quant.weights import load_weights
        from squeezeforge.host.schedule import compile_program
        fm = load_weights(args.model, args.weights, download=not args.no_download,
                          progress=not quiet)
        for n in fm.notes:
            _log(f"note: {n}")
        if fm.synthetic:
            _log("warning: SYNTHETIC WEIGHTS: the bitstream's classes will be meaningless")
        say(f"quantizing SqueezeNet {args.model}")
        qm = quantize(fm, None, size=args.size)
        net = fm.net
        program = compile_program(qm, cfg, args.size)
        say(f"program: {len(program.commands)} commands, {program.ddr_size:,} bytes of DDR")
        try:
            engine = B.make_engine(cfg)
        except ImportError:
            raise B.BuildError("the engine generator (squeezeforge.hw.engine) is not installed; "
                               "use --stub-engine to check the flow") from None
        kind = "engine"
    t = time.perf_counter()
    tree = B.write_tree(board, args.out, engine, cfg, clock_mhz=clock, program=program, qm=qm,
                        net=net, size=args.size, synth=not args.no_synth, engine_kind=kind,
                        progress=say)
    secs = time.perf_counter() - t
    vivado = shutil.which("vivado")
    status = "not run"
    if args.no_vivado:
        status = "skipped (--no-vivado)"
    elif vivado is None:
        status = "not on PATH"
    else:
        say(f"running Vivado: {vivado} (this takes a while)")
        rc = B.run_vivado(tree.out, vivado=vivado)
        status = "ok" if rc == 0 else f"failed (exit {rc}, see {tree.out}/vivado.log)"
    tree.vivado = status
    if args.json:
        print(json.dumps(dict(out=str(tree.out), files=tree.files, fit=tree.fit, vivado=status,
                              seconds=round(secs, 1))))
    else:
        print(f"wrote {tree.out}/ ({len(tree.files)} files) for {board.title}, part "
              f"{board.part}, in {secs:.1f} s")
        print(B.fit_text(tree.fit), end="")
        if status == "not on PATH":
            print(f"vivado is not on PATH: on a machine with Vivado run\n"
                  f"  cd {tree.out} && vivado -mode batch -source squeezeforge.tcl")
        else:
            print(f"vivado: {status}")
    if status.startswith("failed"):
        return 1
    return 0


# -- run (on the board) -----------------------------------------------------------------------
def cmd_run(args) -> int:
    import numpy as np
    from squeezeforge.hw.boards import BoardError, get_board
    from squeezeforge.hw.config import EngineConfig
    from squeezeforge.host.board import open_board_driver
    from squeezeforge.host.runtime import EngineError, execute
    from squeezeforge.host.schedule import compile_program
    from squeezeforge.quant import artifact, numeric
    from squeezeforge.quant.golden import golden_probs
    from squeezeforge.quant.preprocess import default_image, load_image
    from squeezeforge.quant.reference import topk
    board = get_board(args.board)
    bdir = Path(args.build)
    try:
        manifest = json.loads((bdir / "build.json").read_text())
    except (OSError, ValueError) as e:
        raise BoardError(f"{bdir}/build.json: {e}") from None
    if manifest["board"] != board.name:
        raise BoardError(f"{bdir} was built for {manifest['board']}, not {board.name}")
    if not manifest.get("model"):
        raise BoardError(f"{bdir} holds no model (built with --stub-engine?)")
    cfg = EngineConfig(**manifest["config"])
    qm = artifact.load(bdir / manifest["model"])
    path = args.image or default_image()
    x, notes = load_image(path, manifest["size"])
    for n in notes:
        _log(f"note: {n}")
    x_int8 = numeric.quantize_input(x, qm.input_scale)
    if args.load_bitstream:
        import pynq
        pynq.Overlay(str(bdir / manifest["bitstream"]))
    # the program's addresses are physical: compile once against a probe of the buffer
    probe = compile_program(qm, cfg, manifest["size"], base_addr=0)
    drv = open_board_driver(manifest["reg_base"], use_pynq=args.pynq, mem_path=args.mem,
                            udmabuf=args.udmabuf, buffer_bytes=probe.ddr_size, uio=args.uio)
    try:
        program = compile_program(qm, cfg, manifest["size"], base_addr=drv.phys)
        times, cycles, res = [], [], None
        for i in range(args.repeat):
            # the first run loads the program, parameters and (resident) weights; the others
            # are warm starts: only the input is written and the setup commands are skipped
            t = time.perf_counter()
            try:
                res = asyncio.run(execute(drv, program, x_int8, timeout_s=args.timeout,
                                          use_irq=args.uio is not None, warm=i > 0))
            except EngineError as e:
                raise BoardError(str(e)) from None
            times.append(time.perf_counter() - t)
            cycles.append(res.cycles)
    finally:
        drv.close()
    probs = golden_probs(qm, res.tensors)
    from squeezeforge.host.cli import find_labels
    top = topk(probs, args.top, find_labels(args.labels))
    steady = times[1:] or times            # warm runs when there are any
    out = dict(board=board.name, image=str(path), top=top,
               latency_ms=round(1e3 * statistics.median(steady), 3),
               engine_ms=round(res.cycles / (manifest["clock_mhz"] * 1e3), 3),
               cycles=res.cycles, command_cycles=res.command_cycles,
               first_command=res.first_command, repeat=args.repeat,
               cold_latency_ms=round(1e3 * times[0], 3), cold_cycles=cycles[0])
    if args.check:
        from squeezeforge.quant.golden import run_golden
        gold = run_golden(qm, x)[qm.net.output]
        out["bit_exact"] = bool(np.array_equal(gold.reshape(-1),
                                               res.tensors[qm.net.output].reshape(-1)))
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{board.title}: {path}")
    for r in top:
        print(f"  {r['index']:4d}  {r['prob']:7.4f}  {r['label']}")
    if args.repeat > 1:
        print(f"latency {out['latency_ms']} ms (host, median of {args.repeat - 1} warm runs), "
              f"engine {res.cycles:,} cycles = {out['engine_ms']} ms at "
              f"{manifest['clock_mhz']:g} MHz; first (cold) run {out['cold_latency_ms']} ms, "
              f"{cycles[0]:,} cycles")
    else:
        print(f"latency {out['latency_ms']} ms (host, one cold run: program, parameters and "
              f"weights loaded), engine {res.cycles:,} cycles = {out['engine_ms']} ms at "
              f"{manifest['clock_mhz']:g} MHz")
    if args.check:
        print(f"bit-exact against the golden model: {'yes' if out['bit_exact'] else 'NO'}")
    return 0


# -- parsers ----------------------------------------------------------------------------------
def add_parsers(sub) -> None:
    """Add ``boards``, ``build`` and ``run`` to the CLI's subparsers."""
    from squeezeforge.hw.boards import BOARDS
    p = sub.add_parser("boards", help="Zynq boards: part, DDR, preset, whether the engine fits")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_boards)

    p = sub.add_parser("build", help="write a Vivado project tree and a fit report for a board")
    p.add_argument("--board", required=True, choices=list(BOARDS), metavar="NAME",
                   help=f"one of: {', '.join(BOARDS)}")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", choices=("v1.0", "v1.1"), default="v1.1")
    p.add_argument("--weights", help="weights file or folder (default: as for infer)")
    p.add_argument("--no-download", action="store_true")
    p.add_argument("--size", type=int, choices=(227, 224), default=227)
    p.add_argument("--clock-mhz", type=float, help="PL clock (default: the preset's, 100)")
    p.add_argument("--config", help="engine preset or CONFIG:key=value,... (default: the board's)")
    p.add_argument("--no-synth", action="store_true", help="skip the Yosys resource estimate")
    p.add_argument("--no-vivado", action="store_true", help="do not run Vivado even if on PATH")
    p.add_argument("--stub-engine", action="store_true",
                   help="a stand-in with the engine's ports (flow check; no inference)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("run", help="on the board: classify an image with the engine")
    p.add_argument("--board", required=True, choices=list(BOARDS), metavar="NAME")
    p.add_argument("--build", default=".", help="the build tree (build.json, model/)")
    p.add_argument("--image", help="photograph (default: matplotlib's grace_hopper.jpg)")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--labels", help="synset_words.txt")
    p.add_argument("--repeat", type=int, default=1, help="runs: the first is a cold start, the "
                   "median latency is over the warm ones after it")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for done")
    p.add_argument("--uio", help="UIO device of the engine's interrupt (default: poll STATUS)")
    p.add_argument("--udmabuf", default="udmabuf0", help="u-dma-buf device name")
    p.add_argument("--mem", default="/dev/mem", help="physical memory device")
    p.add_argument("--pynq", action="store_true", default=None,
                   help="use pynq.MMIO / pynq.allocate (default: when pynq imports)")
    p.add_argument("--load-bitstream", action="store_true",
                   help="load output/squeezeforge.bit with pynq.Overlay first")
    p.add_argument("--check", action="store_true", help="compare with the golden model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

"""The ``squeezeforge`` command.

User errors (a bad weight file, an unreadable image, an unknown configuration, ...) print one
line ``squeezeforge: error: ...`` on stderr and exit with status 2; internal errors are loud.
Every command that reports numbers also prints them as one JSON object with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["main", "UserError"]

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input, reported in one line."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    from squeezeforge.quant.model import WeightError
    from squeezeforge.quant.network import NetworkError
    from squeezeforge.quant.preprocess import ImageError
    from squeezeforge.hw.config import ConfigError
    types: list[type[BaseException]] = [UserError, WeightError, NetworkError, ImageError, ConfigError]
    from squeezeforge.quant.artifact import ArtifactError
    from squeezeforge.host.schedule import ScheduleError
    from squeezeforge.hw.estimate import EstimateError      # Yosys failed: one line, not a trace
    types += [ArtifactError, ScheduleError, EstimateError]
    # run as `python -m squeezeforge.host.cli`, this module is __main__, and the UserError that
    # other modules import from squeezeforge.host.cli is a second class of the same name
    from squeezeforge.host.cli import UserError as imported_user_error
    types.append(imported_user_error)
    return tuple(types)


# -- shared helpers -------------------------------------------------------------------------
def find_labels(path: str | None) -> list[str] | None:
    """ImageNet class names: --labels, $SQUEEZEFORGE_LABELS, or labels/ beside the models folder."""
    candidates = []
    if path:
        candidates.append(Path(path))
    if os.environ.get("SQUEEZEFORGE_LABELS"):
        candidates.append(Path(os.environ["SQUEEZEFORGE_LABELS"]))
    if os.environ.get("SQUEEZEFORGE_MODELS"):
        candidates.append(Path(os.environ["SQUEEZEFORGE_MODELS"]).parent / "labels" / "synset_words.txt")
    for c in candidates:
        if c.is_file():
            lines = c.read_text(errors="replace").splitlines()
            return [l.split(" ", 1)[1] if l[:1] == "n" and " " in l else l for l in lines]
        if path and c == Path(path):
            raise UserError(f"{path}: labels file not found")
    return None


def log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr)


def _load_model(args, quiet: bool):
    from squeezeforge.quant.weights import load_weights
    fm = load_weights(args.model, args.weights, download=not args.no_download, progress=not quiet)
    for n in fm.notes:
        log(f"note: {n}")  # notes go to stderr even with --json (stdout stays pure JSON)
    return fm


def _load_image(args, quiet: bool):
    from squeezeforge.quant.preprocess import default_image, load_image
    path = args.image or default_image()
    x, notes = load_image(path, args.size)
    for n in notes:
        log(f"note: {n}")
    return path, x, notes


def _weights_label(fm) -> str:
    return "synthetic" if fm.synthetic else fm.source


def _quantize(fm, args, quiet: bool):
    from squeezeforge.quant.quantize import quantize
    calib = None
    if getattr(args, "calib", None):
        from squeezeforge.quant.preprocess import load_image
        calib = [load_image(p, args.size)[0] for p in args.calib]
    t = time.perf_counter()
    qm = quantize(fm, calib, size=args.size)
    log(f"quantized {fm.net.name} in {time.perf_counter() - t:.2f} s", quiet)
    return qm


def _top_float(fm, x, k, labels):
    from squeezeforge.quant.reference import forward_float, topk
    blobs = forward_float(fm.net, fm.params, x)
    return blobs, topk(blobs["prob"], k, labels)


def _top_golden(qm, x, k, labels):
    from squeezeforge.quant.golden import golden_probs, run_golden
    from squeezeforge.quant.reference import topk
    blobs = run_golden(qm, x)
    return blobs, topk(golden_probs(qm, blobs), k, labels)


def _print_top(title: str, top: list[dict], synthetic: bool) -> None:
    tag = "  [SYNTHETIC WEIGHTS: classes are meaningless]" if synthetic else ""
    print(f"{title}{tag}")
    for r in top:
        print(f"  {r['index']:4d}  {r['prob']:7.4f}  {r['label']}")


# -- commands -------------------------------------------------------------------------------
def cmd_infer(args) -> int:
    quiet = args.json
    fm = _load_model(args, quiet)
    path, x, notes = _load_image(args, quiet)
    labels = find_labels(args.labels)
    t = time.perf_counter()
    if args.backend == "float":
        _, top = _top_float(fm, x, args.top, labels)
    elif args.backend == "golden":
        qm = _quantize(fm, args, quiet)
        t = time.perf_counter()
        _, top = _top_golden(qm, x, args.top, labels)
    else:   # rtl: the engine's Verilog in Verilator, checked against the golden model
        from squeezeforge.hw.config import resolve_config
        from squeezeforge.sim.simulate import SimulationError, run_rtl_inference
        cfg = resolve_config(args.config).check_fit()
        qm = _quantize(fm, args, quiet)
        log(f"simulating the {cfg.name} engine's RTL (first run builds it with Verilator) ...",
            quiet)
        t = time.perf_counter()
        try:
            rtl = run_rtl_inference(qm, x, cfg, args.size, k=args.top, labels=labels,
                                    progress=not quiet and sys.stderr.isatty())
        except SimulationError as e:
            raise UserError(str(e).splitlines()[0]) from None
        top = rtl["top"]
        if not rtl["bit_exact"]:
            log("warning: the RTL's tensors differ from the golden model's "
                "(run 'squeezeforge simulate' for the per-layer report)", False)
    wall = time.perf_counter() - t
    out = dict(model=args.model, backend=args.backend, weights=_weights_label(fm),
               synthetic=fm.synthetic, image=str(path), size=args.size, top=top,
               notes=fm.notes + notes, wall_s=round(wall, 4))
    if args.backend == "rtl":
        out.update(config=args.config, cycles=rtl["cycles"], bit_exact=rtl["bit_exact"],
                   latency_ms=round(rtl["latency_ms"], 3), build_s=rtl["build_s"],
                   sim_s=rtl["sim_s"])
    if args.json:
        print(json.dumps(out))
    else:
        _print_top(f"{args.model} {args.backend} top-{args.top} for {path} "
                   f"(weights: {out['weights']})", top, fm.synthetic)
        if args.backend == "rtl":
            print(f"  {args.config}: {out['cycles']:,} cycles ({out['latency_ms']:.2f} ms at the "
                  f"preset's clock), {'bit-exact' if out['bit_exact'] else 'NOT bit-exact'} "
                  f"against the golden model")
    if args.backend == "rtl" and not out["bit_exact"]:
        return 1
    return 0


def cmd_quantize(args) -> int:
    from squeezeforge.quant import artifact
    from squeezeforge.quant.quantize import sqnr_table
    quiet = args.json
    fm = _load_model(args, quiet)
    path, x, notes = _load_image(args, quiet)
    qm = _quantize(fm, args, quiet)
    out_dir = Path(args.out)
    artifact.save(qm, out_dir)
    if args.pack:
        from squeezeforge.hw.config import resolve_config
        from squeezeforge.quant.pack import pack
        cfg = resolve_config(args.pack)
        pack(qm, lanes=cfg.in_lanes, banks=cfg.out_lanes).write_images(out_dir / "mem")
    labels = find_labels(args.labels)
    table = sqnr_table(qm, fm, x)
    _, ftop = _top_float(fm, x, 5, labels)
    _, gtop = _top_golden(qm, x, 5, labels)
    out = dict(model=args.model, weights=_weights_label(fm), synthetic=fm.synthetic,
               out=str(out_dir), image=str(path), layers=table, float_top=ftop, int8_top=gtop)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"wrote {out_dir}/ (weights: {out['weights']})")
    print(f"{'layer':<24}{'SQNR dB':>9}")
    for row in table:
        print(f"{row['name']:<24}{row['sqnr_db']:9.2f}")
    _print_top("float top-5:", ftop, fm.synthetic)
    _print_top("int8 top-5:", gtop, fm.synthetic)
    return 0


def cmd_demo(args) -> int:
    """Weights -> quantize -> float and int8 top-5 for a photograph -> the engine's Verilog
    simulated on the whole network (Verilator), checked bit for bit against the golden model."""
    from squeezeforge.hw.config import resolve_config
    cfg = resolve_config(args.config).check_fit() if not args.no_rtl else None
    fm = _load_model(args, False)
    path, x, notes = _load_image(args, False)
    labels = find_labels(args.labels)
    qm = _quantize(fm, args, False)
    _, ftop = _top_float(fm, x, 5, labels)
    _, gtop = _top_golden(qm, x, 5, labels)
    print(f"squeezeforge demo: SqueezeNet {args.model}, weights: {_weights_label(fm)}, image: {path}")
    _print_top("float top-5:", ftop, fm.synthetic)
    _print_top("int8 (golden model, bit-exact reference for the hardware) top-5:", gtop, fm.synthetic)
    if cfg is None:
        return 0
    from squeezeforge.sim.simulate import SimulationError, run_rtl_inference
    log(f"hardware: the {cfg.name} engine ({cfg.in_lanes}x{cfg.out_lanes} MACs, {cfg.weight_mode} "
        f"weights, {cfg.dev.name}): Verilog, Verilator build (about a minute the first time), "
        f"whole-network simulation ...")
    try:
        rtl = run_rtl_inference(qm, x, cfg, args.size, k=5, labels=labels,
                                progress=sys.stderr.isatty())
    except SimulationError as e:
        raise UserError(str(e).splitlines()[0]) from None
    _print_top(f"RTL simulation of the {cfg.name} engine (Verilator) top-5:", rtl["top"],
               fm.synthetic)
    print(f"  {rtl['cycles']:,} cycles = {rtl['latency_ms']:.2f} ms at {cfg.clock_mhz:g} MHz "
          f"(SqueezeJet-2: 7.05 M cycles on a Zynq-7020); every layer "
          f"{'bit-exact against the golden model' if rtl['bit_exact'] else 'NOT bit-exact: run squeezeforge simulate'}"
          f"; Verilator build {rtl['build_s']:.0f} s, simulation {rtl['sim_s']:.0f} s")
    if args.out:
        from squeezeforge.host import hwcli
        hwcli.cmd_generate(argparse.Namespace(config=args.config, out=args.out, json=False,
                                              **{k: getattr(args, k) for k in (
                                                  "model", "weights", "no_download", "size",
                                                  "labels")}, calib=None))
    return 0 if rtl["bit_exact"] else 1


def cmd_bench(args) -> int:
    from squeezeforge.host.bench import run_bench
    res = run_bench(args)
    if args.json:
        print(json.dumps(res))
    # a failed target is a figure, not an error; RTL tensors differing from the golden model's are
    return 1 if res["rtl"] is not None and res["rtl"]["bit_exact"] is False else 0


# -- argument parsing -----------------------------------------------------------------------
def _model_args(p: argparse.ArgumentParser, image: bool = True) -> None:
    p.add_argument("--model", choices=("v1.0", "v1.1"), default="v1.1", help="SqueezeNet version")
    p.add_argument("--weights", help="a .caffemodel, .onnx, compressed .net file, or a folder "
                                     "(default: $SQUEEZEFORGE_MODELS, the cache, then download)")
    p.add_argument("--no-download", action="store_true", help="never fetch weights from the network")
    if image:
        p.add_argument("--image", help="photograph to classify (default: matplotlib's grace_hopper.jpg)")
    p.add_argument("--size", type=int, choices=(227, 224), default=227, help="input crop")
    p.add_argument("--labels", help="synset_words.txt (default: $SQUEEZEFORGE_LABELS or "
                                    "labels/ beside $SQUEEZEFORGE_MODELS)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="squeezeforge", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("infer", help="classify an image")
    _model_args(p)
    p.add_argument("--backend", choices=("float", "golden", "rtl"), default="float")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--calib", nargs="+", help="calibration images (golden and rtl backends)")
    p.add_argument("--config", default="z7020",
                   help="engine configuration for --backend rtl (a preset, optionally with "
                        ":key=value overrides)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("quantize", help="quantize to int8 and write the artifact")
    _model_args(p)
    p.add_argument("--out", required=True, help="output folder for the quantized-model artifact")
    p.add_argument("--calib", nargs="+", help="calibration images (default: the demo image, augmented)")
    p.add_argument("--pack", metavar="CONFIG", help="also write packed memory images for CONFIG")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("demo", help="weights -> int8 -> float and int8 top-5 for a photograph -> "
                                    "the engine's RTL simulated on the whole network")
    _model_args(p)
    p.add_argument("--config", default="z7020", help="engine configuration (a preset)")
    p.add_argument("--no-rtl", action="store_true", help="skip the RTL simulation")
    p.add_argument("--out", help="also write the engine's Verilog and memory images here")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="benchmark figures: golden model speed, cycle model, "
                                     "whole-network RTL cycles, DDR traffic, Fire modules, "
                                     "simulation speed")
    _model_args(p, image=False)
    p.add_argument("--image", help="photograph (default: matplotlib's grace_hopper.jpg)")
    p.add_argument("--repeat", type=int, default=5,
                   help="timed runs of the float and golden models and the cycle model")
    p.add_argument("--config", default="z7020",
                   help="engine configuration: a preset, optionally with :key=value overrides")
    p.add_argument("--no-rtl", action="store_true",
                   help="skip the RTL simulation (a quick run: golden model and cycle model)")
    p.add_argument("--fresh-build", action="store_true",
                   help="build the Verilator model in a temporary build root, so the build "
                        "time is a first build's, not a cache hit")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    from squeezeforge.host import boards_cli, hwcli, simulate_cli
    hwcli.add_parsers(sub, _model_args)
    simulate_cli.add_parser(sub)
    boards_cli.add_parsers(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_error_types() as e:
        print(f"squeezeforge: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("squeezeforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

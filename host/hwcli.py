"""``squeezeforge generate`` and ``squeezeforge estimate``: the hardware generator's commands.

generate: the engine's top-level Verilog for a configuration, the memory images of a model
(parameters; weights in resident mode), and ``engine.json``: parameters, derived facts,
register map and command format, so other tools need not parse the Verilog.

estimate: Yosys ``synth_xilinx -family xc7`` on the generated core (no vendor tools), resources
against the device and the longest register-to-register path in LUT levels.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

__all__ = ["add_parsers", "describe"]

LUT_LEVEL_TARGET = 8


def _config(spec: str):
    from squeezeforge.hw.config import resolve_config
    return resolve_config(spec).check_fit()


def describe(cfg) -> dict:
    """Parameters, derived facts, register map and command format of an engine configuration."""
    from amaranth.lib import data
    from squeezeforge.hw import regs
    from squeezeforge.hw.commands import COMMAND_BYTES, Command, Op

    def fields(layout, base=0, prefix=""):
        out = []
        for name, f in layout:
            s = f.shape
            if isinstance(s, type) and issubclass(s, data.Struct):
                out += fields(data.Layout.cast(s), base + f.offset, prefix + name + ".")
            else:
                out.append(dict(name=prefix + name, bit=base + f.offset, width=f.width))
        return out

    return dict(
        config=cfg.to_dict(),
        derived=dict(macs=cfg.macs, weight_word_bytes=cfg.weight_word_bytes,
                     weight_buffers=cfg.weight_buffers, resources_model=cfg.resources()),
        device=dict(name=cfg.dev.name, part=cfg.dev.part, lut=cfg.dev.lut, ff=cfg.dev.ff,
                    dsp=cfg.dev.dsp, ramb36=cfg.dev.ramb36),
        registers=dict(id=regs.ID_VALUE, map={r.name: int(r) for r in regs.Reg},
                       max_layer_cycles=regs.MAX_LAYER_CYCLES),
        commands=dict(record_bytes=COMMAND_BYTES, ops={o.name: o.value for o in Op},
                      fields=fields(data.Layout.cast(Command))),
        ports=dict(clock="clk", reset="rst (synchronous, active high)",
                   axi_master="m_axi_* (AXI4, 64-bit data, 32-bit address, bursts <= 16)",
                   axi_lite_slave="s_axi_* (AXI4-Lite, 32-bit)", interrupt="irq"),
    )


def cmd_generate(args) -> int:
    from squeezeforge.host.build import make_engine
    from squeezeforge.hw.verilog import generate_verilog
    cfg = _config(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    program = None
    if args.model:
        from squeezeforge.host.cli import _load_model, _quantize
        from squeezeforge.host.schedule import compile_program
        fm = _load_model(args, args.json)
        qm = _quantize(fm, args, args.json)
        program = compile_program(qm, cfg, args.size)
        program.packed.write_images(out / "mem")
        (out / "program.json").write_text(program.to_json())
    t = time.perf_counter()
    verilog = generate_verilog(make_engine(cfg), "squeezeforge_engine")
    (out / "squeezeforge_engine.v").write_text(verilog)
    desc = describe(cfg)
    desc.update(verilog="squeezeforge_engine.v", top="squeezeforge_engine",
                model=args.model, memory_images="mem/" if program else None,
                generate_s=round(time.perf_counter() - t, 2))
    (out / "engine.json").write_text(json.dumps(desc, indent=1))
    if args.json:
        print(json.dumps(dict(out=str(out), **desc)))
    else:
        print(f"wrote {out}/squeezeforge_engine.v ({len(verilog.splitlines())} lines), "
              f"{out}/engine.json" + (f", {out}/mem/ and program.json for {args.model}" if program else ""))
        print(f"  {cfg.name}: {cfg.in_lanes}x{cfg.out_lanes} MAC array ({cfg.macs} MACs), "
              f"{cfg.weight_mode} weights, device {cfg.dev.name}")
    return 0


def cmd_estimate(args) -> int:
    from squeezeforge.hw.estimate import estimate, fits
    from squeezeforge.host.build import make_engine
    from squeezeforge.hw.verilog import generate_verilog
    cfg = _config(args.config)
    if not args.json:
        print(f"synthesizing {cfg.name} for {cfg.dev.name} with Yosys (first run compiles Yosys: "
              f"a few minutes) ...", flush=True)
    verilog = generate_verilog(make_engine(cfg), "squeezeforge_engine")
    res = estimate(verilog, cfg.dev)
    ok, over = fits(res, cfg.dev)
    dev = cfg.dev
    used = dict(lut=res["lut"], ff=res["ff"], dsp=res["dsp"], ramb18=res["ramb18"],
                ramb36=res["ramb36"], lut_levels=res["lut_levels"], path_cells=res["path_cells"])
    out = dict(config=cfg.name, device=dict(name=dev.name, part=dev.part, lut=dev.lut, ff=dev.ff,
                                            dsp=dev.dsp, ramb18=dev.ramb18, ramb36=dev.ramb36),
               used=used, fits=bool(ok), over=over, lut_level_target=LUT_LEVEL_TARGET,
               longest_path_signals=res.get("lut_path"),
               yosys_s=res.get("yosys_seconds"), cached=res.get("cached"))
    if args.json:
        print(json.dumps(out))
        return 0
    blocks = used["ramb36"] + used["ramb18"] / 2
    print(f"{cfg.name} on {dev.name} ({dev.part}), Yosys synth_xilinx estimate:")
    for key, cap in (("lut", dev.lut), ("ff", dev.ff), ("dsp", dev.dsp)):
        print(f"  {key.upper():<8}{used[key]:>9,} / {cap:>9,}  ({100 * used[key] / cap:5.1f} %)")
    print(f"  {'BRAM':<8}{blocks:>9.1f} / {dev.ramb36:>9,}  RAMB36 equivalents "
          f"({used['ramb36']} RAMB36 + {used['ramb18']} RAMB18)")
    print(f"  longest path: {used['lut_levels']} LUT levels ({used['path_cells']} cells with carry "
          f"chains), target <= {LUT_LEVEL_TARGET}: "
          f"{'met' if used['lut_levels'] <= LUT_LEVEL_TARGET else 'MISSED'}")
    if res.get("lut_path"):
        print(f"  on it: {' -> '.join(res['lut_path'])}")
    print(f"  fits: {'yes' if ok else 'NO: ' + ', '.join(f'{k} {v}' for k, v in over.items())}")
    return 0


def cmd_sweep(args) -> int:
    from squeezeforge.quant.network import squeezenet
    from squeezeforge.sim.sweep import sweep
    from tqdm import tqdm
    rows = sweep(squeezenet(args.model), args.device, args.size,
                 progress=None if args.json else (lambda xs: tqdm(xs, desc="configurations",
                                                                  leave=False)))
    if not rows:
        from squeezeforge.hw.config import ConfigError
        raise ConfigError(f"no configuration fits {args.device}")
    if args.json:
        print(json.dumps(dict(device=args.device, model=args.model, size=args.size, best=rows[0],
                              configurations=rows)))
        return 0
    print(f"SqueezeNet {args.model} at {args.size}: {len(rows)} configurations fit {args.device} "
          f"(cycle model; fastest first)")
    print(f"  {'config':<22}{'cycles':>11}{'MAC util':>10}{'DSP':>6}{'RAMB36':>8}{'DDR MB':>8}")
    for r in rows[:args.top]:
        print(f"  {r['config']:<22}{r['cycles']:>11,}{r['mac_utilization']:>10.1%}{r['dsp']:>6}"
              f"{r['ramb36']:>8}{r['ddr_bytes'] / 1e6:>8.2f}")
    return 0


def add_parsers(sub, model_args) -> None:
    p = sub.add_parser("sweep", help="design-space sweep: fastest configuration that fits a device")
    p.add_argument("--device", required=True, help="xc7z020, xc7z045, xczu9eg, xczu3eg, ...")
    p.add_argument("--model", choices=("v1.0", "v1.1"), default="v1.1")
    p.add_argument("--size", type=int, choices=(227, 224), default=227)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("generate", help="write the engine's Verilog, memory images and description")
    p.add_argument("--config", required=True, help="preset (z7020, z7045, zu9eg, zu3eg) with optional "
                                                   ":key=value overrides")
    p.add_argument("--out", required=True, help="output folder")
    model_args(p, image=False)
    p.set_defaults(model=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("estimate", help="Yosys resource and logic-depth estimate against the device")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_estimate)

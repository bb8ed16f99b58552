"""The host compiler: pass structure, DDR plan, weight tiles and prefetch chain, input layout,
reports, and one-line refusals that name the layer and the numbers.

Execution results (every layer against the golden model) are checked in test_funcsim.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from squeezeforge.hw.commands import COMMAND_BYTES, Loc, Op, decode
from squeezeforge.hw.config import PRESETS, EngineConfig
from squeezeforge.host.schedule import ScheduleError, compile_program
from squeezeforge.quant.model import synthetic_model
from squeezeforge.quant.network import Conv, Network, squeezenet
from squeezeforge.quant.pack import pack
from squeezeforge.quant.quantize import quantize


@pytest.fixture(scope="module")
def qm11():
    x = np.random.default_rng(1).normal(0, 50, (3, 227, 227)).astype(np.float32)
    return quantize(synthetic_model(squeezenet("v1.1")), [x])


def _regions_ok(prog):
    regs = sorted(prog.regions, key=lambda r: r.addr)
    for r in regs:
        assert r.addr % 64 == 0, f"{r.name} at {r.addr:#x} is not 64-byte aligned"
    for a, b in zip(regs, regs[1:]):
        assert a.addr + a.size <= b.addr, f"{a.name} overlaps {b.name}"
    assert regs[0].addr == prog.base_addr and regs[-1].addr + regs[-1].size < 1 << 32


def test_v11_all_fused_pass_structure(qm11):
    """Resident, squeeze buffer big enough: one command per pass, in network order."""
    cfg = PRESETS["zu9eg"].with_(squeeze_buffer_bytes=56 * 56 * 32)
    prog = compile_program(qm11, cfg, 227, fuse="always")
    want = ["params", "load", "conv1", "pool1", "fire2/squeeze1x1", "fire2/expand", "fire3/squeeze1x1",
            "fire3/expand", "pool3", "fire4/squeeze1x1", "fire4/expand", "fire5/squeeze1x1",
            "fire5/expand", "pool5"]
    for i in range(6, 10):
        want += [f"fire{i}/squeeze1x1", f"fire{i}/expand"]
    want += ["conv10", "pool10", "end"]
    assert [c.name for c in prog.commands] == want
    ops = {"params": Op.PARAMS, "load": Op.LOAD, "conv1": Op.CONV, "conv10": Op.CONV, "pool10": Op.GAP,
           "end": Op.END}
    for c in prog.commands:
        f = c.fields
        op = ops.get(c.name, Op.MAXPOOL if c.name.startswith("pool") else
                     Op.EXPAND if c.name.endswith("expand") else Op.CONV)
        assert f["op"] == op, c.name
        if c.name == "params":              # the parameter words, from the params region
            assert (f["pf_words"], f["pf_addr"]) == (prog.packed.n_params,
                                                     prog.region("params").addr)
            continue
        if c.name == "load":                # resident: the whole packed image, to word 0
            w = prog.region("weights")
            assert (f["pf_words"], f["pf_addr"], f["conv"]["weight_base"], f["wbuf"]) == (
                prog.packed.n_words, w.addr, 0, 0)
            assert w.size >= prog.packed.n_words * cfg.weight_word_bytes
            raw = prog.packed.words.tobytes()
            assert prog.weights_blob[:len(raw)] == raw and not any(prog.weights_blob[len(raw):])
            continue
        assert f["wbuf"] == 0 and f["pf_words"] == 0, c.name           # resident
        if c.name.endswith("squeeze1x1"):
            assert (f["src"], f["dst"], f["dump"]) == (Loc.DDR, Loc.SQUEEZE, 1)
        if op == Op.EXPAND:
            fire = c.name.split("/")[0]
            e = qm11.net.layer(f"{fire}/expand1x1").cout
            cat = prog.tensors[f"{fire}/concat"]
            assert (f["src"], f["dst"]) == (Loc.SQUEEZE, Loc.DDR)
            assert (f["out_addr"], f["out_pix"], f["out_bytes"], f["out_off2"], f["out_bytes2"]) == (
                cat.addr, 2 * e, e, e, e)
            assert f["conv"]["n_og"] == f["n_og2"] == -(-e // cfg.out_lanes)
    assert prog.warm_index == 2                     # after PARAMS and the LOAD
    # conv1 runs on im2col patches: 3x3x3 = 27 channels, 1x1 kernel over 113x113 pixels
    assert prog.commands[0].op == Op.PARAMS
    c1 = next(c for c in prog.commands if c.op == Op.CONV).fields["conv"]
    assert prog.input_layout == "im2col"
    assert (c1["k"], c1["stride"], c1["pad"], c1["h"], c1["w"], c1["n_ic"], c1["act_signed"]) == (
        1, 1, 0, 113, 113, 1, 1)
    _regions_ok(prog)


def test_tensors_and_regions(qm11):
    prog = compile_program(qm11, PRESETS["z7020"], 227)
    _regions_ok(prog)
    shapes = qm11.net.shapes(227)
    regions = {r.name: r for r in prog.regions}
    for blob, (c, h, w) in shapes.items():
        t = prog.tensors[blob]
        if blob == "data":
            assert (t.c, t.h, t.w, t.pix) == (27, 113, 113, 32)       # im2col patches
            continue
        assert (t.c, t.h, t.w) == (c, h, w), blob
        if blob.endswith("expand1x1") or blob.endswith("expand3x3"):
            cat = prog.tensors[blob.split("/")[0] + "/concat"]
            off = 0 if blob.endswith("expand1x1") else c
            assert (t.addr, t.pix) == (cat.addr + off, cat.pix), blob
        else:
            assert t.pix == -(-c // 8) * 8, blob
            assert regions[blob].addr == t.addr and regions[blob].size == h * w * t.pix, blob
    # the command list is the first region, the program's records in order, END last
    img = prog.ddr_image()
    off = prog.cmd_addr - prog.base_addr
    for i, c in enumerate(prog.commands):
        assert img[off + i * COMMAND_BYTES:off + (i + 1) * COMMAND_BYTES] == c.record
    assert decode(c.record)["op"] == Op.END
    assert len(prog.new_ddr()) == prog.ddr_size


def test_streamed_tiles_and_prefetch_chain(qm11):
    """Small buffers: every tile fits, og ranges cover each layer exactly, tiles are the packed
    words, laid out in execution order, and each is prefetched by the command before its user
    into the buffer that user computes from."""
    cfg = EngineConfig("t", "xc7z020", 16, 16, "streamed", weight_words=100,
                       act_buffer_bytes=64 * 1024, squeeze_buffer_bytes=64 * 1024)
    prog = compile_program(qm11, cfg, 227)
    table = pack(qm11, 16, 16)   # reference packing (conv1 is re-packed for im2col: skipped)
    img = prog.ddr_image()
    wreg = prog.region("weights")
    assert [c.op for c in prog.commands[:2]] == [Op.PARAMS, Op.LOAD]
    covered: dict[str, list] = {}
    prev_end = wreg.addr
    users = [c for c in prog.commands if c.tile and c.op != Op.LOAD]
    for c in users:
        addr, n = c.tile
        assert n <= cfg.weight_words, c.name
        assert addr == prev_end, f"{c.name}: tiles are not contiguous in execution order"
        prev_end = addr + -(-n * cfg.weight_word_bytes // 64) * 64
        before = prog.commands[c.index - 1].fields
        f = c.fields
        assert (before["pf_addr"], before["pf_words"]) == (addr, n), c.name
        assert 1 - before["wbuf"] == f["wbuf"], c.name
        assert f["conv"]["weight_base"] == 0
        if c.op == Op.EXPAND:
            continue
        layer = c.layers[0]
        e = table.layer_table[layer]
        og0 = (f["conv"]["param_base"] - e.param_base)
        og1 = og0 + f["conv"]["n_og"]
        covered.setdefault(layer, []).append((og0, og1))
        if layer != "conv1":
            wpg = e.k * e.k * e.n_ic
            want = table.words[e.base + og0 * wpg:e.base + og1 * wpg].tobytes()
            got = img[addr - prog.base_addr:addr - prog.base_addr + n * cfg.weight_word_bytes]
            assert got == want, c.name
        # output channels [og0*Po, og1*Po) of the layer's tensor
        t = prog.tensors[qm11.net.layer(layer).top]
        assert f["out_addr"] == t.addr + og0 * 16, c.name
        assert f["out_bytes"] == min(og1 * 16, t.c) - og0 * 16, c.name
    assert prev_end <= wreg.addr + wreg.size
    # weighted commands alternate buffers
    bufs = [c.fields["wbuf"] for c in users]
    assert bufs == [i % 2 for i in range(len(bufs))]
    # conv10: 63 groups of 32 words (512 / 16) -> 100 // 32 = 3 per tile -> 21 tiles
    assert sorted(covered["conv10"]) == [(a, a + 3) for a in range(0, 63, 3)]
    for layer, ranges in covered.items():
        ranges.sort()
        assert ranges[0][0] == 0 and ranges[-1][1] == table.layer_table[layer].n_og, layer
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])), layer
    # fire8: squeeze fits (4 x 24 = 96 words), expand (64 + 576 words) does not: CONV commands
    # reading the squeeze buffer. fire9's squeeze (4 x 32 = 128 words) does not: via DDR.
    f8 = [c for c in prog.commands if c.layers and c.layers[0].startswith("fire8/expand")]
    assert len(f8) == 1 + 8 and all(c.op == Op.CONV and c.fields["src"] == Loc.SQUEEZE for c in f8)
    assert prog.notes == ["fire9/squeeze1x1: squeeze weights need 128 words, a weight buffer "
                          "holds 100: fire9 runs as three passes via DDR"]


def test_prepare_input_layouts(qm11):
    x = np.random.default_rng(2).integers(-128, 128, (3, 227, 227)).astype(np.int8)
    prog = compile_program(qm11, PRESETS["z7020"], 227, first_layer="direct")
    assert prog.input_layout == "hwc"
    raw = np.frombuffer(prog.prepare_input(x), np.int8).reshape(227, 227, 8)
    np.testing.assert_array_equal(raw[:, :, :3], x.transpose(1, 2, 0))
    assert not raw[:, :, 3:].any()
    c1 = prog.commands[2].fields["conv"]            # after PARAMS and the LOAD
    assert (c1["k"], c1["stride"], c1["h"], c1["n_ic"]) == (3, 2, 227, 1)
    prog = compile_program(qm11, PRESETS["z7020"], 227)
    raw = np.frombuffer(prog.prepare_input(x), np.int8).reshape(113, 113, 32)
    # pixel (y, x) channel (kh*3 + kw)*3 + c = x[c, 2y + kh, 2x + kw] (conv1 has no padding)
    for y, xx in [(0, 0), (5, 7), (112, 112), (112, 0)]:
        for kh in range(3):
            for kw in range(3):
                np.testing.assert_array_equal(raw[y, xx, (kh * 3 + kw) * 3:(kh * 3 + kw + 1) * 3],
                                              x[:, 2 * y + kh, 2 * xx + kw])
    assert not raw[:, :, 27:].any()
    with pytest.raises(ScheduleError, match=r"input must be int8 of shape \(3, 227, 227\)"):
        prog.prepare_input(x.astype(np.int16))


def test_reports(qm11):
    prog = compile_program(qm11, PRESETS["z7020"], 227)
    d = json.loads(prog.to_json())
    assert [r["name"] for r in d["regions"]][:4] == ["commands", "input", "weights", "params"]
    assert len(d["commands"]) == len(prog.commands)
    assert [c["fields"]["op"] for c in d["commands"][:2]] == ["PARAMS", "LOAD"]
    assert d["tensors"]["fire2/concat"]["c"] == 128
    s = prog.summary()
    for name in ("commands", "input", "weights", "fire9/concat", "conv10", "pool10"):
        assert name in s
    assert "128x56x56, 128 B/pixel" in s


# -- refusals ---------------------------------------------------------------------------------
def _one_line(e):
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_refuse_small_squeeze_buffer(qm11):
    cfg = PRESETS["z7020"].with_(squeeze_buffer_bytes=50_000)
    with pytest.raises(ScheduleError) as e:
        compile_program(qm11, cfg, 227, fuse="always")
    # fire2's squeeze output: 56 x 56 pixels x one 16-byte word
    assert _one_line(e) == ("fire2/squeeze1x1: squeeze output 56x56x16 needs 50176 bytes on "
                            "chip, the squeeze buffer holds 50000")
    # auto: the Fire modules that do not fit run via DDR, with a note
    prog = compile_program(qm11, cfg, 227)
    assert [n.split(":")[0] for n in prog.notes] == ["fire2/squeeze1x1", "fire3/squeeze1x1"]
    # streamed: a warm start skips only PARAMS; the first tile's LOAD runs every time
    assert prog.warm_index == 1 and prog.commands[1].op == Op.LOAD
    assert not any(c.name in ("fire2/expand", "fire3/expand") for c in prog.commands)
    assert any(c.name == "fire4/expand" for c in prog.commands)


def test_refuse_other_limits(qm11):
    with pytest.raises(ScheduleError) as e:
        compile_program(qm11, PRESETS["zu9eg"].with_(weight_words=100), 227)
    n = pack(qm11, 32, 64)
    n_words = n.n_words - n.layer_table["conv1"].n_words + 1   # im2col conv1: 1 og x 1 word
    assert _one_line(e) == (f"resident weights need {n_words} words of 32x64 bytes, the weight "
                            f"memory holds 100")
    with pytest.raises(ScheduleError) as e:
        compile_program(qm11, PRESETS["z7020"].with_(weight_words=8), 227)
    assert _one_line(e) == ("fire2/expand3x3: one output group needs 9 weight words, a weight "
                            "buffer holds 8")
    with pytest.raises(ScheduleError) as e:
        compile_program(qm11, PRESETS["z7020"].with_(act_buffer_bytes=3000), 227)
    assert _one_line(e) == ("conv1: 1 input rows of 113x27 need 3616 bytes on chip, the "
                            "activation buffer holds 3000")
    with pytest.raises(ScheduleError) as e:
        compile_program(qm11, PRESETS["z7020"].with_(act_buffer_bytes=3000), 227,
                        first_layer="direct")
    assert _one_line(e) == ("conv1: 3 input rows of 227x3 need 10896 bytes on chip, the "
                            "activation buffer holds 3000")
    with pytest.raises(ScheduleError, match="pool10: the model's GAP requantization is for a "
                                            "196-element window, this input gives 13x13 = 169"):
        compile_program(qm11, PRESETS["z7020"], 224)
    with pytest.raises(ScheduleError, match="first_layer must be one of auto, im2col, direct"):
        compile_program(qm11, PRESETS["z7020"], first_layer="patches")


def test_refuse_field_overflow():
    """A 1x1 conv over a 600-pixel-wide input: the 9-bit width field cannot hold it."""
    net = Network("wide", (Conv("c", "data", "c", 3, 4, 1),))
    x = np.random.default_rng(0).normal(0, 40, (3, 9, 9)).astype(np.float32)
    qm = quantize(synthetic_model(net), [x], size=9)
    prog = compile_program(qm, PRESETS["z7020"], (4, 511))
    assert prog.commands[2].fields["conv"]["w"] == 511     # after PARAMS and LOAD
    with pytest.raises(ScheduleError) as e:
        compile_program(qm, PRESETS["z7020"], (4, 600))
    assert _one_line(e) == "c: command field conv.w = 600 does not fit 9 bits"
    with pytest.raises(ScheduleError, match="c: kernel 5x5 is not supported"):
        net5 = Network("k5", (Conv("c", "data", "c", 3, 4, 5),))
        qm5 = quantize(synthetic_model(net5), [x], size=9)
        compile_program(qm5, PRESETS["z7020"], 9)

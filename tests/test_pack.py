"""The weight / parameter packer: the word layout by its defining formula, exact unpacking for
several MAC-array shapes, the memory images read back from disk, and parameter checks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from squeezeforge.quant import numeric
from squeezeforge.quant.model import synthetic_model
from squeezeforge.quant.network import squeezenet
from squeezeforge.quant.pack import PARAM_LANE_BITS, PackError, pack, unpack
from squeezeforge.quant.preprocess import default_image, load_image
from squeezeforge.quant.quantize import quantize

SHAPES = [(8, 8), (8, 12), (16, 16), (8, 1), (32, 5)]   # (lanes, banks)


@pytest.fixture(scope="module", params=["v1.1", "v1.0"])
def qm(request):
    x = load_image(default_image())[0]
    return quantize(synthetic_model(squeezenet(request.param)), [x])


@pytest.mark.parametrize("lanes,banks", SHAPES)
def test_unpack_gives_weights_back(qm, lanes, banks):
    p = pack(qm, lanes, banks)
    assert p.words.dtype == np.uint8 and p.words.shape[1:] == (banks, lanes)
    back = unpack(p, qm.net)
    for name, qc in qm.convs.items():
        np.testing.assert_array_equal(back[name], qc.w, err_msg=f"{name} at lanes={lanes} banks={banks}")


@pytest.mark.parametrize("lanes,banks", SHAPES)
def test_layout_by_formula(qm, lanes, banks):
    """Every byte of every layer against word = ((og*k + kh)*k + kw)*n_ic + icb, byte i of bank o
    = W[og*Po + o, icb*Pi + i, kh, kw] or 0 past the channel count."""
    p = pack(qm, lanes, banks)
    base = 0
    pbase = 0
    for conv in qm.net.convs:
        e = p.layer_table[conv.name]
        w = qm.convs[conv.name].w
        k = conv.kernel
        n_og, n_ic = -(-conv.cout // banks), -(-conv.cin // lanes)
        assert (e.base, e.n_og, e.n_ic, e.k, e.n_words, e.param_base) == \
            (base, n_og, n_ic, k, n_og * k * k * n_ic, pbase), conv.name
        # the formula, evaluated on index grids (og, kh, kw, icb, o, i)
        og, kh, kw, icb, o, i = np.meshgrid(np.arange(n_og), np.arange(k), np.arange(k),
                                            np.arange(n_ic), np.arange(banks), np.arange(lanes),
                                            indexing="ij")
        word = ((og * k + kh) * k + kw) * n_ic + icb
        oc, ic = og * banks + o, icb * lanes + i
        inside = (oc < conv.cout) & (ic < conv.cin)
        want = np.where(inside, w[np.minimum(oc, conv.cout - 1), np.minimum(ic, conv.cin - 1), kh, kw], 0)
        got = p.words[base + word, o, i].view(np.int8)
        bad = np.argwhere(got != want)
        assert bad.size == 0, (f"{conv.name}: word {base + word[tuple(bad[0])]} bank {o[tuple(bad[0])]} "
                               f"byte {i[tuple(bad[0])]}: expected {want[tuple(bad[0])]}, got {got[tuple(bad[0])]}")
        base += e.n_words
        pbase += n_og
    assert p.n_words == base and p.n_params == pbase


@pytest.mark.parametrize("lanes,banks", [(8, 12), (16, 16)])
def test_params(qm, lanes, banks):
    p = pack(qm, lanes, banks)
    for name, qc in qm.convs.items():
        e = p.layer_table[name]
        rows = p.params[e.param_base:e.param_base + e.n_og].reshape(-1)
        o = qc.cout
        np.testing.assert_array_equal(rows["bias"][:o], qc.b, err_msg=name)
        np.testing.assert_array_equal(rows["mult"][:o], qc.mult, err_msg=name)
        np.testing.assert_array_equal(rows["shift"][:o], qc.shift, err_msg=name)
        assert not rows["bias"][o:].any() and not rows["mult"][o:].any() and not rows["shift"][o:].any()


@pytest.mark.parametrize("lanes,banks", [(8, 12), (16, 16)])
def test_images_read_back(qm, lanes, banks, tmp_path):
    p = pack(qm, lanes, banks)
    files = p.write_images(tmp_path)
    # weight banks: one word per line, lanes*2 hex digits, byte 0 least significant
    for o in range(banks):
        lines = (tmp_path / f"weights_bank{o}.hex").read_text().splitlines()
        assert len(lines) == p.n_words
        assert {len(s) for s in lines} == {2 * lanes}
        back = np.frombuffer(b"".join(int(s, 16).to_bytes(lanes, "little") for s in lines), np.uint8)
        np.testing.assert_array_equal(back.reshape(-1, lanes), p.words[:, o, :], err_msg=f"bank {o}")
    # raw stream: word by word, bank 0 first, byte 0 first
    raw = (tmp_path / "weights.bin").read_bytes()
    assert len(raw) == p.n_words * banks * lanes
    w0 = qm.convs["conv1"].w
    assert raw[0:3] == w0[0, 0:3, 0, 0].tobytes()           # word 0, bank 0, bytes 0..2 (cin=3)
    assert raw[3:lanes] == bytes(lanes - 3)                  # padded input channels
    assert raw[lanes:lanes + 3] == w0[1, 0:3, 0, 0].tobytes()  # bank 1
    # parameter memory: lane o at bits [54*o, 54*o + 54): bias 32 (two's complement), M 16, shift 6
    lines = (tmp_path / "params.hex").read_text().splitlines()
    assert len(lines) == p.n_params
    assert {len(s) for s in lines} == {-(-banks * PARAM_LANE_BITS // 4)}
    for name, qc in qm.convs.items():
        e = p.layer_table[name]
        for og in range(e.n_og):
            v = int(lines[e.param_base + og], 16)
            for o in range(banks):
                lane = (v >> (PARAM_LANE_BITS * o)) & ((1 << PARAM_LANE_BITS) - 1)
                bias = lane & 0xFFFF_FFFF
                bias -= (bias >> 31) << 32
                m = (lane >> 32) & ((1 << numeric.MULT_BITS) - 1)
                s = lane >> 48
                ch = og * banks + o
                want = (int(qc.b[ch]), int(qc.mult[ch]), int(qc.shift[ch])) if ch < qc.cout else (0, 0, 0)
                assert (bias, m, s) == want, f"{name} og {og} lane {o}"
    layout = json.loads(files["layout"].read_text())
    assert layout["lanes"] == lanes and layout["banks"] == banks
    assert layout["layers"]["conv10"]["base"] == p.layer_table["conv10"].base


@pytest.mark.parametrize("lanes,msg", [(12, "lanes must be a positive multiple of 8, not 12"),
                                       (0, "lanes must be a positive multiple of 8, not 0"),
                                       (-8, "lanes must be a positive multiple of 8, not -8")])
def test_bad_lanes(qm, lanes, msg):
    with pytest.raises(PackError, match=f"^{msg}$"):
        pack(qm, lanes, 8)


@pytest.mark.parametrize("banks", [0, -3])
def test_bad_banks(qm, banks):
    with pytest.raises(PackError, match=f"^banks must be a positive integer, not {banks}$"):
        pack(qm, 8, banks)

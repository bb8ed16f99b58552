"""Weight import: the Caffe protobuf reader, the Deep Compression decoder, model resolution.

Fixtures are written by small encoders in this file (independent of the readers under test):
``_caffemodel`` writes protobuf wire format field by field, ``_compress`` writes Han et al.'s
``.net`` layout. Expected values are the arrays fed to the encoders, never the readers' output.
"""
from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
import urllib.request

import numpy as np
import pytest

from squeezeforge.quant import weights as W
from squeezeforge.quant.caffe import load_caffemodel
from squeezeforge.quant.deep_compression import load_compressed
from squeezeforge.quant.model import WeightError, synthetic_model
from squeezeforge.quant.network import NetworkError, network_from_prototxt, squeezenet
from squeezeforge.quant.onnx_import import load_onnx

V11_CAFFE = "squeezenet_v1.1/squeezenet_v1.1.caffemodel"
V11_ONNX = "squeezenet_v1.1/squeezenet_v1.1.onnx"
V10_DENSE = "squeezenet_v1.0/squeezenet_v1.0_deep_compression_dense.caffemodel"
V10_NET = "squeezenet_v1.0_deep_compression/compressed_SqueezeNet.net"

# A three-convolution network; the caffemodel fixtures name its layers the Deep Compression
# way ("fire2/conv1x1_1", "conv_final") to exercise canonical_name.
TINY_PROTOTXT = """
name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 9 dim: 9 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "relu_conv1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fire2/squeeze1x1" type: "Convolution" bottom: "conv1" top: "fire2/squeeze1x1"
        convolution_param { num_output: 6 kernel_size: 1 } }
layer { name: "conv10" type: "Convolution" bottom: "fire2/squeeze1x1" top: "conv10"
        convolution_param { num_output: 5 kernel_size: 3 pad: 1 } }
layer { name: "pool10" type: "Pooling" bottom: "conv10" top: "pool10"
        pooling_param { pool: AVE global_pooling: true } }
"""
FILE_NAMES = {"conv1": "conv1", "fire2/squeeze1x1": "fire2/conv1x1_1", "conv10": "conv_final"}


@pytest.fixture(scope="module")
def tiny():
    return network_from_prototxt(TINY_PROTOTXT)


def tiny_params(net, seed=0):
    rng = np.random.default_rng(seed)
    return {c.name: (rng.normal(size=c.weight_shape).astype(np.float32),
                     rng.normal(size=(c.cout,)).astype(np.float32)) for c in net.convs}


# -- a protobuf encoder for the fixtures ------------------------------------------------------
def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _key(num, wt):
    return _varint(num << 3 | wt)


def f_var(num, v):
    return _key(num, 0) + _varint(v)


def f_len(num, payload: bytes | str):
    payload = payload.encode() if isinstance(payload, str) else payload
    return _key(num, 2) + _varint(len(payload)) + payload


def _blob(a: np.ndarray, data="packed", shape="packed") -> bytes:
    a = np.asarray(a)
    if shape == "legacy":
        dims = (1,) * (4 - a.ndim) + a.shape
        head = b"".join(f_var(n, d) for n, d in zip((1, 2, 3, 4), dims))
    elif shape == "packed":
        head = f_len(7, f_len(1, b"".join(_varint(d) for d in a.shape)))
    else:
        head = f_len(7, b"".join(f_var(1, d) for d in a.shape))
    flat = a.reshape(-1)
    if data == "packed":
        body = f_len(5, flat.astype("<f4").tobytes())
    elif data == "unpacked":
        body = b"".join(_key(5, 5) + struct.pack("<f", v) for v in flat)
    elif data == "double_packed":
        body = f_len(8, flat.astype("<f8").tobytes())
    elif data == "double_unpacked":
        body = b"".join(_key(8, 1) + struct.pack("<d", v) for v in flat)
    elif data == "split":   # packed in two pieces, as protobuf allows
        h = flat.size // 2
        body = f_len(5, flat[:h].astype("<f4").tobytes()) + f_len(5, flat[h:].astype("<f4").tobytes())
    return head + body


def _layer(name, blobs: list[bytes], style="new", ltype="Convolution") -> bytes:
    if style == "new":
        junk = (f_len(3, "bottom") + f_len(4, "top") + f_var(10, 1)           # bottom, top, phase
                + f_len(6, f_var(3, 1) + _key(4, 5) + struct.pack("<f", 1.0))  # ParamSpec lr_mult
                + f_len(106, f_var(1, 4) + f_var(4, 3)))                      # convolution_param
        return f_len(100, f_len(1, name) + f_len(2, ltype) + junk
                     + b"".join(f_len(7, b) for b in blobs))
    enum = 4 if ltype == "Convolution" else 18
    junk = f_len(2, "bottom") + f_len(3, "top") + f_len(10, f_var(1, 4))
    return f_len(2, f_len(4, name) + f_var(5, enum) + junk + b"".join(f_len(6, b) for b in blobs))


def _caffemodel(params, names=None, style="new", data="packed", shape="packed", extra=b""):
    names = names or {k: k for k in params}
    out = f_len(1, "tiny") + f_len(3, "data") + _key(99, 1) + struct.pack("<d", 2.5)
    out += _layer("data", [], style, "Input")
    for conv, (w, b) in params.items():
        out += _layer(names[conv], [_blob(w, data, shape), _blob(b, data, shape)], style)
        out += _layer("relu_" + names[conv], [], style, "ReLU")
    return out + extra


def assert_params_equal(got, want):
    assert set(got) == set(want), f"layers differ: got {sorted(got)}, want {sorted(want)}"
    for k in want:
        for what, g, e in zip(("weights", "bias"), got[k], want[k]):
            assert g.dtype == np.float32, f"{k} {what}: dtype {g.dtype}"
            np.testing.assert_array_equal(g, e, err_msg=f"{k} {what}")


# -- Caffe reader on encoded fixtures ----------------------------------------------------------
@pytest.mark.parametrize("style", ["new", "v1"])
@pytest.mark.parametrize("data,shape", [("packed", "packed"), ("unpacked", "unpacked"),
                                        ("packed", "legacy"), ("unpacked", "legacy"),
                                        ("double_packed", "packed"),
                                        ("double_unpacked", "unpacked"), ("split", "packed")])
def test_caffemodel_encodings(tmp_path, tiny, style, data, shape):
    want = tiny_params(tiny)
    if data.startswith("double"):   # doubles are read and narrowed to float32
        want = {k: (w.astype(np.float64).astype(np.float32), b) for k, (w, b) in want.items()}
    p = tmp_path / "tiny.caffemodel"
    p.write_bytes(_caffemodel(want, FILE_NAMES, style, data, shape))
    m = load_caffemodel(p, tiny)
    assert m.source == str(p) and not m.synthetic
    assert_params_equal(m.params, want)


def test_caffemodel_large_field_numbers_and_unknown_wire_types_are_skipped(tmp_path, tiny):
    want = tiny_params(tiny, 3)
    extra = f_len(2000, b"\x00" * 300) + _key(7, 5) + b"abcd" + f_var(123456, 2 ** 63 + 5)
    p = tmp_path / "x.caffemodel"
    p.write_bytes(extra + _caffemodel(want, FILE_NAMES, extra=extra))
    assert_params_equal(load_caffemodel(p, tiny).params, want)


# -- real models -----------------------------------------------------------------------------
def test_v11_caffemodel_equals_onnx(models):
    net = squeezenet("v1.1")
    t = time.perf_counter()
    caffe = load_caffemodel(models / V11_CAFFE, net)
    took = time.perf_counter() - t
    onnx = load_onnx(models / V11_ONNX, net)
    # both files carry the same fp16-rounded values, so they must agree exactly
    assert_params_equal(caffe.params, onnx.params)
    assert took < 1.0, f"parsing the 5 MB caffemodel took {took:.2f} s"
    n = sum(w.size + b.size for w, b in caffe.params.values())
    assert n == 1_235_496


def test_v10_dense_caffemodel_facts(models):
    m = load_caffemodel(models / V10_DENSE, squeezenet("v1.0"))
    nz = sum(int(np.count_nonzero(w)) for w, _ in m.params.values())
    total = sum(w.size for w, _ in m.params.values())
    assert round(100 * nz / total, 1) == 33.4          # README: 33.4 % non-zero
    w = m.params["fire7/expand1x1"][0]
    zero_rows = np.flatnonzero(~w.reshape(w.shape[0], -1).any(axis=1))
    assert zero_rows.size == 1, f"fire7/expand1x1 all-zero output channels: {zero_rows}"


def test_deep_compression_equals_dense_caffemodel(models):
    net = squeezenet("v1.0")
    t = time.perf_counter()
    dc = load_compressed(models / V10_NET, net)
    took = time.perf_counter() - t
    dense = load_caffemodel(models / V10_DENSE, net)
    # identical weights give identical float outputs for every blob of forward_float
    assert_params_equal(dc.params, dense.params)
    assert took < 1.0, f"decoding took {took:.2f} s"
    assert any("33.4% non-zero" in n for n in dc.notes), dc.notes


def test_v11_weights_do_not_fit_v10(models):
    p = models / V11_CAFFE
    with pytest.raises(WeightError, match=r"conv1 weights have shape \(64, 3, 3, 3\).*\(96, 3, 7, 7\)") as e:
        load_caffemodel(p, squeezenet("v1.0"))
    assert str(p) in str(e.value)


@pytest.mark.parametrize("frac", [0.0002, 0.1, 0.5, 0.9, 0.99999])
def test_truncated_real_caffemodel(models, tmp_path, frac):
    data = (models / V11_CAFFE).read_bytes()
    cut = max(1, int(len(data) * frac))
    p = tmp_path / "cut.caffemodel"
    p.write_bytes(data[:cut])
    with pytest.raises(WeightError, match=f"truncated protobuf at byte {cut}$") as e:
        load_caffemodel(p, squeezenet("v1.1"))
    assert str(e.value).startswith(f"{p}: ")


# -- Caffe reader: bad input -----------------------------------------------------------------
def _raises(path, net, pattern, loader=load_caffemodel):
    with pytest.raises(WeightError, match=pattern) as e:
        loader(path, net)
    msg = str(e.value)
    assert msg.startswith(f"{path}: "), f"message does not name the file: {msg}"
    assert "\n" not in msg
    return msg


def test_caffemodel_missing_file(tmp_path, tiny):
    _raises(tmp_path / "nope.caffemodel", tiny, "no such file")


def test_caffemodel_directory(tmp_path, tiny):
    _raises(tmp_path, tiny, "is a directory")


def test_caffemodel_empty_file(tmp_path, tiny):
    p = tmp_path / "empty.caffemodel"
    p.write_bytes(b"")
    _raises(p, tiny, "empty file")


def test_caffemodel_truncated_tiny(tmp_path, tiny):
    data = _caffemodel(tiny_params(tiny), FILE_NAMES)
    for cut in range(1, len(data), 37):
        p = tmp_path / f"cut{cut}.caffemodel"
        p.write_bytes(data[:cut])
        # a cut exactly between two layers leaves a valid but incomplete message
        _raises(p, tiny, f"truncated protobuf at byte {cut}$|no weights for layer")


def test_caffemodel_cut_between_layers_names_missing_layer(tmp_path, tiny):
    params = tiny_params(tiny)
    full = _caffemodel(params, FILE_NAMES)
    first = _caffemodel({"conv1": params["conv1"]}, FILE_NAMES)
    assert full.startswith(first)
    p = tmp_path / "half.caffemodel"
    p.write_bytes(first)
    _raises(p, tiny, r"no weights for layer fire2/squeeze1x1, conv10 of the tiny network")


def test_caffemodel_wire_type_7(tmp_path, tiny):
    p = tmp_path / "bad.caffemodel"
    good = _caffemodel(tiny_params(tiny), FILE_NAMES)
    p.write_bytes(b"\x0f" + good)                              # field 1, wire type 7
    _raises(p, tiny, r"not a readable caffemodel: corrupt protobuf \(wire type 7 in field 1\) "
                     r"at byte 0$")
    inner = f_len(1, "conv1") + b"\x16\x00"                   # field 2, wire type 6
    p.write_bytes(good + f_len(100, inner))
    _raises(p, tiny, rf"corrupt protobuf \(wire type 6 in field 2\) at byte {len(good) + 10}$")


def test_caffemodel_inner_length_past_message(tmp_path, tiny):
    # a layer whose blob claims more bytes than the layer holds
    blob = _blob(np.zeros((4, 3, 3, 3), np.float32))
    inner = f_len(1, "conv1") + _key(7, 2) + _varint(len(blob) + 50) + blob
    p = tmp_path / "bad.caffemodel"
    p.write_bytes(f_len(100, inner) + b"\x00" * 60)
    _raises(p, tiny, r"corrupt protobuf \(field 7 runs past the end of its message\) at byte 11$")


def test_caffemodel_packed_length_not_multiple_of_4(tmp_path, tiny):
    blob = f_len(7, f_len(1, _varint(2))) + f_len(5, b"\x00" * 7)
    p = tmp_path / "bad.caffemodel"
    p.write_bytes(f_len(100, f_len(1, "conv1") + f_len(2, "Convolution") + f_len(7, blob)))
    _raises(p, tiny, "packed float data is not a multiple of 4 bytes")


def test_caffemodel_shape_disagrees_with_data(tmp_path, tiny):
    blob = f_len(7, f_len(1, _varint(3) + _varint(3))) + f_len(5, b"\x00" * 32)
    p = tmp_path / "bad.caffemodel"
    p.write_bytes(f_len(100, f_len(1, "conv1") + f_len(2, "Convolution") + f_len(7, blob)))
    _raises(p, tiny, r"shape \(3, 3\) but 8 values")


def test_caffemodel_wrong_conv_shape(tmp_path, tiny):
    params = tiny_params(tiny)
    w, b = params["fire2/squeeze1x1"]
    params["fire2/squeeze1x1"] = (np.zeros((6, 4, 3, 3), np.float32), b)
    p = tmp_path / "shape.caffemodel"
    p.write_bytes(_caffemodel(params, FILE_NAMES))
    _raises(p, tiny, r"fire2/squeeze1x1 weights have shape \(6, 4, 3, 3\), the tiny network "
                     r"needs \(6, 4, 1, 1\)")


def test_caffemodel_wrong_bias_length(tmp_path, tiny):
    params = tiny_params(tiny)
    params["conv10"] = (params["conv10"][0], np.zeros(7, np.float32))
    p = tmp_path / "bias.caffemodel"
    p.write_bytes(_caffemodel(params, FILE_NAMES))
    _raises(p, tiny, r"conv10 bias has shape \(7,\)")


def test_caffemodel_missing_bias_blob(tmp_path, tiny):
    params = tiny_params(tiny)
    data = b"".join(_layer(FILE_NAMES[k], [_blob(w)] + ([] if k == "conv10" else [_blob(b)]))
                    for k, (w, b) in params.items())
    p = tmp_path / "nobias.caffemodel"
    p.write_bytes(data)
    _raises(p, tiny, "layer conv_final has 1 blobs, a convolution needs 2")


def test_caffemodel_layer_of_wrong_type(tmp_path, tiny):
    params = tiny_params(tiny)
    data = b"".join(_layer(FILE_NAMES[k], [_blob(w), _blob(b)],
                           ltype="InnerProduct" if k == "conv1" else "Convolution")
                    for k, (w, b) in params.items())
    p = tmp_path / "type.caffemodel"
    p.write_bytes(data)
    _raises(p, tiny, "layer conv1 is of type InnerProduct, not Convolution")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["weights", "bias"])
def test_caffemodel_not_finite(tmp_path, tiny, bad, where):
    params = tiny_params(tiny)
    w, b = (a.copy() for a in params["conv10"])
    (w if where == "weights" else b).reshape(-1)[2] = bad
    params["conv10"] = (w, b)
    p = tmp_path / "nan.caffemodel"
    p.write_bytes(_caffemodel(params, FILE_NAMES))
    _raises(p, tiny, f"conv10 {where} hold 1 NaN or Inf values")


def test_caffemodel_random_bytes(tmp_path, tiny):
    rng = np.random.default_rng(1)
    for i in range(20):
        p = tmp_path / f"random{i}.caffemodel"
        p.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        _raises(p, tiny, "not a readable caffemodel|not a caffemodel|no weights for layer")


def test_caffemodel_text_and_jpeg_files(tmp_path, tiny, demo_image):
    p = tmp_path / "text.caffemodel"
    p.write_text("hello, this is not a protobuf message\n" * 10)
    _raises(p, tiny, "not a readable caffemodel|not a caffemodel")
    p = tmp_path / "photo.caffemodel"
    shutil.copy(demo_image, p)
    _raises(p, tiny, "not a readable caffemodel|not a caffemodel")


def test_caffemodel_protobuf_without_layers(tmp_path, tiny):
    p = tmp_path / "nolayers.caffemodel"
    p.write_bytes(f_len(1, "just a name") + f_var(5, 3))
    _raises(p, tiny, r"not a caffemodel \(no layers")


def test_onnx_file_as_caffemodel(models, tiny):
    # an ONNX model is valid protobuf too, but has no Caffe layers
    _raises(models / V11_ONNX, squeezenet("v1.1"), "not a caffemodel|not a readable caffemodel")


# -- Deep Compression -------------------------------------------------------------------------
def _compress(dense: dict, net, codebooks: dict) -> bytes:
    """Encode sparse weights whose values all lie in ``codebooks[name]`` (codebook[0] = 0)."""
    nnz, body = [], b""
    for c in net.convs:
        w, b = dense[c.name]
        cb = codebooks[c.name]
        flat = w.reshape(-1)
        pos = np.flatnonzero(flat)
        codes = np.searchsorted(cb[1:], flat[pos]) + 1             # cb[1:] is sorted
        assert np.array_equal(cb[codes], flat[pos])
        gaps = np.diff(np.concatenate([[-1], pos]))
        fillers = (gaps - 1) // 16                                  # gaps > 16 need fillers
        per = fillers + 1
        last = np.cumsum(per) - 1
        all_gaps = np.full(per.sum(), 16)
        all_gaps[last] = gaps - 16 * fillers
        all_codes = np.zeros(per.sum(), np.uint8)
        all_codes[last] = codes
        nib = (all_gaps - 1).astype(np.uint8)
        if nib.size % 2:
            nib = np.append(nib, 0)
        packed = (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)
        nnz.append(all_codes.size)
        body += cb.astype("<f4").tobytes() + b.astype("<f4").tobytes() + all_codes.tobytes() \
            + packed.tobytes()
    return np.array(nnz, "<u4").tobytes() + body


@pytest.fixture(scope="module")
def tiny_sparse(tiny):
    rng = np.random.default_rng(5)
    dense, books = {}, {}
    for c in tiny.convs:
        cb = np.concatenate([[0.0], np.sort(rng.normal(size=255))]).astype(np.float32)
        size = int(np.prod(c.weight_shape))
        keep = rng.random(size) < 0.3
        keep[[0, 40 % size, size - 1]] = True
        keep[1:40 % size] = False            # a gap longer than 32 needs two fillers
        w = np.where(keep, cb[rng.integers(1, 256, size)], 0).astype(np.float32)
        dense[c.name] = (w.reshape(c.weight_shape), rng.normal(size=c.cout).astype(np.float32))
        books[c.name] = cb
    return dense, books


def test_deep_compression_tiny_roundtrip(tmp_path, tiny, tiny_sparse):
    dense, books = tiny_sparse
    p = tmp_path / "tiny.net"
    p.write_bytes(_compress(dense, tiny, books))
    m = load_compressed(p, tiny)
    assert_params_equal(m.params, dense)


def test_deep_compression_bad_inputs(tmp_path, tiny, tiny_sparse):
    dense, books = tiny_sparse
    good = _compress(dense, tiny, books)
    p = tmp_path / "bad.net"
    _raises(p, tiny, "no such file", load_compressed)
    p.write_bytes(b"")
    _raises(p, tiny, "empty file", load_compressed)
    for cut in (3, 12, 100, len(good) // 2, len(good) - 1):
        p.write_bytes(good[:cut])
        _raises(p, tiny, "truncated Deep Compression file", load_compressed)
    p.write_bytes(good + b"\x00\x00")
    _raises(p, tiny, r"size mismatch: .*2 bytes too many", load_compressed)
    # a header claiming more entries than a layer has weights
    p.write_bytes(np.array([10**6, 1, 1], "<u4").tobytes() + good[12:])
    _raises(p, tiny, r"conv1 claims 1000000 entries for 108 weights", load_compressed)


def test_deep_compression_position_past_end(tmp_path, tiny):
    # conv1 has 108 weights; 8 entries with gap 16 each land at 15, 31, ..., 127
    conv1 = np.zeros(1024 // 4, "<f4").tobytes() + np.zeros(4, "<f4").tobytes() \
        + bytes(8) + bytes([0xFF] * 4)
    rest = b"".join(np.zeros(256 + c.cout, "<f4").tobytes() for c in tiny.convs[1:])
    p = tmp_path / "past.net"
    p.write_bytes(np.array([8, 0, 0], "<u4").tobytes() + conv1 + rest)
    _raises(p, tiny, r"conv1: entry 6 of 8 lands at position 111, past the 108 weights",
            load_compressed)


def test_deep_compression_random_file_for_squeezenet(tmp_path):
    p = tmp_path / "random.net"
    p.write_bytes(np.random.default_rng(2).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    _raises(p, squeezenet("v1.0"), "not a Deep Compression file|truncated|size mismatch",
            load_compressed)


# -- model resolution -------------------------------------------------------------------------
def test_git_blob_sha1_matches_git(tmp_path):
    for i, data in enumerate([b"", b"hello\n", bytes(range(256)) * 1000]):
        p = tmp_path / f"f{i}"
        p.write_bytes(data)
        git = subprocess.run(["git", "hash-object", str(p)], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert W.git_blob_sha1(data) == git


@pytest.fixture(scope="module")
def fake_v11(tmp_path_factory):
    """Two synthetic SqueezeNet v1.1 caffemodels (seeds 1 and 2) in the official layout."""
    net = squeezenet("v1.1")
    d = tmp_path_factory.mktemp("fake")
    files = {}
    for seed in (1, 2):
        params = synthetic_model(net, seed).params
        p = d / f"seed{seed}" / "squeezenet_v1.1.caffemodel"
        p.parent.mkdir()
        p.write_bytes(_caffemodel(params))
        files[seed] = (p, params)
    return files


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No models folder, an empty cache, and no real network."""
    monkeypatch.delenv("SQUEEZEFORGE_MODELS", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("SQUEEZEFORGE_CACHE", str(cache))

    def no_network(url, *a, **k):
        if not str(url).startswith("file:"):
            raise AssertionError(f"test tried to open {url}")
        return real_urlopen(url, *a, **k)
    real_urlopen = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return cache


def _place(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)
    return dst


def test_resolution_order(env, tmp_path, monkeypatch, fake_v11):
    (a, pa), (b, pb) = fake_v11[1], fake_v11[2]
    models = tmp_path / "models"
    _place(a, models / "squeezenet_v1.1" / "squeezenet_v1.1.caffemodel")
    _place(b, env / "squeezenet_v1.1.caffemodel")
    monkeypatch.setenv("SQUEEZEFORGE_MODELS", str(models))
    m = W.load_weights("v1.1", download=False)
    assert_params_equal(m.params, pa)                  # the models folder wins over the cache
    monkeypatch.delenv("SQUEEZEFORGE_MODELS")
    m = W.load_weights("v1.1", download=False)
    assert_params_equal(m.params, pb)                  # then the cache
    assert m.source == str(env / "squeezenet_v1.1.caffemodel")
    monkeypatch.setenv("SQUEEZEFORGE_MODELS", str(tmp_path / "empty"))
    m = W.load_weights("v1.1", download=False)         # models folder without v1.1: the cache
    assert_params_equal(m.params, pb)


def test_default_cache_is_under_home(monkeypatch, tmp_path):
    monkeypatch.delenv("SQUEEZEFORGE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert W.cache_dir() == tmp_path / ".cache" / "squeezeforge"


def test_explicit_path_file_and_folder(env, tmp_path, fake_v11):
    a, pa = fake_v11[1]
    assert_params_equal(W.load_weights("v1.1", a).params, pa)
    assert_params_equal(W.load_weights("v1.1", a.parent).params, pa)
    with pytest.raises(WeightError, match=f"^{tmp_path}: no SqueezeNet v1.0 weights in this folder"):
        W.load_weights("v1.0", tmp_path)
    with pytest.raises(WeightError, match="no such file"):
        W.load_weights("v1.1", tmp_path / "missing.caffemodel")
    with pytest.raises(NetworkError, match="unknown SqueezeNet version"):
        W.load_weights("v2.0")


def test_found_but_broken_file_is_an_error_not_a_fallback(env, tmp_path, monkeypatch, fake_v11):
    a, _ = fake_v11[1]
    models = tmp_path / "models" / "squeezenet_v1.1"
    models.mkdir(parents=True)
    (models / "squeezenet_v1.1.caffemodel").write_bytes(a.read_bytes()[:1000])
    monkeypatch.setenv("SQUEEZEFORGE_MODELS", str(tmp_path / "models"))
    with pytest.raises(WeightError, match="truncated protobuf at byte 1000"):
        W.load_weights("v1.1", download=False)


def test_dispatch_by_content(tmp_path, tiny, tiny_sparse):
    dense, books = tiny_sparse
    p = tmp_path / "weights.bin"
    p.write_bytes(_caffemodel(dense, FILE_NAMES))
    assert_params_equal(W.load_file(p, tiny).params, dense)
    p.write_bytes(_compress(dense, tiny, books))
    assert_params_equal(W.load_file(p, tiny).params, dense)


def test_dispatch_onnx_by_content(models, tmp_path):
    onnx = _place(models / V11_ONNX, tmp_path / "model.weights")
    net = squeezenet("v1.1")
    assert_params_equal(W.load_file(onnx, net).params, load_onnx(models / V11_ONNX, net).params)


def test_shared_models_layout(models, env, monkeypatch):
    monkeypatch.setenv("SQUEEZEFORGE_MODELS", str(models))
    m = W.load_weights("v1.1", download=False)
    assert m.source == str(models / V11_CAFFE) and not m.synthetic
    m = W.load_weights("v1.0", download=False)
    assert m.source == str(models / V10_DENSE) and not m.synthetic
    m = W.load_weights("v1.0", models / "squeezenet_v1.0_deep_compression")
    assert m.source == str(models / V10_NET)


def test_download_into_cache(env, monkeypatch, capsys, fake_v11):
    a, pa = fake_v11[1]
    sha = subprocess.run(["git", "hash-object", str(a)], capture_output=True, text=True,
                         check=True).stdout.strip()
    monkeypatch.setitem(W.DOWNLOAD_URLS, "v1.1", a.as_uri())
    monkeypatch.setitem(W.GIT_BLOB_SHA1, "v1.1", sha)
    m = W.load_weights("v1.1")
    cached = env / "squeezenet_v1.1.caffemodel"
    assert m.source == str(cached) and cached.read_bytes() == a.read_bytes()
    assert_params_equal(m.params, pa)
    assert "squeezenet_v1.1.caffemodel" in capsys.readouterr().err      # the progress bar
    assert sorted(x.name for x in env.iterdir()) == ["squeezenet_v1.1.caffemodel"]
    # the next call finds the cache and does not download
    monkeypatch.setitem(W.DOWNLOAD_URLS, "v1.1", (a.parent / "gone").as_uri())
    assert W.load_weights("v1.1", progress=False).source == str(cached)
    assert capsys.readouterr().err == ""


def test_download_with_wrong_sha_is_deleted(env, monkeypatch, fake_v11):
    a, _ = fake_v11[1]
    monkeypatch.setitem(W.DOWNLOAD_URLS, "v1.1", a.as_uri())   # not the official file
    with pytest.raises(WeightError, match=f"downloaded file has git blob SHA-1 [0-9a-f]{{40}}, "
                                          f"expected {W.GIT_BLOB_SHA1['v1.1']}; the download "
                                          f"was deleted"):
        W.load_weights("v1.1", progress=False)
    assert not env.exists() or list(env.iterdir()) == []


def test_download_failure_falls_back_to_synthetic(env, monkeypatch, tmp_path):
    monkeypatch.setitem(W.DOWNLOAD_URLS, "v1.0", (tmp_path / "nothing-here").as_uri())
    m = W.load_weights("v1.0", progress=False)
    assert m.synthetic and m.source == "synthetic"
    assert len(m.notes) == 1 and "\n" not in m.notes[0]
    note = m.notes[0]
    assert note.startswith("no weights for v1.0 (no SQUEEZEFORGE_MODELS, none in the cache ")
    assert "nothing-here failed" in note and note.endswith("; using seeded synthetic weights")
    ref = synthetic_model(squeezenet("v1.0"))
    assert_params_equal(m.params, ref.params)


def test_download_disabled_does_not_touch_network(env, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("download attempted")
    monkeypatch.setattr(urllib.request, "urlopen", boom)
    m = W.load_weights("v1.1", download=False)
    assert m.synthetic and "download disabled" in m.notes[0]


def test_download_timeout_is_short_and_handled(env, monkeypatch):
    seen = {}

    def slow(url, timeout=None, **k):
        seen["timeout"] = timeout
        raise socket.timeout("timed out")
    monkeypatch.setattr(urllib.request, "urlopen", slow)
    m = W.load_weights("v1.1", progress=False)
    assert m.synthetic and "timed out" in m.notes[0]
    assert seen["timeout"] is not None and 0 < seen["timeout"] <= 30


def test_download_short_read(env, monkeypatch, tmp_path):
    class Short:
        headers = {"Content-Length": "1000"}

        def __init__(self):
            self.left = [b"x" * 10]

        def read(self, n):
            return self.left.pop() if self.left else b""

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Short())
    with pytest.raises(W.DownloadError, match=r"download incomplete \(10 of 1000 bytes\)"):
        W.download_weights("v1.1", tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()


def test_onnx_bad_inputs(tmp_path, tiny):
    p = tmp_path / "m.onnx"
    _raises(p, tiny, "no such file", load_onnx)
    _raises(tmp_path, tiny, "is a directory", load_onnx)
    p.write_bytes(b"")
    _raises(p, tiny, "empty file, not an ONNX model", load_onnx)
    p.write_bytes(_caffemodel(tiny_params(tiny), FILE_NAMES))
    _raises(p, tiny, "not a readable ONNX model|not an ONNX model", load_onnx)
    p.write_text("plain text, not protobuf\n")
    _raises(p, tiny, "not a readable ONNX model|not an ONNX model", load_onnx)


def test_onnx_v11_as_v10(models):
    _raises(models / V11_ONNX, squeezenet("v1.0"), r"conv1 weights have shape \(64, 3, 3, 3\)",
            load_onnx)

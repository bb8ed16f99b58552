"""The network description: built-in table against the official prototxts, shape and cost facts
from an independent source (/work/shared/README.md), unsupported layers, and the float
reference against ONNX Runtime on the real v1.1 weights."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.quant.caffe import load_caffemodel
from squeezeforge.quant.network import NetworkError, network_from_prototxt, squeezenet
from squeezeforge.quant.preprocess import load_image
from squeezeforge.quant.reference import forward_float, topk

PROTOTXTS = {
    "v1.1": "squeezenet_v1.1/deploy.prototxt",
    "v1.0": "squeezenet_v1.0/deploy.prototxt",
    "deep_compression": "squeezenet_v1.0_deep_compression/SqueezeNet_deploy.prototxt",
}


def _assert_same_network(got, want, what):
    assert (got.input_name, got.input_channels) == (want.input_name, want.input_channels), what
    assert len(got.layers) == len(want.layers), \
        f"{what}: {len(got.layers)} layers, built-in table has {len(want.layers)}"
    for g, w in zip(got.layers, want.layers):
        assert g == w, f"{what}: layer differs:\n  prototxt: {g}\n  built-in: {w}"


@pytest.mark.parametrize("key,version", [("v1.1", "v1.1"), ("v1.0", "v1.0"),
                                         ("deep_compression", "v1.0")])
def test_builtin_table_equals_official_prototxt(models, key, version):
    parsed = network_from_prototxt(models / PROTOTXTS[key])
    _assert_same_network(parsed, squeezenet(version), PROTOTXTS[key])
    # the DeepScale deploy files end in a Softmax; the Deep Compression one does not
    assert parsed.softmax == (key != "deep_compression")


def test_old_style_layers_prototxt(models):
    """The same v1.1 prototxt rewritten in Caffe's V1 syntax (``layers``, enum types)."""
    text = (models / PROTOTXTS["v1.1"]).read_text()
    old = re.sub(r"\blayer\s*\{", "layers {", text)
    old = re.sub(r'type:\s*"(\w+)"', lambda m: f"type: {m.group(1).upper()}", old)
    assert "layers {" in old and "CONVOLUTION" in old
    _assert_same_network(network_from_prototxt(old), squeezenet("v1.1"), "V1-style v1.1")


def test_parameter_and_mac_counts():
    # /work/shared/README.md: v1.1 1,235,496 params, 387.7 M MACs at 227 and 349.2 M at 224;
    # v1.0 1,248,424 params and 861.3 M MACs at 227
    v11, v10 = squeezenet("v1.1"), squeezenet("v1.0")
    assert v11.total_params() == 1_235_496
    assert round(v11.total_macs(227) / 1e6, 1) == 387.7
    assert round(v11.total_macs(224) / 1e6, 1) == 349.2
    assert v10.total_params() == 1_248_424
    assert round(v10.total_macs(227) / 1e6, 1) == 861.3


def test_v11_shapes_at_227():
    s = squeezenet("v1.1").shapes(227)
    # Caffe ceil-mode pooling: 113 -> 56 -> 28 -> 14 (README)
    assert [s[b][1] for b in ("conv1", "pool1", "pool3", "pool5")] == [113, 56, 28, 14]
    assert s["fire9/concat"] == (512, 14, 14)
    assert s["conv10"] == (1000, 14, 14) and s["pool10"] == (1000, 1, 1)


def test_v10_shapes_at_227():
    s = squeezenet("v1.0").shapes(227)
    # conv1 7x7/2: (227 - 7) // 2 + 1 = 111; pools ceil((n - 3) / 2) + 1: 55, 27, 13
    assert [s[b][1] for b in ("conv1", "pool1", "pool4", "pool8")] == [111, 55, 27, 13]
    assert s["conv10"] == (1000, 15, 15)       # conv10 has pad 1 in v1.0


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_eight_fires(version):
    fires = squeezenet(version).fires()
    assert [f.name for f in fires] == [f"fire{i}" for i in range(2, 10)]
    for f in fires:
        assert (f.squeeze.kernel, f.expand1x1.kernel, f.expand3x3.kernel) == (1, 1, 3)
        assert f.expand1x1.cout == f.expand3x3.cout == 4 * f.squeeze.cout


def test_fires_found_in_parsed_deep_compression_prototxt(models):
    net = network_from_prototxt(models / PROTOTXTS["deep_compression"])
    assert len(net.fires()) == 8
    assert net.fires()[0].squeeze.name == "fire2/squeeze1x1"


_HEAD = 'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 32 dim: 32 }\n'


@pytest.mark.parametrize("layer,message", [
    ('layer { name: "norm1" type: "LRN" bottom: "data" top: "norm1" }',
     "norm1: layer type 'LRN' is not supported"),
    ('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }',
     "bn: layer type 'BatchNorm' is not supported"),
    ('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" }',
     "fc: layer type 'InnerProduct' is not supported"),
    ('layers { name: "fc" type: INNER_PRODUCT bottom: "data" top: "fc" }',
     "fc: layer type 'INNER_PRODUCT' is not supported"),
    ('layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
     'convolution_param { num_output: 4 kernel_size: 3 group: 2 } }',
     "c: grouped or dilated convolution is not supported"),
    ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
     'pooling_param { pool: AVE kernel_size: 3 stride: 2 } }',
     "p: only global average pooling is supported"),
    ('layer { name: "r" type: "ReLU" bottom: "data" top: "data" }',
     "r: ReLU is supported only right after a convolution"),
])
def test_unsupported_layers(layer, message):
    with pytest.raises(NetworkError, match=f"^{re.escape(message)}$"):
        network_from_prototxt(_HEAD + layer + "\n")


def test_unknown_version():
    with pytest.raises(NetworkError, match="unknown SqueezeNet version 'v2'"):
        squeezenet("v2")


@pytest.fixture(scope="module")
def v11_reference():
    env = os.environ.get("SQUEEZEFORGE_MODELS")
    models = Path(env) if env else None
    if models is None or not models.is_dir():
        pytest.skip("SQUEEZEFORGE_MODELS is not set to a folder of real SqueezeNet weights")
    from squeezeforge.quant.preprocess import default_image
    net = squeezenet("v1.1")
    params = load_caffemodel(models / "squeezenet_v1.1/squeezenet_v1.1.caffemodel", net).params
    x, _ = load_image(default_image(), 227)
    return models, net, x, forward_float(net, params, x)


def test_forward_float_blob_shapes(v11_reference):
    _, net, _, blobs = v11_reference
    for name, shape in net.shapes(227).items():
        assert blobs[name].shape == shape, f"blob {name}: {blobs[name].shape} != {shape}"
        assert blobs[name].dtype == np.float32, f"blob {name}: {blobs[name].dtype}"


def test_forward_float_matches_onnxruntime(v11_reference):
    import onnxruntime as ort
    models, net, x, blobs = v11_reference
    sess = ort.InferenceSession(str(models / "squeezenet_v1.1/squeezenet_v1.1.onnx"),
                                providers=["CPUExecutionProvider"])
    (ref,) = sess.run(None, {sess.get_inputs()[0].name: x[None]})
    ref = ref.reshape(-1)
    got = blobs["pool10"].reshape(-1)
    # Both sides compute in float32 with different summation orders. Treating each rounding
    # as an independent error of at most u = 2**-24 (relative), a sum of n terms drifts by
    # about sqrt(n) * u, and errors add along the longest chain of reductions: the convs on
    # the critical path (every conv except the 8 parallel expand1x1) plus the global pool.
    # Scaled by the largest output this gives the tolerance below (about 6.6e-4 here; the
    # worst case n * u would be 24x looser). Measured difference: about 6e-6.
    u = 2.0 ** -24
    depth = len(net.convs) - len(net.fires()) + 1
    n_max = max(max(c.reduction for c in net.convs), 13 * 13)
    tol = depth * np.sqrt(n_max) * u * float(np.abs(ref).max())
    diff = np.abs(got - ref)
    worst = int(diff.argmax())
    assert diff.max() <= tol, (f"pool10 class {worst}: forward_float {got[worst]}, ONNX Runtime "
                               f"{ref[worst]}, |diff| {diff.max():.3g} > tolerance {tol:.3g}")
    assert [t["index"] for t in topk(got, 5)] == [t["index"] for t in topk(ref, 5)]


def test_demo_image_top1_is_suit(v11_reference):
    _, _, _, blobs = v11_reference
    top = topk(blobs["prob"], 2)
    assert [t["index"] for t in top] == [834, 457], top   # suit, then bow tie (README)

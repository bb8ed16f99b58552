"""One description of the SqueezeNet layer graph, shared by every part of squeezeforge.

A :class:`Network` is a list of layers in topological order with Caffe's blob names. It is
built either from a Caffe ``deploy.prototxt`` (text format, parsed here without Caffe) or from
the built-in table (:func:`squeezenet`); ``tests/test_network.py`` proves the two equal for
v1.0 and v1.1.

ReLU layers are fused into the convolution that feeds them (``Conv.relu``), Dropout is an
identity at inference and is dropped, and the final Softmax is a flag (``Network.softmax``):
what remains is exactly what the engine executes.

Shape rules are Caffe's: a convolution gives ``(H + 2p - k) // s + 1``; a pooling layer
rounds up, ``ceil((H + 2p - k) / s) + 1``, and drops a last window that would start in the
padding.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Conv", "Pool", "Concat", "Fire", "Network", "NetworkError", "squeezenet",
    "parse_prototxt", "network_from_prototxt", "MODELS", "SIZES",
]

MODELS = ("v1.0", "v1.1")
SIZES = (227, 224)


class NetworkError(ValueError):
    """A network description that squeezeforge cannot run (bad prototxt, unsupported layer)."""


@dataclass(frozen=True)
class Conv:
    name: str
    bottom: str
    top: str
    cin: int
    cout: int
    kernel: int
    stride: int = 1
    pad: int = 0
    relu: bool = True

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """Caffe/ONNX weight layout: (out, in, kh, kw)."""
        return (self.cout, self.cin, self.kernel, self.kernel)

    @property
    def reduction(self) -> int:
        """Number of products summed into one output (cin * k * k)."""
        return self.cin * self.kernel * self.kernel

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        return ((h + 2 * self.pad - self.kernel) // self.stride + 1,
                (w + 2 * self.pad - self.kernel) // self.stride + 1)


@dataclass(frozen=True)
class Pool:
    name: str
    bottom: str
    top: str
    kind: str  # "max" or "ave"
    kernel: int = 0
    stride: int = 1
    pad: int = 0
    is_global: bool = False

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.is_global:
            return (1, 1)
        return (_pool_out(h, self.kernel, self.stride, self.pad),
                _pool_out(w, self.kernel, self.stride, self.pad))


@dataclass(frozen=True)
class Concat:
    name: str
    bottoms: tuple[str, ...]
    top: str


Layer = Conv | Pool | Concat


@dataclass(frozen=True)
class Fire:
    """A Fire module: squeeze 1x1 feeding expand 1x1 and expand 3x3, concatenated."""
    name: str
    squeeze: Conv
    expand1x1: Conv
    expand3x3: Conv
    concat: Concat

    @property
    def convs(self) -> tuple[Conv, Conv, Conv]:
        return (self.squeeze, self.expand1x1, self.expand3x3)


def _pool_out(size: int, k: int, s: int, p: int) -> int:
    out = int(math.ceil((size + 2 * p - k) / s)) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


@dataclass(frozen=True)
class Network:
    name: str
    layers: tuple[Layer, ...]
    input_name: str = "data"
    input_channels: int = 3
    softmax: bool = True

    # -- queries -----------------------------------------------------------------------
    @property
    def output(self) -> str:
        return self.layers[-1].top

    @property
    def convs(self) -> list[Conv]:
        return [l for l in self.layers if isinstance(l, Conv)]

    def layer(self, name: str) -> Layer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    def fires(self) -> list[Fire]:
        """Fire modules found by structure: a squeeze conv whose top feeds exactly two convs
        (1x1 and 3x3 pad 1) whose tops are concatenated."""
        fires = []
        by_bottom: dict[str, list[Layer]] = {}
        for l in self.layers:
            for b in (l.bottoms if isinstance(l, Concat) else (l.bottom,)):
                by_bottom.setdefault(b, []).append(l)
        for sq in self.convs:
            users = by_bottom.get(sq.top, [])
            if len(users) != 2 or not all(isinstance(u, Conv) for u in users):
                continue
            e1, e3 = sorted(users, key=lambda c: c.kernel)
            if (e1.kernel, e3.kernel, e3.pad) != (1, 3, 1) or sq.kernel != 1:
                continue
            cats = [u for u in by_bottom.get(e1.top, []) if isinstance(u, Concat)]
            if len(cats) != 1 or cats[0].bottoms != (e1.top, e3.top):
                continue
            fires.append(Fire(sq.name.split("/")[0], sq, e1, e3, cats[0]))
        return fires

    def shapes(self, size: int = 227) -> dict[str, tuple[int, int, int]]:
        """Blob name -> (C, H, W) for a square input of ``size``."""
        shapes = {self.input_name: (self.input_channels, size, size)}
        for l in self.layers:
            if isinstance(l, Concat):
                parts = [shapes[b] for b in l.bottoms]
                if len({p[1:] for p in parts}) != 1:
                    raise NetworkError(f"{l.name}: concatenated blobs differ in size: {parts}")
                shapes[l.top] = (sum(p[0] for p in parts),) + parts[0][1:]
                continue
            c, h, w = shapes[l.bottom]
            if isinstance(l, Conv) and c != l.cin:
                raise NetworkError(f"{l.name}: expects {l.cin} input channels, gets {c}")
            ho, wo = l.out_hw(h, w)
            if ho < 1 or wo < 1:
                raise NetworkError(f"{l.name}: input {h}x{w} is too small")
            shapes[l.top] = ((l.cout if isinstance(l, Conv) else c), ho, wo)
        return shapes

    def stats(self, size: int = 227) -> list[dict]:
        """Per layer: name, kind, output shape, parameters and multiply-accumulates."""
        shapes = self.shapes(size)
        rows = []
        for l in self.layers:
            c, h, w = shapes[l.top]
            if isinstance(l, Conv):
                params = l.cout * l.reduction + l.cout
                macs = l.cout * l.reduction * h * w
                kind = "conv"
            else:
                params, macs = 0, 0
                kind = "concat" if isinstance(l, Concat) else f"{l.kind}pool"
            rows.append(dict(name=l.name, kind=kind, shape=(c, h, w), params=params, macs=macs))
        return rows

    def total_params(self) -> int:
        return sum(r["params"] for r in self.stats())

    def total_macs(self, size: int = 227) -> int:
        return sum(r["macs"] for r in self.stats(size))


# -- the built-in table ----------------------------------------------------------------
# (squeeze, expand) channels of fire2..fire9 (the same in v1.0 and v1.1)
_FIRES = {2: (16, 64), 3: (16, 64), 4: (32, 128), 5: (32, 128),
          6: (48, 192), 7: (48, 192), 8: (64, 256), 9: (64, 256)}


def squeezenet(version: str) -> Network:
    """SqueezeNet v1.0 or v1.1 as in the official DeepScale deploy.prototxt files."""
    if version not in MODELS:
        raise NetworkError(f"unknown SqueezeNet version {version!r}; choose one of {', '.join(MODELS)}")
    if version == "v1.0":
        conv1 = Conv("conv1", "data", "conv1", 3, 96, 7, 2)
        pools_after = {4: "pool4", 8: "pool8"}
        conv10_pad = 1
    else:
        conv1 = Conv("conv1", "data", "conv1", 3, 64, 3, 2)
        pools_after = {3: "pool3", 5: "pool5"}
        conv10_pad = 0
    layers: list[Layer] = [conv1, Pool("pool1", "conv1", "pool1", "max", 3, 2)]
    blob, cin = "pool1", conv1.cout
    for i, (s, e) in _FIRES.items():
        f = f"fire{i}"
        layers += [
            Conv(f"{f}/squeeze1x1", blob, f"{f}/squeeze1x1", cin, s, 1),
            Conv(f"{f}/expand1x1", f"{f}/squeeze1x1", f"{f}/expand1x1", s, e, 1),
            Conv(f"{f}/expand3x3", f"{f}/squeeze1x1", f"{f}/expand3x3", s, e, 3, 1, 1),
            Concat(f"{f}/concat", (f"{f}/expand1x1", f"{f}/expand3x3"), f"{f}/concat"),
        ]
        blob, cin = f"{f}/concat", 2 * e
        if i in pools_after:
            p = pools_after[i]
            layers.append(Pool(p, blob, p, "max", 3, 2))
            blob = p
    layers += [Conv("conv10", blob, "conv10", cin, 1000, 1, 1, conv10_pad),
               Pool("pool10", "conv10", "pool10", "ave", is_global=True)]
    return Network(version, tuple(layers))


# -- Caffe prototxt (text format) --------------------------------------------------------
_TOKEN = re.compile(r'\s*(?:#[^\n]*\n?|("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|([{}:])|([^\s{}:#"\']+))')


def parse_prototxt(text: str) -> dict:
    """Parse protobuf text format into nested dicts; every field maps to a list of values."""
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise NetworkError(f"prototxt: cannot parse near {text[pos:pos + 30]!r}")
        pos = m.end()
        if m.group(1):
            tokens.append(("str", m.group(1)[1:-1]))
        elif m.group(2):
            tokens.append((m.group(2), m.group(2)))
        elif m.group(3):
            tokens.append(("word", m.group(3)))

    def parse_block(i: int, closing: bool) -> tuple[dict, int]:
        msg: dict = {}
        while i < len(tokens):
            kind, val = tokens[i]
            if kind == "}":
                if not closing:
                    raise NetworkError("prototxt: unbalanced '}'")
                return msg, i + 1
            if kind != "word":
                raise NetworkError(f"prototxt: expected a field name, got {val!r}")
            i += 1
            if i < len(tokens) and tokens[i][0] == ":":
                i += 1
            if i >= len(tokens):
                raise NetworkError(f"prototxt: field {val!r} has no value")
            if tokens[i][0] == "{":
                sub, i = parse_block(i + 1, True)
                msg.setdefault(val, []).append(sub)
            elif tokens[i][0] in ("word", "str"):
                msg.setdefault(val, []).append(_scalar(tokens[i]))
                i += 1
            else:
                raise NetworkError(f"prototxt: bad value for {val!r}")
        if closing:
            raise NetworkError("prototxt: missing '}'")
        return msg, i

    return parse_block(0, False)[0]


def _scalar(tok):
    kind, val = tok
    if kind == "str":
        return val
    for conv in (int, float):
        try:
            return conv(val)
        except ValueError:
            pass
    return val


def _one(d: dict, key: str, default=None):
    v = d.get(key)
    return v[-1] if v else default


# Deep Compression's prototxt names the Fire convolutions differently.
_ALIASES = {"conv1x1_1": "squeeze1x1", "conv1x1_2": "expand1x1", "conv3x3_2": "expand3x3",
            "conv_final": "conv10", "relu_conv_final": "relu_conv10", "pool_final": "pool10"}


def canonical_name(name: str) -> str:
    parts = name.split("/")
    return "/".join(_ALIASES.get(p, p) for p in parts)


def network_from_prototxt(path_or_text: str | Path, name: str | None = None) -> Network:
    """Build a :class:`Network` from a Caffe deploy prototxt (new ``layer`` or old ``layers``)."""
    if isinstance(path_or_text, Path) or (isinstance(path_or_text, str) and "\n" not in path_or_text
                                          and not path_or_text.lstrip().startswith(("layer", "name", "input"))):
        path = Path(path_or_text)
        try:
            text = path.read_text()
        except OSError as e:
            raise NetworkError(f"{path}: cannot read prototxt ({e.strerror})") from None
    else:
        text, path = str(path_or_text), None
    msg = parse_prototxt(text)
    raw = msg.get("layer", []) + msg.get("layers", [])
    if not raw:
        raise NetworkError(f"{path or 'prototxt'}: no layers")
    input_name = _one(msg, "input", "data")
    in_c = 3
    if "input_shape" in msg:
        in_c = int(msg["input_shape"][0]["dim"][1])
    elif "input_dim" in msg:
        in_c = int(msg["input_dim"][1])
    layers: list[Layer] = []
    rename: dict[str, str] = {}  # blob renames from in-place layers (ReLU, Dropout)

    def blob(b: str) -> str:
        b = canonical_name(b)
        return rename.get(b, b)

    for l in raw:
        ltype = str(_one(l, "type", "")).upper()
        lname = canonical_name(str(_one(l, "name", "")))
        bottoms = [blob(b) for b in l.get("bottom", [])]
        tops = [canonical_name(t) for t in l.get("top", [])]
        if ltype in ("INPUT", "DATA"):
            input_name = tops[0]
            shp = _one(_one(l, "input_param", {}), "shape", {})
            if shp.get("dim"):
                in_c = int(shp["dim"][1])
            continue
        if ltype == "CONVOLUTION":
            p = _one(l, "convolution_param", {})
            k = int(_one(p, "kernel_size", 0) or _one(p, "kernel_h", 0))
            kw = int(_one(p, "kernel_size", 0) or _one(p, "kernel_w", 0))
            if k != kw or k == 0:
                raise NetworkError(f"{lname}: only square kernels are supported")
            if int(_one(p, "group", 1)) != 1 or int(_one(p, "dilation", 1)) != 1:
                raise NetworkError(f"{lname}: grouped or dilated convolution is not supported")
            if str(_one(p, "bias_term", "true")).lower() == "false":
                raise NetworkError(f"{lname}: convolution without bias is not supported")
            # cin is filled in by shape inference below
            layers.append(Conv(lname, bottoms[0], tops[0], -1, int(_one(p, "num_output")), k,
                               int(_one(p, "stride", 1)), int(_one(p, "pad", 0)), relu=False))
        elif ltype == "RELU":
            prev = next((x for x in reversed(layers) if x.top == bottoms[0]), None)
            if not isinstance(prev, Conv) or prev.relu:
                raise NetworkError(f"{lname}: ReLU is supported only right after a convolution")
            layers[layers.index(prev)] = _replace(prev, relu=True)
            if tops and tops[0] != bottoms[0]:
                rename[tops[0]] = bottoms[0]
        elif ltype == "DROPOUT":
            if tops and tops[0] != bottoms[0]:
                rename[tops[0]] = bottoms[0]
        elif ltype == "POOLING":
            p = _one(l, "pooling_param", {})
            kind = {"MAX": "max", "AVE": "ave", 0: "max", 1: "ave"}.get(_one(p, "pool", "MAX"))
            if kind is None:
                raise NetworkError(f"{lname}: pooling {_one(p, 'pool')} is not supported")
            glob = str(_one(p, "global_pooling", "false")).lower() == "true"
            if kind == "ave" and not glob:
                raise NetworkError(f"{lname}: only global average pooling is supported")
            layers.append(Pool(lname, bottoms[0], tops[0], kind, int(_one(p, "kernel_size", 0)),
                               int(_one(p, "stride", 1)), int(_one(p, "pad", 0)), glob))
        elif ltype == "CONCAT":
            layers.append(Concat(lname, tuple(bottoms), tops[0]))
        elif ltype == "SOFTMAX":
            continue
        else:
            raise NetworkError(f"{lname}: layer type {_one(l, 'type')!r} is not supported")
    # infer conv input channels
    chans = {input_name: in_c}
    done: list[Layer] = []
    for l in layers:
        if isinstance(l, Conv):
            l = _replace(l, cin=chans[l.bottom])
            chans[l.top] = l.cout
        elif isinstance(l, Pool):
            chans[l.top] = chans[l.bottom]
        else:
            chans[l.top] = sum(chans[b] for b in l.bottoms)
        done.append(l)
    softmax = any(str(_one(l, "type", "")).upper() == "SOFTMAX" for l in raw)
    return Network(name or str(_one(msg, "name", "prototxt")), tuple(done), input_name, in_c, softmax)


def _replace(obj, **kw):
    from dataclasses import replace
    return replace(obj, **kw)

"""The quantized-model artifact: one folder, self-describing, verified on load.

``model.json``
    ``format`` (``"squeezeforge-quant"``) and ``version``; the network (name, input blob and
    channels, softmax flag, the layer list with every field); calibration size, input scale and
    per-blob scales; per convolution its shapes, s_in, s_out, relu, signed input, per-channel
    weight scales, M and shift; the global average pool (M, shift, scales, window); source,
    synthetic flag, notes; and the sha256 of ``tensors.npz``.
``tensors.npz``
    per convolution ``<name>:w`` int8 (O, I, k, k), ``<name>:b`` int32 (O,), ``<name>:mult``
    and ``<name>:shift`` int64 (O,).

Floats are written with Python's shortest round-trip repr, so a loaded model is bit-identical
to the saved one. :func:`load` raises :class:`ArtifactError` (one line naming the file) for a
missing, corrupt or inconsistent artifact.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import numeric
from .network import Concat, Conv, Network, NetworkError, Pool
from .quantize import QConv, QGap, QuantModel

__all__ = ["ArtifactError", "save", "load", "FORMAT", "VERSION", "MODEL_FILE", "TENSOR_FILE"]

FORMAT = "squeezeforge-quant"
VERSION = 1
MODEL_FILE = "model.json"
TENSOR_FILE = "tensors.npz"
_KINDS = {"conv": Conv, "pool": Pool, "concat": Concat}


class ArtifactError(ValueError):
    """A quantized-model artifact that cannot be used; the message names the file."""


def _layer_dict(l) -> dict:
    kind = "conv" if isinstance(l, Conv) else "pool" if isinstance(l, Pool) else "concat"
    d = asdict(l)
    if kind == "concat":
        d["bottoms"] = list(l.bottoms)
    return {"type": kind, **d}


def save(qm: QuantModel, directory: str | Path) -> Path:
    """Write ``model.json`` and ``tensors.npz`` into ``directory`` (created); returns the folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    convs = {}
    shapes = qm.net.shapes(qm.size)
    for name, c in qm.convs.items():
        tensors[f"{name}:w"] = c.w.astype(np.int8)
        tensors[f"{name}:b"] = c.b.astype(np.int32)
        tensors[f"{name}:mult"] = c.mult.astype(np.int64)
        tensors[f"{name}:shift"] = c.shift.astype(np.int64)
        layer = qm.net.layer(name)
        convs[name] = dict(w_shape=list(c.w.shape), in_shape=list(shapes[layer.bottom]),
                           out_shape=list(shapes[layer.top]), s_in=c.s_in, s_out=c.s_out,
                           relu=c.relu, signed_input=c.signed_input,
                           s_w=[float(v) for v in c.s_w], mult=[int(v) for v in c.mult],
                           shift=[int(v) for v in c.shift])
    buf = io.BytesIO()
    np.savez(buf, **tensors)
    data = buf.getvalue()
    net = qm.net
    desc = {
        "format": FORMAT, "version": VERSION,
        "numeric": dict(weight_max=numeric.WEIGHT_MAX, acc_bits=numeric.ACC_BITS,
                        mult_bits=numeric.MULT_BITS, max_shift=numeric.MAX_SHIFT,
                        bias_limit=numeric.BIAS_LIMIT),
        "network": dict(name=net.name, input_name=net.input_name,
                        input_channels=net.input_channels, softmax=net.softmax,
                        layers=[_layer_dict(l) for l in net.layers]),
        "size": qm.size, "input_scale": qm.input_scale,
        "scales": dict(qm.scales),
        "shapes": {k: list(v) for k, v in shapes.items()},
        "convs": convs,
        "gap": None if qm.gap is None else asdict(qm.gap),
        "source": qm.source, "synthetic": qm.synthetic, "notes": list(qm.notes),
        "calibration": qm.calibration,
        "tensors": dict(file=TENSOR_FILE, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)),
    }
    (directory / TENSOR_FILE).write_bytes(data)
    (directory / MODEL_FILE).write_text(json.dumps(desc, indent=1) + "\n")
    return directory


def _network(d: dict, where: Path) -> Network:
    layers = []
    for ld in d["layers"]:
        ld = dict(ld)
        cls = _KINDS.get(ld.pop("type", None))
        if cls is None:
            raise ArtifactError(f"{where}: unknown layer type in the network description")
        if cls is Concat:
            ld["bottoms"] = tuple(ld["bottoms"])
        layers.append(cls(**ld))
    return Network(d["name"], tuple(layers), d["input_name"], int(d["input_channels"]), bool(d["softmax"]))


def _positive(v, what: str, where: Path) -> float:
    v = float(v)
    if not (v > 0 and math.isfinite(v)):
        raise ArtifactError(f"{where}: {what} is {v!r}, not a positive finite number")
    return v


def load(directory: str | Path) -> QuantModel:
    """Read and verify an artifact written by :func:`save`."""
    directory = Path(directory)
    mpath, tpath = directory / MODEL_FILE, directory / TENSOR_FILE
    try:
        desc = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{mpath}: no such file (not a squeezeforge artifact folder?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{mpath}: not readable JSON ({type(e).__name__})") from None
    if not isinstance(desc, dict) or desc.get("format") != FORMAT:
        raise ArtifactError(f"{mpath}: not a {FORMAT} artifact")
    if desc.get("version") != VERSION:
        raise ArtifactError(f"{mpath}: format version {desc.get('version')!r}, this squeezeforge "
                            f"reads version {VERSION}")
    try:
        data = tpath.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{tpath}: no such file") from None
    try:
        if hashlib.sha256(data).hexdigest() != desc["tensors"]["sha256"]:
            raise ArtifactError(f"{tpath}: sha256 does not match {MODEL_FILE} (corrupt or replaced)")
        net = _network(desc["network"], mpath)
        size = int(desc["size"])
        shapes = net.shapes(size)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                tensors = {k: z[k] for k in z.files}
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            raise ArtifactError(f"{tpath}: not a readable npz file ({type(e).__name__})") from None
        scales = {}
        for blob in shapes:
            scales[blob] = _positive(desc["scales"][blob], f"scale of {blob}", mpath)
        convs = {}
        for c in net.convs:
            cd = desc["convs"][c.name]
            arrays = {}
            for key, dtype, shape in (("w", np.int8, c.weight_shape), ("b", np.int32, (c.cout,)),
                                      ("mult", np.int64, (c.cout,)), ("shift", np.int64, (c.cout,))):
                a = tensors.get(f"{c.name}:{key}")
                if a is None:
                    raise ArtifactError(f"{tpath}: no tensor {c.name}:{key}")
                if a.dtype != dtype or a.shape != shape:
                    raise ArtifactError(f"{tpath}: {c.name}:{key} is {a.dtype} {a.shape}, "
                                        f"expected {np.dtype(dtype)} {shape}")
                arrays[key] = a
            if list(cd["w_shape"]) != list(c.weight_shape) or list(cd["out_shape"]) != list(shapes[c.top]):
                raise ArtifactError(f"{mpath}: {c.name} shapes do not match the network description")
            if ((arrays["mult"] < 0) | (arrays["mult"] >= 2 ** numeric.MULT_BITS)).any() or \
               ((arrays["shift"] < 1) | (arrays["shift"] > numeric.MAX_SHIFT)).any():
                raise ArtifactError(f"{tpath}: {c.name} multiplier or shift out of range")
            if (arrays["mult"] != np.asarray(cd["mult"])).any() or (arrays["shift"] != np.asarray(cd["shift"])).any():
                raise ArtifactError(f"{mpath}: {c.name} M/shift disagree with {TENSOR_FILE}")
            s_w = np.asarray(cd["s_w"], dtype=np.float64)
            if s_w.shape != (c.cout,) or not (np.isfinite(s_w) & (s_w > 0)).all():
                raise ArtifactError(f"{mpath}: {c.name} weight scales are missing or not positive")
            convs[c.name] = QConv(c.name, arrays["w"], arrays["b"], arrays["mult"], arrays["shift"],
                                  s_w, _positive(cd["s_in"], f"{c.name} s_in", mpath),
                                  _positive(cd["s_out"], f"{c.name} s_out", mpath),
                                  bool(cd["relu"]), bool(cd["signed_input"]))
        gap = None
        if desc["gap"] is not None:
            g = desc["gap"]
            gap = QGap(str(g["name"]), int(g["mult"]), int(g["shift"]),
                       _positive(g["s_in"], "GAP s_in", mpath), _positive(g["s_out"], "GAP s_out", mpath),
                       int(g["window"]))
        elif any(isinstance(l, Pool) and l.is_global for l in net.layers):
            raise ArtifactError(f"{mpath}: the network has a global pool but no GAP parameters")
        return QuantModel(net, size, _positive(desc["input_scale"], "input scale", mpath), scales,
                          convs, gap, str(desc["source"]), bool(desc["synthetic"]),
                          list(desc.get("notes", [])), dict(desc.get("calibration", {})))
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, NetworkError) as e:
        raise ArtifactError(f"{mpath}: inconsistent artifact ({type(e).__name__}: "
                            f"{' '.join(str(e).split())})") from None

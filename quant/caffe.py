"""Weights from a Caffe ``.caffemodel`` (binary ``NetParameter``), read without Caffe.

A ``.caffemodel`` is one protobuf message. This module carries a small reader of the protobuf
wire format (varints, length-delimited fields, fixed32 and fixed64; repeated floats packed or
not) and knows just the field numbers it needs from ``caffe.proto``::

    NetParameter      layer = 100 (LayerParameter)   layers = 2 (V1LayerParameter, old style)
    LayerParameter    name = 1   type = 2 (string)   blobs = 7 (BlobProto)
    V1LayerParameter  name = 4   type = 5 (enum)     blobs = 6 (BlobProto)
    BlobProto         num = 1  channels = 2  height = 3  width = 4   (legacy 4-D shape)
                      data = 5 (float)  shape = 7 (BlobShape: dim = 1, int64)  double_data = 8

Every other field is skipped by its wire type, so files written by any Caffe version (with
phase, param specs, layer parameters, ...) are accepted. Layer names are mapped with
:func:`network.canonical_name`, so Deep Compression's names (``fire2/conv1x1_1``) match the
network's (``fire2/squeeze1x1``). For each convolution, blob 0 is the weight (O, I, k, k) and
blob 1 the bias (O,).

Bulk float data is decoded with ``numpy.frombuffer`` (packed) or a strided record view
(unpacked), so the 5 MB SqueezeNet model parses in a few milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .model import FloatModel, WeightError
from .network import Network, canonical_name

__all__ = ["load_caffemodel", "read_caffemodel", "CaffeLayer", "ProtobufError"]

# wire types
_VARINT, _FIXED64, _LEN, _SGROUP, _EGROUP, _FIXED32 = 0, 1, 2, 3, 4, 5

# V1LayerParameter.LayerType value of CONVOLUTION in caffe.proto
_V1_CONVOLUTION = 4

_F4 = np.dtype("<f4")
_F8 = np.dtype("<f8")
_REC_F4 = np.dtype([("tag", "u1"), ("value", "<f4")])   # tag byte 0x2d + 4 bytes (data = 5)
_REC_F8 = np.dtype([("tag", "u1"), ("value", "<f8")])   # tag byte 0x41 + 8 bytes (double_data = 8)


class ProtobufError(ValueError):
    """Malformed wire format; ``pos`` is the absolute byte offset of the problem."""

    def __init__(self, what: str, pos: int):
        super().__init__(f"{what} at byte {pos}")
        self.pos = pos


@dataclass
class CaffeLayer:
    """What the reader keeps of one layer: its names, type and blobs (as float32 arrays)."""
    name: str                      # as stored in the file
    type: str                      # "Convolution", ... ; V1 enum values as "V1:<n>"
    blobs: list[np.ndarray] = field(default_factory=list)

    @property
    def is_convolution(self) -> bool:
        return self.type in ("Convolution", f"V1:{_V1_CONVOLUTION}")


# -- protobuf wire format ------------------------------------------------------------------
def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; return (value, next position)."""
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            if end == len(buf):
                raise ProtobufError("truncated protobuf", end)
            raise ProtobufError("corrupt protobuf (varint runs past the end of its message)",
                                start)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("corrupt protobuf (varint longer than 10 bytes)", start)


def _next_field(buf: bytes, pos: int, end: int, top: bool = False):
    """Decode the field at ``pos`` of the message in buf[:end].

    Returns (field number, wire type, value, tag position, next position). The value is an
    int for varints, and for the other wire types the (start, stop) span of its bytes. A length
    that runs past ``end`` is a truncated file at the top level and a corrupt message inside
    one. Groups (wire types 3 and 4, unused by Caffe) are rejected.
    """
    tag_pos = pos
    key, pos = _varint(buf, pos, end)
    num, wt = key >> 3, key & 7
    if num == 0:
        raise ProtobufError("corrupt protobuf (field number 0)", tag_pos)
    if wt == _VARINT:
        v, pos = _varint(buf, pos, end)
        return num, wt, v, tag_pos, pos
    if wt == _LEN:
        n, pos = _varint(buf, pos, end)
        stop = pos + n
    elif wt == _FIXED32:
        stop = pos + 4
    elif wt == _FIXED64:
        stop = pos + 8
    else:
        raise ProtobufError(f"corrupt protobuf (wire type {wt} in field {num})", tag_pos)
    if stop > end:
        if top or end == len(buf):
            raise ProtobufError("truncated protobuf", len(buf) if end == len(buf) else end)
        raise ProtobufError(f"corrupt protobuf (field {num} runs past the end of its message)",
                            tag_pos)
    return num, wt, (pos, stop), tag_pos, stop


def _fields(buf: bytes, pos: int, end: int, top: bool = False):
    """Yield (field number, wire type, value, tag position) for the message in buf[pos:end]."""
    while pos < end:
        num, wt, v, tag_pos, pos = _next_field(buf, pos, end, top)
        yield num, wt, v, tag_pos


def _unpacked_run(buf: bytes, pos: int, end: int, rec: np.dtype, tag: int) -> tuple[np.ndarray, int]:
    """Decode a run of unpacked fixed-width values that starts at ``pos`` (after its first tag).

    Unpacked repeated floats are stored as tag, value, tag, value ...; rather than visit each
    in Python, view the bytes from the first tag on as (tag, value) records and take the
    longest prefix whose tag bytes all equal ``tag``. Returns (values, next position).
    """
    size = rec.itemsize
    start = pos - 1                           # the one-byte tag of the first value
    n = (end - start) // size
    recs = np.frombuffer(buf, dtype=rec, count=n, offset=start)
    bad = np.flatnonzero(recs["tag"] != tag)
    count = int(bad[0]) if bad.size else n
    if count == 0:                            # the first value itself is cut short
        raise ProtobufError("truncated protobuf", end)
    return recs["value"][:count].astype(np.float32), start + count * size


def _packed_ints(buf: bytes, span: tuple[int, int]) -> list[int]:
    pos, stop = span
    out = []
    while pos < stop:
        v, pos = _varint(buf, pos, stop)
        out.append(v)
    return out


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _string(buf: bytes, span: tuple[int, int], pos: int) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtobufError("corrupt protobuf (name is not UTF-8 text)", pos) from None


# -- Caffe messages --------------------------------------------------------------------------
def _blob(buf: bytes, pos: int, end: int) -> np.ndarray:
    """Decode a BlobProto into a float32 array of its declared shape."""
    legacy = {}
    dims: list[int] | None = None
    chunks: list[np.ndarray] = []
    dchunks: list[np.ndarray] = []
    at = pos
    while at < end:
        num, wt, v, tag_pos, at = _next_field(buf, at, end)
        if num == 5 and wt == _FIXED32:          # unpacked floats: take the whole run at once
            vals, at = _unpacked_run(buf, v[0], end, _REC_F4, 0x2D)
            chunks.append(vals)
        elif num == 8 and wt == _FIXED64:
            vals, at = _unpacked_run(buf, v[0], end, _REC_F8, 0x41)
            dchunks.append(vals)
        elif num == 5 and wt == _LEN:
            if (v[1] - v[0]) % 4:
                raise ProtobufError("corrupt protobuf (packed float data is not a multiple "
                                    "of 4 bytes)", tag_pos)
            chunks.append(np.frombuffer(buf, _F4, (v[1] - v[0]) // 4, v[0]).astype(np.float32))
        elif num == 8 and wt == _LEN:
            if (v[1] - v[0]) % 8:
                raise ProtobufError("corrupt protobuf (packed double data is not a multiple "
                                    "of 8 bytes)", tag_pos)
            dchunks.append(np.frombuffer(buf, _F8, (v[1] - v[0]) // 8, v[0]).astype(np.float32))
        elif num in (1, 2, 3, 4) and wt == _VARINT:
            legacy[num] = _signed64(v)
        elif num == 7 and wt == _LEN:
            dims = []
            for dn, dwt, dv, _ in _fields(buf, v[0], v[1]):
                if dn == 1 and dwt == _VARINT:
                    dims.append(_signed64(dv))
                elif dn == 1 and dwt == _LEN:
                    dims += [_signed64(d) for d in _packed_ints(buf, dv)]
    if chunks and dchunks:
        raise ProtobufError("corrupt protobuf (blob holds both float and double data)", pos)
    data = np.concatenate(chunks or dchunks) if (chunks or dchunks) else np.zeros(0, np.float32)
    if dims is None:
        dims = [legacy.get(i, 1) for i in (1, 2, 3, 4)] if legacy else [data.size]
    if any(d < 0 for d in dims) or int(np.prod(dims, dtype=object)) != data.size:
        raise ProtobufError(f"corrupt blob (shape {tuple(dims)} but {data.size} values)", pos)
    return data.reshape(dims)


def _layer(buf: bytes, pos: int, end: int, v1: bool) -> CaffeLayer:
    name_f, type_f, blobs_f = (4, 5, 6) if v1 else (1, 2, 7)
    layer = CaffeLayer("", "")
    for num, wt, v, tag_pos in _fields(buf, pos, end):
        if num == name_f and wt == _LEN:
            layer.name = _string(buf, v, tag_pos)
        elif num == type_f and wt == (_VARINT if v1 else _LEN):
            layer.type = f"V1:{v}" if v1 else _string(buf, v, tag_pos)
        elif num == blobs_f and wt == _LEN:
            layer.blobs.append(_blob(buf, v[0], v[1]))
    return layer


def read_caffemodel(data: bytes) -> list[CaffeLayer]:
    """Parse the bytes of a NetParameter; every layer, new style and old style, in file order.

    Raises :class:`ProtobufError` for malformed wire format.
    """
    layers = []
    for num, wt, v, tag_pos in _fields(data, 0, len(data), top=True):
        if num in (100, 2):
            if wt != _LEN:
                raise ProtobufError(f"not a Caffe NetParameter (field {num} has wire type {wt})",
                                    tag_pos)
            layers.append(_layer(data, v[0], v[1], v1=(num == 2)))
    return layers


def load_caffemodel(path: str | Path, net: Network) -> FloatModel:
    """Read the convolution weights of ``net`` from a ``.caffemodel`` file; validated."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WeightError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise WeightError(f"{path}: is a directory, not a caffemodel") from None
    except OSError as e:
        raise WeightError(f"{path}: cannot read ({e.strerror})") from None
    if not data:
        raise WeightError(f"{path}: empty file, not a caffemodel")
    try:
        layers = read_caffemodel(data)
    except ProtobufError as e:
        raise WeightError(f"{path}: not a readable caffemodel: {e}") from None
    if not layers:
        raise WeightError(f"{path}: not a caffemodel (no layers in the protobuf message)")
    by_name: dict[str, CaffeLayer] = {}
    for l in layers:
        if l.blobs:
            by_name.setdefault(canonical_name(l.name), l)
    params = {}
    missing = []
    for conv in net.convs:
        l = by_name.get(conv.name)
        if l is None:
            missing.append(conv.name)
            continue
        if not l.is_convolution:
            raise WeightError(f"{path}: layer {l.name} is of type {l.type}, not Convolution")
        if len(l.blobs) != 2:
            raise WeightError(f"{path}: layer {l.name} has {len(l.blobs)} blobs, a convolution "
                              f"needs 2 (weight and bias)")
        w, b = l.blobs
        if b.ndim > 1 and all(d == 1 for d in b.shape[:-1]):
            b = b.reshape(-1)            # legacy 4-D bias blob (1, 1, 1, O)
        params[conv.name] = (w, b)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise WeightError(f"{path}: no weights for layer {', '.join(missing[:3])}{more} of the "
                          f"{net.name} network ({len(by_name)} layers with blobs in the file)")
    return FloatModel(net, params, str(path)).validate()

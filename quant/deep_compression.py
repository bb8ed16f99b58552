"""Weights from Han et al.'s Deep Compression file ``compressed_SqueezeNet.net``.

The format, as the authors' ``decode.py`` reads it (all little-endian)::

    uint32 nnz[L]                       stored entries per convolution, L = 26 for SqueezeNet v1.0
    per convolution, in prototxt order:
        float32 codebook[256]           codebook[0] is 0.0
        float32 bias[out_channels]
        uint8   codes[nnz]              weight = codebook[code]
        uint8   gaps[(nnz - 1) // 2 + 1]  4-bit (gap - 1) values, low nibble first

Entry ``j`` sits at flattened (out, in, kh, kw) position ``cumsum(gap)[j] - 1``; every other
weight is zero. A gap longer than 16 is bridged by filler entries of code 0 (value 0.0), so
the decoder needs no special case. Decoding is a handful of vectorized numpy operations.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .model import FloatModel, WeightError
from .network import Network

__all__ = ["load_compressed", "decode_compressed", "CODEBOOK_SIZE"]

CODEBOOK_SIZE = 256   # 8-bit codes for convolution layers


def _layer_bytes(nnz: int, cout: int) -> int:
    return 4 * CODEBOOK_SIZE + 4 * cout + nnz + ((nnz - 1) // 2 + 1 if nnz else 0)


def decode_compressed(data: bytes, net: Network, source: str = "<bytes>") -> dict:
    """Decode the bytes of a ``.net`` file into {conv name: (W, b)} for ``net``'s convolutions.

    Raises WeightError (message starting with ``source``) on any inconsistency.
    """
    convs = net.convs
    n = len(convs)
    if len(data) < 4 * n:
        raise WeightError(f"{source}: truncated Deep Compression file: {len(data)} bytes, the "
                          f"header alone needs {4 * n} (nnz for {n} convolutions)")
    nnz = np.frombuffer(data, "<u4", n, 0).astype(np.int64)
    for c, k in zip(convs, nnz):
        if k > int(np.prod(c.weight_shape)):
            # each stored entry advances at least one position, so nnz <= weight count
            raise WeightError(f"{source}: not a Deep Compression file for the {net.name} network "
                              f"({c.name} claims {k} entries for {int(np.prod(c.weight_shape))} "
                              f"weights)")
    need = 4 * n + sum(_layer_bytes(int(k), c.cout) for c, k in zip(convs, nnz))
    if len(data) < need:
        raise WeightError(f"{source}: truncated Deep Compression file: {len(data)} bytes, its "
                          f"header says {need}")
    if len(data) > need:
        raise WeightError(f"{source}: size mismatch: {len(data)} bytes, the header and the "
                          f"{net.name} network give {need} ({len(data) - need} bytes too many)")
    params = {}
    pos = 4 * n
    for c, k in zip(convs, nnz):
        k = int(k)
        codebook = np.frombuffer(data, "<f4", CODEBOOK_SIZE, pos).astype(np.float32)
        pos += 4 * CODEBOOK_SIZE
        bias = np.frombuffer(data, "<f4", c.cout, pos).astype(np.float32)
        pos += 4 * c.cout
        codes = np.frombuffer(data, np.uint8, k, pos)
        pos += k
        nb = (k - 1) // 2 + 1 if k else 0
        packed = np.frombuffer(data, np.uint8, nb, pos)
        pos += nb
        nibbles = np.stack([packed & 0x0F, packed >> 4], axis=1).reshape(-1)[:k]
        positions = np.cumsum(nibbles.astype(np.int64) + 1) - 1
        size = int(np.prod(c.weight_shape))
        if k and positions[-1] >= size:
            first = int(np.argmax(positions >= size))
            raise WeightError(f"{source}: {c.name}: entry {first} of {k} lands at position "
                              f"{int(positions[first])}, past the {size} weights of shape "
                              f"{c.weight_shape}")
        w = np.zeros(size, np.float32)
        w[positions] = codebook[codes]
        params[c.name] = (w.reshape(c.weight_shape), bias.copy())
    return params


def load_compressed(path: str | Path, net: Network) -> FloatModel:
    """Read a Deep Compression ``.net`` file for ``net`` (SqueezeNet v1.0); validated."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WeightError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise WeightError(f"{path}: is a directory, not a Deep Compression file") from None
    except OSError as e:
        raise WeightError(f"{path}: cannot read ({e.strerror})") from None
    if not data:
        raise WeightError(f"{path}: empty file, not a Deep Compression file")
    params = decode_compressed(data, net, str(path))
    model = FloatModel(net, params, str(path))
    model.notes.append(f"{path}: Deep Compression weights (pruned, 8-bit codebook), "
                       f"{_density(params):.1%} non-zero")
    return model.validate()


def _density(params: dict) -> float:
    nz = sum(int(np.count_nonzero(w)) for w, _ in params.values())
    return nz / sum(w.size for w, _ in params.values())

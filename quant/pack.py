"""Packing a quantized model into the engine's on-chip weight and parameter memories.

The engine is a MAC array of ``banks`` = Po output lanes x ``lanes`` = Pi input lanes.

Weight memory
    One WORD is Po x Pi int8 values. For a convolution with Cout, Cin and a k x k kernel,
    ``n_og = ceil(Cout / Po)`` output groups and ``n_ic = ceil(Cin / Pi)`` input blocks; the
    layer's words are in the order ``word = ((og * k + kh) * k + kw) * n_ic + icb`` and in a
    word, bank ``o`` holds Pi bytes with byte ``i`` = ``W[og*Po + o, icb*Pi + i, kh, kw]``
    (0 where ``o`` or ``i`` is past the channel count). Layers follow network order, contiguous;
    ``layer_table[name].base`` is a layer's first word.
Parameter memory
    One ENTRY per (layer, og), entries of a layer contiguous from ``layer_table[name].param_base``.
    An entry holds, for each lane ``o`` (output channel ``og*Po + o``), ``PARAM_LANE_BITS`` bits:
    bias int32 two's complement at bits [0, 32), M at [32, 32 + MULT_BITS), shift at
    [48, 48 + SHIFT_BITS); lane ``o`` occupies bits [o * PARAM_LANE_BITS, (o + 1) * PARAM_LANE_BITS)
    of the entry. Padded lanes are all zero.

Images (:meth:`PackedWeights.write_images`)
    ``weights_bank<o>.hex``: ``$readmemh`` file per bank, one word per line, ``lanes * 2`` hex
    digits, byte 0 in the least significant position. ``params.hex``: one entry per line,
    ``ceil(banks * PARAM_LANE_BITS / 4)`` hex digits, lane 0 least significant. ``weights.bin``:
    the raw weight stream for DDR, word by word, bank 0 first, byte 0 first. ``params.bin``: the
    parameter stream for DDR that the engine's PARAMS command loads (:meth:`param_stream`: per
    entry, per lane one 64-bit little-endian word). ``layout.json``:
    lanes, banks, bit layout and the layer table.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import numeric
from .network import Network
from .quantize import QuantModel

__all__ = ["PackError", "LayerEntry", "PackedWeights", "pack", "unpack", "PARAM_LANE_BITS",
           "BIAS_OFFSET", "MULT_OFFSET", "SHIFT_OFFSET", "PARAM_DTYPE"]

BIAS_OFFSET = 0
MULT_OFFSET = numeric.ACC_BITS                          # 32
SHIFT_OFFSET = MULT_OFFSET + numeric.MULT_BITS          # 48
PARAM_LANE_BITS = SHIFT_OFFSET + numeric.SHIFT_BITS     # 54
PARAM_DTYPE = np.dtype([("bias", np.int32), ("mult", np.uint32), ("shift", np.uint8)])


class PackError(ValueError):
    """Bad packing parameters; one-line message."""


@dataclass(frozen=True)
class LayerEntry:
    base: int          # first word in the weight memory
    n_words: int       # n_og * k * k * n_ic
    n_og: int
    n_ic: int
    k: int
    param_base: int    # first entry in the parameter memory
    cout: int
    cin: int


@dataclass
class PackedWeights:
    lanes: int
    banks: int
    words: np.ndarray                     # uint8 (n_words, banks, lanes); int8 bit patterns
    params: np.ndarray                    # PARAM_DTYPE (n_entries, banks)
    layer_table: dict[str, LayerEntry]

    @property
    def n_words(self) -> int:
        return int(self.words.shape[0])

    @property
    def n_params(self) -> int:
        return int(self.params.shape[0])

    @property
    def word_bits(self) -> int:
        return self.banks * self.lanes * 8

    @property
    def param_bits(self) -> int:
        return self.banks * PARAM_LANE_BITS

    def param_entries(self) -> list[int]:
        """Each parameter entry as one integer (lane 0 in the least significant bits)."""
        out = []
        for row in self.params:
            v = 0
            for o in range(self.banks - 1, -1, -1):
                lane = ((int(row["bias"][o]) & 0xFFFF_FFFF) << BIAS_OFFSET
                        | int(row["mult"][o]) << MULT_OFFSET | int(row["shift"][o]) << SHIFT_OFFSET)
                v = (v << PARAM_LANE_BITS) | lane
            out.append(v)
        return out

    def param_stream(self) -> bytes:
        """The parameter memory as the engine's PARAMS command reads it from DDR: per entry,
        per lane one 64-bit little-endian word (bias bits 0-31, M 32-47, shift 48-53)."""
        p = self.params
        lanes = ((p["bias"].astype(np.int64) & 0xFFFF_FFFF) << BIAS_OFFSET
                 | p["mult"].astype(np.int64) << MULT_OFFSET
                 | p["shift"].astype(np.int64) << SHIFT_OFFSET)
        return np.ascontiguousarray(lanes.astype("<u8")).tobytes()

    def write_images(self, directory: str | Path) -> dict[str, Path]:
        """Write the memory images (see the module docstring); returns name -> path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = {}
        for o in range(self.banks):
            # byte 0 least significant: reverse the byte order of every word before hexlifying
            h = np.ascontiguousarray(self.words[:, o, ::-1]).tobytes().hex()
            step = 2 * self.lanes
            p = directory / f"weights_bank{o}.hex"
            p.write_text("".join(h[i:i + step] + "\n" for i in range(0, len(h), step)))
            files[p.stem] = p
        digits = -(-self.param_bits // 4)
        p = directory / "params.hex"
        p.write_text("".join(f"{v:0{digits}x}\n" for v in self.param_entries()))
        files["params"] = p
        p = directory / "weights.bin"
        p.write_bytes(np.ascontiguousarray(self.words).tobytes())
        files["weights"] = p
        p = directory / "params.bin"
        p.write_bytes(self.param_stream())
        files["params_stream"] = p
        p = directory / "layout.json"
        p.write_text(json.dumps(dict(
            lanes=self.lanes, banks=self.banks, n_words=self.n_words, n_params=self.n_params,
            word_bits=self.word_bits, param_bits=self.param_bits,
            param_lane=dict(bits=PARAM_LANE_BITS, bias=[BIAS_OFFSET, numeric.ACC_BITS],
                            mult=[MULT_OFFSET, numeric.MULT_BITS], shift=[SHIFT_OFFSET, numeric.SHIFT_BITS]),
            files=dict(banks=[f"weights_bank{o}.hex" for o in range(self.banks)],
                       params="params.hex", stream="weights.bin",
                       params_stream="params.bin"),
            layers={n: asdict(e) for n, e in self.layer_table.items()}), indent=1) + "\n")
        files["layout"] = p
        return files


def _check(lanes, banks) -> None:
    if not isinstance(lanes, (int, np.integer)) or isinstance(lanes, bool) or lanes <= 0 or lanes % 8:
        raise PackError(f"lanes must be a positive multiple of 8, not {lanes}")
    if not isinstance(banks, (int, np.integer)) or isinstance(banks, bool) or banks <= 0:
        raise PackError(f"banks must be a positive integer, not {banks}")


def pack(qm: QuantModel, lanes: int, banks: int) -> PackedWeights:
    """Pack every convolution of ``qm`` for a ``banks`` x ``lanes`` MAC array."""
    _check(lanes, banks)
    po, pi = int(banks), int(lanes)
    chunks, pchunks, table = [], [], {}
    base = pbase = 0
    for conv in qm.net.convs:
        qc = qm.convs[conv.name]
        o, c, k, _ = qc.w.shape
        n_og, n_ic = -(-o // po), -(-c // pi)
        wp = np.zeros((n_og * po, n_ic * pi, k, k), dtype=np.int8)
        wp[:o, :c] = qc.w
        # (og, o, icb, i, kh, kw) -> (og, kh, kw, icb, o, i): word = ((og*k + kh)*k + kw)*n_ic + icb
        words = wp.reshape(n_og, po, n_ic, pi, k, k).transpose(0, 4, 5, 2, 1, 3)
        words = words.reshape(n_og * k * k * n_ic, po, pi).view(np.uint8)
        chunks.append(words)
        par = np.zeros(n_og * po, dtype=PARAM_DTYPE)
        par["bias"][:o] = qc.b
        par["mult"][:o] = qc.mult
        par["shift"][:o] = qc.shift
        pchunks.append(par.reshape(n_og, po))
        table[conv.name] = LayerEntry(base, len(words), n_og, n_ic, k, pbase, o, c)
        base += len(words)
        pbase += n_og
    return PackedWeights(pi, po, np.concatenate(chunks), np.concatenate(pchunks), table)


def unpack(packed: PackedWeights, net: Network) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack` for the weights: conv name -> int8 (O, I, k, k)."""
    po, pi = packed.banks, packed.lanes
    out = {}
    for conv in net.convs:
        e = packed.layer_table[conv.name]
        k = e.k
        words = packed.words[e.base:e.base + e.n_words].view(np.int8)
        wp = words.reshape(e.n_og, k, k, e.n_ic, po, pi).transpose(0, 4, 3, 5, 1, 2)
        out[conv.name] = np.ascontiguousarray(
            wp.reshape(e.n_og * po, e.n_ic * pi, k, k)[:conv.cout, :conv.cin])
    return out

"""The host compiler: a quantized network plus an engine configuration become the engine's
program (one command per pass, :mod:`squeezeforge.hw.commands`) and its DDR memory plan.

Passes, in network order
------------------------
* The first convolution. When its kernel is larger than 1 and its input has fewer channels than
  the MAC array's ``in_lanes`` (SqueezeNet's 3-channel image), the host lays the input out as
  im2col patches, channel ``(kh*k + kw)*Cin + c`` of output pixel (y, x) being input channel c at
  ``(y*stride - pad + kh, x*stride - pad + kw)`` (0 outside the image), so the layer runs as a
  1x1 convolution over ``Ho x Wo`` pixels of ``k*k*Cin`` channels and fills the lanes; its weights
  are reordered to match before packing. Otherwise the input is plain HWC. Option
  ``first_layer = "auto" | "im2col" | "direct"``.
* A max-pool is a MAXPOOL pass (DDR to DDR), a global average pool a GAP pass whose M and shift
  sit in a parameter word of their own (every lane the same, bias 0) after the convolutions'.
* A Fire module (``net.fires()``) is a squeeze CONV (DDR to the on-chip SQUEEZE buffer; with
  ``dump`` also to DDR so it can be verified) and an EXPAND (SQUEEZE to DDR): expand1x1 into
  channels ``[0, e1)`` and expand3x3 into ``[e1, e1 + e3)`` of the one concat tensor. A Fire
  module whose squeeze output does not fit the squeeze buffer (or, streamed, whose squeeze
  weights do not fit one buffer) runs as three plain CONV passes via DDR when ``fuse="auto"``
  (the default; a note says so), and is refused with ``fuse="always"``; ``fuse="never"`` runs
  every Fire module via DDR.
* Any other convolution is a CONV pass (DDR to DDR); a Concat costs nothing: its inputs are
  written into its tensor at their channel offsets.
* ``END`` closes the list.

Weights
-------
Resident mode: the whole network is one packed image (:func:`squeezeforge.quant.pack.pack` with
``lanes = Pi``, ``banks = Po``) in DDR (region ``weights``), which one LOAD after the PARAMS
copies into the weight memory; ``conv.weight_base`` comes from the layer table. Streamed mode: each command computes from one TILE (a range of output groups of
one pass: ``weight_base`` is 0 in its buffer; an EXPAND's tile is the expand1x1 words followed by
the expand3x3 words). A pass whose words exceed ``cfg.weight_words`` becomes several commands over
og ranges (their outputs at byte offsets ``og0 * Po`` of the pixel); an EXPAND that does not fit
one buffer becomes CONV commands from the SQUEEZE source. Tiles lie contiguously in DDR in
execution order; command i prefetches command i+1's tile into buffer ``1 - wbuf`` (a command
without weights still prefetches for its successor), and the program starts with a LOAD of the
first tile. The parameters of every layer are one image that the leading PARAMS command loads.

Setup and warm start: the leading PARAMS (and, resident, the LOAD) fill on-chip memories that
nothing else writes. ``Program.warm_index`` is the first command after them: a host that ran
the program once may start later inferences there (streamed: the first tile's LOAD, which must
run every time; resident: the first layer).

Semantics this compiler relies on (see ``sim/funcsim.py``, which executes them)
------------------------------------------------------------------------------
* Reading DDR: pixel p of a pass's input is ``in_bytes`` bytes at ``in_addr + p*in_pix``,
  channels ``[0, in_bytes)``; activation-word lanes past ``in_bytes`` are zero on chip.
* A CONV with ``dst = SQUEEZE`` stores pixel p as ``ceil(out_bytes / Pi)`` activation words at
  word ``p * ceil(out_bytes / Pi)`` of the squeeze buffer (lanes past ``out_bytes`` zero), which
  is the geometry (``h, w, n_ic``) the following EXPAND or CONV with ``src = SQUEEZE`` reads.
* GAP takes M and shift from lane 0 of parameter word ``conv.param_base``.

DDR plan
--------
From ``base_addr``: the command list, the input, the streamed weights, then one tensor per blob
(HWC, pixel stride ``round_up(C, 8)`` bytes), every region 64-byte aligned. A Fire module's
expand outputs are views into its concat tensor; a fused squeeze output has a tensor only when
dumped. ``Program.tensors`` maps every blob that has bytes in DDR to (addr, C, H, W, pix_bytes).

Anything the engine cannot run is refused with a one-line :class:`ScheduleError` that names the
layer and the numbers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from squeezeforge.hw.commands import COMMAND_BYTES, Loc, Op, decode, encode
from squeezeforge.hw.config import EngineConfig
from squeezeforge.hw.conv import KERNELS, STRIDES
from squeezeforge.quant.network import Concat, Conv, Network, NetworkError, Pool
from squeezeforge.quant.pack import PARAM_DTYPE, PackedWeights, pack
from squeezeforge.quant.quantize import QuantModel

__all__ = ["ScheduleError", "Region", "Tensor", "Command", "Program", "compile_program",
           "blob_shapes", "im2col_input", "ALIGN", "PIXEL_ALIGN", "FIRST_LAYER_MODES", "FUSE_MODES"]

ALIGN = 64              # every DDR region starts on a 64-byte boundary
PIXEL_ALIGN = 8         # a pixel's channel stride in DDR: round_up(C, 8) bytes (one 64-bit beat)
FIRST_LAYER_MODES = ("auto", "im2col", "direct")
FUSE_MODES = ("auto", "always", "never")
_ADDR_LIMIT = 1 << 32


class ScheduleError(ValueError):
    """A network or configuration the engine cannot run; one-line message naming the layer."""


class Region(NamedTuple):
    name: str
    addr: int
    size: int


class Tensor(NamedTuple):
    """Where a blob lives in DDR: HWC, pixel p's C bytes at ``addr + p*pix``."""
    addr: int
    c: int
    h: int
    w: int
    pix: int


@dataclass
class Command:
    """One command of the program: its record, decoded fields and what it executes."""
    index: int
    name: str                      # e.g. "fire2/expand", "conv10[og 0:16]"
    layers: tuple[str, ...]        # network layers (or parts of them) this command computes
    record: bytes                  # COMMAND_BYTES little-endian bytes, as in DDR
    tile: tuple[int, int] | None = None   # streamed: (DDR address, words) of the tile it uses
    macs: int = 0                  # real multiply-accumulates (without lane padding)

    @property
    def fields(self) -> dict:
        """The decoded record (nested dict, enums as members)."""
        return decode(self.record)

    @property
    def op(self) -> Op:
        return Op(self.record[0] & 0b111)


def _up(a: int, b: int) -> int:
    return -(-a // b)


def _round(a: int, b: int) -> int:
    return _up(a, b) * b


def _pix(c: int) -> int:
    return _round(c, PIXEL_ALIGN)


def blob_shapes(net: Network, size) -> dict[str, tuple[int, int, int]]:
    """Blob name -> (C, H, W) for an input of ``size`` (an int, or (H, W) for a non-square one)."""
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    shapes = {net.input_name: (net.input_channels, h, w)}
    for l in net.layers:
        if isinstance(l, Concat):
            parts = [shapes[b] for b in l.bottoms]
            if len({p[1:] for p in parts}) != 1:
                raise ScheduleError(f"{l.name}: concatenated blobs differ in size: {parts}")
            shapes[l.top] = (sum(p[0] for p in parts),) + parts[0][1:]
            continue
        c, bh, bw = shapes[l.bottom]
        if isinstance(l, Conv) and c != l.cin:
            raise ScheduleError(f"{l.name}: expects {l.cin} input channels, gets {c}")
        ho, wo = l.out_hw(bh, bw)
        if ho < 1 or wo < 1:
            raise ScheduleError(f"{l.name}: input {bh}x{bw} is too small")
        shapes[l.top] = ((l.cout if isinstance(l, Conv) else c), ho, wo)
    return shapes


def im2col_input(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """(C, H, W) -> (Ho, Wo, k*k*C) patches, channel ``(kh*k + kw)*C + c`` (zero padding)."""
    x = np.asarray(x)
    c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad))) if pad else x
    ho = (h + 2 * pad - k) // stride + 1
    wo = (w + 2 * pad - k) // stride + 1
    sc, sh, sw = xp.strides
    win = np.lib.stride_tricks.as_strided(
        xp, shape=(ho, wo, k, k, c), strides=(sh * stride, sw * stride, sh, sw, sc), writeable=False)
    return win.reshape(ho, wo, k * k * c)


# -- the program ----------------------------------------------------------------------------
@dataclass
class Program:
    """A compiled network: commands, memory plan and memory images (see the module doc)."""
    cfg: EngineConfig
    network: str
    size: tuple[int, int]                     # input (H, W)
    base_addr: int
    commands: list[Command]
    regions: list[Region]
    tensors: dict[str, Tensor]
    signed: frozenset                          # blobs whose bytes are int8
    packed: PackedWeights                      # the network's packed weights and parameters
    input_blob: str
    input_layout: str                          # "im2col" or "hwc"
    first_conv: dict                           # name, k, stride, pad, cin of the first conv
    weights_blob: bytes = b""                  # streamed: the tiles; resident: the image
    params_blob: bytes = b""                   # the parameter memory, as PARAMS reads it
    notes: list[str] = field(default_factory=list)

    # -- addresses --------------------------------------------------------------------------
    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def cmd_addr(self) -> int:
        return self.region("commands").addr

    @property
    def warm_index(self) -> int:
        """Index of the first command after the setup (PARAMS, resident LOAD): where a warm
        start begins (see the module doc)."""
        i = 0
        while i < len(self.commands) and (
                self.commands[i].op == Op.PARAMS
                or self.commands[i].op == Op.LOAD and self.cfg.weight_mode == "resident"):
            i += 1
        return i

    @property
    def cmd_count(self) -> int:
        return len(self.commands)

    @property
    def ddr_size(self) -> int:
        """Bytes from ``base_addr`` to the end of the last region."""
        return max(r.addr + r.size for r in self.regions) - self.base_addr

    @property
    def image_size(self) -> int:
        """Bytes from ``base_addr`` covered by :meth:`ddr_image` (commands, input, weights,
        parameters)."""
        names = {"commands", "input", "weights", "params"}
        return max(r.addr + r.size for r in self.regions if r.name in names) - self.base_addr

    # -- memory images ----------------------------------------------------------------------
    @property
    def weight_image(self) -> np.ndarray:
        """Resident mode: the weight memory's contents, uint8 (words, Po, Pi); streamed: empty."""
        if self.cfg.weight_mode != "resident":
            return self.packed.words[:0]
        return self.packed.words

    @property
    def weight_images(self) -> list[np.ndarray]:
        """Resident mode: per bank o (output lane), uint8 (words, Pi); streamed: []."""
        if self.cfg.weight_mode != "resident":
            return []
        return [np.ascontiguousarray(self.packed.words[:, o, :]) for o in range(self.packed.banks)]

    @property
    def param_image(self) -> np.ndarray:
        """The parameter memory's contents: PARAM_DTYPE (entries, Po), GAP entry included."""
        return self.packed.params

    def prepare_input(self, x_int8: np.ndarray) -> bytes:
        """The input region's bytes for a quantized int8 input (C, H, W)."""
        x = np.asarray(x_int8)
        c, h, w = self.first_conv["cin_image"], *self.size
        if x.shape != (c, h, w) or x.dtype != np.int8:
            raise ScheduleError(f"input must be int8 of shape {(c, h, w)}, not {x.dtype} {x.shape}")
        t = self.tensors[self.input_blob]
        if self.input_layout == "im2col":
            fc = self.first_conv
            pixels = im2col_input(x, fc["k"], fc["stride"], fc["pad"])
        else:
            pixels = x.transpose(1, 2, 0)
        out = np.zeros((t.h, t.w, t.pix), dtype=np.int8)
        out[:, :, :t.c] = pixels
        return out.view(np.uint8).tobytes()

    def ddr_image(self, x_int8: np.ndarray | None = None) -> bytes:
        """Everything the host writes before start, from ``base_addr``: the command list, the
        input (zero without ``x_int8``), the streamed weights and the parameter words
        (``image_size`` bytes)."""
        img = bytearray(self.image_size)
        cmd = self.region("commands")
        off = cmd.addr - self.base_addr
        for c in self.commands:
            img[off:off + COMMAND_BYTES] = c.record
            off += COMMAND_BYTES
        if x_int8 is not None:
            data = self.prepare_input(x_int8)
            off = self.region("input").addr - self.base_addr
            img[off:off + len(data)] = data
        if self.weights_blob:
            off = self.region("weights").addr - self.base_addr
            img[off:off + len(self.weights_blob)] = self.weights_blob
        if self.params_blob:
            off = self.region("params").addr - self.base_addr
            img[off:off + len(self.params_blob)] = self.params_blob
        return bytes(img)

    def new_ddr(self, x_int8: np.ndarray | None = None) -> bytearray:
        """A zeroed DDR of ``ddr_size`` bytes (address ``base_addr`` at index 0) holding
        :meth:`ddr_image`."""
        ddr = bytearray(self.ddr_size)
        img = self.ddr_image(x_int8)
        ddr[:len(img)] = img
        return ddr

    def read_tensor(self, ddr, blob: str, *, base: int | None = None) -> np.ndarray:
        """Blob ``blob`` read back from ``ddr`` (index 0 = address ``base``, default
        ``base_addr``) as (C, H, W): uint8, or int8 for signed blobs (the network input)."""
        if blob not in self.tensors:
            raise KeyError(f"blob {blob!r} has no tensor in DDR (fused squeeze outputs have "
                           f"one only when dumped)")
        t = self.tensors[blob]
        base = self.base_addr if base is None else base
        off = t.addr - base
        span = (t.h * t.w - 1) * t.pix + t.c
        mem = np.frombuffer(ddr, dtype=np.uint8)
        if off < 0 or off + span > mem.size:
            raise ValueError(f"{blob}: bytes {t.addr:#x}..{t.addr + span:#x} lie outside the "
                             f"DDR given ({mem.size} bytes from {base:#x})")
        px = np.lib.stride_tricks.as_strided(mem[off:], shape=(t.h * t.w, t.c),
                                             strides=(t.pix, 1), writeable=False)
        out = np.ascontiguousarray(px.T).reshape(t.c, t.h, t.w)
        return out.view(np.int8) if blob in self.signed else out

    # -- reports ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        def plain(v):
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, (Op, Loc)):
                return v.name
            return v
        return dict(
            network=self.network, size=list(self.size), config=self.cfg.to_dict(),
            base_addr=self.base_addr, ddr_size=self.ddr_size, image_size=self.image_size,
            input_layout=self.input_layout,
            regions=[dict(name=r.name, addr=r.addr, size=r.size) for r in self.regions],
            tensors={b: dict(t._asdict()) for b, t in self.tensors.items()},
            commands=[dict(index=c.index, name=c.name, layers=list(c.layers),
                           tile=list(c.tile) if c.tile else None, fields=plain(c.fields))
                      for c in self.commands],
            weight_words=self.packed.n_words, param_words=self.packed.n_params,
            notes=list(self.notes))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def summary(self) -> str:
        """The memory plan as a text table, then the command list."""
        lines = [f"{self.network} at {self.size[0]}x{self.size[1]} on {self.cfg.name} "
                 f"(Pi={self.cfg.in_lanes}, Po={self.cfg.out_lanes}, {self.cfg.weight_mode} "
                 f"weights, input {self.input_layout})",
                 f"{'region':<28} {'address':>12} {'bytes':>10}  shape"]
        for r in self.regions:
            shape = ""
            t = self.tensors.get(self.input_blob if r.name == "input" else r.name)
            if t is not None:
                shape = f"{t.c}x{t.h}x{t.w}, {t.pix} B/pixel"
            elif r.name == "commands":
                shape = f"{len(self.commands)} x {COMMAND_BYTES} B"
            elif r.name == "weights":
                shape = f"{sum(c.tile[1] for c in self.commands if c.tile and c.op != Op.LOAD)} words"
            lines.append(f"{r.name:<28} {r.addr:#12x} {r.size:>10}  {shape}")
        lines.append(f"{'total':<28} {'':>12} {self.ddr_size:>10}")
        lines.append(f"on chip: {self.packed.n_params} parameter words"
                     + (f", {self.packed.n_words} resident weight words"
                        if self.cfg.weight_mode == "resident" else ""))
        lines.append(f"{'#':>3} {'op':<8} {'command':<32} {'n_og':>5} {'tile words':>10}")
        for c in self.commands:
            f = c.fields
            n_og = f["conv"]["n_og"] + f["n_og2"]
            lines.append(f"{c.index:>3} {c.op.name:<8} {c.name:<32} {n_og:>5} "
                         f"{(c.tile[1] if c.tile else 0):>10}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- compilation ----------------------------------------------------------------------------
@dataclass
class _Piece:
    layer: str
    og0: int
    og1: int


@dataclass
class _Pass:
    name: str
    layers: tuple[str, ...]
    op: Op
    conv: dict
    pieces: list[_Piece] = field(default_factory=list)     # weights, in tile order
    src: Loc = Loc.DDR
    dst: Loc = Loc.DDR
    dump: bool = False
    n_og2: int = 0
    inp: str | None = None                 # input blob (DDR source)
    out: str | None = None                 # output blob (DDR destination)
    out_off: int = 0                        # byte offset in the output pixel
    out_bytes: int = 0
    out_off2: int = 0
    out_bytes2: int = 0
    param_base: int = 0
    gap_param: bool = False


def _check_conv(l: Conv) -> None:
    if l.kernel not in KERNELS:
        raise ScheduleError(f"{l.name}: kernel {l.kernel}x{l.kernel} is not supported "
                            f"(the engine runs {', '.join(map(str, KERNELS))})")
    if l.stride not in STRIDES:
        raise ScheduleError(f"{l.name}: stride {l.stride} is not supported "
                            f"(the engine runs {', '.join(map(str, STRIDES))})")


def compile_program(qm: QuantModel, cfg: EngineConfig, size=227, *, base_addr: int = 0x1000_0000,
                    dump: bool = True, first_layer: str = "auto", fuse: str = "auto") -> Program:
    """Compile ``qm`` for ``cfg`` at an input of ``size`` (int, or (H, W)); see the module doc."""
    if first_layer not in FIRST_LAYER_MODES:
        raise ScheduleError(f"first_layer must be one of {', '.join(FIRST_LAYER_MODES)}, "
                            f"not {first_layer!r}")
    if fuse not in FUSE_MODES:
        raise ScheduleError(f"fuse must be one of {', '.join(FUSE_MODES)}, not {fuse!r}")
    if base_addr % ALIGN or not 0 <= base_addr < _ADDR_LIMIT:
        raise ScheduleError(f"base address {base_addr:#x} must be a 64-byte aligned 32-bit address")
    net = qm.net
    pi, po = cfg.in_lanes, cfg.out_lanes
    streamed = cfg.weight_mode == "streamed"
    try:
        shapes = blob_shapes(net, size)
    except NetworkError as e:
        raise ScheduleError(str(e)) from None
    hw_in = shapes[net.input_name][1:]
    notes: list[str] = []
    for l in net.layers:
        if isinstance(l, Conv):
            _check_conv(l)
        elif (isinstance(l, Pool) and not l.is_global
              and (l.kind, l.kernel, l.stride, l.pad) != ("max", 3, 2, 0)):
            raise ScheduleError(f"{l.name}: {l.kind}-pool {l.kernel}x{l.kernel} stride {l.stride} "
                                f"pad {l.pad} is not supported (the engine max-pools 3x3 stride 2, "
                                f"no padding)")

    consumers: dict[str, list] = {}
    for l in net.layers:
        for b in (l.bottoms if isinstance(l, Concat) else (l.bottom,)):
            consumers.setdefault(b, []).append(l)

    # -- first layer: im2col or direct -------------------------------------------------------
    first = next((c for c in net.convs if c.bottom == net.input_name), None)
    im2col = False
    if first is not None and first_layer != "direct":
        only_user = len(consumers[net.input_name]) == 1
        if first_layer == "im2col":
            if not only_user:
                raise ScheduleError(f"{first.name}: the input {net.input_name} has other consumers, "
                                    f"it cannot be laid out as im2col patches")
            im2col = True
        else:
            im2col = only_user and first.kernel > 1 and first.cin < pi
    elif first_layer == "im2col":
        raise ScheduleError(f"no convolution reads the input {net.input_name}; im2col is impossible")
    packq = qm
    if im2col:
        qc = qm.convs[first.name]
        o, c, k, _ = qc.w.shape
        w2 = np.ascontiguousarray(qc.w.transpose(0, 2, 3, 1).reshape(o, k * k * c, 1, 1))
        conv2 = replace(first, cin=k * k * c, kernel=1, stride=1, pad=0)
        net2 = replace(net, layers=tuple(conv2 if l is first else l for l in net.layers))
        convs2 = dict(qm.convs)
        convs2[first.name] = replace(qc, w=w2)
        packq = replace(qm, net=net2, convs=convs2)

    # -- weights and parameters ----------------------------------------------------------------
    packed = pack(packq, pi, po)
    table = packed.layer_table
    gaps = [l for l in net.layers if isinstance(l, Pool) and l.is_global]
    gap_entry = None
    if gaps:
        g = gaps[0]
        if len(gaps) > 1:
            raise ScheduleError(f"{gaps[1].name}: only one global average pool is supported")
        if qm.gap is None:
            raise ScheduleError(f"{g.name}: the quantized model has no GAP requantization")
        _, gh, gw = shapes[g.bottom]
        if gh * gw != qm.gap.window:
            raise ScheduleError(f"{g.name}: the model's GAP requantization is for a "
                                f"{qm.gap.window}-element window, this input gives {gh}x{gw} = "
                                f"{gh * gw}")
        entry = np.zeros((1, po), dtype=PARAM_DTYPE)
        entry["mult"] = qm.gap.mult
        entry["shift"] = qm.gap.shift
        gap_entry = packed.n_params
        packed = PackedWeights(packed.lanes, packed.banks, packed.words,
                               np.concatenate([packed.params, entry]), packed.layer_table)
    if not streamed and packed.n_words > cfg.weight_words:
        raise ScheduleError(f"resident weights need {packed.n_words} words of {pi}x{po} bytes, "
                            f"the weight memory holds {cfg.weight_words}")

    def words_per_og(name: str) -> int:
        e = table[name]
        return e.k * e.k * e.n_ic

    def og_ranges(name: str) -> list[tuple[int, int]]:
        e = table[name]
        if not streamed:
            return [(0, e.n_og)]
        wpg = words_per_og(name)
        if wpg > cfg.weight_words:
            raise ScheduleError(f"{name}: one output group needs {wpg} weight words, a weight "
                                f"buffer holds {cfg.weight_words}")
        per = cfg.weight_words // wpg
        n = _up(e.n_og, per)
        per = _up(e.n_og, n)              # balanced tiles
        return [(a, min(e.n_og, a + per)) for a in range(0, e.n_og, per)]

    def ring_check(layer: str, rows: int, w: int, c: int, what: str = "input rows") -> None:
        need = rows * w * _up(c, pi) * pi
        if need > cfg.act_buffer_bytes:
            raise ScheduleError(f"{layer}: {rows} {what} of {w}x{c} need {need} bytes on chip, "
                                f"the activation buffer holds {cfg.act_buffer_bytes}")

    # -- tensors: concat views ----------------------------------------------------------------
    alias: dict[str, tuple[str, int]] = {}       # blob -> (concat blob, channel offset)
    producer = {l.top: l for l in net.layers}
    for l in net.layers:
        if isinstance(l, Concat):
            off = 0
            for b in l.bottoms:
                if not isinstance(producer.get(b), Conv):
                    raise ScheduleError(f"{l.name}: input {b} is not a convolution output; only "
                                        f"convolutions can write into a concatenation")
                if b in alias:
                    raise ScheduleError(f"{l.name}: blob {b} is already part of another concat")
                if b == net.output:
                    raise ScheduleError(f"{l.name}: the network output {b} cannot be part of a concat")
                alias[b] = (l.top, off)
                off += shapes[b][0]

    def root(blob: str) -> tuple[str, int]:
        off = 0
        while blob in alias:
            blob, o = alias[blob]
            off += o
        return blob, off

    # -- passes ---------------------------------------------------------------------------------
    fires = {f.squeeze.name: f for f in net.fires()} if fuse != "never" else {}
    fused: dict[str, object] = {}
    for sq, f in fires.items():
        cs, sh, sw = shapes[f.squeeze.top]
        need = sh * sw * _up(cs, pi) * pi
        why = None
        if need > cfg.squeeze_buffer_bytes:
            why = (f"{sq}: squeeze output {sh}x{sw}x{cs} needs {need} bytes on chip, the squeeze "
                   f"buffer holds {cfg.squeeze_buffer_bytes}")
        elif streamed and table[sq].n_words > cfg.weight_words:
            why = (f"{sq}: squeeze weights need {table[sq].n_words} words, a weight buffer holds "
                   f"{cfg.weight_words}")
        elif any(root(c.top)[0] != f.concat.top for c in (f.expand1x1, f.expand3x3)):
            why = f"{f.name}: expand outputs are not stored in the concat tensor"
        elif f.expand1x1.relu != f.expand3x3.relu:
            why = f"{f.name}: one expand has ReLU and the other not (an EXPAND has one relu flag)"
        if why is None:
            fused[sq] = f
        elif fuse == "always":
            raise ScheduleError(why)
        else:
            notes.append(f"{why}: {f.name} runs as three passes via DDR")
    skip = {c.name for f in fused.values() for c in (f.expand1x1, f.expand3x3)}
    fused_squeeze_blobs = {f.squeeze.top for f in fused.values()}

    def conv_fields(l: Conv, pieces_og: tuple[int, int], h: int, w: int, cin: int,
                    k: int, stride: int, pad: int) -> dict:
        ho, wo = shapes[l.top][1:]
        return dict(h=h, w=w, n_ic=_up(cin, pi), k=k, stride=stride, pad=pad, ho=ho, wo=wo,
                    n_og=pieces_og[1] - pieces_og[0], act_signed=int(qm.signed(l.bottom)),
                    relu=int(l.relu))

    passes: list[_Pass] = []

    def conv_passes(l: Conv, src: Loc) -> None:
        """A convolution as CONV commands over og ranges, output to its (aliased) tensor."""
        cin, h, w = shapes[l.bottom]
        k, stride, pad = l.kernel, l.stride, l.pad
        if l is first and im2col:
            h, w = shapes[l.top][1:]
            cin, k, stride, pad = k * k * cin, 1, 1, 0
        if src == Loc.DDR:
            ring_check(l.name, k, w, cin)
        ranges = og_ranges(l.name)
        cout = l.cout
        for a, b in ranges:
            name = l.name if len(ranges) == 1 else f"{l.name}[og {a}:{b}]"
            p = _Pass(name, (l.name,), Op.CONV, conv_fields(l, (a, b), h, w, cin, k, stride, pad),
                      [_Piece(l.name, a, b)], src=src, inp=l.bottom if src == Loc.DDR else None,
                      out=l.top, out_off=a * po, out_bytes=min(b * po, cout) - a * po,
                      param_base=table[l.name].param_base + a)
            passes.append(p)

    for l in net.layers:
        if isinstance(l, Concat) or l.name in skip:
            continue
        if isinstance(l, Pool):
            c, h, w = shapes[l.bottom]
            ho, wo = shapes[l.top][1:]
            cf = dict(h=h, w=w, n_ic=_up(c, pi), ho=ho, wo=wo, act_signed=int(qm.signed(l.bottom)))
            if l.is_global:
                ring_check(l.name, 1, w, c, "input row")
                passes.append(_Pass(l.name, (l.name,), Op.GAP, dict(cf, k=0, relu=1),
                                    inp=l.bottom, out=l.top, out_bytes=c, param_base=gap_entry))
            else:
                ring_check(l.name, l.kernel, w, c)
                passes.append(_Pass(l.name, (l.name,), Op.MAXPOOL,
                                    dict(cf, k=l.kernel, stride=l.stride, pad=l.pad),
                                    inp=l.bottom, out=l.top, out_bytes=c))
            continue
        if l.name not in fused:
            conv_passes(l, Loc.DDR)
            continue
        # a fused Fire module: squeeze into the squeeze buffer, then the expands
        f = fused[l.name]
        sq, e1, e3 = f.squeeze, f.expand1x1, f.expand3x3
        cin, h, w = shapes[sq.bottom]
        cs, sh, sw = shapes[sq.top]
        ring_check(sq.name, 1, w, cin)
        passes.append(_Pass(sq.name, (sq.name,), Op.CONV,
                            conv_fields(sq, (0, table[sq.name].n_og), h, w, cin, 1, 1, 0),
                            [_Piece(sq.name, 0, table[sq.name].n_og)], dst=Loc.SQUEEZE,
                            dump=dump, inp=sq.bottom, out=sq.top if dump else None, out_bytes=cs,
                            param_base=table[sq.name].param_base))
        t1, t3 = table[e1.name], table[e3.name]
        if t3.base != t1.base + t1.n_words or t3.param_base != t1.param_base + t1.n_og:
            raise AssertionError(f"{f.name}: expand3x3 is not packed right after expand1x1")
        if not streamed or t1.n_words + t3.n_words <= cfg.weight_words:
            cf = conv_fields(e1, (0, t1.n_og), sh, sw, cs, 1, 1, 0)
            passes.append(_Pass(f"{f.name}/expand", (e1.name, e3.name), Op.EXPAND, cf,
                                [_Piece(e1.name, 0, t1.n_og), _Piece(e3.name, 0, t3.n_og)],
                                src=Loc.SQUEEZE, n_og2=t3.n_og, out=e1.top, out_bytes=e1.cout,
                                out_off2=root(e3.top)[1] - root(e1.top)[1], out_bytes2=e3.cout,
                                param_base=t1.param_base))
        else:
            conv_passes(e1, Loc.SQUEEZE)
            conv_passes(e3, Loc.SQUEEZE)

    # -- DDR layout ------------------------------------------------------------------------------
    n_cmds = len(passes) + 2                 # PARAMS first, END last
    load_first = streamed and passes and passes[0].pieces
    n_cmds += bool(load_first) + (not streamed)     # resident: one LOAD of the whole image
    regions: list[Region] = []
    addr = base_addr

    def add(name: str, size: int) -> int:
        nonlocal addr
        a = addr
        regions.append(Region(name, a, size))
        addr = _round(a + max(size, 1), ALIGN)
        return a

    add("commands", n_cmds * COMMAND_BYTES)
    tensors: dict[str, Tensor] = {}
    cin0, h0, w0 = shapes[net.input_name]
    if im2col:
        kk = first.kernel * first.kernel * cin0
        ho, wo = shapes[first.top][1:]
        tin = (kk, ho, wo, _pix(kk))
    else:
        tin = (cin0, h0, w0, _pix(cin0))
    a = add("input", tin[1] * tin[2] * tin[3])
    tensors[net.input_name] = Tensor(a, *tin)

    tiles: list[tuple[int, int]] = []            # per pass with weights: (DDR address, words)
    blob_parts = []
    if streamed:
        off = 0
        for p in passes:
            if not p.pieces:
                continue
            words = []
            for pc in p.pieces:
                e = table[pc.layer]
                wpg = words_per_og(pc.layer)
                words.append(packed.words[e.base + pc.og0 * wpg:e.base + pc.og1 * wpg])
            arr = np.concatenate(words)
            tiles.append((off, len(arr)))
            raw = np.ascontiguousarray(arr).tobytes()
            blob_parts.append(raw + bytes(_round(len(raw), ALIGN) - len(raw)))
            off += _round(len(raw), ALIGN)
        weights_blob = b"".join(blob_parts)
        wa = add("weights", len(weights_blob))
        tiles = [(wa + o, n) for o, n in tiles]
    else:
        raw = np.ascontiguousarray(packed.words).tobytes()
        weights_blob = raw + bytes(_round(len(raw), ALIGN) - len(raw))
        wa = add("weights", len(weights_blob))
    params_blob = packed.param_stream()
    params_addr = add("params", len(params_blob))

    for l in net.layers:
        blob = l.top
        if blob in alias or blob in tensors:
            continue
        if blob in fused_squeeze_blobs and not dump:
            continue
        c, h, w = shapes[blob]
        a = add(blob, h * w * _pix(c))
        tensors[blob] = Tensor(a, c, h, w, _pix(c))
    for blob in alias:
        if blob in fused_squeeze_blobs and not dump:
            continue
        r, off = root(blob)
        t = tensors[r]
        c, h, w = shapes[blob]
        tensors[blob] = Tensor(t.addr + off, c, h, w, t.pix)
    if addr > _ADDR_LIMIT:
        raise ScheduleError(f"the memory plan ends at {addr:#x}, past the 32-bit address space "
                            f"(base {base_addr:#x}, {addr - base_addr} bytes)")

    # -- command records -------------------------------------------------------------------------
    weighted = [i for i, p in enumerate(passes) if p.pieces]
    tile_of = dict(zip(weighted, tiles)) if streamed else {}
    wbuf_of = {i: n % 2 for n, i in enumerate(weighted)} if streamed else {}
    commands: list[Command] = []

    def emit(name, layers, tile=None, macs=0, **fields):
        try:
            rec = encode(**fields)
        except ValueError as e:
            raise ScheduleError(f"{name}: {e}") from None
        commands.append(Command(len(commands), name, tuple(layers), rec, tile, macs))

    def piece_macs(pc) -> int:
        l = net.layer(pc.layer)
        _, ho, wo = shapes[l.top]
        chans = min(pc.og1 * po, l.cout) - pc.og0 * po
        return chans * l.reduction * ho * wo

    emit("params", (), op=Op.PARAMS, pf_addr=params_addr, pf_words=packed.n_params,
         conv=dict(param_base=0))
    if not streamed:
        emit("load", (), (wa, packed.n_words), op=Op.LOAD, pf_addr=wa, pf_words=packed.n_words,
             conv=dict(weight_base=0))
    if load_first:
        a, n = tile_of[0]
        emit("load", (), (a, n), op=Op.LOAD, wbuf=1 - wbuf_of[0], pf_addr=a, pf_words=n)
    for i, p in enumerate(passes):
        f = dict(op=p.op, src=p.src, dst=p.dst, dump=int(p.dump), n_og2=p.n_og2)
        cf = dict(p.conv, param_base=p.param_base)
        if p.pieces:
            if streamed:
                cf["weight_base"] = 0
            else:
                e = table[p.pieces[0].layer]
                cf["weight_base"] = e.base + p.pieces[0].og0 * words_per_og(p.pieces[0].layer)
        f["conv"] = cf
        if p.inp is not None:
            t = tensors[p.inp]
            f.update(in_addr=t.addr, in_pix=t.pix, in_bytes=t.c)
        if p.out is not None:
            t = tensors[p.out]
            f.update(out_addr=t.addr + p.out_off, out_pix=t.pix)
        f.update(out_bytes=p.out_bytes, out_off2=p.out_off2, out_bytes2=p.out_bytes2)
        if streamed:
            nxt = i + 1 if i + 1 < len(passes) and passes[i + 1].pieces else None
            if p.pieces:
                f["wbuf"] = wbuf_of[i]
            elif nxt is not None:
                f["wbuf"] = 1 - wbuf_of[nxt]
            if nxt is not None:
                f.update(pf_addr=tile_of[nxt][0], pf_words=tile_of[nxt][1])
                if f["wbuf"] == wbuf_of[nxt]:
                    raise AssertionError(f"{p.name}: prefetch into the buffer in use")
        emit(p.name, p.layers, tile_of.get(i), sum(map(piece_macs, p.pieces)), **f)
    emit("end", (), op=Op.END)
    assert len(commands) == n_cmds

    signed = frozenset(b for b in shapes if qm.signed(b))
    first_info = dict(name=first.name if first else None, k=first.kernel if first else 0,
                      stride=first.stride if first else 0, pad=first.pad if first else 0,
                      cin_image=cin0)
    return Program(cfg, net.name, tuple(hw_in), base_addr, commands, regions, tensors, signed,
                   packed, net.input_name, "im2col" if im2col else "hwc", first_info,
                   weights_blob, params_blob, notes)

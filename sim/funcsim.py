"""Functional (transaction-level) model of the engine: executes a command list on a DDR image.

It runs what :mod:`squeezeforge.hw.commands` says a command does, one whole pass at a time with
NumPy, and keeps the engine's state the way the hardware does:

* the command list is FETCHED FROM DDR (``cmd_addr``) and decoded, up to ``END``;
* weights come from the resident weight memory (which LOAD commands fill: ``pf_words`` words
  from ``pf_addr`` to word ``conv.weight_base`` on; or given initial contents) or, in
  streamed mode, from two buffers of ``cfg.weight_words`` words that only the prefetch fills
  (``pf_words`` words from ``pf_addr`` into buffer ``1 - wbuf`` while the command runs); a
  command may read only the words its buffer was last loaded with;
* parameters (bias, M, shift per lane) come from the parameter memory, which starts zero (or
  with given initial contents) and which a ``PARAMS`` command loads from DDR;
* a Fire module's squeeze output goes to the on-chip squeeze buffer (``cfg.squeeze_buffer_bytes``)
  as activation words, and the EXPAND (or a CONV with ``src = SQUEEZE``) reads it from there.

Data semantics (the contract the compiler and the RTL share):

* DDR input of a pass: pixel p (raster order over ``h x w``) is ``in_bytes`` bytes at
  ``in_addr + p*in_pix``, channels ``[0, in_bytes)``; on chip, activation-word lanes past
  ``in_bytes`` (up to ``n_ic * Pi``) are zero. ``act_signed`` reads the bytes as int8.
* A CONV computes, for every output pixel and og group, the Po-lane sum over (kh, kw, icb) of
  weight words ``weight_base + ((og*k + kh)*k + kw)*n_ic + icb`` times the activation words (zero
  outside the input), plus the bias of parameter word ``param_base + og``, then
  ``numeric.requantize`` with that word's M and shift (ReLU per ``relu``).
* DDR output: pixel p's ``out_bytes`` bytes (channels ``[0, out_bytes)`` of the pass's og
  groups) at ``out_addr + p*out_pix``. Output to the squeeze buffer: pixel p as
  ``ceil(out_bytes / Pi)`` activation words from word ``p * ceil(out_bytes / Pi)``, lanes past
  ``out_bytes`` zero; with ``dump`` also to DDR as above.
* EXPAND: the squeeze buffer (``h, w, n_ic``) through the 1x1 conv (``n_og`` groups) to bytes
  ``[0, out_bytes)`` and the 3x3 pad-1 conv (``n_og2`` groups, weight and parameter words right
  after the 1x1's) to bytes ``[out_off2, out_off2 + out_bytes2)`` of each output pixel.
* MAXPOOL: ``reference.maxpool`` (Caffe ceil rounding) over ``k, stride, pad``; GAP: the integer
  sum per channel, requantized with M and shift of lane 0 of parameter word ``param_base``.

Violations of the contract (a read past the loaded weights, an out-of-range address, a squeeze
buffer overflow, a geometry that disagrees with itself) raise :class:`FuncSimError`: they are
compiler bugs, so they are loud.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from squeezeforge.hw.commands import COMMAND_BYTES, Loc, Op, decode
from squeezeforge.hw.config import EngineConfig
from squeezeforge.quant import numeric
from squeezeforge.quant.pack import MULT_OFFSET, PARAM_DTYPE, SHIFT_OFFSET
from squeezeforge.quant.reference import global_sum, im2col, maxpool

__all__ = ["FuncSim", "FuncSimError", "run_program", "MAX_COMMANDS"]

MAX_COMMANDS = 4096      # a list without END is refused after this many records


class FuncSimError(AssertionError):
    """A command that breaks the engine's contract (a compiler or encoding bug)."""


def _up(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class _Buffer:
    words: np.ndarray          # uint8 (depth, Po, Pi)
    valid: int = 0             # words loaded by the last prefetch (streamed)
    source: int | None = None  # DDR address of the last load
    loaded: np.ndarray | None = None   # resident: which words a LOAD (or init) has written


class FuncSim:
    """The engine's state (weight memory or buffers, parameter memory, squeeze buffer) and a
    command interpreter over a DDR ``bytearray`` whose index 0 is address ``base``."""

    def __init__(self, cfg: EngineConfig, params: np.ndarray, weights: np.ndarray | None = None):
        self.cfg = cfg
        pi, po = cfg.in_lanes, cfg.out_lanes
        params = np.asarray(params)
        if params.dtype != PARAM_DTYPE or params.ndim != 2 or params.shape[1] != po:
            raise FuncSimError(f"parameter image must be PARAM_DTYPE (entries, {po})")
        self.params = params
        if cfg.weight_mode == "resident":
            buf = _Buffer(np.zeros((cfg.weight_words, po, pi), np.uint8),
                          loaded=np.zeros(cfg.weight_words, bool))
            if weights is not None:
                weights = np.asarray(weights, dtype=np.uint8)
                if weights.ndim != 3 or weights.shape[1:] != (po, pi):
                    raise FuncSimError(f"weight image must be (words, {po}, {pi}), not "
                                       f"{weights.shape}")
                if len(weights) > cfg.weight_words:
                    raise FuncSimError(f"weight image of {len(weights)} words exceeds the "
                                       f"memory's {cfg.weight_words}")
                buf.words[:len(weights)] = weights
                buf.loaded[:len(weights)] = True
            self.buffers = [buf]
        else:
            self.buffers = [_Buffer(np.zeros((cfg.weight_words, po, pi), np.uint8))
                            for _ in range(2)]
        self.squeeze = np.zeros(cfg.squeeze_buffer_bytes, dtype=np.uint8)
        self.squeeze_valid = 0          # bytes written by the last squeeze-buffer writer
        self.squeeze_channels = 0       # its out_bytes (the real channel count)

    # -- DDR access ----------------------------------------------------------------------------
    def _span(self, mem, addr, n, what):
        off = addr - self.base
        if off < 0 or off + n > mem.size:
            raise FuncSimError(f"{self.where}: {what} {addr:#x}..{addr + n:#x} is outside the DDR "
                               f"({self.base:#x}..{self.base + mem.size:#x})")
        return off

    def _read_pixels(self, mem, addr, h, w, pix, nbytes, n_ic, signed) -> np.ndarray:
        pi = self.cfg.in_lanes
        if nbytes > n_ic * pi:
            raise FuncSimError(f"{self.where}: in_bytes {nbytes} exceed n_ic*Pi = {n_ic * pi}")
        if h * w > 1 and nbytes > pix:
            raise FuncSimError(f"{self.where}: in_bytes {nbytes} exceed the pixel stride {pix}")
        off = self._span(mem, addr, (h * w - 1) * pix + nbytes, "input")
        px = np.lib.stride_tricks.as_strided(mem[off:], shape=(h * w, nbytes), strides=(pix, 1),
                                             writeable=False)
        a = np.zeros((h * w, n_ic * pi), dtype=np.uint8)
        a[:, :nbytes] = px
        self.ddr_read += h * w * nbytes
        return self._to_chw(a, h, w, signed)

    @staticmethod
    def _to_chw(a, h, w, signed):
        a = a.view(np.int8) if signed else a
        return a.reshape(h, w, -1).transpose(2, 0, 1)

    def _write_pixels(self, mem, addr, pix, y: np.ndarray) -> None:
        """y: (C, H, W) uint8/int8, written as pixel p's C bytes at addr + p*pix."""
        c, h, w = y.shape
        if h * w > 1 and c > pix:
            raise FuncSimError(f"{self.where}: out_bytes {c} exceed the pixel stride {pix}")
        off = self._span(mem, addr, (h * w - 1) * pix + c, "output")
        dst = np.lib.stride_tricks.as_strided(mem[off:], shape=(h * w, c), strides=(pix, 1))
        dst[...] = y.view(np.uint8).reshape(c, h * w).T
        self.ddr_write += h * w * c

    def _fetch_words(self, mem, addr, n, what) -> np.ndarray:
        """``n`` weight words from DDR at ``addr`` as (n, Po, Pi), counted as prefetched."""
        wb = self.cfg.weight_word_bytes
        off = self._span(mem, addr, n * wb, what)
        self.weight_words_loaded += n
        self.ddr_read += n * wb
        return mem[off:off + n * wb].reshape(n, self.cfg.out_lanes, self.cfg.in_lanes)

    # -- on-chip memories -----------------------------------------------------------------------
    def _weights(self, wbuf, base, n) -> np.ndarray:
        if self.cfg.weight_mode == "resident":
            buf = self.buffers[0]
            if base + n > len(buf.words) or not buf.loaded[base:base + n].all():
                raise FuncSimError(f"{self.where}: reads weight words {base}..{base + n - 1}, "
                                   f"which no LOAD has written")
            return buf.words[base:base + n]
        buf = self.buffers[wbuf]
        if base + n > buf.valid:
            raise FuncSimError(f"{self.where}: reads weight words {base}..{base + n} of buffer "
                               f"{wbuf}, which holds {buf.valid} loaded words")
        return buf.words[base:base + n]

    def _param(self, base, n) -> np.ndarray:
        if base + n > len(self.params):
            raise FuncSimError(f"{self.where}: reads parameter words {base}..{base + n}, the "
                               f"memory holds {len(self.params)}")
        return self.params[base:base + n].reshape(-1)

    def _read_squeeze(self, h, w, n_ic, signed) -> np.ndarray:
        pi = self.cfg.in_lanes
        n = h * w * n_ic * pi
        if n > self.squeeze_valid:
            raise FuncSimError(f"{self.where}: reads {n} bytes of the squeeze buffer, "
                               f"{self.squeeze_valid} were written")
        return self._to_chw(self.squeeze[:n].reshape(h * w, n_ic * pi), h, w, signed)

    def _write_squeeze(self, y: np.ndarray) -> None:
        pi = self.cfg.in_lanes
        c, h, w = y.shape
        nw = _up(c, pi)
        n = h * w * nw * pi
        if n > self.squeeze.size:
            raise FuncSimError(f"{self.where}: writes {n} bytes into the {self.squeeze.size}-byte "
                               f"squeeze buffer")
        a = np.zeros((h * w, nw * pi), dtype=np.uint8)
        a[:, :c] = y.view(np.uint8).reshape(c, h * w).T
        self.squeeze[:n] = a.reshape(-1)
        self.squeeze_valid = n
        self.squeeze_channels = c

    def _ring_check(self, rows, w, n_ic):
        need = rows * w * n_ic * self.cfg.in_lanes
        if need > self.cfg.act_buffer_bytes:
            raise FuncSimError(f"{self.where}: {rows} input rows need {need} bytes, the "
                               f"activation buffer holds {self.cfg.act_buffer_bytes}")

    # -- compute --------------------------------------------------------------------------------
    def _conv(self, x, wbuf, wbase, pbase, n_og, k, stride, pad, n_ic, relu, ho, wo, n_out):
        """Conv of activations x (n_ic*Pi, H, W) with n_og groups; output channels [0, n_out)."""
        pi, po = self.cfg.in_lanes, self.cfg.out_lanes
        if n_out > n_og * po:
            raise FuncSimError(f"{self.where}: {n_out} output channels from {n_og} groups of {po}")
        words = self._weights(wbuf, wbase, n_og * k * k * n_ic).view(np.int8)
        wt = words.reshape(n_og, k, k, n_ic, po, pi).transpose(0, 4, 3, 5, 1, 2)
        wt = wt.reshape(n_og * po, n_ic * pi * k * k)[:n_out]
        cols, h2, w2 = im2col(x.astype(np.float64), k, stride, pad)
        if (h2, w2) != (ho, wo):
            raise FuncSimError(f"{self.where}: output {ho}x{wo} in the command, the geometry "
                               f"gives {h2}x{w2}")
        par = self._param(pbase, n_og)[:n_out]
        if n_out and (par["shift"] < 1).any():
            raise FuncSimError(f"{self.where}: parameter words {pbase}.. hold a zero shift in "
                               f"a used lane")
        acc = (wt.astype(np.float64) @ cols).astype(np.int64) + par["bias"].astype(np.int64)[:, None]
        y = numeric.requantize(acc, par["mult"].astype(np.int64), par["shift"].astype(np.int64),
                               relu=bool(relu))
        self.macs += n_out * ho * wo * k * k * self.in_channels
        self.steps += ho * wo * n_og * k * k * n_ic
        return y.reshape(n_out, ho, wo)

    def _input(self, mem, cmd, signed):
        c = cmd["conv"]
        if cmd["src"] == Loc.SQUEEZE:
            self.in_channels = self.squeeze_channels
            return self._read_squeeze(c["h"], c["w"], c["n_ic"], signed)
        self.in_channels = cmd["in_bytes"]
        return self._read_pixels(mem, cmd["in_addr"], c["h"], c["w"], cmd["in_pix"],
                                 cmd["in_bytes"], c["n_ic"], signed)

    def execute(self, mem: np.ndarray, cmd: dict) -> None:
        op, c = cmd["op"], cmd["conv"]
        signed = bool(c["act_signed"])
        streamed = self.cfg.weight_mode == "streamed"
        if not streamed and (cmd["wbuf"] or cmd["pf_words"] and op not in (Op.PARAMS, Op.LOAD)):
            raise FuncSimError(f"{self.where}: resident mode, but wbuf/pf_words are set")
        if op in (Op.CONV, Op.EXPAND, Op.MAXPOOL, Op.GAP) and cmd["src"] == Loc.DDR:
            rows = 1 if op == Op.GAP else max(c["k"], 1)
            self._ring_check(rows, c["w"], c["n_ic"])
        if op == Op.CONV:
            x = self._input(mem, cmd, signed)
            y = self._conv(x, cmd["wbuf"], c["weight_base"], c["param_base"], c["n_og"], c["k"],
                           c["stride"], c["pad"], c["n_ic"], c["relu"], c["ho"], c["wo"],
                           cmd["out_bytes"])
            if cmd["dst"] == Loc.SQUEEZE:
                self._write_squeeze(y)
                if cmd["dump"]:
                    self._write_pixels(mem, cmd["out_addr"], cmd["out_pix"], y)
            else:
                self._write_pixels(mem, cmd["out_addr"], cmd["out_pix"], y)
        elif op == Op.EXPAND:
            if cmd["src"] != Loc.SQUEEZE or cmd["dst"] != Loc.DDR:
                raise FuncSimError(f"{self.where}: EXPAND reads SQUEEZE and writes DDR")
            if (c["k"], c["stride"], c["pad"]) != (1, 1, 0) or (c["ho"], c["wo"]) != (c["h"], c["w"]):
                raise FuncSimError(f"{self.where}: EXPAND geometry must be 1x1, stride 1, no pad")
            x = self._input(mem, cmd, signed)
            n1, n3 = c["n_og"], cmd["n_og2"]
            y1 = self._conv(x, cmd["wbuf"], c["weight_base"], c["param_base"], n1, 1, 1, 0,
                            c["n_ic"], c["relu"], c["ho"], c["wo"], cmd["out_bytes"])
            y3 = self._conv(x, cmd["wbuf"], c["weight_base"] + n1 * c["n_ic"], c["param_base"] + n1,
                            n3, 3, 1, 1, c["n_ic"], c["relu"], c["ho"], c["wo"], cmd["out_bytes2"])
            if cmd["out_off2"] < cmd["out_bytes"]:
                raise FuncSimError(f"{self.where}: the 3x3 output at byte {cmd['out_off2']} "
                                   f"overlaps the 1x1 output's {cmd['out_bytes']} bytes")
            self._write_pixels(mem, cmd["out_addr"], cmd["out_pix"], y1)
            self._write_pixels(mem, cmd["out_addr"] + cmd["out_off2"], cmd["out_pix"], y3)
        elif op == Op.MAXPOOL:
            x = self._input(mem, cmd, signed)
            y = maxpool(np.ascontiguousarray(x), c["k"], c["stride"], c["pad"])
            if y.shape[1:] != (c["ho"], c["wo"]):
                raise FuncSimError(f"{self.where}: output {c['ho']}x{c['wo']} in the command, "
                                   f"the pool gives {y.shape[1]}x{y.shape[2]}")
            self.steps += c["ho"] * c["wo"] * c["k"] * c["k"] * c["n_ic"]
            self._write_pixels(mem, cmd["out_addr"], cmd["out_pix"], y[:cmd["out_bytes"]])
        elif op == Op.GAP:
            x = self._input(mem, cmd, signed)[:cmd["out_bytes"]]
            lane = self._param(c["param_base"], 1)[0]
            if lane["shift"] < 1:
                raise FuncSimError(f"{self.where}: GAP parameter word {c['param_base']} has shift 0")
            y = numeric.requantize(global_sum(x).reshape(-1), int(lane["mult"]), int(lane["shift"]),
                                   relu=bool(c["relu"]))
            self.steps += c["h"] * c["w"] * c["n_ic"]
            self._write_pixels(mem, cmd["out_addr"], cmd["out_pix"], y.reshape(-1, 1, 1))
        elif op == Op.LOAD and not streamed:
            n, base0 = cmd["pf_words"], c["weight_base"]
            buf = self.buffers[0]
            if base0 + n > len(buf.words):
                raise FuncSimError(f"{self.where}: loads weight words {base0}..{base0 + n - 1}, "
                                   f"the memory holds {len(buf.words)}")
            buf.words[base0:base0 + n] = self._fetch_words(mem, cmd["pf_addr"], n, "weights")
            buf.loaded[base0:base0 + n] = True
            return
        elif op == Op.LOAD:
            pass
        elif op == Op.PARAMS:
            n, base0, po = cmd["pf_words"], c["param_base"], self.cfg.out_lanes
            if base0 + n > len(self.params):
                raise FuncSimError(f"{self.where}: loads parameter words {base0}..{base0 + n - 1}"
                                   f", the memory holds {len(self.params)}")
            if n == 0:
                return
            off = self._span(mem, cmd["pf_addr"], n * po * 8, "parameter words")
            lanes = mem[off:off + n * po * 8].view("<u8").astype(np.int64).reshape(n, po)
            rows = np.zeros((n, po), dtype=PARAM_DTYPE)
            rows["bias"] = (lanes & 0xFFFF_FFFF).astype(np.uint32).view(np.int32)
            rows["mult"] = (lanes >> MULT_OFFSET) & ((1 << numeric.MULT_BITS) - 1)
            rows["shift"] = (lanes >> SHIFT_OFFSET) & ((1 << numeric.SHIFT_BITS) - 1)
            self.params[base0:base0 + n] = rows
            self.ddr_read += n * po * 8
            return
        else:
            raise FuncSimError(f"{self.where}: unexpected op {op}")
        # the prefetch runs alongside the command; it lands in the buffer not in use
        if cmd["pf_words"]:
            if not streamed:
                raise FuncSimError(f"{self.where}: prefetch in resident mode")
            n = cmd["pf_words"]
            if n > self.cfg.weight_words:
                raise FuncSimError(f"{self.where}: prefetch of {n} words into a "
                                   f"{self.cfg.weight_words}-word buffer")
            buf = self.buffers[1 - cmd["wbuf"]]
            buf.words[:n] = self._fetch_words(mem, cmd["pf_addr"], n, "weight tile")
            buf.valid, buf.source = n, cmd["pf_addr"]

    def run(self, ddr, cmd_addr: int, base: int, names=None) -> list[dict]:
        """Fetch and execute commands from ``cmd_addr`` until END; per command statistics."""
        mem = np.frombuffer(ddr, dtype=np.uint8)
        if not mem.flags.writeable:
            raise FuncSimError("the DDR must be writable (a bytearray)")
        self.base = base
        stats = []
        for i in range(MAX_COMMANDS):
            self.where = f"command {i}" + (f" ({names[i]})" if names and i < len(names) else "")
            off = self._span(mem, cmd_addr + i * COMMAND_BYTES, COMMAND_BYTES, "command")
            cmd = decode(bytes(mem[off:off + COMMAND_BYTES]))
            if cmd["op"] == Op.END:
                stats.append(dict(index=i, name=names[i] if names else "end", op="END", macs=0,
                                  steps=0, ddr_read_bytes=0, ddr_write_bytes=0, weight_words=0))
                return stats
            self.macs = self.steps = self.ddr_read = self.ddr_write = 0
            self.weight_words_loaded = 0
            self.in_channels = 0
            self.execute(mem, cmd)
            stats.append(dict(index=i, name=names[i] if names and i < len(names) else f"cmd{i}",
                              op=cmd["op"].name, macs=self.macs, steps=self.steps,
                              ddr_read_bytes=self.ddr_read, ddr_write_bytes=self.ddr_write,
                              weight_words=self.weight_words_loaded))
        raise FuncSimError(f"no END within {MAX_COMMANDS} commands from {cmd_addr:#x}")


def run_program(program, ddr: bytearray, *, base: int | None = None) -> list[dict]:
    """Execute ``program`` (a :class:`squeezeforge.host.schedule.Program`) on ``ddr`` (index 0 =
    address ``base``, default ``program.base_addr``; e.g. ``program.new_ddr(x)``).

    Returns per command: index, name, op, macs (real multiply-accumulates: output channels x
    input channels x k*k x output pixels), steps (MAC-array cycles of issue), DDR bytes read and
    written, weight words prefetched.
    """
    # the parameter memory starts zero, as the engine built without param_init: the program's
    # PARAMS command loads it
    params = np.zeros((max(program.cfg.PARAM_WORDS, program.packed.n_params),
                       program.cfg.out_lanes), dtype=PARAM_DTYPE)
    sim = FuncSim(program.cfg, params)          # resident weights: the program's LOAD
    base = program.base_addr if base is None else base
    return sim.run(ddr, program.cmd_addr, base, [c.name for c in program.commands])

"""The engine's command format: one source of truth for the RTL sequencer and the host compiler.

A program is a list of :class:`Command` records in DDR, ``COMMAND_BYTES`` (64) bytes each
(little-endian: bit 0 of the record is bit 0 of byte 0), ending with an ``END`` command. The
sequencer fetches them with the read DMA and executes them in order, so a whole network runs from
one ``start``. The host builds records with :func:`encode` (the same ``data.Struct`` layout the
RTL uses, so field positions are never restated) and reads them back with :func:`decode`.

Ops
---
``CONV``    one convolution pass (``conv`` = :class:`~.conv.ConvCommand`). Input from DDR through
            the ring buffer (``src = DDR``: rows ``in_addr + (y*in_w + x)*in_pix``, ``in_bytes``
            bytes per pixel) or from the squeeze buffer (``src = SQUEEZE``); output to DDR
            (``dst = DDR``: pixel p's ``out_bytes`` bytes at ``out_addr + p*out_pix``) or to the
            squeeze buffer (``dst = SQUEEZE``; the Fire squeeze pass); with ``dump`` set, a
            squeeze output is also written to DDR as above, so every layer can be verified.
``EXPAND``  a Fire module's expand pass: input from the squeeze buffer; per output pixel the
            1x1 conv's ``conv.n_og`` groups (k = 1), then the 3x3 pad-1 conv's ``n_og2`` groups,
            whose weights and parameter words follow the 1x1 conv's; the 1x1 output goes to
            bytes ``[0, out_bytes)`` of the pixel, the 3x3 output to ``[out_off2, out_off2 +
            out_bytes2)``: the concatenation costs no copy. When ``out_off2 == out_bytes ==
            conv.n_og * Po`` the engine computes both in one interleaved pass (per pixel the 1x1
            groups, then the 3x3 groups; one write per pixel), else in two passes; the result
            is the same, only the timing differs.
``MAXPOOL`` 3x3 stride-2 max-pool (Caffe ceil rounding), DDR to DDR, geometry in ``conv``
            (``k``, ``stride``, ``pad``, ``ho``, ``wo``, ``n_ic``).
``GAP``     global average pool, DDR to DDR: per channel the integer window sum, requantized with
            the M and shift of parameter word ``conv.param_base`` (bias 0).

On-chip storage rules: a CONV with ``dst = SQUEEZE`` stores each output pixel as
``ceil(out_bytes / Pi)`` activation words, lanes past ``out_bytes`` zero (``out_bytes`` is set even
when ``dump`` is 0); activation lanes past ``in_bytes`` are zero on chip; GAP takes M and shift
from lane 0 of its parameter word. Output addresses are byte-granular: the write DMA uses byte
strobes for partial beats (every SqueezeNet address is 8-byte aligned; odd channel counts are not).

Parameter words (bias, M, shift per output lane) live in an on-chip parameter memory that the
program loads itself, so one bitstream runs any model:
``PARAMS``  no computation: load ``pf_words`` parameter words from DDR at ``pf_addr`` into the
            parameter memory from word ``conv.param_base`` on. A word is ``Po`` 64-bit
            little-endian beats, lane o in beat o: bias (int32, bits 0-31), M (bits 32-47), shift
            (bits 48-53), bits 54-63 zero (:meth:`squeezeforge.quant.pack.PackedWeights.param_stream`).
            The compiler puts one PARAMS first in every program. (An engine built with
            ``param_init`` also starts with those contents.)
``LOAD``    no computation: only the weight prefetch below. Streamed: before the first tile.
            Resident: ``pf_words`` words from ``pf_addr`` into the weight memory from word
            ``conv.weight_base`` on (the program's setup; a word is ``Po*Pi`` bytes, lane-major
            as packed).
``END``     stop; the engine raises ``done`` (and the interrupt when enabled).

Weights (streamed mode): a command computes from weight buffer ``wbuf``; while it runs, the
sequencer loads ``pf_words`` words from ``pf_addr`` into the other buffer, ``1 - wbuf`` (the next
tile), so weight loading overlaps computation; the next command starts when both are finished.
The host decides the prefetch order. In resident mode ``wbuf`` is zero, only LOAD has prefetch
fields, and ``conv.weight_base`` addresses the one memory.

Setup and warm start: the leading PARAMS (and, resident, LOAD) commands only fill on-chip
memories that nothing else writes; a host that already ran them for this model may start the
engine at the first command after them (``Program.warm_index``).
"""

from amaranth.hdl import unsigned
from amaranth.lib import data, enum

from .conv import ConvCommand, WORDS_BITS

__all__ = ["Op", "Loc", "Command", "COMMAND_BYTES", "encode", "decode"]

COMMAND_BYTES = 64


class Op(enum.Enum, shape=3):
    END = 0
    CONV = 1
    EXPAND = 2
    MAXPOOL = 3
    GAP = 4
    LOAD = 5
    PARAMS = 6


class Loc(enum.Enum, shape=1):
    DDR = 0
    SQUEEZE = 1


class Command(data.Struct):
    op: Op
    src: Loc
    dst: Loc
    wbuf: unsigned(1)
    dump: unsigned(1)
    conv: ConvCommand
    n_og2: unsigned(WORDS_BITS)
    in_addr: unsigned(32)
    in_pix: unsigned(16)
    in_bytes: unsigned(16)
    out_addr: unsigned(32)
    out_pix: unsigned(16)
    out_bytes: unsigned(16)
    out_off2: unsigned(16)
    out_bytes2: unsigned(16)
    pf_addr: unsigned(32)
    pf_words: unsigned(16)


assert Command.as_shape().size <= 8 * COMMAND_BYTES, "command record outgrew 64 bytes"


def _check(layout, values: dict, path: str = "") -> None:
    """Refuse unknown fields and values that do not fit their field."""
    for name, v in values.items():
        try:
            field = layout[name]
        except KeyError:
            raise ValueError(f"command has no field {path}{name}") from None
        shape = field.shape
        if isinstance(shape, data.StructLayout) or (isinstance(shape, type) and issubclass(shape, data.Struct)):
            _check(data.Layout.cast(shape), v, f"{path}{name}.")
        elif isinstance(v, int) and not isinstance(v, bool):
            width = field.width
            if not 0 <= v < (1 << width):
                raise ValueError(f"command field {path}{name} = {v} does not fit {width} bits")


def encode(**fields) -> bytes:
    """One command record as ``COMMAND_BYTES`` little-endian bytes; unknown or oversized fields
    raise ValueError. Omitted fields are zero."""
    _check(data.Layout.cast(Command), fields)
    bits = Command.const(fields).as_bits()
    return bits.to_bytes(COMMAND_BYTES, "little")


def decode(record: bytes) -> dict:
    """The fields of one record (nested dict; enums as their Python members)."""
    if len(record) != COMMAND_BYTES:
        raise ValueError(f"a command record is {COMMAND_BYTES} bytes, not {len(record)}")
    value = int.from_bytes(record, "little")

    def walk(layout, base):
        out = {}
        for name, field in layout:
            shape = field.shape
            raw = (value >> (base + field.offset)) & ((1 << field.width) - 1)
            if isinstance(shape, type) and issubclass(shape, data.Struct):
                out[name] = walk(data.Layout.cast(shape), base + field.offset)
            elif isinstance(shape, type) and issubclass(shape, enum.Enum):
                out[name] = shape(raw)
            else:
                out[name] = raw
        return out

    return walk(data.Layout.cast(Command), 0)

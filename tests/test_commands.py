"""The command record: host encoding and RTL layout are the same data.Struct, round trips exact."""
import numpy as np
import pytest
from amaranth.lib import data

from squeezeforge.hw.commands import COMMAND_BYTES, Command, Loc, Op, decode, encode


def _random_fields(layout, rng):
    out = {}
    for name, field in layout:
        shape = field.shape
        if isinstance(shape, type) and issubclass(shape, data.Struct):
            out[name] = _random_fields(data.Layout.cast(shape), rng)
        elif name == "op":
            out[name] = Op(int(rng.integers(0, len(Op))))
        elif name in ("src", "dst"):
            out[name] = Loc(int(rng.integers(0, 2)))
        else:
            out[name] = int(rng.integers(0, 1 << field.width, dtype=np.uint64))
    return out


def test_round_trip_random_records():
    rng = np.random.default_rng(7)
    for _ in range(50):
        f = _random_fields(data.Layout.cast(Command), rng)
        rec = encode(**f)
        assert len(rec) == COMMAND_BYTES
        assert decode(rec) == f


def test_op_is_the_low_bits_of_byte_0_and_fields_do_not_overlap():
    assert encode(op=Op.GAP)[0] & 0b111 == 4
    assert encode(op=Op.END) == bytes(COMMAND_BYTES)
    # each field set to all ones on its own sets exactly `width` bits
    for name, field in data.Layout.cast(Command):
        if isinstance(field.shape, type) and issubclass(field.shape, data.Struct):
            continue
        if name in ("op", "src", "dst"):
            continue
        v = int.from_bytes(encode(**{name: (1 << field.width) - 1}), "little")
        assert bin(v).count("1") == field.width
        assert v == ((1 << field.width) - 1) << field.offset


def test_bad_fields_are_refused():
    with pytest.raises(ValueError, match="conv.h = 600 does not fit 9 bits"):
        encode(conv=dict(h=600))
    with pytest.raises(ValueError, match="no field bogus"):
        encode(bogus=1)
    with pytest.raises(ValueError, match="is 64 bytes"):
        decode(b"\0" * 10)

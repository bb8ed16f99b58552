"""Board table (hw/boards.py) and the ``boards`` / ``build`` commands' user-facing behaviour."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from squeezeforge.hw.boards import (BOARDS, BoardError, Ultra96V2Platform, board_fit,
                                    board_preset, boards_table, get_board, resource_floor)
from squeezeforge.hw.config import DEVICES, PRESETS


def _main(argv):
    """The CLI with this module's commands registered (as host/cli.py will do)."""
    from squeezeforge.host import cli
    from squeezeforge.host.boards_cli import add_parsers
    ap = cli.build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    if "boards" not in sub.choices:
        add_parsers(sub)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except cli._user_error_types() as e:
        print(f"squeezeforge: error: {e}", file=__import__("sys").stderr)
        return cli.EXIT_USER_ERROR


BRIEF = {   # board -> part as the vendors give it
    "pynq-z2": "xc7z020clg400-1", "zybo-z7-20": "xc7z020clg400-1",
    "arty-z7-20": "xc7z020clg400-1", "microzed-7020": "xc7z020clg400-1",
    "zedboard": "xc7z020clg484-1", "zc706": "xc7z045ffg900-2",
    "zcu102": "xczu9eg-ffvb1156-2-e", "ultra96-v2": "xczu3eg-sbva484-1-e",
}


def test_every_listed_board_has_its_part_and_fits():
    for name, part in BRIEF.items():
        b = get_board(name)
        assert b.part == part, name
        ok, reason = board_fit(b)
        assert ok, f"{name}: {reason}"


def test_amaranth_boards_platforms_are_used_where_they_exist():
    from amaranth_boards.arty_z7 import ArtyZ720Platform
    from amaranth_boards.microzed_z020 import MicroZedZ020Platform
    assert BOARDS["arty-z7-20"].platform_class is ArtyZ720Platform
    assert BOARDS["microzed-7020"].platform_class is MicroZedZ020Platform


def test_new_platforms_are_xilinx_platforms_with_resources():
    from amaranth.vendor import XilinxPlatform
    for name in ("pynq-z2", "zybo-z7-20", "zedboard", "zc706", "zcu102", "ultra96-v2"):
        plat = BOARDS[name].platform()
        assert isinstance(plat, XilinxPlatform)
        for attr in ("device", "package", "speed", "resources", "connectors"):
            assert hasattr(plat, attr)
    # PL oscillators the boards have (vendor manuals)
    assert BOARDS["pynq-z2"].pl_clock == ("clk125", 125e6)
    assert BOARDS["zedboard"].pl_clock == ("clk100", 100e6)
    assert BOARDS["zc706"].pl_clock == ("clk200", 200e6)
    assert BOARDS["ultra96-v2"].pl_clock is None
    assert Ultra96V2Platform.resources == []
    assert BOARDS["pynq-z2"].platform().lookup("led", 0).ios[0].names == ["R14"]


@pytest.mark.parametrize("name,device,dsp,ramb36", [
    ("microzed-7010", "xc7z010", 80, 60), ("cora-z7-10", "xc7z010", 80, 60),
    ("cora-z7-07s", "xc7z007s", 66, 50), ("zturn-lite-7007s", "xc7z007s", 66, 50),
])
def test_small_parts_are_refused_with_numbers(name, device, dsp, ramb36):
    b = get_board(name)
    assert b.device == device
    ok, reason = board_fit(b)
    assert not ok
    # z7020 preset: 16x16 MACs packed two per DSP = 128, plus 2 per output lane for the
    # requantizers = 32, plus the sequencer's 20; buffers 64 KB + 64 KB + 2 x 512 words x
    # 256 B = 384 KB = 96 RAMB36
    assert f"180 DSP slices > {dsp}" in reason and f"96 RAMB36 > {ramb36}" in reason


def test_small_board_build_refused_on_the_cli(tmp_path, capsys):
    rc = _main(["build", "--board", "microzed-7010", "--out", str(tmp_path / "b"),
                "--stub-engine", "--no-synth", "--no-vivado"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("squeezeforge: error: microzed-7010: xc7z010 is too small")
    assert "> 80" in err[0] and "> 60" in err[0]
    assert not (tmp_path / "b").exists()


def test_unknown_board():
    with pytest.raises(BoardError, match="unknown board 'pynq-z1'; boards: pynq-z2, "):
        get_board("pynq-z1")


def test_ultra96_preset_fits_and_compiles():
    from squeezeforge.host.schedule import compile_program
    from squeezeforge.quant.model import synthetic_model
    from squeezeforge.quant.network import squeezenet
    from squeezeforge.quant.quantize import quantize
    cfg = board_preset("ultra96-v2")
    assert cfg.device == "xczu3eg" and cfg.name == "zu3eg"
    floor = resource_floor(cfg)
    dev = DEVICES["xczu3eg"]
    assert (dev.dsp, dev.ramb36) == (360, 216)
    assert floor["dsp"] <= 360 and floor["ramb36"] <= 216
    # more MACs than z7020's preset, derived from it
    assert cfg.macs > PRESETS["z7020"].macs and cfg.weight_mode == PRESETS["z7020"].weight_mode
    x = np.random.default_rng(1).normal(0, 50, (3, 227, 227)).astype(np.float32)
    qm = quantize(synthetic_model(squeezenet("v1.1")), [x])
    prog = compile_program(qm, cfg)
    assert prog.commands[-1].op.name == "END"


def test_boards_command_json(capsys):
    assert _main(["boards", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {r["board"]: r for r in rows}
    assert set(BRIEF) <= set(by)
    for name, part in BRIEF.items():
        r = by[name]
        assert r["part"] == part and r["fits"] is True
        assert r["weight_mode"] in ("resident", "streamed") and r["ddr_width"] in (16, 32, 64)
    assert by["zcu102"]["weight_mode"] == "resident" and by["pynq-z2"]["weight_mode"] == "streamed"
    assert by["pynq-z2"]["ddr_width"] == 16 and by["zcu102"]["ddr_width"] == 64
    assert by["microzed-7010"]["fits"] is False and "80" in by["microzed-7010"]["reason"]
    assert boards_table() == rows


def test_boards_command_text(capsys):
    assert _main(["boards"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["board", "part", "DDR"]
    line = next(l for l in out if l.startswith("cora-z7-07s"))
    assert "NO: xc7z007s is too small" in line


def test_build_command_stub_tree(tmp_path, capsys):
    rc = _main(["build", "--board", "pynq-z2", "--out", str(tmp_path), "--stub-engine",
                "--no-synth", "--no-vivado", "--clock-mhz", "125", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["vivado"] == "skipped (--no-vivado)"
    assert {"rtl/squeezeforge_top.v", "squeezeforge.tcl", "fit.json", "fit.txt"} <= set(res["files"])
    assert res["fit"]["clock_mhz"] == 125.0 and res["fit"]["estimate"] is None

"""Zynq boards: the part, the PL resources we use, the DDR, the engine preset, and whether it fits.

Board data comes from Amaranth platform classes (``XilinxPlatform`` subclasses: ``device``,
``package``, ``speed``, ``default_clk``, ``resources``, ``connectors``). amaranth-boards has the
Arty Z7-20, the MicroZed 7020/7010, the Cora Z7 and the Z-turn Lite; the others (PYNQ-Z2,
Zybo Z7-20, ZedBoard, ZC706, ZCU102, Ultra96-V2) are defined below the same way, with a few
well-known resources each (pins from the vendors' master constraint files). The PL clock of
every build comes from the processing system (``hw/zynq.py``), so a board's oscillator pin is
listed but not used.

:data:`BOARDS` maps the CLI name to a :class:`Board`; :func:`board_fit` decides, without
synthesis, whether the board's engine preset fits its device: the MAC array's DSP slices (one
source of truth: :attr:`squeezeforge.hw.mac_array.MacArray.multipliers`) plus the requantizers'
(two DSP48 per output lane: a 32 x 16-bit product is wider than one 25 x 18 multiplier), and the
on-chip buffers in RAMB36 (4 KB of data each). Those are lower bounds; ``squeezeforge build``
adds a Yosys estimate of the whole engine. A board whose part cannot hold even the smallest
preset (XC7Z010, XC7Z007S) is listed and refused with the numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.build import Attrs, Clock, Connector, DiffPairs, Pins, Resource
from amaranth.vendor import XilinxPlatform
from amaranth_boards.resources import ButtonResources, LEDResources, RGBLEDResource, SwitchResources

from .config import DEVICES, PRESETS, ConfigError, EngineConfig

__all__ = ["Board", "BOARDS", "BoardError", "EXTRA_PRESETS", "board_preset", "board_fit",
           "resource_floor", "get_board", "boards_table", "find_preset",
           "PynqZ2Platform", "ZyboZ720Platform", "ZedBoardPlatform", "ZC706Platform",
           "ZCU102Platform", "Ultra96V2Platform"]


class BoardError(ConfigError):
    """An unknown board, or a board whose part cannot hold the engine (one line)."""


# ---------------------------------------------------------------------------------------------
# Platforms amaranth-boards does not have (written the way amaranth-boards writes its own)
# ---------------------------------------------------------------------------------------------
class PynqZ2Platform(XilinxPlatform):
    """TUL PYNQ-Z2 (pins from the board's master XDC; same PL pinout as the Arty Z7-20)."""
    device      = "xc7z020"
    package     = "clg400"
    speed       = "1"
    default_clk = "clk125"
    resources   = [
        Resource("clk125", 0, Pins("H16", dir="i"), Clock(125e6), Attrs(IOSTANDARD="LVCMOS33")),
        *LEDResources(pins="R14 P14 N16 M14", attrs=Attrs(IOSTANDARD="LVCMOS33")),
        RGBLEDResource(0, r="N15", g="G17", b="L15", attrs=Attrs(IOSTANDARD="LVCMOS33")),  # LD4
        RGBLEDResource(1, r="M15", g="L14", b="G14", attrs=Attrs(IOSTANDARD="LVCMOS33")),  # LD5
        *ButtonResources(pins="D19 D20 L20 L19", attrs=Attrs(IOSTANDARD="LVCMOS33")),
        *SwitchResources(pins="M20 M19", attrs=Attrs(IOSTANDARD="LVCMOS33")),
    ]
    connectors  = [
        Connector("pmod", 0, "Y18 Y19 Y16 Y17 - - U18 U19 W18 W19 - -"),  # JA
        Connector("pmod", 1, "W14 Y14 T11 T10 - - V16 W16 V12 W13 - -"),  # JB
    ]


class ZyboZ720Platform(XilinxPlatform):
    """Digilent Zybo Z7-20 (pins from Digilent's Zybo-Z7 master XDC)."""
    device      = "xc7z020"
    package     = "clg400"
    speed       = "1"
    default_clk = "clk125"
    resources   = [
        Resource("clk125", 0, Pins("K17", dir="i"), Clock(125e6), Attrs(IOSTANDARD="LVCMOS33")),
        *LEDResources(pins="M14 M15 G14 D18", attrs=Attrs(IOSTANDARD="LVCMOS33")),
        RGBLEDResource(0, r="V16", g="F17", b="M17", attrs=Attrs(IOSTANDARD="LVCMOS33")),  # LD6
        *ButtonResources(pins="K18 P16 K19 Y16", attrs=Attrs(IOSTANDARD="LVCMOS33")),
        *SwitchResources(pins="G15 P15 W13 T16", attrs=Attrs(IOSTANDARD="LVCMOS33")),
    ]
    connectors  = [
        Connector("pmod", 0, "N15 L14 K16 K14 - - N16 L15 J16 J14 - -"),  # JA (XADC)
        Connector("pmod", 1, "V8 W8 U7 V7 - - Y7 Y6 V6 W6 - -"),          # JB
    ]


class ZedBoardPlatform(XilinxPlatform):
    """Avnet/Digilent ZedBoard (pins from the ZedBoard master XDC; bank 34 buttons at the
    default 1.8 V VADJ)."""
    device      = "xc7z020"
    package     = "clg484"
    speed       = "1"
    default_clk = "clk100"
    resources   = [
        Resource("clk100", 0, Pins("Y9", dir="i"), Clock(100e6), Attrs(IOSTANDARD="LVCMOS33")),
        *LEDResources(pins="T22 T21 U22 U21 V22 W22 U19 U14", attrs=Attrs(IOSTANDARD="LVCMOS33")),
        # BTNC BTND BTNL BTNR BTNU
        *ButtonResources(pins="P16 R16 N15 R18 T18", attrs=Attrs(IOSTANDARD="LVCMOS18")),
    ]
    connectors  = [
        Connector("pmod", 0, "Y11 AA11 Y10 AA9 - - AB11 AB10 AB9 AA8 - -"),  # JA
    ]


class ZC706Platform(XilinxPlatform):
    """Xilinx ZC706 (UG954): 200 MHz LVDS system clock, GPIO LEDs and push buttons."""
    device      = "xc7z045"
    package     = "ffg900"
    speed       = "2"
    default_clk = "clk200"
    resources   = [
        Resource("clk200", 0, DiffPairs("H9", "G9", dir="i"), Clock(200e6),
                 Attrs(IOSTANDARD="LVDS")),
        # GPIO_LED_LEFT, GPIO_LED_RIGHT (bank 12, 2.5 V)
        *LEDResources(pins="Y21 W21", attrs=Attrs(IOSTANDARD="LVCMOS25")),
        # GPIO_LED_CENTER, GPIO_LED_0 (1.5 V banks)
        *LEDResources(pins={2: "G2", 3: "A17"}, attrs=Attrs(IOSTANDARD="LVCMOS15")),
        # GPIO_SW_LEFT, GPIO_SW_RIGHT (2.5 V), GPIO_SW_CENTER (1.5 V)
        *ButtonResources(pins="AK25 R27", attrs=Attrs(IOSTANDARD="LVCMOS25")),
        *ButtonResources(pins={2: "K15"}, attrs=Attrs(IOSTANDARD="LVCMOS15")),
    ]
    connectors  = []


class ZCU102Platform(XilinxPlatform):
    """Xilinx ZCU102 (UG1182): 125 MHz LVDS clock, eight GPIO LEDs, five push buttons."""
    device      = "xczu9eg"
    package     = "ffvb1156"
    speed       = "2-e"
    default_clk = "clk125"
    resources   = [
        Resource("clk125", 0, DiffPairs("G21", "F21", dir="i"), Clock(125e6),
                 Attrs(IOSTANDARD="LVDS_25")),
        *LEDResources(pins="AG14 AF13 AE13 AJ14 AJ15 AH13 AH14 AL12",
                      attrs=Attrs(IOSTANDARD="LVCMOS33")),
        # GPIO_SW_N, _E, _S, _W, _C
        *ButtonResources(pins="AG15 AE14 AF15 AE15 AG13", attrs=Attrs(IOSTANDARD="LVCMOS33")),
    ]
    connectors  = []


class Ultra96V2Platform(XilinxPlatform):
    """Avnet Ultra96-V2. It has no PL oscillator, and its user LEDs and button are on PS MIO
    pins, so there is no PL resource to list; the PL clock comes from the PS."""
    device      = "xczu3eg"
    package     = "sbva484"
    speed       = "1-e"
    resources   = []
    connectors  = []


def _amaranth_board(module: str, cls: str) -> type:
    import importlib
    return getattr(importlib.import_module(f"amaranth_boards.{module}"), cls)


# ---------------------------------------------------------------------------------------------
# Engine presets defined here (the ones in hw/config.py are per device; a board-driven one)
# ---------------------------------------------------------------------------------------------
#: Presets beyond hw/config.py's (none now: zu3eg, the Ultra96-V2's, moved there so that every
#: command's --config knows it).
EXTRA_PRESETS: dict = {}


def find_preset(name: str) -> EngineConfig:
    if name in PRESETS:
        return PRESETS[name]
    if name in EXTRA_PRESETS:
        return EXTRA_PRESETS[name]
    raise BoardError(f"unknown preset {name!r}; presets: {', '.join([*PRESETS, *EXTRA_PRESETS])}")


# ---------------------------------------------------------------------------------------------
# Boards
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Board:
    """One board: its platform class and what the build and the fit report need.

    ``ddr_width`` (bits) and ``ddr_mts`` (mega-transfers/s) are the PS DDR interface as the
    board's PS preset configures it; ``vivado_board``: a glob for Vivado's board part (board
    files supply the PS preset: DDR timing, MIO); ``family``: ``zynq7`` or ``zynqmp``.
    """
    name: str
    title: str
    platform_class: type
    ddr_type: str
    ddr_width: int
    ddr_mts: int
    ddr_mbytes: int
    preset: str
    vivado_board: str
    from_amaranth_boards: bool = False

    def platform(self) -> XilinxPlatform:
        return self.platform_class(toolchain="Vivado")

    @property
    def device(self) -> str:
        return self.platform_class.device

    @property
    def package(self) -> str:
        return self.platform_class.package

    @property
    def speed(self) -> str:
        return self.platform_class.speed

    @property
    def part(self) -> str:
        return self.platform()._part

    @property
    def family(self) -> str:
        return "zynqmp" if self.device.startswith("xczu") else "zynq7"

    @property
    def ddr_peak_bytes_s(self) -> float:
        return self.ddr_width / 8 * self.ddr_mts * 1e6

    @property
    def pl_clock(self) -> tuple[str, float] | None:
        """(resource name, Hz) of the board's PL oscillator, if it has one (not used: the PL
        clock comes from the PS)."""
        name = getattr(self.platform_class, "default_clk", None)
        if not name:
            return None
        plat = self.platform()
        res = plat.lookup(name, 0)
        return name, res.clock.frequency

    def leds(self) -> list[tuple[str, str]]:
        """(pin, IOSTANDARD) of the board's single-colour PL LEDs, in number order."""
        out = []
        plat = self.platform()
        for res in plat.resources.values():
            if res.name != "led":
                continue
            pins = res.ios[0]
            attrs = {k: v for io in res.ios if isinstance(io, Attrs) for k, v in io.items()}
            out.append((res.number, pins.names[0], attrs.get("IOSTANDARD", "LVCMOS33")))
        return [(p, s) for _, p, s in sorted(out)]


def _boards() -> dict[str, Board]:
    b = [
        Board("pynq-z2", "TUL PYNQ-Z2", PynqZ2Platform, "DDR3", 16, 1050, 512, "z7020",
              "*:pynq-z2:*"),
        Board("zybo-z7-20", "Digilent Zybo Z7-20", ZyboZ720Platform, "DDR3L", 32, 1066, 1024,
              "z7020", "*:zybo-z7-20:*"),
        Board("arty-z7-20", "Digilent Arty Z7-20", _amaranth_board("arty_z7", "ArtyZ720Platform"),
              "DDR3", 16, 1050, 512, "z7020", "*:arty-z7-20:*", True),
        Board("microzed-7020", "Avnet MicroZed 7020",
              _amaranth_board("microzed_z020", "MicroZedZ020Platform"), "DDR3", 32, 1066, 1024,
              "z7020", "*:microzed_7020:*", True),
        Board("zedboard", "Avnet ZedBoard", ZedBoardPlatform, "DDR3", 32, 1066, 512, "z7020",
              "*:zedboard:*"),
        Board("zc706", "Xilinx ZC706", ZC706Platform, "DDR3", 32, 1066, 1024, "z7045",
              "*:zc706:*"),
        Board("zcu102", "Xilinx ZCU102", ZCU102Platform, "DDR4", 64, 2133, 4096, "zu9eg",
              "*:zcu102:*"),
        Board("ultra96-v2", "Avnet Ultra96-V2", Ultra96V2Platform, "LPDDR4", 32, 2133, 2048,
              "zu3eg", "*:ultra96v2:*"),
        # smaller parts, listed so that `boards` says why they are refused
        Board("microzed-7010", "Avnet MicroZed 7010",
              _amaranth_board("microzed_z010", "MicroZedZ010Platform"), "DDR3", 32, 1066, 1024,
              "z7020", "*:microzed_7010:*", True),
        Board("cora-z7-10", "Digilent Cora Z7-10", _amaranth_board("cora_z7", "CoraZ7_10Platform"),
              "DDR3L", 16, 1050, 512, "z7020", "*:cora-z7-10:*", True),
        Board("cora-z7-07s", "Digilent Cora Z7-07S",
              _amaranth_board("cora_z7", "CoraZ7_07SPlatform"), "DDR3L", 16, 1050, 512, "z7020",
              "*:cora-z7-07s:*", True),
        Board("zturn-lite-7007s", "MYIR Z-turn Lite 7007S",
              _amaranth_board("zturn_lite_z007s", "ZTurnLiteZ007SPlatform"), "DDR3", 16, 1066,
              512, "z7020", "", True),
    ]
    return {x.name: x for x in b}


BOARDS = _boards()


def get_board(name: str) -> Board:
    if name not in BOARDS:
        raise BoardError(f"unknown board {name!r}; boards: {', '.join(BOARDS)}")
    return BOARDS[name]


def board_preset(board: Board | str) -> EngineConfig:
    board = get_board(board) if isinstance(board, str) else board
    return find_preset(board.preset)


#: RAMB36 blocks hold 4 KB of data (36 Kb with parity; the engine's byte-wide memories do not
#: use the parity bits).
RAMB36_BYTES = 4096
#: DSP48 slices per output lane of the requantizer (int32 x uint16 needs two 25 x 18 multipliers).
REQUANT_DSP_PER_LANE = 2


def resource_floor(cfg: EngineConfig) -> dict:
    """DSP slices and RAMB36 blocks the engine needs at least (MAC array, requantizers,
    activation / squeeze / weight buffers); no synthesis."""
    from .mac_array import MacArray
    array = MacArray(cfg.in_lanes, cfg.out_lanes, cfg.dsp_packing)
    array._MustUse__silence = True      # built for its numbers only, never elaborated
    dsp = array.multipliers
    dsp += REQUANT_DSP_PER_LANE * cfg.out_lanes
    dsp += cfg.SEQUENCER_DSP         # the sequencer's size products and the GAP's requantizer
    buffers = {
        "activation": cfg.act_buffer_bytes,
        "squeeze": cfg.squeeze_buffer_bytes,
        "weights": cfg.weight_buffers * cfg.weight_words * cfg.weight_word_bytes,
    }
    ramb36 = sum(-(-b // RAMB36_BYTES) for b in buffers.values())
    return {"dsp": dsp, "ramb36": ramb36, "buffer_bytes": buffers}


def board_fit(board: Board | str, cfg: EngineConfig | None = None) -> tuple[bool, str]:
    """(fits, reason): whether ``cfg`` (default: the board's preset) fits the board's part by
    :func:`resource_floor`; the reason names the numbers that do not fit."""
    board = get_board(board) if isinstance(board, str) else board
    cfg = cfg or board_preset(board)
    dev = DEVICES.get(board.device)
    if dev is None:
        return False, f"{board.device} is not a device squeezeforge knows ({', '.join(DEVICES)})"
    need = resource_floor(cfg)
    over = []
    if need["dsp"] > dev.dsp:
        over.append(f"{need['dsp']} DSP slices > {dev.dsp}")
    if need["ramb36"] > dev.ramb36:
        over.append(f"{need['ramb36']} RAMB36 > {dev.ramb36}")
    if over:
        return False, (f"{board.device} is too small for preset {cfg.name} "
                       f"({cfg.in_lanes}x{cfg.out_lanes} MACs, {cfg.weight_mode} weights): needs "
                       + " and ".join(over))
    return True, (f"{need['dsp']}/{dev.dsp} DSP, {need['ramb36']}/{dev.ramb36} RAMB36 "
                  f"(MAC array, requantizers, buffers; lower bound)")


def boards_table() -> list[dict]:
    """One row per board, for ``squeezeforge boards``."""
    rows = []
    for b in BOARDS.values():
        cfg = board_preset(b)
        ok, reason = board_fit(b, cfg)
        clk = b.pl_clock
        rows.append(dict(
            board=b.name, title=b.title, part=b.part, device=b.device, package=b.package,
            speed=b.speed, family=b.family, ddr=b.ddr_type, ddr_width=b.ddr_width,
            ddr_mts=b.ddr_mts, ddr_mbytes=b.ddr_mbytes,
            ddr_peak_gbs=round(b.ddr_peak_bytes_s / 1e9, 2), preset=cfg.name,
            lanes=f"{cfg.in_lanes}x{cfg.out_lanes}", weight_mode=cfg.weight_mode, fits=ok,
            reason=reason, pl_oscillator_mhz=round(clk[1] / 1e6, 3) if clk else None,
            leds=len(b.leds()),
            platform=("amaranth_boards." if b.from_amaranth_boards else "squeezeforge.hw.boards.")
            + b.platform_class.__name__))
    return rows

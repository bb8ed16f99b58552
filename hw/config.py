"""Engine configuration: the parameters one generator takes, the presets, and the devices.

An :class:`EngineConfig` fixes the MAC array (``in_lanes`` x ``out_lanes``), the weight storage
mode and the sizes of the on-chip memories. Presets are named after the device they target;
:func:`resolve_config` accepts a preset name or a custom ``key=value`` list on top of one.
Parameters are checked at once, with messages of the form
"in_lanes must be a positive multiple of 8, not 12".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

__all__ = ["EngineConfig", "Device", "DEVICES", "PRESETS", "ConfigError", "resolve_config"]


class ConfigError(ValueError):
    """A configuration that is malformed or does not fit its device (one line)."""


@dataclass(frozen=True)
class Device:
    name: str          # "xc7z020"
    part: str          # "xc7z020clg400-1"
    family: str        # "zynq7" or "zynqmp"
    lut: int
    ff: int
    dsp: int
    ramb36: int        # one RAMB36 = two RAMB18

    @property
    def ramb18(self) -> int:
        return 2 * self.ramb36


DEVICES = {d.name: d for d in (
    Device("xc7z007s", "xc7z007sclg400-1", "zynq7", 14_400, 28_800, 66, 50),
    Device("xc7z010", "xc7z010clg400-1", "zynq7", 17_600, 35_200, 80, 60),
    Device("xc7z020", "xc7z020clg400-1", "zynq7", 53_200, 106_400, 220, 140),
    Device("xc7z045", "xc7z045ffg900-2", "zynq7", 218_600, 437_200, 900, 545),
    Device("xczu3eg", "xczu3eg-sbva484-1-e", "zynqmp", 70_560, 141_120, 360, 216),
    Device("xczu9eg", "xczu9eg-ffvb1156-2-e", "zynqmp", 274_080, 548_160, 2_520, 912),
)}


@dataclass(frozen=True)
class EngineConfig:
    """Parameters of one engine instance.

    * ``in_lanes`` (Pi): activation bytes consumed per cycle (input channels in parallel);
      a multiple of 8 so one lane group is a whole number of 64-bit DDR beats.
    * ``out_lanes`` (Po): output channels computed in parallel; Pi * Po MACs per cycle.
    * ``weight_mode``: ``"resident"`` (all weights on chip, loaded once) or ``"streamed"``
      (per-tile weights fetched from DDR into a double-buffered weight memory).
    * ``weight_words``: depth of one weight buffer, in words of Pi * Po bytes (resident: the
      whole network must fit; streamed: one tile, two such buffers).
    * ``act_buffer_bytes``: input ring buffer (rows of the layer input, all channels).
    * ``squeeze_buffer_bytes``: the on-chip buffer holding a Fire module's squeeze output.
    * ``dsp_packing``: compute two int8 products that share an activation in one DSP48
      (``a * (w1 << 17 | w2)``), halving the DSPs of the MAC array.
    """
    name: str = "custom"
    device: str = "xc7z020"
    in_lanes: int = 16
    out_lanes: int = 16
    weight_mode: str = "streamed"
    weight_words: int = 512
    act_buffer_bytes: int = 64 * 1024
    squeeze_buffer_bytes: int = 64 * 1024
    dsp_packing: bool = True
    axi_data_width: int = 64
    axi_addr_width: int = 32
    clock_mhz: float = 100.0

    def __post_init__(self):
        def pos(name, v):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, not {v!r}")
        if not isinstance(self.in_lanes, int) or self.in_lanes <= 0 or self.in_lanes % 8:
            raise ConfigError(f"in_lanes must be a positive multiple of 8, not {self.in_lanes!r}")
        pos("out_lanes", self.out_lanes)
        if self.dsp_packing and self.out_lanes % 2:
            raise ConfigError(f"out_lanes must be even with dsp_packing, not {self.out_lanes}")
        if self.weight_mode not in ("resident", "streamed"):
            raise ConfigError(f"weight_mode must be 'resident' or 'streamed', not {self.weight_mode!r}")
        for f in ("weight_words", "act_buffer_bytes", "squeeze_buffer_bytes"):
            pos(f, getattr(self, f))
        if self.axi_data_width != 64:
            raise ConfigError(f"axi_data_width must be 64 (a Zynq HP port in 64-bit mode), "
                              f"not {self.axi_data_width}")
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r}; known: {', '.join(DEVICES)}")

    # -- derived facts other code reads instead of repeating numbers ----------------------
    @property
    def macs(self) -> int:
        return self.in_lanes * self.out_lanes

    @property
    def weight_word_bytes(self) -> int:
        return self.in_lanes * self.out_lanes

    @property
    def weight_buffers(self) -> int:
        return 2 if self.weight_mode == "streamed" else 1

    @property
    def dev(self) -> Device:
        return DEVICES[self.device]

    def to_dict(self) -> dict:
        return asdict(self)

    # -- analytic resource model (Yosys gives the real figures: `squeezeforge estimate`) -------
    PARAM_WORDS = 512          # parameter memory depth (SqueezeNet v1.1 needs ~200 words at Po=16)
    PARAM_LANE_BITS = 54       # bias 32 + M 16 + shift 6
    SEQUENCER_DSP = 20         # Yosys synth_xilinx: z7020 180 = 128 + 32 + 20 (18 sequencer
                               # size products + the GAP's one-lane requantizer)

    def resources(self) -> dict:
        """First-order DSP48 / RAMB36 counts of this configuration, before synthesis.

        DSP: the MAC array (one multiplier per MAC, half with ``dsp_packing``) plus two per
        requantizer lane (a 32 x 16 product) plus ``SEQUENCER_DSP`` for the sequencer's size
        products (W*n_ic and the like; Yosys maps them to DSP48s) and the global average
        pool's one-lane requantizer: 20, measured on z7020. RAMB36: each memory at its best aspect ratio
        (32Kx1 ... 512x72): weight memory (Po*Pi/8 slices of 64 bits, as hw/engine.py builds
        it), input ring buffer and squeeze
        buffer (Pi bytes wide), parameter memory (Po lanes of 54 bits).
        """
        mults = self.macs // 2 if self.dsp_packing else self.macs
        dsp = mults + 2 * self.out_lanes + self.SEQUENCER_DSP
        pi8 = self.in_lanes * 8
        # the weight memory is one 64-bit memory per beat of a word, all buffers in each
        ramb = (self.weight_word_bytes // 8 * _bram36(64, self.weight_buffers * self.weight_words)
                + _bram36(pi8, self.act_buffer_bytes // self.in_lanes)
                + _bram36(pi8, self.squeeze_buffer_bytes // self.in_lanes)
                + _bram36(self.out_lanes * self.PARAM_LANE_BITS, self.PARAM_WORDS))
        return dict(dsp=dsp, ramb36=ramb)

    def check_fit(self) -> "EngineConfig":
        """Raise ConfigError naming every resource the configuration needs beyond its device."""
        need = self.resources()
        dev = self.dev
        over = [f"{k.upper()} {need[k]} > {getattr(dev, k)}" for k in ("dsp", "ramb36")
                if need[k] > getattr(dev, k)]
        if over:
            raise ConfigError(f"configuration {self.name} does not fit {dev.name}: "
                              + ", ".join(over))
        return self

    def with_(self, **kw) -> "EngineConfig":
        return replace(self, **kw)


_BRAM36_SHAPES = ((1, 32768), (2, 16384), (4, 8192), (9, 4096), (18, 2048), (36, 1024), (72, 512))


def _bram36(width: int, depth: int) -> int:
    """RAMB36 blocks for a width x depth memory at the best aspect ratio."""
    return min(-(-width // w) * -(-depth // d) for w, d in _BRAM36_SHAPES)


PRESETS = {c.name: c for c in (
    # XC7Z020: 220 DSP48E1, 140 RAMB36 (630 KB) < 1.2 MB of weights -> streamed weights.
    EngineConfig("z7020", "xc7z020", 16, 16, "streamed", weight_words=512),
    # XC7Z045: 900 DSP, 545 RAMB36 (2.4 MB): all weights resident.
    EngineConfig("z7045", "xc7z045", 32, 32, "resident", weight_words=1536,
                 squeeze_buffer_bytes=128 * 1024),
    # XCZU9EG (ZCU102): 2,520 DSP, 912 RAMB36 (4 MB): all weights resident.
    EngineConfig("zu9eg", "xczu9eg", 32, 64, "resident", weight_words=768,
                 squeeze_buffer_bytes=128 * 1024),
    # XCZU3EG (Ultra96-V2): 360 DSP48E2, 216 RAMB36. z7020's streamed-weight engine with twice
    # the input lanes: 32 x 16 MACs = 256 DSP (packed) + 32 for the requantizers + 20
    # (SEQUENCER_DSP) = 308, as Yosys counts; two 128 KB weight tiles (256 words of 512 bytes).
    # (16 x 32 is 9 % faster by the cycle model and 340 DSP by the resource model, but not
    # synthesized yet.)
    EngineConfig("zu3eg", "xczu3eg", 32, 16, "streamed", weight_words=256),
)}


def resolve_config(spec: str, **overrides) -> EngineConfig:
    """A preset name, optionally followed by ``:key=value,key=value`` overrides."""
    name, _, rest = spec.partition(":")
    if name not in PRESETS:
        raise ConfigError(f"unknown configuration {name!r}; presets: {', '.join(PRESETS)}")
    kw = dict(overrides)
    types = {f.name: f.type for f in fields(EngineConfig)}
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq or key not in types:
            raise ConfigError(f"bad configuration override {item!r} (use key=value with keys "
                              f"{', '.join(types)})")
        base = getattr(PRESETS[name], key)
        try:
            kw[key] = (val.lower() in ("1", "true", "yes")) if isinstance(base, bool) else type(base)(val)
        except ValueError:
            raise ConfigError(f"bad value for {key}: {val!r}") from None
    cfg = replace(PRESETS[name], **kw)
    if kw:
        cfg = replace(cfg, name=f"{name}+custom")
    return cfg

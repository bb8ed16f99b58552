"""Zynq integration: the PL top level that joins the engine to the processing system.

:class:`ZynqTop` instantiates the processing system and the engine (``squeezeforge_engine``,
generated as a Verilog module of its own) and wires them:

* PL clock and reset: ``FCLK_CLK0`` / ``FCLK_RESET0_N`` (Zynq-7000) or ``pl_clk0`` /
  ``pl_resetn0`` (Zynq UltraScale+). On Zynq-7000 the PS's own FCLK buffer is switched off
  (``PCW_FCLK_CLK0_BUF FALSE``) and the clock goes through a ``BUFG`` here; on UltraScale+ the PS
  IP always drives ``pl_clk0`` through a ``BUFG_PS``, so a second global buffer would only add
  delay and none is inserted. The PS reset (active low, asynchronous to the PL clock) goes
  through a two-flip-flop reset synchroniser (asserted at once, released on a clock edge) and becomes the engine's synchronous active-high ``rst``. The same
  buffered clock drives the PS ports' ``ACLK`` inputs.
* Engine AXI4 master (``m_axi_*``, 64-bit) to ``S_AXI_HP0`` (Zynq-7000: AXI3, 6-bit IDs, 4-bit
  burst length; :class:`HpAdapter` adds ``WID`` from a FIFO of write IDs in AW order) or
  ``S_AXI_HP0_FPD`` (UltraScale+: AXI4, data width set to 64). The engine's bursts are at most
  16 beats (its DMAs' ``max_burst``), which the AXI3 length field holds.
* Engine AXI4-Lite slave (``s_axi_*``, 32-bit, 12-bit address) behind ``M_AXI_GP0`` (Zynq-7000:
  AXI3 with 12-bit IDs) or ``M_AXI_HPM0_LPD`` (UltraScale+: AXI4, 16-bit IDs, width set to 32):
  :class:`AxiToLite` accepts one transaction at a time, turns every beat into one AXI4-Lite
  access (single-beat transactions are the normal case; INCR and FIXED bursts work beat by beat)
  and returns the transaction's ID on ``BID`` / ``RID`` with ``RLAST`` on the final beat.
* ``irq`` to ``IRQ_F2P[0]`` / ``pl_ps_irq0[0]``; optionally LED 0 shows ``irq`` and LED 1 a
  heartbeat of the PL clock (about 1.5 Hz), so a loaded bitstream with a running clock is visible.

The processing system is the block design ``squeezeforge_ps`` that the build's TCL creates
(:func:`ps_block_design_tcl`): a ``processing_system7`` or ``zynq_ultra_ps_e`` IP with the
board's preset (DDR, MIO) and our settings, its ports made external under the names used
here. It is instantiated as the module ``squeezeforge_ps_wrapper`` (instance ``ps``). Going
through the IP rather than the bare ``PS7`` / ``PS8`` primitive is what carries the PS
configuration (DDR timing, clock dividers, HP0 width) into ``ps7_init`` / ``psu_init`` and the
exported ``.xsa`` / ``.hwh``; the port names are the IP's. On Zynq-7000 the HP0 width is a
register the boot code programs from that configuration, so the generator checks at
construction time that the engine's data width equals the configured HP0 width
(:class:`ZynqError` otherwise): a 64-bit master on a 32-bit HP0 cannot be built.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth import *
from amaranth.hdl import IOPort
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from .axi import AxiDma, AxiResp
from .config import ConfigError
from .regs import AxiLiteRegs

__all__ = ["ZynqError", "PsConfig", "ENGINE_PORTS", "AxiToLite", "HpAdapter", "ZynqTop",
           "StubEngine", "check_engine", "ps_ports", "ps_blackbox_verilog", "lint_models",
           "ps_block_design_tcl", "PS_MODULE", "ENGINE_MODULE", "REG_BASE"]

PS_MODULE = "squeezeforge_ps_wrapper"
ENGINE_MODULE = "squeezeforge_engine"
#: where the engine's registers appear in the ARM's address space (start of the GP0 /
#: HPM0_LPD window; the 4 KB register file is decoded from the low 12 address bits)
REG_BASE = {"zynq7": 0x4000_0000, "zynqmp": 0x8000_0000}


class ZynqError(ConfigError):
    """A PS configuration that cannot work with the engine (one line)."""


# ---------------------------------------------------------------------------------------------
# The engine's port contract
# ---------------------------------------------------------------------------------------------
def _engine_ports() -> dict[str, tuple[str, int]]:
    """name -> ("out"/"in" from the engine's side, width)."""
    p = {}
    for ch in ("aw", "ar"):
        p |= {f"m_axi_{ch}id": ("out", 1), f"m_axi_{ch}addr": ("out", 32),
              f"m_axi_{ch}len": ("out", 8), f"m_axi_{ch}size": ("out", 3),
              f"m_axi_{ch}burst": ("out", 2), f"m_axi_{ch}cache": ("out", 4),
              f"m_axi_{ch}prot": ("out", 3), f"m_axi_{ch}valid": ("out", 1),
              f"m_axi_{ch}ready": ("in", 1)}
    p |= {"m_axi_wdata": ("out", 64), "m_axi_wstrb": ("out", 8), "m_axi_wlast": ("out", 1),
          "m_axi_wvalid": ("out", 1), "m_axi_wready": ("in", 1),
          "m_axi_bid": ("in", 1), "m_axi_bresp": ("in", 2), "m_axi_bvalid": ("in", 1),
          "m_axi_bready": ("out", 1),
          "m_axi_rid": ("in", 1), "m_axi_rdata": ("in", 64), "m_axi_rresp": ("in", 2),
          "m_axi_rlast": ("in", 1), "m_axi_rvalid": ("in", 1), "m_axi_rready": ("out", 1)}
    p |= {"s_axi_awaddr": ("in", 12), "s_axi_awprot": ("in", 3), "s_axi_awvalid": ("in", 1),
          "s_axi_awready": ("out", 1), "s_axi_wdata": ("in", 32), "s_axi_wstrb": ("in", 4),
          "s_axi_wvalid": ("in", 1), "s_axi_wready": ("out", 1), "s_axi_bresp": ("out", 2),
          "s_axi_bvalid": ("out", 1), "s_axi_bready": ("in", 1),
          "s_axi_araddr": ("in", 12), "s_axi_arprot": ("in", 3), "s_axi_arvalid": ("in", 1),
          "s_axi_arready": ("out", 1), "s_axi_rdata": ("out", 32), "s_axi_rresp": ("out", 2),
          "s_axi_rvalid": ("out", 1), "s_axi_rready": ("in", 1),
          "irq": ("out", 1)}
    return p


#: The engine's ports besides ``clk`` and ``rst`` (the design contract).
ENGINE_PORTS = _engine_ports()


def check_engine(engine, *, hp_data_width: int | None = None) -> dict[str, tuple[str, int]]:
    """Check that ``engine`` (a wiring.Component) has exactly :data:`ENGINE_PORTS`; with
    ``hp_data_width``, that its AXI master's data width equals the HP port's. Returns the
    engine's ports as {name: (direction, width)}."""
    sig = getattr(engine, "signature", None)
    if not isinstance(sig, wiring.Signature):
        raise ZynqError(f"the engine must be a wiring.Component, not {engine!r}")
    got = {}
    for name, member in sig.members.items():
        if not member.is_port:
            raise ZynqError(f"engine port {name!r} is an interface; the engine's ports must be "
                            f"flat signals named as in the contract")
        got[name] = ("out" if member.flow == Out else "in", Shape.cast(member.shape).width)
    wd = got.get("m_axi_wdata", (None, None))[1]
    if hp_data_width is not None and wd is not None and wd != hp_data_width:
        raise ZynqError(f"the engine's AXI master is {wd}-bit (m_axi_wdata) but S_AXI_HP0 is "
                        f"configured for {hp_data_width} bits; the PS would drop half of every "
                        f"beat: configure HP0 for {wd} bits")
    missing = [n for n in ENGINE_PORTS if n not in got]
    extra = [n for n in got if n not in ENGINE_PORTS]
    wrong = [f"{n} is {got[n][0]} {got[n][1]}, expected {d} {w}"
             for n, (d, w) in ENGINE_PORTS.items() if n in got and got[n] != (d, w)]
    if missing or extra or wrong:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected {', '.join(extra)}"] if extra else []) + wrong
        raise ZynqError("the engine's ports differ from the contract: " + "; ".join(parts))
    return got


# ---------------------------------------------------------------------------------------------
# PS configuration and port names
# ---------------------------------------------------------------------------------------------
_FCLK_MAX_MHZ = {"zynq7": 250.0, "zynqmp": 333.33}


@dataclass(frozen=True)
class PsConfig:
    """What the PL needs from the processing system.

    * ``family``: ``"zynq7"`` (PS7: S_AXI_HP0, M_AXI_GP0, FCLK_CLK0) or ``"zynqmp"`` (PS8:
      S_AXI_HP0_FPD, M_AXI_HPM0_LPD, pl_clk0)
    * ``fclk_mhz``: the PL clock the PS generates (Vivado picks the nearest frequency its
      dividers reach; the build log prints the actual one)
    * ``hp_data_width``: HP0 data width in bits (Zynq-7000: 32 or 64; UltraScale+: 32, 64, 128)
    * ``gp_data_width``: width of the master port carrying register accesses (32)
    """
    family: str = "zynq7"
    fclk_mhz: float = 100.0
    hp_data_width: int = 64
    gp_data_width: int = 32

    def __post_init__(self):
        if self.family not in _FCLK_MAX_MHZ:
            raise ZynqError(f"PS family must be 'zynq7' or 'zynqmp', not {self.family!r}")
        top = _FCLK_MAX_MHZ[self.family]
        if not isinstance(self.fclk_mhz, (int, float)) or not 0 < self.fclk_mhz <= top:
            raise ZynqError(f"PL clock must be above 0 and at most {top:g} MHz on "
                            f"{self.family}, not {self.fclk_mhz!r}")
        widths = (32, 64) if self.family == "zynq7" else (32, 64, 128)
        if self.hp_data_width not in widths:
            raise ZynqError(f"HP0 data width must be one of {widths} on {self.family}, "
                            f"not {self.hp_data_width!r}")
        if self.gp_data_width != 32:
            raise ZynqError(f"the register port is 32-bit AXI4-Lite; the GP master port must "
                            f"be configured for 32 bits, not {self.gp_data_width!r}")

    @property
    def axi3(self) -> bool:
        return self.family == "zynq7"

    @property
    def reg_base(self) -> int:
        return REG_BASE[self.family]

    @property
    def hp(self) -> str:          # BD port (interface) names
        return "S_AXI_HP0" if self.axi3 else "S_AXI_HP0_FPD"

    @property
    def gp(self) -> str:
        return "M_AXI_GP0" if self.axi3 else "M_AXI_HPM0_LPD"

    @property
    def clk(self) -> str:
        return "FCLK_CLK0" if self.axi3 else "pl_clk0"

    @property
    def resetn(self) -> str:
        return "FCLK_RESET0_N" if self.axi3 else "pl_resetn0"

    @property
    def irq(self) -> str:
        return "IRQ_F2P" if self.axi3 else "pl_ps_irq0"

    @property
    def hp_aclk(self) -> str:
        return "S_AXI_HP0_ACLK" if self.axi3 else "saxihp0_fpd_aclk"

    @property
    def gp_aclk(self) -> str:
        return "M_AXI_GP0_ACLK" if self.axi3 else "maxihpm0_lpd_aclk"

    @property
    def hp_geometry(self) -> dict:
        return (dict(addr=32, id=6, len=4, lock=2) if self.axi3
                else dict(addr=49, id=6, len=8, lock=1))

    @property
    def gp_geometry(self) -> dict:
        return (dict(addr=32, id=12, len=4, lock=2) if self.axi3
                else dict(addr=40, id=16, len=8, lock=1))

    @property
    def bufg(self) -> bool:
        """Whether the top inserts a BUFG on the PL clock (see the module doc)."""
        return self.axi3


def _axi_signals(addr, data, idw, lenw, lockw, axi3) -> list[tuple[str, int, str]]:
    """(signal, width, "m2s"/"s2m") of a full AXI port (lower-case names as in Vivado's
    aximm interface)."""
    out = []
    for ch in ("aw", "ar"):
        out += [(f"{ch}id", idw, "m2s"), (f"{ch}addr", addr, "m2s"), (f"{ch}len", lenw, "m2s"),
                (f"{ch}size", 3, "m2s"), (f"{ch}burst", 2, "m2s"), (f"{ch}lock", lockw, "m2s"),
                (f"{ch}cache", 4, "m2s"), (f"{ch}prot", 3, "m2s"), (f"{ch}qos", 4, "m2s"),
                (f"{ch}valid", 1, "m2s"), (f"{ch}ready", 1, "s2m")]
    out += [("wdata", data, "m2s"), ("wstrb", data // 8, "m2s"), ("wlast", 1, "m2s"),
            ("wvalid", 1, "m2s"), ("wready", 1, "s2m")]
    if axi3:
        out.append(("wid", idw, "m2s"))
    out += [("bid", idw, "s2m"), ("bresp", 2, "s2m"), ("bvalid", 1, "s2m"), ("bready", 1, "m2s"),
            ("rid", idw, "s2m"), ("rdata", data, "s2m"), ("rresp", 2, "s2m"), ("rlast", 1, "s2m"),
            ("rvalid", 1, "s2m"), ("rready", 1, "m2s")]
    return out


#: Zynq-7000 DDR and fixed-I/O pins of the PS (block-design names; the IP constrains them)
_PS7_FIXED_IO = [("DDR_addr", 15), ("DDR_ba", 3), ("DDR_cas_n", 1), ("DDR_ck_n", 1),
                 ("DDR_ck_p", 1), ("DDR_cke", 1), ("DDR_cs_n", 1), ("DDR_dm", 4), ("DDR_dq", 32),
                 ("DDR_dqs_n", 4), ("DDR_dqs_p", 4), ("DDR_odt", 1), ("DDR_ras_n", 1),
                 ("DDR_reset_n", 1), ("DDR_we_n", 1), ("FIXED_IO_ddr_vrn", 1),
                 ("FIXED_IO_ddr_vrp", 1), ("FIXED_IO_mio", 54), ("FIXED_IO_ps_clk", 1),
                 ("FIXED_IO_ps_porb", 1), ("FIXED_IO_ps_srstb", 1)]


def ps_ports(ps: PsConfig) -> list[tuple[str, int, str]]:
    """Ports of ``squeezeforge_ps_wrapper``: (name, width, "input"/"output"/"inout") from the
    wrapper's side."""
    ports = [(ps.clk, 1, "output"), (ps.resetn, 1, "output"), (ps.irq, 1, "input"),
             (ps.hp_aclk, 1, "input"), (ps.gp_aclk, 1, "input")]
    g = ps.hp_geometry
    ports += [(f"{ps.hp}_{s}", w, "input" if d == "m2s" else "output")   # PS is the slave
              for s, w, d in _axi_signals(g["addr"], ps.hp_data_width, g["id"], g["len"],
                                          g["lock"], ps.axi3)]
    g = ps.gp_geometry
    ports += [(f"{ps.gp}_{s}", w, "output" if d == "m2s" else "input")   # PS is the master
              for s, w, d in _axi_signals(g["addr"], ps.gp_data_width, g["id"], g["len"],
                                          g["lock"], ps.axi3)]
    if ps.axi3:
        ports += [(n, w, "inout") for n, w in _PS7_FIXED_IO]
    return ports


def ps_blackbox_verilog(ps: PsConfig) -> str:
    """A Verilog stand-in for ``squeezeforge_ps_wrapper`` with its ports (outputs driven 0), so
    the top level can be linted without Vivado. Not part of the Vivado project."""
    decl, body = [], []
    for name, width, d in ps_ports(ps):
        rng = f"[{width - 1}:0] " if width > 1 else ""
        decl.append(f"  {d} wire {rng}{name}")
        if d == "output":
            body.append(f"  assign {name} = {width}'d0;")
    return (f"// lint stand-in for the block-design wrapper (Vivado generates the real one)\n"
            f"/* verilator lint_off UNUSEDSIGNAL */\n"
            f"module {PS_MODULE} (\n" + ",\n".join(decl) + "\n);\n" + "\n".join(body) +
            "\nendmodule\n/* verilator lint_on UNUSEDSIGNAL */\n")


def lint_models(ps: PsConfig) -> str:
    """Verilog stand-ins for what Vivado provides (the PS block-design wrapper and ``BUFG``), to
    lint the top level with Verilator."""
    return ps_blackbox_verilog(ps) + (
        "// lint stand-in for the Xilinx BUFG primitive\n"
        "module BUFG (input wire I, output wire O);\n  assign O = I;\nendmodule\n")


def ps_block_design_tcl(ps: PsConfig, *, vivado_board: str = "") -> str:
    """TCL that creates the block design ``squeezeforge_ps`` (the PS IP with the board preset
    when the board files are installed, HP0 and GP widths, the PL clock, the fabric interrupt)
    and its wrapper, with the port names :func:`ps_ports` lists. Runs inside a project."""
    f = f"{ps.fclk_mhz:g}"
    if ps.axi3:
        ip, rule, cell = "processing_system7", "processing_system7", "ps7"
        automation = ('{make_external "FIXED_IO, DDR" apply_board_preset "1" '
                      'Master "Disable" Slave "Disable"}')
        config = {
            "PCW_USE_M_AXI_GP0": 1, "PCW_M_AXI_GP0_ENABLE_STATIC_REMAP": 0,
            "PCW_USE_S_AXI_HP0": 1, "PCW_S_AXI_HP0_DATA_WIDTH": ps.hp_data_width,
            "PCW_EN_CLK0_PORT": 1, "PCW_EN_RST0_PORT": 1, "PCW_FCLK_CLK0_BUF": "FALSE",
            "PCW_FPGA0_PERIPHERAL_FREQMHZ": f,
            "PCW_USE_FABRIC_INTERRUPT": 1, "PCW_IRQ_F2P_INTR": 1,
        }
        actual = "PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ"
        manual_io = ('make_bd_intf_pins_external -name DDR [get_bd_intf_pins ps7/DDR]\n'
                     '    make_bd_intf_pins_external -name FIXED_IO [get_bd_intf_pins ps7/FIXED_IO]')
        pins = ["FCLK_CLK0", "FCLK_RESET0_N", "IRQ_F2P", "M_AXI_GP0_ACLK", "S_AXI_HP0_ACLK"]
        intfs = [("M_AXI_GP0", "M_AXI_GP0"), ("S_AXI_HP0", "S_AXI_HP0")]
    else:
        ip, rule, cell = "zynq_ultra_ps_e", "zynq_ultra_ps_e", "ps8"
        automation = '{apply_board_preset "1"}'
        config = {
            "PSU__USE__M_AXI_GP0": 0, "PSU__USE__M_AXI_GP1": 0,
            "PSU__USE__M_AXI_GP2": 1, "PSU__MAXIGP2__DATA_WIDTH": ps.gp_data_width,
            "PSU__USE__S_AXI_GP2": 1, "PSU__SAXIGP2__DATA_WIDTH": ps.hp_data_width,
            "PSU__FPGA_PL0_ENABLE": 1, "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ": f,
            "PSU__USE__IRQ0": 1,
        }
        actual = "PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ"
        manual_io = "# (UltraScale+: DDR and MIO are dedicated pins, not ports)"
        pins = ["pl_clk0", "pl_resetn0", "pl_ps_irq0", "maxihpm0_lpd_aclk", "saxihp0_fpd_aclk"]
        intfs = [("M_AXI_HPM0_LPD", "M_AXI_HPM0_LPD"), ("S_AXI_HP0_FPD", "S_AXI_HP0_FPD")]
    cfg = " \\\n    ".join(f"CONFIG.{k} {{{v}}}" for k, v in config.items())
    lines = [
        f"# ---- processing system: block design squeezeforge_ps ({ip}) ----",
        "create_bd_design squeezeforge_ps",
        f"set ps_vlnv [lindex [lsort [get_ipdefs -all xilinx.com:ip:{ip}:*]] end]",
        f"set ps [create_bd_cell -type ip -vlnv $ps_vlnv {cell}]",
        "if {$board_part ne \"\"} {",
        f"    apply_bd_automation -rule xilinx.com:bd_rule:{rule} -config {automation} $ps",
        "} else {",
        "    puts \"WARNING: no board files: the PS keeps the IP's default DDR and MIO settings\"",
        f"    {manual_io}",
        "}",
        f"# the engine's needs: HP0 {ps.hp_data_width}-bit, register port {ps.gp_data_width}-bit,"
        f" PL clock {f} MHz, one fabric interrupt",
        f"set_property -dict [list \\\n    {cfg}] $ps",
    ]
    for ext, pin in intfs:
        lines.append(f"make_bd_intf_pins_external -name {ext} [get_bd_intf_pins {cell}/{pin}]")
    for p in pins:
        lines.append(f"make_bd_pins_external -name {p} [get_bd_pins {cell}/{p}]")
    lines += [
        f"set_property CONFIG.ASSOCIATED_BUSIF {{{ps.gp}}} [get_bd_ports {ps.gp_aclk}]",
        f"set_property CONFIG.ASSOCIATED_BUSIF {{{ps.hp}}} [get_bd_ports {ps.hp_aclk}]",
        f"set fclk_actual [get_property CONFIG.{actual} $ps]",
        f"puts \"squeezeforge: PL clock requested {f} MHz, PS gives $fclk_actual MHz\"",
        "foreach p [list " + " ".join([ps.gp_aclk, ps.hp_aclk, ps.clk]) + "] {",
        "    set_property CONFIG.FREQ_HZ [expr {round($fclk_actual * 1e6)}] [get_bd_ports $p]",
        "}",
        "foreach p [list " + " ".join([ps.gp, ps.hp]) + "] {",
        "    catch {set_property CONFIG.FREQ_HZ [expr {round($fclk_actual * 1e6)}] "
        "[get_bd_intf_ports $p]}",
        "}",
        "catch {assign_bd_address}",
        "validate_bd_design",
        "save_bd_design",
        "set bd_file [get_files squeezeforge_ps.bd]",
        "generate_target all $bd_file",
        "add_files -norecurse [make_wrapper -files $bd_file -top]",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Bus adapters
# ---------------------------------------------------------------------------------------------
class AxiToLite(wiring.Component):
    """AXI3 / AXI4 slave (from a PS master port) to an AXI4-Lite master (the register block).

    One transaction per direction at a time (reads and writes are independent). A write
    transaction: AW is taken, then each W beat becomes one AXI4-Lite write (AW and W offered
    together, the beat's WREADY given when the Lite slave takes W), its response is waited for,
    and after the last beat (``len`` + 1 beats, counted; WLAST is not trusted) one B carries the
    transaction's ID and the first non-OKAY response (OKAY if none). A read: AR is taken, each
    beat is one AXI4-Lite read, forwarded with the transaction's ID, RLAST on the final beat.
    Beat addresses advance by ``1 << size`` for INCR (and WRAP, which the PS does not issue to
    device memory) and stay for FIXED. The Lite address is the low ``lite_addr_width`` bits.

    Ports: ``s_*`` (AXI, ``addr_width``, 32-bit data, ``id_width``, ``len_width`` (4: AXI3, 8:
    AXI4); ``s_wid`` exists for AXI3 and is ignored: one transaction at a time) and ``m_*``
    (AXI4-Lite, ``lite_addr_width``).
    """

    def __init__(self, *, addr_width=32, id_width=12, len_width=4, lite_addr_width=12):
        for name, v, lo, hi in (("address width", addr_width, 12, 64), ("ID width", id_width, 1, 32),
                                ("lite address width", lite_addr_width, 2, addr_width)):
            if not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{name} must be an integer from {lo} to {hi}, not {v!r}")
        if len_width not in (4, 8):
            raise ValueError(f"burst length width must be 4 (AXI3) or 8 (AXI4), not {len_width!r}")
        self._addr_width, self._id_width = addr_width, id_width
        self._len_width, self._lite_addr_width = len_width, lite_addr_width
        members = {}
        for ch in ("aw", "ar"):
            members |= {f"s_{ch}id": In(id_width), f"s_{ch}addr": In(addr_width),
                        f"s_{ch}len": In(len_width), f"s_{ch}size": In(3), f"s_{ch}burst": In(2),
                        f"s_{ch}prot": In(3), f"s_{ch}valid": In(1), f"s_{ch}ready": Out(1)}
        if len_width == 4:
            members["s_wid"] = In(id_width)
        members |= {"s_wdata": In(32), "s_wstrb": In(4), "s_wlast": In(1), "s_wvalid": In(1),
                    "s_wready": Out(1), "s_bid": Out(id_width), "s_bresp": Out(2),
                    "s_bvalid": Out(1), "s_bready": In(1), "s_rid": Out(id_width),
                    "s_rdata": Out(32), "s_rresp": Out(2), "s_rlast": Out(1), "s_rvalid": Out(1),
                    "s_rready": In(1)}
        members |= {"m_awaddr": Out(lite_addr_width), "m_awprot": Out(3), "m_awvalid": Out(1),
                    "m_awready": In(1), "m_wdata": Out(32), "m_wstrb": Out(4), "m_wvalid": Out(1),
                    "m_wready": In(1), "m_bresp": In(2), "m_bvalid": In(1), "m_bready": Out(1),
                    "m_araddr": Out(lite_addr_width), "m_arprot": Out(3), "m_arvalid": Out(1),
                    "m_arready": In(1), "m_rdata": In(32), "m_rresp": In(2), "m_rvalid": In(1),
                    "m_rready": Out(1)}
        super().__init__(members)

    addr_width = property(lambda self: self._addr_width)
    id_width = property(lambda self: self._id_width)
    len_width = property(lambda self: self._len_width)

    def _next_addr(self, addr, size, burst):
        return Mux(burst == 0, addr, addr + (Const(1, 8) << size)[:self._lite_addr_width])

    def elaborate(self, platform):
        m = Module()
        la = self._lite_addr_width

        # ---------------------------------------------------------------- writes
        w_id = Signal(self._id_width)
        w_addr = Signal(la)
        w_len = Signal(self._len_width)
        w_size = Signal(3)
        w_burst = Signal(2)
        w_prot = Signal(3)
        w_count = Signal(self._len_width)
        w_resp = Signal(2)
        aw_sent = Signal()
        w_sent = Signal()
        m.d.comb += [self.m_awaddr.eq(w_addr), self.m_awprot.eq(w_prot),
                     self.m_wdata.eq(self.s_wdata), self.m_wstrb.eq(self.s_wstrb),
                     self.s_bid.eq(w_id), self.s_bresp.eq(w_resp)]
        lite_aw = self.m_awvalid & self.m_awready
        lite_w = self.m_wvalid & self.m_wready
        with m.FSM(name="write"):
            with m.State("IDLE"):
                m.d.comb += self.s_awready.eq(1)
                with m.If(self.s_awvalid):
                    m.d.sync += [w_id.eq(self.s_awid), w_addr.eq(self.s_awaddr[:la]),
                                 w_len.eq(self.s_awlen), w_size.eq(self.s_awsize),
                                 w_burst.eq(self.s_awburst), w_prot.eq(self.s_awprot),
                                 w_count.eq(0), w_resp.eq(AxiResp.OKAY),
                                 aw_sent.eq(0), w_sent.eq(0)]
                    m.next = "BEAT"
            with m.State("BEAT"):
                m.d.comb += [self.m_awvalid.eq(~aw_sent),
                             self.m_wvalid.eq(self.s_wvalid & ~w_sent),
                             self.s_wready.eq(self.m_wready & ~w_sent)]
                with m.If(lite_aw):
                    m.d.sync += aw_sent.eq(1)
                with m.If(lite_w):
                    m.d.sync += w_sent.eq(1)
                with m.If((aw_sent | lite_aw) & (w_sent | lite_w)):
                    m.next = "LITE_B"
            with m.State("LITE_B"):
                m.d.comb += self.m_bready.eq(1)
                with m.If(self.m_bvalid):
                    with m.If(w_resp == AxiResp.OKAY):
                        m.d.sync += w_resp.eq(self.m_bresp)
                    with m.If(w_count == w_len):
                        m.next = "B"
                    with m.Else():
                        m.d.sync += [w_count.eq(w_count + 1),
                                     w_addr.eq(self._next_addr(w_addr, w_size, w_burst)),
                                     aw_sent.eq(0), w_sent.eq(0)]
                        m.next = "BEAT"
            with m.State("B"):
                m.d.comb += self.s_bvalid.eq(1)
                with m.If(self.s_bready):
                    m.next = "IDLE"

        # ---------------------------------------------------------------- reads
        r_id = Signal(self._id_width)
        r_addr = Signal(la)
        r_len = Signal(self._len_width)
        r_size = Signal(3)
        r_burst = Signal(2)
        r_prot = Signal(3)
        r_count = Signal(self._len_width)
        m.d.comb += [self.m_araddr.eq(r_addr), self.m_arprot.eq(r_prot),
                     self.s_rid.eq(r_id), self.s_rdata.eq(self.m_rdata),
                     self.s_rresp.eq(self.m_rresp), self.s_rlast.eq(r_count == r_len)]
        with m.FSM(name="read"):
            with m.State("IDLE"):
                m.d.comb += self.s_arready.eq(1)
                with m.If(self.s_arvalid):
                    m.d.sync += [r_id.eq(self.s_arid), r_addr.eq(self.s_araddr[:la]),
                                 r_len.eq(self.s_arlen), r_size.eq(self.s_arsize),
                                 r_burst.eq(self.s_arburst), r_prot.eq(self.s_arprot),
                                 r_count.eq(0)]
                    m.next = "AR"
            with m.State("AR"):
                m.d.comb += self.m_arvalid.eq(1)
                with m.If(self.m_arready):
                    m.next = "R"
            with m.State("R"):
                m.d.comb += [self.s_rvalid.eq(self.m_rvalid), self.m_rready.eq(self.s_rready)]
                with m.If(self.m_rvalid & self.s_rready):
                    with m.If(r_count == r_len):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [r_count.eq(r_count + 1),
                                     r_addr.eq(self._next_addr(r_addr, r_size, r_burst))]
                        m.next = "AR"
        return m


class HpAdapter(wiring.Component):
    """The engine's AXI4 master (``e_*``: ``ENGINE_PORTS``' ``m_axi_*`` without the prefix) to a
    PS HP slave port (``p_*``, geometry of :attr:`PsConfig.hp_geometry`).

    AXI3 (Zynq-7000): ``AWLEN``/``ARLEN`` keep their low 4 bits (the engine's bursts are at most
    16 beats), and ``WID`` comes from a FIFO of the write IDs in AW order: an AW is passed only
    when the FIFO has room (its ID is pushed on the handshake) and W beats only while it holds
    an ID (popped with the WLAST beat), so every beat carries its burst's ID. AXI4
    (UltraScale+): straight through. Addresses and IDs are zero-extended, returned IDs
    truncated; lock and QoS are 0.
    """

    def __init__(self, ps: PsConfig, *, id_fifo_depth: int = 8):
        if ps.hp_data_width != 64:
            raise ZynqError(f"the engine's AXI master is 64-bit but S_AXI_HP0 is configured for "
                            f"{ps.hp_data_width} bits; configure HP0 for 64 bits")
        self._ps = ps
        self._depth = id_fifo_depth
        g = ps.hp_geometry
        members = {}
        for name, (d, w) in ENGINE_PORTS.items():
            if name.startswith("m_axi_"):
                members["e_" + name[6:]] = Out(w) if d == "in" else In(w)
        for s, w, d in _axi_signals(g["addr"], 64, g["id"], g["len"], g["lock"], ps.axi3):
            members["p_" + s] = Out(w) if d == "m2s" else In(w)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        axi3 = self._ps.axi3
        for ch in ("aw", "ar"):
            for s in ("addr", "size", "burst", "cache", "prot", "id"):
                m.d.comb += getattr(self, f"p_{ch}{s}").eq(getattr(self, f"e_{ch}{s}"))
            m.d.comb += getattr(self, f"p_{ch}len").eq(getattr(self, f"e_{ch}len"))
        m.d.comb += [
            self.p_wdata.eq(self.e_wdata), self.p_wstrb.eq(self.e_wstrb),
            self.p_wlast.eq(self.e_wlast),
            self.e_bid.eq(self.p_bid), self.e_bresp.eq(self.p_bresp),
            self.e_bvalid.eq(self.p_bvalid), self.p_bready.eq(self.e_bready),
            self.e_rid.eq(self.p_rid), self.e_rdata.eq(self.p_rdata),
            self.e_rresp.eq(self.p_rresp), self.e_rlast.eq(self.p_rlast),
            self.e_rvalid.eq(self.p_rvalid), self.p_rready.eq(self.e_rready),
            self.p_arvalid.eq(self.e_arvalid), self.e_arready.eq(self.p_arready),
        ]
        if not axi3:
            m.d.comb += [self.p_awvalid.eq(self.e_awvalid), self.e_awready.eq(self.p_awready),
                         self.p_wvalid.eq(self.e_wvalid), self.e_wready.eq(self.p_wready)]
            return m
        m.submodules.wid = ids = fifo.SyncFIFO(width=len(self.e_awid), depth=self._depth)
        aw_accept = self.p_awvalid & self.p_awready
        w_last = self.p_wvalid & self.p_wready & self.p_wlast
        m.d.comb += [
            self.p_awvalid.eq(self.e_awvalid & ids.w_rdy),
            self.e_awready.eq(self.p_awready & ids.w_rdy),
            ids.w_en.eq(aw_accept), ids.w_data.eq(self.e_awid),
            self.p_wvalid.eq(self.e_wvalid & ids.r_rdy),
            self.e_wready.eq(self.p_wready & ids.r_rdy),
            self.p_wid.eq(ids.r_data),
            ids.r_en.eq(w_last),
        ]
        return m


# ---------------------------------------------------------------------------------------------
# The top level
# ---------------------------------------------------------------------------------------------
class ZynqTop(wiring.Component):
    """PL top level: PS block design + engine + adapters (see the module doc).

    Parameters
    ----------
    engine : wiring.Component
        The engine; only its signature is used (checked against :data:`ENGINE_PORTS` and the
        HP0 width). It is instantiated as the Verilog module ``engine_module``, generated
        separately (``squeezeforge build`` writes both files).
    ps : PsConfig
    leds : list of (pin, iostandard), optional
        Board LEDs to drive: LED 0 = ``irq``, LED 1 = heartbeat (others off). The top gets an
        ``led`` output port of that width.

    Ports: ``led`` (if any) and, on Zynq-7000, the PS's DDR and fixed-I/O pins as inout
    ``IOPort``\\ s named as in the block design (``DDR_dq``, ``FIXED_IO_mio``, ...).
    """

    def __init__(self, engine, ps: PsConfig, *, leds=(), engine_module: str = ENGINE_MODULE):
        if not isinstance(ps, PsConfig):
            raise TypeError(f"ps must be a PsConfig, not {ps!r}")
        self._ports = check_engine(engine, hp_data_width=ps.hp_data_width)
        self._ps = ps
        self._leds = list(leds)
        self._engine_module = engine_module
        self.fixed_io = {n: IOPort(w, name=n) for n, w, d in ps_ports(ps) if d == "inout"}
        super().__init__({"led": Out(len(self._leds))} if self._leds else {})

    #: flip-flops of the reset synchroniser (named ``rst_sync_<i>`` in the Verilog)
    RESET_STAGES = 2

    ps = property(lambda self: self._ps)
    leds = property(lambda self: list(self._leds))

    @property
    def heartbeat_bit(self) -> int:
        """Counter bit shown on LED 1: toggles about every 0.3 s (1.5 Hz)."""
        return max(1, int(self._ps.fclk_mhz * 1e6).bit_length() - 2)

    def elaborate(self, platform):
        m = Module()
        ps = self._ps
        m.domains.sync = ClockDomain("sync")

        # PS ports as signals
        sig = {}
        for name, width, d in ps_ports(ps):
            if d != "inout":
                sig[name] = Signal(width, name=f"ps_{name}")
        fclk = sig[ps.clk]
        clk = ClockSignal("sync")
        if ps.bufg:
            m.submodules.bufg = Instance("BUFG", i_I=fclk, o_O=clk)
        else:
            m.d.comb += clk.eq(fclk)
        # reset synchroniser: two flip-flops preset asynchronously by the PS reset, released
        # on PL clock edges (ASYNC_REG keeps them together; the XDC cuts the timing path to
        # their PRE pins)
        m.domains.ps_reset = ClockDomain("ps_reset", async_reset=True, local=True)
        m.d.comb += [ClockSignal("ps_reset").eq(clk), ResetSignal("ps_reset").eq(~sig[ps.resetn])]
        stages = [Signal(init=1, name=f"rst_sync_{i}", attrs={"ASYNC_REG": "TRUE"})
                  for i in range(self.RESET_STAGES)]
        m.d.ps_reset += [stages[0].eq(0)] + [b.eq(a) for a, b in zip(stages, stages[1:])]
        m.d.comb += ResetSignal("sync").eq(stages[-1])
        m.d.comb += [sig[ps.hp_aclk].eq(clk), sig[ps.gp_aclk].eq(clk)]

        # engine ports as signals
        eng = {n: Signal(w, name=f"eng_{n}") for n, (d, w) in self._ports.items()}
        m.submodules.engine = Instance(
            self._engine_module, i_clk=clk, i_rst=ResetSignal("sync"),
            **{("o_" if d == "out" else "i_") + n: eng[n] for n, (d, w) in self._ports.items()})

        # engine master -> HP0
        m.submodules.hp = hp = HpAdapter(ps)
        for name in hp.signature.members:
            if name.startswith("e_"):
                ours, theirs = getattr(hp, name), eng["m_axi_" + name[2:]]
                if self._ports["m_axi_" + name[2:]][0] == "out":
                    m.d.comb += ours.eq(theirs)
                else:
                    m.d.comb += theirs.eq(ours)
            else:
                ours, theirs = getattr(hp, name), sig[f"{ps.hp}_{name[2:]}"]
                if hp.signature.members[name].flow == Out:
                    m.d.comb += theirs.eq(ours)
                else:
                    m.d.comb += ours.eq(theirs)
        # (lock and QoS: HpAdapter's outputs, left at 0)

        # GP0 -> AXI4-Lite register slave
        g = ps.gp_geometry
        m.submodules.gp = gp = AxiToLite(addr_width=g["addr"], id_width=g["id"],
                                         len_width=g["len"], lite_addr_width=12)
        for name, member in gp.signature.members.items():
            ours = getattr(gp, name)
            if name.startswith("s_"):
                theirs = sig[f"{ps.gp}_{name[2:]}"]
            else:
                theirs = eng["s_axi_" + name[2:]]
            if member.flow == Out:
                m.d.comb += theirs.eq(ours)
            else:
                m.d.comb += ours.eq(theirs)

        m.d.comb += sig[ps.irq].eq(eng["irq"])

        ps_kw = {}
        for name, width, d in ps_ports(ps):
            if d == "inout":
                ps_kw["io_" + name] = self.fixed_io[name]
            else:
                ps_kw[("o_" if d == "output" else "i_") + name] = sig[name]
        m.submodules.ps = Instance(PS_MODULE, **ps_kw)

        if self._leds:
            beat = Signal(self.heartbeat_bit + 1)
            m.d.sync += beat.eq(beat + 1)
            m.d.comb += self.led[0].eq(eng["irq"])
            if len(self._leds) > 1:
                m.d.comb += self.led[1].eq(beat[-1])
        return m


class StubEngine(wiring.Component):
    """STUB, not the engine: a component with the engine's exact ports for tests and flow
    checks. It contains the real register block (ID reads 'SQZF', CMD_BASE/COUNT hold values)
    and the real AXI DMA with no requests (the master stays idle); START sets DONE at once."""

    def __init__(self):
        self._regs = AxiLiteRegs()
        self._dma = AxiDma()
        members = {n: (Out(w) if d == "out" else In(w)) for n, (d, w) in ENGINE_PORTS.items()}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.regs = regs = self._regs
        m.submodules.dma = dma = self._dma
        for name, member in self.signature.members.items():
            if name == "irq":
                continue
            sub = dma if name.startswith("m_axi_") else regs
            if member.flow == Out:
                m.d.comb += getattr(self, name).eq(getattr(sub, name))
            else:
                m.d.comb += getattr(sub, name).eq(getattr(self, name))
        m.d.comb += [regs.done_set.eq(regs.start), self.irq.eq(regs.irq),
                     regs.config.eq(0), dma.o_stream.ready.eq(1)]
        return m

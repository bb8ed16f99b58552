"""The board back end (host/board.py) runs the same host protocol as a simulation back end.

``host.runtime.execute`` runs a small program (a tiny custom network compiled by
``compile_program``) twice, each time under a ``RecordingDriver``:

1. on a fake simulation driver: a Python model of the register block that runs the functional
   engine model (``sim.funcsim``) on its DDR when START is written;
2. on :class:`BoardDriver` with its registers mapped from a sparse regular file standing in for
   ``/dev/mem`` (at the real register base), its DMA buffer a u-dma-buf stand-in (a file plus a
   sysfs folder with ``phys_addr`` and ``size``), and the engine replaced by recorded responses:
   when START is written, the register values and the DDR bytes the engine wrote in run 1 are
   placed in the files (the driver then reads them through its own mappings).

The two logs (every register read and write, every memory transfer with a digest of its bytes)
and the DDR buffers must be identical. Also: the UIO path (a socket standing in for
``/dev/uioN``), a timeout and an engine error reported with their numbers, and setup errors.
"""
from __future__ import annotations

import asyncio
import os
import socket
import struct

import numpy as np
import pytest

from squeezeforge.hw.config import EngineConfig
from squeezeforge.hw.regs import (CTRL_SOFT_RESET, CTRL_START, ID_VALUE, STATUS_DONE,
                                  STATUS_ERROR, Reg)
from squeezeforge.host.board import (BoardDriver, BoardSetupError, PhysMap, UdmaBuffer,
                                     open_board_driver)
from squeezeforge.host.runtime import Driver, EngineError, RecordingDriver, execute
from squeezeforge.host.schedule import compile_program
from squeezeforge.quant import numeric
from squeezeforge.quant.golden import run_golden
from squeezeforge.quant.model import synthetic_model
from squeezeforge.quant.network import Concat, Conv, Network, Pool
from squeezeforge.quant.quantize import quantize
from squeezeforge.sim.funcsim import FuncSim

REG_BASE = 0x4000_0000          # Zynq-7000 M_AXI_GP0
PHYS = 0x1800_0000              # where the stand-in u-dma-buf "is"
BUF_SIZE = 1 << 20
SIZE = 11

CFG = EngineConfig("tiny", "xc7z020", 8, 8, "streamed", weight_words=16,
                   act_buffer_bytes=4096, squeeze_buffer_bytes=4096)


def tiny_network() -> Network:
    """conv1 3x3 (3 -> 8), a Fire module (squeeze 4, expand 6 + 5), max-pool, conv 1x1 -> 10,
    global average pool."""
    return Network("tiny", (
        Conv("conv1", "data", "conv1", 3, 8, 3, 1, 1),
        Conv("fire2/squeeze1x1", "conv1", "fire2/squeeze1x1", 8, 4, 1),
        Conv("fire2/expand1x1", "fire2/squeeze1x1", "fire2/expand1x1", 4, 6, 1),
        Conv("fire2/expand3x3", "fire2/squeeze1x1", "fire2/expand3x3", 4, 5, 3, 1, 1),
        Concat("fire2/concat", ("fire2/expand1x1", "fire2/expand3x3"), "fire2/concat"),
        Pool("pool2", "fire2/concat", "pool2", "max", 3, 2),
        Conv("conv10", "pool2", "conv10", 11, 10, 1),
        Pool("pool10", "conv10", "pool10", "ave", is_global=True),
    ))


@pytest.fixture(scope="module")
def setup():
    net = tiny_network()
    rng = np.random.default_rng(7)
    calib = [rng.normal(0, 40, (3, SIZE, SIZE)).astype(np.float32) for _ in range(2)]
    qm = quantize(synthetic_model(net, seed=3), calib, size=SIZE)
    x = rng.normal(0, 40, (3, SIZE, SIZE)).astype(np.float32)
    x_int8 = numeric.quantize_input(x, qm.input_scale)
    program = compile_program(qm, CFG, SIZE, base_addr=PHYS)
    assert program.ddr_size <= BUF_SIZE
    return qm, program, x, x_int8


class FuncSimDriver(Driver):
    """Fake simulation back end: the register block's behaviour (regs.py) in Python and the
    functional engine model run on START."""

    def __init__(self, program, base: int, size: int):
        self.program, self.base = program, base
        self.ddr = bytearray(size)
        self.regs = {Reg.ID: ID_VALUE, Reg.STATUS: 0, Reg.CTRL: 0, Reg.CMD_BASE: 0,
                     Reg.CMD_COUNT: 0, Reg.ERROR: 0, Reg.CUR_CMD: 0}
        self.cycles = 0
        self.layer = {}

    async def write_reg(self, offset, value):
        if offset == Reg.CTRL:
            if value & CTRL_SOFT_RESET:
                self.regs[Reg.STATUS] &= ~STATUS_DONE
                self.cycles = 0
            self.regs[Reg.CTRL] = value & 4
            if value & CTRL_START:
                sim = FuncSim(CFG, self.program.param_image, None)
                stats = sim.run(self.ddr, self.regs[Reg.CMD_BASE], self.base)
                self.layer = {i: s["steps"] + 10 for i, s in enumerate(stats)}
                self.cycles = sum(self.layer.values())
                self.regs[Reg.CUR_CMD] = len(stats) - 1
                self.regs[Reg.STATUS] |= STATUS_DONE
        elif offset == Reg.STATUS:
            self.regs[Reg.STATUS] &= ~(value & STATUS_DONE)
        elif offset in (Reg.CMD_BASE, Reg.CMD_COUNT):
            self.regs[offset] = value

    async def read_reg(self, offset):
        if offset == Reg.CYCLES_LO:
            return self.cycles & 0xFFFF_FFFF
        if offset == Reg.CYCLES_HI:
            return self.cycles >> 32
        if offset >= Reg.LAYER_CYCLES:
            return self.layer.get((offset - Reg.LAYER_CYCLES) // 4, 0)
        return self.regs.get(offset, 0)

    async def write_mem(self, addr, data):
        self.ddr[addr - self.base:addr - self.base + len(data)] = data

    async def read_mem(self, addr, length):
        return bytes(self.ddr[addr - self.base:addr - self.base + length])

    async def wait_done(self, timeout_s):
        return bool(self.regs[Reg.STATUS] & STATUS_DONE)


# -- stand-ins for /dev/mem, the u-dma-buf and the engine --------------------------------------
def make_devices(tmp_path):
    mem = tmp_path / "mem"                     # sparse: the register page sits at 0x4000_0000
    with open(mem, "wb") as f:
        f.truncate(REG_BASE + 0x1000)
    dev = tmp_path / "udmabuf0"
    with open(dev, "wb") as f:
        f.truncate(BUF_SIZE)
    sysfs = tmp_path / "sys"
    (sysfs / "udmabuf0").mkdir(parents=True)
    (sysfs / "udmabuf0" / "phys_addr").write_text(f"0x{PHYS:08x}\n")
    (sysfs / "udmabuf0" / "size").write_text(f"{BUF_SIZE}\n")
    return mem, dev, sysfs


def poke(path, offset: int, data: bytes) -> None:
    """What the hardware does: change the backing file, not through the driver's mapping."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


class ReplayEngine:
    """Register window wrapper: writes go to the driver's mapping; a START makes the recorded
    engine respond (register values after the start, DDR bytes the engine wrote, an interrupt
    on ``irq_sock``). Reads are not intercepted: the driver reads its mapping."""

    def __init__(self, regs: PhysMap, mem_path, dev_path, *, after_start: dict, ddr_writes,
                 irq_sock=None):
        self.regs, self.mem_path, self.dev_path = regs, mem_path, dev_path
        self.after_start, self.ddr_writes, self.irq_sock = after_start, ddr_writes, irq_sock
        self.starts = 0

    def read32(self, off):
        return self.regs.read32(off)

    def write32(self, off, value):
        self.regs.write32(off, value)
        if off == Reg.CTRL and value & CTRL_START:
            self.starts += 1
            for reg, v in self.after_start.items():
                poke(self.mem_path, REG_BASE + reg, struct.pack("<I", v))
            for off_, chunk in self.ddr_writes:
                poke(self.dev_path, off_, chunk)
            if self.irq_sock is not None:
                self.irq_sock.send(struct.pack("<I", self.starts))

    def close(self):
        self.regs.close()


def record_sim(program, x_int8, use_irq=True):
    sim = FuncSimDriver(program, PHYS, BUF_SIZE)
    rec = RecordingDriver(sim)
    res = asyncio.run(execute(rec, program, x_int8, use_irq=use_irq))
    return rec.log, res, sim


def responses(log, program, x_int8, sim):
    """From run 1: register values read after START (each register one value), and the DDR
    bytes the engine changed (runs of bytes differing from the image the host wrote)."""
    start = next(i for i, e in enumerate(log) if e[:2] == ("wr", Reg.CTRL) and e[2] & CTRL_START)
    after = {}
    for e in log[start:]:
        if e[0] == "rd":
            assert after.setdefault(e[1], e[2]) == e[2], f"register {e[1]:#x} read two values"
    image = np.frombuffer(bytes(program.new_ddr(x_int8)), dtype=np.uint8)
    final = np.frombuffer(bytes(sim.ddr[:len(image)]), dtype=np.uint8)
    changed = np.flatnonzero(image != final)
    assert changed.size, "the engine model wrote nothing"
    runs, s = [], changed[0]
    for a, b in zip(changed, np.append(changed[1:], -1)):
        if b != a + 1:
            runs.append((int(s), final[s:a + 1].tobytes()))
            s = b
    pre = {e[1]: e[2] for e in log[:start] if e[0] == "rd"}
    return pre, after, runs


def board_run(tmp_path, program, x_int8, pre, after, runs, *, uio=None, irq_sock=None,
              timeout_s=5.0):
    mem, dev, sysfs = make_devices(tmp_path)
    for reg, v in pre.items():                                  # e.g. the ID register
        poke(mem, REG_BASE + reg, struct.pack("<I", v))
    regs = ReplayEngine(PhysMap(mem, REG_BASE, 0x1000), mem, dev, after_start=after,
                        ddr_writes=runs, irq_sock=irq_sock)
    buf = UdmaBuffer("udmabuf0", dev=str(dev), sysfs=sysfs)
    drv = BoardDriver(regs, buf, uio=uio, poll_s=1e-4)
    rec = RecordingDriver(drv)
    try:
        res = asyncio.run(execute(rec, program, x_int8, timeout_s=timeout_s,
                                  use_irq=uio is not None))
        final = buf.read(PHYS, program.ddr_size)
    finally:
        if uio is None:
            drv.close()
    return rec.log, res, final, drv


# -- tests ------------------------------------------------------------------------------------
def test_sim_driver_matches_golden(setup):
    """The fake simulation back end computes the network (so its log is worth comparing)."""
    qm, program, x, x_int8 = setup
    log, res, _ = record_sim(program, x_int8)
    gold = run_golden(qm, x)
    np.testing.assert_array_equal(res.tensors["pool10"].reshape(-1),
                                  gold["pool10"].reshape(-1))
    kinds = [e[0] for e in log]
    assert kinds.count("wmem") == 1 and kinds.count("wait") == 1
    assert kinds.count("rmem") == len(program.regions)


def test_board_driver_same_sequence_and_buffer_polling(setup, tmp_path):
    qm, program, x, x_int8 = setup
    log_sim, res_sim, sim = record_sim(program, x_int8, use_irq=False)
    pre, after, runs = responses(log_sim, program, x_int8, sim)
    assert pre == {Reg.ID: ID_VALUE}
    log_board, res_board, final, drv = board_run(tmp_path, program, x_int8, pre, after, runs)
    assert log_board == log_sim
    assert final == bytes(sim.ddr[:program.ddr_size])
    assert res_board.cycles == res_sim.cycles and res_board.command_cycles == res_sim.command_cycles
    for name, t in res_sim.tensors.items():
        np.testing.assert_array_equal(res_board.tensors[name], t, err_msg=name)
    # registers landed at the right offsets of the /dev/mem stand-in
    with open(tmp_path / "mem", "rb") as f:
        f.seek(REG_BASE + Reg.CMD_BASE)
        assert struct.unpack("<II", f.read(8)) == (program.cmd_addr, len(program.commands))


def test_board_driver_uio_interrupt(setup, tmp_path):
    qm, program, x, x_int8 = setup
    log_sim, _, sim = record_sim(program, x_int8)
    pre, after, runs = responses(log_sim, program, x_int8, sim)
    ours, hw = socket.socketpair()
    try:
        log_board, _, final, drv = board_run(tmp_path, program, x_int8, pre, after, runs,
                                             uio=ours.fileno(), irq_sock=hw)
        assert log_board == log_sim
        assert final == bytes(sim.ddr[:program.ddr_size])
        assert drv.interrupts == 1
        hw.settimeout(1)
        assert hw.recv(4) == struct.pack("<I", 1)      # the driver unmasked the interrupt
        drv.close()
    finally:
        ours.close()
        hw.close()


def test_board_driver_timeout_reports_numbers(setup, tmp_path):
    qm, program, x, x_int8 = setup
    # an engine that never finishes: STATUS busy, 123456789 cycles, at command 3
    after = {Reg.STATUS: 1, Reg.CYCLES_LO: 123456789, Reg.CYCLES_HI: 0, Reg.CUR_CMD: 3}
    with pytest.raises(EngineError, match=r"did not finish within 0.05 s \(command 3, "
                                          r"123456789 cycles, status 0x1\)"):
        board_run(tmp_path, program, x_int8, {Reg.ID: ID_VALUE}, after, [], timeout_s=0.05)


def test_board_driver_engine_error_reports_code(setup, tmp_path):
    qm, program, x, x_int8 = setup
    after = {Reg.STATUS: STATUS_DONE | STATUS_ERROR, Reg.ERROR: 0x0305, Reg.CUR_CMD: 5,
             Reg.CYCLES_LO: 4242, Reg.CYCLES_HI: 0}
    with pytest.raises(EngineError, match=r"error code 0x305 at command 5 after 4242 cycles"):
        board_run(tmp_path, program, x_int8, {Reg.ID: ID_VALUE}, after, [])


def test_board_driver_no_engine(setup, tmp_path):
    qm, program, x, x_int8 = setup
    with pytest.raises(EngineError, match="ID reads 0x00000000"):
        board_run(tmp_path, program, x_int8, {}, {}, [])


def test_setup_errors(tmp_path):
    mem, dev, sysfs = make_devices(tmp_path)
    with pytest.raises(BoardSetupError, match="no u-dma-buf 'udmabuf1'"):
        UdmaBuffer("udmabuf1", dev=str(dev), sysfs=sysfs)
    with pytest.raises(BoardSetupError, match="does not exist"):
        PhysMap(tmp_path / "nope", REG_BASE, 0x1000)
    with pytest.raises(BoardSetupError, match=f"holds {BUF_SIZE:,} bytes; the program needs"):
        open_board_driver(REG_BASE, use_pynq=False, mem_path=str(mem), udmabuf_dev=str(dev),
                          sysfs=sysfs, buffer_bytes=BUF_SIZE + 1)
    drv = open_board_driver(REG_BASE, use_pynq=False, mem_path=str(mem), udmabuf_dev=str(dev),
                            sysfs=sysfs, buffer_bytes=4096)
    try:
        assert drv.phys == PHYS
        with pytest.raises(BoardSetupError, match="outside the DMA buffer"):
            asyncio.run(drv.write_mem(PHYS + BUF_SIZE - 4, b"12345678"))
    finally:
        drv.close()

"""The board back end of the host runtime: a :class:`~squeezeforge.host.runtime.Driver` for Linux
on the Zynq's ARM cores.

* Registers: 32-bit loads and stores through an ``mmap`` of ``/dev/mem`` at the engine's
  register base (0x4000_0000 on Zynq-7000 = M_AXI_GP0, 0x8000_0000 on UltraScale+ =
  M_AXI_HPM0_LPD), one page, as a NumPy ``uint32`` view (each access is one 32-bit bus
  transaction, as PYNQ's MMIO does it); or ``pynq.MMIO`` when PYNQ is used.
* DDR buffer: physically contiguous memory the engine masters through HP0: a u-dma-buf device
  (``/dev/udmabuf0``, mapped with O_SYNC so the CPU does not cache it; its physical address and
  size from ``/sys/class/u-dma-buf/udmabuf0/{phys_addr,size}`` or the older
  ``/sys/class/udmabuf/...``), or ``pynq.allocate`` (flushed before the engine reads,
  invalidated before the CPU reads). Host addresses are physical: the program is compiled
  with ``base_addr`` = the buffer's physical address.
* Done: a UIO interrupt (``/dev/uioN`` of a ``generic-uio`` node for the engine's interrupt:
  write 1 to unmask, then a blocking read returns the event count; waits use ``select`` with
  the timeout and STATUS.DONE is checked after each event) or polling STATUS.DONE every
  ``poll_s``. On a timeout :func:`~squeezeforge.host.runtime.execute` reports the command
  index, cycle counter and status; on an engine error the error code.

Every path is a parameter, so tests run the driver against regular files standing in for
``/dev/mem`` and the u-dma-buf device, a sysfs folder of their own, and a socket standing in for
the UIO device.
"""
from __future__ import annotations

import mmap
import os
import select
import struct
import time
from pathlib import Path

import numpy as np

from squeezeforge.hw.config import ConfigError
from squeezeforge.hw.regs import STATUS_DONE, Reg
from squeezeforge.host.runtime import Driver

__all__ = ["BoardSetupError", "PhysMap", "DmaBuffer", "UdmaBuffer", "PynqBuffer",
           "BoardDriver", "open_board_driver", "REG_WINDOW"]

REG_WINDOW = 0x1000
PAGE = mmap.PAGESIZE


class BoardSetupError(ConfigError):
    """The board environment is not usable: no access to /dev/mem, no DMA buffer, ... (one
    line)."""


class PhysMap:
    """``size`` bytes of physical address space at ``phys`` through an mmap of ``path``
    (``/dev/mem`` or a stand-in file), at file offset ``phys - offset_base``."""

    def __init__(self, path, phys: int, size: int, *, offset_base: int = 0, sync: bool = True):
        self.path, self.phys, self.size = str(path), phys, size
        off = phys - offset_base
        page_off = off % PAGE
        flags = os.O_RDWR | (os.O_SYNC if sync else 0)
        try:
            self._fd = os.open(self.path, flags)
        except PermissionError:
            raise BoardSetupError(f"{self.path}: permission denied (run as root, or give this "
                                  f"user access to {self.path})") from None
        except FileNotFoundError:
            raise BoardSetupError(f"{self.path} does not exist") from None
        try:
            self._mm = mmap.mmap(self._fd, size + page_off, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE, offset=off - page_off)
        except (OSError, ValueError) as e:
            os.close(self._fd)
            raise BoardSetupError(f"cannot map {size:#x} bytes of {self.path} at {phys:#x}: "
                                  f"{e}") from None
        self._base = page_off
        self.bytes = np.frombuffer(self._mm, dtype=np.uint8, count=size, offset=page_off)
        self.words = (np.frombuffer(self._mm, dtype=np.uint32, count=size // 4, offset=page_off)
                      if size >= 4 else None)

    def read32(self, off: int) -> int:
        return int(self.words[off >> 2])

    def write32(self, off: int, value: int) -> None:
        self.words[off >> 2] = value & 0xFFFF_FFFF

    def close(self) -> None:
        self.bytes = self.words = None
        self._mm.close()
        os.close(self._fd)


class DmaBuffer:
    """Physically contiguous memory: ``phys``, ``size``, byte access by physical address."""
    phys: int
    size: int

    def _span(self, addr: int, n: int) -> int:
        off = addr - self.phys
        if off < 0 or off + n > self.size:
            raise BoardSetupError(f"DDR access {addr:#x}+{n:#x} outside the DMA buffer "
                                  f"{self.phys:#x}+{self.size:#x}")
        return off

    def write(self, addr: int, data: bytes) -> None: ...
    def read(self, addr: int, n: int) -> bytes: ...
    def close(self) -> None: ...


class UdmaBuffer(DmaBuffer):
    """A u-dma-buf device (``/dev/udmabufN``): physical address and size from sysfs."""

    SYSFS = ("/sys/class/u-dma-buf", "/sys/class/udmabuf")

    def __init__(self, name: str = "udmabuf0", *, dev: str | None = None, sysfs=None):
        dev = dev or f"/dev/{name}"
        roots = [Path(sysfs)] if sysfs else [Path(p) for p in self.SYSFS]
        for root in roots:
            d = root / name
            if (d / "phys_addr").exists():
                self.phys = int((d / "phys_addr").read_text().strip(), 0)
                self.size = int((d / "size").read_text().strip(), 0)
                break
        else:
            raise BoardSetupError(f"no u-dma-buf {name!r} (looked in {', '.join(map(str, roots))}); "
                                  f"load the u-dma-buf module with a buffer, e.g. "
                                  f"'modprobe u-dma-buf udmabuf0=33554432'")
        # the device maps from offset 0 = phys_addr; O_SYNC: uncached, so no cache maintenance
        self._map = PhysMap(dev, self.phys, self.size, offset_base=self.phys)

    def write(self, addr, data):
        off = self._span(addr, len(data))
        self._map.bytes[off:off + len(data)] = np.frombuffer(bytes(data), dtype=np.uint8)

    def read(self, addr, n):
        off = self._span(addr, n)
        return self._map.bytes[off:off + n].tobytes()

    def close(self):
        self._map.close()


class PhysBuffer(DmaBuffer):
    """Reserved physical memory through ``/dev/mem`` (a ``reserved-memory`` region)."""

    def __init__(self, phys: int, size: int, *, mem_path="/dev/mem"):
        self.phys, self.size = phys, size
        self._map = PhysMap(mem_path, phys, size)

    write = UdmaBuffer.write
    read = UdmaBuffer.read
    close = UdmaBuffer.close


class PynqBuffer(DmaBuffer):
    """``pynq.allocate``: cacheable, flushed / invalidated around the engine's accesses."""

    def __init__(self, size: int):
        import pynq
        self._buf = pynq.allocate(shape=(size,), dtype=np.uint8)
        self.phys = int(self._buf.physical_address)
        self.size = size

    def write(self, addr, data):
        off = self._span(addr, len(data))
        self._buf[off:off + len(data)] = np.frombuffer(bytes(data), dtype=np.uint8)
        self._buf.flush()

    def read(self, addr, n):
        off = self._span(addr, n)
        self._buf.invalidate()
        return bytes(self._buf[off:off + n])

    def close(self):
        self._buf.freebuffer()


class _PynqRegs:
    def __init__(self, base: int):
        import pynq
        self._mmio = pynq.MMIO(base, REG_WINDOW)

    def read32(self, off):
        return int(self._mmio.read(off))

    def write32(self, off, value):
        self._mmio.write(off, int(value) & 0xFFFF_FFFF)

    def close(self):
        pass


class BoardDriver(Driver):
    """Registers + DMA buffer + interrupt or polling (see the module doc).

    ``regs``: an object with ``read32(off)`` / ``write32(off, v)`` (a :class:`PhysMap` of the
    register window, or PYNQ's MMIO); ``buffer``: a :class:`DmaBuffer`; ``uio``: a path or an
    open file descriptor of the UIO device, or None for polling.
    """

    def __init__(self, regs, buffer: DmaBuffer, *, uio=None, poll_s: float = 1e-4):
        self.regs, self.buffer, self.poll_s = regs, buffer, poll_s
        self._own_uio = isinstance(uio, (str, os.PathLike))
        if self._own_uio:
            try:
                self._uio = os.open(os.fspath(uio), os.O_RDWR)
            except OSError as e:
                raise BoardSetupError(f"{uio}: {e.strerror}") from None
        else:
            self._uio = uio
        self.interrupts = 0

    @property
    def phys(self) -> int:
        return self.buffer.phys

    async def write_reg(self, offset, value):
        self.regs.write32(offset, value)

    async def read_reg(self, offset):
        return self.regs.read32(offset)

    async def write_mem(self, addr, data):
        self.buffer.write(addr, data)

    async def read_mem(self, addr, length):
        return self.buffer.read(addr, length)

    def _done(self) -> bool:
        return bool(self.regs.read32(Reg.STATUS) & STATUS_DONE)

    async def wait_done(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        if self._uio is None:
            while True:
                if self._done():
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(self.poll_s)
        while True:
            # unmask (the UIO driver masks the line after each event; the engine's interrupt is a
            # level that stays high until DONE is cleared, so unmasking now catches a finish
            # that happened before this call)
            os.write(self._uio, struct.pack("<I", 1))
            left = deadline - time.monotonic()
            if left <= 0:
                return self._done()
            ready, _, _ = select.select([self._uio], [], [], left)
            if not ready:
                return self._done()
            if len(os.read(self._uio, 4)) == 4:
                self.interrupts += 1
            if self._done():
                return True

    def close(self):
        if self._own_uio and self._uio is not None:
            os.close(self._uio)
        self._uio = None
        self.buffer.close()
        self.regs.close()


def open_board_driver(reg_base: int, *, use_pynq: bool | None = None, mem_path="/dev/mem",
                      udmabuf: str = "udmabuf0", udmabuf_dev: str | None = None,
                      sysfs=None, buffer_bytes: int = 0, phys_buffer: tuple[int, int] | None = None,
                      uio=None, poll_s: float = 1e-4) -> BoardDriver:
    """A :class:`BoardDriver` from the usual places: PYNQ when ``use_pynq`` (default: when it
    imports), else ``/dev/mem`` registers and a u-dma-buf (or ``phys_buffer`` = (phys, size)
    of reserved memory through ``/dev/mem``)."""
    if use_pynq is None:
        try:
            import pynq  # noqa: F401
            use_pynq = True
        except ImportError:
            use_pynq = False
    if use_pynq:
        if buffer_bytes <= 0:
            raise BoardSetupError("a PYNQ buffer needs its size")
        regs, buf = _PynqRegs(reg_base), PynqBuffer(buffer_bytes)
    else:
        regs = PhysMap(mem_path, reg_base, REG_WINDOW)
        try:
            buf = (PhysBuffer(*phys_buffer, mem_path=mem_path) if phys_buffer
                   else UdmaBuffer(udmabuf, dev=udmabuf_dev, sysfs=sysfs))
        except Exception:
            regs.close()
            raise
    if buffer_bytes > buf.size:
        buf.close()
        regs.close()
        raise BoardSetupError(f"the DMA buffer holds {buf.size:,} bytes; the program needs "
                              f"{buffer_bytes:,}")
    return BoardDriver(regs, buf, uio=uio, poll_s=poll_s)

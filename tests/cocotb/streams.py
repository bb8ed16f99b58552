"""cocotb drivers for Amaranth ``lib.stream`` ports (``<name>__valid/__ready/__payload``).

Both follow cocotbext-axi's sampling discipline: right after a rising edge the signals still
hold the values the edge saw, so ``valid & ready`` read there is the handshake of that edge.
Random stalls come from a ``random.Random`` so a failing seed replays.
"""
from __future__ import annotations

import collections
import random

import cocotb
from cocotb.triggers import Event, RisingEdge


class StreamSource:
    """Drives ``<prefix>__valid/__payload``; ``idle`` = probability of not offering a new
    item in a cycle (valid, once raised, holds until the handshake)."""

    def __init__(self, dut, prefix, clk, *, idle=0.0, rng=None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.clk = clk
        self.idle = idle
        self.rng = rng or random.Random(0)
        self.queue = collections.deque()
        self.sent_cycles = []       # cycle index of each handshake
        self.cycle = 0
        self._empty = Event()
        self.valid.value = 0
        self._task = cocotb.start_soon(self._run())

    def send(self, value: int):
        self.queue.append(value)
        self._empty.clear()

    async def wait(self):
        if self.queue or self.valid.value:
            await self._empty.wait()

    async def _run(self):
        busy = False
        while True:
            await RisingEdge(self.clk)
            self.cycle += 1
            if busy and self.valid.value and self.ready.value:
                self.sent_cycles.append(self.cycle)
                busy = False
            if not busy:
                if self.queue and self.rng.random() >= self.idle:
                    self.payload.value = self.queue.popleft()
                    self.valid.value = 1
                    busy = True
                else:
                    self.valid.value = 0
                    if not self.queue:
                        self._empty.set()


class StreamSink:
    """Drives ``<prefix>__ready`` (low with probability ``stall``) and collects payloads."""

    def __init__(self, dut, prefix, clk, *, stall=0.0, rng=None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.clk = clk
        self.stall = stall
        self.rng = rng or random.Random(1)
        self.items = []
        self.cycles = []            # cycle index of each handshake
        self.cycle = 0
        self._got = Event()
        self.ready.value = 0
        self._task = cocotb.start_soon(self._run())

    async def wait_for(self, n: int):
        while len(self.items) < n:
            self._got.clear()
            await self._got.wait()

    async def _run(self):
        while True:
            await RisingEdge(self.clk)
            self.cycle += 1
            if self.valid.value and self.ready.value:
                self.items.append(int(self.payload.value))
                self.cycles.append(self.cycle)
                self._got.set()
            self.ready.value = 0 if self.rng.random() < self.stall else 1

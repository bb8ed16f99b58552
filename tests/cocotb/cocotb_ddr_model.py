"""cocotb tests of the Verilog DDR model (sim/ddr_model.v, module sf_ddr_model) on its own.

Expected values come from the model's documented contract and the AXI rules, not from its
code: data are random bytes put in by the backdoor or by AXI writes and checked byte for byte
by a Python reference memory; the first beat of a burst is taken READ_LATENCY cycles after its
AR handshake; queued bursts stream with no idle cycle; RID/BID echo the request IDs; strobes
select bytes; addresses outside [BASE, BASE + MEM_BYTES) answer DECERR and change nothing.

The bus is driven and sampled on falling edges: what is seen there is what the next rising
edge samples, so a handshake "at edge k" is counted exactly.
"""
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

from squeezeforge.sim.cocotb_driver import hex_words, parse_hex_words

BASE = int(os.environ.get("SQZF_DDR_BASE", 0x1000_0000))
SIZE = int(os.environ["SQZF_DDR_BYTES"])
LAT = int(os.environ["SQZF_READ_LATENCY"])
WLAT = int(os.environ["SQZF_WRITE_LATENCY"])
OUTSTANDING = int(os.environ["SQZF_OUTSTANDING"])
OKAY, SLVERR, DECERR = 0, 2, 3


class Bus:
    """Per-cycle AXI driver/monitor running on falling edges."""

    def __init__(self, dut, rng):
        self.dut = dut
        self.rng = rng
        self.cycle = 0                      # index of the next rising edge
        self.ar_q = []                      # (id, addr, len) to issue
        self.aw_q = []                      # (id, addr, beats[(data, strb)])
        self.w_q = []                       # (data, strb, last)
        self.ar_done = []                   # (edge, id, addr, len)
        self.r_beats = []                   # (edge, id, data, resp, last)
        self.aw_done = []
        self.w_done = []                    # (edge, last)
        self.b_resps = []                   # (edge, id, resp)
        self.rready_p = 1.0
        self.bready = 1
        cocotb.start_soon(self._run())

    async def _run(self):
        d = self.dut
        ar_cur = aw_cur = w_cur = None
        while True:
            await FallingEdge(d.clk)
            self.cycle += 1
            # handshakes at the coming rising edge, seen now
            if ar_cur is not None and int(d.s_axi_arready.value):
                self.ar_done.append((self.cycle, *ar_cur))
                ar_cur = None
            if aw_cur is not None and int(d.s_axi_awready.value):
                self.aw_done.append((self.cycle, *aw_cur))
                aw_cur = None
            if w_cur is not None and int(d.s_axi_wready.value):
                self.w_done.append((self.cycle, w_cur[2]))
                w_cur = None
            if int(d.s_axi_rvalid.value) and int(d.s_axi_rready.value):
                self.r_beats.append((self.cycle, int(d.s_axi_rid.value), int(d.s_axi_rdata.value),
                                     int(d.s_axi_rresp.value), int(d.s_axi_rlast.value)))
            if int(d.s_axi_bvalid.value) and int(d.s_axi_bready.value):
                self.b_resps.append((self.cycle, int(d.s_axi_bid.value),
                                     int(d.s_axi_bresp.value)))
            # new values are set just after the coming rising edge (which samples the old ones)
            await RisingEdge(d.clk)
            if ar_cur is None and self.ar_q:
                ar_cur = self.ar_q.pop(0)
            if aw_cur is None and self.aw_q:
                i, a, beats = self.aw_q.pop(0)
                aw_cur = (i, a, len(beats))
                for n, (data, strb) in enumerate(beats):
                    self.w_q.append((data, strb, int(n == len(beats) - 1)))
            if w_cur is None and self.w_q:
                w_cur = self.w_q.pop(0)
            d.s_axi_arvalid.value = int(ar_cur is not None)
            if ar_cur is not None:
                d.s_axi_arid.value, d.s_axi_araddr.value, d.s_axi_arlen.value = \
                    ar_cur[0], ar_cur[1], ar_cur[2] - 1
            d.s_axi_awvalid.value = int(aw_cur is not None)
            if aw_cur is not None:
                d.s_axi_awid.value, d.s_axi_awaddr.value, d.s_axi_awlen.value = \
                    aw_cur[0], aw_cur[1], aw_cur[2] - 1
            d.s_axi_wvalid.value = int(w_cur is not None)
            if w_cur is not None:
                d.s_axi_wdata.value, d.s_axi_wstrb.value, d.s_axi_wlast.value = w_cur
            d.s_axi_rready.value = int(self.rng.random() < self.rready_p)
            d.s_axi_bready.value = self.bready

    async def idle(self, max_cycles=5000):
        for _ in range(max_cycles):
            await RisingEdge(self.dut.clk)
            if not (self.ar_q or self.aw_q or self.w_q):
                break
        await ClockCycles(self.dut.clk, 3)


async def setup(dut, seed=1):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for n in ("arvalid", "awvalid", "wvalid", "rready", "bready", "arid", "araddr", "arlen",
              "awid", "awaddr", "awlen", "wdata", "wstrb", "wlast"):
        getattr(dut, f"s_axi_{n}").value = 0
    dut.s_axi_arsize.value = dut.s_axi_awsize.value = 3
    dut.s_axi_arburst.value = dut.s_axi_awburst.value = 1
    dut.load.value = dut.dump.value = 0
    dut.dump_first.value = dut.dump_last.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    return Bus(dut, random.Random(seed))


async def pulse(dut, sig):
    await FallingEdge(dut.clk)
    sig.value = 1
    await FallingEdge(dut.clk)
    sig.value = 0


async def backdoor_load(dut, addr, data: bytes):
    with open("ddr_load.hex", "w") as f:
        f.write(f"@{(addr - BASE) // 8:x}\n{hex_words(data)}\n")
    await pulse(dut, dut.load)


async def backdoor_dump(dut, addr, n) -> bytes:
    first = (addr - BASE) // 8
    dut.dump_first.value = first
    dut.dump_last.value = first + n // 8 - 1
    await pulse(dut, dut.dump)
    with open("ddr_dump.hex") as f:
        return parse_hex_words(f.read(), n // 8)


def words(data):
    return [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data), 8)]


@cocotb.test()
async def read_latency_and_streaming(dut):
    bus = await setup(dut)
    rng = random.Random(2)
    data = bytes(rng.getrandbits(8) for _ in range(4 * 16 * 8))
    addr = BASE + 0x400
    await backdoor_load(dut, addr, data)
    # four 16-beat bursts issued back to back, alternating IDs
    for k in range(4):
        bus.ar_q.append((k % 2, addr + 128 * k, 16))
    while len(bus.r_beats) < 64:
        await RisingEdge(dut.clk)
    ar_edges = [e for e, *_ in bus.ar_done]
    assert ar_edges == list(range(ar_edges[0], ar_edges[0] + 4)), \
        f"the model took ARs at {ar_edges}, expected 4 consecutive cycles"
    edges = [b[0] for b in bus.r_beats]
    assert edges[0] - ar_edges[0] == LAT, \
        f"first beat {edges[0] - ar_edges[0]} cycles after its AR, expected {LAT}"
    assert edges == list(range(edges[0], edges[0] + 64)), "bursts did not stream back to back"
    assert [b[2] for b in bus.r_beats] == words(data)
    assert [b[4] for b in bus.r_beats] == [int(i % 16 == 15) for i in range(64)]
    assert [b[1] for b in bus.r_beats] == [(i // 16) % 2 for i in range(64)]
    assert all(b[3] == OKAY for b in bus.r_beats)

    # a lone burst later: its first beat again exactly LAT cycles after AR
    n0 = len(bus.r_beats)
    bus.ar_q.append((1, addr + 8, 3))
    while len(bus.r_beats) < n0 + 3:
        await RisingEdge(dut.clk)
    assert bus.r_beats[n0][0] - bus.ar_done[-1][0] == LAT
    assert [b[2] for b in bus.r_beats[n0:]] == words(data[8:32])


@cocotb.test()
async def read_backpressure_and_outstanding(dut):
    bus = await setup(dut, seed=3)
    rng = random.Random(4)
    data = bytes(rng.getrandbits(8) for _ in range(4096))
    await backdoor_load(dut, BASE, data)
    bus.rready_p = 0.0                      # hold RREADY low: the AR queue must fill and stop
    for k in range(OUTSTANDING + 4):
        bus.ar_q.append((k % 2, BASE + 64 * k, 8))
    await ClockCycles(dut.clk, LAT + 40)
    taken = len(bus.ar_done)
    assert OUTSTANDING <= taken <= OUTSTANDING + 1, \
        f"{taken} reads accepted with RREADY low; the model queues {OUTSTANDING}"
    assert not bus.r_beats
    bus.rready_p = 0.6                      # random backpressure: data intact and in order
    n = 8 * (OUTSTANDING + 4)
    for _ in range(20000):
        await RisingEdge(dut.clk)
        if len(bus.r_beats) >= n:
            break
    assert [b[2] for b in bus.r_beats] == words(data[:n * 8])
    assert [b[4] for b in bus.r_beats] == [int(i % 8 == 7) for i in range(n)]


@cocotb.test()
async def write_strobes_and_response_latency(dut):
    bus = await setup(dut, seed=5)
    rng = random.Random(6)
    addr = BASE + 0x2000
    ref = bytearray(bytes(rng.getrandbits(8) for _ in range(512)))
    await backdoor_load(dut, addr, bytes(ref))
    bursts = []
    for k in range(6):
        n = rng.randint(1, 16)
        a = addr + 8 * rng.randint(0, 64 - n)
        beats = [(rng.getrandbits(64), rng.getrandbits(8)) for _ in range(n)]
        bus.aw_q.append((k % 2, a, beats))
        bursts.append((k % 2, a, beats))
        for i, (v, strb) in enumerate(beats):
            for b in range(8):
                if strb >> b & 1:
                    ref[a - addr + 8 * i + b] = (v >> (8 * b)) & 0xFF
    while len(bus.b_resps) < len(bursts):
        await RisingEdge(dut.clk)
    assert [b[1] for b in bus.b_resps] == [i for i, _, _ in bursts]
    assert all(b[2] == OKAY for b in bus.b_resps)
    last_edges = [e for e, last in bus.w_done if last]
    lat = [b[0] - e for b, e in zip(bus.b_resps, last_edges)]
    assert all(x >= WLAT + 1 for x in lat), f"write responses after {lat} cycles"
    assert lat[0] == WLAT + 1, f"first B {lat[0]} cycles after WLAST, expected {WLAT + 1}"
    assert await backdoor_dump(dut, addr, 512) == bytes(ref)
    # and through the read channel
    bus.ar_q.append((0, addr, 16))
    while len(bus.r_beats) < 16:
        await RisingEdge(dut.clk)
    assert [b[2] for b in bus.r_beats] == words(bytes(ref[:128]))


@cocotb.test()
async def backdoor_round_trip(dut):
    await setup(dut, seed=7)
    rng = random.Random(8)
    a = BASE + SIZE - 1024                  # the top of the memory
    data = bytes(rng.getrandbits(8) for _ in range(1024))
    await backdoor_load(dut, a, data)
    b = BASE + 0x8000                       # an area no other test of this module uses
    other = bytes(rng.getrandbits(8) for _ in range(64))
    await backdoor_load(dut, b, other)      # a second load keeps the first one's words
    assert await backdoor_dump(dut, a, 1024) == data
    assert await backdoor_dump(dut, b - 8, 80) == bytes(8) + other + bytes(8)


@cocotb.test()
async def address_errors(dut):
    bus = await setup(dut, seed=9)
    rng = random.Random(10)
    top = BASE + SIZE
    edge = bytes(rng.getrandbits(8) for _ in range(32))
    await backdoor_load(dut, top - 32, edge)
    bus.ar_q.append((1, BASE - 64, 4))      # below the memory
    bus.ar_q.append((0, top - 16, 4))       # straddles the end: 2 good beats, 2 bad
    while len(bus.r_beats) < 8:
        await RisingEdge(dut.clk)
    r = bus.r_beats
    assert [(x[1], x[3], x[2]) for x in r[:4]] == [(1, DECERR, 0)] * 4
    assert [x[3] for x in r[4:]] == [OKAY, OKAY, DECERR, DECERR]
    assert [x[2] for x in r[4:6]] == words(edge[16:])
    assert [x[2] for x in r[6:]] == [0, 0]
    # writes: one outside (DECERR, nothing written), one straddling (DECERR, in-range beat written)
    bus.aw_q.append((1, top, [(0x1111, 0xFF)]))
    bus.aw_q.append((0, top - 8, [(0x2222_3333_4444_5555, 0xFF), (0x6666, 0xFF)]))
    bus.aw_q.append((1, BASE, [(0x77, 0x01)]))
    while len(bus.b_resps) < 3:
        await RisingEdge(dut.clk)
    assert [(b[1], b[2]) for b in bus.b_resps] == [(1, DECERR), (0, DECERR), (1, OKAY)]
    got = await backdoor_dump(dut, top - 32, 32)
    assert got == edge[:24] + (0x2222_3333_4444_5555).to_bytes(8, "little")
    assert (await backdoor_dump(dut, BASE, 8))[0] == 0x77

"""cocotb tests of hw.axi.AxiDma (read + write DMA on one AXI4 port) against sim.ddr.DdrModel.

Checks come from the AXI rules and the request semantics, not from the RTL: the streamed bytes
equal the memory region, ``last`` marks each request's final beat, every burst has at most
MAX_BURST beats and stays inside one 4 KB page, bursts tile the region in order with the fewest
bursts those two rules allow, and written regions land in memory without touching neighbours.
Measured throughputs go to metrics.json in the working directory.
"""
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from squeezeforge.sim.ddr import DdrModel
from streams import StreamSink, StreamSource

MAX_BURST = int(os.environ.get("SQZF_MAX_BURST", "16"))
OUTSTANDING = int(os.environ.get("SQZF_OUTSTANDING", "4"))
LATENCY = int(os.environ.get("SQZF_READ_LATENCY", "20"))
SEED = int(os.environ.get("SQZF_SEED", "1"))
BEAT = 8


def metric(key, value):
    path = "metrics.json"
    data = json.load(open(path)) if os.path.exists(path) else {}
    data[key] = value
    json.dump(data, open(path, "w"), indent=1)


def expected_bursts(addr, length):
    """Fewest bursts under the two rules: split at 4 KB pages, then chunks of MAX_BURST."""
    out, end = [], addr + length
    while addr < end:
        page_end = min(end, (addr // 4096 + 1) * 4096)
        while addr < page_end:
            n = min(MAX_BURST, (page_end - addr) // BEAT)
            out.append((addr, n))
            addr += n * BEAT
    return out


class Env:
    def __init__(self, dut, *, rd_stall=0.0, wr_idle=0.0, seed=SEED):
        self.dut = dut
        self.rng = random.Random(seed)
        self.ddr = DdrModel(dut, dut.clk, dut.rst, size=1 << 17, read_latency=LATENCY,
                            max_outstanding=8)
        self.rd_req = StreamSource(dut, "rd_req", dut.clk, rng=self.rng)
        self.wr_req = StreamSource(dut, "wr_req", dut.clk, rng=self.rng)
        self.rd = StreamSink(dut, "o_stream", dut.clk, stall=rd_stall, rng=self.rng)
        self.wr = StreamSource(dut, "i_stream", dut.clk, idle=wr_idle, rng=self.rng)
        self.ars, self.aws = [], []
        self.ar_cycles, self.r_first_cycles = [], []   # AR handshakes, first RVALID of bursts
        self.cycle = 0
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        d = self.dut
        self._r_new_burst = True
        while True:
            await RisingEdge(d.clk)
            self.cycle += 1
            if d.m_axi_rvalid.value and len(self.r_first_cycles) < len(self.ar_cycles) and \
                    (not self.r_first_cycles or self._r_new_burst):
                self.r_first_cycles.append(self.cycle)
                self._r_new_burst = False
            if d.m_axi_rvalid.value and d.m_axi_rready.value and d.m_axi_rlast.value:
                self._r_new_burst = True
            if d.m_axi_arvalid.value and d.m_axi_arready.value:
                self.ar_cycles.append(self.cycle)
                self.ars.append((int(d.m_axi_araddr.value), int(d.m_axi_arlen.value) + 1))
                assert int(d.m_axi_arsize.value) == 3 and int(d.m_axi_arburst.value) == 1
            if d.m_axi_awvalid.value and d.m_axi_awready.value:
                self.aws.append((int(d.m_axi_awaddr.value), int(d.m_axi_awlen.value) + 1))
                assert int(d.m_axi_awsize.value) == 3 and int(d.m_axi_awburst.value) == 1
            if d.m_axi_wvalid.value:
                assert int(d.m_axi_wstrb.value) == 0xFF

    def pauses(self, p):
        def gen():
            while True:
                yield self.rng.random() < p
        return gen()


async def setup(dut, **kw):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    env = Env(dut, **kw)
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    return env


def req(addr, length):
    return addr | length << 32


def beats_of(data):
    return [int.from_bytes(data[i:i + BEAT], "little") for i in range(0, len(data), BEAT)]


async def read_and_check(env, regions):
    """Queue all regions at once; check data, last flags and bursts."""
    expect, n0, ar0 = [], len(env.rd.items), len(env.ars)
    for addr, length in regions:
        data = bytes(env.rng.getrandbits(8) for _ in range(length))
        env.ddr.write(addr, data)
        bl = beats_of(data)
        expect += [(b, int(i == len(bl) - 1)) for i, b in enumerate(bl)]
        env.rd_req.send(req(addr, length))
    await env.rd.wait_for(n0 + len(expect))
    got = [(p & (2**64 - 1), p >> 64) for p in env.rd.items[n0:]]
    for i, (g, e) in enumerate(zip(got, expect)):
        assert g == e, f"beat {i}: got data {g[0]:#018x} last {g[1]}, expected {e[0]:#018x} last {e[1]}"
    bursts = [b for a, l in regions for b in expected_bursts(a, l)]
    assert env.ars[ar0:] == bursts, f"bursts {env.ars[ar0:]} != {bursts}"
    for a, n in env.ars[ar0:]:
        assert n <= MAX_BURST and a // 4096 == (a + n * BEAT - 1) // 4096


REGIONS = [(0x0000, 1024), (0x1F80, 1024), (0x2FF8, 8), (0x3008, 4096), (0x4FF0, 2048),
           (0x6F00, 1032), (0x8000, 4096)]


@cocotb.test()
async def read_regions_backpressure(dut):
    env = await setup(dut, rd_stall=0.3)
    env.ddr.read_if.r_channel.set_pause_generator(env.pauses(0.2))
    env.ddr.read_if.ar_channel.set_pause_generator(env.pauses(0.2))
    for region in REGIONS:
        await read_and_check(env, [region])
    assert env.ddr.read_if.max_pending <= OUTSTANDING + 2
    await ClockCycles(dut.clk, 2)
    assert int(dut.rd_busy.value) == 0


@cocotb.test()
async def read_back_to_back_requests(dut):
    env = await setup(dut, rd_stall=0.1)
    await read_and_check(env, REGIONS)


@cocotb.test()
async def read_zero_length(dut):
    env = await setup(dut)
    env.rd_req.send(req(0x100, 0))
    await ClockCycles(dut.clk, 50)
    assert env.rd.items == [] and env.ars == [] and int(dut.rd_busy.value) == 0
    await read_and_check(env, [(0x100, 64)])        # still works afterwards


@cocotb.test()
async def read_latency_and_throughput(dut):
    env = await setup(dut)
    length = 16384
    env.ddr.write(0, bytes(range(256)) * (length // 256))
    start = env.rd.cycle
    env.rd_req.send(req(0, length))
    await env.rd.wait_for(length // BEAT)
    first, last = env.rd.cycles[0], env.rd.cycles[-1]
    beats = length // BEAT
    # latency seen on the bus: AR handshake -> first RVALID of the same burst
    lat = [r - a for a, r in zip(env.ar_cycles, env.r_first_cycles)]
    assert lat and min(lat) >= LATENCY, f"DDR model latency {min(lat)} < {LATENCY}"
    assert lat[0] <= LATENCY + 2, f"first burst waited {lat[0]} cycles for latency {LATENCY}"
    steady = (beats - 1) / (last - first)
    overall = beats / (last - start)
    metric("read", {"bytes": length, "latency": LATENCY, "outstanding": OUTSTANDING,
                    "max_burst": MAX_BURST, "first_beat_cycles": first - start,
                    "bus_latency_first_burst": lat[0],
                    "beats_per_cycle_steady": round(steady, 4),
                    "beats_per_cycle_overall": round(overall, 4),
                    "max_bursts_pending_in_ddr": env.ddr.read_if.max_pending})
    # bursts in flight hide the latency when OUTSTANDING * MAX_BURST >= LATENCY + MAX_BURST
    bound = min(1.0, OUTSTANDING * MAX_BURST / (LATENCY + MAX_BURST + 2))
    assert steady >= 0.95 * bound, f"read throughput {steady:.3f} beats/cycle < {0.95 * bound:.3f}"


async def write_and_check(env, regions):
    for addr, length in regions:
        env.ddr.write(addr - 64, b"\xA5" * (length + 128))   # guard bytes around the region
    datas = []
    for addr, length in regions:
        data = bytes(env.rng.getrandbits(8) for _ in range(length))
        datas.append(data)
        env.wr_req.send(req(addr, length))
        for b in beats_of(data):
            env.wr.send(b)
    await env.wr.wait()
    await RisingEdge(env.dut.clk)
    while int(env.dut.wr_busy.value):
        await RisingEdge(env.dut.clk)
    # expected image of the whole span: guard bytes everywhere no region wrote
    expect = {}
    for (addr, length), data in zip(regions, datas):
        for k in range(length):
            expect[addr + k] = data[k]
    for (addr, length) in regions:
        for k in range(addr - 64, addr + length + 64):
            want = expect.get(k, 0xA5)
            got = env.ddr.read(k, 1)[0]
            if got != want:
                where = "inside" if k in expect else "outside"
                raise AssertionError(f"byte {k:#x} ({where} the written regions) is {got:#04x}, "
                                     f"expected {want:#04x}")
    return datas


@cocotb.test()
async def write_regions_backpressure(dut):
    env = await setup(dut, wr_idle=0.3)
    env.ddr.write_if.aw_channel.set_pause_generator(env.pauses(0.3))
    env.ddr.write_if.w_channel.set_pause_generator(env.pauses(0.3))
    env.ddr.write_if.b_channel.set_pause_generator(env.pauses(0.5))
    for region in [(0x10000 + a, n) for a, n in REGIONS]:
        n0 = len(env.aws)
        await write_and_check(env, [region])
        bursts = expected_bursts(*region)
        assert env.aws[n0:] == bursts, f"write bursts {env.aws[n0:]} != {bursts}"


@cocotb.test()
async def write_back_to_back_then_read(dut):
    env = await setup(dut, wr_idle=0.1, rd_stall=0.1)
    regions = [(0x10000 + a, n) for a, n in REGIONS]
    datas = await write_and_check(env, regions)
    # the read DMA sees what the write DMA wrote (same AXI port, same memory)
    n0 = len(env.rd.items)
    env.rd_req.send(req(*regions[3]))
    await env.rd.wait_for(n0 + regions[3][1] // BEAT)
    assert [p & (2**64 - 1) for p in env.rd.items[n0:]] == beats_of(datas[3])


@cocotb.test()
async def write_throughput(dut):
    env = await setup(dut)
    length = 16384
    env.wr_req.send(req(0x8000, length))
    for b in range(length // BEAT):
        env.wr.send(b * 0x0101010101010101 & (2**64 - 1))
    start = env.wr.cycle
    await env.wr.wait()
    end = env.wr.sent_cycles[-1]
    while int(dut.wr_busy.value):
        await RisingEdge(dut.clk)
    done = env.wr.cycle
    beats = length // BEAT
    first = env.wr.sent_cycles[0]
    steady = (beats - 1) / (end - first)
    metric("write", {"bytes": length, "outstanding": OUTSTANDING, "max_burst": MAX_BURST,
                     "beats_per_cycle_steady": round(steady, 4),
                     "beats_per_cycle_overall": round(beats / (done - start), 4)})
    assert env.ddr.read_qwords(0x8000, 4) == [b * 0x0101010101010101 for b in range(4)]
    assert steady >= 0.9, f"write throughput {steady:.3f} beats/cycle"

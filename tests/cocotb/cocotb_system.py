"""cocotb side of the system simulation: run one program through the host protocol.

Inputs (environment, set by ``sim/simulate.py`` or the tests):
  SQZF_PROGRAM      pickle of a Program (``host.schedule.Program`` or ``sim.stub_engine.CopyProgram``)
  SQZF_INPUT        .npy of the int8 input (optional)
  SQZF_WARM_INPUT   .npy of a second input, run after the first as a warm start (optional;
                    its results go to ``warm`` in the results file, tensors to <results>-warm.npz)
  SQZF_RESULTS      results file to write (JSON); tensors go beside it as .npz
  SQZF_TIMEOUT_CYCLES  wait_done timeout in cycles (default 50 M)
  SQZF_POLL_CYCLES  progress poll period in cycles (0: none)
  SQZF_PROGRESS     file to append progress lines to ("cycle cur_cmd")
  SQZF_TRACE_WINDOW "first:last" cycles from START to trace (testbench built with tracing)

A traced run whose window ends before the engine finishes stops there (``trace_stopped_at``).
The results file: cycles, per-command cycles, status, wall time of the run in the simulator,
simulated cycles per second, driver statistics (loads, dumps), and the tensors' .npz name. An
engine error is reported in the file (``error``) rather than as a failed test, so the caller
can say what went wrong; only a broken flow fails the test.
"""
import json
import os
import pickle
import time
from pathlib import Path

import cocotb
import numpy as np

from squeezeforge.host.runtime import EngineError, execute
from squeezeforge.sim.cocotb_driver import CocotbDriver, TraceWindowEnd, start_tb


@cocotb.test(skip="SQZF_PROGRAM" not in os.environ)
async def run_program(dut):
    program = pickle.loads(Path(os.environ["SQZF_PROGRAM"]).read_bytes())
    x = np.load(os.environ["SQZF_INPUT"]) if os.environ.get("SQZF_INPUT") else None
    out = Path(os.environ["SQZF_RESULTS"])
    poll = int(os.environ.get("SQZF_POLL_CYCLES", "0")) or None
    progress = os.environ.get("SQZF_PROGRESS")
    progress_f = open(progress, "a", buffering=1) if progress else None

    def on_poll(cycle, cur):
        progress_f.write(f"{cycle} {cur}\n")

    await start_tb(dut)
    window = os.environ.get("SQZF_TRACE_WINDOW")
    window = tuple(int(v) for v in window.split(":")) if window else None
    drv = CocotbDriver(dut, workdir=Path.cwd(), poll_cycles=poll,
                       on_poll=on_poll if progress_f else None,
                       timeout_cycles=int(os.environ.get("SQZF_TIMEOUT_CYCLES", 50_000_000)),
                       dump_hint=(program.base_addr, program.ddr_size), trace_window=window)
    c0 = int(dut.cycles.value)
    t0 = time.perf_counter()
    res = dict(error=None)
    try:
        run = await execute(drv, program, x, timeout_s=1.0)
        res.update(cycles=run.cycles, command_cycles=run.command_cycles, status=run.status)
        tensors = {k: np.asarray(v) for k, v in run.tensors.items()}
        if os.environ.get("SQZF_WARM_INPUT"):
            x2 = np.load(os.environ["SQZF_WARM_INPUT"])
            w = await execute(drv, program, x2, timeout_s=1.0, warm=True)
            wnpz = out.with_name(out.stem + "-warm.npz")
            np.savez(wnpz, **{k.replace("/", "|"): np.asarray(v) for k, v in w.tensors.items()})
            res["warm"] = dict(cycles=w.cycles, command_cycles=w.command_cycles,
                               first_command=w.first_command, status=w.status,
                               tensors_file=wnpz.name)
    except EngineError as e:
        res["error"] = str(e)
        tensors = {}
    except TraceWindowEnd as e:            # a traced run ends with its window
        res["trace_stopped_at"] = e.cycle
        tensors = {}
    wall = time.perf_counter() - t0
    sim_cycles = int(dut.cycles.value) - c0
    res.update(wall_s=wall, sim_cycles=sim_cycles, start_cycle=drv.start_cycle,
               cycles_per_s=sim_cycles / wall if wall > 0 else 0.0, driver=drv.stats)
    npz = out.with_suffix(".npz")
    np.savez(npz, **{k.replace("/", "|"): v for k, v in tensors.items()})
    res["tensors_file"] = npz.name
    out.write_text(json.dumps(res, indent=1))
    if progress_f:
        progress_f.close()


@cocotb.test(skip=os.environ.get("SQZF_DRIVER_TEST") != "1")
async def driver_memory(dut):
    """write_mem / read_mem of the CocotbDriver: unaligned edges merge with memory, the dump
    cache serves reads until a write, and a register write invalidates it too."""
    import random
    await start_tb(dut)
    base = int(os.environ["SQZF_DDR_BASE"])
    drv = CocotbDriver(dut, workdir=Path.cwd())
    rng = random.Random(1)
    blob = bytes(rng.getrandbits(8) for _ in range(256))
    await drv.write_mem(base + 64, blob)
    assert await drv.read_mem(base + 64, 256) == blob
    assert drv.stats["dumps"] == 1
    assert await drv.read_mem(base + 100, 10) == blob[36:46]
    assert drv.stats["dumps"] == 1, "a read inside the cached dump dumped again"
    patch = bytes(rng.getrandbits(8) for _ in range(13))
    await drv.write_mem(base + 64 + 5, patch)            # starts and ends inside words
    want = blob[:5] + patch + blob[18:]
    assert await drv.read_mem(base + 64, 256) == want
    assert await drv.read_mem(base + 63, 2) == bytes(1) + want[:1]
    n = drv.stats["dumps"]
    await drv.write_reg(0x14, 0x1234)                     # CMD_BASE: any register write
    assert await drv.read_reg(0x14) == 0x1234
    await drv.read_mem(base + 64, 8)
    assert drv.stats["dumps"] == n + 1
    try:
        await drv.read_mem(base - 8, 8)
    except ValueError as e:
        assert "lies outside the model" in str(e)
    else:
        raise AssertionError("a read outside the DDR model was not refused")

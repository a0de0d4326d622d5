"""DEP-8: a ``debian/tests/control`` stanza (to append to the package's own) and its script.

Restrictions, and why:
- ``build-needed``: the gate soaks the memcached built in the package tree (unstripped,
  so the scenario's symbols are there), before it is installed anywhere;
- ``needs-root``: gdb attaches to the hung server for evidence (Yama's ptrace scope stops
  a non-root debugger that is not the server's parent) and the watch amplifier opens a
  hardware watchpoint (perf_event_open; Debian's kernels default to paranoid level 3);
- ``isolation-container``: it starts servers and opens ports (on 127.0.0.1 only).
No ``allow-stderr``: the script keeps stderr empty unless a check fails. No ``flaky``: a
hang is proof and a PASS is a bound, so a failure is worth a look every time.
``Depends``: ``@builddeps@`` (build-needed builds the tree) and gdb for the evidence.
"""

from __future__ import annotations

import os
from pathlib import Path

from verifier.export.gate import ExportGate
from verifier.export.script import gate_script
from verifier.util.atomic import write_text

RESTRICTIONS = ("build-needed", "needs-root", "isolation-container")
DEPENDS = ("@builddeps@", "gdb")
# autopkgtest runs a test from the root of the (built) source tree; dh builds memcached there
BINARY = "$PWD/memcached"


def control_stanza(gate: ExportGate) -> str:
    checks = ", ".join(f"{c.scenario} {c.expect}" for c in gate.checks)
    return (
        f"# memcached hang gate (verifier export autopkgtest): {checks}; "
        f"{gate.trials} x {gate.soak_s:g} s each\n"
        f"Tests: {gate.name}\n"
        f"Depends: {', '.join(DEPENDS)}\n"
        f"Restrictions: {', '.join(RESTRICTIONS)}\n"
    )


def write_autopkgtest(gate: ExportGate, out: Path) -> list[Path]:
    """``out/debian/tests/control`` (the stanza) and ``out/debian/tests/<name>``."""
    tests = out / "debian" / "tests"
    control = tests / "control"
    script = tests / gate.name
    write_text(control, control_stanza(gate))
    write_text(script, gate_script(gate, flavour="autopkgtest", binary=BINARY))
    os.chmod(script, 0o755)
    return [control, script]

"""tmt/fmf (Fedora, Packit, Testing Farm): a test and a plan that run the gate.

The test runs against the installed package (``/usr/bin/memcached``, or ``MEMCACHED``);
Fedora strips binaries, so the plan installs the debug info and points the verifier at
``/usr/lib/debug`` (``--debug-dir``). ``duration`` is sized from the soak: tmt's default
of 5 minutes would stop a gate of two scenarios x 3 trials x 20 s halfway. fmf files are
YAML; every string is written JSON-quoted, which YAML reads as is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from verifier.export.gate import ExportGate, duration_text
from verifier.export.script import gate_script
from verifier.util.atomic import write_text

BINARY = "$(command -v memcached || echo /usr/bin/memcached)"
REQUIRE = ("memcached", "gdb", "bash")


def _q(text: str) -> str:
    return json.dumps(text)


def test_fmf(gate: ExportGate) -> str:
    checks = ", ".join(f"{c.scenario} {c.expect}" for c in gate.checks)
    lines = [
        f"summary: {_q(f'memcached hang gate: {checks}')}",
        "description: "
        + _q(
            "Soaks memcached under each race scenario with the memcached patch verifier "
            f"({gate.trials} trial(s) x {gate.soak_s:g} s) and fails when a scenario does "
            "not meet its expectation (a hang is proof, a pass is a bound)."
        ),
        "test: ./test.sh",
        "framework: shell",
        "require:",
        *(f"  - {_q(r)}" for r in REQUIRE),
        f"duration: {_q(duration_text(gate.duration_s()))}",
        "tag:",
        '  - "hang-gate"',
        "environment:",
        '  VERIFIER_DEBUG_DIR: "/usr/lib/debug"',
    ]
    return "\n".join(lines) + "\n"


def plan_fmf(gate: ExportGate) -> str:
    lines = [
        f"summary: {_q(f'memcached hang gate ({gate.name})')}",
        "discover:",
        '  how: "fmf"',
        f"  test: {_q(gate.name)}",
        "prepare:",
        '  - how: "shell"',
        "    script: " + _q("dnf -y debuginfo-install memcached || echo 'no debuginfo repository'"),
        "execute:",
        '  how: "tmt"',
    ]
    return "\n".join(lines) + "\n"


def write_tmt(gate: ExportGate, out: Path) -> list[Path]:
    """``out/.fmf/version``, ``out/plans/<name>.fmf``, ``out/tests/<name>/{main.fmf,test.sh}``."""
    version = out / ".fmf" / "version"
    plan = out / "plans" / f"{gate.name}.fmf"
    test_dir = out / "tests" / gate.name
    script = test_dir / "test.sh"
    write_text(version, "1\n")
    write_text(plan, plan_fmf(gate))
    write_text(test_dir / "main.fmf", test_fmf(gate))
    write_text(script, gate_script(gate, flavour="tmt", binary=BINARY))
    os.chmod(script, 0o755)
    return [version, plan, test_dir / "main.fmf", script]

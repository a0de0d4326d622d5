"""What an exported gate checks: scenarios with expectations, trials, soak, and how to
call the verifier on the test machine (baked in at export time, overridable there)."""

from __future__ import annotations

import math
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from verifier.errors import BadInput
from verifier.matrix.spec import MatrixSpec, check_expectation
from verifier.scenario import load_scenario, scenarios_dir

# Measured here (2 shared cores, builds cached): a cell of one 4 s trial took 6.0-6.5 s
# wall in all (server start, the final quiet probe, stop), a hang at 1.2 s confirmed and
# dumped with gdb 6.2 s. Confirmation may wait up to 20 s for a full fd table to free a
# descriptor; 60 s a trial covers that with room for a slower test machine.
TRIAL_OVERHEAD_S = 60.0
CHECK_OVERHEAD_S = 60.0  # verifier start, amplifier library compile
_TEST_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")


def default_verifier_command() -> str:
    """This verifier, as the test machine should call it (the same interpreter)."""
    return shlex.join([sys.executable, "-m", "verifier"])


@dataclass(frozen=True)
class GateCheck:
    scenario: str
    expect: str  # as `verify --expect` takes it: pass, hang, hang:CLASS, crash


@dataclass(frozen=True)
class ExportGate:
    name: str  # the test's name (a DEP-8 test file, a tmt test directory)
    checks: tuple[GateCheck, ...]
    trials: int
    soak_s: float
    amplify: str | None
    verifier: str  # a shell command line

    def duration_s(self) -> float:
        """An upper bound on the gate's run time, for CI timeouts (tmt's `duration`)."""
        per_check = self.trials * (self.soak_s + TRIAL_OVERHEAD_S) + CHECK_OVERHEAD_S
        return per_check * len(self.checks)


def _verify_expectation(text: str) -> str:
    if text == "n/a":
        raise BadInput("an exported gate cannot expect n/a (it tests one binary that must apply)")
    return check_expectation(text)


def parse_expects(scenarios: Sequence[str], expects: Sequence[str]) -> dict[str, str]:
    """``--expect EXP`` (every scenario) and ``--expect SCENARIO=EXP`` (one): default pass."""
    chosen = dict.fromkeys(scenarios, "pass")
    for text in expects:
        scenario, equals, expectation = text.rpartition("=")
        if not equals:
            chosen = dict.fromkeys(chosen, _verify_expectation(text))
            continue
        if scenario not in chosen:
            raise BadInput(f"--expect {text!r}: {scenario!r} is not one of the --scenario names")
        chosen[scenario] = _verify_expectation(expectation)
    return chosen


def _check_name(name: str) -> str:
    if not _TEST_NAME_RE.match(name):
        raise BadInput(f"bad test name {name!r} (lower-case letters, digits, . + -)")
    return name


def gate_from_options(
    name: str,
    scenarios: Sequence[str],
    expects: Sequence[str],
    trials: int,
    soak_s: float,
    amplify: str | None,
    verifier: str | None,
) -> ExportGate:
    for scenario in scenarios:
        load_scenario(scenario)  # unknown names fail here, not on the test machine
    chosen = parse_expects(scenarios, expects)
    return ExportGate(
        name=_check_name(name),
        checks=tuple(GateCheck(s, e) for s, e in chosen.items()),
        trials=trials,
        soak_s=soak_s,
        amplify=amplify,
        verifier=verifier or default_verifier_command(),
    )


def gate_from_matrix(
    spec: MatrixSpec, patch_set: str | None, name: str, verifier: str | None
) -> ExportGate:
    """The checks of one patch set of a matrix (default: the last one, the candidate)."""
    names = [s.name for s in spec.patch_sets]
    chosen = patch_set or names[-1]
    if chosen not in names:
        raise BadInput(f"--patch-set {chosen!r} is not in {spec.path.name} ({', '.join(names)})")
    checks = []
    for scenario in spec.scenarios:
        if scenario.path.parent.resolve() != scenarios_dir().resolve():
            raise BadInput(f"scenario {scenario.name}: export only named scenarios, not files")
        expectation = spec.expectation(chosen, scenario.name)
        checks.append(GateCheck(scenario.name, _verify_expectation(expectation)))
    return ExportGate(
        name=_check_name(name),
        checks=tuple(checks),
        trials=spec.trials,
        soak_s=spec.soak_s,
        amplify=spec.amplify,
        verifier=verifier or default_verifier_command(),
    )


def duration_text(seconds: float) -> str:
    """tmt's duration syntax, in whole minutes (never below 10m: tmt's default is 5m)."""
    return f"{max(10, math.ceil(seconds / 60))}m"

"""Run the known bugs against one build: every applicable bug is a matrix cell (one
source@ref row, one patch set, one column per bug), run by the matrix's runner and
executors and judged by its gate; the bugs the build cannot have are listed as skipped
cells with the reason, so JUnit, JSON and HTML show the whole suite.

Every cell expects ``pass``: a release gate wants none of the known bugs. A bug that
shows fails its cell (exit 15, as the matrix); one the build cannot have is skipped.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from verifier.build.builder import configure_has_tls
from verifier.build.versions import parse_version
from verifier.errors import BadInput, ExitStatus, NoTls
from verifier.knownbugs.applicability import BuildFacts, Decision, changed_lines, decide, shown
from verifier.knownbugs.spec import KnownBug, known_bugs_dir
from verifier.matrix.cells import CellResult
from verifier.matrix.executor import Executor
from verifier.matrix.gate import CellState, GateReport, JudgedCell, build_gate
from verifier.matrix.plan import open_source, source_label
from verifier.matrix.runner import CellDone, run_matrix
from verifier.matrix.spec import DEFAULT_EXPECTATION, MatrixSpec, PatchSet
from verifier.paths import CacheLayout
from verifier.verdict.verdict import Verdict
from verifier.vocabulary import VerdictKind

AS_SHIPPED = "as-shipped"
WITH_PATCHES = "with-patches"


@dataclass(frozen=True)
class SuiteOptions:
    trials: int = 1
    soak_s: float = 20.0
    confidence: float = 0.95
    amplify: str | None = None  # None: each bug's scenario's own (told)
    tls: bool = False  # build with --enable-tls (--tls): bugs that need TLS can be soaked


@dataclass
class SuiteReport:
    row: str  # source@ref
    commit: str
    version: str
    decisions: list[Decision]
    gate: GateReport

    @property
    def status(self) -> ExitStatus:
        return self.gate.status

    def cell(self, bug_id: str) -> JudgedCell:
        return next(c for c in self.gate.cells if c.result.scenario == bug_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "commit": self.commit,
            "version": self.version,
            "bugs": [
                {**d.bug.to_json(), **d.to_json(), "cell": self.cell(d.bug.id).to_json()}
                for d in self.decisions
            ],
            "gate": self.gate.to_json(),
        }


def _skipped(decision: Decision, row: str, patch_set: str, commit: str) -> JudgedCell:
    """A bug the build cannot have, as a cell: NOT APPLICABLE, skipped, never soaked."""
    result = CellResult(
        key=f"known-bug-{decision.bug.id}-{commit[:12]}",
        row=row,
        patch_set=patch_set,
        scenario=decision.bug.id,
        commit=commit,
        host=socket.gethostname(),
        run_dir="",
        started=time.time(),
        seconds=0.0,
        verdict=Verdict(
            VerdictKind.NOT_APPLICABLE, f"NOT APPLICABLE: {decision.state}: {decision.reason}"
        ),
    )
    return JudgedCell(result, DEFAULT_EXPECTATION, CellState.SKIPPED)


def run_suite(
    bugs: Sequence[KnownBug],
    source: str,
    ref: str | None,
    patches: Sequence[Path],
    layout: CacheLayout,
    executor: Executor,
    options: SuiteOptions,
    *,
    use_cache: bool = True,
    on_cell: CellDone | None = None,
) -> SuiteReport:
    """``source`` as the matrix takes it ("debian[:VERSION]", a URL or an absolute path)."""
    started = time.monotonic()
    choice = open_source(source, layout)
    chosen = ref or choice.default_ref
    if chosen is None:
        raise BadInput("--ref is required with --repo (e.g. --ref 1.4.6)")
    commit = choice.git.resolve(chosen)
    if options.tls and not configure_has_tls(choice.git.repo, commit):
        raise NoTls(f"--tls: {chosen} has no ./configure --enable-tls (TLS arrived in 1.5.13)")
    facts = BuildFacts(
        repo=choice.git.repo,
        commit=commit,
        version=parse_version(choice.git.describe(commit)),
        changed_lines=changed_lines(patches),
        tls=options.tls,
    )
    decisions = [decide(bug, facts) for bug in bugs]
    patch_set = WITH_PATCHES if patches else AS_SHIPPED
    row = f"{source_label(source)}@{chosen}"
    soaked = [d.bug for d in decisions if d.soaked]
    if soaked:
        spec = MatrixSpec(
            path=known_bugs_dir(),
            name="known bugs",
            sources=(source,),
            refs=(chosen,),
            scenarios=tuple(replace(b.scenario, name=b.id) for b in soaked if b.scenario),
            patch_sets=(PatchSet(patch_set, tuple(patches)),),
            trials=options.trials,
            soak_s=options.soak_s,
            confidence=options.confidence,
            amplify=options.amplify,
            tls=options.tls,
            reference=patch_set,
        )
        gate = run_matrix(spec, layout, executor, use_cache=use_cache, on_cell=on_cell)
    else:
        gate = build_gate("known bugs", str(known_bugs_dir()), executor.name, [], {}, {}, 0.95)
    ran = {c.result.scenario: c for c in gate.cells}
    gate.cells = [
        ran[d.bug.id] if d.soaked else _skipped(d, row, patch_set, commit) for d in decisions
    ]
    gate.seconds = time.monotonic() - started
    return SuiteReport(row, commit, shown(facts.version), decisions, gate)

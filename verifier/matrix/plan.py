"""From a matrix spec to cells: resolve each source's ref to a commit, read the patch and
scenario texts, and key each cell by everything that can change its answer.

The key covers the source and the resolved commit, each patch's content (in order), the
scenario file's content, the shared verify options and the toolchain identity (compiler,
flags, CPU), plus the verifier's version: the same inputs give the same key on a rerun,
and editing one patch set changes only the keys of its cells. Expectations are not in the
key: changing what a cell should do re-judges it without re-soaking it.
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier import __version__
from verifier.errors import BadInput
from verifier.matrix.cells import CellJob, CellOptions
from verifier.matrix.spec import MatrixSpec, is_debian, is_remote
from verifier.paths import CacheLayout
from verifier.scenario import Scenario
from verifier.source.select import SourceChoice, choose_source
from verifier.stress.workload_file import Workload, load_workload
from verifier.util.hashing import digest

KEY_SCHEMA = "matrix-cell/1"


@dataclass(frozen=True)
class PlannedCell:
    job: CellJob
    expectation: str
    reference: str  # the patch set this cell's row compares against


def cell_key(
    source_label: str,
    commit: str,
    patch_texts: list[str],
    scenario_text: str,
    options: CellOptions,
    toolchain: dict[str, str],
) -> str:
    return digest(
        KEY_SCHEMA,
        __version__,
        source_label,
        commit,
        [digest(text) for text in patch_texts],
        digest(scenario_text),
        options.to_json(),
        toolchain,
    )[:24]


def open_source(source: str, layout: CacheLayout) -> SourceChoice:
    """The ``SourceChoice`` for a matrix source string (imports Debian's package once)."""
    if is_debian(source):
        return choose_source(None, source, layout)
    return choose_source(source, None, layout)


def source_label(source: str) -> str:
    """How a row names its source: as written for Debian and URLs, the last path part
    for a local repository (the JUnit classname stays readable)."""
    if is_debian(source) or is_remote(source):
        return source
    return source.rstrip("/").rsplit("/", 1)[-1] or source


def workload_text(scenario: Scenario, override: Workload | None) -> str:
    """The text of the workload file a cell runs: ``--workload``'s, else the scenario's
    own when it is a file of its own ("" for churn scenarios and inline workloads, whose
    text is the scenario's)."""
    if override is not None:
        return override.path.read_text(encoding="utf-8") if override.path else ""
    if not scenario.workload_name:
        return ""
    own = load_workload(scenario.workload_name) if scenario.workload is None else scenario.workload
    if own.path is None or own.path == scenario.path:
        return ""
    return own.path.read_text(encoding="utf-8")


def plan_cells(
    spec: MatrixSpec, layout: CacheLayout, toolchain: dict[str, str]
) -> list[PlannedCell]:
    """Every cell of the matrix, in grid order (rows: source@ref x patch set)."""
    options = CellOptions(
        spec.trials, spec.soak_s, spec.confidence, spec.amplify, spec.sanitize, spec.tls
    )
    patch_texts = {
        s.name: tuple((p.name, p.read_text(encoding="utf-8", errors="replace")) for p in s.patches)
        for s in spec.patch_sets
    }
    scenario_texts = {s.name: s.path.read_text(encoding="utf-8") for s in spec.scenarios}
    workload_texts = {s.name: workload_text(s, spec.workload) for s in spec.scenarios}
    cells: list[PlannedCell] = []
    for source in spec.sources:
        choice = open_source(source, layout)
        refs = spec.refs or (choice.default_ref,)
        for ref in refs:
            if ref is None:
                raise BadInput(
                    f"matrix {spec.path.name}: source {source} has no default ref; give refs"
                )
            commit = choice.git.resolve(ref)
            for patch_set in spec.patch_sets:
                for scenario in spec.scenarios:
                    patches = patch_texts[patch_set.name]
                    key = cell_key(
                        choice.label,
                        commit,
                        [text for _, text in patches],
                        scenario_texts[scenario.name] + workload_texts[scenario.name],
                        options,
                        toolchain,
                    )
                    job = CellJob(
                        key=key,
                        row=f"{source_label(source)}@{ref}",
                        source=source,
                        ref=ref,
                        commit=commit,
                        patch_set=patch_set.name,
                        patches=patches,
                        scenario=scenario.name,
                        scenario_text=scenario_texts[scenario.name],
                        options=options,
                        workload_text=workload_texts[scenario.name],
                        workload_override=spec.workload is not None,
                    )
                    cells.append(
                        PlannedCell(
                            job, spec.expectation(patch_set.name, scenario.name), spec.reference
                        )
                    )
    return cells

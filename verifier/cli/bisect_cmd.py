"""``verifier bisect`` (flake-aware, resumable) and ``verifier bisect-step`` (for git)."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from verifier.bisect.commits import CommitRange, commit_range
from verifier.bisect.planner import FlakyBisector
from verifier.bisect.remote import source_spec
from verifier.bisect.session import (
    BisectSettings,
    Conclusion,
    conclude,
    default_endpoint_tries,
    open_session,
)
from verifier.bisect.state import BisectState, StepRow, load
from verifier.cli.options import (
    ProgressLine,
    confidence_option,
    open_workspace,
    patch_options,
    scenario_options,
    source_options,
    stack,
    verify_options,
)
from verifier.cluster.dask import DASK_PREFIX, DaskCluster
from verifier.errors import BadInput, ExitStatus
from verifier.report.bisect_report import (
    STEP_HEADERS,
    final_line,
    live_line,
    report_document,
    step_cells,
    steps_table,
    write_report,
)
from verifier.scenario import load_scenario
from verifier.source.git_source import GitSource
from verifier.verify import VerifyCore

search_options = stack(
    click.option("--min-soak", type=click.FloatRange(1.0), default=3.0, show_default=True),
    click.option(
        "--max-soak",
        type=click.FloatRange(1.0),
        default=60.0,
        show_default=True,
        help="Longest soak of one step (seconds).",
    ),
    click.option(
        "--endpoint-soak",
        type=click.FloatRange(1.0),
        default=60.0,
        show_default=True,
        help="Soak budget for checking each endpoint.",
    ),
    click.option(
        "--endpoint-tries",
        type=click.IntRange(1),
        default=None,
        help="Soaks of the bad end before calling it not bad (default 3; 12 with --amplify "
        "auto, as each try stretches other points).",
    ),
    click.option("--max-steps", type=click.IntRange(1), default=60, show_default=True),
)


@click.command("bisect")
@source_options
@click.option("--good", help="A commit without the hang (required unless --replay).")
@click.option("--bad", help="A commit with the hang (required unless --replay).")
@click.option(
    "--find-fix",
    is_flag=True,
    help="Find the fix: --bad is the older commit that hangs, --good the newer.",
)
@patch_options
@scenario_options
@confidence_option
@search_options
@click.option(
    "--report",
    "hunt_report",
    metavar="SIGNATURE|KIND",
    default=None,
    help="With --sanitize: hunt this sanitizer report (its signature, kind or class); "
    "another report on a commit is another bug.",
)
@click.option("--restart", is_flag=True, help="Forget saved progress and start over.")
@click.option(
    "--executor",
    default="local",
    show_default=True,
    help="Where soaks run: local, or dask://HOST:PORT (several commits at once, one per "
    "worker machine).",
)
@click.option(
    "--shared-cache",
    is_flag=True,
    help="With --executor dask://: the workers share one build cache (VERIFIER_CACHE_DIR "
    "on shared storage), so a commit built by one is built for all.",
)
@click.option(
    "--replay",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Replay a saved state file (no builds, no soaks) and print the report.",
)
def bisect_command(
    repo: str | None,
    source: str | None,
    cache_dir: Path | None,
    good: str | None,
    bad: str | None,
    find_fix: bool,
    patches: tuple[str, ...],
    reverse: bool,
    cflags: str | None,
    sanitize: str | None,
    tls: bool,
    rebuild: bool,
    restart: bool,
    executor: str,
    shared_cache: bool,
    replay: Path | None,
    **params: Any,
) -> ExitStatus:
    """Find the commit that introduced (or, with --find-fix, fixed) a hang."""
    started = time.time()
    workspace = open_workspace(repo, source, cache_dir)
    git = workspace.source.git
    if replay is not None:
        return _replay(git, replay)
    if not good or not bad:
        raise BadInput("--good and --bad are required (or --replay STATE.json)")
    if shared_cache and not executor.startswith(DASK_PREFIX):
        raise BadInput(
            "--shared-cache is for --executor dask://HOST:PORT (a local bisect has one cache)"
        )
    settings = _settings(params)  # takes the search options out of params
    options = verify_options(**params)
    if settings.endpoint_tries == 0:
        settings = replace(settings, endpoint_tries=default_endpoint_tries(options))
    request = workspace.request(good, patches, reverse, cflags, rebuild, sanitize, tls)
    commits = commit_range(git, good, bad, find_fix)
    progress = ProgressLine()
    core = VerifyCore(workspace.builder, workspace.cache.tools, progress)
    cluster = open_cluster(executor)
    with (
        contextlib.closing(cluster) if cluster else contextlib.nullcontext(),
        open_session(
            core,
            git,
            workspace.source.label,
            commits,
            request,
            options,
            settings,
            workspace.cache.bisects,
            restart=restart,
            echo=LiveTable(progress).row,
            cluster=cluster,
            remote_source=source_spec(repo, source),
            shared_cache=shared_cache,
        ) as session,
    ):
        if session.resumed_steps:
            click.echo(
                f"resuming: {session.resumed_steps} step(s) done, state {session.state_path}",
                err=True,
            )
        what = "fix" if find_fix else "culprit"
        click.echo(
            f"bisecting {commits.n + 1} commits for the {what} of "
            f"{options.scenario.name}; state: {session.state_path}",
            err=True,
        )
        try:
            conclusion = session.bisection.run()
        finally:
            progress.done()
        state = session.bisection.state
        report_path = session.state_path.parent / "report.json"
        write_report(report_path, report_document(git, state, conclusion, time.time() - started))
    return _print_conclusion(git, state, conclusion, report_path, find_fix)


def open_cluster(executor: str) -> DaskCluster | None:
    """None for ``local``; the cluster for ``dask://HOST:PORT``."""
    if executor == "local":
        return None
    if executor.startswith(DASK_PREFIX) and len(executor) > len(DASK_PREFIX):
        return DaskCluster.from_spec(executor)
    raise BadInput(f"bad --executor {executor!r} (local or dask://HOST:PORT)")


def _settings(params: dict[str, Any]) -> BisectSettings:
    """The search options, taken out of ``params`` (endpoint tries 0: the default for the
    amplifier, decided once the options are known)."""
    max_soak = params.pop("max_soak")
    return BisectSettings(
        confidence=params["confidence"],
        min_soak_s=min(params.pop("min_soak"), max_soak),
        max_soak_s=max_soak,
        endpoint_soak_s=params.pop("endpoint_soak"),
        endpoint_tries=params.pop("endpoint_tries") or 0,
        max_steps=params.pop("max_steps"),
    )


def _print_conclusion(
    git: GitSource, state: BisectState, conclusion: Conclusion, report: Path, find_fix: bool
) -> ExitStatus:
    click.echo("\n" + steps_table(state))
    for bug in conclusion.other_bugs:
        click.echo(f"other bug (not used as evidence): {bug.sha and bug.sha[:12]} {bug.reason}")
    if conclusion.note:
        click.echo(f"note: {conclusion.note}")
    click.echo(f"report: {report}")
    click.secho(final_line(git, conclusion, find_fix), bold=True)
    if conclusion.answer is None or not conclusion.result.confident:
        return ExitStatus.INCONCLUSIVE
    return ExitStatus.SUCCESS


def register(cli: click.Group) -> None:
    cli.add_command(bisect_command)


class LiveTable:
    """Bisect steps printed as they happen, under one header."""

    def __init__(self, progress: ProgressLine) -> None:
        self.progress = progress
        self.count = 0

    def row(self, row: StepRow) -> None:
        self.progress.done()
        if not self.count:
            click.echo(live_line(STEP_HEADERS))
        self.count += 1
        click.echo(live_line(step_cells(self.count, row)))


def _replay(git: GitSource, path: Path) -> ExitStatus:
    """Recompute the posterior from a saved state's events and print the report."""
    state = load(path)
    bisector = FlakyBisector.from_dict(state.bisector)
    click.echo(steps_table(state))
    result = bisector.result()
    click.echo(
        json.dumps(
            {
                "culprit_index": result.culprit,
                "posterior": result.probability,
                "group": list(result.group),
                "confident": result.confident,
            }
        )
    )
    commits = CommitRange(tuple(state.shas), state.find_fix)
    symbols = load_scenario(state.params["scenario"]).requires_symbols
    conclusion = conclude(bisector, commits, state, symbols)
    click.echo(final_line(git, conclusion, state.find_fix))
    return ExitStatus.SUCCESS

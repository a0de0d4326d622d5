"""``verifier bisect`` (flake-aware, resumable) and ``verifier bisect-step`` (for git)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from verifier.bisect.commits import commit_range
from verifier.bisect.planner import FlakyBisector
from verifier.bisect.session import Bisection, BisectSettings
from verifier.bisect.state import BisectState, StepRow, load
from verifier.bisect.tester import CommitTester
from verifier.cli.options import (
    ProgressLine,
    open_workspace,
    patch_options,
    scenario_options,
    source_options,
)
from verifier.errors import ExitStatus, VerifierError
from verifier.report.bisect_report import (
    STEP_HEADERS,
    final_line,
    report_document,
    step_cells,
    steps_table,
    write_report,
)
from verifier.report.table import table
from verifier.scenario import load_scenario
from verifier.source.git_source import GitSource
from verifier.util.hashing import digest
from verifier.verdict.verdict import HANG, PASS
from verifier.verify import VerifyOptions, verify

GOOD, BAD, SKIP = 0, 1, 125


def _options(
    scenario: str,
    amplify: str | None,
    delay_us: int | None,
    amplify_every: int,
    threads: int | None,
    concurrency: int | None,
    probe_client: str,
    **extra: Any,
) -> VerifyOptions:
    return VerifyOptions(
        scenario=load_scenario(scenario),
        amplify=amplify,
        delay_us=delay_us,
        amplify_every=amplify_every,
        threads=threads,
        concurrency=concurrency,
        probe_client=None if probe_client == "auto" else probe_client,
        **extra,
    )


def register(cli: click.Group) -> None:
    @cli.command("bisect")
    @source_options
    @click.option("--good", required=True, help="A commit without the hang.")
    @click.option("--bad", required=True, help="A commit with the hang.")
    @click.option(
        "--find-fix",
        is_flag=True,
        help="Find the fix: --bad is the older commit that hangs, --good the newer.",
    )
    @patch_options
    @scenario_options
    @click.option(
        "--confidence",
        type=click.FloatRange(0.5, 0.999),
        default=0.95,
        show_default=True,
        help="Stop when the culprit's posterior reaches this.",
    )
    @click.option("--min-soak", type=click.FloatRange(1.0), default=3.0, show_default=True)
    @click.option(
        "--max-soak",
        type=click.FloatRange(1.0),
        default=60.0,
        show_default=True,
        help="Longest soak of one step (seconds).",
    )
    @click.option(
        "--endpoint-soak",
        type=click.FloatRange(1.0),
        default=60.0,
        show_default=True,
        help="Soak budget for checking each endpoint.",
    )
    @click.option("--max-steps", type=click.IntRange(1), default=60, show_default=True)
    @click.option("--restart", is_flag=True, help="Forget saved progress and start over.")
    @click.option(
        "--replay",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Replay a saved state file (no builds, no soaks) and print the report.",
    )
    def bisect(
        repo: str | None,
        source: str | None,
        cache_dir: Path | None,
        good: str,
        bad: str,
        find_fix: bool,
        patches: tuple[str, ...],
        reverse: bool,
        cflags: str | None,
        rebuild: bool,
        confidence: float,
        min_soak: float,
        max_soak: float,
        endpoint_soak: float,
        max_steps: int,
        restart: bool,
        replay: Path | None,
        **flood: Any,
    ) -> ExitStatus:
        """Find the commit that introduced (or, with --find-fix, fixed) a hang."""
        started = time.time()
        workspace = open_workspace(repo, source, cache_dir)
        git = workspace.source.git
        if replay is not None:
            return _replay(git, replay)
        options = _options(**flood)
        request = workspace.request(good, patches, reverse, cflags, rebuild)
        commits = commit_range(git, good, bad, find_fix)
        settings = BisectSettings(
            confidence=confidence,
            min_soak_s=min(min_soak, max_soak),
            max_soak_s=max_soak,
            endpoint_soak_s=endpoint_soak,
            max_steps=max_steps,
        )
        params = {
            "source": workspace.source.label,
            "good": commits.good,
            "bad": commits.bad,
            "find_fix": find_fix,
            "patches": [digest(p.read_text()) for p in request.patches],
            "reverse": reverse,
            "scenario": options.scenario.name,
            "scenario_file": digest(options.scenario.path.read_text()),
            "amplify": options.amplify,
            "delay_us": options.delay_us,
            "amplify_every": options.amplify_every,
            "confidence": confidence,
            "min_soak": min_soak,
            "max_soak": max_soak,
        }
        key = digest(params)[:16]
        state_dir = workspace.cache.bisects / key
        state_path = state_dir / "state.json"
        if restart and state_dir.exists():
            shutil.rmtree(state_dir)
        if state_path.exists():
            state = load(state_path)
            click.echo(f"resuming: {len(state.steps)} step(s) done, state {state_path}", err=True)
        else:
            state = BisectState(params=params, shas=list(commits.shas), find_fix=find_fix)
        what = "fix" if find_fix else "culprit"
        click.echo(
            f"bisecting {commits.n + 1} commits for the {what} of "
            f"{options.scenario.name}; state: {state_path}",
            err=True,
        )
        progress = ProgressLine()
        header_shown = [False]

        def echo(row: StepRow) -> None:
            progress.done()
            lines = table([step_cells(len(state.steps), row)], STEP_HEADERS).splitlines()
            click.echo("\n".join(lines if not header_shown[0] else lines[2:]))
            header_shown[0] = True

        tester = CommitTester(
            workspace.builder, request, options, workspace.cache.tools, state_dir / "runs", progress
        )
        bisection = Bisection(git, commits, tester, settings, state, state_path, echo)
        try:
            conclusion = bisection.run()
        finally:
            progress.done()
        document = report_document(git, state, conclusion, time.time() - started)
        write_report(state_dir / "report.json", document)
        click.echo("\n" + steps_table(state))
        for bug in conclusion.other_bugs:
            click.echo(f"other bug (not used as evidence): {bug['sha'][:12]} {bug['reason']}")
        if conclusion.note:
            click.echo(f"note: {conclusion.note}")
        click.echo(f"report: {state_dir / 'report.json'}")
        click.secho(final_line(git, conclusion, find_fix), bold=True)
        if conclusion.answer is None or not conclusion.result.confident:
            return ExitStatus.INCONCLUSIVE
        return ExitStatus.SUCCESS

    @cli.command("bisect-step")
    @click.option(
        "--repo",
        default=".",
        show_default=True,
        metavar="PATH",
        help="The repository git bisect is running in; its HEAD is tested.",
    )
    @click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
    @click.option(
        "--find-fix",
        is_flag=True,
        help="For `git bisect start --term-old=hangs --term-new=fixed`: a hang is old (0), "
        "no hang is new (1).",
    )
    @patch_options
    @scenario_options
    @click.option("--soak", "soak_s", type=click.FloatRange(1.0), default=20.0, show_default=True)
    @click.option("--trials", type=click.IntRange(1), default=1, show_default=True)
    def bisect_step(
        repo: str,
        cache_dir: Path | None,
        find_fix: bool,
        patches: tuple[str, ...],
        reverse: bool,
        cflags: str | None,
        rebuild: bool,
        soak_s: float,
        trials: int,
        **flood: Any,
    ) -> NoReturn:
        """Test HEAD for `git bisect run`: exit 0 good, 1 bad, 125 skip, never 128 or more."""
        _exit_for_git(
            lambda: _step(
                repo, cache_dir, find_fix, patches, reverse, cflags, rebuild, soak_s, trials, flood
            )
        )


def _step(
    repo: str,
    cache_dir: Path | None,
    find_fix: bool,
    patches: tuple[str, ...],
    reverse: bool,
    cflags: str | None,
    rebuild: bool,
    soak_s: float,
    trials: int,
    flood: dict[str, Any],
) -> int:
    workspace = open_workspace(None, None, cache_dir)
    git = GitSource(repo, workspace.cache.mirrors, mirror=False)
    workspace.source = type(workspace.source)(git, None, repo)
    head = git.repo.head.commit.hexsha
    options = _options(trials=trials, soak_s=soak_s, **flood)
    request = workspace.request(head, patches, reverse, cflags, rebuild)
    run_dir = workspace.cache.runs / f"bisect-step-{head[:12]}-{os.getpid()}"
    outcome = verify(workspace.builder, request, options, workspace.cache.tools, run_dir)
    verdict = outcome.verdict
    click.echo(f"bisect-step {head[:12]}: {verdict.headline}", err=True)
    if verdict.kind == HANG and verdict.hang_class == options.scenario.expect:
        return GOOD if find_fix else BAD
    if verdict.kind == PASS:
        return BAD if find_fix else GOOD
    return SKIP  # does not build, not applicable, another bug, inconclusive


def _exit_for_git(step: Any) -> NoReturn:
    """git bisect run aborts on exit codes >= 128: map every failure to a skip instead."""

    def on_signal(signum: int, _frame: object) -> NoReturn:
        click.echo(f"bisect-step: signal {signum}, skipping this commit", err=True)
        os._exit(SKIP)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        code = step()
    except VerifierError as error:
        click.echo(f"bisect-step: {error.message} (skip)", err=True)
        code = SKIP
    except BaseException as error:
        click.echo(f"bisect-step: {type(error).__name__}: {error} (skip)", err=True)
        code = SKIP
    sys.stdout.flush()
    os._exit(code)


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
    from verifier.bisect.commits import CommitRange
    from verifier.bisect.session import Conclusion

    commits = CommitRange(tuple(state.shas), state.find_fix)
    conclusion = Conclusion(
        result,
        commits.answer(result.group[0]) if len(result.group) == 1 else None,
        commits.answer_group(result.group),
        result.group_probability,
    )
    click.echo(final_line(git, conclusion, state.find_fix))
    return ExitStatus.SUCCESS

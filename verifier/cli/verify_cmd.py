"""``verifier verify`` and ``verifier scenarios``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from verifier.build.builder import BuildRequest
from verifier.cli.options import (
    ProgressLine,
    Workspace,
    default_run_dir,
    open_workspace,
    patch_options,
    scenario_options,
    soak_option,
    source_options,
    verify_options,
)
from verifier.errors import BadInput, ExitStatus
from verifier.report.table import table
from verifier.report.verify_report import render, write_report
from verifier.scenario import DEFAULT_SCENARIO, list_scenarios
from verifier.verdict.verdict import expectation_met
from verifier.verify import VerifyOptions, VerifyOutcome, verify

_EXPECT_RE = re.compile(r"^(pass|crash|hang(:[\w-]+)?)$")


def verify_and_report(
    workspace: Workspace, request: BuildRequest, options: VerifyOptions, run_dir: Path
) -> VerifyOutcome:
    """Run verify with a live progress line, then write the JSON and print the summary."""
    progress = ProgressLine()
    try:
        outcome = verify(
            workspace.builder, request, options, workspace.cache.tools, run_dir, progress
        )
    finally:
        progress.done()
    write_report(outcome, sys.argv)
    click.echo(render(outcome))
    return outcome


def register(cli: click.Group) -> None:
    @cli.command("scenarios")
    def scenarios() -> ExitStatus:
        """List the scenarios: what each targets and the server options it needs."""
        rows = [
            (
                s.name + (" (default)" if s.name == DEFAULT_SCENARIO else ""),
                s.summary,
                s.expect,
                ", ".join(s.amplifiers()),
                f"-c {s.maxconns} (fd limit {s.maxconns}) " + " ".join(s.server_args),
                ", ".join(s.requires_symbols),
            )
            for s in list_scenarios()
        ]
        click.echo(
            table(
                rows,
                [
                    "scenario",
                    "targets",
                    "signature",
                    "amplifiers",
                    "server options",
                    "needs symbols",
                ],
            )
        )
        for s in list_scenarios():
            click.echo(f"\n{s.name}: {s.targets}")
        return ExitStatus.SUCCESS

    @cli.command("verify")
    @source_options
    @click.option("--ref", help="Tag, branch or SHA (default with --source debian: Debian's tree).")
    @patch_options
    @scenario_options
    @soak_option
    @click.option(
        "--trials",
        type=click.IntRange(1),
        default=3,
        show_default=True,
        help="Trials (each a fresh server); stops at the first hang.",
    )
    @click.option(
        "--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True
    )
    @click.option(
        "--baseline",
        is_flag=True,
        help="Measure the time-to-hang without the last --patch first, then size the soak "
        "so that 'fixed' holds at --confidence against that rate.",
    )
    @click.option(
        "--expect",
        default=None,
        metavar="pass|hang|hang:CLASS|crash",
        help="For CI: exit 0 when the verdict is this, 12 otherwise.",
    )
    @click.option(
        "--run-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where to keep logs and evidence (default: under the cache).",
    )
    def verify_command(
        repo: str | None,
        source: str | None,
        cache_dir: Path | None,
        ref: str | None,
        patches: tuple[str, ...],
        reverse: bool,
        cflags: str | None,
        rebuild: bool,
        scenario: str,
        amplify: str | None,
        delay_us: int | None,
        amplify_every: int,
        soak_s: float,
        threads: int | None,
        concurrency: int | None,
        probe_client: str,
        trials: int,
        confidence: float,
        baseline: bool,
        expect: str | None,
        run_dir: Path | None,
    ) -> ExitStatus:
        """Build, flood and probe memcached; say with evidence whether it hangs.

        HANG and CRASH are proof (exit 1). No hang is a bound, never a bare PASS (exit 0).
        """
        if expect and not _EXPECT_RE.match(expect):
            raise BadInput(f"bad --expect {expect!r} (pass, crash, hang or hang:CLASS)")
        options = verify_options(
            scenario,
            amplify,
            delay_us,
            amplify_every,
            threads,
            concurrency,
            probe_client,
            trials=trials,
            soak_s=soak_s,
            confidence=confidence,
            baseline=baseline,
        )
        workspace = open_workspace(repo, source, cache_dir)
        request = workspace.request(ref, patches, reverse, cflags, rebuild)
        target = run_dir or default_run_dir(
            workspace.cache.runs, request.ref, options.scenario.name
        )
        outcome = verify_and_report(workspace, request, options, target)
        if expect:
            met = expectation_met(outcome.verdict, expect)
            click.echo(f"expect {expect}: {'met' if met else 'NOT met'}", err=True)
            return ExitStatus.SUCCESS if met else ExitStatus.EXPECTATION_FAILED
        return outcome.verdict.status

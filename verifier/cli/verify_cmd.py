"""``verifier verify`` and ``verifier scenarios``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from verifier.build.builder import BuildRequest
from verifier.cli.options import (
    ProgressLine,
    Workspace,
    confidence_option,
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
from verifier.run.target import Target, shipped_binary
from verifier.scenario import DEFAULT_SCENARIO, list_scenarios
from verifier.stress.workload_file import list_workloads
from verifier.verdict.verdict import Expectation
from verifier.verify import VerifyOptions, VerifyOutcome, verify

_SCENARIO_HEADERS = [
    "scenario", "targets", "hang class", "workload", "amplifiers", "server options", "symbols"
]  # fmt: skip
_WORKLOAD_HEADERS = ["workload", "summary", "groups", "commands", "events", "server"]


def verify_and_report(
    workspace: Workspace, request: BuildRequest | Target, options: VerifyOptions, run_dir: Path
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


@click.command("scenarios")
def scenarios_command() -> ExitStatus:
    """List the scenarios: what each targets and the server options it needs."""
    known = list_scenarios()
    rows = [
        (
            s.name + (" (default)" if s.name == DEFAULT_SCENARIO else ""),
            s.summary,
            s.hang_class or "any",
            s.workload_name or "churn",
            ", ".join(s.amplifiers()),
            f"-c {s.maxconns} (fd limit {s.maxconns}) " + " ".join(s.server_args),
            ", ".join(s.requires_symbols),
        )
        for s in known
    ]
    click.echo(table(rows, _SCENARIO_HEADERS))
    for s in known:
        click.echo(f"\n{s.name}: {s.targets}")
    return ExitStatus.SUCCESS


@click.command("workloads")
def workloads_command() -> ExitStatus:
    """List the workloads: what the clients of each do (recipes/workloads/)."""
    rows = [
        (
            w.name,
            w.summary,
            ", ".join(f"{g.name} ({g.clients} {g.protocol} {g.connection})" for g in w.groups),
            len(w.commands),
            "; ".join(e.describe() for e in w.events),
            " ".join(w.server.args()),
        )
        for w in list_workloads()
    ]
    click.echo(table(rows, _WORKLOAD_HEADERS))
    return ExitStatus.SUCCESS


@click.command("verify")
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
@confidence_option
@click.option(
    "--baseline",
    is_flag=True,
    help="Measure the time-to-hang without the last --patch first, then size the soak "
    "so that 'fixed' holds at --confidence against that rate.",
)
@click.option(
    "--expect",
    default=None,
    metavar="pass|hang|hang:CLASS|crash|sanitizer[:REPORT]",
    help="For CI: exit 0 when the verdict is this, 12 otherwise. sanitizer:REPORT hunts a "
    "sanitizer report by its signature, kind or class (with --sanitize).",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to keep logs and evidence (default: under the cache).",
)
@click.option(
    "--binary",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Verify this memcached as shipped (no source, no build, no --patch).",
)
@click.option(
    "--debug-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --binary: a .build-id tree with its debug info (default /usr/lib/debug).",
)
def verify_command(
    expect: str | None,
    run_dir: Path | None,
    binary: Path | None,
    debug_dir: Path | None,
    repo: str | None,
    source: str | None,
    cache_dir: Path | None,
    ref: str | None,
    patches: tuple[str, ...],
    reverse: bool,
    cflags: str | None,
    sanitize: str | None,
    tls: bool,
    rebuild: bool,
    **soak: Any,
) -> ExitStatus:
    """Build, flood and probe memcached; say with evidence whether it hangs.

    HANG and CRASH are proof (exit 1). No hang is a bound, never a bare PASS (exit 0).
    """
    expectation = Expectation.parse(expect) if expect else None
    options = verify_options(
        hunt=expectation.hang_class if expectation else None,
        hunt_report=expectation.report if expectation else None,
        **soak,
    )
    if binary is not None:
        built = repo or source or ref or patches or reverse or cflags or sanitize or tls
        if built or options.baseline:
            raise BadInput(
                "--binary verifies the binary as shipped: no --repo/--source/--ref, "
                "--patch, --cflags, --sanitize, --tls or --baseline"
            )
        workspace = open_workspace(None, None, cache_dir)
        what: BuildRequest | Target = shipped_binary(binary, debug_dir, workspace.builder.recipes)
        label = binary.name
    else:
        if debug_dir is not None:
            raise BadInput("--debug-dir goes with --binary (a build has its own symbols)")
        workspace = open_workspace(repo, source, cache_dir)
        what = workspace.request(ref, patches, reverse, cflags, rebuild, sanitize, tls)
        label = what.ref
    folder = run_dir or default_run_dir(workspace.cache.runs, label, options.scenario.name)
    outcome = verify_and_report(workspace, what, options, folder)
    if expectation is None:
        return outcome.verdict.status
    met = expectation.met_by(outcome.verdict)
    click.echo(f"expect {expectation}: {'met' if met else 'NOT met'}", err=True)
    return ExitStatus.SUCCESS if met else ExitStatus.EXPECTATION_FAILED


def register(cli: click.Group) -> None:
    cli.add_command(scenarios_command)
    cli.add_command(workloads_command)
    cli.add_command(verify_command)

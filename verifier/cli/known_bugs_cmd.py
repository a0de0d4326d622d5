"""``verifier known-bugs``: which of memcached's known concurrency bugs a build still has."""

from __future__ import annotations

from pathlib import Path

import click

from verifier.cli.options import ProgressLine, cache_layout, source_options
from verifier.errors import BadInput, ExitStatus
from verifier.knownbugs.spec import load_known_bugs
from verifier.knownbugs.suite import SuiteOptions, run_suite
from verifier.matrix.cells import CellResult
from verifier.matrix.executor import open_executor
from verifier.report.html import render_html
from verifier.report.junit import junit_xml
from verifier.report.known_bugs_table import render_bug_list, render_suite
from verifier.report.matrix_grid import verdict_text
from verifier.resources import resolve_patch
from verifier.source.git_source import UPSTREAM_URL
from verifier.util.atomic import write_json, write_text
from verifier.vocabulary import AmplifierKind

_OUT = click.Path(dir_okay=False, path_type=Path)
_AMPLIFY = ("told", AmplifierKind.AUTO.value, AmplifierKind.NONE.value)


def matrix_source(repo: str | None, source: str | None) -> str:
    """The source as a matrix names it: "debian[:VERSION]", a URL, or an absolute path."""
    if repo and source:
        raise BadInput("give either --repo or --source, not both")
    if source:
        return source
    if repo is None:
        return UPSTREAM_URL
    path = Path(repo).expanduser()
    return str(path.resolve()) if path.exists() else repo


def register(cli: click.Group) -> None:
    @cli.command("known-bugs")
    @source_options
    @click.option("--ref", default=None, help="Ref to check (default with --source: Debian's).")
    @click.option("--patch", "patches", multiple=True, metavar="FILE", help="Patch (repeatable).")
    @click.option("--bug", "only", multiple=True, metavar="ID", help="Only this bug (repeatable).")
    @click.option("--list", "list_only", is_flag=True, help="List the known bugs and exit.")
    @click.option("--trials", default=1, show_default=True, type=click.IntRange(1, 1000))
    @click.option("--soak", "soak_s", default=20.0, show_default=True, type=float)
    @click.option(
        "--amplify",
        default="told",
        show_default=True,
        type=click.Choice(_AMPLIFY),
        help="told: each bug's scenario's own amplifier; auto: told nothing; none.",
    )
    @click.option("--junit", "junit_path", type=_OUT, help="Write JUnit XML (GitLab, Jenkins).")
    @click.option("--json", "json_path", type=_OUT, help="Write the whole result as JSON.")
    @click.option("--html", "html_path", type=_OUT, help="Write an HTML report with timelines.")
    @click.option(
        "--executor", default="local", show_default=True, metavar="local|dask://HOST:PORT"
    )
    @click.option("--no-cache", is_flag=True, help="Soak every cell again.")
    @click.option(
        "--tls", is_flag=True, help="Build with --enable-tls: bugs that need TLS are soaked too."
    )
    def known_bugs_command(
        repo: str | None,
        source: str | None,
        cache_dir: Path | None,
        ref: str | None,
        patches: tuple[str, ...],
        only: tuple[str, ...],
        list_only: bool,
        trials: int,
        soak_s: float,
        amplify: str,
        junit_path: Path | None,
        json_path: Path | None,
        html_path: Path | None,
        executor: str,
        no_cache: bool,
        tls: bool,
    ) -> ExitStatus:
        """Run every known bug that can be in this build and print one line per bug.

        Every bug is expected absent: exit 0 when none shows, 15 when one does, 8 when a
        cell had a harness error and none showed (as `verifier matrix`).
        """
        bugs = load_known_bugs(only=only)
        if list_only:
            click.echo(render_bug_list(bugs))
            return ExitStatus.SUCCESS
        if not 1.0 <= soak_s <= 7 * 86400.0:
            raise BadInput(f"--soak {soak_s:g} is out of range (1 to 604800 s)")
        layout = cache_layout(cache_dir)
        progress = ProgressLine()
        runner = open_executor(executor, layout, progress)
        options = SuiteOptions(
            trials, soak_s, amplify=None if amplify == "told" else amplify, tls=tls
        )

        def cell_done(result: CellResult, done: int, total: int) -> None:
            progress.done()
            click.echo(
                f"[{done}/{total}] {result.scenario}: {verdict_text(result)} "
                f"({result.seconds:.0f} s on {result.host})",
                err=True,
            )

        try:
            report = run_suite(
                bugs,
                matrix_source(repo, source),
                ref,
                [resolve_patch(p) for p in patches],
                layout,
                runner,
                options,
                use_cache=not no_cache,
                on_cell=cell_done,
            )
        finally:
            progress.done()
            runner.close()
        if json_path:
            write_json(json_path, report.to_json())
        if junit_path:
            write_text(junit_path, junit_xml(report.gate))
        if html_path:
            write_text(html_path, render_html(report.gate))
        click.echo(render_suite(report))
        return report.status

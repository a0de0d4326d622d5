"""``verifier matrix FILE.toml``: the packagers' release gate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from verifier.cli.options import ProgressLine, cache_layout, cache_option
from verifier.errors import ExitStatus
from verifier.matrix.cells import CellResult
from verifier.matrix.executor import open_executor
from verifier.matrix.runner import run_matrix
from verifier.matrix.spec import load_matrix
from verifier.report.html import render_html
from verifier.report.junit import junit_xml
from verifier.report.matrix_grid import render_matrix, verdict_text
from verifier.stress.workload_file import load_workload
from verifier.util.atomic import write_json, write_text

_OUT = click.Path(dir_okay=False, path_type=Path)


def register(cli: click.Group) -> None:
    @cli.command("matrix")
    @click.argument("matrix_file", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--junit", "junit_path", type=_OUT, help="Write JUnit XML (GitLab, Jenkins).")
    @click.option("--json", "json_path", type=_OUT, help="Write the whole result as JSON.")
    @click.option("--html", "html_path", type=_OUT, help="Write an HTML report with timelines.")
    @click.option(
        "--executor",
        default="local",
        show_default=True,
        metavar="local|dask://HOST:PORT",
        help="Where cells run: here one at a time, or one per worker of a Dask cluster.",
    )
    @click.option(
        "--no-cache", is_flag=True, help="Soak every cell again (results are still kept)."
    )
    @click.option(
        "--workload",
        metavar="NAME|FILE",
        default=None,
        help="What the clients do in every cell, instead of each scenario's own.",
    )
    @cache_option
    def matrix_command(
        matrix_file: Path,
        junit_path: Path | None,
        json_path: Path | None,
        html_path: Path | None,
        executor: str,
        no_cache: bool,
        workload: str | None,
        cache_dir: Path | None,
    ) -> ExitStatus:
        """Verify every source@ref x patch set x scenario cell against its expectation.

        Exit 0 when every cell meets its expectation, 15 when one does not, 8 when a cell
        had a harness error and none failed.
        """
        spec = load_matrix(matrix_file)
        if workload is not None:
            spec = dataclasses.replace(spec, workload=load_workload(workload))
        layout = cache_layout(cache_dir)
        progress = ProgressLine()
        runner = open_executor(executor, layout, progress)

        def cell_done(result: CellResult, done: int, total: int) -> None:
            progress.done()
            click.echo(
                f"[{done}/{total}] {result.row} {result.patch_set} x {result.scenario}: "
                f"{verdict_text(result)} ({result.seconds:.0f} s on {result.host})",
                err=True,
            )
            for note in result.notes:
                click.echo(f"  note: {note}", err=True)

        try:
            report = run_matrix(spec, layout, runner, use_cache=not no_cache, on_cell=cell_done)
        finally:
            progress.done()
            runner.close()
        if json_path:
            write_json(json_path, report.to_json())
        if junit_path:
            write_text(junit_path, junit_xml(report))
        if html_path:
            write_text(html_path, render_html(report))
        click.echo(render_matrix(report))
        return report.status

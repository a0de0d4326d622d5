"""``verifier export autopkgtest|tmt --out DIR``: the gate in a package's own CI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from verifier.errors import BadInput, ExitStatus
from verifier.export.autopkgtest import write_autopkgtest
from verifier.export.gate import ExportGate, gate_from_matrix, gate_from_options
from verifier.export.tmt import write_tmt
from verifier.matrix.spec import load_matrix
from verifier.scenario import AMPLIFIERS, DEFAULT_SCENARIO

DEFAULT_NAME = "memcached-hang-gate"


def _gate_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--out",
            "out",
            required=True,
            type=click.Path(file_okay=False, path_type=Path),
            help="Directory to write into (the files' paths inside it match the package's).",
        ),
        click.option("--name", default=DEFAULT_NAME, show_default=True, help="The test's name."),
        click.option(
            "--scenario",
            "scenarios",
            multiple=True,
            help=f"Scenario to check (repeatable; default {DEFAULT_SCENARIO}).",
        ),
        click.option(
            "--expect",
            "expects",
            multiple=True,
            metavar="EXP|SCENARIO=EXP",
            help="pass, hang, hang:CLASS or crash, for every scenario or one (default pass).",
        ),
        click.option("--trials", type=click.IntRange(1), default=3, show_default=True),
        click.option(
            "--soak", "soak_s", type=click.FloatRange(1.0), default=20.0, show_default=True
        ),
        click.option("--amplify", type=click.Choice(AMPLIFIERS), default=None),
        click.option(
            "--matrix",
            "matrix_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Take scenarios, expectations, trials and soak from a matrix file instead.",
        ),
        click.option(
            "--patch-set",
            default=None,
            help="With --matrix: whose expectations (default: the last patch set).",
        ),
        click.option(
            "--verifier",
            "verifier_command",
            default=None,
            metavar="COMMAND",
            help="How the test machine runs the verifier (default: this one's interpreter "
            "with -m verifier; the test's VERIFIER variable overrides it there).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _gate(
    name: str,
    scenarios: tuple[str, ...],
    expects: tuple[str, ...],
    trials: int,
    soak_s: float,
    amplify: str | None,
    matrix_file: Path | None,
    patch_set: str | None,
    verifier_command: str | None,
) -> ExportGate:
    if matrix_file is not None:
        if scenarios or expects:
            raise BadInput("give --matrix or --scenario/--expect, not both")
        return gate_from_matrix(load_matrix(matrix_file), patch_set, name, verifier_command)
    if patch_set is not None:
        raise BadInput("--patch-set needs --matrix")
    return gate_from_options(
        name,
        scenarios or (DEFAULT_SCENARIO,),
        expects,
        trials,
        soak_s,
        amplify,
        verifier_command,
    )


def register(cli: click.Group) -> None:
    @cli.group("export")
    def export() -> None:
        """Write the hang gate as a DEP-8 (autopkgtest) or tmt test for a package's CI."""

    @export.command("autopkgtest")
    @_gate_options
    def autopkgtest_command(out: Path, **given: Any) -> ExitStatus:
        """DIR/debian/tests/control (a stanza to append) and DIR/debian/tests/NAME."""
        for path in write_autopkgtest(_gate(**given), out):
            click.echo(str(path))
        click.echo(
            "append the stanza to the package's debian/tests/control; run with "
            "`autopkgtest -B TREE/ -- null` (as root)",
            err=True,
        )
        return ExitStatus.SUCCESS

    @export.command("tmt")
    @_gate_options
    def tmt_command(out: Path, **given: Any) -> ExitStatus:
        """DIR/.fmf/version, DIR/plans/NAME.fmf and DIR/tests/NAME/{main.fmf,test.sh}."""
        for path in write_tmt(_gate(**given), out):
            click.echo(str(path))
        return ExitStatus.SUCCESS

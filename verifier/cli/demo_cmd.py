"""``verifier demo``: the main job on an embedded default that needs no GitHub.

Debian's memcached source with the 1.4.6 race put back (a fixture patch): the hang is
caught with its backtrace; then the same tree plus patches/maxconns-fix.diff is verified
with a bounded PASS.
"""

from __future__ import annotations

from pathlib import Path

import click

from verifier.cli.options import default_run_dir, open_workspace
from verifier.cli.verify_cmd import verify_and_report
from verifier.errors import ExitStatus
from verifier.resources import fixtures_dir
from verifier.scenario import DEFAULT_SCENARIO, load_scenario
from verifier.verdict.verdict import HANG, PASS
from verifier.verify import VerifyOptions

RACE_FIXTURE = "patches/reintroduce-maxconns-race.diff"
FIX = "maxconns-fix.diff"


def register(cli: click.Group) -> None:
    @cli.command("demo")
    @click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
    @click.option(
        "--soak",
        "soak_s",
        type=click.FloatRange(1.0),
        default=20.0,
        show_default=True,
        help="Seconds of flood per trial for the fixed build.",
    )
    @click.option("--trials", type=click.IntRange(1), default=3, show_default=True)
    def demo(cache_dir: Path | None, soak_s: float, trials: int) -> ExitStatus:
        """Catch the 1.4.6 self-deadlock in Debian's memcached, then verify the fix."""
        workspace = open_workspace(None, "debian", cache_dir)
        scenario = load_scenario(DEFAULT_SCENARIO)
        race = str(fixtures_dir() / RACE_FIXTURE)
        steps = [
            ("1/2 Debian's memcached with the 1.4.6 race reintroduced", (race,), HANG),
            ("2/2 the same plus patches/maxconns-fix.diff", (race, FIX), PASS),
        ]
        ok = True
        for title, patches, wanted in steps:
            click.secho(f"\n== {title}", bold=True)
            request = workspace.request(None, patches, False, None, False)
            options = VerifyOptions(scenario=scenario, trials=trials, soak_s=soak_s)
            run_dir = default_run_dir(workspace.cache.runs, "demo", scenario.name)
            outcome = verify_and_report(workspace, request, options, run_dir)
            ok &= outcome.verdict.kind == wanted
        click.secho(
            "\ndemo: " + ("as expected" if ok else "NOT as expected"),
            fg="green" if ok else "red",
            bold=True,
        )
        return ExitStatus.SUCCESS if ok else ExitStatus.EXPECTATION_FAILED

"""``verifier demo``: the main job on an embedded default that needs no GitHub.

Debian's memcached source with the 1.4.6 race put back (a fixture patch): the hang is
caught with its backtrace; then the same tree plus patches/maxconns-fix.diff is verified
with a bounded PASS (over the lost-wake-up fix, because 1.6.18 also has that second hang
and it can show up in a plain flood); last, pristine Debian hangs the other way, under the
listener-lost-wakeup scenario, and the report tells the two hangs apart.
"""

from __future__ import annotations

from pathlib import Path

import click

from verifier.cli.options import cache_option, default_run_dir, open_workspace, soak_option
from verifier.cli.verify_cmd import verify_and_report
from verifier.errors import ExitStatus
from verifier.resources import fixtures_dir
from verifier.scenario import DEFAULT_SCENARIO, Scenario, load_scenario
from verifier.verdict.verdict import Expectation
from verifier.verify import VerifyOptions

RACE_FIXTURE = "patches/reintroduce-maxconns-race.diff"
FIX = "maxconns-fix.diff"
LOST_WAKEUP_FIX = "listener-lost-wakeup-fix.diff"
LOST_WAKEUP = "listener-lost-wakeup"


def register(cli: click.Group) -> None:
    @cli.command("demo")
    @cache_option
    @soak_option
    @click.option("--trials", type=click.IntRange(1), default=3, show_default=True)
    def demo(cache_dir: Path | None, soak_s: float, trials: int) -> ExitStatus:
        """Catch the 1.4.6 self-deadlock in Debian's memcached, verify the fix, then catch
        the second, still unfixed hang."""
        workspace = open_workspace(None, "debian", cache_dir)
        deadlock = load_scenario(DEFAULT_SCENARIO)
        race = str(fixtures_dir() / RACE_FIXTURE)
        steps: list[tuple[str, tuple[str, ...], Scenario, str]] = [
            (
                "1/3 Debian's memcached with the 1.4.6 race reintroduced",
                (race,),
                deadlock,
                "hang:self-deadlock",
            ),
            (
                "2/3 the same plus patches/maxconns-fix.diff (over the lost-wake-up fix)",
                (LOST_WAKEUP_FIX, race, FIX),
                deadlock,
                "pass",
            ),
            (
                "3/3 pristine Debian: the second, still unfixed hang",
                (),
                load_scenario(LOST_WAKEUP),
                f"hang:{LOST_WAKEUP}",
            ),
        ]
        ok = True
        for title, patches, scenario, wanted in steps:
            click.secho(f"\n== {title}", bold=True)
            request = workspace.request(None, patches, False, None, False)
            options = VerifyOptions(scenario=scenario, trials=trials, soak_s=soak_s)
            run_dir = default_run_dir(workspace.cache.runs, "demo", scenario.name)
            outcome = verify_and_report(workspace, request, options, run_dir)
            ok &= Expectation.parse(wanted).met_by(outcome.verdict)
        click.secho(
            "\ndemo: " + ("as expected" if ok else "NOT as expected"),
            fg="green" if ok else "red",
            bold=True,
        )
        return ExitStatus.SUCCESS if ok else ExitStatus.EXPECTATION_FAILED

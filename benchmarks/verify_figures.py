"""Figures for verify, on Debian's memcached (no GitHub needed).

    .venv/bin/python benchmarks/verify_figures.py [--runs 10] [--cache-dir DIR]
    .venv/bin/python benchmarks/verify_figures.py --repo CLONE --ref 1.4.6   # upstream

Prints, over --runs trials each:
  - time to a HANG verdict with the amplifier, on the reintroduced-race fixture
    (maxconns-deadlock, watch) and on pristine Debian (listener-lost-wakeup, interpose),
    or both scenarios on --ref of --repo:
    first failed probe, HANG confirmed, and detection latency (last good reply -> verdict);
  - the flood's connection cycles/s and ops/s during a clean soak (server shares the cores);
  - a repeat `verifier build --source debian` (cache hit) wall time.
Targets (issue 3): median verdict <= 5 s; >= 5,000 connection cycles/s on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from verifier.build.builder import Builder, BuildRequest, BuildResult
from verifier.paths import CacheLayout, default_cache_dir
from verifier.run.amplifier import plan_amplifier
from verifier.run.trial import run_trial
from verifier.scenario import load_scenario
from verifier.source.select import choose_source
from verifier.verify import VerifyOptions, trial_settings

ROOT = Path(__file__).resolve().parent.parent
RACE = ROOT / "tests" / "fixtures" / "patches" / "reintroduce-maxconns-race.diff"


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def hang_times(
    build: BuildResult, scenario_name: str, runs: int, cache: CacheLayout, work: Path
) -> list[str]:
    scenario = load_scenario(scenario_name)
    options = VerifyOptions(scenario=scenario)
    amplifier = plan_amplifier(None, scenario, build.binary, cache.tools)
    first_fail, verdict, latency, classes = [], [], [], []
    for i in range(runs):
        trial = run_trial(
            i + 1,
            build.binary,
            scenario,
            amplifier,
            trial_settings(options, build, 30.0),
            work / f"{scenario_name}-{i}",
        )
        classes.append(trial.hang_class or trial.outcome)
        if trial.outcome == "hang":
            first_fail.append(trial.time_to_hang_s or 0.0)
            verdict.append(trial.verdict_at_s or 0.0)
            latency.append(trial.detection_latency_s or 0.0)
    hung = f"{len(verdict)}/{runs}"
    kinds = ", ".join(f"{k} x{classes.count(k)}" for k in sorted(set(classes)))
    return [
        scenario_name,
        amplifier.kind,
        hung,
        kinds,
        _stats(first_fail),
        _stats(verdict),
        _stats(latency),
    ]


def flood_rate(build: BuildResult, cache: CacheLayout, work: Path, soak_s: float) -> list[str]:
    scenario = load_scenario("maxconns-deadlock")
    options = VerifyOptions(scenario=scenario, amplify="none")
    amplifier = plan_amplifier("none", scenario, build.binary, cache.tools)
    trial = run_trial(
        1, build.binary, scenario, amplifier, trial_settings(options, build, soak_s), work / "flood"
    )
    flood = trial.flood
    return [
        f"{soak_s:.0f}",
        trial.outcome,
        f"{flood['cycles_per_s']:,.0f}",
        f"{flood['ops_per_s']:,.0f}",
        f"{trial.emfile_episodes:,}",
        str(trial.saturation_episodes),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--flood-seconds", type=float, default=15.0)
    parser.add_argument("--repo", help="measure this repository's --ref instead of Debian's")
    parser.add_argument("--ref", help="with --repo: the ref to measure")
    args = parser.parse_args()
    cache = CacheLayout(args.cache_dir or default_cache_dir())
    source = choose_source(args.repo, None if args.repo else "debian", cache)
    builder = Builder(cache.builds, cache.locks)
    ref = args.ref or source.default_ref
    if ref is None:
        parser.error("--repo needs --ref")
    pristine = builder.build(BuildRequest(source, ref))
    race = pristine if args.repo else builder.build(BuildRequest(source, ref, (RACE,)))
    with tempfile.TemporaryDirectory(prefix="verify-figures-") as tmp:
        work = Path(tmp)
        rows = [
            hang_times(race, "maxconns-deadlock", args.runs, cache, work),
            hang_times(pristine, "listener-lost-wakeup", args.runs, cache, work),
        ]
        print(
            f"time to HANG verdict, seconds from flood start (median (min, max)), "
            f"{args.runs} trials each"
        )
        print(
            tabulate(
                rows,
                headers=[
                    "scenario (build)",
                    "amplifier",
                    "hung",
                    "classes",
                    "first failed probe",
                    "HANG confirmed",
                    "last good reply -> verdict",
                ],
            )
        )
        print(f"\nflood on {pristine.describe}, -c 64, 400 connections, no amplifier")
        print(
            tabulate(
                [flood_rate(pristine, cache, work, args.flood_seconds)],
                headers=["soak s", "outcome", "cycles/s", "ops/s", "EMFILE", "saturated"],
            )
        )
    if not args.repo:
        command = [
            sys.executable,
            "-m",
            "verifier",
            "build",
            "--source",
            "debian",
            "-q",
            "--cache-dir",
            str(cache.root),
        ]
        started = time.monotonic()
        subprocess.run(command, check=True, capture_output=True)
        print(
            f"\nrepeat `verifier build --source debian` (cache hit): "
            f"{time.monotonic() - started:.2f} s wall"
        )


if __name__ == "__main__":
    main()

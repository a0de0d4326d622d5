"""Figures for verify, on Debian's memcached (no GitHub needed).

    .venv/bin/python benchmarks/verify_figures.py [--runs 10] [--cache-dir DIR]
    .venv/bin/python benchmarks/verify_figures.py --repo CLONE --ref 1.4.6   # upstream

Prints, over --runs trials each:
  - time to a HANG verdict with the amplifier, on the reintroduced-race fixture
    (maxconns-deadlock, watch) and on pristine Debian (listener-lost-wakeup, interpose),
    or both scenarios on --ref of --repo: first failed probe, HANG proven, how it was
    proven, and detection latency (last good reply -> verdict);
  - the lock-order inversion of tests/fixtures/patches/lock-order-inversion.diff under the
    generic flood scenario: how often it is proven a `deadlock` with both locks named;
  - saturation-only floods (-c 24 against 3,000 clients, over the lost wake-up fix): any
    HANG there is a false one;
  - the flood's connection cycles/s and ops/s during a clean soak (server shares the cores);
  - a repeat `verifier build --source debian` (cache hit) wall time.
Targets (issue 10): median HANG verdict <= 1.5 s from flood start on the race fixture;
0 false hangs in 20 saturation-only floods; the inversion proven, both locks named, every
time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from verifier.build.builder import Builder, BuildRequest
from verifier.paths import CacheLayout, default_cache_dir
from verifier.records.trial import TrialResult
from verifier.scenario import load_scenario
from verifier.source.select import choose_source
from verifier.verify import SoakPlan, VerifyCore, VerifyOptions
from verifier.vocabulary import AmplifierKind, TrialOutcome

ROOT = Path(__file__).resolve().parent.parent
RACE = ROOT / "tests" / "fixtures" / "patches" / "reintroduce-maxconns-race.diff"
INVERSION = ROOT / "tests" / "fixtures" / "patches" / "lock-order-inversion.diff"
LOST_WAKEUP_FIX = ROOT / "patches" / "listener-lost-wakeup-fix.diff"
SATURATE = """name = "saturate"
summary = "flood only: a tiny connection limit, a huge flood"
requires_symbols = []
[server]
maxconns = 24
[flood]
concurrency = 3000
mix = { get = 1.0 }
[amplify]
default = "none"
"""


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def soak_once(
    core: VerifyCore, request: BuildRequest, options: VerifyOptions, soak_s: float, work: Path
) -> TrialResult:
    """One trial through the verify core (the way every consumer runs a soak)."""
    with core.prepare(request, options) as prepared:
        (trial,) = core.soak(prepared, work, SoakPlan(1, soak_s))
    return trial


def hang_times(
    core: VerifyCore, request: BuildRequest, scenario_name: str, runs: int, work: Path
) -> list[str]:
    options = VerifyOptions(scenario=load_scenario(scenario_name))
    first_fail, verdict, latency, classes, proofs = [], [], [], [], []
    kind = "-"
    for i in range(runs):
        trial = soak_once(core, request, options, 30.0, work / f"{scenario_name}-{i}")
        classes.append(str(trial.hang_class or trial.outcome))
        if trial.outcome == TrialOutcome.HANG:
            first_fail.append(trial.time_to_hang_s or 0.0)
            verdict.append(trial.verdict_at_s or 0.0)
            latency.append(trial.detection_latency_s or 0.0)
            proofs.append(str(trial.proof))
    with core.prepare(request, options) as prepared:
        kind = str(prepared.amplifier.kind) if prepared.amplifier else "-"
    hung = f"{len(verdict)}/{runs}"
    kinds = ", ".join(f"{k} x{classes.count(k)}" for k in sorted(set(classes)))
    proven = ", ".join(f"{k} x{proofs.count(k)}" for k in sorted(set(proofs))) or "-"
    return [
        scenario_name,
        kind,
        hung,
        kinds,
        proven,
        _stats(first_fail),
        _stats(verdict),
        _stats(latency),
    ]


def inversion(core: VerifyCore, request: BuildRequest, runs: int, work: Path) -> list[str]:
    """The ABBA fixture under the generic flood: proven `deadlock` with both locks named?"""
    options = VerifyOptions(scenario=load_scenario("flood"))
    named, verdict = 0, []
    for i in range(runs):
        trial = soak_once(core, request, options, 30.0, work / f"inversion-{i}")
        details = trial.diagnosis.details if trial.diagnosis else {}
        if (
            trial.proof is not None
            and str(trial.hang_class) == "deadlock"
            and details.get("locks") == ["conn_lock", "stats_lock"]
        ):
            named += 1
            verdict.append(trial.verdict_at_s or 0.0)
    return ["lock-order-inversion (flood)", f"{named}/{runs}", _stats(verdict)]


def saturation(core: VerifyCore, request: BuildRequest, runs: int, work: Path) -> list[str]:
    """Saturation-only floods: every HANG is a false one; saturation episodes show the
    flood did saturate the server (the test is not vacuous)."""
    path = work / "saturate.toml"
    path.write_text(SATURATE)
    options = VerifyOptions(scenario=load_scenario(str(path)), probe_client="socket")
    hangs, episodes, kept = 0, 0, []
    for i in range(runs):
        trial = soak_once(core, request, options, 10.0, work / f"saturate-{i}")
        episodes += trial.saturation_episodes
        if trial.outcome == TrialOutcome.HANG:  # keep its evidence: it is a finding
            hangs += 1
            kept_dir = Path(tempfile.mkdtemp(prefix="verify-figures-false-hang-"))
            shutil.copytree(trial.run_dir, kept_dir / "trial", dirs_exist_ok=True)
            kept.append(f"{trial.hang_class} by {trial.proof} ({kept_dir})")
    return [f"{runs} x 10 s", str(hangs), str(episodes), "; ".join(kept) or "-"]


def flood_rate(core: VerifyCore, request: BuildRequest, work: Path, soak_s: float) -> list[str]:
    options = VerifyOptions(scenario=load_scenario("maxconns-deadlock"), amplify=AmplifierKind.NONE)
    trial = soak_once(core, request, options, soak_s, work / "flood")
    flood = trial.flood
    assert flood is not None
    return [
        f"{soak_s:.0f}",
        str(trial.outcome),
        f"{flood.cycles_per_s:,.0f}",
        f"{flood.ops_per_s:,.0f}",
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
    parser.add_argument(
        "--saturation-only", action="store_true", help="only the saturation-only floods"
    )
    args = parser.parse_args()
    cache = CacheLayout(args.cache_dir or default_cache_dir())
    source = choose_source(args.repo, None if args.repo else "debian", cache)
    builder = Builder(cache.builds, cache.locks)
    ref = args.ref or source.default_ref
    if ref is None:
        parser.error("--repo needs --ref")
    core = VerifyCore(builder, cache.tools)
    pristine = BuildRequest(source, ref)
    race = pristine if args.repo else BuildRequest(source, ref, (RACE,))
    if args.saturation_only:
        with tempfile.TemporaryDirectory(prefix="verify-figures-") as tmp:
            fixed = BuildRequest(source, ref, (LOST_WAKEUP_FIX,))
            print(saturation(core, fixed, args.runs, Path(tmp)))
        return
    with tempfile.TemporaryDirectory(prefix="verify-figures-") as tmp:
        work = Path(tmp)
        rows = [
            hang_times(core, race, "maxconns-deadlock", args.runs, work),
            hang_times(core, pristine, "listener-lost-wakeup", args.runs, work),
        ]
        if not args.repo:
            abba = inversion(core, BuildRequest(source, ref, (INVERSION,)), args.runs, work)
            fixed = BuildRequest(source, ref, (LOST_WAKEUP_FIX,))
            saturated = saturation(core, fixed, args.runs, work)
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
                    "proven by",
                    "first failed probe",
                    "HANG proven",
                    "last good reply -> verdict",
                ],
            )
        )
        if not args.repo:
            print()
            print(
                tabulate(
                    [abba],
                    headers=["fixture", "proven deadlock, both locks named", "HANG proven at"],
                )
            )
            print()
            print(
                tabulate(
                    [saturated],
                    headers=[
                        "saturation-only floods",
                        "false hangs",
                        "saturation episodes",
                        "hangs kept",
                    ],
                )
            )
        print(f"\nflood on {ref}, -c 64, 400 connections, no amplifier")
        print(
            tabulate(
                [flood_rate(core, pristine, work, args.flood_seconds)],
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

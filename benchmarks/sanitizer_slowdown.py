"""What a sanitizer build costs, plain vs address/thread/undefined, in one run.

    .venv/bin/python benchmarks/sanitizer_slowdown.py [--runs 3] [--flood-seconds 10]
    .venv/bin/python benchmarks/sanitizer_slowdown.py --repo CLONE --ref 1.6.18

For each build of Debian's 1.6.18 (or --ref of --repo): the build time (the cache's
record of the original build; ccache, when present, makes repeat builds faster), the
flood's connection cycles/s and ops/s over a clean soak of the generic ``flood`` scenario
(no amplifier), the sanitizer reports that soak produced (count, distinct signatures),
and the time to the HANG verdict of the reintroduced 1.4.6 race
(``tests/fixtures/patches/reintroduce-maxconns-race.diff``, ``maxconns-deadlock`` with its
default amplifier), over --runs trials (that fixture only on Debian's tree).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from tabulate import tabulate

from verifier.build.builder import Builder, BuildRequest
from verifier.evidence.sanitizer import distinct
from verifier.paths import CacheLayout, default_cache_dir
from verifier.run.result import TrialResult
from verifier.scenario import load_scenario
from verifier.source.select import choose_source
from verifier.verify import SoakPlan, VerifyCore, VerifyOptions
from verifier.vocabulary import AmplifierKind, Sanitizer, TrialOutcome

ROOT = Path(__file__).resolve().parent.parent
RACE = ROOT / "tests" / "fixtures" / "patches" / "reintroduce-maxconns-race.diff"
VARIANTS: list[Sanitizer | None] = [None, *Sanitizer]


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def soak_once(
    core: VerifyCore, request: BuildRequest, options: VerifyOptions, soak_s: float, work: Path
) -> TrialResult:
    with core.prepare(request, options) as prepared:
        (trial,) = core.soak(prepared, work, SoakPlan(1, soak_s))
    return trial


def measure(
    core: VerifyCore,
    builder: Builder,
    pristine: BuildRequest,
    race: BuildRequest | None,
    runs: int,
    flood_s: float,
    work: Path,
) -> list[str]:
    name = str(pristine.sanitizer or "plain")
    build = builder.build(pristine)
    flood = soak_once(
        core,
        pristine,
        VerifyOptions(scenario=load_scenario("flood"), amplify=AmplifierKind.NONE),
        flood_s,
        work / f"{name}-flood",
    )
    summary = flood.flood
    reports = distinct(flood.sanitizer)
    row = [
        name,
        f"{build.build_seconds:.1f}",
        str(flood.outcome),
        f"{summary.cycles_per_s:,.0f}" if summary else "-",
        f"{summary.ops_per_s:,.0f}" if summary else "-",
        f"{len(flood.sanitizer)} / {len(reports)}",
    ]
    if race is None:
        return [*row, "-", "-"]
    options = VerifyOptions(scenario=load_scenario("maxconns-deadlock"))
    times, outcomes = [], []
    for i in range(runs):
        trial = soak_once(core, race, options, 30.0, work / f"{name}-race-{i}")
        outcomes.append(str(trial.hang_class or trial.outcome))
        if trial.outcome == TrialOutcome.HANG:
            times.append(trial.verdict_at_s or 0.0)
    seen = ", ".join(f"{k} x{outcomes.count(k)}" for k in sorted(set(outcomes)))
    return [*row, seen, _stats(times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--repo", help="measure this repository's --ref instead of Debian's")
    parser.add_argument("--ref", help="with --repo: the ref to measure")
    args = parser.parse_args()
    cache = CacheLayout(args.cache_dir or default_cache_dir())
    source = choose_source(args.repo, None if args.repo else "debian", cache)
    ref = args.ref or source.default_ref
    if ref is None:
        parser.error("--repo needs --ref")
    builder = Builder(cache.builds, cache.locks)
    core = VerifyCore(builder, cache.tools)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sanitizer-slowdown-") as tmp:
        for sanitizer in VARIANTS:
            pristine = BuildRequest(source, ref, sanitizer=sanitizer)
            race = None if args.repo else BuildRequest(source, ref, (RACE,), sanitizer=sanitizer)
            rows.append(
                measure(core, builder, pristine, race, args.runs, args.flood_seconds, Path(tmp))
            )
    print(
        f"{ref}: build, a {args.flood_seconds:.0f} s flood (no amplifier), and the "
        f"reintroduced 1.4.6 race (maxconns-deadlock), {args.runs} trials per build"
    )
    print(
        tabulate(
            rows,
            headers=[
                "build",
                "build s",
                "flood outcome",
                "cycles/s",
                "ops/s",
                "reports / signatures",
                "race trials",
                "HANG proven at s",
            ],
        )
    )


if __name__ == "__main__":
    main()

"""Time to HANG with ``--amplify auto``, the hand-written scenario, and no amplifier at all.

    .venv/bin/python benchmarks/auto_figures.py [--runs 10] [--none-runs 3] [--cap 120]
                                                [--fixed-runs 10] [--cache-dir DIR]

Everything goes through the verify core, as `verifier verify` does. Targets, on Debian's
memcached (no GitHub needed): the 1.4.6 self-deadlock (the race fixture) and the lost
wake-up (pristine 1.6.18). Methods, side by side in one run:

  auto        --scenario flood --amplify auto, hunting the target's class, from an empty
              memory and no discovery cached (each run starts from scratch); wall time
              from the start of verify (discovery included) to the HANG verdict, up to
              ``--cap`` seconds of soaking
  scenario    the hand-written scenario (maxconns-deadlock / listener-lost-wakeup)
  none        the flood scenario with no amplifier, one trial of ``--cap`` seconds

Then ``--fixed-runs`` trials of 60 s under auto on the fixed build (race fixture + the -42
fix, over the lost wake-up fix): any hang there is a false one. Figures taken on a shared
machine are skewed by its load: compare the columns of one run.

With ``--repo PATH`` (a local clone of upstream memcached) the targets are the releases,
as a new user would run them (``verify --ref R --scenario flood --amplify auto --trials
N --soak 60 --expect hang:CLASS``, a fresh memory each run, wall time to the HANG
verdict, at most ``--cap`` seconds of soak): 1.4.6 (self-deadlock), 1.4.5 (lost
wake-up); methods: auto with the sweep (seconds per hypothesis), auto with the previous
schedule (one hand per 60 s trial), no amplifier. Then 1.4.7 (fixed), hunting the
self-deadlock under auto for ``--fixed-runs`` x 60 s: a self-deadlock there is false; its
remaining lost wake-up may show, named as that.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from verifier.build.builder import Builder, BuildRequest
from verifier.paths import CacheLayout, default_cache_dir
from verifier.scenario import load_scenario
from verifier.source.select import choose_source
from verifier.verify import VerifyCore, VerifyOptions, VerifyOutcome
from verifier.vocabulary import AmplifierKind, HangClass, TrialOutcome, VerdictKind

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "patches"
PATCHES = ROOT / "patches"
AUTO_SOAK_S = 15.0  # per auto trial: a deck selection that has not hung by then moves on


@dataclass(frozen=True)
class Target:
    label: str
    hunted: HangClass
    scenario: str  # the hand-written one
    patches: tuple[Path, ...]


TARGETS = (
    Target(
        "1.4.6 self-deadlock (race fixture)",
        HangClass.SELF_DEADLOCK,
        "maxconns-deadlock",
        (FIXTURES / "reintroduce-maxconns-race.diff",),
    ),
    Target("lost wake-up (pristine 1.6.18)", HangClass.LOST_WAKEUP, "listener-lost-wakeup", ()),
)
FIXED = (
    PATCHES / "listener-lost-wakeup-fix.diff",
    FIXTURES / "reintroduce-maxconns-race.diff",
    PATCHES / "maxconns-fix.diff",
)


@dataclass(frozen=True)
class Run:
    seconds: float  # wall, from verify's start to its verdict
    hung: bool  # with the target's class
    trials: int
    named: str  # the point auto named (auto only)


def _run(core: VerifyCore, request: BuildRequest, options: VerifyOptions, work: Path) -> Run:
    started = time.monotonic()
    outcome: VerifyOutcome = core.verify(request, options, work)
    seconds = time.monotonic() - started
    verdict = outcome.verdict
    hung = verdict.kind == VerdictKind.HANG and verdict.hang_class == options.hunted
    named = next(
        (
            t.stretched["attribution"]["point"]
            for t in outcome.trials
            if t.outcome == TrialOutcome.HANG and "attribution" in t.stretched
        ),
        "-",
    )
    run = Run(seconds, hung, len(outcome.trials), named)
    print(  # one line per run as it ends, so a run cut short still leaves its figures
        f"  {options.scenario.name}/{options.amplify or 'scenario'}: {verdict.headline[:60]} "
        f"in {seconds:.1f} s, {run.trials} trial(s), named {named}",
        flush=True,
    )
    return run


def _row(label: str, method: str, runs: list[Run]) -> list[str]:
    hung = [r.seconds for r in runs if r.hung]
    times = (
        f"{statistics.median(hung):.1f} (min {min(hung):.1f}, max {max(hung):.1f})" if hung else "-"
    )
    names = Counter(r.named for r in runs if r.hung and r.named != "-")
    named = ", ".join(f"{k} x{n}" for k, n in names.most_common()) or "-"
    trials = statistics.median([r.trials for r in runs]) if runs else 0
    return [label, method, f"{len(hung)}/{len(runs)}", times, f"{trials:g}", named]


UPSTREAM_TARGETS = (
    ("1.4.6", HangClass.SELF_DEADLOCK),
    ("1.4.5", HangClass.LOST_WAKEUP),
)
UPSTREAM_FIXED = "1.4.7"
UPSTREAM_LOST_WAKEUP_FIX = PATCHES / "listener-lost-wakeup-fix-1.4.diff"
UPSTREAM_SOAK_S = 60.0  # the command: --soak 60


def upstream(args: argparse.Namespace, cache: CacheLayout) -> None:
    """The release targets of a local clone (see the module docstring)."""
    source = choose_source(str(args.repo), None, cache)
    builder = Builder(cache.builds, cache.locks)
    flood = load_scenario("flood")
    trials = max(1, int(args.cap // UPSTREAM_SOAK_S))
    rows = []
    wanted = set(args.refs.split(",")) if args.refs else None
    with tempfile.TemporaryDirectory(prefix="auto-figures-") as tmp:
        work = Path(tmp)
        for ref, hunted in UPSTREAM_TARGETS:
            if wanted is not None and ref not in wanted:
                continue
            request = BuildRequest(source, ref, ())
            label = f"upstream {ref} {hunted}"
            methods = (
                ("auto, sweep", AmplifierKind.AUTO, True, args.runs),
                ("auto, previous schedule", AmplifierKind.AUTO, False, args.previous_runs),
                (f"none, {trials} x 60 s", AmplifierKind.NONE, True, args.none_runs),
            )
            for method, kind, sweep, count in methods:
                runs = []
                for i in range(count):
                    fresh = work / f"{ref}-{kind}-{sweep}-{i}"  # no memory, no discovery
                    core = VerifyCore(builder, cache.tools, auto_dir=fresh, auto_sweep=sweep)
                    options = VerifyOptions(
                        scenario=flood, amplify=kind, hunt=hunted, trials=trials,
                        soak_s=UPSTREAM_SOAK_S,
                    )  # fmt: skip
                    runs.append(_run(core, request, options, fresh / "run"))
                if runs:
                    rows.append(_row(label, method, runs))
        fixed_outcomes: list[tuple[str, VerifyOutcome]] = []
        if args.fixed_runs and (wanted is None or UPSTREAM_FIXED in wanted):
            fixed = VerifyOptions(
                scenario=flood, amplify=AmplifierKind.AUTO, hunt=HangClass.SELF_DEADLOCK,
                trials=args.fixed_runs, soak_s=UPSTREAM_SOAK_S,
            )  # fmt: skip
            # 1.4.7 still has the lost wake-up, which ends most trials early: the second
            # row takes it out (our 1.4 candidate fix), so every trial soaks its 60 s
            with_fix = f"{UPSTREAM_FIXED} + {UPSTREAM_LOST_WAKEUP_FIX.name}"
            for label, patches in (
                (UPSTREAM_FIXED, ()),
                (with_fix, (UPSTREAM_LOST_WAKEUP_FIX,)),
            ):
                memory = work / f"fixed-auto-{len(patches)}"
                core = VerifyCore(builder, cache.tools, auto_dir=memory)
                request = BuildRequest(source, UPSTREAM_FIXED, patches)
                outcome = core.verify(request, fixed, work / f"f{len(patches)}")
                fixed_outcomes.append((label, outcome))
    print(
        f"time to a HANG verdict of the target's class, wall seconds from verify's start "
        f"(discovery and builds of a cached tree included), median (min, max); cap "
        f"{trials} x {UPSTREAM_SOAK_S:.0f} s of soak per run"
    )
    print(
        tabulate(
            rows,
            headers=["target", "method", "hung", "seconds to HANG", "trials (median)", "named"],
        )
    )
    for label, outcome in fixed_outcomes:
        classes = Counter(
            str(t.hang_class) for t in outcome.trials if t.outcome == TrialOutcome.HANG
        )
        exposure = sum(t.soak_s for t in outcome.trials)
        print(
            f"\nupstream {label} (fixed), auto hunting the self-deadlock, "
            f"{len(outcome.trials)} trial(s), {exposure:.0f} s of weighted exposure: "
            f"hangs by class {dict(classes) or 'none'}; {outcome.verdict.headline}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--none-runs", type=int, default=3)
    parser.add_argument("--fixed-runs", type=int, default=10)
    parser.add_argument("--cap", type=float, default=120.0, help="seconds of soak per run")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--repo", type=Path, default=None, help="a local clone of upstream")
    parser.add_argument("--previous-runs", type=int, default=3, help="--repo: old schedule")
    parser.add_argument("--refs", default="", help="--repo: only these (1.4.6,1.4.5,1.4.7)")
    args = parser.parse_args()
    cache = CacheLayout(args.cache_dir or default_cache_dir())
    if args.repo is not None:
        upstream(args, cache)
        return
    source = choose_source(None, "debian", cache)
    assert source.default_ref
    builder = Builder(cache.builds, cache.locks)
    flood = load_scenario("flood")
    rows = []
    with tempfile.TemporaryDirectory(prefix="auto-figures-") as tmp:
        work = Path(tmp)
        for target in TARGETS:
            request = BuildRequest(source, source.default_ref, target.patches)
            auto_runs, hand_runs, none_runs = [], [], []
            for i in range(args.runs):
                fresh = work / f"auto-{target.hunted}-{i}"  # no memory, no discovery cached
                core = VerifyCore(builder, cache.tools, auto_dir=fresh)
                options = VerifyOptions(
                    scenario=flood,
                    amplify=AmplifierKind.AUTO,
                    hunt=target.hunted,
                    trials=max(1, int(args.cap // AUTO_SOAK_S)),  # as many as fit in the cap
                    soak_s=AUTO_SOAK_S,
                )
                auto_runs.append(_run(core, request, options, fresh / "run"))
                hand = VerifyOptions(scenario=load_scenario(target.scenario), trials=3, soak_s=20)
                hand_runs.append(
                    _run(VerifyCore(builder, cache.tools), request, hand, fresh / "hand")
                )
            for i in range(args.none_runs):
                none = VerifyOptions(
                    scenario=flood,
                    amplify=AmplifierKind.NONE,
                    hunt=target.hunted,
                    trials=1,
                    soak_s=args.cap,
                )
                none_runs.append(
                    _run(VerifyCore(builder, cache.tools), request, none, work / f"none-{i}")
                )
            rows += [
                _row(target.label, "auto (flood scenario)", auto_runs),
                _row(target.label, f"scenario {target.scenario}", hand_runs),
                _row(target.label, f"none, {args.cap:.0f} s soak", none_runs),
            ]
        fixed_request = BuildRequest(source, source.default_ref, FIXED)
        core = VerifyCore(builder, cache.tools, auto_dir=work / "fixed-auto")
        fixed = VerifyOptions(
            scenario=flood, amplify=AmplifierKind.AUTO, trials=args.fixed_runs, soak_s=60
        )
        outcome = core.verify(fixed_request, fixed, work / "fixed")
    print(
        f"time to a HANG verdict of the target's class, wall seconds from verify's start "
        f"(auto: discovery included), median (min, max); {args.runs} auto / scenario runs, "
        f"{args.none_runs} without amplifier"
    )
    print(
        tabulate(
            rows,
            headers=["target", "method", "hung", "seconds to HANG", "trials (median)", "named"],
        )
    )
    hangs = [t for t in outcome.trials if t.outcome == TrialOutcome.HANG]
    print(
        f"\nfixed build (race + -42 fix over the lost wake-up fix), auto, {len(outcome.trials)} "
        f"trial(s) of 60 s: {len(hangs)} hang(s); {outcome.verdict.headline}"
    )


if __name__ == "__main__":
    main()

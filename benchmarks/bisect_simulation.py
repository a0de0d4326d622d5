#!/usr/bin/env python3
"""Simulate many flaky bisections: the Bayesian planner against fixed-timeout bisects.

Each run draws a culprit uniformly in ``1..n``; commits ``>= culprit`` hang after an
exponential time with the scenario's mean, earlier commits never hang. Every soak costs the
start-up overhead plus its seconds (a soak stops at the hang), and the first soak of a commit
also pays its build. Confirming the bad endpoint (soak it until it hangs once), which every
method needs before bisecting, is charged to nobody; only ``ours`` uses its outcome, to
calibrate λ. Further soaks of the endpoint that ``ours`` asks for are charged ("calib").

Methods:
  ours            FlakyBisector (expected bits per machine-second, stops at --confidence)
  bisect          plain binary search, one soak of --timeout-s per commit, hang => bad
  bisect-tries=K  binary search, up to K soaks per commit, any hang => bad (ktest BISECT_TRIES)

"accuracy" is the share of runs that named the culprit; "wrong+sure" the share that named a
wrong commit while claiming confidence (for the baselines: every wrong answer).

--machines K [K ...] runs ``ours`` on a cluster of K machines instead, driven by the real
run's dispatcher and planner (``verifier.bisect.dispatch.assign``,
``FlakyBisector.next_step(pending=..., built=...)``): the endpoint checks at once (one
after the other on one machine), charged like every soak; then whenever a machine is free
it gets the step with the most bits given the soaks still running elsewhere, per second of
that machine, its own builds free. Nothing is built beforehand; each machine builds in its
own cache, or with --shared-cache all share one. The search soaks still running are
cancelled once the posterior is confident; the good end's answer is awaited. "wall s" is
the time until then, "machine s" the busy seconds of all machines.

Example:
  .venv/bin/python benchmarks/bisect_simulation.py --runs 500 --n 64
  .venv/bin/python benchmarks/bisect_simulation.py --scenario rare --endpoint-factor 3
  .venv/bin/python benchmarks/bisect_simulation.py --scenario amplify-every-40 --machines 1 2 4 8
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verifier.bisect.dispatch import Endpoints, Job, Role, assign, good_end_soak_s
from verifier.bisect.model import (
    DEFAULT_CALIBRATION_WEIGHT,
    DEFAULT_PRIOR_RATE,
    DEFAULT_PRIOR_SHAPE,
    Soak,
)
from verifier.bisect.planner import DEFAULT_CALIBRATION_HANGS, FlakyBisector


@dataclass(frozen=True)
class Scenario:
    name: str
    mean_hang_s: float  # mean time to hang of a bad commit
    max_soak_s: float  # longest soak ours may choose
    min_soak_s: float  # shortest soak ours may choose
    timeout_s: float  # the fixed soak of the baselines


SCENARIOS = {
    "deterministic": Scenario("deterministic", 1.0, 60.0, 3.0, 10.0),
    "rare": Scenario("rare", 30.0, 60.0, 5.0, 60.0),
    "very-rare": Scenario("very-rare", 120.0, 60.0, 5.0, 60.0),
    # bisect_compare.py's rare mode (--amplify-every 40, --max-soak 24): mean time to hang
    # measured on the 1.4.6 race put back in Debian's 1.6.18 (README-PROPOSAL.md)
    "amplify-every-40": Scenario("amplify-every-40", 2.6, 24.0, 3.0, 6.0),
}


class Machine:
    """Runs soaks against a hidden culprit and accounts machine time. ``endpoint_factor``
    makes the bad endpoint hang that many times as often as the other bad commits."""

    def __init__(
        self,
        n: int,
        culprit: int,
        mean_hang_s: float,
        rng: random.Random,
        *,
        build_s: float,
        overhead_s: float,
        endpoint_factor: float = 1.0,
    ) -> None:
        self.n, self.culprit, self.mean_hang_s, self.rng = n, culprit, mean_hang_s, rng
        self.build_s, self.overhead_s, self.endpoint_factor = build_s, overhead_s, endpoint_factor
        self.built = {0, n}
        self.soaks = 0
        self.seconds = 0.0

    def run(self, index: int, seconds: float, *, charge: bool = True) -> Soak:
        soak = Soak(index, seconds, False)
        if index >= self.culprit:
            mean = self.mean_hang_s / (self.endpoint_factor if index == self.n else 1.0)
            hang_at = self.rng.expovariate(1.0 / mean)
            if hang_at < seconds:
                soak = Soak(index, hang_at, True)
        if charge:
            if index not in self.built:
                self.seconds += self.build_s
                self.built.add(index)
            self.seconds += self.overhead_s + soak.seconds
            self.soaks += 1
        return soak


@dataclass(frozen=True)
class Outcome:
    correct: bool
    soaks: int
    machine_s: float
    confident_wrong: bool
    calibration_soaks: int = 0


def confirm_bad_endpoint(m: Machine, max_soak_s: float, limit: int = 50) -> list[Soak]:
    """Soak the bad endpoint until it hangs once (uncharged: every method needs this)."""
    out = []
    for _ in range(limit):
        out.append(m.run(m.n, max_soak_s, charge=False))
        if out[-1].hung:
            break
    return out


def run_ours(
    m: Machine, sc: Scenario, confidence: float, max_steps: int, model: dict[str, Any]
) -> Outcome:
    bis = FlakyBisector(
        m.n,
        confidence,
        max_soak_s=sc.max_soak_s,
        min_soak_s=sc.min_soak_s,
        default_build_s=m.build_s,
        overhead_s=m.overhead_s,
        max_steps=max_steps,
        **model,
    )
    for soak in confirm_bad_endpoint(m, sc.max_soak_s):
        bis.record_endpoint(soak)
    while (step := bis.next_step()) is not None:
        bis.record(m.run(step.index, step.soak_seconds))
    res = bis.result()
    correct = res.culprit == m.culprit
    return Outcome(
        correct, m.soaks, m.seconds, res.confident and not correct, res.calibration_steps
    )


@dataclass(frozen=True)
class ClusterOutcome:
    correct: bool
    confident_wrong: bool
    soaks: int
    machine_s: float
    wall_s: float


def run_cluster(
    m: Machine,
    sc: Scenario,
    confidence: float,
    max_steps: int,
    model: dict[str, Any],
    machines: int,
    shared_cache: bool = False,
    endpoint_tries: int = 3,
) -> ClusterOutcome:
    """``ours`` on ``machines`` machines, event by event, driven by the real run's
    dispatcher (``verifier.bisect.dispatch.assign``): the endpoint checks included and
    charged (at once on several machines, one after the other on one), nothing built
    beforehand; ``shared_cache``: one build cache for all."""
    bis = FlakyBisector(
        m.n,
        confidence,
        max_soak_s=sc.max_soak_s,
        min_soak_s=sc.min_soak_s,
        default_build_s=m.build_s,
        overhead_s=m.overhead_s,
        max_steps=max_steps,
        **model,
    )
    ends = Endpoints(tries=endpoint_tries)
    own: list[set[int]] = [set() for _ in range(machines)]
    built = [own[0]] * machines if shared_cache else own
    free_at = [0.0] * machines
    running: dict[int, tuple[float, Job, Soak]] = {}  # machine -> (ends at, job, soak)
    clock = busy = 0.0
    soaks = 0
    for _ in range(10 * max_steps):
        while len(running) < machines:
            free = {str(k): built[k] for k in range(machines) if k not in running}
            chosen = assign(
                bis,
                ends,
                [job for _, job, _ in running.values()],
                free,
                endpoint_soak_s=sc.max_soak_s,
                good_end_soak_s=good_end_soak_s(bis, sc.min_soak_s, sc.max_soak_s),
            )
            if chosen is None:
                break
            k, job = int(chosen[0]), chosen[1]
            index = job.step.index
            soak = m.run(index, job.step.soak_seconds, charge=False)
            build = 0.0 if index in built[k] else m.build_s
            built[k].add(index)
            running[k] = (clock + build + m.overhead_s + soak.seconds, job, soak)
            free_at[k] = clock
            ends.good_end_started |= job.role == Role.GOOD_END
        if not running:
            break
        k = min(running, key=lambda j: running[j][0])
        clock, job, soak = running.pop(k)
        busy += clock - free_at[k]
        if job.role == Role.STEP:
            bis.record(soak)
            soaks += 1
        else:
            bis.record_endpoint(soak)
            ends.tries_done += job.role == Role.BAD_END
            ends.bad_end_hung |= soak.hung and job.role == Role.BAD_END
        if bis.done():  # cancel the search soaks; the good end's answer is awaited
            for j in [j for j, (_, job, _) in running.items() if job.role == Role.STEP]:
                busy += clock - free_at[j]
                running.pop(j)
    res = bis.result()
    correct = res.culprit == m.culprit and ends.bad_end_hung
    return ClusterOutcome(correct, res.confident and not correct, soaks, busy, clock)


def simulate_cluster(
    sc: Scenario,
    machine_counts: list[int],
    *,
    n: int,
    runs: int,
    seed: int,
    confidence: float,
    build_s: float,
    overhead_s: float,
    endpoint_factor: float = 1.0,
    max_steps: int = 500,
    model: dict[str, Any] | None = None,
    shared_cache: bool = False,
) -> list[list[object]]:
    """One row per machine count: scenario, machines, accuracy, wrong+sure, soaks, machine
    seconds, wall seconds and wall time relative to one machine (same culprits for all)."""
    rows: list[list[object]] = []
    base_wall = None
    for machines in machine_counts:
        rng = random.Random(seed)
        outcomes = []
        for _ in range(runs):
            culprit = rng.randint(1, n)
            m = Machine(
                n,
                culprit,
                sc.mean_hang_s,
                random.Random(rng.getrandbits(64)),
                build_s=build_s,
                overhead_s=overhead_s,
                endpoint_factor=endpoint_factor,
            )
            outcomes.append(
                run_cluster(m, sc, confidence, max_steps, model or {}, machines, shared_cache)
            )
        wall = statistics.fmean(o.wall_s for o in outcomes)
        base_wall = wall if base_wall is None else base_wall
        rows.append(
            [
                sc.name,
                machines,
                statistics.fmean(o.correct for o in outcomes),
                statistics.fmean(o.confident_wrong for o in outcomes),
                statistics.fmean(o.soaks for o in outcomes),
                statistics.fmean(o.machine_s for o in outcomes),
                wall,
                statistics.median(o.wall_s for o in outcomes),
                wall / base_wall,
            ]
        )
    return rows


def run_fixed_bisect(m: Machine, timeout_s: float, tries: int) -> Outcome:
    lo, hi = 0, m.n  # lo good, hi bad
    while hi - lo > 1:
        mid = (lo + hi) // 2
        bad = any(m.run(mid, timeout_s).hung for _ in range(tries))  # any() stops at a hang
        lo, hi = (lo, mid) if bad else (mid, hi)
    return Outcome(hi == m.culprit, m.soaks, m.seconds, hi != m.culprit)


def simulate(
    sc: Scenario,
    *,
    n: int,
    runs: int,
    seed: int,
    confidence: float,
    tries: int,
    build_s: float,
    overhead_s: float,
    endpoint_factor: float = 1.0,
    max_steps: int = 500,
    model: dict[str, Any] | None = None,
    methods: list[str] | None = None,
) -> list[list[object]]:
    """One table row per method: scenario, method, accuracy, wrong+sure, soaks, calibration
    soaks, machine seconds (means over ``runs``; every method sees the same culprits)."""
    table: dict[str, Callable[[Machine], Outcome]] = {
        "ours": lambda m: run_ours(m, sc, confidence, max_steps, model or {}),
        "bisect": lambda m: run_fixed_bisect(m, sc.timeout_s, 1),
        f"bisect-tries={tries}": lambda m: run_fixed_bisect(m, sc.timeout_s, tries),
    }
    rows: list[list[object]] = []
    for name, method in table.items():
        if methods and name.split("=")[0] not in methods:
            continue
        rng = random.Random(seed)
        outcomes = []
        for _ in range(runs):
            culprit = rng.randint(1, n)
            m = Machine(
                n,
                culprit,
                sc.mean_hang_s,
                random.Random(rng.getrandbits(64)),
                build_s=build_s,
                overhead_s=overhead_s,
                endpoint_factor=endpoint_factor,
            )
            outcomes.append(method(m))
        rows.append(
            [
                sc.name,
                name,
                statistics.fmean(o.correct for o in outcomes),
                statistics.fmean(o.confident_wrong for o in outcomes),
                statistics.fmean(o.soaks for o in outcomes),
                statistics.fmean(o.calibration_soaks for o in outcomes),
                statistics.fmean(o.machine_s for o in outcomes),
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--n", type=int, default=64, help="commits after the good endpoint")
    ap.add_argument("--runs", type=int, default=300, help="simulated bisects per method")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--tries", type=int, default=3, help="BISECT_TRIES of the retry baseline")
    ap.add_argument("--build-s", type=float, default=10.0, help="build cost of a new commit")
    ap.add_argument("--overhead-s", type=float, default=2.0, help="start-up cost of a soak")
    ap.add_argument("--max-steps", type=int, default=500, help="safety cap for ours")
    ap.add_argument(
        "--scenario",
        choices=[*SCENARIOS, "all"],
        default="all",
        help="deterministic: mean hang 1 s; rare: 30 s; very-rare: 120 s (max soak 60 s)",
    )
    ap.add_argument("--mean-hang-s", type=float, help="override the scenario's mean time to hang")
    ap.add_argument("--max-soak-s", type=float, help="override the scenario's max soak")
    ap.add_argument("--timeout-s", type=float, help="override the baselines' fixed soak")
    ap.add_argument(
        "--endpoint-factor",
        type=float,
        default=1.0,
        help="the bad endpoint hangs this many times as often as the other bad commits "
        "(a misspecification the model does not know about)",
    )
    ap.add_argument("--prior-shape", type=float, default=DEFAULT_PRIOR_SHAPE, help="Gamma a0")
    ap.add_argument("--prior-rate", type=float, default=DEFAULT_PRIOR_RATE, help="Gamma b0 (s)")
    ap.add_argument(
        "--calibration-weight",
        type=float,
        default=DEFAULT_CALIBRATION_WEIGHT,
        help="weight ρ of soaks on proven-bad commits in λ's posterior",
    )
    ap.add_argument(
        "--calibration-hangs",
        type=int,
        default=DEFAULT_CALIBRATION_HANGS,
        help="hangs of proven-bad commits ours collects before bisecting",
    )
    ap.add_argument("--false-hang-rate", type=float, default=0.0, help="ε of ours (per s)")
    ap.add_argument("--methods", nargs="*", help="subset of: ours bisect bisect-tries")
    ap.add_argument(
        "--machines",
        type=int,
        nargs="+",
        help="run ours on clusters of these sizes instead (wall time against the first)",
    )
    ap.add_argument(
        "--shared-cache",
        action="store_true",
        help="with --machines: the machines share one build cache (VERIFIER_CACHE_DIR on a "
        "shared file system); default: each builds in its own",
    )
    args = ap.parse_args(argv)
    model = {
        "prior_shape": args.prior_shape,
        "prior_rate": args.prior_rate,
        "calibration_weight": args.calibration_weight,
        "calibration_hangs": args.calibration_hangs,
        "false_hang_rate": args.false_hang_rate,
    }

    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    rows: list[list[object]] = []
    for name in names:
        sc = SCENARIOS[name]
        sc = Scenario(
            sc.name,
            args.mean_hang_s or sc.mean_hang_s,
            args.max_soak_s or sc.max_soak_s,
            sc.min_soak_s,
            args.timeout_s or sc.timeout_s,
        )
        if args.machines:
            rows += simulate_cluster(
                sc,
                args.machines,
                n=args.n,
                runs=args.runs,
                seed=args.seed,
                confidence=args.confidence,
                build_s=args.build_s,
                overhead_s=args.overhead_s,
                endpoint_factor=args.endpoint_factor,
                max_steps=args.max_steps,
                model=model,
                shared_cache=args.shared_cache,
            )
            continue
        rows += simulate(
            sc,
            n=args.n,
            runs=args.runs,
            seed=args.seed,
            confidence=args.confidence,
            tries=args.tries,
            build_s=args.build_s,
            overhead_s=args.overhead_s,
            endpoint_factor=args.endpoint_factor,
            max_steps=args.max_steps,
            model=model,
            methods=args.methods,
        )
    print(
        f"n={args.n} commits, {args.runs} runs/method, confidence={args.confidence}, "
        f"build={args.build_s:g}s, overhead={args.overhead_s:g}s/soak, "
        f"endpoint-factor={args.endpoint_factor:g}"
    )
    if args.machines:
        headers = ["scenario", "machines", "accuracy", "wrong+sure", "soaks", "machine s"]
        headers += ["wall s (mean)", "wall s (median)", "wall / 1st"]
        floats = ("", "", ".3f", ".3f", ".1f", ".0f", ".0f", ".0f", ".2f")
        print(tabulate(rows, headers=headers, floatfmt=floats))
        return 0
    headers = ["scenario", "method", "accuracy", "wrong+sure", "soaks", "calib", "machine s"]
    print(tabulate(rows, headers=headers, floatfmt=("", "", ".3f", ".3f", ".1f", ".1f", ".0f")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a free machine of a cluster bisect does next, and which free machine does it (pure:
the session and ``benchmarks/bisect_simulation.py`` both drive it, so the simulation's
figures come from the code that plans the real run).

The endpoint checks run at once, not one after the other: the first free machine soaks
the bad end, the next the good end, the others more tries of the bad end (up to
``endpoint_tries`` in all: each hang is a calibration soak the planner wants anyway).
Before the bad end has hung nothing is known of the race's rate, so a good end started
at once soaks for the bad end's budget (``--endpoint-soak``), not five mean times to hang.
The search starts as soon as the bad end has hung; the good end's answer may come later
(a hang of the same bug there still stops the bisect).

Each machine builds in its own cache, so each free machine's step is planned with its own
builds free (``FlakyBisector.next_step(built=...)``), and the free machine whose step buys
the most bits per second of it gets it. A soak of a commit thus goes back to a machine
that built it when that machine is free and its step is best there.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from verifier.bisect.planner import FlakyBisector, Step

GOOD_END_FACTOR = 5.0  # good-end soak in bad-end mean times-to-hang: e^-5 < 1% to miss a hang


class Role(enum.StrEnum):
    BAD_END = "bad end"
    GOOD_END = "good end"
    STEP = "step"


@dataclass(frozen=True)
class Job:
    role: Role
    step: Step  # the commit and soak length (an endpoint's too)


@dataclass
class Endpoints:
    """Where the endpoint checks stand."""

    tries: int  # soaks of the bad end allowed before it is declared not bad
    tries_done: int = 0  # bad-end soaks answered
    bad_end_hung: bool = False  # the reference bug is known
    good_end_started: bool = False


def good_end_soak_s(bisector: FlakyBisector, min_soak_s: float, endpoint_soak_s: float) -> float:
    """Long enough that the bad end, at its observed rate, would have hung with ~99%
    probability (5 mean times-to-hang); no longer than ``endpoint_soak_s``."""
    post, n = bisector.posterior, bisector.n
    mean_time_to_hang = post.exposure(n) / max(1, post.hangs(n))
    return min(endpoint_soak_s, max(min_soak_s, GOOD_END_FACTOR * mean_time_to_hang))


def next_job(
    bisector: FlakyBisector,
    ends: Endpoints,
    pending: Sequence[Job],
    built: Collection[int],
    *,
    endpoint_soak_s: float,
    good_end_soak_s: float,
) -> Job | None:
    """The job for a free machine that has built ``built`` (indices), or None (nothing
    worth a machine now: wait for the pending soaks)."""
    n = bisector.n
    bad_pending = sum(j.role == Role.BAD_END for j in pending)
    if not ends.bad_end_hung:
        more_tries = ends.tries_done + bad_pending < ends.tries
        bad = Job(Role.BAD_END, Step(n, endpoint_soak_s, 0.0, 1.0, calibration=True))
        if more_tries and bad_pending == 0:
            return bad
        if not ends.good_end_started:
            return Job(Role.GOOD_END, Step(0, endpoint_soak_s, 0.0, 0.0))
        return bad if more_tries else None
    if not ends.good_end_started:  # resumed after the bad end hung: the rate is known
        return Job(Role.GOOD_END, Step(0, good_end_soak_s, 0.0, 0.0))
    step = bisector.next_step(pending=[j.step for j in pending], built=built)
    return None if step is None else Job(Role.STEP, step)


def assign(
    bisector: FlakyBisector,
    ends: Endpoints,
    pending: Sequence[Job],
    free: Mapping[str, Collection[int]],
    *,
    endpoint_soak_s: float,
    good_end_soak_s: float,
) -> tuple[str, Job] | None:
    """Which free machine (``free``: name -> the indices it has built, in preference order)
    runs which job: an endpoint goes to a machine that built it, else the first; a search
    step to the machine where it buys the most bits per second (its builds are free)."""
    best: tuple[float, str, Job] | None = None
    for machine, built in free.items():
        job = next_job(
            bisector,
            ends,
            pending,
            built,
            endpoint_soak_s=endpoint_soak_s,
            good_end_soak_s=good_end_soak_s,
        )
        if job is None:
            return None  # the same for every machine: nothing to do until a soak answers
        if job.role != Role.STEP:
            if job.step.index in built:
                return machine, job
            best = best or (0.0, machine, job)
            continue
        score = job.step.expected_gain_bits / max(job.step.expected_cost_s, 1e-9)
        if best is None or score > best[0]:
            best = (score, machine, job)
    return None if best is None else (best[1], best[2])

"""A bisect on k cluster machines: one soak per machine, the endpoint checks at once, the
search planned per free machine (``verifier.bisect.dispatch``), every soak sent to the
machine it was planned for (its build cache).

Soaks are recorded as they finish. Once the posterior is confident the search soaks still
running are cancelled (they are not evidence), but the good end's answer is awaited: the
answer is never given on a range that is not checked. An interrupted run resumes from the
recorded soaks and endpoint rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from verifier.bisect.dispatch import Endpoints, Job, Role, assign
from verifier.bisect.observation import Observation
from verifier.bisect.remote import RemoteTester, Running
from verifier.bisect.state import Phase

if TYPE_CHECKING:
    from verifier.bisect.session import Bisection

MAX_SOAKS_PER_RUN = 10_000  # a bound on the loop; max_steps stops the search long before


def run_on_cluster(bisection: Bisection, tester: RemoteTester) -> None:
    state = bisection.state
    if state.phase == Phase.DONE:
        return
    roles = [row.role for row in state.steps]
    ends = Endpoints(
        tries=bisection.settings.endpoint_tries,
        tries_done=roles.count(Role.BAD_END),
        bad_end_hung=state.reference_bug_key is not None,
        good_end_started=state.phase != Phase.ENDPOINTS,
    )
    running: dict[Running, Job] = {}
    waiting_good: tuple[Observation, float] | None = None  # answered before the bad end hung
    completion = tester.completion()
    try:
        for _ in range(MAX_SOAKS_PER_RUN):
            _fill(bisection, tester, ends, running, completion)
            if not running:
                break
            future = next(completion)
            done = next(r for r in running if r.future is future)
            job = running.pop(done)
            obs = tester.observation(done)
            bisection.note(tester)
            if job.role == Role.BAD_END:
                ends.tries_done += 1
                bisection.bad_end_answer(obs, job.step.soak_seconds)
                ends.bad_end_hung = state.reference_bug_key is not None
                bad_left = any(j.role == Role.BAD_END for j in running.values())
                if not ends.bad_end_hung and ends.tries_done >= ends.tries and not bad_left:
                    raise bisection.not_bad()
            elif job.role == Role.GOOD_END:
                waiting_good = (obs, job.step.soak_seconds)
            else:
                bisection.take(job.step, obs)
            if waiting_good is not None and ends.bad_end_hung:
                bisection.good_end_answer(*waiting_good)
                waiting_good = None
            if bisection.bisector.done():  # only the good end's answer is still wanted
                steps = [r for r, j in running.items() if j.role != Role.GOOD_END]
                tester.cancel(steps)
                for r in steps:
                    running.pop(r)
        if state.phase == Phase.SEARCH:
            state.phase = Phase.DONE
            bisection.save()
    finally:
        if running:
            tester.cancel(running)


def _fill(
    bisection: Bisection,
    tester: RemoteTester,
    ends: Endpoints,
    running: dict[Running, Job],
    completion: object,
) -> None:
    """Give every free machine a job, best first, until none is worth starting."""
    index = {sha: i for i, sha in enumerate(bisection.commits.shas)}
    for _ in range(tester.machines):
        free = {
            worker: {index[sha] for sha in tester.built_on(worker) if sha in index}
            for worker in tester.free_workers(running)
        }
        if not free:
            return
        chosen = assign(
            bisection.bisector,
            ends,
            list(running.values()),
            free,
            endpoint_soak_s=bisection.settings.endpoint_soak_s,
            good_end_soak_s=bisection.good_end_soak(),
        )
        if chosen is None:
            return
        worker, job = chosen
        sha = bisection.commits.shas[job.step.index]
        reference = bisection.state.reference_bug_key
        started = tester.start(sha, job.step.soak_seconds, reference, worker)
        running[started] = job
        completion.add(started.future)  # type: ignore[attr-defined]
        if job.role == Role.GOOD_END:
            ends.good_end_started = True

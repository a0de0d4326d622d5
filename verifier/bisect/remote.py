"""Bisect soaks on a Dask cluster, several commits at once, one per worker machine.

A ``SoakJob`` carries everything a worker needs to soak one commit once (the source as a
Debian version, URL or absolute path; the patch and scenario texts; the load and amplifier
options), so a worker needs no shared files. It runs as ``python -m
verifier.bisect.soak_child`` on the worker (``verifier.cluster``), through the same
``CommitTester`` as a local bisect, and comes back as the same ``Observation``, its run
folder named ``host:path``. The session keeps one soak running per machine, each planned
given the others (``FlakyBisector.next_step(pending=...)``).

Each worker builds in its own cache, on its own machine: a commit soaked on worker A and
then on B is built twice (10 s to minutes each). So the tester remembers which commits
each worker has built or is building (from where each soak was sent and where it ran),
the planner plans each free worker's soak with that worker's builds costing nothing, and
the soak is sent to that worker (``DaskCluster.submit(worker=...)``).

A soak is told the reference bug (the bad end's key: a hang of another bug is no
evidence) and, once the bad end hung, its class (what ``--amplify auto`` hunts), as a
local soak is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from verifier.bisect.observation import Observation
from verifier.bisect.tester import CommitTester
from verifier.build.builder import BuildRequest
from verifier.cluster.dask import DaskCluster
from verifier.errors import HarnessError
from verifier.scenario import Scenario
from verifier.source.git_source import UPSTREAM_URL
from verifier.verify import VerifyOptions
from verifier.vocabulary import AmplifierKind, HangClass

SOAK_MODULE = "verifier.bisect.soak_child"


def source_spec(repo: str | None, source: str | None) -> str:
    """How a worker finds the source given as ``--repo`` / ``--source``: the Debian
    version, a URL, or a local path made absolute (it must exist on the workers too)."""
    if source:
        return source
    if repo and Path(repo).exists():
        return str(Path(repo).resolve())
    return repo or UPSTREAM_URL


@dataclass(frozen=True)
class SoakJob:
    source: str
    sha: str
    soak_s: float
    reference_bug_key: str | None
    reference_class: str | None  # the bad end's hang class, once known
    patches: tuple[tuple[str, str], ...]  # (file name, text), applied in order
    reverse: bool
    cflags: str | None
    scenario: str
    scenario_text: str
    options: dict[str, Any]  # the VerifyOptions that change a soak, as JSON
    sanitizer: str | None = None  # --sanitize: the build's sanitizer
    tls: bool = False  # --tls: a TLS build

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sha": self.sha,
            "soak_s": self.soak_s,
            "reference_bug_key": self.reference_bug_key,
            "reference_class": self.reference_class,
            "patches": [list(p) for p in self.patches],
            "reverse": self.reverse,
            "cflags": self.cflags,
            "scenario": self.scenario,
            "scenario_text": self.scenario_text,
            "options": self.options,
            "sanitizer": self.sanitizer,
            "tls": self.tls,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SoakJob:
        return cls(
            source=data["source"],
            sha=data["sha"],
            soak_s=float(data["soak_s"]),
            reference_bug_key=data.get("reference_bug_key"),
            reference_class=data.get("reference_class"),
            patches=tuple((str(n), str(t)) for n, t in data["patches"]),
            reverse=bool(data["reverse"]),
            cflags=data.get("cflags"),
            scenario=data["scenario"],
            scenario_text=data["scenario_text"],
            options=dict(data["options"]),
            sanitizer=data.get("sanitizer"),
            tls=bool(data.get("tls", False)),
        )


def options_json(options: VerifyOptions) -> dict[str, Any]:
    return {
        "amplify": None if options.amplify is None else str(options.amplify),
        "delay_us": options.delay_us,
        "amplify_every": options.amplify_every,
        "threads": options.threads,
        "concurrency": options.concurrency,
        "flood_processes": options.flood_processes,
        "probe_client": options.probe_client,
        "hunt": None if options.hunt is None else str(options.hunt),
        "hunt_report": options.hunt_report,
    }


def options_from_json(data: dict[str, Any], scenario: Scenario) -> VerifyOptions:
    return VerifyOptions(
        scenario=scenario,
        amplify=AmplifierKind(data["amplify"]) if data.get("amplify") else None,
        delay_us=data.get("delay_us"),
        amplify_every=int(data.get("amplify_every", 1)),
        threads=data.get("threads"),
        concurrency=data.get("concurrency"),
        flood_processes=int(data.get("flood_processes", 0)),
        probe_client=data.get("probe_client"),
        hunt=HangClass(data["hunt"]) if data.get("hunt") else None,
        hunt_report=data.get("hunt_report"),
    )


@dataclass(frozen=True, eq=False)
class Running:
    """A soak under way on some worker (``worker``: where it was sent)."""

    future: Any
    sha: str
    worker: str | None = None


class RemoteTester:
    """A ``CommitTester`` whose soaks run on the cluster's machines; ``local`` answers
    ``is_built`` (the coordinator's cache) and names the scenario."""

    def __init__(
        self,
        cluster: DaskCluster,
        local: CommitTester,
        source: str,
        request: BuildRequest,
        shared_cache: bool = False,
    ) -> None:
        self.cluster = cluster
        self.shared_cache = shared_cache  # the workers share one build cache
        self.local = local
        self.source = source
        self.patches = tuple(
            (p.name, p.read_text(encoding="utf-8", errors="replace")) for p in request.patches
        )
        self.request = request
        self.notes: list[str] = []  # lost workers, said once per soak they cost
        self.reference_class: HangClass | None = local.reference_class
        self.built: dict[str, set[str]] = {}  # worker address -> commits built or building

    @property
    def scenario(self) -> Scenario:
        return self.local.scenario

    @property
    def machines(self) -> int:
        return max(1, len(self.cluster.machine_workers()))

    def free_workers(self, running: Iterable[Running]) -> list[str]:
        """The machine workers none of ``running`` was sent to, in the scheduler's order."""
        busy = {r.worker for r in running}
        return [w for w in self.cluster.machine_workers() if w not in busy]

    def built_on(self, worker: str) -> frozenset[str]:
        """The commits ``worker`` has built, or is building for a soak sent to it (with a
        shared cache: that any worker has)."""
        if self.shared_cache:
            return frozenset().union(*self.built.values())
        return frozenset(self.built.get(worker, ()))

    def is_built(self, sha: str) -> bool:
        return self.local.is_built(sha)

    def job(self, sha: str, soak_s: float, reference_bug_key: str | None) -> SoakJob:
        scenario = self.local.options.scenario
        return SoakJob(
            source=self.source,
            sha=sha,
            soak_s=soak_s,
            reference_bug_key=reference_bug_key,
            reference_class=None if self.reference_class is None else str(self.reference_class),
            patches=self.patches,
            reverse=self.request.reverse,
            cflags=self.request.cflags,
            sanitizer=None if self.request.sanitizer is None else str(self.request.sanitizer),
            tls=self.request.tls,
            scenario=scenario.name,
            scenario_text=scenario.path.read_text(encoding="utf-8"),
            options=options_json(self.local.options),
        )

    def start(
        self, sha: str, soak_s: float, reference_bug_key: str | None, worker: str | None = None
    ) -> Running:
        """Start one soak, on ``worker`` when given (which then counts ``sha`` as built)."""
        job = self.job(sha, soak_s, reference_bug_key).to_json()
        future = self.cluster.submit(SOAK_MODULE, job, f"soak-{sha[:12]}", worker)
        if worker is not None:
            self.built.setdefault(worker, set()).add(sha)
        return Running(future, sha, worker)

    def completion(self, running: Iterable[Running] = ()) -> Any:
        return self.cluster.completion(r.future for r in running)

    def observation(self, running: Running) -> Observation:
        """The finished soak's observation (its run folder as ``host:path``); a soak that
        could not run raises ``HarnessError`` naming the worker (the bisect stops, resumable)."""
        outcome = self.cluster.outcome(running.future)
        self.notes += [f"{running.sha[:12]}: {note}" for note in outcome.notes]
        if outcome.result is None:
            raise HarnessError(f"the soak of {running.sha[:12]} failed {outcome.failure}")
        obs = Observation.from_json(outcome.result)
        where = outcome.where
        if where is not None:
            self.built.setdefault(where.worker, set()).add(running.sha)
            if obs.run_dir:
                obs = replace(obs, run_dir=f"{where.host}:{obs.run_dir}")
        return obs

    def test(self, sha: str, soak_s: float, reference_bug_key: str | None) -> Observation:
        """One soak on one machine, waited for (the endpoint checks)."""
        running = self.start(sha, soak_s, reference_bug_key)
        for _ in self.completion([running]):  # until it is done, whatever the outcome
            break
        return self.observation(running)

    def cancel(self, running: Iterable[Running]) -> None:
        self.cluster.cancel(r.future for r in running)

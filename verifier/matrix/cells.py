"""A cell: one source@ref, one patch set, one scenario. Its job (what a worker needs) and
its result (what comes back, as JSON, from this machine or a cluster worker).

A job carries the patch texts and the scenario file's text, not paths, so a worker needs
no shared file system: only the verifier, and the same source (a Debian version or a
repository URL; a local path must exist on the worker too).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from verifier.records.trial import TrialResult
from verifier.verdict.verdict import Verdict
from verifier.vocabulary import TrialOutcome


@dataclass(frozen=True)
class CellOptions:
    """The verify options every cell of a matrix shares (part of the cache key)."""

    trials: int
    soak_s: float
    confidence: float = 0.95
    amplify: str | None = None  # None: the scenario's default
    sanitize: str | None = None  # the builds' sanitizer (None: plain builds)
    tls: bool = False  # the builds are configured with --enable-tls

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "trials": self.trials,
            "soak_s": self.soak_s,
            "confidence": self.confidence,
            "amplify": self.amplify,
        }
        if self.sanitize:  # absent otherwise: plain cells keep their cache keys
            data["sanitize"] = self.sanitize
        if self.tls:  # likewise
            data["tls"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellOptions:
        return cls(
            int(data["trials"]),
            float(data["soak_s"]),
            float(data["confidence"]),
            data.get("amplify"),
            data.get("sanitize"),
            bool(data.get("tls", False)),
        )


@dataclass(frozen=True)
class CellJob:
    key: str  # the cache key (verifier.matrix.plan.cell_key)
    row: str  # "source@ref", as reports name it
    source: str  # "debian[:VERSION]", a URL, or an absolute path
    ref: str
    commit: str  # resolved on the coordinator; workers build exactly this
    patch_set: str
    patches: tuple[tuple[str, str], ...]  # (file name, text), applied in order
    scenario: str
    scenario_text: str
    options: CellOptions
    workload_text: str = ""  # the workload file the cell runs (its scenario's, or --workload)
    workload_override: bool = False  # True: it replaces the scenario's own (--workload)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "row": self.row,
            "source": self.source,
            "ref": self.ref,
            "commit": self.commit,
            "patch_set": self.patch_set,
            "patches": [list(p) for p in self.patches],
            "scenario": self.scenario,
            "scenario_text": self.scenario_text,
            "options": self.options.to_json(),
            "workload_text": self.workload_text,
            "workload_override": self.workload_override,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellJob:
        return cls(
            key=data["key"],
            row=data["row"],
            source=data["source"],
            ref=data["ref"],
            commit=data["commit"],
            patch_set=data["patch_set"],
            patches=tuple((str(n), str(t)) for n, t in data["patches"]),
            scenario=data["scenario"],
            scenario_text=data["scenario_text"],
            options=CellOptions.from_json(data["options"]),
            workload_text=data.get("workload_text", ""),
            workload_override=bool(data.get("workload_override", False)),
        )


@dataclass(frozen=True)
class CellFailure:
    """No verdict: the cell could not be built or run (a ``VerifierError`` or a lost worker)."""

    status: int  # an ExitStatus value
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message}


@dataclass(frozen=True)
class CellResult:
    key: str
    row: str
    patch_set: str
    scenario: str
    commit: str
    host: str  # where the soak ran (its evidence stays there)
    run_dir: str  # on that host
    started: float
    seconds: float  # wall time of the cell when it ran (build + soak + evidence)
    describe: str = ""
    verdict: Verdict | None = None
    trials: tuple[TrialResult, ...] = ()
    failure: CellFailure | None = None
    worker: str = ""  # the cluster worker's address ("" when run here)
    notes: tuple[str, ...] = ()  # what happened on the way (a lost worker, a retry)
    cached: bool = False  # set when read from the cell cache, never stored

    @property
    def evidence(self) -> str:
        """``host:path`` of the trial whose hang or crash decided the verdict, else the cell."""
        for trial in self.trials:
            if trial.outcome in (TrialOutcome.HANG, TrialOutcome.CRASH):
                return f"{self.host}:{trial.run_dir}"
        return f"{self.host}:{self.run_dir}"

    def relabel(self, job: CellJob, *, cached: bool) -> CellResult:
        """The same result under the names a (possibly renamed) matrix gives its cell."""
        return replace(
            self, row=job.row, patch_set=job.patch_set, scenario=job.scenario, cached=cached
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "row": self.row,
            "patch_set": self.patch_set,
            "scenario": self.scenario,
            "commit": self.commit,
            "describe": self.describe,
            "host": self.host,
            "run_dir": self.run_dir,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "verdict": None if self.verdict is None else self.verdict.to_json(),
            "trials": [t.to_json() for t in self.trials],
            "failure": None if self.failure is None else self.failure.to_json(),
            "worker": self.worker,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, cached: bool = False) -> CellResult:
        verdict = data.get("verdict")
        failure = data.get("failure")
        return cls(
            key=data["key"],
            row=data["row"],
            patch_set=data["patch_set"],
            scenario=data["scenario"],
            commit=data["commit"],
            describe=data.get("describe", ""),
            host=data["host"],
            run_dir=data["run_dir"],
            started=float(data["started"]),
            seconds=float(data["seconds"]),
            verdict=None if verdict is None else Verdict.from_json(verdict),
            trials=tuple(TrialResult.from_json(t) for t in data.get("trials", [])),
            failure=None if failure is None else CellFailure(**failure),
            worker=data.get("worker", ""),
            notes=tuple(data.get("notes", ())),
            cached=cached,
        )

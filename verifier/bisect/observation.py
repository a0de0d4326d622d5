"""What one soak of one commit tells the bisector."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from verifier.verdict.verdict import OtherBug
from verifier.vocabulary import HangClass, ObservationKind, SkipCause, TrialOutcome


@dataclass(frozen=True)
class Observation:
    sha: str
    kind: ObservationKind
    seconds: float = 0.0  # soak seconds (time to hang for a hang)
    reason: str = ""  # for people: why a skip or another bug
    cause: SkipCause | None = None  # for code: why a skip
    bug_key: str | None = None
    hang_class: HangClass | None = None
    build_seconds: float = 0.0
    build_cached: bool = False
    run_dir: str = ""
    emfile_episodes: int = 0
    other_bug: OtherBug | None = None
    detail: str = ""  # e.g. the build error
    stretched: str = ""  # --amplify auto: what the soak stretched (the point named, on a hang)

    @property
    def evidence(self) -> bool:
        """Whether the bisector may use it (a hang of this bug, or a clean soak)."""
        return self.kind in (ObservationKind.HANG, ObservationKind.CLEAN)

    def to_json(self) -> dict[str, Any]:
        return {
            "sha": self.sha,
            "kind": str(self.kind),
            "seconds": self.seconds,
            "reason": self.reason,
            "cause": None if self.cause is None else str(self.cause),
            "bug_key": self.bug_key,
            "hang_class": None if self.hang_class is None else str(self.hang_class),
            "build_seconds": self.build_seconds,
            "build_cached": self.build_cached,
            "run_dir": self.run_dir,
            "emfile_episodes": self.emfile_episodes,
            "other_bug": None if self.other_bug is None else self.other_bug.to_json(),
            "detail": self.detail,
            "stretched": self.stretched,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Observation:
        other = data.get("other_bug")
        return cls(
            sha=data["sha"],
            kind=ObservationKind(data["kind"]),
            seconds=float(data["seconds"]),
            reason=data.get("reason", ""),
            cause=SkipCause(data["cause"]) if data.get("cause") else None,
            bug_key=data.get("bug_key"),
            hang_class=HangClass(data["hang_class"]) if data.get("hang_class") else None,
            build_seconds=float(data.get("build_seconds", 0.0)),
            build_cached=bool(data.get("build_cached", False)),
            run_dir=data.get("run_dir", ""),
            emfile_episodes=int(data.get("emfile_episodes", 0)),
            other_bug=None if other is None else OtherBug.from_json(other),
            detail=data.get("detail", ""),
            stretched=data.get("stretched", ""),
        )


def judged(obs: Observation, reference_bug_key: str | None) -> Observation:
    """A soak started before the reference bug was known (the endpoint checks run at once
    on a cluster), judged against it: a hang with another key is another bug."""
    if obs.kind != ObservationKind.HANG or reference_bug_key in (None, obs.bug_key):
        return obs
    reason = f"different bug: {obs.hang_class or obs.bug_key}"
    other = OtherBug(
        TrialOutcome.HANG,
        obs.hang_class,
        obs.bug_key or "",
        obs.seconds,
        obs.run_dir,
        sha=obs.sha,
        reason=reason,
    )
    return replace(obs, kind=ObservationKind.OTHER_BUG, reason=reason, other_bug=other)

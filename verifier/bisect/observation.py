"""What one soak of one commit tells the bisector."""

from __future__ import annotations

from dataclasses import dataclass

from verifier.verdict.verdict import OtherBug
from verifier.vocabulary import HangClass, ObservationKind, SkipCause


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

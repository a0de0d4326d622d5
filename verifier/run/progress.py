"""Background work that stops: pending work whose counters froze (``recipes/progress.toml``).

Read from the ``stats`` the trial already takes on its held connection every second: no
extra requests. "Pending" must hold in every reading across the window, and the progress
counters must be the same in all of them; one reading without the pending flag (the work
finished and another began) restarts the window. The bound is per work, 10 s by default:
a page move that waits on pinned items (slow readers hold them under a second here) or an
expansion of a test-sized table ends well inside it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from verifier.errors import BadInput
from verifier.resources import recipes_dir


@dataclass(frozen=True)
class Work:
    name: str
    pending: tuple[str, str]  # (stat, value while the work is pending)
    moves: tuple[str, ...]  # counters that change while it progresses
    stuck_s: float = 10.0


@dataclass(frozen=True)
class Stuck:
    work: Work
    since_s: float  # soak time of the first reading of the frozen window
    seconds: float
    counters: dict[str, str]

    def sentence(self) -> str:
        stat, value = self.work.pending
        frozen = ", ".join(f"{k} {v}" for k, v in self.counters.items()) or "nothing"
        what = f"while {frozen} stood still" if self.work.moves else "and never ended"
        return f"{self.work.name} pending ({stat} {value}) for {self.seconds:.0f} s {what}"


def load_works(path: Path | None = None) -> tuple[Work, ...]:
    path = path or recipes_dir() / "progress.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return tuple(
            Work(
                w["name"],
                (w["pending"][0], w["pending"][1]),
                tuple(w.get("moves", [])),
                float(w.get("stuck_s", 10.0)),
            )
            for w in data.get("work", [])
        )
    except (OSError, tomllib.TOMLDecodeError, KeyError, IndexError, ValueError) as exc:
        raise BadInput(f"bad progress file {path}: {exc}") from None


@dataclass
class ProgressWatch:
    works: tuple[Work, ...]
    _start: dict[str, tuple[float, tuple[str, ...]]] = field(default_factory=dict)

    def observe(self, t: float, stats: dict[str, str]) -> Stuck | None:
        """One reading; the first work found stuck (None while everything moves)."""
        for work in self.works:
            stat, value = work.pending
            if stats.get(stat) != value:
                self._start.pop(work.name, None)
                continue
            counters = tuple(stats.get(name, "") for name in work.moves)
            first = self._start.get(work.name)
            if first is None or first[1] != counters:
                self._start[work.name] = (t, counters)
                continue
            if t - first[0] >= work.stuck_s:
                shown = {n: v for n, v in zip(work.moves, counters, strict=True) if v}
                return Stuck(work, first[0], t - first[0], shown)
        return None

"""``--amplify auto`` as an amplifier plan: remember, discover when needed, choose, learn.

A point the memory credits for the hunted class (saved with its definition) is placed in
this build by its stable name and stretched first, with the delay of its hang: no
discovery needed, so each commit of a bisect that follows a hang starts stretching at
once. When no credited point is left (or they stopped hanging: ``EXPLOIT_TRIES`` misses),
the discovery runs (a few seconds of unstretched flood, ``run/discovery.py``), is kept
beside the build's key for the next verify of the same build, and the planner deals from
its deck. After each trial the planner is told what happened and names the point
stretched last before a hang; the memory is saved.
"""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from verifier.amplify.auto import AutoMemory, AutoPlanner, Discovery, Point, Selection
from verifier.amplify.auto.sweep import Sweep
from verifier.amplify.auto.symbols import data_symbols
from verifier.amplify.counters import read_status
from verifier.amplify.library import build_library
from verifier.errors import VerifierError
from verifier.records.trial import TrialResult
from verifier.run.amplifier import AmplifierPlan
from verifier.run.discovery import discover
from verifier.run.server import ServerConfig
from verifier.run.trial import AT_HANG
from verifier.stress import FloodConfig
from verifier.vocabulary import AmplifierKind, HangClass, HangProof, TrialOutcome


@dataclass
class AutoPlan:
    """The ``auto`` amplifier of one build (see the module docstring)."""

    binary: Path
    build_key: str
    server: ServerConfig
    flood: FloodConfig
    tools_dir: Path
    auto_dir: Path
    memory: AutoMemory
    hunted: HangClass | None
    sweep: bool = True  # False: the previous schedule, one hand per trial (benchmarks)
    kind: AmplifierKind = AmplifierKind.AUTO
    library: Path = field(init=False)
    remembered: AutoPlanner | None = field(init=False, default=None)
    planner: AutoPlanner | None = field(init=False, default=None)  # on the discovery
    selections: dict[int, tuple[Selection, AutoPlanner]] = field(init=False, default_factory=dict)
    sweeps: dict[int, Sweep] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.library = build_library(self.tools_dir)
        if self.discovery_path.is_file():
            self._use(Discovery.load(self.discovery_path))
        else:
            points = self._rebased_credits()
            if points:
                empty = Discovery(str(self.binary), 0.0, 0.0, 0, 0, (), (), ())
                self.remembered = self._planner(empty, points)

    @property
    def discovery_path(self) -> Path:
        return self.auto_dir / f"discovery-{self.build_key}.json"

    @property
    def _hunt(self) -> str | None:
        return None if self.hunted is None else str(self.hunted)

    def _planner(self, found: Discovery, only: list[Point] | None = None) -> AutoPlanner:
        seed = zlib.crc32(f"{self.build_key}/{self.memory.path}".encode())  # reproducible
        return AutoPlanner(found, self.memory, self._hunt, seed, only=only)

    def _rebased_credits(self) -> list[Point]:
        saved = self.memory.credited_points(self._hunt)
        if not saved:
            return []
        symbols = data_symbols(self.binary)
        placed = (Point.from_json(p).rebased(symbols) for p in saved)
        return [p for p in placed if p is not None]

    def _use(self, found: Discovery) -> None:
        self.planner = self._planner(found)
        if self.remembered is not None:
            self.planner.take_tallies(self.remembered)

    def _current(self) -> AutoPlanner:
        if self.planner is not None:
            return self.planner
        if self.remembered is not None and self.remembered.has_credited():
            return self.remembered
        found = discover(
            self.binary,
            self.server,
            self.flood,
            self.tools_dir,
            self.auto_dir / f"discovery-{self.build_key}",
        )  # watched for DiscoveryTiming.seconds
        found.save(self.discovery_path)
        self._use(found)
        assert self.planner is not None
        return self.planner

    # -- what the trial loop asks of any plan ----------------------------------------------
    def for_trial(self, index: int) -> AmplifierPlan:
        planner = self._current()
        selection = planner.choose_sweep(index) if self.sweep else planner.choose(index)
        self.selections[index] = (selection, planner)
        sweep = None
        if selection.hypotheses:
            sweep = self.sweeps[index] = Sweep(selection.hypotheses, len(selection.rules))
        rules = tuple(selection.rules)
        return AmplifierPlan(AmplifierKind.AUTO, rules, None, self.library, sweep)

    def observe(self, trial: TrialResult) -> None:
        """Tell the planner what the trial's stretches led to; name the point of a hang."""
        if trial.index not in self.selections:
            return
        selection, planner = self.selections[trial.index]
        status = None
        frozen = Path(trial.run_dir) / f"amplifier.status{AT_HANG}"  # taken at the proof
        with contextlib.suppress(VerifierError):
            status = read_status(frozen if frozen.is_file() else frozen.with_suffix(""))
        start = trial.flood_started_ns
        hang_at = last_good = None
        # the hang is certain when proven; it may have begun after the first failed probe
        # (a saturated server), so the hung thread's last stretch can come after that probe
        proven = trial.verdict_at_s if trial.verdict_at_s is not None else trial.time_to_hang_s
        if start and proven is not None:
            hang_at = start + int(proven * 1e9)
        if start:  # a stretch before the last good reply, or before the flood, is no cause
            last_good = start + int((trial.last_good_s or 0.0) * 1e9)
        hang_s = trial.time_to_hang_s if trial.outcome == TrialOutcome.HANG else None
        hang = hang_s is not None
        seconds = hang_s if hang_s is not None else trial.soak_s
        sweep = self.sweeps.pop(trial.index, None)
        by_point: list[float] | None = None
        if sweep is not None:
            cycles = trial.flood.cycles if trial.flood is not None else 0
            ended = seconds if hang or trial.flood is None else max(seconds, trial.flood.loaded_s)
            sweep.finish(ended, cycles)
            by_point = [0.0] * len(selection.points)
            for hand, spent in sweep.seconds_by_hypothesis().items():
                for i in selection.hypotheses[hand]:
                    by_point[i] += spent
            planner.unreached(selection, sweep.reached())
        attribution = planner.record(
            selection,
            str(trial.outcome),
            None if trial.hang_class is None else str(trial.hang_class),
            status,
            hang_at if trial.outcome == TrialOutcome.HANG else None,
            trial.diagnosis.hung_tid if trial.diagnosis else None,
            last_good,
            # only a deadlocked thread's frames hold its cause (a lost wake-up's listener
            # idles in epoll_wait: its frames say nothing about what led there)
            trial.diagnosis.hung_functions
            if trial.diagnosis and trial.diagnosis.proof == HangProof.CYCLE
            else frozenset(),
            seconds=seconds,
            seconds_by_point=by_point,
        )
        trial.stretched = {"selection": selection.to_json(), "described": selection.describe()}
        if sweep is not None:
            trial.stretched["sweep"] = sweep.to_json()
            fraction = sweep.weighted_fraction()
            if fraction < 1.0:  # a stall is not exposure: the bound counts achieved flood
                trial.notes.append(
                    f"auto: {trial.soak_s:.1f} s of flood counted as {trial.soak_s * fraction:.1f}"
                    f" s (achieved / unstretched rate, {sweep.baseline_rate:,.0f} cycles/s)"
                )
                trial.soak_s = round(trial.soak_s * fraction, 3)
        if attribution is not None:
            trial.stretched["named"] = attribution.describe()
            trial.stretched["attribution"] = attribution.to_json()
        self.memory.save()

    def pass_note(self) -> str:
        planner = self.planner or self.remembered
        return planner.coverage_text() if planner is not None else ""

    def describe(self) -> str:
        if self.planner is None:
            count = len(self.remembered.points) if self.remembered else 0
            return (
                f"auto: {count} point(s) remembered from earlier hangs stretched first; "
                f"discovery when they stop hanging; memory {self.memory.path}"
            )
        found = self.planner.discovery
        return (
            f"auto: {len(self.planner.points)} candidate points from a {found.seconds:.1f} s "
            f"discovery ({len(found.shared())} variables stored by 2+ threads, "
            f"{len(found.calls)} failing calls, {len(found.mutexes)} contended mutexes); "
            f"memory {self.memory.path}"
        )


def auto_plan(
    binary: Path,
    build_key: str,
    server: ServerConfig,
    flood: FloodConfig,
    tools_dir: Path,
    auto_dir: Path,
    memory: Path | AutoMemory,
    hunted: HangClass | None,
    sweep: bool = True,
) -> AutoPlan:
    """The auto plan of this build, with the memory (or the one at that path): plans that
    live together (a bisect's, one per build) share one memory object, so none saves over
    what another learned."""
    if isinstance(memory, Path):
        memory = AutoMemory.load(memory)
    return AutoPlan(binary, build_key, server, flood, tools_dir, auto_dir, memory, hunted, sweep)

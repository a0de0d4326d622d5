"""Choose what to stretch in each trial, learn from the outcome, name the point of a hang.

Selection (PCT-style, seeded and reproducible). A trial stretches k = d-1 points, k drawn
uniformly from 1..``max_points`` (PCT's d-1 change points: here a change point is a
sleep at one point, so a bug that needs d-1 orderings forced needs d-1 points stretched
in one trial). Points are dealt from a deck: a weighted random permutation of all
points (Efraimidis-Spirakis keys u^(1/w)), reshuffled when empty. A point's weight is
``1 + log2(1 + rate)``, its hits per second in the discovery flood: hot points come
first, but only logarithmically (read() failing 2,000 times a second weighs 12, accept()
failing 5 times a second 3.6), so a rare point is not starved. Each point carries its own
shuffled cycle of the delays, so the k-th time it is stretched it gets a delay it has
not had for |delays| - 1 turns.

Bounds. With N points, weights w and W = sum(w): the first trial stretches a given point
p with probability >= w_p / W (the first card of the deck); the first N trials stretch
every point at least once (a round deals each card once, k >= 1 per trial), and so does
every later round; every (point, delay) pair is stretched within N * |delays| trials.
A depth-d bug that needs d-1 given points stretched together, each with one given
delay, is hit by the first trial with probability >= (1 / max_points) *
prod(w_i / W) * (1 / |delays|)^(d-1) >= (w_min / W)^(d-1) / (max_points *
|delays|^(d-1)): PCT's 1/(n k^(d-1)) with the deck in place of the k^(d-1) step
choices. Memcached's two races are depth 2 (one point), where the deck bounds hold.

Delays (``DELAYS_US``): 1, 5, 20 and 50 ms. The 1.4.6 self-deadlock's window is about 7
instructions between the listener's store of false and maxconns_handler's reload; any
delay that lets one worker conn_close() land in it suffices, and the hand-written
scenario sleeps 20 ms. The lost wake-up needs the whole flood (hundreds of clients) to
close between the failed accept() and the store of false: 50 ms, as its scenario
sleeps. 1 and 5 ms stretch hot points without starving the server.

Learning. A point named for a hang of the hunted class (``record``) is credited in the
memory; the next trials (of this run and of later runs loading the memory) stretch the
credited point of highest hazard (hangs per second stretched, ``AutoMemory.hazard``)
alone, with the delay of its hang, until it has missed ``exploit_tries`` times in this
run (a bisect's core keeps one plan per build, so its tries count too); then the next
credited point, then the deck. A hang of another class is
recorded under that class and not credited for this hunt.

Naming. The library records each rule's last trigger (CLOCK_MONOTONIC ns, tid, code
address). The point named is the one whose last trigger before the hang came last,
preferring triggers on the hung thread (default the main thread, memcached's listener:
a worker's later stretch of a hot point must not hide the listener's; measured on the
race fixture, workers' stores of allow_new_conns went on until 0.03 s before the hang
was suspected, the listener's last one was 1 s earlier); the code address becomes ``file:line`` with
addr2line (offset = pc - load bias - 1, inside the store or call instruction).
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.amplify.auto.discovery import Discovery
from verifier.amplify.auto.memory import AutoMemory
from verifier.amplify.auto.points import Point, PointKind, ThreadKind
from verifier.amplify.auto.symbols import CodeLocation, code_locations
from verifier.amplify.counters import AmplifierStatus, RuleStatus
from verifier.amplify.spec import Rule
from verifier.errors import BadInput
from verifier.vocabulary import HangClass, TrialOutcome

DELAYS_US = (1_000, 5_000, 20_000, 50_000)
MAX_POINTS = 3
EXPLOIT_TRIES = 3
# Without the last good probe's time, a trigger this long before the hang was suspected
# cannot have caused it: a good probe came after it (verify probes every second, with a
# 1 s timeout, so a hang is suspected within about 2 s of its start).
ATTRIBUTION_WINDOW_S = 5.0


class SelectionMode(enum.StrEnum):
    CREDITED = "credited"  # a point the memory credits for the hunted class
    DECK = "deck"  # dealt from the weighted deck
    SWEEP = "sweep"  # several deck hands, one stretched at a time in one server (sweep.py)


MAX_RULES = 16  # the library's rule slots
MAX_WATCH_RULES = 4  # the library's watch rules (debug registers) per trial
SWEEP_HANDS = 12  # hypotheses armed per sweep trial (at 3 s each, a 36 s round)


def weight(point: Point) -> float:
    return 1.0 + math.log2(1.0 + max(point.rate, 0.0))


@dataclass(frozen=True)
class Selection:
    trial_index: int
    points: tuple[Point, ...]
    delays_us: tuple[int, ...]
    rules: list[Rule]  # rules[i] stretches points[i]: ready for preload_env
    mode: SelectionMode
    hypotheses: tuple[tuple[int, ...], ...] = ()  # sweep: indexes stretched together

    def describe(self) -> str:
        if not self.points:
            return f"auto trial {self.trial_index}: nothing to stretch"
        if self.hypotheses:
            hands = " | ".join(
                " + ".join(f"{self.points[i].key} +{self.delays_us[i] / 1000:g} ms" for i in hand)
                for hand in self.hypotheses
            )
            return f"auto trial {self.trial_index} (sweep of {len(self.hypotheses)}): {hands}"
        parts = "; ".join(
            f"{p.describe()} +{d / 1000:g} ms"
            for p, d in zip(self.points, self.delays_us, strict=True)
        )
        return f"auto trial {self.trial_index} ({self.mode}): {parts}"

    def to_json(self) -> dict[str, Any]:
        return {
            "trial": self.trial_index,
            "mode": self.mode.value,
            "points": [
                {"key": p.key, "delay_us": d}
                for p, d in zip(self.points, self.delays_us, strict=True)
            ],
            "hypotheses": [list(h) for h in self.hypotheses],
        }


@dataclass(frozen=True)
class Attribution:
    """The point stretched last before a hang."""

    point: Point
    delay_us: int
    tid: int
    main_thread: bool
    pc: int  # absolute code address (0: unknown)
    location: CodeLocation | None
    trigger_ns: int  # CLOCK_MONOTONIC of that trigger
    before_hang_s: float | None  # how long before the hang time it began
    triggers: int  # stretches of that point in the trial
    on_hung_thread: bool = True  # False: no stretch of the hung thread qualified (weaker)
    on_hung_stack: bool | None = None  # its code is in a frame of the hung stack (None: no stack)

    def describe(self) -> str:
        thread = "main thread" if self.main_thread else "thread"
        where = f" at {self.location.text()}" if self.location and self.location.known else ""
        when = (
            f", {self.before_hang_s:.2f} s before the hang"
            if self.before_hang_s is not None
            else ""
        )
        weak = "" if self.on_hung_thread else " (not on the hung thread)"
        if self.on_hung_stack is False:
            weak += " (its code is not on the hung stack)"
        return (
            f"stretched last before the hang: {self.point.describe()} "
            f"({thread} {self.tid}, +{self.delay_us / 1000:g} ms){where}{when}{weak}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "point": self.point.key,
            "description": self.point.describe(),
            "delay_us": self.delay_us,
            "tid": self.tid,
            "main_thread": self.main_thread,
            "pc": self.pc,
            "location": self.location.text() if self.location and self.location.known else None,
            "trigger_ns": self.trigger_ns,
            "before_hang_s": self.before_hang_s,
            "triggers": self.triggers,
            "on_hung_thread": self.on_hung_thread,
            "on_hung_stack": self.on_hung_stack,
        }


@dataclass
class _Tally:
    trials: int = 0
    triggers: int = 0
    exploit_misses: int = 0


@dataclass
class AutoPlanner:
    """Stretch points chosen per trial for one binary's discovery, learning into ``memory``."""

    discovery: Discovery
    memory: AutoMemory
    hunted: str | None
    rng_seed: int
    only: Sequence[Point] | None = None  # these points instead of the discovery's
    delays_us: Sequence[int] = DELAYS_US
    max_points: int = MAX_POINTS
    exploit_tries: int = EXPLOIT_TRIES
    points: list[Point] = field(init=False)
    _rng: random.Random = field(init=False)
    _deck: list[Point] = field(init=False, default_factory=list)
    _delay_cycles: dict[str, list[int]] = field(init=False, default_factory=dict)
    _tally: dict[str, _Tally] = field(init=False, default_factory=dict)
    _trials: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not self.delays_us or any(d <= 0 for d in self.delays_us):
            raise BadInput("auto: delays must be positive")
        if not 1 <= self.max_points <= 4:
            raise BadInput("auto: 1 to 4 points per trial (4 debug registers)")
        self.points = list(self.only) if self.only is not None else self.discovery.points()
        self._rng = random.Random(self.rng_seed)
        self._tally = {p.key: _Tally() for p in self.points}

    # -- choosing --------------------------------------------------------------------------
    def has_credited(self) -> bool:
        """Whether the next choice stretches a credited point (not the deck)."""
        return bool(self._credited())

    def take_tallies(self, other: AutoPlanner) -> None:
        """Continue ``other``'s count of trials, stretches and misses (a planner that
        replaces it once the discovery is done)."""
        for key, tally in other._tally.items():
            if key in self._tally:
                self._tally[key] = tally
        self._trials += other._trials

    def _credited(self) -> list[Point]:
        ranked = [
            p
            for p in self.points
            if self.memory.credits(p.key, self.hunted) > 0
            and self._tally[p.key].exploit_misses < self.exploit_tries
        ]
        return sorted(ranked, key=lambda p: (-self.memory.hazard(p.key, self.hunted), p.key))

    def _shuffle(self) -> list[Point]:
        """A weighted random permutation: sort by u^(1/w), largest first."""
        keyed = [(self._rng.random() ** (1.0 / weight(p)), p.key, p) for p in self.points]
        return [p for _, _, p in sorted(keyed, key=lambda t: (-t[0], t[1]))]

    def _next_delay(self, point: Point) -> int:
        cycle = self._delay_cycles.get(point.key)
        if not cycle:
            cycle = list(self.delays_us)
            self._rng.shuffle(cycle)
            self._delay_cycles[point.key] = cycle
        return cycle.pop()

    def choose(self, trial_index: int) -> Selection:
        """The points to stretch in trial ``trial_index`` (and their rules)."""
        if not self.points:
            return Selection(trial_index, (), (), [], SelectionMode.DECK)
        credited = self._credited()
        if credited:
            best = credited[0]
            remembered = self.memory.points[best.key].hang_delay_us
            delay = remembered if remembered else self._next_delay(best)
            return Selection(
                trial_index, (best,), (delay,), [best.rule(delay)], SelectionMode.CREDITED
            )
        k = self._rng.randint(1, min(self.max_points, len(self.points)))
        chosen = self._deal(k)
        delays = tuple(self._next_delay(p) for p in chosen)
        rules = [p.rule(d) for p, d in zip(chosen, delays, strict=True)]
        return Selection(trial_index, tuple(chosen), delays, rules, SelectionMode.DECK)

    def _deal(self, k: int, taken: Sequence[Point] = ()) -> list[Point]:
        chosen: list[Point] = []
        while len(chosen) < k:
            if not self._deck:
                self._deck = self._shuffle()
            pick = next((p for p in self._deck if p not in chosen and p not in taken), None)
            if pick is None:  # the fresh deck's cards are all in this hand already
                break
            self._deck.remove(pick)
            chosen.append(pick)
        return chosen

    def choose_sweep(self, trial_index: int, hands: int = SWEEP_HANDS) -> Selection:
        """Several deck hands for one trial, stretched one at a time (``sweep.Sweep``):
        a credited point first, alone, as in ``choose``; else up to ``hands`` hands of
        1..``max_points`` points, while the rules fit the library (16, of them 4 watch
        rules: a fifth store point is left on top of the deck for the next trial).
        Hands the trial does not reach go back on top of the deck (``unreached``), so
        every point is still dealt within a round or so."""
        if not self.points or self._credited():
            return self.choose(trial_index)
        points: list[Point] = []
        delays: list[int] = []
        hypotheses: list[tuple[int, ...]] = []
        watches = 0
        skipped: list[Point] = []  # a fifth store: first in the next trial
        for _ in range(2 * len(self.points)):  # bounded: a deck that cannot fit ends it
            if len(hypotheses) >= hands or len(points) >= MAX_RULES:
                break
            k = self._rng.randint(1, min(self.max_points, len(self.points)))
            hand: list[Point] = []
            for card in self._deal(k):
                if card.kind is PointKind.STORE:
                    if watches >= MAX_WATCH_RULES:
                        skipped.append(card)
                        continue
                    watches += 1
                hand.append(card)
            hand = hand[: MAX_RULES - len(points)]
            if not hand:
                continue
            hypotheses.append(tuple(range(len(points), len(points) + len(hand))))
            points.extend(hand)
            delays.extend(self._next_delay(p) for p in hand)
        self._deck = [p for p in dict.fromkeys(skipped) if p not in self._deck] + self._deck
        rules = [p.rule(d) for p, d in zip(points, delays, strict=True)]
        return Selection(
            trial_index, tuple(points), tuple(delays), rules, SelectionMode.SWEEP, tuple(hypotheses)
        )

    def unreached(self, selection: Selection, reached: set[int]) -> None:
        """Put the hands a sweep trial did not reach back on top of the deck."""
        back = [
            selection.points[i]
            for h, hand in enumerate(selection.hypotheses)
            if h not in reached
            for i in hand
        ]
        self._deck = [p for p in dict.fromkeys(back) if p not in self._deck] + self._deck

    # -- learning --------------------------------------------------------------------------
    def record(
        self,
        selection: Selection,
        outcome: str,
        hang_class: str | None,
        status: AmplifierStatus | None,
        hang_at_monotonic_ns: int | None,
        hung_tid: int | None = None,
        last_good_monotonic_ns: int | None = None,
        hung_functions: frozenset[str] = frozenset(),
        seconds: float = 0.0,
        seconds_by_point: Sequence[float] | None = None,
    ) -> Attribution | None:
        """Count the trial's stretches; after a hang, name the point and credit it.

        ``seconds``: of flood the selection was stretched in (to the hang, if any): the
        memory's hazard of each point is its hangs over these seconds;
        ``seconds_by_point`` (a sweep: ``seconds`` per point of the selection) instead.

        ``hung_functions``: for a deadlock, the functions in the blocked thread's frames
        (the attribution says whether its stretch is in them; see ``attribute``).

        ``status``: the trial's amplifier status (None if unreadable).
        ``hang_at``: when the hang was suspected (time.monotonic_ns when the first probe
        went unanswered; not when it was sent: the listener may hang while a probe
        waits). ``hung_tid``: the thread the evidence shows stuck, default the main
        thread (memcached's listener, stuck in both known hang classes). ``last_good``:
        when the last probe was answered (a stretch that began before it, less its
        delay, cannot be the cause; default: ``ATTRIBUTION_WINDOW_S`` before the hang).
        Returns the point named, or None (no hang, or nothing stretched just before it).
        """
        self._trials += 1
        rules = status.rules if status is not None else ()
        for i, point in enumerate(selection.points):
            triggers = rules[i].triggers if i < len(rules) else 0
            spent = seconds if seconds_by_point is None else seconds_by_point[i]
            if seconds_by_point is not None and spent <= 0 and triggers == 0:
                continue  # a sweep's hand the trial never reached
            tally = self._tally.setdefault(point.key, _Tally())
            tally.trials += 1
            tally.triggers += triggers
            self.memory.note_trial(point.key, triggers, spent)
        hang = TrialOutcome(outcome) is TrialOutcome.HANG
        named_class = str(hang_class) if hang_class is not None else HangClass.UNKNOWN.value
        hit = hang and (self.hunted is None or named_class == self.hunted)
        if selection.mode == SelectionMode.CREDITED and not hit:
            for point in selection.points:
                self._tally[point.key].exploit_misses += 1
        if not hang or status is None:
            return None
        attribution = attribute(
            selection,
            status,
            hang_at_monotonic_ns,
            hung_tid,
            Path(self.discovery.binary),
            self.points,
            last_good_monotonic_ns,
            hung_functions,
        )
        # a stretch on another thread than the hung one is named (weakly), not credited:
        # it would lead the next hunt on no evidence
        if attribution is not None and attribution.on_hung_thread:
            self.memory.note_hang(
                attribution.point.key,
                named_class,
                attribution.delay_us,
                attribution.point.to_json(),
            )
        return attribution

    # -- coverage --------------------------------------------------------------------------
    def coverage(self) -> dict[str, Any]:
        stretched = [k for k, t in self._tally.items() if t.triggers > 0]
        return {
            "candidates": len(self.points),
            "selected": sum(1 for t in self._tally.values() if t.trials > 0),
            "stretched": len(stretched),
            "trials": self._trials,
            "triggers": sum(t.triggers for t in self._tally.values()),
            "points": {
                k: {"trials": t.trials, "triggers": t.triggers}
                for k, t in sorted(self._tally.items())
            },
        }

    def coverage_text(self) -> str:
        cov = self.coverage()
        top = sorted(
            ((v["triggers"], k) for k, v in cov["points"].items() if v["triggers"]), reverse=True
        )[:3]
        most = ", ".join(f"{k} x{n:,}" for n, k in top)
        return (
            f"auto: {cov['stretched']} of {cov['candidates']} candidate points stretched "
            f"({cov['selected']} selected) in {cov['trials']} trials, "
            f"{cov['triggers']:,} stretches" + (f"; most: {most}" if most else "")
        )


def _last_trigger(
    rule: RuleStatus, main_tid: int, hung_tid: int | None
) -> tuple[int, int, int] | None:
    """(ns, pc, tid) of the rule's last trigger, on ``hung_tid`` when given."""
    if rule.triggers == 0 or rule.last_ns == 0:
        return None
    if hung_tid is None or rule.last_tid == hung_tid:
        return rule.last_ns, rule.last_pc, rule.last_tid
    if hung_tid == main_tid and rule.main_last_ns:
        return rule.main_last_ns, rule.main_last_pc, main_tid
    return None


def attribute(
    selection: Selection,
    status: AmplifierStatus,
    hang_at_ns: int | None,
    hung_tid: int | None,
    binary: Path | None,
    siblings: Sequence[Point] = (),
    last_good_ns: int | None = None,
    hung_functions: frozenset[str] = frozenset(),
) -> Attribution | None:
    """The selection's point whose last trigger before ``hang_at_ns`` came last.

    With ``hung_functions`` (the functions in a deadlocked thread's frames), the
    attribution says whether the code stretched is in them (``on_hung_stack``): a stretch
    outside them may have merely come last (seen: a store to cas_id_lock before a
    natural self-deadlock). It only informs: preferring such stretches named the wrong
    point, since a tail call drops its caller's frame (do_accept_new_conns ends in a jump
    to maxconns_handler) while the dispatcher (drive_machine) is in nearly every stack.

    Triggers on the hung thread (``hung_tid``, default the main thread) come first; only
    when none of them qualifies are the other threads' considered. A trigger qualifies
    when it began at or before ``hang_at_ns`` and, with a hang time, not before
    ``last_good_ns`` less its delay (default: ``ATTRIBUTION_WINDOW_S`` before the hang).

    A point stretched on any thread whose named trigger ran on the main thread is named
    by its main-thread sibling among ``siblings`` when there is one (the same variable,
    call or mutex, ``@main``): it is the more precise name, and its rule alone
    reproduces the stretch.
    """
    choices: list[tuple[int, int, int, int]] = []  # (ns, index, pc, tid)
    hung = hung_tid or status.main_tid
    for tid_filter in (hung, None):
        for i, _point in enumerate(selection.points):
            if i >= len(status.rules):
                break
            last = _last_trigger(status.rules[i], status.main_tid, tid_filter)
            if last is None:
                continue
            if hang_at_ns is not None:
                earliest = (
                    hang_at_ns - int(ATTRIBUTION_WINDOW_S * 1e9)
                    if last_good_ns is None
                    else last_good_ns - selection.delays_us[i] * 1000
                )
                if not earliest <= last[0] <= hang_at_ns:
                    continue
            choices.append((last[0], i, last[1], last[2]))
        if choices:
            break
    if not choices:
        return None
    locations: dict[int, CodeLocation] = {}
    if binary is not None and binary.is_file():
        offsets = [pc - status.load_bias - 1 for _, _, pc, _ in choices if pc]
        locations = code_locations(binary, offsets)

    def location_of(pc: int) -> CodeLocation | None:
        return locations.get(pc - status.load_bias - 1) if pc else None

    def on_stack(pc: int) -> bool:
        found = location_of(pc)
        return found is not None and bool({found.function, *found.callers} & hung_functions)

    ns, index, pc, tid = max(choices)
    point = selection.points[index]
    if tid == status.main_tid and point.thread is ThreadKind.ANY:
        point = next(
            (
                p
                for p in siblings
                if p.kind is point.kind and p.name == point.name and p.thread is ThreadKind.MAIN
            ),
            point,
        )
    location = location_of(pc)
    return Attribution(
        point=point,
        delay_us=selection.delays_us[index],
        tid=tid,
        main_thread=tid == status.main_tid,
        pc=pc,
        location=location,
        trigger_ns=ns,
        before_hang_s=None if hang_at_ns is None else (hang_at_ns - ns) / 1e9,
        triggers=status.rules[index].triggers,
        on_hung_thread=tid == hung,
        on_hung_stack=on_stack(pc) if hung_functions else None,
    )
